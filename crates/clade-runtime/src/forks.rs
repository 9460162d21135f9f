//! Branches and workers, started by the tools a channel's model calls: `agent.branch` forks the
//! conversation's context to think about one task in parallel, `agent.spawn_worker` starts a
//! fresh context with a task and tools of its own (or tells a worker more), `agent.cancel`
//! stops either, and `worker.set_status` is how a worker reports progress into the status block
//! its channel's context shows. None of them waits: the outcome arrives in the conversation as
//! a message of its own when the branch or worker is done (see `clade_store::forks`).
//!
//! Each tool is keyed by its call's idempotency key, so a call run again after a crash finds
//! what it started; each acts only on the calling agent's own forks.

use clade_core::{ExecutionId, ExecutionKind, SessionId};
use clade_store::{ForkRow, NewFork};
use clade_tools::{CallContext, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use crate::messaging::Postbox;

/// The tools that start or stop forks: a branch or worker has none of them.
pub const STARTERS: [&str; 3] = ["agent.branch", "agent.spawn_worker", "agent.cancel"];
/// The tool only a worker has.
pub const SET_STATUS: &str = "worker.set_status";

/// Registers `agent.branch`, `agent.spawn_worker`, `agent.cancel` and `worker.set_status`.
pub fn register(registry: &mut Registry, postbox: Postbox) {
    registry.register(Arc::new(AgentBranch(postbox.clone())));
    registry.register(Arc::new(AgentSpawnWorker(postbox.clone())));
    registry.register(Arc::new(AgentCancel(postbox.clone())));
    registry.register(Arc::new(WorkerSetStatus(postbox)));
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchArgs {
    /// What the branch is to think through. It sees this conversation so far.
    pub task: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerArgs {
    /// The worker's task (or, with `worker`, what you tell a worker you started).
    pub task: String,
    /// The tools it may use, by name; all of yours when absent.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// A worker you started, to tell it more: it goes on in the same context.
    #[serde(default)]
    pub worker: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelArgs {
    /// The branch's or worker's id (or its run's execution id).
    pub id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// One line on how the task is getting on (at most 512 bytes).
    pub status: String,
}

/// What a start tool returns: the fork's id, its run, and what happens next.
fn started(fork: &ForkRow, note: &str) -> String {
    serde_json::json!({
        "id": fork.session.to_string(),
        "execution": fork.execution.to_string(),
        "kind": fork.kind.as_str(),
        "status": fork.status.as_str(),
        "note": note,
    })
    .to_string()
}

/// The calling session, and that it may start forks: a turn's, of a channel.
fn parent_session(ctx: &CallContext) -> Result<(clade_tools::Caller, SessionId), Error> {
    let caller = ctx.caller()?;
    let session = caller.session.ok_or_else(|| {
        "branches and workers belong to a conversation, and this call comes from none".to_owned()
    })?;
    Ok((caller, session))
}

/// Starts a branch or worker for the calling conversation, within its kind's limit.
async fn start(
    engine: &crate::engine::Engine,
    ctx: &CallContext,
    kind: ExecutionKind,
    task: String,
    tools: Vec<String>,
) -> ToolResult {
    let (caller, session) = parent_session(ctx)?;
    let sessions = &engine.settings().sessions;
    let (limits, note) = match kind {
        ExecutionKind::Branch => (
            sessions.branch_limits(),
            "The branch thinks in parallel; its conclusion arrives in this conversation as a message. Go on meanwhile.",
        ),
        _ => (
            sessions.worker_limits(),
            "The worker runs on its own; its progress shows in your status block and its report arrives in this conversation as a message. Go on meanwhile.",
        ),
    };
    let forked = engine
        .fork(NewFork {
            tenant: caller.tenant,
            agent: caller.agent,
            kind,
            parent_session: session,
            parent_turn: caller.turn,
            task,
            tools,
            key: ctx.idempotency_key.clone(),
            max_running: limits.max_per_session,
        })
        .await
        .map_err(store_error)?;
    Ok(started(&forked.fork, note))
}

fn store_error(err: crate::engine::Error) -> String {
    err.to_string()
}

pub struct AgentBranch(Postbox);

impl TypedTool for AgentBranch {
    type Args = BranchArgs;
    const NAME: &'static str = "agent.branch";
    const DESCRIPTION: &'static str = "Fork this conversation to think about one task in parallel: the branch sees the conversation so far, and its conclusion arrives here as a message when it is done. You do not wait: go on answering meanwhile.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn run<'a>(&'a self, args: BranchArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            start(&engine, ctx, ExecutionKind::Branch, args.task, Vec::new()).await
        })
    }
}

pub struct AgentSpawnWorker(Postbox);

impl TypedTool for AgentSpawnWorker {
    type Args = WorkerArgs;
    const NAME: &'static str = "agent.spawn_worker";
    const DESCRIPTION: &'static str = "Start a worker: a fresh context that carries out a task with the tools you give it (all of yours by default), reports progress into your status block, and sends its report here as a message when done. With `worker`, tell a worker you started more: it goes on where it was. You do not wait.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn run<'a>(&'a self, args: WorkerArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let (caller, session) = parent_session(ctx)?;
            if let Some(worker) = &args.worker {
                if args.tools.is_some() {
                    return Err(Error::failed(
                        "tools: a worker keeps the tools it started with; leave `tools` out when telling it more",
                    ));
                }
                let fork: SessionId = worker
                    .trim()
                    .parse()
                    .map_err(|_| format!("worker: {worker:?} is not a worker's id"))?;
                let forked = engine
                    .continue_worker(
                        caller.tenant,
                        fork,
                        session,
                        args.task,
                        ctx.idempotency_key.clone(),
                    )
                    .await
                    .map_err(store_error)?;
                return Ok(started(
                    &forked.fork,
                    "The worker takes this in the context it has; its report arrives in this conversation as a message.",
                ));
            }
            let tools = args.tools.unwrap_or_default();
            start(&engine, ctx, ExecutionKind::Worker, args.task, tools).await
        })
    }
}

pub struct AgentCancel(Postbox);

impl TypedTool for AgentCancel {
    type Args = CancelArgs;
    const NAME: &'static str = "agent.cancel";
    const DESCRIPTION: &'static str =
        "Cancel a branch or worker you started: it stops, and nothing it concludes arrives.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn run<'a>(&'a self, args: CancelArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let caller = ctx.caller()?;
            let id: SessionId = args
                .id
                .trim()
                .parse()
                .map_err(|_| format!("id: {:?} is not a branch's or worker's id", args.id))?;
            let store = engine.store();
            let fork = match store.forks(caller.tenant).get(id).await.map_err(Error::relied)? {
                Some(fork) => Some(fork),
                None => store
                    .forks(caller.tenant)
                    .of_execution(ExecutionId::from_bytes(*id.as_bytes()))
                    .await
                    .map_err(Error::relied)?,
            };
            // Another agent's fork reads as a missing one.
            let fork = fork
                .filter(|f| f.agent == caller.agent)
                .ok_or_else(|| format!("you started no branch or worker {}", args.id.trim()))?;
            let (fork, changed) = engine
                .cancel_run(caller.tenant, *fork.session.as_bytes())
                .await
                .map_err(store_error)?;
            Ok(if changed {
                format!("cancelled {} {}", fork.kind, fork.session)
            } else {
                format!("{} {} had ended already ({})", fork.kind, fork.session, fork.status)
            })
        })
    }
}

pub struct WorkerSetStatus(Postbox);

impl TypedTool for WorkerSetStatus {
    type Args = StatusArgs;
    const NAME: &'static str = SET_STATUS;
    const DESCRIPTION: &'static str = "Say how your task is getting on, in one line: the conversation that started you sees it while you work.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn run<'a>(&'a self, args: StatusArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let engine = self.0.engine()?;
            let caller = ctx.caller()?;
            let session =
                caller.session.ok_or_else(|| "only a worker sets a status line".to_owned())?;
            let fork = engine
                .set_progress(caller.tenant, session, args.status)
                .await
                .map_err(store_error)?;
            Ok(format!("status set; the worker {} is {}", fork.session, fork.status))
        })
    }
}
