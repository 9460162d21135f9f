//! The engine's bus over NATS. Each shard has its subjects, `clade.<cluster>.signal.<shard>.
//! <tenant>`; the node holding a shard subscribes to them all (`signal.<shard>.*`), and a
//! wake-up or cancel for a session is published to its shard's subject of the session's tenant
//! (or handed straight to this node's engine when it holds the shard). Subjects name tenants by
//! id, never by a credential, so a NATS server's permissions and monitoring can tell tenants'
//! traffic apart.
//! Core NATS, not JetStream: a signal is a hint, and one lost (no holder at that moment, NATS
//! down) is made good by the holder's scan of the store. Live events go to the nodes that
//! stream them through the hub's relay (`live.rs`). A node that commits outbox rows nudges
//! the others on `clade.<cluster>.outbox` (an empty message, one per burst), so the node
//! delivering the outbox starts at once rather than at its next look.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clade_core::{SessionId, TenantId};
use clade_runtime::{Addressed, Bus, Hub, Signal};
use futures::StreamExt as _;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::shard::{Shard, ShardMap};

/// Where and how a node reaches NATS. The credentials are the node's own (from its
/// environment), never a tenant's.
#[derive(Clone)]
pub struct NatsOptions {
    /// The server, `nats://host:port` (or `host:port`).
    pub url: String,
    /// This node's name, as the server's monitoring shows the connection.
    pub node: String,
    /// The cluster's name: every subject starts with `clade.<cluster>.`, so clusters sharing a
    /// NATS server never hear each other.
    pub cluster: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &self.url)
            .field("node", &self.node)
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why the bus could not start, or take a shard.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(
        "the cluster name {0:?} cannot be part of a NATS subject: use 1 to 64 of a-z, 0-9, _ and -"
    )]
    ClusterName(String),
    #[error(
        "NATS at {url} refused this node's credentials ({source}): check the user and password the node is given"
    )]
    Credentials {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot connect to NATS at {url}: {source}; is the server running there?")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error(
        "NATS did not confirm the subscription to {subject} within {CONFIRM_WITHIN:?}; is it overloaded?"
    )]
    Unconfirmed { subject: String },
}

/// How long a subscription may take to be confirmed by a round trip through the server.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// A signal as it travels: the session and its tenant, and what to do with it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
enum Wire {
    Wake { tenant: String, session: String },
    Cancel { tenant: String, session: String },
}

impl Wire {
    fn of(tenant: TenantId, signal: Signal) -> Self {
        let (tenant, session) = (tenant.to_string(), signal.session().to_string());
        match signal {
            Signal::Wake(_) => Wire::Wake { tenant, session },
            Signal::Cancel(_) => Wire::Cancel { tenant, session },
        }
    }

    fn addressed(self) -> Option<Addressed> {
        let (tenant, session, signal): (_, _, fn(SessionId) -> Signal) = match self {
            Wire::Wake { tenant, session } => (tenant, session, Signal::Wake),
            Wire::Cancel { tenant, session } => (tenant, session, Signal::Cancel),
        };
        Some((TenantId::parse(&tenant).ok()?, signal(SessionId::parse(&session).ok()?)))
    }
}

/// What the bus has seen, for a node's status.
#[derive(Debug, Default)]
pub struct BusCounts {
    /// Signals published for other nodes.
    pub sent: AtomicU64,
    /// Signals received for the shards this node holds.
    pub received: AtomicU64,
    /// Messages on a shard's subject that were not a signal (ignored).
    pub malformed: AtomicU64,
    /// Signals that could not be published (NATS gone): the holder's scan makes them good.
    pub unsent: AtomicU64,
}

/// The bus of a cluster node (see the module's documentation).
pub struct NatsBus {
    hub: Hub,
    client: async_nats::Client,
    map: ShardMap,
    prefix: String,
    /// To the publisher task, which keeps signals in the order they were given.
    outgoing: mpsc::UnboundedSender<(String, Bytes)>,
    publisher: JoinHandle<()>,
    /// Signals for this node's engine.
    tx: mpsc::UnboundedSender<Addressed>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Addressed>>>,
    /// The shards this node holds, each with the task reading its subject.
    held: Mutex<HashMap<Shard, JoinHandle<()>>>,
    /// Wake-ups by shard since the keeper last looked: the shards' load.
    wakes: Arc<Mutex<HashMap<u32, u64>>>,
    counts: Arc<BusCounts>,
    live: Arc<crate::live::LiveCounts>,
    _relay: crate::live::RelayTasks,
    /// Outbox commits here, to tell the other nodes of (one nudge per burst).
    committed: Arc<Notify>,
    /// Where the other nodes' nudges go: this node's dispatchers' signal, once the engine
    /// hands it over.
    dispatchers: Arc<std::sync::OnceLock<Arc<Notify>>>,
    _nudges: crate::live::RelayTasks,
}

impl NatsBus {
    /// Connects to NATS as `options` say, for a cluster whose sessions `map` spreads. The bus
    /// holds no shard until [`NatsBus::hold`] gives it some.
    pub async fn connect(options: &NatsOptions, map: ShardMap) -> Result<Self, BusError> {
        let cluster = &options.cluster;
        let fits = (1..=64).contains(&cluster.len())
            && cluster
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !fits {
            return Err(BusError::ClusterName(cluster.clone()));
        }
        let mut connect = async_nats::ConnectOptions::new()
            .name(format!("clade {} ({cluster})", options.node))
            .connection_timeout(options.connect_timeout);
        if let (Some(user), Some(password)) = (&options.user, &options.password) {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        let url = options.url.clone();
        let client = connect.connect(url.as_str()).await.map_err(|source| {
            use async_nats::ConnectErrorKind as Kind;
            match source.kind() {
                Kind::Authentication | Kind::AuthorizationViolation => {
                    BusError::Credentials { url: url.clone(), source }
                }
                _ => BusError::Connect { url: url.clone(), source },
            }
        })?;
        let counts = Arc::new(BusCounts::default());
        let (outgoing, queue) = mpsc::unbounded_channel();
        let publisher = tokio::spawn(publish(client.clone(), queue, counts.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Hub::default();
        let prefix = format!("clade.{cluster}");
        let (relay, live, relay_tasks) =
            crate::live::start(&client, &hub, &options.node, &prefix).await?;
        hub.relay_through(relay);
        let committed = Arc::new(Notify::new());
        let dispatchers = Arc::new(std::sync::OnceLock::new());
        let nudges = nudge_tasks(&client, &prefix, committed.clone(), dispatchers.clone()).await?;
        Ok(Self {
            hub,
            client,
            map,
            prefix,
            outgoing,
            publisher,
            tx,
            rx: Mutex::new(Some(rx)),
            held: Mutex::new(HashMap::new()),
            wakes: Arc::default(),
            counts,
            live,
            _relay: relay_tasks,
            committed,
            dispatchers,
            _nudges: nudges,
        })
    }

    /// The subject of `shard`'s signals for sessions of `tenant`.
    pub fn subject(&self, shard: Shard, tenant: TenantId) -> String {
        format!("{}.signal.{shard}.{tenant}", self.prefix)
    }

    /// The subjects of all of `shard`'s signals, every tenant's: what its holder listens to.
    fn shard_subjects(&self, shard: Shard) -> String {
        format!("{}.signal.{shard}.*", self.prefix)
    }

    /// The subject the cluster's nodes announce themselves on.
    pub(crate) fn presence_subject(&self) -> String {
        format!("{}.nodes", self.prefix)
    }

    /// The connection, for the cluster's own subjects beside the signals.
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn map(&self) -> ShardMap {
        self.map
    }

    pub fn counts(&self) -> &BusCounts {
        &self.counts
    }

    /// The live events that crossed nodes through this one.
    pub fn live_counts(&self) -> &crate::live::LiveCounts {
        &self.live
    }

    /// The shards this node holds, in order.
    pub fn held(&self) -> Vec<Shard> {
        let mut held: Vec<Shard> = self.lock_held().keys().copied().collect();
        held.sort();
        held
    }

    /// Takes `shard`'s signals from now on: returns once NATS has the subscription, so a
    /// signal published after it, from any connection, reaches this node.
    pub async fn hold(&self, shard: Shard) -> Result<(), BusError> {
        if self.lock_held().contains_key(&shard) {
            return Ok(());
        }
        let subject = self.shard_subjects(shard);
        let mut subscriber = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|source| BusError::Subscribe { subject: subject.clone(), source })?;
        self.confirm(&subject).await?;
        let (tx, counts, wakes) = (self.tx.clone(), self.counts.clone(), self.wakes.clone());
        let reader = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let addressed = serde_json::from_slice::<Wire>(&message.payload)
                    .ok()
                    .and_then(Wire::addressed)
                    // The subject names the tenant the payload does, or it is not a signal.
                    .filter(|(tenant, _)| message.subject.ends_with(&format!(".{tenant}")));
                match addressed {
                    Some((tenant, signal)) => {
                        counts.received.fetch_add(1, Ordering::Relaxed);
                        count_wake(&wakes, shard, signal);
                        let _ = tx.send((tenant, signal));
                    }
                    None => {
                        counts.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(subject = %message.subject, "a message on a shard's subject is not a signal; ignored");
                    }
                }
            }
        });
        if let Some(raced) = self.lock_held().insert(shard, reader) {
            raced.abort();
        }
        Ok(())
    }

    /// Returns once the server has processed everything this connection sent before: a
    /// message to an inbox of its own comes back only after them (a flush writes them out but
    /// does not wait for the server, which may still take another connection's publish first).
    async fn confirm(&self, subject: &str) -> Result<(), BusError> {
        let unconfirmed = || BusError::Unconfirmed { subject: subject.to_owned() };
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| BusError::Subscribe { subject: inbox.clone(), source })?;
        self.client.publish(inbox, Bytes::new()).await.map_err(|_| unconfirmed())?;
        match tokio::time::timeout(CONFIRM_WITHIN, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(unconfirmed()),
        }
    }

    /// Stops taking `shard`'s signals (another node is to hold it).
    pub fn release(&self, shard: Shard) {
        if let Some(reader) = self.lock_held().remove(&shard) {
            // Its subscriber is dropped with the task, which unsubscribes.
            reader.abort();
        }
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<Shard, JoinHandle<()>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wake-ups for each shard held since the last call: what the keeper weighs the
    /// shards by.
    pub(crate) fn take_wakes(&self) -> HashMap<u32, u64> {
        std::mem::take(&mut *self.wakes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The two tasks of outbox nudges: one publishes a nudge for each burst of commits here
/// (`committed` keeps one permit however many commits come while a publish is under way), the
/// other passes the nudges heard (this node's own included, which costs one look) to
/// `dispatchers`.
async fn nudge_tasks(
    client: &async_nats::Client,
    prefix: &str,
    committed: Arc<Notify>,
    dispatchers: Arc<std::sync::OnceLock<Arc<Notify>>>,
) -> Result<crate::live::RelayTasks, BusError> {
    let subject = format!("{prefix}.outbox");
    let mut heard = client
        .subscribe(subject.clone())
        .await
        .map_err(|source| BusError::Subscribe { subject: subject.clone(), source })?;
    let listener = tokio::spawn(async move {
        while heard.next().await.is_some() {
            if let Some(signal) = dispatchers.get() {
                signal.notify_waiters();
            }
        }
    });
    let publisher = client.clone();
    let nudger = tokio::spawn(async move {
        loop {
            committed.notified().await;
            if let Err(err) = publisher.publish(subject.clone(), Bytes::new()).await {
                tracing::debug!(error = %err, "an outbox nudge could not be published; the deliverer's next look finds the rows");
            }
        }
    });
    Ok(crate::live::RelayTasks(vec![listener, nudger]))
}

/// Counts a wake-up for `shard` (a cancel is not work).
fn count_wake(wakes: &Mutex<HashMap<u32, u64>>, shard: Shard, signal: Signal) {
    if matches!(signal, Signal::Wake(_)) {
        *wakes.lock().unwrap_or_else(|e| e.into_inner()).entry(shard.0).or_default() += 1;
    }
}

/// Publishes what `queue` gives, in order, until the bus is dropped.
async fn publish(
    client: async_nats::Client,
    mut queue: mpsc::UnboundedReceiver<(String, Bytes)>,
    counts: Arc<BusCounts>,
) {
    while let Some((subject, payload)) = queue.recv().await {
        match client.publish(subject, payload).await {
            Ok(()) => {
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                counts.unsent.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "a signal could not be published; the holder's scan of the store finds its work");
            }
        }
    }
}

impl Bus for NatsBus {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn signal(&self, tenant: TenantId, signal: Signal) {
        let shard = self.map.shard_of(signal.session());
        if self.lock_held().contains_key(&shard) {
            count_wake(&self.wakes, shard, signal);
            let _ = self.tx.send((tenant, signal));
            return;
        }
        let payload = match serde_json::to_vec(&Wire::of(tenant, signal)) {
            Ok(payload) => Bytes::from(payload),
            Err(_) => return,
        };
        // Closed only once the bus is dropped, when there is no one left to tell.
        let _ = self.outgoing.send((self.subject(shard, tenant), payload));
    }

    fn take_signals(&self) -> Option<mpsc::UnboundedReceiver<Addressed>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn outbox_committed(&self) {
        self.committed.notify_one();
    }

    fn on_outbox_commits(&self, signal: Arc<Notify>) {
        let _ = self.dispatchers.set(signal);
    }

    fn runs_here(&self, session: SessionId) -> bool {
        self.lock_held().contains_key(&self.map.shard_of(session))
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        self.publisher.abort();
        for (_, reader) in self.lock_held().drain() {
            reader.abort();
        }
    }
}
