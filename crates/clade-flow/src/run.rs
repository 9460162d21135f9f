//! The runner: a flow run is a durable execution of kind `flow`; each step of it (a task, a
//! block) is a child execution of kind `flow_step`, named by its place in the flow
//! (`run/draft`, `run/2/0/review`, …), written once, when the step ends, with what it produced.
//!
//! A run driven again (after a crash, a restart, a pause) walks the flow from the top: a step
//! whose execution has ended gives its recorded results without running anything; a task whose
//! step did not end asks its questions again under the same idempotency keys (made from the
//! step and the attempt), so each finds the turn it started before, answered or still running,
//! and no agent is asked twice. Conditions and loops are pure functions of the inputs and
//! recorded outputs, so a run driven again decides as it did.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{
    AgentId, ApprovalStatus, AuditKind, ExecutionId, ExecutionKind, ExecutionStatus, Origin,
    Tenant, TenantId, Timestamp, TurnStatus,
};
use clade_runtime::{Durable, Engine, Envelope};
use clade_store::{AuditEntry, ExecutionOwner, ExecutionRow, NewApproval, NewExecution, Source};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::expr;
use crate::flow::{AgentSource, EnvValue, Flow, LoopMode, OnError, Step, StepKind, Task};

/// How long an approval waits for a decision when its step sets no timeout.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a waiting approval looks for a decision.
const APPROVAL_POLL: Duration = Duration::from_secs(1);
/// How many open runs a start resumes at most.
const RESUME_LIMIT: u32 = 10_000;
/// How many runs one tenant may have under way in one gateway: each holds a task and its
/// results, so a tenant starting runs without end cannot fill the gateway's memory.
pub const MAX_OPEN_RUNS_PER_TENANT: usize = 1_000;

/// Why a run cannot start (nothing of it was made).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(#[from] crate::Error),
    #[error("{}", .0.join("; "))]
    Inputs(Vec<String>),
    #[error("agents.{name}: no agent {handle:?} in this tenant; create it, or name another")]
    UnknownAgent { name: String, handle: String },
    #[error("agents.{name}: no agent can be made from template {template:?} for the run: {why}")]
    TemplateAgent { name: String, template: String, why: String },
    #[error("no flow run {0}")]
    NotFound(ExecutionId),
    #[error(
        "the tenant has {MAX_OPEN_RUNS_PER_TENANT} flow runs under way, the most it may; wait for one to end, or cancel one"
    )]
    TooMany,
    #[error("flow run {id} has ended ({status}): nothing to {action}")]
    Ended { id: ExecutionId, status: ExecutionStatus, action: &'static str },
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    #[error("flow run {0}'s record cannot be read: {1}")]
    Unreadable(ExecutionId, serde_json::Error),
    #[error("name: {0:?} is a word of the API's own (/v1/flows/{0}); name the flow otherwise")]
    ReservedName(String),
    #[error(
        "flow run {id} is {status}: only an ended run is retried; wait for it to end, or cancel it"
    )]
    UnderWay { id: ExecutionId, status: ExecutionStatus },
}

impl clade_core::Fault for RunError {
    fn is_internal(&self) -> bool {
        match self {
            Self::Store(store) => clade_core::Fault::is_internal(store),
            Self::Unreadable(..) => true,
            _ => false,
        }
    }
}

/// A run to start.
#[derive(Debug, Clone, Default)]
pub struct StartRun {
    /// The flow file's text: the run is pinned to it, whatever happens to the file later.
    pub source: String,
    /// The file's name, for errors.
    pub file: String,
    pub inputs: BTreeMap<String, Value>,
    /// Chosen by the caller to make a repeated start find the run it made; new when `None`.
    pub id: Option<ExecutionId>,
    /// The stored flow's version the text is, when it came from the store.
    pub version: Option<i64>,
    /// The run this one runs again ([`Runner::retry`]).
    pub retry_of: Option<ExecutionId>,
}

/// What a flow run's execution holds as its input: enough to drive it again from nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInput {
    pub flow: String,
    pub file: String,
    pub source: String,
    pub inputs: BTreeMap<String, Value>,
    /// Each of the flow's agents, by the handle it runs as.
    pub agents: BTreeMap<String, String>,
    /// The stored flow's version the run is pinned to; `None` for a text given inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The id of the run this one runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The job whose fire started the run. Such a run is recorded by the store with the fire,
    /// its inputs as the job gave them and no agents: the runner checks and resolves them when
    /// it first drives it (the same way each time, from the same text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<ScheduledBy>,
}

/// The job fire that started a run (written by `clade_store`'s job settlement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledBy {
    /// The job's id.
    pub job: String,
    /// The job's name.
    pub name: String,
    /// The scheduled time that fired, Unix milliseconds.
    pub scheduled_at: i64,
}

/// A run's inputs checked against its flow, and the agents it runs, resolved.
struct Resolved {
    inputs: BTreeMap<String, Value>,
    agents: BTreeMap<String, String>,
}

/// Checks `given` against `flow`'s inputs and finds each of its agents among the tenant's
/// (those made from templates are named by their handles in `run`, [`crate::made`]).
async fn resolve(
    store: &clade_store::Store,
    tenant: TenantId,
    run: ExecutionId,
    flow: &Flow,
    given: &BTreeMap<String, Value>,
) -> Result<Resolved, RunError> {
    let inputs = flow.inputs_of(given).map_err(RunError::Inputs)?;
    let mut agents = BTreeMap::new();
    for (name, source) in &flow.agents {
        let handle = match source {
            AgentSource::Handle(handle) => handle.clone(),
            AgentSource::Template(_) => {
                agents.insert(name.clone(), crate::made::handle_of(run, name));
                continue;
            }
        };
        match store.agents(tenant).get(&handle).await {
            Ok(_) => {}
            Err(clade_store::Error::AgentNotFound(_)) => {
                return Err(RunError::UnknownAgent { name: name.clone(), handle });
            }
            Err(other) => return Err(other.into()),
        }
        agents.insert(name.clone(), handle);
    }
    if agents.is_empty() {
        return Err(RunError::Inputs(vec!["the flow names no agent".into()]));
    }
    Ok(Resolved { inputs, agents })
}

/// The agent a started run is recorded under: its first task's (made by now, if a template's).
async fn owner_of(
    store: &clade_store::Store,
    tenant: TenantId,
    flow: &Flow,
    agents: &BTreeMap<String, String>,
) -> Result<AgentId, RunError> {
    let first = flow.task_order().first().map(|t| flow.tasks[*t].agent.clone());
    let handle = first
        .and_then(|name| agents.get(&name))
        .or_else(|| agents.values().next())
        .ok_or_else(|| RunError::Inputs(vec!["the flow names no agent".into()]))?;
    Ok(store.agents(tenant).get(handle).await?.id)
}

/// Where a task stands in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    /// Its agent is being asked now: in a run's progress only, never in what it records.
    Running,
    Completed,
    Failed,
    /// Not run: its branch of a condition was not taken, a goto passed it, or its parallel
    /// block was done without it.
    Skipped,
}

impl From<TaskStatus> for clade_core::FlowTaskStatus {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Pending => Self::Pending,
            TaskStatus::Running => Self::Running,
            TaskStatus::Completed => Self::Completed,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Skipped => Self::Skipped,
        }
    }
}

/// What a task did: templates read it as `tasks.ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub status: TaskStatus,
    /// The answer: text, or the JSON value its output schema checked. `null` until it has one.
    pub output: Value,
    /// Every iteration's output, in order, for a task in a loop (else the one output).
    pub outputs: Vec<Value>,
    pub error: Option<String>,
    /// Questions asked (attempts and schema retries), in all.
    pub attempts: u32,
    /// The turns that answered, oldest first.
    pub turns: Vec<String>,
}

impl TaskResult {
    fn pending() -> Self {
        Self {
            status: TaskStatus::Pending,
            output: Value::Null,
            outputs: Vec::new(),
            error: None,
            attempts: 0,
            turns: Vec::new(),
        }
    }

    fn skipped() -> Self {
        Self { status: TaskStatus::Skipped, ..Self::pending() }
    }
}

/// Task results by task id.
pub type Results = BTreeMap<String, TaskResult>;

/// What a run ended with (its execution's output), and what a step's execution records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recorded {
    pub tasks: Results,
    /// What the run's tasks spent, summed when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::budget::Spent>,
}

/// Why a step stopped short.
#[derive(Debug, Clone)]
enum Stop {
    /// The step failed; its `on_error` decides what follows.
    Failed(String),
    /// The run cannot go on now (cancelled, paused, the gateway stopping, the store down): it
    /// stays as it is, to be driven again, and nothing is recorded.
    Halted(Arc<Halt>),
}

/// Why a run cannot go on now; it is driven again later (see [`Stop::Halted`]).
#[derive(Debug, thiserror::Error)]
enum Halt {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    #[error(transparent)]
    Journal(#[from] clade_runtime::DurableError),
    #[error(transparent)]
    Engine(#[from] clade_runtime::engine::Error),
    #[error("the run is {0}")]
    NotRunning(ExecutionStatus),
}

/// What a step produced, and whether it stopped short.
struct Outcome {
    produced: Results,
    stop: Option<Stop>,
}

impl Outcome {
    fn done(produced: Results) -> Self {
        Self { produced, stop: None }
    }
    fn failed(produced: Results, why: String) -> Self {
        Self { produced, stop: Some(Stop::Failed(why)) }
    }
    fn halted(why: impl Into<Halt>) -> Self {
        Self { produced: Results::new(), stop: Some(Stop::Halted(Arc::new(why.into()))) }
    }
}

/// `item` and `iteration` inside loops.
#[derive(Debug, Clone, Default)]
struct Locals {
    item: Option<Value>,
    iteration: Option<u32>,
}

/// Starts, drives, cancels and resumes flow runs on one engine.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// What makes the agents a flow makes from templates for each run; none: such a run is
    /// refused.
    agents: Option<clade_store::Agents>,
    /// Each task step's cost beyond its turns, when measured ([`Runner::measured`]).
    overheads: Option<Overheads>,
    /// Runs being driven in this process, with what they have produced so far.
    driving: Mutex<HashMap<ExecutionId, Driving>>,
}

struct Driving {
    tenant: TenantId,
    task: tokio::task::AbortHandle,
    progress: Arc<Mutex<Results>>,
}

/// Task steps' costs beyond their turns, as measured.
type Overheads = Arc<Mutex<Vec<Duration>>>;

#[allow(clippy::disallowed_methods)] // The runner's own cost, measured; not domain time.
fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// A runner that does not keep it alive: what the agents' tools hold, since the engine that
/// runs their calls is the runner's own.
#[derive(Clone)]
pub struct WeakRunner(std::sync::Weak<Inner>);

impl WeakRunner {
    pub fn upgrade(&self) -> Option<Runner> {
        self.0.upgrade().map(|inner| Runner { inner })
    }
}

impl Runner {
    /// A handle that does not keep the runner alive.
    pub fn downgrade(&self) -> WeakRunner {
        WeakRunner(Arc::downgrade(&self.inner))
    }

    pub fn new(engine: Engine) -> Self {
        let driving = Mutex::new(HashMap::new());
        Self { inner: Arc::new(Inner { engine, agents: None, overheads: None, driving }) }
    }

    /// A runner that also makes the agents flows make from templates for each run
    /// ([`crate::made`]), with `agents`.
    pub fn with_agents(engine: Engine, agents: clade_store::Agents) -> Self {
        let (driving, agents) = (Mutex::new(HashMap::new()), Some(agents));
        Self { inner: Arc::new(Inner { engine, agents, overheads: None, driving }) }
    }

    /// A runner that measures what each task step costs beyond its turns (its journal's
    /// writes, reads, templates), for `clade bench flows`: [`Runner::overheads`].
    pub fn measured(engine: Engine) -> Self {
        let (driving, overheads) = (Mutex::new(HashMap::new()), Some(Overheads::default()));
        Self { inner: Arc::new(Inner { engine, agents: None, overheads, driving }) }
    }

    /// The store the runner's engine writes to.
    pub fn store(&self) -> &clade_store::Store {
        self.inner.engine.store()
    }

    /// What each task step cost beyond its turns so far, when measured.
    pub fn overheads(&self) -> Vec<Duration> {
        let measured = self.inner.overheads.as_ref().and_then(|all| all.lock().ok());
        measured.map(|all| all.clone()).unwrap_or_default()
    }

    /// Checks everything a run needs (the flow, its inputs, its agents) and starts it; nothing
    /// is made when anything is wrong. A start repeated with the same `id` returns that run.
    pub async fn start(&self, tenant: &Tenant, start: StartRun) -> Result<ExecutionRow, RunError> {
        let store = self.inner.engine.store();
        if let Some(id) = start.id
            && let Ok(existing) = store.executions(tenant.id).get(id).await
            && existing.kind == ExecutionKind::Flow
        {
            return Ok(existing);
        }
        if self.under_way(tenant.id) >= MAX_OPEN_RUNS_PER_TENANT {
            return Err(RunError::TooMany);
        }
        let flow = crate::parse(&start.source, Path::new(&start.file))?;
        let id = start.id.unwrap_or_else(|| ExecutionId::generate(store.now()));
        let Resolved { inputs, agents } =
            resolve(store, tenant.id, id, &flow, &start.inputs).await?;
        // Nothing is made until every check has passed.
        let maker = self.inner.agents.as_ref();
        crate::made::check(maker, id, &flow)?;
        if let Some(maker) = maker
            && crate::made::makes_any(&flow)
        {
            crate::made::make(maker, &self.inner.engine, tenant, id, &flow).await?;
        }
        let owner = owner_of(store, tenant.id, &flow, &agents).await?;
        let input = RunInput {
            flow: flow.name.clone(),
            file: start.file,
            source: start.source,
            inputs,
            agents,
            version: start.version,
            retry_of: start.retry_of.map(|id| id.to_string()),
            scheduled: None,
        };
        let row = store
            .start_execution(NewExecution {
                id,
                tenant: tenant.id,
                agent: owner,
                kind: ExecutionKind::Flow,
                owner: ExecutionOwner::Agent(owner),
                status: ExecutionStatus::Running,
                input: serde_json::to_string(&input).map_err(|e| RunError::Unreadable(id, e))?,
            })
            .await?;
        self.drive(tenant.clone(), row.clone());
        Ok(row)
    }

    /// Drives again every flow run left open (at start, after a crash or a stop): each takes
    /// up where it stopped. Returns how many.
    pub async fn resume_open(&self) -> Result<usize, RunError> {
        let store = self.inner.engine.store();
        let open = store.system().open_executions(RESUME_LIMIT).await?;
        let mut resumed = 0;
        for row in open.into_iter().filter(|row| row.kind == ExecutionKind::Flow) {
            if row.status == ExecutionStatus::Paused {
                continue;
            }
            let tenant = store.tenants().by_id(row.tenant_id).await?;
            self.drive(tenant, row);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Drives a run another part of the gateway started (a schedule's fire records its run
    /// with the fire): nothing when it has ended, is paused or is driven here already.
    pub async fn take_up(&self, tenant: TenantId, id: ExecutionId) -> Result<(), RunError> {
        let row = self.get(tenant, id).await?;
        if row.status != ExecutionStatus::Running {
            return Ok(());
        }
        let tenant = self.inner.engine.store().tenants().by_id(tenant).await?;
        self.drive(tenant, row);
        Ok(())
    }

    /// A run of the tenant's.
    pub async fn get(&self, tenant: TenantId, id: ExecutionId) -> Result<ExecutionRow, RunError> {
        match self.inner.engine.store().executions(tenant).get(id).await {
            Ok(row) if row.kind == ExecutionKind::Flow => Ok(row),
            Ok(_) | Err(clade_store::Error::ExecutionNotFound(_)) => Err(RunError::NotFound(id)),
            Err(other) => Err(other.into()),
        }
    }

    /// What an ended run's tasks spent, as its record keeps it (none for a run under way, or
    /// one recorded before runs kept it).
    pub fn recorded_usage(&self, row: &ExecutionRow) -> Option<crate::budget::Spent> {
        let recorded: Recorded = serde_json::from_str(row.output.as_deref()?).ok()?;
        recorded.usage
    }

    /// What a run's tasks have done: its recorded output once it ended, else what this
    /// process has seen of it so far (every task pending when it is not being driven here).
    pub fn results(&self, row: &ExecutionRow) -> Result<Results, RunError> {
        if let Some(output) = &row.output {
            let recorded: Recorded =
                serde_json::from_str(output).map_err(|e| RunError::Unreadable(row.id, e))?;
            return Ok(recorded.tasks);
        }
        let input = RunInput::of(row)?;
        let mut results: Results = match crate::parse(&input.source, Path::new(&input.file)) {
            Ok(flow) => flow.tasks.keys().map(|id| (id.clone(), TaskResult::pending())).collect(),
            Err(_) => Results::new(),
        };
        if let Ok(driving) = self.inner.driving.lock()
            && let Some(run) = driving.get(&row.id)
            && let Ok(progress) = run.progress.lock()
        {
            results.extend(progress.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(results)
    }

    /// Cancels a run: it stops where it stands (a task's turn already asked goes on, its
    /// answer unused).
    pub async fn cancel(
        &self,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<ExecutionRow, RunError> {
        let row = self.settable(tenant, id, "cancel").await?;
        self.stop_driving(row.id);
        let store = self.inner.engine.store();
        let reason = Some("cancelled".to_owned());
        let cancelled = store
            .executions(tenant)
            .set_status(id, ExecutionStatus::Cancelled, None, reason)
            .await?;
        if let Ok(input) = RunInput::of(&row)
            && let Ok(flow) = crate::parse(&input.source, Path::new(&input.file))
        {
            crate::made::remove(self.inner.agents.as_ref(), tenant, id, &flow).await;
        }
        Ok(cancelled)
    }

    /// Pauses a run: it stops after what it is doing, until resumed.
    pub async fn pause(&self, tenant: TenantId, id: ExecutionId) -> Result<ExecutionRow, RunError> {
        self.settable(tenant, id, "pause").await?;
        self.stop_driving(id);
        let store = self.inner.engine.store();
        Ok(store.executions(tenant).set_status(id, ExecutionStatus::Paused, None, None).await?)
    }

    /// Resumes a paused run (or drives again one left open).
    pub async fn resume(&self, tenant: &Tenant, id: ExecutionId) -> Result<ExecutionRow, RunError> {
        self.settable(tenant.id, id, "resume").await?;
        let store = self.inner.engine.store();
        let row = store
            .executions(tenant.id)
            .set_status(id, ExecutionStatus::Running, None, None)
            .await?;
        self.drive(tenant.clone(), row.clone());
        Ok(row)
    }

    /// Waits until a run has ended (or `timeout`); its row then.
    pub async fn wait(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        timeout: Duration,
    ) -> Result<ExecutionRow, RunError> {
        let clock = self.inner.engine.store().clock().clone();
        let deadline = clock.now().as_millis().saturating_add(timeout.as_millis() as i64);
        loop {
            let row = self.get(tenant, id).await?;
            if row.status.is_final() || clock.now().as_millis() >= deadline {
                return Ok(row);
            }
            clock.sleep(Duration::from_millis(100)).await;
        }
    }

    async fn settable(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        action: &'static str,
    ) -> Result<ExecutionRow, RunError> {
        let row = self.get(tenant, id).await?;
        if row.status.is_final() {
            return Err(RunError::Ended { id, status: row.status, action });
        }
        Ok(row)
    }

    /// How many of the tenant's runs this process drives now.
    fn under_way(&self, tenant: TenantId) -> usize {
        let driving = self.inner.driving.lock();
        driving.map(|d| d.values().filter(|run| run.tenant == tenant).count()).unwrap_or(0)
    }

    /// Stops driving every run (the gateway stopping): each stays as it is, to be driven
    /// again by [`Runner::resume_open`].
    pub fn stop_all(&self) {
        if let Ok(mut driving) = self.inner.driving.lock() {
            for (_, run) in driving.drain() {
                run.task.abort();
            }
        }
    }

    fn stop_driving(&self, id: ExecutionId) {
        if let Ok(mut driving) = self.inner.driving.lock()
            && let Some(run) = driving.remove(&id)
        {
            run.task.abort();
        }
    }

    /// Drives `row` in a task of its own, unless this process drives it already.
    fn drive(&self, tenant: Tenant, row: ExecutionRow) {
        let tenant_id = tenant.id;
        let Ok(mut driving) = self.inner.driving.lock() else { return };
        if driving.contains_key(&row.id) {
            return;
        }
        let progress = Arc::new(Mutex::new(Results::new()));
        let inner = self.inner.clone();
        let id = row.id;
        let shared = progress.clone();
        let task = tokio::spawn(async move {
            if let Err(err) = drive(&inner, tenant, row, shared).await {
                tracing::warn!(run = %id, error = %err, "a flow run stopped; it is driven again at the next start");
            }
            if let Ok(mut driving) = inner.driving.lock() {
                driving.remove(&id);
            }
        });
        driving.insert(id, Driving { tenant: tenant_id, task: task.abort_handle(), progress });
    }
}

impl RunInput {
    /// What a flow run's execution holds.
    pub fn of(row: &ExecutionRow) -> Result<Self, RunError> {
        let text = row.input.as_deref().unwrap_or_default();
        serde_json::from_str(text).map_err(|e| RunError::Unreadable(row.id, e))
    }
}

/// Drives one run to its end, or until it halts.
async fn drive(
    inner: &Inner,
    tenant: Tenant,
    row: ExecutionRow,
    progress: Arc<Mutex<Results>>,
) -> Result<(), Arc<Halt>> {
    let engine = &inner.engine;
    let mut input = RunInput::of(&row).map_err(|e| Arc::new(e.into()))?;
    let store = engine.store().clone();
    let flow = match crate::parse(&input.source, Path::new(&input.file)) {
        Ok(flow) => flow,
        // A scheduled run's stored flow was checked when saved; a text this build cannot read
        // (saved by another version) ends the run, saying why, rather than halting it forever.
        Err(err) if input.scheduled.is_some() => {
            return fail_unstarted(&store, &row, err.to_string()).await;
        }
        Err(err) => return Err(Arc::new(Halt::Run(RunError::Invalid(err)))),
    };
    match prepare(inner, &tenant, &row, &flow, &mut input).await {
        Ok(()) => {}
        Err(RunError::Store(err)) => return Err(Arc::new(RunError::Store(err).into())),
        Err(err) => return fail_unstarted(&store, &row, err.to_string()).await,
    }
    let again = NewExecution {
        id: row.id,
        tenant: row.tenant_id,
        agent: row.agent_id,
        kind: ExecutionKind::Flow,
        owner: row.owner,
        status: ExecutionStatus::Running,
        input: row.input.clone().unwrap_or_default(),
    };
    let durable = match Durable::start_or_ended(store.clone(), again).await {
        Ok(Ok(durable)) => durable,
        Ok(Err(_ended)) => return Ok(()),
        Err(err) => return Err(Arc::new(err.into())),
    };
    let env = flow
        .env
        .iter()
        .filter_map(|(name, value)| match value {
            EnvValue::Value(value) => Some((name.clone(), Value::String(value.clone()))),
            EnvValue::Secret(_) => None,
        })
        .collect();
    let walk = Walk {
        engine: engine.clone(),
        tenant,
        run: row.id,
        agent: row.agent_id,
        flow,
        input,
        env,
        progress,
        overheads: inner.overheads.clone(),
        spending: Default::default(),
    };
    let deadline = row.created_at.as_millis().saturating_add(walk.flow.timeout.as_millis() as i64);
    let left = deadline.saturating_sub(store.now().as_millis()).max(0).unsigned_abs();
    let (nothing, top) = (Results::new(), Locals::default());
    let ran = tokio::select! {
        ran = walk.list(&walk.flow.run, "run", &nothing, &top) => ran,
        () = store.clock().sleep(Duration::from_millis(left)) => Outcome::failed(
            Results::new(),
            format!("the run took longer than its timeout_secs ({} s)", walk.flow.timeout.as_secs()),
        ),
    };
    let mut tasks: Results =
        walk.flow.tasks.keys().map(|id| (id.clone(), TaskResult::pending())).collect();
    tasks.extend(ran.produced);
    // Summed before the agents made for the run go, and their turns with them.
    let turns: Vec<String> = tasks.values().flat_map(|t| t.turns.iter().cloned()).collect();
    let usage = crate::budget::usage_of(&store, row.tenant_id, &turns).await.ok().map(Into::into);
    let recorded = Recorded { tasks, usage };
    let ended = match ran.stop {
        None => durable.complete(&recorded).await.map(drop),
        Some(Stop::Failed(why)) => {
            let output = serde_json::to_string(&recorded).ok();
            let executions = store.executions(row.tenant_id);
            let failed = executions.set_status(row.id, ExecutionStatus::Failed, output, Some(why));
            failed.await.map(drop).map_err(clade_runtime::DurableError::from)
        }
        Some(Stop::Halted(why)) => return Err(why),
    };
    ended.map_err(|e| Arc::new(e.into()))?;
    crate::made::remove(inner.agents.as_ref(), row.tenant_id, row.id, &walk.flow).await;
    Ok(())
}

/// What a run needs before its walk: a scheduled run's inputs checked and agents resolved, and
/// the agents it makes from templates (made when first driven for a scheduled run; a started
/// one has them, unless a stop came between their deletion and the run's end).
async fn prepare(
    inner: &Inner,
    tenant: &Tenant,
    row: &ExecutionRow,
    flow: &Flow,
    input: &mut RunInput,
) -> Result<(), RunError> {
    let store = inner.engine.store();
    if input.scheduled.is_some() && input.agents.is_empty() {
        let resolved = resolve(store, row.tenant_id, row.id, flow, &input.inputs).await?;
        input.inputs = resolved.inputs;
        input.agents = resolved.agents;
    }
    if crate::made::makes_any(flow) {
        let maker = inner.agents.as_ref();
        crate::made::check(maker, row.id, flow)?;
        if let Some(maker) = maker {
            crate::made::make(maker, &inner.engine, tenant, row.id, flow).await?;
        }
    }
    Ok(())
}

/// Ends a scheduled run that cannot start (its inputs do not fit its flow, an agent it names is
/// gone), saying why: the job's run history then shows it failed.
async fn fail_unstarted(
    store: &clade_store::Store,
    row: &ExecutionRow,
    why: String,
) -> Result<(), Arc<Halt>> {
    let why = format!("the scheduled run cannot start: {why}");
    let failed = store.executions(row.tenant_id).set_status(
        row.id,
        ExecutionStatus::Failed,
        None,
        Some(why),
    );
    failed.await.map(drop).map_err(|e| Arc::new(RunError::Store(e).into()))
}

/// One run's walk over its flow.
struct Walk {
    engine: Engine,
    tenant: Tenant,
    run: ExecutionId,
    /// The agent the run's executions are recorded under.
    agent: AgentId,
    flow: Flow,
    input: RunInput,
    env: serde_json::Map<String, Value>,
    progress: Arc<Mutex<Results>>,
    overheads: Option<Overheads>,
    /// What the run's tasks have spent, when the flow has a budget to check it against.
    spending: crate::budget::Spending,
}

/// A step's execution id: the same for every drive of one run, and another run's (or another
/// tenant's) can never name it.
fn step_execution(run: ExecutionId, path: &str) -> ExecutionId {
    let digest = Sha256::new()
        .chain_update(b"flow_step")
        .chain_update(run.as_bytes())
        .chain_update(path.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    ExecutionId::from_bytes(id)
}

/// What a task's question got (a drive again finds the same turn by its idempotency key).
#[derive(Debug)]
struct Asked {
    turn: Option<String>,
    answer: Option<String>,
    error: Option<String>,
}

impl Walk {
    /// The values templates and expressions read at a place.
    fn context(&self, visible: &Results, locals: &Locals) -> Value {
        let tasks: serde_json::Map<String, Value> = self
            .flow
            .tasks
            .keys()
            .map(|id| {
                let result = visible.get(id).cloned().unwrap_or_else(TaskResult::pending);
                (id.clone(), serde_json::to_value(result).unwrap_or(Value::Null))
            })
            .collect();
        let mut context = json!({ "inputs": self.input.inputs, "env": self.env, "tasks": tasks });
        if let Some(object) = context.as_object_mut() {
            if let Some(item) = &locals.item {
                object.insert("item".into(), item.clone());
            }
            if let Some(iteration) = locals.iteration {
                object.insert("iteration".into(), json!(iteration));
            }
        }
        context
    }

    fn show(&self, produced: &Results) {
        if let Ok(mut progress) = self.progress.lock() {
            progress.extend(produced.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// Runs a list of steps in order; a failed step's `on_error` says what follows.
    fn list<'a>(
        &'a self,
        steps: &'a [Step],
        path: &'a str,
        seen: &'a Results,
        locals: &'a Locals,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut visible = seen.clone();
            let mut produced = Results::new();
            let mut index = 0;
            while let Some(step) = steps.get(index) {
                let out = self.step(step, &format!("{path}/{}", step.id), &visible, locals).await;
                visible.extend(out.produced.clone());
                produced.extend(out.produced);
                match (out.stop, &step.on_error) {
                    (None, _) | (Some(Stop::Failed(_)), OnError::Continue) => index += 1,
                    (Some(Stop::Failed(why)), OnError::Fail) => {
                        return Outcome::failed(produced, why);
                    }
                    (Some(Stop::Failed(_)), OnError::Goto(target)) => {
                        let to = steps.iter().position(|s| &s.id == target).unwrap_or(steps.len());
                        for passed in steps.get(index + 1..to).unwrap_or_default() {
                            let passed = skipped(passed);
                            visible.extend(passed.clone());
                            produced.extend(passed);
                        }
                        index = to.max(index + 1);
                    }
                    (Some(halted @ Stop::Halted(_)), _) => {
                        return Outcome { produced, stop: Some(halted) };
                    }
                }
            }
            Outcome::done(produced)
        })
    }

    /// Runs one step as its own execution, or gives what its ended execution recorded.
    fn step<'a>(
        &'a self,
        step: &'a Step,
        path: &'a str,
        visible: &'a Results,
        locals: &'a Locals,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let started = instant();
            let mut waited = Duration::ZERO;
            let store = self.engine.store().clone();
            match store.executions(self.tenant.id).get(self.run).await {
                Ok(run) if run.status == ExecutionStatus::Running => {}
                Ok(run) => return Outcome::halted(Halt::NotRunning(run.status)),
                Err(err) => return Outcome::halted(err),
            }
            // A step is recorded once, when it ends: one that ended gives what it recorded; one
            // that did not runs (again), its questions finding the turns they started before.
            let id = step_execution(self.run, path);
            match store.executions(self.tenant.id).get(id).await {
                Ok(ended) if ended.status.is_final() => return replayed(&ended),
                Ok(_) | Err(clade_store::Error::ExecutionNotFound(_)) => {}
                Err(err) => return Outcome::halted(err),
            }
            let body = self.kind(step, path, (visible, locals), id, &mut waited);
            let out = match step.timeout {
                None => body.await,
                Some(limit) => tokio::select! {
                    out = body => out,
                    () = store.clock().sleep(limit) => Outcome::failed(
                        Results::new(),
                        format!("step {} took longer than its timeout_secs ({} s)", step.id, limit.as_secs()),
                    ),
                },
            };
            self.show(&out.produced);
            let ended = match &out.stop {
                None => self.record(id, path, &out.produced, None).await,
                Some(Stop::Failed(why)) => self.record(id, path, &out.produced, Some(why)).await,
                Some(Stop::Halted(_)) => Ok(()),
            };
            if let (Some(overheads), StepKind::Task(_)) = (&self.overheads, &step.kind)
                && let Ok(mut overheads) = overheads.lock()
            {
                overheads.push(started.elapsed().saturating_sub(waited));
            }
            match ended {
                Ok(()) => out,
                Err(err) => Outcome::halted(err),
            }
        })
    }

    /// Records an ended step, in one write: its execution, completed with what it produced,
    /// or failed saying why.
    async fn record(
        &self,
        id: ExecutionId,
        path: &str,
        produced: &Results,
        failed: Option<&String>,
    ) -> Result<(), clade_store::Error> {
        let new = NewExecution {
            id,
            tenant: self.tenant.id,
            agent: self.agent,
            kind: ExecutionKind::FlowStep,
            owner: ExecutionOwner::Execution(self.run),
            status: ExecutionStatus::Running,
            input: json!({ "step": path }).to_string(),
        };
        let output = serde_json::to_string(&Recorded { tasks: produced.clone(), usage: None }).ok();
        let status =
            if failed.is_some() { ExecutionStatus::Failed } else { ExecutionStatus::Completed };
        let error = failed.cloned();
        let written = self.engine.store().transact(self.tenant.id, move |work| {
            let (new, output, error) = (new.clone(), output.clone(), error.clone());
            Box::pin(async move {
                work.executions().start(new).await?;
                work.executions().set_status(id, status, output, error).await
            })
        });
        written.await.map(drop)
    }

    async fn kind(
        &self,
        step: &Step,
        path: &str,
        (visible, locals): (&Results, &Locals),
        execution: ExecutionId,
        waited: &mut Duration,
    ) -> Outcome {
        match &step.kind {
            StepKind::Task(id) => match self.flow.tasks.get(id) {
                Some(task) => self.task(task, (visible, locals), execution, waited).await,
                None => Outcome::failed(Results::new(), format!("task {id} is not declared")),
            },
            StepKind::Sequential(steps) => self.list(steps, path, visible, locals).await,
            StepKind::Parallel { join, steps } => {
                self.parallel(join.needed(steps.len()), steps, path, visible, locals).await
            }
            StepKind::Condition { when, then, otherwise } => {
                let taken = match expr::truth(when, &self.context(visible, locals)) {
                    Ok(taken) => taken,
                    Err(e) => return Outcome::failed(Results::new(), format!("if: {e}")),
                };
                let (run, passed, branch) =
                    if taken { (then, otherwise, "then") } else { (otherwise, then, "else") };
                let mut out = self.list(run, &format!("{path}/{branch}"), visible, locals).await;
                for step in passed {
                    out.produced.extend(skipped(step));
                }
                out
            }
            StepKind::Loop { mode, max_iterations, steps } => {
                self.repeat(mode, *max_iterations, steps, path, visible, locals).await
            }
            StepKind::Approval { message } => {
                let message = match expr::render(message, &self.context(visible, locals)) {
                    Ok(message) => message,
                    Err(e) => return Outcome::failed(Results::new(), format!("message: {e}")),
                };
                let timeout = step.timeout.unwrap_or(APPROVAL_TIMEOUT);
                match self.approval(&step.id, path, &message, timeout).await {
                    Ok(()) => Outcome::done(Results::new()),
                    Err(stop) => Outcome { produced: Results::new(), stop: Some(stop) },
                }
            }
        }
    }

    async fn parallel(
        &self,
        needed: usize,
        steps: &[Step],
        path: &str,
        visible: &Results,
        locals: &Locals,
    ) -> Outcome {
        let mut branches: futures::stream::FuturesUnordered<_> = steps
            .iter()
            .enumerate()
            .map(|(index, step)| async move {
                let path = format!("{path}/{}", step.id);
                (index, self.step(step, &path, visible, locals).await)
            })
            .collect();
        let (mut produced, mut finished, mut failures) = (Results::new(), Vec::new(), Vec::new());
        while let Some((index, out)) = branches.next().await {
            produced.extend(out.produced);
            match out.stop {
                None => finished.push(index),
                Some(Stop::Failed(why)) => failures.push(why),
                Some(halted @ Stop::Halted(_)) => return Outcome { produced, stop: Some(halted) },
            }
            if finished.len() >= needed {
                break;
            }
            if failures.len() > steps.len() - needed {
                let why = format!(
                    "parallel: {} of {} branches failed, and {needed} had to finish; first: {}",
                    failures.len(),
                    steps.len(),
                    failures[0]
                );
                return Outcome::failed(produced, why);
            }
        }
        drop(branches);
        // Branches still running when the block was done are dropped: their tasks count as
        // skipped, and their executions are ended so none stays open.
        for (index, step) in steps.iter().enumerate() {
            if finished.contains(&index) {
                continue;
            }
            for (id, result) in skipped(step) {
                produced.entry(id).or_insert(result);
            }
            let id = step_execution(self.run, &format!("{path}/{}", step.id));
            let executions = self.engine.store().executions(self.tenant.id);
            if let Ok(row) = executions.get(id).await
                && !row.status.is_final()
            {
                let why = Some("its parallel block was done without it".to_owned());
                let _ = executions.set_status(id, ExecutionStatus::Cancelled, None, why).await;
            }
        }
        Outcome::done(produced)
    }

    async fn repeat(
        &self,
        mode: &LoopMode,
        max_iterations: u32,
        steps: &[Step],
        path: &str,
        seen: &Results,
        locals: &Locals,
    ) -> Outcome {
        let mut visible = seen.clone();
        let mut produced = Results::new();
        let items = match mode {
            LoopMode::ForEach(list) => match expr::evaluate(list, &self.context(seen, locals)) {
                Ok(Value::Array(items)) if items.len() > max_iterations as usize => {
                    return Outcome::failed(
                        produced,
                        format!(
                            "for_each: {} items, more than max_iterations ({max_iterations})",
                            items.len()
                        ),
                    );
                }
                Ok(Value::Array(items)) => Some(items),
                Ok(other) => {
                    return Outcome::failed(
                        produced,
                        format!("for_each: gave {other}, not a list"),
                    );
                }
                Err(e) => return Outcome::failed(produced, format!("for_each: {e}")),
            },
            _ => None,
        };
        let rounds = items.as_ref().map_or(max_iterations as usize, Vec::len);
        for iteration in 0..rounds {
            let locals = Locals {
                item: items
                    .as_ref()
                    .and_then(|items| items.get(iteration).cloned())
                    .or(locals.item.clone()),
                iteration: Some(iteration as u32),
            };
            if let LoopMode::While(test) = mode {
                match expr::truth(test, &self.context(&visible, &locals)) {
                    Ok(true) => {}
                    Ok(false) => return Outcome::done(produced),
                    Err(e) => return Outcome::failed(produced, format!("while: {e}")),
                }
            }
            let out = self.list(steps, &format!("{path}/{iteration}"), &visible, &locals).await;
            for (id, mut result) in out.produced {
                // A task in a loop keeps every iteration's output.
                let mut outputs = visible.get(&id).map(|r| r.outputs.clone()).unwrap_or_default();
                if result.status == TaskStatus::Completed {
                    outputs.push(result.output.clone());
                }
                result.outputs = outputs;
                visible.insert(id.clone(), result.clone());
                produced.insert(id, result);
            }
            if let Some(stop) = out.stop {
                return Outcome { produced, stop: Some(stop) };
            }
            if let LoopMode::Until(test) = mode {
                match expr::truth(test, &self.context(&visible, &locals)) {
                    Ok(true) => return Outcome::done(produced),
                    Ok(false) => {}
                    Err(e) => return Outcome::failed(produced, format!("until: {e}")),
                }
            }
        }
        match mode {
            LoopMode::ForEach(_) => Outcome::done(produced),
            LoopMode::While(test) | LoopMode::Until(test) => Outcome::failed(
                produced,
                format!(
                    "loop: {test:?} still asks for more after max_iterations ({max_iterations})"
                ),
            ),
        }
    }

    /// Asks a task's agent, again while its turn fails (`max_attempts`) or its answer fails
    /// the output schema (`output_retries`, telling it what failed).
    async fn task(
        &self,
        task: &Task,
        (visible, locals): (&Results, &Locals),
        step: ExecutionId,
        waited: &mut Duration,
    ) -> Outcome {
        let failed = |result: TaskResult, why: String| {
            Outcome::failed(Results::from([(task.id.clone(), result)]), why)
        };
        let mut result = TaskResult { status: TaskStatus::Failed, ..TaskResult::pending() };
        let prompt = match expr::render(&task.prompt, &self.context(visible, locals)) {
            Ok(prompt) => prompt,
            Err(e) => {
                let why = format!("task {}: prompt: {e}", task.id);
                result.error = Some(why.clone());
                return failed(result, why);
            }
        };
        // Shown while it is asked; what it produces replaces this when the step ends.
        let before = visible.get(&task.id).cloned().unwrap_or_else(TaskResult::pending);
        let asking = TaskResult { status: TaskStatus::Running, ..before };
        self.show(&Results::from([(task.id.clone(), asking)]));
        let validator = task.output_schema.as_ref().and_then(|s| jsonschema::validator_for(s).ok());
        let handle = self.input.agents.get(&task.agent).cloned().unwrap_or_default();
        for attempt in 1..=task.max_attempts {
            let mut text = prompt.clone();
            for check in 0..=task.output_retries {
                match self.over_budget(task, visible, &result).await {
                    Ok(None) => {}
                    Ok(Some(why)) => {
                        let why = format!("task {}: {why}", task.id);
                        result.error = Some(why.clone());
                        return failed(result, why);
                    }
                    Err(halt) => return Outcome::halted(halt),
                }
                // The same key on every drive of the run: a question asked before finds its
                // turn, answered or still running, and is not asked again.
                let key = format!("flow:{step}:{attempt}.{check}");
                let asking = instant();
                let asked = self.ask(&handle, text.clone(), key, task.timeout).await;
                *waited += asking.elapsed();
                let asked = match asked {
                    Ok(asked) => asked,
                    Err(halt) => return Outcome::halted(halt),
                };
                result.attempts += 1;
                result.turns.extend(asked.turn);
                let Some(answer) = asked.answer else {
                    result.error = asked.error;
                    break;
                };
                let Some(validator) = &validator else {
                    return completed(task, result, Value::String(answer));
                };
                match checked(validator, &answer) {
                    Ok(value) => return completed(task, result, value),
                    Err(why) => {
                        let why = why.to_string();
                        text = correction(&why, task.output_schema.as_ref());
                        result.error = Some(why);
                    }
                }
            }
        }
        let why = format!(
            "task {} failed after {} question(s): {}",
            task.id,
            result.attempts,
            result.error.as_deref().unwrap_or("no answer")
        );
        failed(result, why)
    }

    /// Why `task` may not ask another question, when a budget is spent: the task's own, by its
    /// questions so far this time it runs, or the run's, by the tasks that have ended too.
    async fn over_budget(
        &self,
        task: &Task,
        visible: &Results,
        this: &TaskResult,
    ) -> Result<Option<String>, Halt> {
        let store = self.engine.store();
        if let Some(budget) = task.budget {
            let spent = self.spending.spent(store, self.tenant.id, &this.turns).await?;
            if let Some(why) = crate::budget::exhausted(budget, &spent, "its") {
                return Ok(Some(why));
            }
        }
        let Some(budget) = self.flow.budget else { return Ok(None) };
        let turns: Vec<String> =
            visible.values().flat_map(|r| &r.turns).chain(&this.turns).cloned().collect();
        let spent = self.spending.spent(store, self.tenant.id, &turns).await?;
        Ok(crate::budget::exhausted(budget, &spent, "the run's"))
    }

    /// One question to an agent, in the run's session with it, under `key` (the same on
    /// every drive, so a question asked before is found, not asked again).
    async fn ask(
        &self,
        handle: &str,
        text: String,
        key: String,
        timeout: Duration,
    ) -> Result<Asked, Halt> {
        let envelope = Envelope {
            tenant: self.tenant.clone(),
            agent: Some(handle.to_owned()),
            text,
            source: Source {
                platform: Origin::Client("flow".into()),
                channel: format!("flow:{}", self.run),
                actor: self.flow.name.clone(),
            },
            idempotency_key: Some(key),
        };
        let watched = self.engine.submit_and_watch(envelope).await;
        let (_, watch) = match watched {
            Ok(watched) => watched,
            Err(err @ clade_runtime::engine::Error::Draining) => return Err(err.into()),
            Err(err) if clade_core::Fault::is_internal(&err) => return Err(err.into()),
            Err(err) => {
                return Ok(Asked { turn: None, answer: None, error: Some(err.to_string()) });
            }
        };
        let ended = watch.ended(timeout).await?;
        Ok(match ended {
            Some(turn) if turn.status == TurnStatus::Completed => Asked {
                turn: Some(turn.turn_id.to_string()),
                answer: Some(turn.reply.unwrap_or_default()),
                error: None,
            },
            Some(turn) => Asked {
                turn: Some(turn.turn_id.to_string()),
                answer: None,
                error: Some(
                    turn.error.unwrap_or_else(|| format!("its turn ended {}", turn.status)),
                ),
            },
            None => Asked {
                turn: None,
                answer: None,
                error: Some(format!("{handle} did not answer within {} s", timeout.as_secs())),
            },
        })
    }

    /// Waits for a person to approve (or deny) through the approvals agents' tool calls use:
    /// `clade approvals approve ID` or `POST /v1/approvals/{id}/approve`.
    async fn approval(
        &self,
        step: &str,
        path: &str,
        message: &str,
        timeout: Duration,
    ) -> Result<(), Stop> {
        let store = self.engine.store();
        let tenant = self.tenant.id;
        let arguments =
            json!({ "run": self.run.to_string(), "step": step, "message": message }).to_string();
        let hash = hex_digest(&arguments);
        let expires_at = Timestamp::from_millis(
            store.now().as_millis().saturating_add(timeout.as_millis() as i64),
        );
        let audit = AuditEntry {
            tenant,
            agent: Some(self.agent),
            kind: AuditKind::ApprovalRequested,
            tool: Some("flow.approval".into()),
            decision: Some(ApprovalStatus::Pending.as_str().into()),
            detail: json!({ "run": self.run.to_string(), "step": step }).to_string(),
        };
        let asked = store
            .request_approval(
                NewApproval {
                    tenant,
                    agent: self.agent,
                    call_key: format!("flow:{}:{path}", self.run),
                    call: None,
                    tool: "flow.approval".into(),
                    resource: self.flow.name.clone(),
                    arguments,
                    arguments_hash: hash,
                    reason: message.to_owned(),
                    session: None,
                    turn: None,
                    expires_at,
                },
                audit,
            )
            .await;
        let (approval, announced) = asked.map_err(|e| Stop::Halted(Arc::new(e.into())))?;
        self.engine.hub().publish_aside(self.agent, &announced);
        tracing::info!(run = %self.run, approval = %approval.id, step, "a flow run waits for approval");
        loop {
            let current = store
                .access(tenant)
                .approval(approval.id)
                .await
                .map_err(|e| Stop::Halted(Arc::new(e.into())))?;
            let note = current.note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
            match current.status {
                ApprovalStatus::Approved => return Ok(()),
                ApprovalStatus::Pending if store.now() < current.expires_at => {
                    store.clock().sleep(APPROVAL_POLL).await;
                }
                ApprovalStatus::Pending | ApprovalStatus::Expired => {
                    return Err(Stop::Failed(format!(
                        "approval {} was not given within {} s",
                        approval.id,
                        timeout.as_secs()
                    )));
                }
                status => {
                    return Err(Stop::Failed(format!(
                        "approval {} was {status}{note}",
                        approval.id
                    )));
                }
            }
        }
    }
}

fn hex_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn completed(task: &Task, mut result: TaskResult, output: Value) -> Outcome {
    result.status = TaskStatus::Completed;
    result.error = None;
    result.outputs = vec![output.clone()];
    result.output = output;
    Outcome::done(Results::from([(task.id.clone(), result)]))
}

/// Why an answer is not what its task's output schema asks.
#[derive(Debug, thiserror::Error)]
enum Mismatch {
    #[error("the answer is not JSON")]
    NotJson,
    #[error("{}", .0.join("; "))]
    Schema(Vec<String>),
}

/// The answer as the JSON value `validator` accepts, or why not. A JSON answer wrapped in a
/// code fence or some words is found inside them.
fn checked(validator: &jsonschema::Validator, answer: &str) -> Result<Value, Mismatch> {
    let trimmed = answer.trim();
    let inner = trimmed
        .find(['{', '['])
        .zip(trimmed.rfind(['}', ']']))
        .and_then(|(from, to)| trimmed.get(from..=to));
    let value = [Some(trimmed), inner]
        .into_iter()
        .flatten()
        .find_map(|text| serde_json::from_str::<Value>(text).ok())
        .ok_or(Mismatch::NotJson)?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .take(5)
        .map(|e| match e.instance_path().to_string() {
            path if path.is_empty() => e.to_string(),
            path => format!("at {path}: {e}"),
        })
        .collect();
    if errors.is_empty() { Ok(value) } else { Err(Mismatch::Schema(errors)) }
}

/// What an agent whose answer failed the schema is asked next.
fn correction(why: &str, schema: Option<&Value>) -> String {
    let schema = schema.map(Value::to_string).unwrap_or_default();
    format!(
        "Your answer did not satisfy the required JSON Schema ({why}). Answer again with only a JSON value that satisfies this schema, nothing else: {schema}"
    )
}

/// Every task of `step`, skipped.
fn skipped(step: &Step) -> Results {
    fn walk(step: &Step, out: &mut Results) {
        match &step.kind {
            StepKind::Task(id) => {
                out.insert(id.clone(), TaskResult::skipped());
            }
            StepKind::Sequential(steps)
            | StepKind::Parallel { steps, .. }
            | StepKind::Loop { steps, .. } => steps.iter().for_each(|s| walk(s, out)),
            StepKind::Condition { then, otherwise, .. } => {
                then.iter().chain(otherwise).for_each(|s| walk(s, out));
            }
            StepKind::Approval { .. } => {}
        }
    }
    let mut out = Results::new();
    walk(step, &mut out);
    out
}

/// What an ended step's execution recorded, as if it had just run.
fn replayed(row: &ExecutionRow) -> Outcome {
    let produced = row
        .output
        .as_deref()
        .and_then(|text| serde_json::from_str::<Recorded>(text).ok())
        .map(|recorded| recorded.tasks)
        .unwrap_or_default();
    match row.status {
        ExecutionStatus::Completed => Outcome::done(produced),
        _ => Outcome::failed(
            produced,
            row.error.clone().unwrap_or_else(|| format!("the step ended {}", row.status)),
        ),
    }
}
