//! The shard keeper: which shards this node holds, kept as nodes come and go.
//!
//! Every tick (a third of the lease's time) a node's keeper announces the node on
//! `clade.<cluster>.nodes` (with the shards it holds and their load), renews its leases (a
//! lease it lost is off its bus at once), and spreads the shards over the nodes it has heard
//! from lately by the cluster's [`Assignment`] (every `n`-th shard to each, or bin-packed by
//! load, its turns and, counted every scan, its open executions: `assign.rs`); singletons go every `n`-th to each. It hands over what is no longer its share
//! (off the bus, lease released, so the next node takes it at once) and acquires its share
//! as it comes free; a node that stopped announcing itself drops out of the count, and its
//! leases expire (by the database's clock) for the others to take. Whatever it gained, it runs
//! what is open in those sessions ([`Engine::resume_held`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::Timestamp;
use clade_runtime::Engine;
use clade_store::{ExecutionOwner, Lease, Store};
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::assign::{Assignment, Loads, View};
use crate::bus::NatsBus;
use crate::clock::ClockSkew;
use crate::shard::Shard;

/// How a keeper runs.
#[derive(Debug, Clone)]
pub struct KeeperOptions {
    /// This node's name: its leases' holder, unique in the cluster.
    pub node: String,
    /// How long a lease lasts unrenewed: a node that dies loses its shards after this.
    pub ttl: Duration,
    /// How the shards are spread over the nodes; every node of a cluster uses the same.
    pub assignment: Arc<dyn Assignment>,
    /// What the node is besides a runner of sessions, as it announces itself.
    pub role: NodeRole,
}

/// What a node is, as `clade node list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeRole {
    /// A gateway: it serves the API and runs its share of the sessions.
    #[default]
    Gateway,
    /// A worker (`clade node join --hub`): it runs its share of the sessions and serves no API.
    Worker,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Gateway => "gateway",
            NodeRole::Worker => "worker",
        }
    }
}

impl KeeperOptions {
    /// How often the keeper renews, announces and rebalances.
    pub fn tick(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(50))
    }
}

/// Work a cluster does once, on one node at a time. Each is a lease of its own in the store,
/// numbered below the shards (`-1` and down), and spread over the nodes as the shards are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Singleton {
    /// Delivering the outbox to subscribers and channels.
    Outbox,
    /// Firing scheduled jobs and heartbeats.
    Scheduler,
    /// The retention sweep.
    Retention,
    /// Memory upkeep (consolidation, merges).
    MemoryUpkeep,
    /// Chat platforms' listeners (polling, sockets).
    ChannelListeners,
}

impl Singleton {
    pub const ALL: [Singleton; 5] = [
        Singleton::Outbox,
        Singleton::Scheduler,
        Singleton::Retention,
        Singleton::MemoryUpkeep,
        Singleton::ChannelListeners,
    ];

    /// Its lease's number in the store: below every shard's.
    pub fn lease(self) -> i64 {
        -1 - Self::ALL.iter().position(|s| *s == self).map_or(0, |p| p as i64)
    }

    /// The singleton whose lease is numbered `lease`.
    pub fn of_lease(lease: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.lease() == lease)
    }

    /// Its name, as `clade node list` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Singleton::Outbox => "outbox",
            Singleton::Scheduler => "scheduler",
            Singleton::Retention => "retention",
            Singleton::MemoryUpkeep => "memory_upkeep",
            Singleton::ChannelListeners => "channel_listeners",
        }
    }
}

/// How much longer than a tick a starting node listens, so a running node's next
/// announcement reaches it.
const LISTEN_MARGIN: Duration = Duration::from_millis(250);

/// The longest a shard on its way to another node waits for its turns under way to end before
/// its lease is released all the same (the next holder resumes them from their journals).
pub const HAND_OVER_WAIT: Duration = Duration::from_secs(10);

/// How often a node stepping down looks whether its shards' turns have ended.
const HAND_OVER_POLL: Duration = Duration::from_millis(100);

/// How many ticks apart the keeper scans the store for events whose signal was lost: three,
/// so such an event waits about one lease's time (5 s by default) at most.
const SCAN_EVERY_TICKS: u64 = 3;

/// The most open executions a scan counts for the shards' load: past it, the oldest count.
const OPEN_READ: u32 = 10_000;

/// Empties a watched list; whether it held anything.
fn emptied<T>(list: &mut Vec<T>) -> bool {
    let held = !list.is_empty();
    list.clear();
    held
}

/// A node's announcement.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Presence {
    node: String,
    /// It is draining: count it out now.
    leaving: bool,
    /// Which process announces: two of one name are two nodes claiming one name.
    #[serde(default)]
    instance: u64,
    /// Its shard count: nodes that disagree map a session to different shards.
    #[serde(default)]
    shards: u32,
    /// The shards it holds.
    #[serde(default)]
    held: Vec<u32>,
    /// The load of those that are not idle, in turns a minute.
    #[serde(default)]
    load: BTreeMap<u32, f64>,
    /// How it assigns the shards: nodes that disagree would hand shards back and forth.
    #[serde(default)]
    assignment: String,
    /// The version of Clade it runs.
    #[serde(default)]
    version: String,
    /// `gateway` or `worker` ([`NodeRole`]).
    #[serde(default)]
    role: String,
}

/// A node as last heard.
#[derive(Debug)]
struct Heard {
    at: Timestamp,
    held: Vec<u32>,
    load: BTreeMap<u32, f64>,
    version: String,
    role: String,
}

/// A node as this one last heard it announce itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHeard {
    pub node: String,
    /// The load of the shards it holds, in turns a minute.
    pub load: f64,
    /// The version of Clade it runs.
    pub version: String,
    /// `gateway` or `worker` ([`NodeRole`]); empty from a node of an older version.
    pub role: String,
    /// How long ago it was heard, by the store's clock.
    pub heard_ms_ago: i64,
}

/// Why a node may not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(transparent)]
    Bus(#[from] crate::BusError),
    #[error(
        "another node of this cluster is named {node:?} and running: give each node a name of its own (cluster.node or CLADE_NODE)"
    )]
    NameTaken { node: String },
    #[error(
        "node {node:?} runs this cluster with {theirs} shards and this node is configured with {ours}: every node must say the same cluster.shards; to change it, stop every node, change it on all, and start them again"
    )]
    ShardCount { node: String, ours: u32, theirs: u32 },
    #[error(
        "node {node:?} assigns this cluster's shards by {theirs:?} and this node by {ours:?}: every node must say the same cluster.assignment; change it on all of them"
    )]
    Assignment { node: String, ours: &'static str, theirs: String },
}

/// This process, as its announcements tell it from another of the same name.
fn instance_id() -> u64 {
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0));
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A running keeper; dropping it stops it without releasing anything (as a crash would: the
/// leases expire). [`Keeper::drain`] hands the shards over first.
pub struct Keeper {
    state: Arc<State>,
    ticker: JoinHandle<()>,
    listener: JoinHandle<()>,
}

struct State {
    store: Store,
    bus: Arc<NatsBus>,
    engine: Engine,
    options: KeeperOptions,
    held: Mutex<BTreeMap<u32, Lease>>,
    /// Held shards on their way to another node: off the bus (no new turn starts here), their
    /// leases kept until their running turns end or the deadline passes ([`State::hand_over`]).
    releasing: Mutex<BTreeMap<u32, Timestamp>>,
    /// Nodes heard from: when (by the store's clock), what they hold and its load.
    heard: Mutex<HashMap<String, Heard>>,
    /// The load of the shards this node holds.
    loads: Mutex<Loads>,
    shards: watch::Sender<Vec<u32>>,
    held_singletons: Mutex<BTreeMap<Singleton, Lease>>,
    singletons: watch::Sender<Vec<Singleton>>,
    /// Shards were taken whose sessions are not yet resumed.
    to_resume: AtomicBool,
    /// This process's id in its announcements.
    instance: u64,
    /// What the listener heard that forbids this node to run: the first conflict.
    conflict: Mutex<Option<KeeperError>>,
    /// The node stepped down: it holds nothing and takes nothing.
    leaving: AtomicBool,
    /// Ticks so far, to scan the store every few.
    ticks: std::sync::atomic::AtomicU64,
    /// How far this node's clock was from the database's when last measured (every few ticks).
    skew_ms: std::sync::atomic::AtomicI64,
}

impl Keeper {
    /// Starts keeping `engine`'s node's share of the shards. Its store must be fenced by the
    /// bus's shards (`ShardLeases::fence_by_shards`).
    ///
    /// It first listens for a tick, taking nothing: a running node of the same name, or one
    /// with another shard count, refuses this one (each would run sessions the other runs).
    pub async fn start(
        store: Store,
        bus: Arc<NatsBus>,
        engine: Engine,
        options: KeeperOptions,
    ) -> Result<Self, KeeperError> {
        let mut presence =
            bus.client().subscribe(bus.presence_subject()).await.map_err(|source| {
                crate::BusError::Subscribe { subject: bus.presence_subject(), source }
            })?;
        let state = Arc::new(State {
            store,
            bus,
            engine,
            options,
            held: Mutex::default(),
            releasing: Mutex::default(),
            heard: Mutex::default(),
            loads: Mutex::default(),
            shards: watch::Sender::new(Vec::new()),
            held_singletons: Mutex::default(),
            singletons: watch::Sender::new(Vec::new()),
            to_resume: AtomicBool::new(false),
            instance: instance_id(),
            conflict: Mutex::default(),
            leaving: AtomicBool::new(false),
            ticks: std::sync::atomic::AtomicU64::new(0),
            skew_ms: std::sync::atomic::AtomicI64::new(0),
        });
        let heard = state.clone();
        let listener = tokio::spawn(async move {
            while let Some(message) = presence.next().await {
                let Ok(presence) = serde_json::from_slice::<Presence>(&message.payload) else {
                    continue;
                };
                heard.hear(presence);
            }
        });
        let listened = state.store.clock().sleep(state.options.tick() + LISTEN_MARGIN);
        listened.await;
        if let Some(conflict) = state.lock_conflict().take() {
            listener.abort();
            return Err(conflict);
        }
        let ticking = state.clone();
        let ticker = tokio::spawn(async move {
            loop {
                ticking.tick().await;
                ticking.store.clock().sleep(ticking.options.tick()).await;
            }
        });
        Ok(Self { state, ticker, listener })
    }

    /// The shards this node holds, as they change.
    pub fn shards(&self) -> watch::Receiver<Vec<u32>> {
        self.state.shards.subscribe()
    }

    /// The once-per-cluster work this node runs, as it changes.
    pub fn singletons(&self) -> watch::Receiver<Vec<Singleton>> {
        self.state.singletons.subscribe()
    }

    /// Whether this node runs `singleton` now.
    pub fn runs(&self, singleton: Singleton) -> bool {
        self.state.lock_singletons().contains_key(&singleton)
    }

    /// Hands every shard and singleton over and takes none again: the node announces it is
    /// leaving (now and at every tick), so the others count it out at once, and releases each
    /// shard's lease as soon as its turns under way have ended (a turn still running after
    /// `wait` is left to the next holder, which resumes it from its journal), so the others
    /// take the shards at their next tick without waiting for them to expire. No new turn
    /// starts here meanwhile. Returns once every shard is released. The node goes on taking
    /// events and signalling them to the shards' new holders.
    pub async fn step_down(&self, wait: Duration) {
        self.state.leaving.store(true, Ordering::SeqCst);
        self.state.announce(true).await;
        self.state.give_up_singletons().await;
        let deadline = self.state.store.now().plus(wait);
        self.state.hand_over_by(&[], deadline).await;
        let clock = self.state.store.clock().clone();
        while !self.state.lock_held().is_empty() {
            clock.sleep(HAND_OVER_POLL).await;
            // Again with every shard held: one a tick under way took after the first call is
            // put on its way too.
            self.state.hand_over_by(&[], deadline).await;
        }
        self.state.shards.send_if_modified(emptied);
    }

    /// The nodes this one counts as members (heard within three ticks, itself included), in
    /// name order: their load and version, for `clade node list`.
    pub fn heard(&self) -> Vec<NodeHeard> {
        let now = self.state.store.now().as_millis();
        let members = self.state.members();
        let heard = self.state.lock_heard();
        let mut nodes: Vec<NodeHeard> = heard
            .iter()
            .filter(|(node, _)| members.contains(node))
            .map(|(node, heard)| NodeHeard {
                node: node.clone(),
                load: (heard.load.values().sum::<f64>() * 10.0).round() / 10.0,
                version: heard.version.clone(),
                role: heard.role.clone(),
                heard_ms_ago: now.saturating_sub(heard.at.as_millis()).max(0),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// How many nodes this one counts as members ([`Keeper::heard`]'s count, without copying
    /// them): what the tenants' quotas are shared among.
    pub fn member_count(&self) -> usize {
        self.state.member_count()
    }

    /// This node's clock against the database's, when it was last measured too far off (the
    /// keeper measures every lease period): the node runs on, degraded, until it agrees again.
    pub fn clock_off(&self) -> Option<ClockSkew> {
        let skew = ClockSkew { ms: self.state.skew_ms.load(Ordering::Relaxed) };
        skew.too_far().then_some(skew)
    }

    /// Whether [`Keeper::step_down`] was called.
    pub fn stepped_down(&self) -> bool {
        self.state.leaving.load(Ordering::SeqCst)
    }

    /// Hands every shard over ([`Keeper::step_down`]) and stops.
    pub async fn drain(self) {
        self.ticker.abort();
        self.state.leaving.store(true, Ordering::SeqCst);
        self.state.give_everything_up().await;
        self.listener.abort();
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.ticker.abort();
        self.listener.abort();
    }
}

impl State {
    fn lock_held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces the node as leaving and releases every lease it holds.
    async fn give_everything_up(&self) {
        self.announce(true).await;
        let held = std::mem::take(&mut *self.lock_held());
        self.lock_releasing().clear();
        for (shard, lease) in held {
            self.bus.release(Shard(shard));
            if let Err(err) = self.store.shard_leases().release(&lease).await {
                tracing::warn!(shard, error = %err, "a shard's lease could not be released; it expires");
            }
        }
        self.shards.send_if_modified(emptied);
        self.give_up_singletons().await;
    }

    async fn give_up_singletons(&self) {
        let singletons = std::mem::take(&mut *self.lock_singletons());
        for (_, lease) in singletons {
            let _ = self.store.shard_leases().release(&lease).await;
        }
        self.singletons.send_if_modified(emptied);
    }

    fn lock_releasing(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Timestamp>> {
        self.releasing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in another node's (or this one's) announcement.
    fn hear(&self, presence: Presence) {
        let ours = self.bus.map().shards();
        let conflict = if presence.node == self.options.node && presence.instance != self.instance {
            Some(KeeperError::NameTaken { node: presence.node.clone() })
        } else if presence.shards != 0 && presence.shards != ours && !presence.leaving {
            Some(KeeperError::ShardCount {
                node: presence.node.clone(),
                ours,
                theirs: presence.shards,
            })
        } else if !presence.assignment.is_empty()
            && presence.assignment != self.options.assignment.name()
            && !presence.leaving
        {
            Some(KeeperError::Assignment {
                node: presence.node.clone(),
                ours: self.options.assignment.name(),
                theirs: presence.assignment.clone(),
            })
        } else {
            None
        };
        if let Some(conflict) = conflict {
            // A running node keeps running; the newcomer reads this at its start and stops.
            tracing::error!(error = %conflict, "a node of this cluster conflicts with this one");
            self.lock_conflict().get_or_insert(conflict);
            return;
        }
        let mut nodes = self.lock_heard();
        if presence.leaving {
            nodes.remove(&presence.node);
        } else {
            let heard = Heard {
                at: self.store.now(),
                held: presence.held,
                load: presence.load,
                version: presence.version,
                role: presence.role,
            };
            nodes.insert(presence.node, heard);
        }
    }

    fn lock_conflict(&self) -> std::sync::MutexGuard<'_, Option<KeeperError>> {
        self.conflict.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_heard(&self) -> std::sync::MutexGuard<'_, HashMap<String, Heard>> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_loads(&self) -> std::sync::MutexGuard<'_, Loads> {
        self.loads.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn announce(&self, leaving: bool) {
        let (held, load) = if leaving {
            (Vec::new(), BTreeMap::new())
        } else {
            (self.lock_held().keys().copied().collect(), self.lock_loads().announced())
        };
        let presence = Presence {
            node: self.options.node.clone(),
            leaving,
            instance: self.instance,
            shards: self.bus.map().shards(),
            held,
            load,
            assignment: self.options.assignment.name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            role: self.options.role.as_str().to_owned(),
        };
        let Ok(payload) = serde_json::to_vec(&presence) else { return };
        let client = self.bus.client();
        if client.publish(self.bus.presence_subject(), payload.into()).await.is_err() {
            tracing::warn!("this node could not announce itself; its shards stay until it can");
        }
    }

    /// Whether a node last heard `at` is a member now: heard within three ticks.
    fn recent(&self) -> impl Fn(&Heard) -> bool {
        let now = self.store.now().as_millis();
        let within = i64::try_from(self.options.tick().as_millis() * 3).unwrap_or(i64::MAX);
        move |heard| now.saturating_sub(heard.at.as_millis()) <= within
    }

    /// How many nodes [`State::members`] lists.
    fn member_count(&self) -> usize {
        let recent = self.recent();
        let heard = self.lock_heard();
        let others =
            heard.iter().filter(|(node, h)| **node != self.options.node && recent(h)).count();
        others + 1
    }

    /// The nodes heard from within three ticks, this one included, in name order.
    fn members(&self) -> Vec<String> {
        let recent = self.recent();
        let mut nodes: Vec<String> = self
            .lock_heard()
            .iter()
            .filter(|(_, heard)| recent(heard))
            .map(|(node, _)| node.clone())
            .collect();
        if !nodes.contains(&self.options.node) {
            nodes.push(self.options.node.clone());
        }
        nodes.sort();
        nodes
    }

    async fn tick(&self) {
        if self.leaving.load(Ordering::SeqCst) {
            // Stepping down: what is still held goes as its turns end (`Keeper::step_down`);
            // the leases stay renewed meanwhile.
            self.announce(true).await;
            self.renew_held().await;
            self.hand_over(&[]).await;
            return;
        }
        let held: Vec<u32> = self.lock_held().keys().copied().collect();
        let wakes = self.bus.take_wakes();
        self.lock_loads().add(&wakes, self.options.tick().as_secs_f64(), &held);
        self.announce(false).await;
        self.renew_held().await;
        // This node's share of the shards, by the assignment, and every n-th singleton.
        let members = self.members();
        let index = members.iter().position(|n| *n == self.options.node).unwrap_or(0);
        let count = members.len().max(1);
        let share = self.share(&members, index);
        self.hand_over(&share).await;
        self.take_share(share).await;
        let singletons: Vec<Singleton> = Singleton::ALL
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % count == index)
            .map(|(_, singleton)| singleton)
            .collect();
        self.keep_singletons(&singletons).await;
        if self.to_resume.swap(false, Ordering::SeqCst)
            && let Err(err) = self.engine.resume_held().await
        {
            self.to_resume.store(true, Ordering::SeqCst);
            tracing::warn!(error = %err, "the sessions of the shards taken could not be resumed; the next tick tries again");
        }
        // Every third tick (the lease's time): events whose signal was lost run all the same, and
        // the clock is compared with the database's again.
        if self.ticks.fetch_add(1, Ordering::Relaxed) % SCAN_EVERY_TICKS == SCAN_EVERY_TICKS - 1 {
            self.check_clock().await;
            self.count_open().await;
            match self.engine.wake_held().await {
                Ok(0) => {}
                Ok(woken) => {
                    tracing::debug!(woken, "sessions with waiting events woken by the scan")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the scan for waiting events failed; the next one tries again")
                }
            }
        }
        let now: Vec<u32> = self.lock_held().keys().copied().collect();
        self.shards.send_if_modified(|shards| {
            let changed = *shards != now;
            *shards = now;
            changed
        });
    }

    /// This node's share of the shards, the `index`-th of `members`, as the assignment spreads
    /// them over what every node announced.
    fn share(&self, members: &[String], index: usize) -> Vec<u32> {
        let (mut holders, mut load) = (HashMap::new(), HashMap::new());
        {
            let heard = self.lock_heard();
            let mut nodes: Vec<(&String, &Heard)> =
                heard.iter().filter(|(node, _)| members.contains(node)).collect();
            nodes.sort_by(|a, b| a.0.cmp(b.0));
            // A shard claimed by two (one handing it to the other) stays with the first by name.
            for (node, heard) in nodes {
                for shard in &heard.held {
                    holders.entry(*shard).or_insert_with(|| node.clone());
                }
                load.extend(heard.load.iter().map(|(shard, l)| (*shard, *l)));
            }
        }
        let view =
            View { members, shards: self.bus.map().shards(), holders: &holders, load: &load };
        self.options.assignment.assign(&view).into_iter().nth(index).unwrap_or_default()
    }

    /// The load `shard` had at its last holder, as announced: where this node's count of it
    /// starts.
    fn last_load(&self, shard: u32) -> Option<f64> {
        self.lock_heard().values().find_map(|heard| heard.load.get(&shard).copied())
    }

    /// Measures the clock against the database's, and says so when it goes off or comes back.
    async fn check_clock(&self) {
        let skew = match ClockSkew::measure(&self.store).await {
            Ok(skew) => skew,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the database's clock; the next check tries again");
                return;
            }
        };
        let was = ClockSkew { ms: self.skew_ms.swap(skew.ms, Ordering::Relaxed) };
        match (was.too_far(), skew.too_far()) {
            (false, true) => {
                tracing::error!(node = %self.options.node, skew_ms = skew.ms, "{skew}: this node is degraded until its clock agrees again; sync this machine's clock (NTP: chrony or systemd-timesyncd)")
            }
            (true, false) => {
                tracing::info!(node = %self.options.node, skew_ms = skew.ms, "this node's clock agrees with the database's again")
            }
            _ => {}
        }
    }

    /// Counts the executions open in the sessions of the shards held, for their load (the
    /// store's read across tenants, at most [`OPEN_READ`] of them, oldest first).
    async fn count_open(&self) {
        let open = match self.store.system().open_executions(OPEN_READ).await {
            Ok(open) => open,
            Err(err) => {
                tracing::warn!(error = %err, "cannot count the open executions; the shards' load leaves them out until the next scan");
                return;
            }
        };
        let held: Vec<u32> = self.lock_held().keys().copied().collect();
        let map = self.bus.map();
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for execution in open {
            if let ExecutionOwner::Session(session) = execution.owner {
                let Shard(shard) = map.shard_of(session);
                if held.contains(&shard) {
                    *counts.entry(shard).or_default() += 1;
                }
            }
        }
        self.lock_loads().set_open(counts);
    }

    /// Renews the shards' leases; one lost is off the bus at once.
    async fn renew_held(&self) {
        let leases = self.store.shard_leases();
        let held: Vec<(u32, Lease)> =
            self.lock_held().iter().map(|(s, l)| (*s, l.clone())).collect();
        for (shard, lease) in &held {
            match leases.renew(lease, self.options.ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(shard, "this node lost a shard's lease");
                    self.bus.release(Shard(*shard));
                    self.lock_held().remove(shard);
                }
                Err(err) => {
                    tracing::warn!(shard, error = %err, "a shard's lease could not be renewed")
                }
            }
        }
    }

    /// Hands over the shards held that are not in `share`, each once its turns have ended
    /// (at most [`HAND_OVER_WAIT`] from now).
    async fn hand_over(&self, share: &[u32]) {
        self.hand_over_by(share, self.store.now().plus(HAND_OVER_WAIT)).await;
    }

    /// Hands over the shards held that are not in `share`: off the bus at once, so no new turn
    /// starts here and new signals go unheard (the next holder runs what is open as it takes
    /// the shard), and their leases released as soon as no turn of theirs runs here, or at
    /// `deadline` all the same. A shard on its way that is back in `share` stays.
    async fn hand_over_by(&self, share: &[u32], deadline: Timestamp) {
        let held: Vec<u32> = self.lock_held().keys().copied().collect();
        for shard in held {
            let leaving = !share.contains(&shard);
            let on_its_way = self.lock_releasing().contains_key(&shard);
            if leaving && !on_its_way {
                self.bus.release(Shard(shard));
                self.lock_releasing().insert(shard, deadline);
            } else if !leaving && on_its_way {
                match self.bus.hold(Shard(shard)).await {
                    Ok(()) => {
                        self.lock_releasing().remove(&shard);
                        self.to_resume.store(true, Ordering::SeqCst);
                    }
                    Err(err) => {
                        tracing::warn!(shard, error = %err, "a shard kept could not be listened to again; it goes on its way")
                    }
                }
            }
        }
        self.release_ended().await;
    }

    /// Releases the leases of the shards on their way whose turns have ended here, or whose
    /// deadline passed (a turn still running is resumed by the next holder from its journal).
    async fn release_ended(&self) {
        let on_the_way: Vec<(u32, Timestamp)> =
            self.lock_releasing().iter().map(|(s, d)| (*s, *d)).collect();
        if on_the_way.is_empty() {
            return;
        }
        let map = self.bus.map();
        let busy: std::collections::BTreeSet<u32> =
            self.engine.busy_sessions().into_iter().map(|s| map.shard_of(s).0).collect();
        let now = self.store.now();
        for (shard, deadline) in on_the_way {
            let running = busy.contains(&shard);
            if running && now < deadline {
                continue;
            }
            if running {
                tracing::warn!(
                    shard,
                    "a turn still runs as its shard is handed over: the next holder resumes it from its journal"
                );
            }
            self.lock_releasing().remove(&shard);
            let Some(lease) = self.lock_held().remove(&shard) else { continue };
            if let Err(err) = self.store.shard_leases().release(&lease).await {
                tracing::warn!(shard, error = %err, "a shard's lease could not be released; it expires");
            }
        }
        let now: Vec<u32> = self.lock_held().keys().copied().collect();
        self.shards.send_if_modified(|shards| {
            let changed = *shards != now;
            *shards = now;
            changed
        });
    }

    /// Takes the shards of `share` that come free: lease, then bus.
    async fn take_share(&self, share: Vec<u32>) {
        let leases = self.store.shard_leases();
        for shard in share {
            if self.lock_held().contains_key(&shard) {
                continue;
            }
            match leases.acquire(&self.options.node, i64::from(shard), self.options.ttl).await {
                Ok(Some(lease)) => match self.bus.hold(Shard(shard)).await {
                    Ok(()) => {
                        if let Some(load) = self.last_load(shard) {
                            self.lock_loads().seed(shard, load);
                        }
                        self.lock_held().insert(shard, lease);
                        self.to_resume.store(true, Ordering::SeqCst);
                    }
                    Err(err) => {
                        tracing::warn!(shard, error = %err, "a shard taken could not be listened to; it is given back");
                        let _ = leases.release(&lease).await;
                    }
                },
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(shard, error = %err, "a shard's lease could not be taken")
                }
            }
        }
    }

    /// Renews the singletons held, gives up those not in `share` and takes those of `share`
    /// that come free.
    async fn keep_singletons(&self, share: &[Singleton]) {
        let leases = self.store.shard_leases();
        let held: Vec<(Singleton, Lease)> =
            self.lock_singletons().iter().map(|(s, l)| (*s, l.clone())).collect();
        for (singleton, lease) in held {
            let kept = if share.contains(&singleton) {
                matches!(leases.renew(&lease, self.options.ttl).await, Ok(true))
            } else {
                let _ = leases.release(&lease).await;
                false
            };
            if !kept {
                self.lock_singletons().remove(&singleton);
            }
        }
        for singleton in share {
            if self.lock_singletons().contains_key(singleton) {
                continue;
            }
            let taken = leases.acquire(&self.options.node, singleton.lease(), self.options.ttl);
            if let Ok(Some(lease)) = taken.await {
                self.lock_singletons().insert(*singleton, lease);
            }
        }
        let now: Vec<Singleton> = self.lock_singletons().keys().copied().collect();
        self.singletons.send_if_modified(|singletons| {
            let changed = *singletons != now;
            *singletons = now;
            changed
        });
    }

    fn lock_singletons(&self) -> std::sync::MutexGuard<'_, BTreeMap<Singleton, Lease>> {
        self.held_singletons.lock().unwrap_or_else(|e| e.into_inner())
    }
}
