//! Two nodes on one PostgreSQL store and one NATS server, each holding half the shards: an
//! event accepted by either node runs on the node holding its session's shard (stored first,
//! then signalled); a signal lost is made good by the holder's scan; and a shard handed over
//! carries its sessions to the new holder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clade_cluster::{NatsBus, NatsOptions, Shard, ShardMap};
use clade_runtime::{Bus as _, Engine, Envelope};
use clade_store::{DataDir, Durability, Lease, Location, Store, StoreOptions};
use futures::StreamExt as _;

const SHARDS: u32 = 4;
const TTL: Duration = Duration::from_secs(60);

struct Node {
    name: &'static str,
    store: Store,
    bus: Arc<NatsBus>,
    engine: Engine,
    _data: tempfile::TempDir,
}

impl Node {
    async fn start(pg: &str, nats: &str, cluster: &str, name: &'static str) -> Self {
        let options = StoreOptions {
            migrations: clade_store::Migrations::Apply,
            ..StoreOptions::new(Location::Postgres(pg.to_owned()), Durability::Full)
        };
        let store = Store::open(options).await.unwrap();
        store.shard_leases().fence_by_shards(SHARDS);
        let nats = NatsOptions {
            url: nats.to_owned(),
            node: name.to_owned(),
            cluster: cluster.to_owned(),
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
        };
        let map = ShardMap::new(SHARDS).unwrap();
        let bus = Arc::new(NatsBus::connect(&nats, map).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let workspaces = clade_store::Agents::new(store.clone(), data.clone());
        let config = clade_config::Config::default();
        let secrets = clade_store::Secrets::new(store.clone(), data.master_key_path(), None);
        let models = clade_runtime::Models::new(
            &config,
            clade_runtime::EnvHints::default(),
            store.clone(),
            secrets,
            store.clock().clone(),
        );
        let tools = Arc::new(clade_runtime::ToolRunner::new(
            clade_tools::Registry::default(),
            store.clone(),
            workspaces.clone(),
            None,
            &clade_config::ToolsConfig::default(),
        ));
        let options = clade_runtime::EngineOptions {
            sessions: clade_config::SessionsConfig::default(),
            bindings: Vec::new(),
            default_agent: None,
            tools,
            tenants: Default::default(),
            failpoints: clade_runtime::Failpoints::none(),
        };
        let on_bus: Arc<dyn clade_runtime::Bus> = bus.clone();
        let engine =
            Engine::start_on(store.clone(), workspaces, models, options, on_bus).await.unwrap();
        Self { name, store, bus, engine, _data: dir }
    }

    /// Takes `shard`: its lease in the store, then its subject on the bus.
    async fn take(&self, shard: u32) -> Lease {
        let lease = self.store.shard_leases().acquire(self.name, i64::from(shard), TTL).await;
        let lease =
            lease.unwrap().unwrap_or_else(|| panic!("{} could not take {shard}", self.name));
        self.bus.hold(Shard(shard)).await.unwrap();
        lease
    }

    /// A keeper for this node, on leases of 1.5 s, spreading the shards evenly.
    async fn keep(&self) -> clade_cluster::Keeper {
        self.keep_by(Arc::new(clade_cluster::EvenSpread)).await
    }

    /// A keeper for this node, on leases of 1.5 s, assigning the shards by `assignment`.
    async fn keep_by(
        &self,
        assignment: Arc<dyn clade_cluster::Assignment>,
    ) -> clade_cluster::Keeper {
        let options = clade_cluster::KeeperOptions {
            node: self.name.to_owned(),
            ttl: Duration::from_millis(1500),
            assignment,
            role: clade_cluster::NodeRole::Gateway,
        };
        clade_cluster::Keeper::start(
            self.store.clone(),
            self.bus.clone(),
            self.engine.clone(),
            options,
        )
        .await
        .unwrap()
    }

    /// Hands `shard` over: off the bus, then its lease released.
    async fn give_up(&self, lease: &Lease) {
        self.bus.release(Shard(u32::try_from(lease.shard).unwrap()));
        self.store.shard_leases().release(lease).await.unwrap();
    }

    /// Sends `text` on `channel` through this node and waits for its turn to end.
    async fn ask(
        &self,
        tenant: &clade_core::Tenant,
        channel: &str,
        text: &str,
    ) -> (clade_core::SessionId, clade_runtime::Finished) {
        let (accepted, watch) =
            self.engine.submit_and_watch(envelope(tenant, channel, text)).await.unwrap();
        let finished = watch.ended(Duration::from_secs(30)).await.unwrap();
        (accepted.session_id, finished.expect("the turn did not end within 30 s"))
    }
}

/// `text` from someone on `channel`, to `ada`.
fn envelope(tenant: &clade_core::Tenant, channel: &str, text: &str) -> Envelope {
    Envelope {
        tenant: tenant.clone(),
        agent: Some("ada".into()),
        text: text.into(),
        source: clade_store::Source {
            platform: "test".into(),
            channel: channel.into(),
            actor: "someone".into(),
        },
        idempotency_key: None,
    }
}

fn cluster_name() -> String {
    let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
    format!("two-{}-{nanos}", std::process::id())
}

async fn ada(store: &Store, dir: &std::path::Path) -> clade_core::Tenant {
    let tenant = store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await.unwrap();
    let data = DataDir::open(dir).unwrap();
    let new = clade_store::NewAgent {
        handle: clade_core::Handle::parse("ada").unwrap(),
        display_name: None,
        config: clade_core::AgentConfig::default(),
    };
    clade_store::Agents::new(store.clone(), data).create(tenant.id, new).await.unwrap();
    tenant
}

/// Two nodes of one cluster on a fresh schema, and the tenant whose agent `ada` they run.
struct Pair {
    a: Node,
    b: Node,
    tenant: clade_core::Tenant,
    /// Where a third node of the same cluster starts.
    nats: String,
    cluster: String,
    _schema: clade_test_support::PgSchema,
    _scratch: tempfile::TempDir,
}

impl Pair {
    /// `None` (outside CI) when PostgreSQL or NATS is not there.
    async fn start() -> Option<Self> {
        let schema = clade_test_support::PgSchema::create().await?;
        let nats = clade_test_support::nats_url()?;
        let name = cluster_name();
        let a = Node::start(schema.url(), &nats, &name, "a").await;
        let b = Node::start(schema.url(), &nats, &name, "b").await;
        let scratch = tempfile::tempdir().unwrap();
        let tenant = ada(&a.store, scratch.path()).await;
        Some(Self { a, b, tenant, nats, cluster: name, _schema: schema, _scratch: scratch })
    }
}

fn shard(session: clade_core::SessionId) -> u32 {
    clade_core::shard::shard_of(session.as_bytes(), SHARDS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_runs_on_the_node_holding_its_shard_whichever_node_took_it() {
    let Some(Pair { a, b, tenant, _schema, _scratch, .. }) = Pair::start().await else { return };
    for shard in [0, 1] {
        a.take(shard).await;
    }
    let mut b_leases = Vec::new();
    for shard in [2, 3] {
        b_leases.push(b.take(shard).await);
    }

    // Events through node a, on sessions of both halves: each is answered, a's by a and b's
    // by b, to which a can write nothing (its store is fenced off b's shards).
    let mut on_b = None;
    for n in 0..40 {
        let (session, finished) = a.ask(&tenant, &format!("c{n}"), &format!("hello {n}")).await;
        assert_eq!(finished.status, clade_core::TurnStatus::Completed, "{finished:?}");
        assert!(finished.reply.as_deref().unwrap_or_default().contains(&format!("hello {n}")));
        if shard(session) >= 2 {
            on_b = Some((n, session));
            break;
        }
    }
    let (n, session) = on_b.expect("40 sessions, none in b's shards");
    assert!(a.bus.counts().sent.load(Ordering::Relaxed) >= 1, "a told b nothing");
    assert!(b.bus.counts().received.load(Ordering::Relaxed) >= 1, "b heard nothing");

    // The same session again, through b this time: b runs it itself.
    let (again, finished) = b.ask(&tenant, &format!("c{n}"), "and again").await;
    assert_eq!((again, finished.status), (session, clade_core::TurnStatus::Completed));

    // b hands the session's shard to a; the next event, taken by b, runs on a.
    let moving = b_leases.iter().find(|l| l.shard == i64::from(shard(session))).unwrap();
    b.give_up(moving).await;
    a.take(shard(session)).await;
    let received = a.bus.counts().received.load(Ordering::Relaxed);
    let (after, finished) = b.ask(&tenant, &format!("c{n}"), "after the hand-over").await;
    assert_eq!((after, finished.status), (session, clade_core::TurnStatus::Completed));
    assert!(a.bus.counts().received.load(Ordering::Relaxed) > received, "a was not told");
}

/// A stream on node a follows a session node b runs: a announces that it watches the
/// session, and b sends it the session's events as they happen, lifecycle events with their
/// outbox positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_node_follows_a_session_the_other_runs() {
    let Some(Pair { a, b, tenant, nats, cluster, _schema, _scratch }) = Pair::start().await else {
        return;
    };
    // A third node of the cluster that streams nothing: it is sent nothing.
    let bystander = NatsOptions {
        url: nats.clone(),
        node: "c".into(),
        cluster: cluster.clone(),
        user: None,
        password: None,
        connect_timeout: Duration::from_secs(5),
    };
    let c = NatsBus::connect(&bystander, ShardMap::new(SHARDS).unwrap()).await.unwrap();
    let (n, session) = split_and_find_on_b(&a, &b, &tenant, "c").await;
    assert_eq!(b.bus.live_counts().sent.load(Ordering::Relaxed), 0, "sent with no one watching");
    // What crosses names the tenant in its subject: listening on the tenant's subjects alone
    // hears it, and on another tenant's nothing.
    let raw = async_nats::connect(nats.as_str()).await.unwrap();
    let ours = format!("clade.{cluster}.live.{}.>", tenant.id);
    let theirs = format!("clade.{cluster}.live.{}.>", clade_core::TenantId::from_bytes([9; 16]));
    let mut ours = raw.subscribe(ours).await.unwrap();
    let mut theirs = raw.subscribe(theirs).await.unwrap();
    raw.flush().await.unwrap();
    let mut live = a.bus.hub().subscribe(session);
    let heard = async {
        while b.bus.live_counts().watched_elsewhere.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), heard).await.expect("b never heard a watch");
    let (again, finished) = b.ask(&tenant, &format!("c{n}"), "followed from a").await;
    assert_eq!(again, session);
    let mut kinds = Vec::new();
    let end = async {
        loop {
            let event = live.recv().await.unwrap();
            assert_eq!(event.session, session);
            kinds.push(event.kind());
            if event.kind() == clade_core::EventKind::TurnFinished {
                return event;
            }
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(10), end).await.expect("no end on a");
    assert!(end.id.is_some(), "a lifecycle event crosses with its outbox position");
    assert!(
        end.data()["reply"].as_str().unwrap_or_default().contains("followed from a"),
        "{:?}",
        end.data()
    );
    assert!(kinds.contains(&clade_core::EventKind::TurnStarted), "{kinds:?}");
    assert!(a.bus.live_counts().received.load(Ordering::Relaxed) >= 2);
    let heard = tokio::time::timeout(Duration::from_secs(5), ours.next()).await;
    let heard = heard.expect("nothing on the tenant's live subjects").unwrap();
    assert!(heard.subject.ends_with(&format!(".{session}")), "{}", heard.subject);
    let stray = tokio::time::timeout(Duration::from_millis(300), theirs.next()).await;
    assert!(stray.is_err(), "another tenant's subjects carried this tenant's events");
    assert_eq!(finished.status, clade_core::TurnStatus::Completed);
    // b relays nothing to itself: its own subscribers hear each event once.
    let mut here = b.bus.hub().subscribe(session);
    let _ = b.ask(&tenant, &format!("c{n}"), "once").await;
    let mut finishes = 0;
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(500), here.recv()).await {
        finishes += usize::from(event.kind() == clade_core::EventKind::TurnFinished);
    }
    assert_eq!(finishes, 1);
    assert_eq!(c.live_counts().received.load(Ordering::Relaxed), 0, "c was sent events");
}

/// Requests waiting on one node for a session another runs share one NATS subscription: kept
/// a while after each request ends, and announced again when a request comes back after the
/// runner forgot the watch, so its events still cross.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_for_a_session_run_elsewhere_share_one_subscription() {
    let Some(Pair { a, b, tenant, _schema, _scratch, .. }) = Pair::start().await else { return };
    let (n, session) = split_and_find_on_b(&a, &b, &tenant, "w").await;
    let channel = format!("w{n}");
    let subscriptions = || a.bus.live_counts().subscriptions.load(Ordering::Relaxed);
    let before = subscriptions();
    for n in 0..3 {
        let (_, finished) = a.ask(&tenant, &channel, &format!("waited on a, {n}")).await;
        assert_eq!(finished.status, clade_core::TurnStatus::Completed);
    }
    assert_eq!(subscriptions() - before, 1, "one subscription for the three requests");
    // b forgets the watch once a stops announcing it (no request waits on a now)...
    let watched = || b.bus.live_counts().watched_elsewhere.load(Ordering::Relaxed);
    until_true(|| watched() == 0, "b forgot a's watch").await;
    // ...and hears it again from the kept subscription when a request comes back.
    let received = a.bus.live_counts().received.load(Ordering::Relaxed);
    let mut live = a.bus.hub().subscribe(session);
    until_true(|| watched() > 0, "a announced the watch again").await;
    let (_, finished) = b.ask(&tenant, &channel, "crosses again").await;
    assert_eq!(finished.status, clade_core::TurnStatus::Completed);
    let end = async {
        loop {
            if live.recv().await.unwrap().kind() == clade_core::EventKind::TurnFinished {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("the turn's end never reached a");
    assert!(a.bus.live_counts().received.load(Ordering::Relaxed) > received);
    assert_eq!(subscriptions() - before, 1, "the kept subscription served again");
}

/// Gives shards 0 and 1 to `a`, 2 and 3 to `b`, and asks `b` on channels `<prefix>0`,
/// `<prefix>1`, … until one's session falls in `b`'s shards: that channel's number, and the
/// session.
async fn split_and_find_on_b(
    a: &Node,
    b: &Node,
    tenant: &clade_core::Tenant,
    prefix: &str,
) -> (usize, clade_core::SessionId) {
    for shard in [0, 1] {
        a.take(shard).await;
    }
    for shard in [2, 3] {
        b.take(shard).await;
    }
    for n in 0..40 {
        let (session, _) = b.ask(tenant, &format!("{prefix}{n}"), "hello").await;
        if shard(session) >= 2 {
            return (n, session);
        }
    }
    panic!("40 sessions, none in b's shards");
}

/// Waits (checking every 20 ms, for 10 s at most) until `done`.
async fn until_true(done: impl Fn() -> bool, what: &str) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            every.tick().await;
        }
    });
    assert!(waited.await.is_ok(), "not within 10 s: {what}");
}

/// Rows committed to the outbox on one node reach the dispatchers of the others at once (the
/// one delivering the outbox may be any node), not at their next look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_commit_on_one_node_wakes_the_other_nodes_dispatchers() {
    let Some(Pair { a, b, tenant, _schema, _scratch, .. }) = Pair::start().await else { return };
    for shard in 0..SHARDS {
        a.take(shard).await;
    }
    let signal = b.engine.outbox_signal();
    let nudged = signal.notified();
    tokio::pin!(nudged);
    nudged.as_mut().enable();
    // b commits nothing itself: only a's commits can wake its dispatchers.
    let (_, finished) = a.ask(&tenant, "c", "hello").await;
    assert_eq!(finished.status, clade_core::TurnStatus::Completed);
    let told = tokio::time::timeout(Duration::from_secs(5), nudged).await;
    assert!(told.is_ok(), "b's dispatchers never heard of a's outbox rows");
}

/// A signal that reaches no one (the holder has the lease but is not yet listening, as if
/// NATS had dropped it) loses nothing: the event is stored, and the holder's scan of the store
/// runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_signal_is_made_good_by_the_holders_scan() {
    let Some(Pair { a, b, tenant, _schema, _scratch, .. }) = Pair::start().await else { return };
    // a holds nothing; b holds every lease but listens to no subject yet.
    let mut leases = Vec::new();
    for shard in 0..SHARDS {
        leases.push(b.store.shard_leases().acquire("b", i64::from(shard), TTL).await.unwrap());
    }
    let envelope = envelope(&tenant, "x", "anyone there?");
    let (accepted, watch) = a.engine.submit_and_watch(envelope).await.unwrap();
    // Stored, not run: no one heard the signal.
    let waited = a.engine.wait(
        tenant.id,
        accepted.event_id,
        accepted.session_id,
        Duration::from_millis(1500),
    );
    assert!(waited.await.unwrap().is_none(), "a turn ran with no node listening");
    // b listens now and scans: the event runs.
    for shard in 0..SHARDS {
        b.bus.hold(Shard(shard)).await.unwrap();
    }
    assert_eq!(b.engine.resume_held().await.unwrap(), 1);
    let finished = watch.ended(Duration::from_secs(30)).await.unwrap().expect("never ran");
    assert_eq!(finished.status, clade_core::TurnStatus::Completed);
    assert!(leases.iter().all(Option::is_some));
}

/// Waits until `held` (a keeper's watch) reads `want`.
async fn until<T: PartialEq + Clone + std::fmt::Debug>(
    node: &str,
    held: &mut tokio::sync::watch::Receiver<Vec<T>>,
    want: &[T],
) {
    let reached = tokio::time::timeout(Duration::from_secs(30), held.wait_for(|s| s == want));
    let reached = matches!(reached.await, Ok(Ok(_)));
    assert!(reached, "{node} never held {want:?}: it holds {:?}", held.borrow().clone());
}

/// Keepers spread the shards over the nodes they hear, every `s mod n`-th to the `n`-th in
/// name order; a node that joins takes its share from the others (handed over), one that
/// drains hands its shards back at once, and one that dies (stops renewing and announcing)
/// loses them when its leases expire, to the node left, which then answers its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_follow_the_nodes_as_they_join_drain_and_die() {
    let Some(Pair { a, b, tenant, nats, cluster, _schema, _scratch }) = Pair::start().await else {
        return;
    };
    let keeper_a = a.keep().await;
    let keeper_b = b.keep().await;
    let (mut on_a, mut on_b) = (keeper_a.shards(), keeper_b.shards());
    until("a", &mut on_a, &[0, 2]).await;
    until("b", &mut on_b, &[1, 3]).await;

    // A third node joins: the shards spread over three.
    let c = Node::start(_schema.url(), &nats, &cluster, "c").await;
    let keeper_c = c.keep().await;
    let mut on_c = keeper_c.shards();
    until("a", &mut on_a, &[0, 3]).await;
    until("b", &mut on_b, &[1]).await;
    until("c", &mut on_c, &[2]).await;

    // It drains: back to two.
    keeper_c.drain().await;
    until("a", &mut on_a, &[0, 2]).await;
    until("b", &mut on_b, &[1, 3]).await;

    // b dies, engine, bus and all: its leases run out, and a takes every shard and answers
    // b's sessions.
    drop(keeper_b);
    drop(b);
    until("a", &mut on_a, &[0, 1, 2, 3]).await;
    let mut answered_for_b = false;
    for n in 0..40 {
        let (session, finished) = a.ask(&tenant, &format!("d{n}"), "still there?").await;
        assert_eq!(finished.status, clade_core::TurnStatus::Completed, "{finished:?}");
        if [1, 3].contains(&shard(session)) {
            answered_for_b = true;
            break;
        }
    }
    assert!(answered_for_b, "no session of b's shards in 40");
    let leases = a.store.shard_leases().list().await.unwrap();
    assert!(leases.iter().all(|l| l.holder == "a" && l.is_live()), "{leases:?}");
}

/// Once-per-cluster work is a lease of its own, spread like the shards: each singleton runs
/// on exactly one of two nodes, and all of them on the one left when the other dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_per_cluster_work_runs_on_one_node_and_moves_when_it_dies() {
    use clade_cluster::Singleton;
    let Some(Pair { a, b, _schema, _scratch, .. }) = Pair::start().await else { return };
    let keeper_a = a.keep().await;
    let keeper_b = b.keep().await;
    let (mut on_a, mut on_b) = (keeper_a.singletons(), keeper_b.singletons());
    use Singleton::{ChannelListeners, MemoryUpkeep, Outbox, Retention, Scheduler};
    until("a", &mut on_a, &[Outbox, Retention, ChannelListeners]).await;
    until("b", &mut on_b, &[Scheduler, MemoryUpkeep]).await;
    for singleton in Singleton::ALL {
        let (on_a, on_b) = (keeper_a.runs(singleton), keeper_b.runs(singleton));
        assert!(on_a != on_b, "{singleton:?} on both or neither");
    }

    drop(keeper_b);
    until("a", &mut on_a, &Singleton::ALL).await;
    let leases = a.store.shard_leases().list().await.unwrap();
    for singleton in Singleton::ALL {
        let lease = leases.iter().find(|l| l.shard == singleton.lease()).unwrap();
        assert_eq!(lease.holder, "a", "{singleton:?}: {lease:?}");
    }
}

/// Waits until `held` (a keeper's watch) satisfies `want`; what it holds then.
async fn until_holds(
    node: &str,
    held: &mut tokio::sync::watch::Receiver<Vec<u32>>,
    want: impl Fn(&[u32]) -> bool,
) -> Vec<u32> {
    let reached = tokio::time::timeout(Duration::from_secs(30), held.wait_for(|s| want(s)));
    let reached = matches!(reached.await, Ok(Ok(_)));
    let now = held.borrow().clone();
    assert!(reached, "{node} never held what was wanted: it holds {now:?}");
    now
}

/// A bin-packing keeper for `node`, once it holds all four shards, and its watch of them.
async fn bin_packed_holding_all(
    node: &Node,
) -> (clade_cluster::Keeper, tokio::sync::watch::Receiver<Vec<u32>>) {
    let keeper = node.keep_by(Arc::new(clade_cluster::BinPack::default())).await;
    let mut held = keeper.shards();
    until(node.name, &mut held, &[0, 1, 2, 3]).await;
    (keeper, held)
}

/// Starts a bin-packing keeper for `joining` and waits until the busy shards 0 and 2 are
/// split between it and the node whose watch is `on_a`: each holds one, and none holds the
/// other's shards. The joiner's keeper and its watch.
async fn joins_and_splits_shards_0_and_2(
    joining: &Node,
    on_a: &mut tokio::sync::watch::Receiver<Vec<u32>>,
) -> (clade_cluster::Keeper, tokio::sync::watch::Receiver<Vec<u32>>) {
    let keeper_b = joining.keep_by(Arc::new(clade_cluster::BinPack::default())).await;
    let mut on_b = keeper_b.shards();
    let one_busy = |held: &[u32]| held.contains(&0) != held.contains(&2);
    let held_a = until_holds("a", on_a, one_busy).await;
    let held_b =
        until_holds(joining.name, &mut on_b, |held| one_busy(held) && !held.is_empty()).await;
    assert!(held_a.iter().all(|s| !held_b.contains(s)), "a {held_a:?}, b {held_b:?}");
    (keeper_b, on_b)
}

/// Bin-packing weighs a shard by the turns run in it lately: two busy shards (0 and 2 of 4,
/// which even spread gives to one node of two) end on different nodes once a second node
/// joins, each node then carrying about half the work; and they stay there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_packing_splits_two_busy_shards_that_even_spread_keeps_together() {
    let Some(Pair { a, b, tenant, _schema, _scratch, .. }) = Pair::start().await else { return };
    let (_keeper_a, mut on_a) = bin_packed_holding_all(&a).await;

    // A session in shard 0 and one in shard 2, each asked many times.
    let mut busy: Vec<(u32, String)> = Vec::new();
    for n in 0..200 {
        let channel = format!("c{n}");
        let (session, _) = a.ask(&tenant, &channel, "hello").await;
        let s = shard(session);
        if [0, 2].contains(&s) && !busy.iter().any(|(taken, _)| *taken == s) {
            busy.push((s, channel));
        }
        if busy.len() == 2 {
            break;
        }
    }
    assert_eq!(busy.len(), 2, "no sessions in both shard 0 and shard 2 in 200");
    for _ in 0..20 {
        for (_, channel) in &busy {
            a.ask(&tenant, channel, "again").await;
        }
    }

    let (keeper_b, mut on_b) = joins_and_splits_shards_0_and_2(&b, &mut on_a).await;

    // Settled: two more leases' time moves nothing.
    let moved = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::select! { _ = on_a.changed() => "a", _ = on_b.changed() => "b" }
    });
    if let Ok(node) = moved.await {
        panic!("{node}'s shards moved again: a {:?}, b {:?}", on_a.borrow(), on_b.borrow());
    }
    drop(keeper_b);
}

/// Bin-packing weighs a shard by the executions its sessions hold open too, not only by the
/// turns run lately: with no turn run anywhere, two shards carrying open work (0 and 2 of 4,
/// which even spread gives to one node of two) end on different nodes once a second node
/// joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_packing_weighs_the_executions_a_shard_holds_open() {
    let Some(Pair { a, b, tenant, _schema, _scratch, .. }) = Pair::start().await else { return };
    let (_keeper_a, mut on_a) = bin_packed_holding_all(&a).await;

    // Open executions owned by a session of shard 0 and one of shard 2 (never run: no turn
    // and no signal adds to the load).
    let ada = a.store.agents(tenant.id).get("ada").await.unwrap();
    let now = a.store.now();
    for wanted in [0, 2] {
        let session = std::iter::repeat_with(|| clade_core::SessionId::generate(now))
            .find(|session| shard(*session) == wanted)
            .unwrap();
        for _ in 0..8 {
            let open = clade_store::NewExecution {
                id: clade_core::ExecutionId::generate(now),
                tenant: tenant.id,
                agent: ada.id,
                kind: clade_core::ExecutionKind::FlowStep,
                owner: clade_store::ExecutionOwner::Session(session),
                status: clade_core::ExecutionStatus::Running,
                input: "{}".into(),
            };
            a.store.start_execution(open).await.unwrap();
        }
    }

    let (keeper_b, _on_b) = joins_and_splits_shards_0_and_2(&b, &mut on_a).await;
    // Each holder announces its shards' open executions in their load.
    let carried = |nodes: &Vec<clade_cluster::NodeHeard>| {
        nodes.len() == 2 && nodes.iter().all(|node| node.load >= 8.0)
    };
    let nodes = clade_test_support::wait::polled(async || keeper_b.heard(), carried).await;
    assert!(carried(&nodes), "the open executions are not in the load announced: {nodes:?}");
    drop(keeper_b);
}

/// Nodes that assign the shards differently would hand them back and forth: the second is
/// refused at its start, naming both assignments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_assigning_shards_differently_is_refused() {
    let Some(Pair { a, b, _schema, _scratch, .. }) = Pair::start().await else { return };
    let _keeper_a = a.keep().await;
    let options = clade_cluster::KeeperOptions {
        node: "b".into(),
        ttl: Duration::from_millis(1500),
        assignment: Arc::new(clade_cluster::BinPack::default()),
        role: clade_cluster::NodeRole::Worker,
    };
    let refused =
        clade_cluster::Keeper::start(b.store.clone(), b.bus.clone(), b.engine.clone(), options)
            .await;
    let Err(err) = refused else { panic!("b joined with another assignment") };
    let text = err.to_string();
    assert!(text.contains("\"even\"") && text.contains("\"bin_pack\""), "{text}");
    assert!(text.contains("cluster.assignment"), "{text}");
}
