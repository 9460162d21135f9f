//! Live events across nodes: a stream on one node (SSE, WebSocket, MCP, gRPC, a waiting
//! request) follows a session another node runs.
//!
//! A node streaming a session or an agent subscribes to its subject
//! (`clade.<cluster>.live.*.*.<session>`, or `clade.<cluster>.live.*.<agent>.*`) when its first
//! subscriber comes, then announces it on `clade.<cluster>.watch`, and again every second
//! while it has one; the others remember each announcement for three seconds. The last
//! subscriber gone, the node keeps the NATS subscription for [`LINGER`] more and announces the
//! watch again if a subscriber comes back meanwhile: a conversation's requests waiting on
//! another node then cost no subscribe and unsubscribe each. The node running a session
//! publishes its events, only while someone elsewhere watches, on
//! `clade.<cluster>.live.<tenant>.<agent>.<session>` (ids, never a credential: a NATS account
//! can be limited to one tenant's subjects), in order from one publisher, so only the nodes
//! streaming it receive them, and each passes them to its own hub's subscribers. Core NATS:
//! an event lost here (NATS down, a watch not yet heard) is a lost text delta at worst, since
//! streams catch up on lifecycle events from the store by their outbox position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clade_core::{AgentId, EventKind, SessionId, TenantId};
use clade_runtime::{Hub, LiveEvent, Relay, Watch};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::BusError;

/// How often a node announces what it streams.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Announcements a watch outlives unrenewed: a node that stopped streaming (or died) is sent
/// events for at most this many seconds more.
const ROUNDS_KEPT: u64 = 3;

/// A live event as it travels.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LiveWire {
    /// The node that sent it, which drops its own.
    node: String,
    tenant: String,
    agent: String,
    session: String,
    /// Its outbox position, when it has one.
    #[serde(default)]
    id: Option<i64>,
    kind: String,
    data: serde_json::Value,
}

/// What a node streams.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct WatchWire {
    node: String,
    #[serde(default)]
    sessions: Vec<String>,
    #[serde(default)]
    agents: Vec<String>,
}

impl WatchWire {
    fn of(node: &str, watches: &[Watch]) -> Self {
        let mut wire = WatchWire { node: node.to_owned(), ..WatchWire::default() };
        for watch in watches {
            match watch {
                Watch::Session(id) => wire.sessions.push(id.to_string()),
                Watch::Agent(id) => wire.agents.push(id.to_string()),
            }
        }
        wire
    }

    fn watches(&self) -> impl Iterator<Item = Watch> + '_ {
        let sessions = self.sessions.iter().filter_map(|id| SessionId::parse(id).ok());
        let agents = self.agents.iter().filter_map(|id| AgentId::parse(id).ok());
        sessions.map(Watch::Session).chain(agents.map(Watch::Agent))
    }
}

/// What crossed nodes, for a node's status and the tests.
#[derive(Debug, Default)]
pub struct LiveCounts {
    /// Events this node sent to nodes streaming them.
    pub sent: AtomicU64,
    /// Events other nodes sent that this node passed to its subscribers.
    pub received: AtomicU64,
    /// Sessions and agents other nodes stream now, as this node last heard.
    pub watched_elsewhere: AtomicU64,
    /// NATS subscriptions this node made to follow its streams' subjects; one kept through a
    /// pause between a session's requests is made once.
    pub subscriptions: AtomicU64,
}

/// The node's [`Relay`] over NATS.
pub(crate) struct NatsRelay {
    node: String,
    prefix: String,
    /// Other nodes' watches, each with the round it was last announced in.
    wanted: Mutex<HashMap<Watch, u64>>,
    round: AtomicU64,
    /// To the publisher task, which keeps this node's events in order.
    outgoing: mpsc::UnboundedSender<(String, Bytes)>,
    /// To the task that subscribes to this node's watches' subjects, in the order asked.
    subscriptions: mpsc::UnboundedSender<(Watch, bool)>,
    /// The agents this node streams whole: their sessions' events come on the agent's
    /// subscription, and a session's own subscription leaves them to it.
    agents_here: Mutex<std::collections::HashSet<AgentId>>,
    counts: Arc<LiveCounts>,
}

/// Tasks of the bus's own (the relay's, the outbox nudges'); aborted when the bus goes.
pub(crate) struct RelayTasks(pub(crate) Vec<JoinHandle<()>>);

impl Drop for RelayTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts relaying `hub`'s events as `node` of the cluster whose subjects start with
/// `prefix`.
pub(crate) async fn start(
    client: &async_nats::Client,
    hub: &Hub,
    node: &str,
    prefix: &str,
) -> Result<(Arc<NatsRelay>, Arc<LiveCounts>, RelayTasks), BusError> {
    let subscribe = async |subject: String| {
        client
            .subscribe(subject.clone())
            .await
            .map_err(|source| BusError::Subscribe { subject, source })
    };
    let mut watches = subscribe(format!("{prefix}.watch")).await?;
    let (outgoing, queue) = mpsc::unbounded_channel();
    let (subscriptions, asked) = mpsc::unbounded_channel();
    let counts = Arc::new(LiveCounts::default());
    let relay = Arc::new(NatsRelay {
        node: node.to_owned(),
        prefix: prefix.to_owned(),
        wanted: Mutex::default(),
        round: AtomicU64::new(0),
        outgoing,
        subscriptions,
        agents_here: Mutex::default(),
        counts: counts.clone(),
    });
    let publisher = tokio::spawn(publish(client.clone(), queue));
    let listener =
        tokio::spawn(keep_subscriptions(client.clone(), relay.clone(), hub.clone(), asked));
    let hearing = relay.clone();
    let watcher = tokio::spawn(async move {
        while let Some(message) = watches.next().await {
            hearing.hear(&message.payload);
        }
    });
    let (ticking, watched) = (relay.clone(), hub.clone());
    let announcer = tokio::spawn(async move {
        // Real time: announcements pace NATS traffic, which no test clock moves.
        let mut every =
            clade_core::Interval::new(Arc::new(clade_core::SystemClock), ANNOUNCE_EVERY);
        loop {
            every.tick().await;
            ticking.next_round(&watched.watched());
        }
    });
    Ok((relay, counts, RelayTasks(vec![publisher, listener, watcher, announcer])))
}

impl NatsRelay {
    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, HashMap<Watch, u64>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The subject of `watch`'s events.
    fn subject_of(&self, watch: Watch) -> String {
        match watch {
            Watch::Session(session) => format!("{}.live.*.*.{session}", self.prefix),
            Watch::Agent(agent) => format!("{}.live.*.{agent}.*", self.prefix),
        }
    }

    fn lock_agents_here(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<AgentId>> {
        self.agents_here.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Passes an event another node sent (heard on `via`'s subscription) to this node's
    /// subscribers.
    fn take_in(&self, hub: &Hub, payload: &[u8], via: Watch) {
        let Ok(wire) = serde_json::from_slice::<LiveWire>(payload) else {
            tracing::warn!("a message on the live subjects is not a live event; ignored");
            return;
        };
        if wire.node == self.node {
            return;
        }
        let (Ok(tenant), Ok(agent), Ok(session), Some(kind)) = (
            TenantId::parse(&wire.tenant),
            AgentId::parse(&wire.agent),
            SessionId::parse(&wire.session),
            EventKind::parse(&wire.kind),
        ) else {
            tracing::warn!(kind = %wire.kind, "a live event names no tenant, agent, session or kind this node knows; ignored");
            return;
        };
        if matches!(via, Watch::Session(_)) && self.lock_agents_here().contains(&agent) {
            // Heard on the agent's subscription too, which passes it on.
            return;
        }
        let Ok(event) = clade_protocol::LifecycleEvent::from_parts(kind, wire.data) else {
            tracing::warn!(kind = %wire.kind, "a live event's data does not fit its kind; ignored");
            return;
        };
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        let event = LiveEvent { tenant, session, id: wire.id, event: Arc::new(event) };
        hub.publish_here(agent, event);
    }

    /// Remembers another node's watches for this round and the next few.
    fn hear(&self, payload: &[u8]) {
        let Ok(wire) = serde_json::from_slice::<WatchWire>(payload) else { return };
        if wire.node == self.node {
            return;
        }
        let round = self.round.load(Ordering::Relaxed);
        let mut wanted = self.lock_wanted();
        for watch in wire.watches() {
            wanted.insert(watch, round);
        }
        self.counts.watched_elsewhere.store(wanted.len() as u64, Ordering::Relaxed);
    }

    /// Forgets the watches not announced lately, and announces this node's own.
    fn next_round(&self, ours: &[Watch]) {
        let round = self.round.fetch_add(1, Ordering::Relaxed) + 1;
        let mut wanted = self.lock_wanted();
        wanted.retain(|_, heard| round - *heard <= ROUNDS_KEPT);
        self.counts.watched_elsewhere.store(wanted.len() as u64, Ordering::Relaxed);
        drop(wanted);
        if !ours.is_empty() {
            self.announce(ours);
        }
    }

    fn announce(&self, watches: &[Watch]) {
        let Ok(payload) = serde_json::to_vec(&WatchWire::of(&self.node, watches)) else { return };
        let _ = self.outgoing.send((format!("{}.watch", self.prefix), Bytes::from(payload)));
    }
}

impl Relay for NatsRelay {
    fn wanted(&self, agent: AgentId, session: SessionId) -> bool {
        let wanted = self.lock_wanted();
        !wanted.is_empty()
            && (wanted.contains_key(&Watch::Session(session))
                || wanted.contains_key(&Watch::Agent(agent)))
    }

    fn forward(&self, agent: AgentId, event: &LiveEvent) {
        let wire = LiveWire {
            node: self.node.clone(),
            tenant: event.tenant.to_string(),
            agent: agent.to_string(),
            session: event.session.to_string(),
            id: event.id,
            kind: event.kind().as_str().to_owned(),
            data: event.data(),
        };
        let Ok(payload) = serde_json::to_vec(&wire) else { return };
        let subject = format!("{}.live.{}.{agent}.{}", self.prefix, event.tenant, event.session);
        if self.outgoing.send((subject, Bytes::from(payload))).is_ok() {
            self.counts.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn watch(&self, watch: Watch, streaming: bool) {
        // Subscribed (then announced) or unsubscribed by the task that keeps the
        // subscriptions; the others forget an ended watch when its announcements stop.
        let _ = self.subscriptions.send((watch, streaming));
    }
}

/// How long a node keeps its subscription to a watch's subject after the watch's last
/// subscriber went: a conversation's next event usually comes within it, and a subscription
/// kept costs nothing while a NATS subscribe and unsubscribe per waiting request (each a
/// change to the server's wildcard index, and an announcement to every node) add up.
const LINGER: Duration = Duration::from_secs(10);

/// A subscription to one watch's subject, and since when no one on this node follows it.
struct Reader {
    _task: RelayTasks,
    idle_since: Option<clade_core::Timestamp>,
}

/// Subscribes to the subject of each watch asked for and announces it (NATS takes the
/// subscription before the announcement, so the first events sent after it arrive), and
/// unsubscribes from those ended once they stayed unwatched for [`LINGER`], in the order asked.
async fn keep_subscriptions(
    client: async_nats::Client,
    relay: Arc<NatsRelay>,
    hub: Hub,
    mut asked: mpsc::UnboundedReceiver<(Watch, bool)>,
) {
    // Each reader is aborted when it is dropped: taken out, or with this task.
    let mut readers: HashMap<Watch, Reader> = HashMap::new();
    // Real time, as the announcements': NATS traffic, which no test clock moves.
    let clock: Arc<dyn clade_core::Clock> = Arc::new(clade_core::SystemClock);
    let mut sweep = clade_core::Interval::new(clock.clone(), LINGER / 2);
    loop {
        let (watch, streaming) = tokio::select! {
            asked = asked.recv() => match asked {
                Some(asked) => asked,
                None => return,
            },
            _ = sweep.tick() => {
                let forget_before = clock.now().as_millis() - LINGER.as_millis() as i64;
                readers.retain(|watch, reader| {
                    let keep =
                        reader.idle_since.is_none_or(|since| since.as_millis() > forget_before);
                    if !keep && let Watch::Agent(agent) = watch {
                        relay.lock_agents_here().remove(agent);
                    }
                    keep
                });
                continue;
            }
        };
        if !streaming {
            if let Some(reader) = readers.get_mut(&watch) {
                reader.idle_since = Some(clock.now());
            }
            continue;
        }
        if let Some(reader) = readers.get_mut(&watch) {
            // Still subscribed: only the others may have forgotten the watch meanwhile.
            if reader.idle_since.take().is_some() {
                relay.announce(&[watch]);
            }
            continue;
        }
        let mut subscriber = match client.subscribe(relay.subject_of(watch)).await {
            Ok(subscriber) => subscriber,
            Err(err) => {
                tracing::warn!(error = %err, "cannot follow a stream's events from other nodes; it catches up from the store");
                continue;
            }
        };
        relay.counts.subscriptions.fetch_add(1, Ordering::Relaxed);
        if let Watch::Agent(agent) = watch {
            relay.lock_agents_here().insert(agent);
        }
        let (reading, into) = (relay.clone(), hub.clone());
        let reader = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                reading.take_in(&into, &message.payload, watch);
            }
        });
        readers.insert(watch, Reader { _task: RelayTasks(vec![reader]), idle_since: None });
        relay.announce(&[watch]);
    }
}

/// Publishes what `queue` gives, in order, until the relay goes.
async fn publish(client: async_nats::Client, mut queue: mpsc::UnboundedReceiver<(String, Bytes)>) {
    while let Some((subject, payload)) = queue.recv().await {
        if let Err(err) = client.publish(subject, payload).await {
            tracing::debug!(error = %err, "a live event could not be published; streams catch up from the store");
        }
    }
}
