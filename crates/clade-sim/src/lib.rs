//! The seeded simulator: Clade's engine, store, scheduler and a model stub in one process, on
//! a manual clock, with faults drawn from a seed. A dev-dependency only.
//!
//! Owns [`Sim`]: a node (store, engine, scheduler) running on a tokio runtime of its own, with
//! one worker thread, over a store that outlives it (SQLite in a temporary data dir, or a
//! PostgreSQL schema), and `clade-stub` answering the models its configuration names. The
//! node can crash: at an armed failpoint its one worker stops where it stands (nothing else of
//! the node runs after it, as after `kill -9`), and [`Sim::restart`] drops that runtime and
//! starts a new node on the same store, in the same process, in milliseconds.
//!
//! A seed ([`Sim::seed`]) decides what may differ between runs: where the clock starts, the
//! model routers' back-off jitter, and which model calls fail ([`SimBuilder::model_faults`]).
//! It is printed when a simulation starts; `CLADE_SIM_SEED=<seed>` replays it. Time moves only
//! when the test moves it ([`Sim::advance`], [`Sim::run_for`]).
//!
//! Engine behaviour is tested here; the binary's suite keeps what only the binary can show
//! (the CLI, the HTTP surface, processes that crash). Depends on the runtime, the scheduler,
//! the store and the stub; only tests depend on it (the runtime's use its [`TestTool`]).

// Test support: a set-up that fails is a failed test, said where it failed.
#![allow(clippy::expect_used)]

mod test_tool;

pub use test_tool::TestTool;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{Clock as _, ManualClock, Tenant, Timestamp};
use clade_runtime::{Engine, Envelope, Failpoints, Finished};
use clade_store::{Accepted, DataDir, Location, Source, Store};

/// Where the store lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How long the simulator waits, in real time, for what must happen soon: a turn to end, a
/// node to reach a failpoint. Far more than any of it takes; a machine loaded by the rest of
/// the suite can be slow.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How long PostgreSQL lets a simulated node's transaction stand idle before it ends it (a
/// halted node's would stand for ever).
const FROZEN_TRANSACTION_MS: u32 = 5_000;

/// Sets a simulation up; [`SimBuilder::start`] starts it.
pub struct SimBuilder {
    name: String,
    seed: u64,
    backend: Backend,
    config: String,
    faults: Option<clade_stub::SeededFaults>,
    tools: Vec<Arc<dyn clade_tools::Tool>>,
}

impl SimBuilder {
    /// The store on `backend` (SQLite unless set).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// `clade.yaml` as this text; `{stub}` stands for the model stub's URL (its OpenAI API is
    /// `{stub}/v1`) and `STUB_KEY` is an API key it takes.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = yaml.to_owned();
        self
    }

    /// Model calls fail with `status` about `per_mille` times in a thousand, the calls the seed
    /// picks (see [`clade_stub::SeededFaults`]).
    pub fn model_faults(mut self, per_mille: u32, status: u16) -> Self {
        self.faults = Some(clade_stub::SeededFaults { seed: self.seed, per_mille, status });
        self
    }

    /// A tool every agent has, beside `time.now`, `echo`, the ledger tools (`ledger.append`,
    /// `ledger.append_idempotent`, counted by [`Sim::ledger`]), the `agent.*` tools of
    /// branches, workers and messages, and the `cron.*` tools.
    pub fn tool(mut self, tool: Arc<dyn clade_tools::Tool>) -> Self {
        self.tools.push(tool);
        self
    }

    /// Starts the stub and the first node. `None` when the backend is PostgreSQL and none
    /// answers (outside CI, with a warning; under `CI=true` that is a failure).
    ///
    /// # Panics
    /// When the configuration does not parse, or the store or the engine cannot start.
    pub async fn start_on_backend(self) -> Option<Sim> {
        #[allow(clippy::print_stderr)] // What replays a failing run.
        {
            eprintln!(
                "simulation {}: seed {} (CLADE_SIM_SEED={} replays it)",
                self.name, self.seed, self.seed
            );
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = DataDir::open(dir.path().join("data")).expect("the data dir");
        let (location, pg) = match self.backend {
            Backend::Sqlite => (Location::Sqlite(data.sqlite_path()), None),
            Backend::Postgres => {
                let schema = clade_test_support::PgSchema::create().await?;
                // A halted node's thread is parked, not gone: its connections stay open, where
                // a crashed process's would close and the server would roll back what they had
                // begun. The server ends a transaction left idle this long instead, so a
                // transaction the halt froze cannot hold its locks against the next node.
                let url = format!(
                    "{}%20-c%20idle_in_transaction_session_timeout%3D{}",
                    schema.url(),
                    FROZEN_TRANSACTION_MS
                );
                (Location::Postgres(url), Some(schema))
            }
        };
        let options = clade_stub::StubOptions { faults: self.faults, ..Default::default() };
        let stub = clade_stub::Stub::start("127.0.0.1:0", options).await.expect("the model stub");
        let yaml = self.config.replace("{stub}", stub.url());
        let config = clade_config::Config::parse(&yaml, std::path::Path::new("clade.yaml"))
            .unwrap_or_else(|e| panic!("the simulation's clade.yaml: {e}"));
        // Somewhere in 2026, minute-aligned, as the seed says.
        let start =
            Timestamp::from_millis(1_767_225_600_000 + (self.seed % 500_000) as i64 * 60_000);
        let crash = Arc::new(Crash::default());
        let halt = crash.clone();
        let failpoints = Failpoints::armed([], move |name| halt.halt(name));
        let ledger = dir.path().join("ledger.txt");
        let mut tools: Vec<Arc<dyn clade_tools::Tool>> = vec![
            Arc::new(clade_tools::builtin::TimeNow),
            Arc::new(clade_tools::builtin::Echo),
            Arc::new(clade_tools::builtin::Ledger::at_most_once(ledger.clone())),
            Arc::new(clade_tools::builtin::Ledger::idempotent(ledger.clone())),
        ];
        tools.extend(self.tools);
        let parts = Parts {
            clock: Arc::new(ManualClock::new(start)),
            jitter: Arc::new(clade_core::Jitter::seeded(self.seed)),
            location,
            data,
            config,
            tools: tools.into(),
            failpoints,
        };
        let mut sim =
            Sim { seed: self.seed, parts, stub, crash, ledger, node: None, _pg: pg, _dir: dir };
        sim.node = Some(sim.start_node().await);
        Some(sim)
    }

    /// [`SimBuilder::start_on_backend`] on SQLite, which is always there.
    pub async fn start(self) -> Sim {
        assert_eq!(self.backend, Backend::Sqlite, "use start_on_backend for PostgreSQL");
        self.start_on_backend().await.expect("SQLite needs no server")
    }
}

/// What every node of a simulation is built from.
#[derive(Clone)]
struct Parts {
    clock: Arc<ManualClock>,
    jitter: Arc<clade_core::Jitter>,
    location: Location,
    data: DataDir,
    config: clade_config::Config,
    tools: Arc<[Arc<dyn clade_tools::Tool>]>,
    failpoints: Failpoints,
}

/// A failpoint reached: the node's worker stops there for good.
#[derive(Default)]
struct Crash {
    reached: Mutex<Option<String>>,
    noticed: tokio::sync::Notify,
}

impl Crash {
    /// Runs on the node's worker at the failpoint, and never returns: nothing of the node runs
    /// again, as after `kill -9`. Unwinding instead would run the code that catches a
    /// panicking turn, which would record the turn as failed: what no crashed process does.
    /// The parked thread, and what its tasks hold, last until the test's process ends.
    fn halt(&self, name: &str) {
        if let Ok(mut reached) = self.reached.lock() {
            *reached = Some(name.to_owned());
        }
        self.noticed.notify_one();
        loop {
            std::thread::park();
        }
    }

    fn reached(&self) -> Option<String> {
        self.reached.lock().ok().and_then(|r| r.clone())
    }
}

/// One node: a runtime of its own and what runs on it.
struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    store: Store,
    engine: Engine,
    /// Held while the node serves the store, as `clade serve` holds it.
    _owner: clade_store::OwnerLock,
    /// Stops the scheduler.
    _scheduler: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.as_ref().map(|r| r.handle().clone()).expect("a running node")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Never blocks: tasks are dropped where they stand, as a killed process's are.
            runtime.shutdown_background();
        }
    }
}

/// A running simulation; see the crate's documentation.
pub struct Sim {
    seed: u64,
    parts: Parts,
    stub: clade_stub::Stub,
    crash: Arc<Crash>,
    ledger: PathBuf,
    node: Option<Node>,
    _pg: Option<clade_test_support::PgSchema>,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// A simulation named after its test: its seed is `CLADE_SIM_SEED` when set, else drawn
    /// from the name (one test, one seed, in every run).
    pub fn builder(name: &str) -> SimBuilder {
        #[allow(clippy::disallowed_methods)] // The replay switch, read once per simulation.
        let seed = std::env::var("CLADE_SIM_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| fnv(name.as_bytes()));
        SimBuilder {
            name: name.to_owned(),
            seed,
            backend: Backend::Sqlite,
            config: String::new(),
            faults: None,
            tools: Vec::new(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    async fn start_node(&self) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sim-node")
            .enable_all()
            .build()
            .expect("the node's runtime");
        let started = runtime.spawn(self.parts.clone().start());
        let (store, engine, owner, scheduler) =
            started.await.unwrap_or_else(|e| panic!("the node did not start: {e}"));
        Node { runtime: Some(runtime), store, engine, _owner: owner, _scheduler: scheduler }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("a running node: call restart after a crash")
    }

    /// Runs `work` on the node (where the engine's and the store's tasks live) with its
    /// engine, and returns what it returns.
    ///
    /// # Panics
    /// When `work` panics, or the node stops under it (a failpoint: use [`Sim::crashed`]).
    pub async fn on_node<T, F>(&self, work: impl FnOnce(Engine) -> F) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let node = self.node();
        match node.handle().spawn(work(node.engine.clone())).await {
            Ok(value) => value,
            Err(err) => panic!("work on the simulated node did not finish: {err}"),
        }
    }

    /// The store, to read from on the node ([`Sim::on_node`] has the engine's `store()`).
    pub fn store(&self) -> Store {
        self.node().store.clone()
    }

    /// The default tenant.
    pub async fn tenant(&self) -> Tenant {
        let store = self.store();
        self.on_node(async move |_| store.tenants().named(Tenant::DEFAULT_NAME).await)
            .await
            .expect("the default tenant")
    }

    /// Creates the agent `handle` in the default tenant.
    pub async fn create_agent(&self, handle: &str) {
        let (store, data, handle) = (self.store(), self.parts.data.clone(), handle.to_owned());
        self.on_node(async move |_| {
            let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await?;
            let new = clade_store::NewAgent {
                handle: clade_core::Handle::parse(&handle).expect("a valid handle"),
                display_name: None,
                config: clade_core::AgentConfig::default(),
            };
            clade_store::Agents::new(store, data).create(tenant.id, new).await.map(drop)
        })
        .await
        .expect("the agent");
    }

    /// The workspace of the agent `handle` of the default tenant (made on first use).
    pub async fn workspace(&self, handle: &str) -> PathBuf {
        let (store, data, handle) = (self.store(), self.parts.data.clone(), handle.to_owned());
        self.on_node(async move |_| {
            let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await?;
            let agent = store.agents(tenant.id).get(&handle).await?;
            clade_store::Agents::new(store, data).workspace(&agent)
        })
        .await
        .expect("the agent's workspace")
    }

    /// Where the agents' files are.
    pub fn data_dir(&self) -> &DataDir {
        &self.parts.data
    }

    /// The event `text` to `agent` from `actor` on channel `channel` of platform `sim`.
    pub async fn envelope(&self, agent: &str, channel: &str, actor: &str, text: &str) -> Envelope {
        Envelope {
            tenant: self.tenant().await,
            agent: Some(agent.to_owned()),
            text: text.to_owned(),
            source: Source {
                platform: "sim".into(),
                channel: channel.to_owned(),
                actor: actor.to_owned(),
            },
            idempotency_key: None,
        }
    }

    /// Submits `envelope`; the engine's answer (an error is its refusal).
    pub async fn submit(
        &self,
        envelope: Envelope,
    ) -> Result<Accepted, clade_runtime::engine::Error> {
        self.on_node(async move |engine| engine.submit(envelope).await).await
    }

    /// How the turn that answers `accepted` ended, waiting for it.
    ///
    /// # Panics
    /// When it has not ended within [`PATIENCE`] of real time.
    pub async fn finished(&self, accepted: &Accepted) -> Finished {
        let tenant = self.tenant().await.id;
        let Accepted { event_id, session_id, .. } = *accepted;
        // The engine's wait is timed on the simulated clock, which the test may move far: it
        // gets a year of it, and real time bounds it.
        let year = Duration::from_secs(365 * 86_400);
        let waiting =
            self.on_node(async move |engine| engine.wait(tenant, event_id, session_id, year).await);
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap_or_else(|_| panic!("the turn of event {event_id} did not end in time"))
            .unwrap_or_else(|e| panic!("waiting for the turn: {e}"))
            .unwrap_or_else(|| panic!("the turn of event {event_id} did not end"))
    }

    /// Sends `text` to `agent` on `channel` and waits for its turn: the session and the end.
    pub async fn say(&self, agent: &str, channel: &str, text: &str) -> (Accepted, Finished) {
        let envelope = self.envelope(agent, channel, "user", text).await;
        let accepted = self.submit(envelope).await.unwrap_or_else(|e| panic!("refused: {e}"));
        let finished = self.finished(&accepted).await;
        (accepted, finished)
    }

    /// The turns of `session` (of the default tenant), oldest first, with their events, usage
    /// and journal.
    pub async fn turns(&self, session: clade_core::SessionId) -> Vec<clade_store::TurnRecord> {
        let (store, tenant) = (self.store(), self.tenant().await.id);
        self.on_node(async move |_| store.sessions(tenant).turn_records(session, None, 1000).await)
            .await
            .unwrap_or_else(|e| panic!("the session's turns: {e}"))
    }

    /// The turns of `session` once `done` holds for them, polling (in real time) for at most
    /// [`PATIENCE`].
    ///
    /// # Panics
    /// When `done` does not come to hold.
    pub async fn turns_until(
        &self,
        session: clade_core::SessionId,
        done: impl Fn(&[clade_store::TurnRecord]) -> bool,
    ) -> Vec<clade_store::TurnRecord> {
        let turns =
            clade_test_support::wait::polled(async || self.turns(session).await, |t| done(t)).await;
        assert!(
            done(&turns),
            "the session's turns never came to what the test waits for: {turns:#?}"
        );
        turns
    }

    /// What `session` announced (its lifecycle events), oldest first.
    pub async fn outbox(&self, session: clade_core::SessionId) -> Vec<clade_store::OutboxRow> {
        let (store, tenant) = (self.store(), self.tenant().await.id);
        self.on_node(async move |_| store.sessions(tenant).outbox(session, 0, 10_000).await)
            .await
            .unwrap_or_else(|e| panic!("the session's outbox: {e}"))
    }

    /// The memory items of the agent `handle` (default tenant), newest first: those under the
    /// isolation key `scope` alone, or with `None` those of the global scope.
    pub async fn memories(&self, handle: &str, scope: Option<&str>) -> Vec<clade_store::MemoryRow> {
        let (store, tenant) = (self.store(), self.tenant().await.id);
        let (handle, scope) = (handle.to_owned(), scope.map(str::to_owned));
        self.on_node(async move |_| {
            let agent = store.agents(tenant).get(&handle).await?;
            let filter = clade_store::MemoryFilter {
                exclude_global: scope.is_some(),
                scope,
                kinds: Vec::new(),
                since: None,
            };
            store.memories(tenant).list(agent.id, &filter, None, 1000).await
        })
        .await
        .unwrap_or_else(|e| panic!("the agent's memories: {e}"))
    }

    /// The simulated clock.
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.parts.clock
    }

    pub fn now(&self) -> Timestamp {
        self.parts.clock.now()
    }

    /// Moves the clock `by` forward, waking whatever slept until then.
    pub fn advance(&self, by: Duration) {
        self.parts.clock.advance(by);
    }

    /// Lets `span` of simulated time pass as the node lives it: the clock jumps from one
    /// sleeper's wake-up to the next (scheduler looks, back-offs, timeouts), letting the node
    /// run between jumps, until `span` has passed.
    pub async fn run_for(&self, span: Duration) {
        let end = self.now().plus(span);
        loop {
            self.settle().await;
            match self.parts.clock.next_wake() {
                Some(at) if at <= end => self.parts.clock.advance_to(at),
                _ => break,
            }
        }
        self.parts.clock.advance_to(end);
        self.settle().await;
    }

    /// Gives the node a moment of real time to run what the last move of the clock woke.
    async fn settle(&self) {
        #[allow(clippy::disallowed_methods)] // The one real wait of a simulated step.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    /// Arms the node's failpoint `name` (see `clade_runtime::failpoints`) to crash the node
    /// the `n`-th time from now it is reached.
    pub fn arm(&self, name: &str, n: u64) {
        self.parts.failpoints.arm(name, n);
    }

    /// Waits until the node crashed at a failpoint, and says which.
    ///
    /// # Panics
    /// When none is reached within [`PATIENCE`] of real time.
    pub async fn crashed(&self) -> String {
        let waiting = async {
            loop {
                let noticed = self.crash.noticed.notified();
                if let Some(name) = self.crash.reached() {
                    return name;
                }
                noticed.await;
            }
        };
        tokio::time::timeout(PATIENCE, waiting).await.expect("the node reached no failpoint")
    }

    /// Kills the node where it stands (crashed at a failpoint or not) and starts a new one on
    /// the same store, as a process manager restarts a gateway.
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            drop(node);
        }
        // The next node starts with nothing reached.
        let fresh = Arc::new(Crash::default());
        self.crash = fresh.clone();
        self.parts.failpoints = Failpoints::armed([], move |name| fresh.halt(name));
        self.node = Some(self.start_node().await);
    }

    /// The model stub, for what it was asked ([`clade_stub::Stub::captured`]).
    pub fn stub(&self) -> &clade_stub::Stub {
        &self.stub
    }

    /// The lines the ledger tools appended: one per side effect.
    pub fn ledger(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ledger)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Parts {
    /// The tools an agent has in `clade serve` that touch nothing on the host: the built-ins
    /// the simulation gives, branches and workers, messages between agents, its own cron jobs,
    /// and memory.
    fn registry(
        &self,
        store: &Store,
        agents: &clade_store::Agents,
        postbox: &clade_runtime::messaging::Postbox,
        memory: Option<&Arc<clade_memory::Memory>>,
    ) -> clade_tools::Registry {
        let mut registry = clade_tools::Registry::new();
        for tool in self.tools.iter() {
            registry.register(tool.clone());
        }
        clade_runtime::forks::register(&mut registry, postbox.clone());
        clade_runtime::messaging::register(&mut registry, postbox.clone(), agents.clone());
        if self.config.scheduler.enabled {
            let tenants = self.config.tenants.clone();
            clade_sched::tools::register(&mut registry, store.clone(), tenants);
        }
        if let Some(memory) = memory {
            clade_memory::tools::register(&mut registry, store.clone(), memory.clone());
        }
        clade_memory::working::register(&mut registry, store.clone());
        registry
    }

    /// Opens the store and starts the engine and the scheduler, as `clade serve` does.
    async fn start(
        self,
    ) -> (Store, Engine, clade_store::OwnerLock, tokio::sync::oneshot::Sender<()>) {
        let options = clade_store::StoreOptions {
            migrations: clade_store::Migrations::Apply,
            clock: self.clock.clone(),
            ..clade_store::StoreOptions::new(self.location.clone(), clade_store::Durability::Normal)
        };
        let owner = clade_store::OwnerLock::acquire(&self.location)
            .await
            .unwrap_or_else(|e| panic!("the store's owner lock: {e}"));
        let store = Store::open(options).await.unwrap_or_else(|e| panic!("the store: {e}"));
        let agents = clade_store::Agents::new(store.clone(), self.data.clone());
        let secrets = clade_store::Secrets::new(store.clone(), self.data.master_key_path(), None);
        let hints = clade_runtime::EnvHints {
            vars: [("STUB_KEY".to_owned(), "sk-stub".to_owned())].into(),
        };
        // Memory as `clade.yaml` says (its own embeddings: no model file is fetched here).
        let memory =
            clade_runtime::memory::memory_of(&self.config, &hints, &self.data.models_dir());
        let clock: Arc<dyn clade_core::Clock> = self.clock.clone();
        let models = clade_runtime::Models::new(&self.config, hints, store.clone(), secrets, clock)
            .with_jitter(self.jitter.clone());
        let postbox = clade_runtime::messaging::Postbox::new();
        let registry = self.registry(&store, &agents, &postbox, memory.as_ref());
        let tools = Arc::new(clade_runtime::ToolRunner::new(
            registry,
            store.clone(),
            agents.clone(),
            None,
            &self.config.tools,
        ));
        let options = clade_runtime::EngineOptions {
            sessions: self.config.sessions.clone(),
            bindings: self.config.bindings.clone(),
            default_agent: self.config.default_agent.clone(),
            tools,
            tenants: self.config.tenants.clone(),
            failpoints: self.failpoints.clone(),
        };
        let bus = Arc::new(clade_runtime::LocalBus::default());
        let engine = Engine::start_on(store.clone(), agents, models, options, bus)
            .await
            .unwrap_or_else(|e| panic!("the engine: {e}"));
        postbox.attach(&engine);
        engine.set_recall(clade_runtime::memory::recall_of(&self.config, memory));
        // Completed turns are mined into memory beside them, as `memory.ingest` says.
        drop(clade_runtime::ingest::spawn(store.clone(), engine.clone()));
        let waker = engine.clone();
        let wake = Arc::new(move |look: &clade_sched::scheduler::Look| {
            for (tenant, session) in &look.sessions {
                waker.wake(*tenant, *session);
            }
        });
        let scheduler = clade_sched::scheduler::Scheduler::new(
            store.acting_as("scheduler"),
            clade_sched::scheduler::LookOptions::default(),
            wake,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        if self.config.scheduler.enabled {
            tokio::spawn(scheduler.run(async {
                let _ = stopped.await;
            }));
        }
        (store, engine, owner, stop)
    }
}

/// FNV-1a: a name's seed, the same in every run and build.
fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
