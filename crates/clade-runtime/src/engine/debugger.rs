//! Step-through debugging: where a real turn pauses for a person. The executor reaches a
//! [`Checkpoint`] before each model call, before each tool call, and when either fails; when a
//! breakpoint of the turn's agent matches, or the person asked to step, the turn records a stop
//! and waits until it is told what to do ([`Told`]). A stop is in the store, keyed by its turn
//! and place, so a turn resumed after a restart finds it again: it waits again, or does what it
//! was told, and never asks twice. Waiting is not the turn's time (the actor's `Pause`).
//!
//! The engine keeps every breakpoint in memory, so a turn with none to match pays one read of an
//! empty list per step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use clade_core::{AgentId, BreakAt, BreakpointId, SessionId, StopAction, StopId, TenantId};
use clade_model::{ModelRequest, ToolCall};
use clade_store::{
    BreakpointRow, Debugging, NewBreakpoint, NewStop, StopDecision, StopRow, TurnRow,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::actor::{TURN_PAUSE, publish};
use super::executor::TurnError;
use super::{Engine, Inner};

/// How often a waiting stop reads itself again (told by another process).
const STOP_POLL: Duration = Duration::from_millis(500);
/// How old a cluster node's copy of the breakpoints may be.
const CLUSTER_REREAD: i64 = 2_000;
/// The longest an edit's arguments or a skip's result may be, in bytes.
const MAX_TOLD_BYTES: usize = 64 * 1024;
/// What a stop keeps of the context before a model call: past this, each message is cut.
const MAX_CONTEXT_BYTES: usize = 256 * 1024;
const CUT_MESSAGE_CHARS: usize = 4096;

/// A place in a turn where it may pause.
pub(crate) enum Checkpoint<'a> {
    BeforeModel { iteration: u32, request: &'a ModelRequest },
    BeforeTool { iteration: u32, index: u32, call: &'a ToolCall, args: &'a Value },
    ModelFailed { iteration: u32, error: &'a str },
    ToolFailed { iteration: u32, index: u32, call: &'a ToolCall, error: &'a str },
}

impl Checkpoint<'_> {
    /// Its place in the turn, as a stop is keyed.
    fn place(&self) -> String {
        match self {
            Self::BeforeModel { iteration, .. } => format!("model/{iteration}"),
            Self::BeforeTool { iteration, index, .. } => format!("tool/{iteration}/{index}"),
            Self::ModelFailed { iteration, .. } => format!("error/model/{iteration}"),
            Self::ToolFailed { iteration, index, .. } => format!("error/tool/{iteration}/{index}"),
        }
    }

    fn at(&self) -> BreakAt {
        match self {
            Self::BeforeModel { .. } => BreakAt::Model,
            Self::BeforeTool { .. } => BreakAt::Tool,
            Self::ModelFailed { .. } | Self::ToolFailed { .. } => BreakAt::Error,
        }
    }

    fn tool(&self) -> Option<&str> {
        match self {
            Self::BeforeTool { call, .. } | Self::ToolFailed { call, .. } => Some(&call.name),
            _ => None,
        }
    }

    /// Stepping pauses before the next call, not at an error.
    fn steppable(&self) -> bool {
        matches!(self, Self::BeforeModel { .. } | Self::BeforeTool { .. })
    }

    /// What a person sees of the turn there.
    fn detail(&self) -> String {
        let call = |call: &ToolCall, args: &Value| json!({ "id": call.id, "name": call.name, "arguments": args });
        let detail = match self {
            Self::BeforeModel { iteration, request } => {
                let mut messages = serde_json::to_value(&request.messages).unwrap_or(Value::Null);
                if messages.to_string().len() > MAX_CONTEXT_BYTES {
                    cut_texts(&mut messages);
                }
                json!({
                    "iteration": iteration,
                    "messages": messages,
                    "tools": request.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                })
            }
            Self::BeforeTool { iteration, index, call: c, args } => {
                json!({ "iteration": iteration, "index": index, "call": call(c, args) })
            }
            Self::ModelFailed { iteration, error } => {
                json!({ "iteration": iteration, "error": error })
            }
            Self::ToolFailed { iteration, index, call: c, error } => {
                let args = c.parse_arguments().unwrap_or(Value::Null);
                json!({ "iteration": iteration, "index": index, "call": call(c, &args), "error": error })
            }
        };
        detail.to_string()
    }
}

/// Cuts every text in `value` longer than [`CUT_MESSAGE_CHARS`], saying so.
fn cut_texts(value: &mut Value) {
    match value {
        Value::String(text) if text.chars().count() > CUT_MESSAGE_CHARS => {
            let kept: String = text.chars().take(CUT_MESSAGE_CHARS).collect();
            *text = format!("{kept}… [cut: {} bytes in all]", text.len());
        }
        Value::Array(items) => items.iter_mut().for_each(cut_texts),
        Value::Object(fields) => fields.values_mut().for_each(cut_texts),
        _ => {}
    }
}

/// What a paused turn was told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Told {
    /// Make the call as it is (continue or step).
    Go,
    /// Do not make the call: this stands for its result (a model call's: its answer).
    Skip(String),
    /// Make the tool call with these arguments.
    Edit(Value),
}

/// Where a turn may pause for a person.
pub(crate) trait Stops: Sync {
    fn checkpoint(
        &self,
        turn: &TurnRow,
        at: Checkpoint<'_>,
    ) -> impl Future<Output = Result<Told, TurnError>> + Send;
}

/// A turn that never pauses: a preview, and the executor's own tests.
pub(crate) struct NoStops;

impl Stops for NoStops {
    fn checkpoint(
        &self,
        _: &TurnRow,
        _: Checkpoint<'_>,
    ) -> impl Future<Output = Result<Told, TurnError>> + Send {
        std::future::ready(Ok(Told::Go))
    }
}

/// Every tenant's breakpoints, as the engine keeps them (a copy of the store's, read at start
/// and again after each change made through the engine), and what wakes waiting stops.
#[derive(Default)]
pub(super) struct Breakpoints {
    rows: RwLock<Arc<[BreakpointRow]>>,
    /// When `rows` were read: a cluster node reads them again once they are older than
    /// [`CLUSTER_REREAD`], since another node may have changed them.
    read_at: Mutex<Option<clade_core::Timestamp>>,
    decided: Notify,
}

impl Breakpoints {
    /// Reads the breakpoints again on a cluster node whose copy is old; a single node changes
    /// them only through its own engine, which reads them again at once.
    async fn refresh(&self, inner: &Inner) -> Result<(), clade_store::Error> {
        if !inner.store.shard_leases().by_shards() {
            return Ok(());
        }
        let now = inner.store.now();
        let fresh = self
            .read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| now.as_millis().saturating_sub(at.as_millis()) < CLUSTER_REREAD);
        if !fresh {
            self.replace(Debugging::every_breakpoint(&inner.store).await?, now);
        }
        Ok(())
    }

    fn replace(&self, rows: Vec<BreakpointRow>, at: clade_core::Timestamp) {
        *self.rows.write().unwrap_or_else(|e| e.into_inner()) = rows.into();
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Whether a breakpoint of `agent` pauses its `session` at `at` (before `tool`).
    fn pause(&self, agent: AgentId, session: SessionId, at: BreakAt, tool: Option<&str>) -> bool {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.iter().any(|b| b.agent == agent && b.matches(session, at, tool))
    }
}

/// A real turn's stops.
pub(super) struct TurnStops<'a> {
    inner: &'a Inner,
    tenant: TenantId,
    agent: AgentId,
    session: SessionId,
    /// The stops a resumed turn made before, by place, until it reaches them again.
    earlier: Mutex<HashMap<String, StopRow>>,
    /// The person said `step`: pause before the next call.
    stepping: std::sync::atomic::AtomicBool,
}

impl<'a> TurnStops<'a> {
    /// The stops of a turn; a resumed turn's earlier stops are read, and it steps on if its
    /// last stop was told to.
    pub(super) async fn of(
        inner: &'a Inner,
        (tenant, agent, session): (TenantId, AgentId, SessionId),
        resumed: Option<clade_core::TurnId>,
    ) -> Result<Self, TurnError> {
        let earlier = match resumed {
            Some(turn) => Debugging::of(&inner.store, tenant).stops_of_turn(turn).await?,
            None => Vec::new(),
        };
        let stepping = earlier.last().is_some_and(|s| s.action == Some(StopAction::Step));
        Ok(Self {
            inner,
            tenant,
            agent,
            session,
            earlier: Mutex::new(earlier.into_iter().map(|s| (s.place.clone(), s)).collect()),
            stepping: stepping.into(),
        })
    }

    /// Waits until `stop` is told what to do, reading it again at each decision made here and
    /// every [`STOP_POLL`] (one made by another process).
    async fn wait(&self, stop: StopRow) -> Result<StopRow, TurnError> {
        let _paused = TURN_PAUSE.try_with(|pause| pause.begin()).ok();
        let debugging = Debugging::of(&self.inner.store, self.tenant);
        loop {
            let decided = self.inner.breakpoints.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            let current = debugging.stop(stop.id).await?;
            if current.action.is_some() {
                return Ok(current);
            }
            tokio::select! {
                () = decided => {}
                () = self.inner.store.clock().sleep(STOP_POLL) => {}
            }
        }
    }

    fn told(&self, stop: &StopRow) -> Told {
        let data = || stop.action_data.as_deref().and_then(|d| serde_json::from_str(d).ok());
        let step = stop.action == Some(StopAction::Step);
        self.stepping.store(step, std::sync::atomic::Ordering::SeqCst);
        match stop.action {
            Some(StopAction::Skip) => match data() {
                Some(Value::String(text)) => Told::Skip(text),
                _ => Told::Skip(String::new()),
            },
            Some(StopAction::Edit) => match data() {
                Some(args @ Value::Object(_)) => Told::Edit(args),
                _ => Told::Go,
            },
            Some(StopAction::Continue | StopAction::Step) | None => Told::Go,
        }
    }
}

impl Stops for TurnStops<'_> {
    async fn checkpoint(&self, turn: &TurnRow, at: Checkpoint<'_>) -> Result<Told, TurnError> {
        let place = at.place();
        let earlier = self.earlier.lock().unwrap_or_else(|e| e.into_inner()).remove(&place);
        let stop = match earlier {
            Some(stop) => stop,
            None => {
                self.inner.breakpoints.refresh(self.inner).await?;
                let stepping =
                    at.steppable() && self.stepping.load(std::sync::atomic::Ordering::SeqCst);
                if !stepping
                    && !self.inner.breakpoints.pause(self.agent, self.session, at.at(), at.tool())
                {
                    return Ok(Told::Go);
                }
                let new = NewStop {
                    agent: self.agent,
                    session: self.session,
                    turn: turn.id,
                    place,
                    at: at.at(),
                    detail: at.detail(),
                };
                let (stop, announced) =
                    Debugging::of(&self.inner.store, self.tenant).open_stop(new).await?;
                publish(self.inner, self.agent, &announced);
                tracing::info!(stop = %stop.id, turn = %turn.id, place = %stop.place, "a turn paused at a breakpoint");
                stop
            }
        };
        let stop = if stop.action.is_some() { stop } else { self.wait(stop).await? };
        Ok(self.told(&stop))
    }
}

/// What a person tells a stop, as the API takes it.
#[derive(Debug, Clone)]
pub struct StopOrder {
    pub action: StopAction,
    /// With `edit`: the tool call's new arguments.
    pub arguments: Option<Value>,
    /// With `skip`: what stands for the call's result.
    pub result: Option<String>,
}

impl StopOrder {
    /// Checks the order against the stop it is for; the stored form of its data.
    fn data_for(&self, stop: &StopRow) -> Result<Option<String>, clade_store::Error> {
        let invalid = |text: String| Err(clade_store::Error::InvalidInput(text));
        let action = self.action.as_str();
        match (self.action, &self.arguments, &self.result) {
            (StopAction::Continue | StopAction::Step, None, None) => Ok(None),
            (StopAction::Continue | StopAction::Step, _, _) => {
                invalid(format!("`{action}` takes neither arguments nor a result"))
            }
            (StopAction::Edit, Some(_), _) if stop.at != BreakAt::Tool => invalid(format!(
                "only a stop before a tool call can be edited; this one is at {}: use skip with a result instead",
                stop.place
            )),
            (StopAction::Edit, Some(args @ Value::Object(_)), None) => {
                let text = args.to_string();
                if text.len() > MAX_TOLD_BYTES {
                    return invalid(format!("the arguments hold at most {MAX_TOLD_BYTES} bytes"));
                }
                Ok(Some(text))
            }
            (StopAction::Edit, _, _) => {
                invalid("`edit` takes `arguments`, a JSON object, and no result".into())
            }
            (StopAction::Skip, None, Some(result)) => {
                if result.len() > MAX_TOLD_BYTES {
                    return invalid(format!("the result holds at most {MAX_TOLD_BYTES} bytes"));
                }
                Ok(Some(Value::String(result.clone()).to_string()))
            }
            (StopAction::Skip, _, _) => invalid(
                "`skip` takes `result`, the text that stands for the call's, and no arguments"
                    .into(),
            ),
        }
    }
}

impl Engine {
    /// Reads every breakpoint again from the store.
    pub async fn reload_breakpoints(&self) -> Result<(), clade_store::Error> {
        let now = self.inner.store.now();
        self.inner.breakpoints.replace(Debugging::every_breakpoint(&self.inner.store).await?, now);
        Ok(())
    }

    /// Sets a breakpoint; the agent's next steps pause at it.
    pub async fn set_breakpoint(
        &self,
        tenant: TenantId,
        new: NewBreakpoint,
    ) -> Result<BreakpointRow, clade_store::Error> {
        let row = Debugging::of(&self.inner.store, tenant).set_breakpoint(new).await?;
        self.reload_breakpoints().await?;
        Ok(row)
    }

    /// Removes a breakpoint; turns paused at it stay paused until told.
    pub async fn remove_breakpoint(
        &self,
        tenant: TenantId,
        id: BreakpointId,
    ) -> Result<BreakpointRow, clade_store::Error> {
        let row = Debugging::of(&self.inner.store, tenant).remove_breakpoint(id).await?;
        self.reload_breakpoints().await?;
        Ok(row)
    }

    /// Tells a waiting stop what to do, `by` whom; the turn goes on at once.
    pub async fn decide_stop(
        &self,
        tenant: TenantId,
        id: StopId,
        order: StopOrder,
        by: &str,
    ) -> Result<StopRow, clade_store::Error> {
        let debugging = Debugging::of(&self.inner.store, tenant);
        let stop = debugging.stop(id).await?;
        let data = order.data_for(&stop)?;
        let decision = StopDecision { action: order.action, data, by: by.to_owned() };
        let (row, announced) = debugging.decide_stop(id, decision).await?;
        publish(&self.inner, row.agent, &announced);
        self.inner.breakpoints.decided.notify_waiters();
        Ok(row)
    }
}
