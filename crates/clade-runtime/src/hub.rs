//! Live events per session: text deltas as the model streams them, and lifecycle events as
//! they commit. Subscribers that fall behind lose live deltas (never lifecycle events, which
//! they can re-read from the outbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clade_core::{AgentId, EventKind, SessionId, TenantId};
use clade_protocol::LifecycleEvent;
use serde_json::Value;
use tokio::sync::broadcast;

/// One live event: a typed [`LifecycleEvent`] (or text delta), encoded only at the edge that
/// sends it (SSE, WebSocket, MCP, gRPC, webhook).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// Whose session it is: a cluster's relay names the tenant in the event's subject.
    pub tenant: TenantId,
    pub session: SessionId,
    /// The outbox position of a committed event (a stream resumes after it); `None` for a
    /// delta, or an event passed on before its position may be.
    pub id: Option<i64>,
    /// Shared: every subscriber's copy is the same event.
    pub event: Arc<LifecycleEvent>,
}

impl LiveEvent {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }

    /// Its data as JSON, as the edges send it.
    pub fn data(&self) -> Value {
        self.event.data()
    }

    /// The committed outbox `row` as the event it records, at its position when `positioned`.
    /// A row of no session, or whose data does not fit its kind (only a damaged store holds
    /// one: the outbox is written from these types), is `None`, and the second is logged.
    pub fn of_row(row: &clade_store::OutboxRow, positioned: bool) -> Option<Self> {
        let session = row.session_id?;
        let data = serde_json::from_str(&row.data).unwrap_or(Value::Null);
        match LifecycleEvent::from_parts(row.kind, data) {
            Ok(event) => {
                let id = positioned.then_some(row.id);
                Some(Self { tenant: row.tenant_id, session, id, event: Arc::new(event) })
            }
            Err(error) => {
                tracing::warn!(outbox = row.id, kind = %row.kind.as_str(), %error, "an outbox row does not read as its kind; it is not streamed");
                None
            }
        }
    }
}

/// Events a session subscriber may fall behind by before it misses some. Small, because every
/// watched session holds one such buffer, all of it allocated up front (a 1,024-slot one was
/// ~110 KiB per waiting client, a 64-slot one 7 KiB, as much as the rest of an active session);
/// a subscriber that lags loses only text deltas, since lifecycle events can be re-read from
/// the outbox (SSE and WebSocket clients catch up from it, a waiting request asks the store).
const SESSION_CAPACITY: usize = 16;
/// The same for a subscriber to all of an agent's sessions, which sees far more traffic.
const AGENT_CAPACITY: usize = 1024;

/// Channels per session and per agent, created when someone subscribes and dropped when the
/// last [`Subscription`] ends, so sessions no one watches cost nothing here.
///
/// On a cluster's node a [`Relay`] carries events across nodes: the events of a session this
/// node runs go to the nodes that stream it, and those of sessions other nodes run come in
/// through [`Hub::publish_here`].
#[derive(Clone, Default)]
pub struct Hub {
    sessions: Arc<Mutex<HashMap<SessionId, broadcast::Sender<LiveEvent>>>>,
    agents: Arc<Mutex<HashMap<AgentId, broadcast::Sender<LiveEvent>>>>,
    relay: Arc<std::sync::OnceLock<Arc<dyn Relay>>>,
}

/// What a node streams: one session's events, or every session's of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watch {
    Session(SessionId),
    Agent(AgentId),
}

/// Carries live events between a cluster's nodes. Its calls must not block: they are made
/// on the turn's path.
pub trait Relay: Send + Sync + 'static {
    /// Whether another node streams `session`, or `agent`'s sessions, now.
    fn wanted(&self, agent: AgentId, session: SessionId) -> bool;
    /// Sends `event`, of a session of `agent`, to the nodes that stream it.
    fn forward(&self, agent: AgentId, event: &LiveEvent);
    /// This node began streaming `watch` (its first subscriber came), or stopped (its last
    /// one went).
    fn watch(&self, watch: Watch, streaming: bool);
}

/// The channel of `key` (created if none) and a receiver on it, made under the map's lock: a
/// publisher that finds the channel then also finds its receiver, and does not drop it as a
/// channel no one listens to.
fn subscribe<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, broadcast::Sender<LiveEvent>>>,
    key: K,
    capacity: usize,
) -> (broadcast::Sender<LiveEvent>, broadcast::Receiver<LiveEvent>, bool) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let mut created = false;
    let sender = map.entry(key).or_insert_with(|| {
        created = true;
        broadcast::channel(capacity).0
    });
    (sender.clone(), sender.subscribe(), created)
}

/// The channel of `key`, if anyone subscribed to it.
fn sender<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, broadcast::Sender<LiveEvent>>>,
    key: &K,
) -> Option<broadcast::Sender<LiveEvent>> {
    map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
}

/// Sends on `tx`, the channel of `key`; a channel whose subscribers have all gone is dropped
/// (checked again under the lock, where new receivers are made).
fn send<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, broadcast::Sender<LiveEvent>>>,
    key: &K,
    tx: &broadcast::Sender<LiveEvent>,
    event: LiveEvent,
) {
    if tx.send(event).is_err() {
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|ours| ours.same_channel(tx) && ours.receiver_count() == 0) {
            map.remove(key);
        }
    }
}

/// Drops `ours` from `map` if no one else listens on it; whether it did.
fn forget<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, broadcast::Sender<LiveEvent>>>,
    key: &K,
    ours: &broadcast::Sender<LiveEvent>,
) -> bool {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    // The ending subscription's own receiver still counts.
    if let Some(tx) = map.get(key)
        && tx.same_channel(ours)
        && tx.receiver_count() <= 1
    {
        map.remove(key);
        return true;
    }
    false
}

/// A subscription to live events. When the last one to a session (or agent) ends, the hub
/// drops that channel with the events it kept for subscribers that fall behind: a session
/// that someone waited on once holds no memory for it afterwards.
pub struct Subscription {
    receiver: broadcast::Receiver<LiveEvent>,
    sender: broadcast::Sender<LiveEvent>,
    hub: Option<(Hub, Watch)>,
}

impl Subscription {
    fn new(hub: &Hub, watch: Watch) -> Self {
        let (sender, receiver, created) = match &watch {
            Watch::Session(id) => subscribe(&hub.sessions, *id, SESSION_CAPACITY),
            Watch::Agent(id) => subscribe(&hub.agents, *id, AGENT_CAPACITY),
        };
        if created && let Some(relay) = hub.relay.get() {
            relay.watch(watch, true);
        }
        Self { receiver, sender, hub: Some((hub.clone(), watch)) }
    }

    /// A subscription to a channel outside any hub (for tests of what reads live events).
    pub fn detached(sender: &broadcast::Sender<LiveEvent>) -> Self {
        Self { receiver: sender.subscribe(), sender: sender.clone(), hub: None }
    }

    /// The next event; `Lagged` when the subscriber fell behind and some were dropped.
    pub async fn recv(&mut self) -> Result<LiveEvent, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some((hub, watch)) = &self.hub else { return };
        let forgotten = match watch {
            Watch::Session(id) => forget(&hub.sessions, id, &self.sender),
            Watch::Agent(id) => forget(&hub.agents, id, &self.sender),
        };
        if forgotten && let Some(relay) = hub.relay.get() {
            relay.watch(*watch, false);
        }
    }
}

impl Hub {
    /// Carries this hub's events to and from other nodes through `relay` from now on. A hub
    /// takes one relay; a second is refused (`false`).
    pub fn relay_through(&self, relay: Arc<dyn Relay>) -> bool {
        self.relay.set(relay).is_ok()
    }

    /// What this node streams now.
    pub fn watched(&self) -> Vec<Watch> {
        let sessions: Vec<Watch> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|id| Watch::Session(*id))
            .collect();
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        sessions.into_iter().chain(agents.keys().map(|id| Watch::Agent(*id))).collect()
    }

    /// Passes committed outbox rows of `agent`'s sessions to their subscribers, each with its
    /// outbox position (so a stream can resume after it).
    pub fn publish_committed(&self, agent: AgentId, rows: &[clade_store::OutboxRow]) {
        self.publish_rows(agent, rows, true);
    }

    /// Passes committed rows written outside their session's actor (an approval requested or
    /// decided) without their outbox position: they may be published after a later row of
    /// the actor's, and a stream skips a position at or below the last it passed on. A
    /// stream that reconnects still gets them, by position, from the outbox.
    pub fn publish_aside(&self, agent: AgentId, rows: &[clade_store::OutboxRow]) {
        self.publish_rows(agent, rows, false);
    }

    fn publish_rows(&self, agent: AgentId, rows: &[clade_store::OutboxRow], positioned: bool) {
        for row in rows {
            if let Some(session) = row.session_id {
                self.publish_with(agent, session, || LiveEvent::of_row(row, positioned));
            }
        }
    }

    /// Live events of one session.
    pub fn subscribe(&self, session: SessionId) -> Subscription {
        Subscription::new(self, Watch::Session(session))
    }

    /// Live events of every session of one agent.
    pub fn subscribe_agent(&self, agent: AgentId) -> Subscription {
        Subscription::new(self, Watch::Agent(agent))
    }

    pub fn publish(&self, agent: AgentId, event: LiveEvent) {
        self.publish_with(agent, event.session, || Some(event));
    }

    /// Publishes an event another node relayed (of a session it runs) to this node's
    /// subscribers only.
    pub fn publish_here(&self, agent: AgentId, event: LiveEvent) {
        self.publish_to(agent, event.session, false, || Some(event));
    }

    /// Publishes the event `make` builds (if it builds one) to the session's and the agent's
    /// subscribers, here and (through the relay) on other nodes; when none has any, `make` is
    /// not called, so an event no one watches costs nothing to build.
    pub fn publish_with(
        &self,
        agent: AgentId,
        session: SessionId,
        make: impl FnOnce() -> Option<LiveEvent>,
    ) {
        self.publish_to(agent, session, true, make);
    }

    fn publish_to(
        &self,
        agent: AgentId,
        session: SessionId,
        relayed: bool,
        make: impl FnOnce() -> Option<LiveEvent>,
    ) {
        let to_agent = sender(&self.agents, &agent);
        let to_session = sender(&self.sessions, &session);
        let relay = self.relay.get().filter(|relay| relayed && relay.wanted(agent, session));
        if to_agent.is_none() && to_session.is_none() && relay.is_none() {
            return;
        }
        let Some(event) = make() else { return };
        if let Some(relay) = relay {
            relay.forward(agent, &event);
        }
        match (to_agent, to_session) {
            (Some(to_agent), Some(to_session)) => {
                send(&self.agents, &agent, &to_agent, event.clone());
                send(&self.sessions, &session, &to_session, event);
            }
            (Some(to_agent), None) => send(&self.agents, &agent, &to_agent, event),
            (None, Some(to_session)) => send(&self.sessions, &session, &to_session, event),
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(session: SessionId, n: i64) -> LiveEvent {
        let event = clade_protocol::TextDelta { turn: n.to_string(), text: "x".into() }.into();
        LiveEvent {
            tenant: TenantId::from_bytes([7; 16]),
            session,
            id: Some(n),
            event: Arc::new(event),
        }
    }

    fn channels(hub: &Hub) -> (usize, usize) {
        let sessions = hub.sessions.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        (sessions, hub.agents.lock().map(|m| m.len()).unwrap_or(usize::MAX))
    }

    #[tokio::test]
    async fn a_channel_and_its_kept_events_go_with_its_last_subscriber() {
        let hub = Hub::default();
        let now = clade_core::Timestamp::from_millis(0);
        let (session, agent) = (SessionId::generate(now), AgentId::generate(now));
        let mut first = hub.subscribe(session);
        let second = hub.subscribe(session);
        let by_agent = hub.subscribe_agent(agent);
        for n in 0..3 {
            hub.publish(agent, event(session, n));
        }
        assert_eq!(first.recv().await.map(|e| e.id), Ok(Some(0)));
        drop(first);
        assert_eq!(channels(&hub), (1, 1), "dropped while a subscriber was left");
        drop(second);
        drop(by_agent);
        assert_eq!(channels(&hub), (0, 0), "kept after the last subscriber left");
        // A later subscriber gets a new channel, which works as the first did.
        let mut again = hub.subscribe(session);
        hub.publish(agent, event(session, 3));
        assert_eq!(again.recv().await.map(|e| e.id), Ok(Some(3)));
    }

    /// An event no one watches is never built; one that only the agent's subscriber watches
    /// reaches it, and one both watch reaches both.
    #[tokio::test]
    async fn events_are_built_only_for_someone() {
        let hub = Hub::default();
        let now = clade_core::Timestamp::from_millis(0);
        let (session, agent) = (SessionId::generate(now), AgentId::generate(now));
        let built = std::cell::Cell::new(0);
        let make = |n| {
            built.set(built.get() + 1);
            Some(event(session, n))
        };
        hub.publish_with(agent, session, || make(0));
        assert_eq!(built.get(), 0, "built with no subscriber");
        let mut by_agent = hub.subscribe_agent(agent);
        hub.publish_with(agent, session, || make(1));
        assert_eq!(by_agent.recv().await.map(|e| e.id), Ok(Some(1)));
        let mut by_session = hub.subscribe(session);
        hub.publish_with(agent, session, || make(2));
        assert_eq!(by_agent.recv().await.map(|e| e.id), Ok(Some(2)));
        assert_eq!(by_session.recv().await.map(|e| e.id), Ok(Some(2)));
        assert_eq!(built.get(), 2, "built once per published event");
        drop((by_agent, by_session));
        hub.publish_with(agent, session, || make(3));
        assert_eq!((built.get(), channels(&hub)), (2, (0, 0)), "built after the last left");
    }
}
