//! Chat channels (Telegram, Slack, Discord): listeners that turn a chat platform's messages into events of the agent its
//! bindings pick, and sinks that send the agents' replies back to the chat from the outbox.
//!
//! A listener owns a platform's inbound side: it fetches or receives updates, maps the
//! platform's ids onto a [`Source`](clade_store::Source) (platform, `<bot>:<chat>`, sender),
//! routes it through the bindings to a tenant and agent (one bot serves many tenants), and
//! submits it to the engine keyed by the platform's own message id, so a redelivered update is
//! never a second event. Only once the event is durable does the listener confirm the update to
//! the platform. The outbound side is an [`outbox::Sink`](clade_runtime::outbox::Sink): replies
//! go out in order per session, retried, honouring the platform's rate limits, split at its
//! length limit, and (when streaming) first drafted in one message edited as the model writes.
//!
//! Depends on the runtime (the engine, the outbox's dispatch) and below; never on the gateway,
//! which mounts the webhook routes and calls into this crate.

pub mod attachments;
pub mod channel;
pub mod discord;
pub mod health;
pub mod slack;
pub mod split;
pub mod telegram;

pub use health::{ChannelHealth, ChannelState, Health};

/// The waits between a listener's attempts to reach its platform: doubling from 1 s to 30 s.
pub(crate) const RECONNECT: clade_core::Backoff =
    clade_core::Backoff::new(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30));

/// The kind a channel's listener of its own is paired as (`clade pair listener`); its name is
/// `<platform>-<channel>`. A relayed message signed with its key needs no channel secret.
pub const LISTENER_PEER_KIND: &str = "listener";

/// The name a channel's paired listener is recorded under.
pub fn listener_name(platform: &str, channel: &str) -> String {
    format!("{platform}-{channel}")
}

use std::collections::BTreeMap;
use std::sync::Arc;

/// The channels a gateway runs, for its webhook routes and its readiness report.
#[derive(Debug, Default)]
pub struct Channels {
    telegram: BTreeMap<String, Arc<telegram::Bot>>,
    slack: BTreeMap<String, Arc<slack::App>>,
    discord: BTreeMap<String, Arc<discord::Bot>>,
    health: Health,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl Channels {
    pub fn new(
        health: Health,
        telegram: Vec<Arc<telegram::Bot>>,
        slack: Vec<Arc<slack::App>>,
        discord: Vec<Arc<discord::Bot>>,
    ) -> Self {
        let telegram = telegram.into_iter().map(|bot| (bot.name().to_owned(), bot)).collect();
        let slack = slack.into_iter().map(|app| (app.name().to_owned(), app)).collect();
        let discord = discord.into_iter().map(|bot| (bot.name().to_owned(), bot)).collect();
        Self { telegram, slack, discord, health }
    }

    /// The Discord bot named `name`, if configured.
    pub fn discord(&self, name: &str) -> Option<&Arc<discord::Bot>> {
        self.discord.get(name)
    }

    /// The Slack app named `name`, if configured.
    pub fn slack(&self, name: &str) -> Option<&Arc<slack::App>> {
        self.slack.get(name)
    }

    /// The Telegram bot named `name`, if configured.
    pub fn telegram(&self, name: &str) -> Option<&Arc<telegram::Bot>> {
        self.telegram.get(name)
    }

    pub fn health(&self) -> &Health {
        &self.health
    }
}
