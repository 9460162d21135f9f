//! The agents' flow tools: `flow.start` starts a run of a stored flow of the calling agent's
//! tenant, `flow.status` reads a run of it. The tenant comes from the call, never from the
//! model's arguments, so an agent reaches only its own tenant's flows and runs. Both need a
//! grant or rule that allows them (for `flow.start`, the flow's name is the resource a rule
//! matches): a run drives other agents of the tenant, which an agent may not by default. A call's run id
//! is made from its idempotency key, so a call repeated after a crash finds the run it started.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use clade_core::ExecutionId;
use clade_tools::{CallContext, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::run::{RunError, RunInput, Runner, WeakRunner};
use crate::stored::StartStored;

/// The runner the tools start runs on, attached once it exists: the tool registry is built
/// before the engine, and the runner after it.
#[derive(Clone, Default)]
pub struct FlowTools(Arc<OnceLock<WeakRunner>>);

impl FlowTools {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets the tools start runs on `runner` (the first attached stays).
    pub fn attach(&self, runner: &Runner) {
        let _ = self.0.set(runner.downgrade());
    }

    fn runner(&self) -> Result<Runner, Error> {
        self.0
            .get()
            .and_then(WeakRunner::upgrade)
            .ok_or_else(|| Error::failed("flows run only in a serving gateway, and none runs here"))
    }
}

/// Registers `flow.start` and `flow.status`.
pub fn register(registry: &mut Registry, tools: FlowTools) {
    registry.register(Arc::new(FlowStart(tools.clone())));
    registry.register(Arc::new(FlowStatus(tools)));
}

fn refused(err: RunError) -> Error {
    match err {
        RunError::Store(store) => Error::relied(store),
        RunError::Unreadable(..) => Error::relied(err),
        other => Error::failed(other.to_string()),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// The stored flow's name.
    pub flow: String,
    /// The version to run; the newest if absent.
    #[serde(default)]
    pub version: Option<i64>,
    /// The flow's inputs by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
}

pub struct FlowStart(FlowTools);

/// The run a call starts: the same for every repeat of the call.
fn run_id_of(call: &CallContext) -> ExecutionId {
    let digest = Sha256::new()
        .chain_update(b"flow.start")
        .chain_update(call.idempotency_key.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    ExecutionId::from_bytes(id)
}

impl TypedTool for FlowStart {
    type Args = StartArgs;
    const NAME: &'static str = "flow.start";
    const DESCRIPTION: &'static str = "Start a run of one of your tenant's stored flows (a declared workflow of several agents) with its inputs; it runs in the background. Returns the run's id: read its progress with flow.status.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const NEEDS_GRANT: bool = true;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("flow");
    fn resource(&self, args: &StartArgs) -> Result<String, Error> {
        Ok(args.flow.clone())
    }
    fn run<'a>(&'a self, args: StartArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let runner = self.0.runner()?;
            let tenant =
                runner.store().tenants().by_id(caller.tenant).await.map_err(Error::relied)?;
            let start = StartStored {
                name: args.flow,
                version: args.version,
                inputs: args.inputs,
                id: Some(run_id_of(ctx)),
            };
            let row = runner.start_stored(&tenant, start).await.map_err(refused)?;
            let input = RunInput::of(&row).map_err(refused)?;
            Ok(json!({
                "run": row.id.to_string(),
                "flow": input.flow,
                "version": input.version,
                "status": row.status.as_str(),
            })
            .to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// The run's id, as flow.start returned it.
    pub run: String,
}

pub struct FlowStatus(FlowTools);

impl TypedTool for FlowStatus {
    type Args = StatusArgs;
    const NAME: &'static str = "flow.status";
    const DESCRIPTION: &'static str =
        "Where a flow run of your tenant stands: its status, and each task's status and output.";
    const EFFECT: EffectClass = EffectClass::Pure;
    // Tasks' outputs are other agents' answers: beyond the calling agent, as flow.start is.
    const NEEDS_GRANT: bool = true;
    fn run<'a>(&'a self, args: StatusArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let runner = self.0.runner()?;
            let id: ExecutionId = args
                .run
                .parse()
                .map_err(|_| Error::failed(format!("{:?} is not a flow run's id", args.run)))?;
            let row = runner.get(caller.tenant, id).await.map_err(refused)?;
            let results = runner.results(&row).map_err(refused)?;
            let tasks: serde_json::Map<String, Value> = results
                .into_iter()
                .map(|(task, result)| {
                    let status = clade_core::FlowTaskStatus::from(result.status);
                    let mut shown = json!({ "status": status.as_str(), "output": result.output });
                    if let Some(error) = result.error {
                        shown["error"] = error.into();
                    }
                    (task, shown)
                })
                .collect();
            Ok(json!({
                "run": row.id.to_string(),
                "status": row.status.as_str(),
                "error": row.error,
                "tasks": tasks,
            })
            .to_string())
        })
    }
}
