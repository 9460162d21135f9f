//! Live events per session: text deltas as the model streams them, and lifecycle events as
//! they commit. Subscribers that fall behind lose live deltas (never lifecycle events, which
//! they can re-read from the outbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clade_core::{AgentId, SessionId};
use serde_json::Value;
use tokio::sync::broadcast;

/// One live event.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub session: SessionId,
    /// The outbox position for lifecycle events (resumable), `None` for deltas.
    pub id: Option<i64>,
    pub kind: String,
    pub data: Value,
}

/// Events a session subscriber may fall behind by before it misses some. Small, because every
/// watched session holds one such buffer (a 1,024-slot one was ~110 KiB per waiting client);
/// a subscriber that lags loses only text deltas, since lifecycle events can be re-read from
/// the outbox.
const SESSION_CAPACITY: usize = 64;
/// The same for a subscriber to all of an agent's sessions, which sees far more traffic.
const AGENT_CAPACITY: usize = 1024;

/// Channels per session and per agent, created when someone subscribes and dropped when the
/// last subscriber has gone, so idle sessions cost nothing.
#[derive(Clone, Default)]
pub struct Hub {
    sessions: Arc<Mutex<HashMap<SessionId, broadcast::Sender<LiveEvent>>>>,
    agents: Arc<Mutex<HashMap<AgentId, broadcast::Sender<LiveEvent>>>>,
}

fn subscribe<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, broadcast::Sender<LiveEvent>>>,
    key: K,
    capacity: usize,
) -> broadcast::Receiver<LiveEvent> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key).or_insert_with(|| broadcast::channel(capacity).0).subscribe()
}

fn send<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, broadcast::Sender<LiveEvent>>>,
    key: K,
    event: LiveEvent,
) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = map.get(&key)
        && tx.send(event).is_err()
    {
        map.remove(&key);
    }
}

impl Hub {
    /// Live events of one session.
    pub fn subscribe(&self, session: SessionId) -> broadcast::Receiver<LiveEvent> {
        subscribe(&self.sessions, session, SESSION_CAPACITY)
    }

    /// Live events of every session of one agent.
    pub fn subscribe_agent(&self, agent: AgentId) -> broadcast::Receiver<LiveEvent> {
        subscribe(&self.agents, agent, AGENT_CAPACITY)
    }

    pub fn publish(&self, agent: AgentId, event: LiveEvent) {
        send(&self.agents, agent, event.clone());
        send(&self.sessions, event.session, event);
    }
}
