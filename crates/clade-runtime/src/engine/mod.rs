//! The turn engine: events in, one actor per active session running turns in strict order,
//! every step journaled, lifecycle events through the outbox, and resumption after a crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_config::{Binding, QueueMode, SessionsConfig};
use clade_core::{AgentId, EventId, SessionId, Tenant, TenantId, TurnId, TurnStatus};
use clade_protocol::LifecycleEvent;
use clade_store::{Accepted, EventRow, NewEvent, SessionRow, Source, Store, TurnRow, Workspaces};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

use crate::bus::{Bus, Signal};
use crate::hub::{Hub, Subscription};
use crate::models::Models;
use crate::tools::ToolRunner;

mod actor;
mod bare;
mod catalogue;
mod compaction;
mod context;
mod debugger;
mod executor;
mod forks;
mod preview;
mod profile;
mod turn;

pub use debugger::StopOrder;
pub use executor::{UnreadableStep, step_view};
pub use preview::Preview;

use actor::{actor, publish};
pub use bare::Bare;
use context::{Checked, Persona};

/// Failures of the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    #[error(
        "no agent for this event: name one with `agent`, or add a binding or a `default_agent` to clade.yaml"
    )]
    NoAgent,
    #[error("another node took this node's lease on its sessions: it accepts no more events")]
    LeaseLost,
    #[error("this gateway is draining before it stops: it takes no new events")]
    Draining,
    /// A previewed turn ended before it called a model; the reason is the turn's own.
    #[error("the turn would call no model: {0}")]
    Unsent(String),
}

impl clade_core::Fault for Error {
    fn is_internal(&self) -> bool {
        match self {
            Error::Store(store) => clade_core::Fault::is_internal(store),
            Error::LeaseLost => true,
            Error::NoAgent | Error::Draining | Error::Unsent(_) => false,
        }
    }
}

/// An inbound message as the API receives it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub tenant: Tenant,
    /// Agent handle; when absent, bindings decide.
    pub agent: Option<String>,
    pub text: String,
    pub source: Source,
    pub idempotency_key: Option<String>,
}

/// How the turn of an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub turn_id: TurnId,
    /// Not `Running`.
    pub status: TurnStatus,
    pub reply: Option<String>,
    pub error: Option<String>,
    /// The model that gave the last answer.
    pub model: Option<String>,
}

impl Finished {
    fn of(turn: TurnRow) -> Self {
        let TurnRow { id, status, reply, error, model, .. } = turn;
        Self { turn_id: id, status, reply, error, model }
    }

    /// From the lifecycle event that ended the turn (see [`outcome_of`]).
    fn from_ended(ended: clade_protocol::TurnEnded) -> Option<Self> {
        Some(Self {
            turn_id: ended.turn.parse().ok()?,
            status: ended.status.0,
            reply: ended.reply,
            error: ended.error,
            model: ended.model,
        })
    }
}

/// Everything the engine needs, set up once per process.
pub struct EngineOptions {
    pub sessions: SessionsConfig,
    pub bindings: Vec<Binding>,
    /// The agent of an event that names none and matches no binding.
    pub default_agent: Option<String>,
    /// Every tool call goes through it: policy, approval, sandbox, audit.
    pub tools: Arc<ToolRunner>,
    /// Per-tenant settings: `quotas.concurrent_turns` bounds a tenant's running turns.
    pub tenants: std::collections::BTreeMap<String, clade_config::TenantConfig>,
    /// Where this engine stops on purpose, for crash tests ([`crate::failpoints`]).
    pub failpoints: crate::Failpoints,
}

/// What a turn's context recalls from its agent's memory: up to `items` items relevant to the
/// turn's messages, within about `tokens` tokens.
pub struct Recall {
    pub memory: Arc<clade_memory::Memory>,
    pub items: u32,
    pub tokens: u32,
    /// How completed turns are mined for memories, if they are (see [`crate::ingest`]).
    pub ingest: Option<crate::ingest::Miner>,
}

/// What the engine runs by, apart from the tools (the [`ToolSet`](crate::ToolSet)): session
/// limits, how an event finds its agent, and tenants' settings. One generation, replaced whole
/// by [`Engine::reload`]: a turn takes the current one when it starts and keeps it to its end,
/// so a reload reaches the turns that start after it.
#[derive(Debug, Clone)]
pub struct Settings {
    generation: u64,
    pub sessions: SessionsConfig,
    pub bindings: Vec<Binding>,
    /// The agent of an event that names none and matches no binding.
    pub default_agent: Option<String>,
    /// Per-tenant settings: `quotas.concurrent_turns` bounds a tenant's running turns.
    pub tenants: std::collections::BTreeMap<String, clade_config::TenantConfig>,
}

impl Settings {
    /// Starts at generation 1; [`Engine::reload`] numbers the next.
    pub fn new(
        sessions: SessionsConfig,
        bindings: Vec<Binding>,
        default_agent: Option<String>,
        tenants: std::collections::BTreeMap<String, clade_config::TenantConfig>,
    ) -> Self {
        Self { generation: 1, sessions, bindings, default_agent, tenants }
    }

    /// Which reload made it: 1 for the engine's first settings.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A tenant's running-turn semaphore: the settings generation and quota it was made for.
type TurnSlots = (u64, u64, Arc<tokio::sync::Semaphore>);

struct Inner {
    store: Store,
    /// The same store for the actors' own reads, which need not wait until what they read is
    /// durable: a turn's outcome commits after the events it read, so it cannot be durable
    /// before them, and nothing else leaves the process before then (see
    /// [`Store::visible_reads`]).
    visible: clade_store::SystemStore,
    /// Where agents' files are (see [`clade_store::Workspaces`]).
    workspaces: Arc<dyn Workspaces>,
    /// The models turns call, swapped whole by a new configuration (a turn keeps the ones
    /// its call started with).
    models: std::sync::RwLock<Arc<Models>>,
    /// Live events, wake-ups and cancels (see [`crate::bus`]).
    bus: Arc<dyn Bus>,
    tools: Arc<ToolRunner>,
    /// The current [`Settings`]; each turn holds the generation it started on.
    settings: std::sync::RwLock<Arc<Settings>>,
    actors: Mutex<HashMap<SessionId, mpsc::UnboundedSender<Wake>>>,
    /// Where actors run: wake-ups also come from the store's writer thread.
    runtime: tokio::runtime::Handle,
    cancels: Mutex<HashMap<SessionId, Arc<Notify>>>,
    /// Woken when the outbox grows, so dispatchers need not poll fast.
    outbox: Arc<Notify>,
    /// Each agent's persona files as last read (see [`read_persona`]), while an active session
    /// of the agent holds them.
    personas: Mutex<HashMap<AgentId, (std::sync::Weak<Persona>, Checked)>>,
    /// Bumped whenever a session's own settings or the engine's [`Settings`] change: actors
    /// then reload their session.
    session_changes: std::sync::atomic::AtomicU64,
    /// Turns a tenant may run at once, for tenants with a `concurrent_turns` quota, with the
    /// settings generation they were made for.
    turn_slots: Mutex<HashMap<TenantId, TurnSlots>>,
    /// Set once a turn found that another node took this one's lease.
    lease_lost: std::sync::atomic::AtomicBool,
    /// Set by [`Engine::drain`]: no new event is taken.
    draining: std::sync::atomic::AtomicBool,
    /// Turns running now (waiting for an approval included).
    pub(crate) running_turns: std::sync::atomic::AtomicUsize,
    /// Memory recall for turns' contexts, when agents have memory (see [`Engine::set_recall`]).
    recall: std::sync::RwLock<Option<Arc<Recall>>>,
    /// Sessions being compacted now (see [`compaction::start`]).
    compacting: Mutex<std::collections::HashSet<SessionId>>,
    /// Compactions completed: an actor whose kept history predates one reads it again.
    compactions: std::sync::atomic::AtomicU64,
    /// The ids of paused agents and sessions (see [`Engine::pause`]): their actors start no
    /// turn. A copy of the store's `pauses`, read at start and kept by every change.
    paused: std::sync::RwLock<std::collections::HashSet<[u8; 16]>>,
    /// Changes to branches and workers in this process (started, progress, settled,
    /// cancelled): a channel's status block is read again only after one.
    fork_changes: std::sync::atomic::AtomicU64,
    /// Every tenant's breakpoints (see [`debugger`]).
    breakpoints: debugger::Breakpoints,
    failpoints: crate::Failpoints,
}

/// What wakes a session's actor. The queue holds at most one `Event` per open event of the
/// session, which `sessions.max_queued` bounds, so it needs no bound of its own.
#[derive(Debug)]
enum Wake {
    /// Something changed in the store (a resumed turn, a restart): read it.
    Work,
    /// This event was just committed, sent in commit order from the store's writer; the actor
    /// can run it without reading it back. Boxed, so the queue's blocks stay small.
    Event(Box<EventRow>),
}

/// A cheap-to-clone handle to the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A handle to the engine that does not keep it alive: for what the engine itself holds (its
/// tools), which would otherwise keep it from ever being dropped.
#[derive(Clone)]
pub struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    /// The engine, while it runs.
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

pub(crate) fn payload_hash(agent: &str, source: &Source, text: &str) -> String {
    let digest = Sha256::new()
        .chain_update(agent.as_bytes())
        .chain_update([0])
        .chain_update(source.platform.as_str().as_bytes())
        .chain_update([0])
        .chain_update(source.channel.as_bytes())
        .chain_update([0])
        .chain_update(source.actor.as_bytes())
        .chain_update([0])
        .chain_update(text.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// This process, as a lease holder: its host and process id.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}:{}", if host.is_empty() { "localhost" } else { host }, std::process::id())
}

impl Engine {
    /// Starts the engine: takes the leases of its sessions, and resumes every one of those that
    /// has unfinished events.
    pub async fn start(
        store: Store,
        workspaces: impl Workspaces,
        models: Models,
        options: EngineOptions,
    ) -> Result<Self, Error> {
        let bus = Arc::new(crate::bus::LocalBus::default());
        Self::start_on(store, workspaces, models, options, bus).await
    }

    /// [`Engine::start`] on `bus` (see [`crate::bus`]), whose signals this engine takes.
    pub async fn start_on(
        store: Store,
        workspaces: impl Workspaces,
        models: Models,
        options: EngineOptions,
        bus: Arc<dyn Bus>,
    ) -> Result<Self, Error> {
        let EngineOptions { sessions, bindings, default_agent, tools, tenants, failpoints } =
            options;
        let settings = Settings::new(sessions, bindings, default_agent, tenants);
        let inner = Arc::new(Inner {
            visible: store.visible_reads().system(),
            store,
            workspaces: Arc::new(workspaces),
            models: std::sync::RwLock::new(Arc::new(models)),
            bus,
            tools,
            settings: std::sync::RwLock::new(Arc::new(settings)),
            actors: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            cancels: Mutex::new(HashMap::new()),
            session_changes: std::sync::atomic::AtomicU64::new(0),
            outbox: Arc::new(Notify::new()),
            personas: Mutex::default(),
            turn_slots: Mutex::default(),
            lease_lost: std::sync::atomic::AtomicBool::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            running_turns: std::sync::atomic::AtomicUsize::new(0),
            recall: std::sync::RwLock::new(None),
            compacting: Mutex::default(),
            compactions: std::sync::atomic::AtomicU64::new(0),
            paused: std::sync::RwLock::default(),
            fork_changes: std::sync::atomic::AtomicU64::new(0),
            breakpoints: debugger::Breakpoints::default(),
            failpoints,
        });
        let engine = Self { inner };
        engine.inner.tools.attach_hub(engine.inner.bus.hub().clone());
        engine.inner.bus.on_outbox_commits(engine.inner.outbox.clone());
        // The signals meant for this node: wake-ups and cancels of the sessions it runs.
        if let Some(mut signals) = engine.inner.bus.take_signals() {
            let inner = Arc::downgrade(&engine.inner);
            tokio::spawn(async move {
                while let Some((tenant, signal)) = signals.recv().await {
                    let Some(inner) = inner.upgrade() else { return };
                    match signal {
                        Signal::Wake(session) => inner.wake(tenant, session, Wake::Work),
                        Signal::Cancel(session) => {
                            inner.cancel_running(session);
                        }
                    }
                }
            });
        }
        // A single node owns every session: it takes the lease of every shard, and whoever
        // held them before can no longer write their turns. A cluster node's store is fenced
        // by shards, which it acquires as it runs ([`Engine::resume_held`] once it has).
        engine.load_pauses().await?;
        engine.reload_breakpoints().await?;
        if !engine.inner.store.shard_leases().by_shards() {
            engine.inner.store.shard_leases().take(&node_name()).await?;
        }
        engine.resume_held().await?;
        Ok(engine)
    }

    /// Runs what is open in the sessions this node runs ([`Bus::runs_here`]): the unfinished
    /// turns and pending events of a node that stopped, or of shards this node just took.
    /// Returns how many sessions it woke.
    pub async fn resume_held(&self) -> Result<usize, Error> {
        let open = self.open_held().await?;
        if !open.is_empty() {
            tracing::info!(sessions = open.len(), "resuming sessions with unfinished turns");
        }
        for (tenant, session) in &open {
            self.inner.wake(*tenant, *session, Wake::Work);
        }
        let sessions: Vec<SessionId> = open.iter().map(|(_, session)| *session).collect();
        self.settle_after_restart(&sessions).await?;
        Ok(open.len())
    }

    /// Wakes the sessions this node runs that have events waiting: a cluster's node does so
    /// now and then, so an event whose signal was lost (NATS down) runs all the same. A
    /// session already running reads the store after its turn, as for any signal. Returns how
    /// many sessions it woke.
    pub async fn wake_held(&self) -> Result<usize, Error> {
        let open = self.open_held().await?;
        for (tenant, session) in &open {
            self.inner.wake(*tenant, *session, Wake::Work);
        }
        Ok(open.len())
    }

    /// The sessions with open events that this node runs ([`Bus::runs_here`]).
    async fn open_held(&self) -> Result<Vec<(TenantId, SessionId)>, Error> {
        let open = self.inner.store.system().sessions_with_open_events().await?;
        Ok(open.into_iter().filter(|(_, session)| self.inner.bus.runs_here(*session)).collect())
    }

    pub fn hub(&self) -> &Hub {
        self.inner.bus.hub()
    }

    /// Sets what turns recall from their agents' memory (`None`: nothing); turns that start
    /// from now on use it.
    pub fn set_recall(&self, recall: Option<Recall>) {
        *self.inner.recall.write().unwrap_or_else(|e| e.into_inner()) = recall.map(Arc::new);
    }

    /// Agents' memory, when they have one (the API's memory routes act through it).
    pub fn memory(&self) -> Option<Arc<clade_memory::Memory>> {
        let recall = self.inner.recall.read().unwrap_or_else(|e| e.into_inner());
        recall.as_ref().map(|recall| recall.memory.clone())
    }

    /// The tool path every call takes (policy, approval, sandbox, audit).
    pub fn tools(&self) -> &Arc<ToolRunner> {
        &self.inner.tools
    }

    /// Whether another node took this one's lease on its sessions (found when a turn could
    /// not be written): the node then accepts no events, and readiness says so.
    pub fn lease_lost(&self) -> bool {
        self.inner.lease_lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings()
    }

    /// Replaces the settings whole with `next`, numbered one past the current generation, and
    /// returns that number. Turns already running finish on the settings they started with;
    /// idle actors take the new ones before their next turn.
    pub fn reload(&self, mut next: Settings) -> u64 {
        let mut current = self.inner.settings.write().unwrap_or_else(|e| e.into_inner());
        next.generation = current.generation + 1;
        let generation = next.generation;
        // Sessions' contexts and kept history are read again only when what they were read
        // under changed; other settings reach them at their next turn all the same.
        let sessions_changed = current.sessions != next.sessions;
        *current = Arc::new(next);
        drop(current);
        if sessions_changed {
            self.inner.session_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        generation
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where agents' directories are on this machine.
    pub fn workspaces(&self) -> &Arc<dyn Workspaces> {
        &self.inner.workspaces
    }

    /// Notified whenever lifecycle events were committed.
    /// The memory completed turns are mined into, and how, when ingestion is on.
    pub fn ingesting(&self) -> Option<(Arc<clade_memory::Memory>, crate::ingest::Miner)> {
        let recall = self.inner.recall.read().unwrap_or_else(|e| e.into_inner());
        recall.as_ref().and_then(|recall| Some((recall.memory.clone(), recall.ingest?)))
    }

    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.inner.outbox.clone()
    }

    /// Picks the agent of an envelope: its own, else the one its tenant's bindings or the
    /// default agent give ([`crate::routing`]). The store checks that the agent exists as it
    /// stores the event.
    pub fn route(&self, envelope: &Envelope) -> Result<String, Error> {
        if let Some(handle) = &envelope.agent {
            return Ok(handle.clone());
        }
        let settings = self.inner.settings();
        let tenant = envelope.tenant.name.as_str();
        crate::routing::route(
            &settings.bindings,
            settings.default_agent.as_deref(),
            tenant,
            &envelope.source,
        )
        .ok_or(Error::NoAgent)
    }

    /// The agent, with its tenant, that an event from `source` goes to when the source alone
    /// decides, as for a chat platform's bot that serves many tenants: the first binding
    /// matching it, else the default agent; `None` when neither names one.
    pub fn route_source(&self, source: &Source) -> Option<clade_core::AgentRef> {
        let settings = self.inner.settings();
        crate::routing::route_any(&settings.bindings, settings.default_agent.as_deref(), source)
    }

    /// Stores the envelope durably and schedules its session. Returns once stored.
    ///
    /// The session's actor is woken as soon as the event is committed, while the commit is
    /// still being made durable: the turn's first read and model call overlap that fsync, and
    /// its own commit, which comes after the event's, is what its reply waits for.
    pub async fn submit(&self, envelope: Envelope) -> Result<Accepted, Error> {
        Ok(self.submit_watched(envelope, false).await?.0)
    }

    /// [`Engine::submit`], and a watch on the event's turn: [`TurnWatch::ended`] waits for it
    /// to end. The watch listens to the session from before its actor is woken, so it misses
    /// no ending and need not ask the store until one comes.
    pub async fn submit_and_watch(
        &self,
        envelope: Envelope,
    ) -> Result<(Accepted, TurnWatch), Error> {
        let tenant = envelope.tenant.id;
        let (accepted, live) = self.submit_watched(envelope, true).await?;
        let watch = TurnWatch {
            engine: self.clone(),
            tenant,
            event: accepted.event_id,
            session: accepted.session_id,
            live,
        };
        Ok((accepted, watch))
    }

    /// Submits; with `watch`, also subscribes to the session's live events before its actor is
    /// woken (not for a duplicate, which wakes nothing).
    async fn submit_watched(
        &self,
        envelope: Envelope,
        watch: bool,
    ) -> Result<(Accepted, Option<Subscription>), Error> {
        if self.lease_lost() {
            return Err(Error::LeaseLost);
        }
        if self.draining() {
            return Err(Error::Draining);
        }
        let agent = self.route(&envelope)?;
        let (tell, told) = tokio::sync::oneshot::channel::<Option<Subscription>>();
        let (inner, tenant) = (self.inner.clone(), envelope.tenant.id);
        // On the writer's thread as the event commits, so wake-ups reach an actor in the
        // order its session's events were stored.
        let on_visible = move |accepted: &Accepted, event: Option<&EventRow>| {
            let Some(event) = event else { return };
            let live = watch.then(|| inner.bus.hub().subscribe(accepted.session_id));
            inner.wake(tenant, accepted.session_id, Wake::Event(Box::new(event.clone())));
            let _ = tell.send(live);
        };
        let accepted = self
            .inner
            .store
            .turns()
            .accept_announced(
                NewEvent {
                    tenant: envelope.tenant.id,
                    payload_hash: payload_hash(&agent, &envelope.source, &envelope.text),
                    agent,
                    source: envelope.source,
                    text: envelope.text,
                    idempotency_key: envelope.idempotency_key,
                    max_open_per_session: self.inner.settings().sessions.max_queued,
                },
                on_visible,
            )
            .await?;
        self.inner.failpoints.hit("after_commit_before_ack");
        // The announcement comes before the result of the same write.
        let live = match told.await {
            Ok(live) => live,
            Err(_) if accepted.duplicate => None,
            Err(_) => {
                let live = watch.then(|| self.inner.bus.hub().subscribe(accepted.session_id));
                self.inner.wake(tenant, accepted.session_id, Wake::Work);
                live
            }
        };
        Ok((accepted, live))
    }

    /// Waits until the event's turn has ended (or `timeout`), then returns the turn.
    pub async fn wait(
        &self,
        tenant: TenantId,
        event: EventId,
        session: SessionId,
        timeout: Duration,
    ) -> Result<Option<Finished>, Error> {
        let live = self.inner.bus.hub().subscribe(session);
        // The turn may have ended before this subscription: the store says so, and that the
        // event exists at all.
        self.inner.store.sessions(tenant).event(event).await?;
        self.wait_live(tenant, event, live, timeout, true, &mut |_| {}).await
    }

    /// Waits on `live`, a subscription to the event's session, for the event's turn to end;
    /// asks the store at once if `check_first`, then whenever a turn it cannot place ends.
    ///
    /// A new turn announces the events it takes (`turn.started`, live before it commits); when
    /// that turn's end comes, it is the answer, with no read: lifecycle events are published
    /// only once committed and durable. Any other turn's end (one the event joined while it
    /// ran, one recorded for it after a failure) or missed events send it to the store.
    async fn wait_live(
        &self,
        tenant: TenantId,
        event: EventId,
        mut live: Subscription,
        timeout: Duration,
        check_first: bool,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Option<Finished>, Error> {
        let clock = self.inner.store.clock();
        let deadline = clock.now().plus(timeout);
        let event_text = event.to_string();
        let mut ours: Option<String> = None;
        let mut check = check_first;
        loop {
            if check
                && let Some(turn) = self.inner.store.sessions(tenant).ended_turn_of(event).await?
            {
                return Ok(Some(Finished::of(turn)));
            }
            check = true;
            let remaining = deadline.as_millis().saturating_sub(clock.now().as_millis());
            if remaining <= 0 {
                return Ok(None);
            }
            // Only the end of a turn can change the answer: re-check the store then (or when
            // events were missed, or every second), not on every delta.
            let turn_ended = async {
                loop {
                    let Ok(live) = live.recv().await else { return None };
                    match &*live.event {
                        LifecycleEvent::TurnStarted(started)
                            if started.events.contains(&event_text) =>
                        {
                            ours = Some(started.turn.clone());
                        }
                        LifecycleEvent::TextDelta(delta)
                            if ours.as_deref() == Some(delta.turn.as_str()) =>
                        {
                            on_text(&delta.text);
                        }
                        LifecycleEvent::TurnFinished(ended)
                        | LifecycleEvent::TurnFailed(ended)
                        | LifecycleEvent::TurnYielded(ended) => {
                            let is_ours = ours.as_deref() == Some(ended.turn.as_str());
                            return if is_ours {
                                Finished::from_ended(ended.clone())
                            } else {
                                None
                            };
                        }
                        _ => {}
                    }
                }
            };
            let look_again =
                Duration::from_millis(remaining.unsigned_abs()).min(Duration::from_secs(1));
            let ended = tokio::select! {
                ended = turn_ended => ended,
                () = clock.sleep(look_again) => None,
            };
            if let Some(finished) = ended {
                return Ok(Some(finished));
            }
        }
    }

    /// Resumes a session's yielded turns where they stopped (see [`clade_store::Sessions::resume`]);
    /// returns how many events they hold.
    pub async fn resume(&self, tenant: TenantId, session: SessionId) -> Result<u64, Error> {
        let row = self.inner.store.sessions(tenant).get(session).await?;
        let (n, rows) = self.inner.store.sessions(tenant).resume(session).await?;
        publish(&self.inner, row.agent_id, &rows);
        self.inner.bus.signal(tenant, Signal::Wake(session));
        Ok(n)
    }

    /// Sets a session's own queue mode (`None`: follow its agent's, else the deployment's). Its
    /// actor, if in memory, takes it up before its next turn.
    pub async fn set_queue_mode(
        &self,
        tenant: TenantId,
        session: SessionId,
        mode: Option<QueueMode>,
    ) -> Result<SessionRow, Error> {
        let name = mode.map(|mode| mode.as_str().to_owned());
        let row = self.inner.store.sessions(tenant).set_queue_mode(session, name).await?;
        self.inner.session_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(row)
    }

    /// Cancels the session's running turn, if any, over the bus (to the node that runs it);
    /// whether this node was running one.
    pub async fn cancel(&self, tenant: TenantId, session: SessionId) -> Result<bool, Error> {
        self.inner.store.sessions(tenant).get(session).await?;
        let running =
            self.inner.cancels.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&session);
        self.inner.bus.signal(tenant, Signal::Cancel(session));
        Ok(running)
    }

    /// Holds back what `pause` names, just stored (`clade_store::Pauses::pause`, by whoever
    /// paused it, for the audit log): the turns running finish, no new one starts, and events
    /// sent meanwhile wait, stored, until [`Engine::unpaused`]. A restarted engine reads the
    /// pauses from the store.
    pub fn paused(&self, pause: &clade_store::PauseRow) {
        self.inner.paused.write().unwrap_or_else(|e| e.into_inner()).insert(pause.target());
    }

    /// The pause of `agent`, or of its `session`, was lifted in the store: runs what waited.
    pub async fn unpaused(
        &self,
        tenant: TenantId,
        agent: AgentId,
        session: Option<SessionId>,
    ) -> Result<(), Error> {
        let target = session.map_or(*agent.as_bytes(), |s| *s.as_bytes());
        self.inner.paused.write().unwrap_or_else(|e| e.into_inner()).remove(&target);
        self.wake_open(Some((tenant, agent))).await?;
        Ok(())
    }

    /// Reads the pauses again from the store (another process changed them: the CLI) and runs
    /// the sessions no longer held; how many sessions with waiting events were woken.
    pub async fn reload_pauses(&self) -> Result<usize, Error> {
        self.load_pauses().await?;
        self.wake_open(None).await
    }

    async fn load_pauses(&self) -> Result<(), Error> {
        let pauses = self.inner.store.all_pauses().await?;
        *self.inner.paused.write().unwrap_or_else(|e| e.into_inner()) =
            pauses.iter().map(clade_store::PauseRow::target).collect();
        Ok(())
    }

    /// Wakes the sessions with open events (of one agent, or all): their actors run them
    /// unless paused.
    async fn wake_open(&self, of: Option<(TenantId, AgentId)>) -> Result<usize, Error> {
        let sessions = match of {
            Some((tenant, agent)) => self
                .inner
                .store
                .pauses(tenant)
                .agent_status(agent, u32::MAX)
                .await?
                .into_iter()
                .filter(|s| s.open_events > 0)
                .map(|s| (tenant, s.session))
                .collect(),
            None => self.inner.store.system().sessions_with_open_events().await?,
        };
        for (tenant, session) in &sessions {
            self.inner.bus.signal(*tenant, Signal::Wake(*session));
        }
        Ok(sessions.len())
    }

    /// Whether `agent`, or its `session`, is paused.
    pub fn is_paused(&self, agent: AgentId, session: SessionId) -> bool {
        self.inner.is_paused(agent, session)
    }

    /// Whether any agent or session is paused: when none is (the usual case), no event needs
    /// its agent looked up to tell its sender.
    pub fn any_paused(&self) -> bool {
        !self.inner.paused.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// A handle that does not keep the engine alive.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    /// Delivers an agent's message to another agent (see [`Store::send_message`]) and starts
    /// the receiver's turn. A repeated key finds the first message and starts nothing.
    pub async fn deliver(
        &self,
        message: clade_store::NewMessage,
    ) -> Result<clade_store::Delivered, Error> {
        if self.lease_lost() {
            return Err(Error::LeaseLost);
        }
        if self.draining() {
            return Err(Error::Draining);
        }
        let delivered = self.inner.store.send_message(message).await?;
        let row = &delivered.message;
        let (sent, received): (Vec<_>, Vec<_>) = delivered
            .announced
            .iter()
            .cloned()
            .partition(|r| r.session_id.is_some() && r.session_id == row.from_session);
        // Written beside the sessions' actors, whose own rows may come later.
        let hub = self.inner.bus.hub();
        hub.publish_aside(row.from_agent, &sent);
        hub.publish_aside(row.to_agent, &received);
        if !delivered.announced.is_empty() {
            self.inner.outbox_written();
        }
        if !delivered.accepted.duplicate {
            self.inner.bus.signal(row.tenant, Signal::Wake(row.to_session));
        }
        Ok(delivered)
    }

    /// Tells the node that runs `session`, of `tenant`, that work for it was stored by someone
    /// else (the scheduler's envelopes): it reads the session and runs what is open.
    pub fn wake(&self, tenant: TenantId, session: SessionId) {
        self.inner.bus.signal(tenant, Signal::Wake(session));
    }

    /// Swaps in `models` (a new configuration's models, routing and budgets): calls from then
    /// on use them, calls under way finish on the ones they started with.
    /// The models in force (a new revision's succeed them: [`Models::succeed`]).
    pub fn models(&self) -> Arc<Models> {
        self.inner.models()
    }

    pub fn reload_models(&self, models: Models) {
        *self.inner.models.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(models);
    }

    /// Takes no new event from now on (an operator's drain before stopping this gateway);
    /// turns under way, and events already taken, run to their end.
    pub fn drain(&self) {
        self.inner.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Engine::drain`] was called.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Turns running now, those waiting for an approval included.
    pub fn running_turns(&self) -> usize {
        self.inner.running_turns.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The sessions whose turn runs on this node now: what a cluster node handing a shard
    /// over waits for.
    pub fn busy_sessions(&self) -> Vec<SessionId> {
        self.inner.cancels.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect()
    }

    /// How many executions of each kind are open in the whole store (every tenant's, at most
    /// `limit` read, oldest first): an operator's figure, for metrics.
    pub async fn open_executions(
        &self,
        limit: u32,
    ) -> Result<Vec<(clade_core::ExecutionKind, usize)>, Error> {
        let open = self.inner.store.system().open_executions(limit).await?;
        // Turns are not among them (`Engine::running_turns` counts those).
        Ok(clade_core::ExecutionKind::ALL
            .iter()
            .filter(|kind| **kind != clade_core::ExecutionKind::Turn)
            .map(|kind| (*kind, open.iter().filter(|row| row.kind == *kind).count()))
            .collect())
    }

    /// Number of sessions with an actor in memory.
    pub fn active_sessions(&self) -> usize {
        self.inner.actors.lock().map(|a| a.len()).unwrap_or(0)
    }
}

impl Inner {
    fn is_paused(&self, agent: AgentId, session: SessionId) -> bool {
        let paused = self.paused.read().unwrap_or_else(|e| e.into_inner());
        !paused.is_empty()
            && (paused.contains(agent.as_bytes()) || paused.contains(session.as_bytes()))
    }

    /// The models in force.
    pub(crate) fn models(&self) -> Arc<Models> {
        self.models.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The semaphore of the tenant's running turns, if its quota bounds them.
    fn turn_slots(
        &self,
        settings: &Settings,
        tenant: &Tenant,
    ) -> Option<Arc<tokio::sync::Semaphore>> {
        let limit = clade_config::Config::quotas_of(&settings.tenants, tenant.name.as_str())
            .and_then(|q| q.concurrent_turns)?
            .max(1);
        let permits = usize::try_from(limit).unwrap_or(usize::MAX);
        let generation = settings.generation();
        let mut slots = self.turn_slots.lock().ok()?;
        let slot = slots
            .entry(tenant.id)
            .or_insert_with(|| (generation, limit, Arc::new(tokio::sync::Semaphore::new(permits))));
        // A newer generation with another quota: turns from then on share a semaphore of its
        // size (those running hold permits of the old one, which goes with them). A turn of an
        // older generation takes a slot of the current one, so the two never swap back and
        // forth.
        if generation > slot.0 {
            if limit != slot.1 {
                slot.2 = Arc::new(tokio::sync::Semaphore::new(permits));
            }
            (slot.0, slot.1) = (generation, limit);
        }
        Some(slot.2.clone())
    }

    /// The current settings (a clone of an `Arc`).
    fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Rows were committed to the outbox: its dispatchers here, and (a cluster) the other
    /// nodes, are told at once.
    fn outbox_written(&self) {
        self.outbox.notify_waiters();
        self.bus.outbox_committed();
    }

    /// Cancels the session's running turn on this node; whether there was one.
    fn cancel_running(&self, session: SessionId) -> bool {
        let cancels = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        cancels.get(&session).map(|notify| notify.notify_one()).is_some()
    }

    /// Hands `wake` to the session's actor, starting one if none is in memory.
    fn wake(self: &Arc<Self>, tenant: TenantId, session: SessionId, wake: Wake) {
        // Another node runs it (a cluster): the event is stored, that node is told.
        if !self.bus.runs_here(session) {
            self.bus.signal(tenant, Signal::Wake(session));
            return;
        }
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        let wake = match actors.get(&session) {
            // A closed queue means the actor is exiting: a new one takes over.
            Some(tx) => match tx.send(wake) {
                Ok(()) => return,
                Err(mpsc::error::SendError(wake)) => wake,
            },
            None => wake,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(wake);
        actors.insert(session, tx);
        self.runtime.spawn(actor(self.clone(), session, rx));
    }
}

/// Waits for the turn of an event submitted with [`Engine::submit_and_watch`].
pub struct TurnWatch {
    engine: Engine,
    tenant: TenantId,
    event: EventId,
    session: SessionId,
    /// Subscribed before the actor was woken; `None` for a repeated idempotency key, whose
    /// turn may be long over.
    live: Option<Subscription>,
}

impl TurnWatch {
    /// The event's turn once it has ended, or `None` after `timeout`.
    pub async fn ended(self, timeout: Duration) -> Result<Option<Finished>, Error> {
        let Self { engine, tenant, event, session, live } = self;
        match live {
            Some(live) => engine.wait_live(tenant, event, live, timeout, false, &mut |_| {}).await,
            None => engine.wait(tenant, event, session, timeout).await,
        }
    }

    /// As [`TurnWatch::ended`], and `on_text` is given the turn's answer as the model streams
    /// it. A subscriber that lags loses deltas, so the text given may fall short of the reply;
    /// a repeated idempotency key, whose turn may be long over, gives none.
    pub async fn streamed(
        self,
        timeout: Duration,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Option<Finished>, Error> {
        let Self { engine, tenant, event, session, live } = self;
        match live {
            Some(live) => engine.wait_live(tenant, event, live, timeout, false, on_text).await,
            None => engine.wait(tenant, event, session, timeout).await,
        }
    }

    /// The live subscription to the event's session, made before its actor was woken, so
    /// whoever follows the session from it misses none of its events; `None` for a repeated
    /// idempotency key.
    pub fn into_live(self) -> Option<Subscription> {
        self.live
    }

    /// The session the event went to.
    pub fn session(&self) -> SessionId {
        self.session
    }
}
