//! How each channel is doing, for `clade channels status` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use clade_core::Timestamp;

/// Every channel's health, by `<platform>:<name>`; cloned handles share it.
#[derive(Clone, Default)]
pub struct Health {
    channels: Arc<Mutex<BTreeMap<String, ChannelHealth>>>,
}

/// Where a channel's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Not yet heard from the platform.
    Starting,
    /// The last exchange with the platform went through.
    Connected,
    /// The last exchange failed; it is retried with back-off.
    Failing,
}

impl ChannelState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Connected => "connected",
            Self::Failing => "failing",
        }
    }
}

/// One channel's counters and last news.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHealth {
    pub platform: String,
    pub name: String,
    /// `polling` or `webhook`.
    pub mode: String,
    pub state: ChannelState,
    pub last_ok: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Messages taken as events (repeats of one already taken not counted).
    pub received: u64,
    /// Updates that matched no binding.
    pub unrouted: u64,
    /// Updates that could not be read.
    pub malformed: u64,
    /// Replies sent to the platform.
    pub sent: u64,
}

impl Health {
    /// Registers a channel, `starting`.
    pub fn register(&self, platform: &str, name: &str, mode: &str) {
        let entry = ChannelHealth {
            platform: platform.to_owned(),
            name: name.to_owned(),
            mode: mode.to_owned(),
            state: ChannelState::Starting,
            last_ok: None,
            last_error: None,
            received: 0,
            unrouted: 0,
            malformed: 0,
            sent: 0,
        };
        self.lock().insert(key(platform, name), entry);
    }

    /// Changes one channel's entry, if registered.
    pub fn update(&self, platform: &str, name: &str, change: impl FnOnce(&mut ChannelHealth)) {
        if let Some(entry) = self.lock().get_mut(&key(platform, name)) {
            change(entry);
        }
    }

    /// A successful exchange at `now`.
    pub fn ok(&self, platform: &str, name: &str, now: Timestamp) {
        self.update(platform, name, |h| {
            h.state = ChannelState::Connected;
            h.last_ok = Some(now);
        });
    }

    /// A failed exchange.
    pub fn failed(&self, platform: &str, name: &str, error: &str) {
        self.update(platform, name, |h| {
            h.state = ChannelState::Failing;
            h.last_error = Some(error.to_owned());
        });
    }

    /// Every channel, by platform then name.
    pub fn snapshot(&self) -> Vec<ChannelHealth> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelHealth>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(platform: &str, name: &str) -> String {
    format!("{platform}:{name}")
}
