//! Live events per session: text deltas as the model streams them, and lifecycle events as
//! they commit. Subscribers that fall behind lose live deltas (never lifecycle events, which
//! they can re-read from the outbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clade_core::SessionId;
use serde_json::Value;
use tokio::sync::broadcast;

/// One live event.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// The outbox position for lifecycle events (resumable), `None` for deltas.
    pub id: Option<i64>,
    pub kind: String,
    pub data: Value,
}

const CAPACITY: usize = 1024;

#[derive(Clone, Default)]
pub struct Hub {
    sessions: Arc<Mutex<HashMap<SessionId, broadcast::Sender<LiveEvent>>>>,
}

impl Hub {
    pub fn subscribe(&self, session: SessionId) -> broadcast::Receiver<LiveEvent> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.entry(session).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe()
    }

    pub fn publish(&self, session: SessionId, event: LiveEvent) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody listens any more: forget the channel so idle sessions cost nothing.
        if let Some(tx) = sessions.get(&session)
            && tx.send(event).is_err()
        {
            sessions.remove(&session);
        }
    }
}
