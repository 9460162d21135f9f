//! How `clade serve` runs: alone (one gateway owns its store and runs everything), or as a
//! node of a cluster (`cluster:` in clade.yaml): the sessions of its share of the shards, and
//! the once-per-cluster work ([`Singleton`]) the keeper gives it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clade_cluster::{
    Assignment, BinPack, ClockSkew, EvenSpread, HAND_OVER_WAIT, Keeper, KeeperOptions, NatsBus,
    NatsOptions, ShardMap, Singleton,
};
use clade_config::ClusterConfig;
use tokio::sync::watch;

use super::serve::AbortOnDrop;
use crate::context::{Ctx, env_value};

/// The chat platforms' bots and apps whose listeners run on one node at a time.
pub(super) type Listeners = (
    Vec<Arc<clade_channels::telegram::Bot>>,
    Vec<Arc<clade_channels::slack::App>>,
    Vec<Arc<clade_channels::discord::Bot>>,
);

/// How this gateway runs its store's sessions.
pub(super) enum Role {
    /// Every session and every service here; the lock keeps a second server off the store.
    Alone { _owner: clade_store::OwnerLock },
    /// A cluster's node, before [`Role::join`] started its keeper.
    Node { bus: Arc<NatsBus>, options: KeeperOptions },
}

/// Refuses a node whose clock is too far from the database's (`clade_cluster::ClockSkew`),
/// naming by how much and what to do.
async fn clock_agrees_with_the_database(store: &clade_store::Store) -> Result<()> {
    let skew = ClockSkew::measure(store).await?;
    if skew.too_far() {
        bail!(
            "{skew}: a cluster's nodes fire schedules and time turns by their own clocks, so they must agree; sync this machine's clock (NTP: chrony or systemd-timesyncd) and start the node again"
        );
    }
    Ok(())
}

impl Role {
    /// Takes the store alone, or (with `cluster:`) fences it by shards and connects to NATS as
    /// a node of `role`.
    pub(super) async fn of(ctx: &Ctx, role: clade_cluster::NodeRole) -> Result<Self> {
        let Some(cluster) = &ctx.config.cluster else {
            // One server per store, for this process's whole life: two would run the same turns.
            let owner = clade_store::OwnerLock::acquire(&ctx.location).await?;
            return Ok(Role::Alone { _owner: owner });
        };
        if !matches!(ctx.location, clade_store::Location::Postgres(_)) {
            bail!(
                "cluster: needs a PostgreSQL store that every node shares (store.url: postgres://…, or --store); {} is this machine's alone",
                ctx.store.location()
            );
        }
        let name = cluster.node_name(env_value(clade_config::NODE_ENV))?;
        clock_agrees_with_the_database(&ctx.store).await?;
        let map = ShardMap::new(cluster.shards).context("cluster.shards")?;
        ctx.store.shard_leases().fence_by_shards(cluster.shards);
        let options = nats_options(cluster, &name)?;
        let bus = NatsBus::connect(&options, map)
            .await
            .with_context(|| format!("node {name} cannot join cluster {:?}", cluster.name))?;
        tracing::info!(node = %name, cluster = %cluster.name, nats = %cluster.nats_url, shards = cluster.shards, "joining the cluster");
        let assignment: Arc<dyn Assignment> = match cluster.assignment {
            clade_config::ShardAssignment::Even => Arc::new(EvenSpread),
            clade_config::ShardAssignment::BinPack => Arc::new(BinPack::default()),
        };
        let ttl = Duration::from_secs(cluster.lease_ttl_secs);
        let options = KeeperOptions { node: name, ttl, assignment, role };
        Ok(Role::Node { bus: Arc::new(bus), options })
    }

    /// The bus the engine takes its signals from: NATS on a node, its own process alone.
    pub(super) fn bus(&self) -> Arc<dyn clade_runtime::Bus> {
        match self {
            Role::Alone { .. } => Arc::new(clade_runtime::LocalBus::default()),
            Role::Node { bus, .. } => bus.clone(),
        }
    }

    /// Starts running `engine`'s share: alone, everything at once; on a node, what its keeper
    /// takes as the nodes come and go.
    pub(super) async fn join(self, engine: &clade_runtime::Engine) -> Result<Joined> {
        match self {
            Role::Alone { _owner } => {
                Ok(Joined { duties: Duties::all(), keeper: None, _owner: Some(_owner) })
            }
            Role::Node { bus, options } => {
                let name = options.node.clone();
                let keeper = Keeper::start(engine.store().clone(), bus, engine.clone(), options)
                    .await
                    .with_context(|| format!("node {name} cannot join its cluster"))?;
                let duties = Duties(keeper.singletons());
                Ok(Joined { duties, keeper: Some(Arc::new(keeper)), _owner: None })
            }
        }
    }
}

/// NATS as `cluster` says, with the node's credentials from the environment.
fn nats_options(cluster: &ClusterConfig, node: &str) -> Result<NatsOptions> {
    let from_env = |field: &str, name: &Option<String>| -> Result<Option<String>> {
        match name {
            None => Ok(None),
            Some(name) => match env_value(name) {
                Some(value) => Ok(Some(value)),
                None => bail!(
                    "cluster.{field} names {name}, which is not set in this node's environment: set it, or remove cluster.{field}"
                ),
            },
        }
    };
    Ok(NatsOptions {
        url: cluster.nats_url.clone(),
        node: node.to_owned(),
        cluster: cluster.name.clone(),
        user: from_env("nats_user_env", &cluster.nats_user_env)?,
        password: from_env("nats_password_env", &cluster.nats_password_env)?,
        connect_timeout: Duration::from_secs(10),
    })
}

/// A gateway running its share.
pub(super) struct Joined {
    pub(super) duties: Duties,
    keeper: Option<Arc<Keeper>>,
    _owner: Option<clade_store::OwnerLock>,
}

impl Joined {
    /// Leaves the cluster at SIGTERM: takes no new event and hands each shard over as its
    /// turns end ([`hand_over`], for [`HAND_OVER_WAIT`] at most: a turn waiting for an approval
    /// may wait for hours, and its next holder resumes it). Alone, lets the store go.
    pub(super) async fn leave(self, engine: &clade_runtime::Engine) {
        let Some(keeper) = self.keeper else { return };
        hand_over(engine, Some(&keeper), HAND_OVER_WAIT).await;
    }

    /// The node's keeper (`None` alone), for the admin socket's drain.
    pub(super) fn keeper(&self) -> Option<Arc<Keeper>> {
        self.keeper.clone()
    }

    /// Shares the tenants' rates, streams and connections among the nodes this one counts
    /// as members, as they join and leave (alone: nothing to share).
    pub(super) fn share_quotas(&self, limits: &clade_gateway::quotas::TenantLimits) {
        if let Some(keeper) = self.keeper.clone() {
            limits.share_among(move || keeper.member_count());
        }
    }
}

/// Takes no new event and hands this gateway's work over: a cluster node releases each of its
/// shards as soon as that shard's turns have ended, so the other nodes take it at their next
/// tick (a turn still running after `wait` goes to the next holder, which resumes it from its
/// journal), and its duties at once; a gateway alone waits up to `wait` for its turns under
/// way. Returns how many turns still run here.
pub(super) async fn hand_over(
    engine: &clade_runtime::Engine,
    keeper: Option<&Keeper>,
    wait: Duration,
) -> usize {
    engine.drain();
    match keeper {
        Some(keeper) => {
            keeper.step_down(wait).await;
            tracing::info!("left the cluster: its shards and duties went to the other nodes");
        }
        None => {
            let clock = engine.store().clock().clone();
            let deadline = clock.now().plus(wait);
            while engine.running_turns() > 0 && clock.now() < deadline {
                clock.sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let running = engine.running_turns();
    if running > 0 {
        tracing::warn!(
            running,
            "turns still run as this gateway hands over: a cluster's next holders resume them from their journals, and a gateway alone resumes them at its next start"
        );
    }
    running
}

/// The once-per-cluster work this gateway runs now: all of it when it runs alone.
#[derive(Clone)]
pub(super) struct Duties(watch::Receiver<Vec<Singleton>>);

impl Duties {
    fn all() -> Self {
        // The sender goes; the receiver keeps its value, and `changed` ends at once.
        Duties(watch::channel(Singleton::ALL.to_vec()).1)
    }

    /// Whether this gateway runs `duty` now.
    pub(super) fn runs(&self, duty: Singleton) -> bool {
        self.0.borrow().contains(&duty)
    }

    /// Calls `set(true)` when this gateway takes `duty` (at once, if it runs it now) and
    /// `set(false)` when it gives it up, until the returned task is dropped.
    pub(super) fn follow(
        &self,
        duty: Singleton,
        mut set: impl FnMut(bool) + Send + 'static,
    ) -> AbortOnDrop {
        let mut duties = self.0.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut running = None;
            loop {
                let now = duties.borrow_and_update().contains(&duty);
                if running != Some(now) {
                    tracing::info!(duty = ?duty, running = now, "once-per-cluster work");
                    set(now);
                    running = Some(now);
                }
                if duties.changed().await.is_err() {
                    // No change comes any more (alone, or the keeper stopped): what runs,
                    // runs on until the task is dropped.
                    std::future::pending::<()>().await;
                }
            }
        }))
    }

    /// Runs what `start` starts while this gateway runs `duty`; stops it (the tasks aborted)
    /// when it gives `duty` up.
    pub(super) fn run_while(
        &self,
        duty: Singleton,
        mut start: impl FnMut() -> Vec<tokio::task::JoinHandle<()>> + Send + 'static,
    ) -> AbortOnDrop {
        let mut running: Vec<AbortOnDrop> = Vec::new();
        self.follow(duty, move |on| {
            running.clear();
            if on {
                running.extend(start().into_iter().map(AbortOnDrop));
            }
        })
    }

    /// Starts following the duties of the background work `clade serve` runs beside its
    /// sessions: the outbox's delivery and memory's mining of turns (the outbox), memory
    /// upkeep, and the chat platforms' listeners. Dropping the tasks stops them.
    pub(super) fn start(
        &self,
        ctx: &Ctx,
        engine: &clade_runtime::Engine,
        dispatchers: Arc<clade_runtime::outbox::Dispatchers>,
        (bots, apps, gateway_bots): Listeners,
    ) -> Vec<AbortOnDrop> {
        let (store, mining) = (ctx.store.clone(), engine.clone());
        let (upkeep_store, upkeep) = (ctx.store.clone(), engine.clone());
        vec![
            self.follow(Singleton::Outbox, move |on| dispatchers.deliver(on)),
            // Mines completed turns into memory beside them (memory.ingest), from a cursor
            // of the outbox's.
            self.run_while(Singleton::Outbox, move || {
                vec![clade_runtime::ingest::spawn(store.clone(), mining.clone())]
            }),
            // Keeps agents' memories (merge, decay, prune, purge) when memory.upkeep is on.
            self.run_while(Singleton::MemoryUpkeep, move || {
                vec![clade_runtime::cortex::spawn(upkeep_store.clone(), upkeep.clone())]
            }),
            self.run_while(Singleton::ChannelListeners, move || {
                let bots = bots.iter().map(|bot| bot.start());
                let apps = apps.iter().map(|app| app.start());
                bots.chain(apps).chain(gateway_bots.iter().map(|bot| bot.start())).collect()
            }),
        ]
    }

    /// A watch of the duties, for what restarts as a whole when they change.
    pub(super) fn watch(&self) -> watch::Receiver<Vec<Singleton>> {
        self.0.clone()
    }
}
