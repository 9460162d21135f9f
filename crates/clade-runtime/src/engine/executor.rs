//! The turn executor: one turn as an explicit state machine (compose the context, call the
//! model, dispatch its tool calls, settle the outcome), written against three seams so that it
//! knows nothing of actors, the store or providers:
//!
//! - [`Journal`]: where each step is written, atomically with its lifecycle events, usage and
//!   audit record. The engine's journal is the store; tests use memory.
//! - [`Thinker`]: the model route for the turn's [`ProcessKind`].
//! - [`Hands`]: the agent's tools (policy, approval, sandbox and audit stay behind it).
//!
//! Context comes from [`ContextSource`]s. A step found in the journal is replayed, never
//! redone; an `AtMostOnce` tool call that started without a recorded result is reported as
//! interrupted instead of run again. Adding a process kind means giving it a route and limits
//! here, not a new loop.

use std::collections::HashMap;
use std::sync::Arc;

use clade_core::{ProcessKind, StepKey, TurnStatus};
use clade_model::{CallError, CallOutcome, Message, ModelRequest, StreamEvent, ToolCall, ToolSpec};
use clade_protocol::LifecycleEvent;
use clade_store::{
    AuditEntry, EventRow, JournalEntry, OutboxEvent, TurnOutcome, TurnRow, UsageRecord,
};
use clade_tools::EffectClass;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::{Composed, ContextSource, TurnInput};
use super::debugger::{Checkpoint, Stops, Told};

/// One atomic write of a turn: a step (or none), what it announces, and, when it ends the
/// turn, the outcome. The turn's first write also commits the turn itself and takes its events.
#[derive(Debug, Default)]
pub(crate) struct Write {
    pub step: Option<JournalEntry>,
    pub usage: Option<UsageRecord>,
    pub audit: Option<AuditEntry>,
    pub outbox: Vec<OutboxEvent>,
    pub ending: Option<TurnOutcome>,
}

/// Why a turn stopped before it settled: the events it took are failed with it, and it is
/// logged. What the model is told (a refused or failed tool call) is a step of the turn, not
/// this.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TurnError {
    /// The store could not read or write the turn.
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    /// Something the code holds true did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("cancelled by request")]
    Cancelled,
    /// The branch or worker this turn runs was cancelled before it started.
    #[error("this {kind} was cancelled")]
    ForkCancelled { kind: String },
    #[error(
        "the turn did not finish within {secs} s ({setting}; time waiting for approvals not counted)"
    )]
    TimedOut { secs: u64, setting: String },
}

/// Where a turn's steps are written.
pub(crate) trait Journal: Send + Sync {
    /// Commits `write` atomically; `Err` names why it could not be.
    fn write(
        &mut self,
        turn: &TurnRow,
        write: Write,
    ) -> impl Future<Output = Result<(), TurnError>> + Send;

    /// Streams an event to live subscribers only (text deltas; the start of a turn that is
    /// not committed yet).
    /// Passes a live-only event (or a lifecycle event ahead of its commit) to subscribers.
    fn live(&self, turn: &TurnRow, event: &LifecycleEvent);

    /// Steer mode: messages that arrived since the turn started, now joined to it.
    fn steer(&mut self, turn: &TurnRow) -> impl Future<Output = Vec<String>> + Send;
}

/// The model route a turn calls.
pub(crate) trait Thinker: Sync {
    fn call(
        &self,
        kind: ProcessKind,
        request: &ModelRequest,
        on_event: &mut (dyn FnMut(&StreamEvent) + Send),
    ) -> impl Future<Output = Result<CallOutcome, CallError>> + Send;

    /// The usage record of a call this turn made.
    fn usage(&self, turn: &TurnRow, outcome: &CallOutcome) -> UsageRecord;
}

/// The tools a turn's agent may call.
pub(crate) trait Hands: Sync {
    type Tool: Send + Sync;
    type Authorized: Send + Sync;

    /// Every tool the agent has, as offered to the model, and a digest of all tools' schemas.
    fn specs(&self) -> Arc<[ToolSpec]>;
    /// A call returned `is_error` (counted for metrics; replayed results are not).
    fn returned(&self, _name: &str, _is_error: bool) {}
    fn specs_digest(&self) -> &str;

    /// The agent's tool of that name.
    fn find(&self, name: &str) -> Option<Self::Tool>;
    fn effect(&self, tool: &Self::Tool) -> EffectClass;

    /// What a call of a tool the agent does not have gets back (the attempt is audited).
    fn unknown(
        &self,
        call: &ToolCall,
        args: &Value,
        key: &str,
        turn: &TurnRow,
    ) -> impl Future<Output = String> + Send;

    /// Policy and approval; `Err` is what the model is told.
    fn authorize(
        &self,
        tool: &Self::Tool,
        call: &ToolCall,
        args: &Value,
        key: &str,
        turn: &TurnRow,
    ) -> impl Future<Output = Result<Self::Authorized, clade_tools::Error>> + Send;

    /// The decision's audit record, written with the call's start.
    fn audit(&self, authorized: &Self::Authorized) -> AuditEntry;

    /// Writes the decision's audit record alone (a resumed idempotent call).
    fn record_decision(
        &self,
        authorized: &Self::Authorized,
    ) -> impl Future<Output = Result<(), clade_tools::Error>> + Send;

    fn execute(
        &self,
        tool: &Self::Tool,
        args: Value,
        authorized: &Self::Authorized,
    ) -> impl Future<Output = Result<String, clade_tools::Error>> + Send;

    /// Reaches the failpoint `name` (see [`crate::failpoints`]): the engine's own.
    fn reached(&self, _name: &str) {}
}

/// What a turn runs on and how far it may go.
pub(crate) struct TurnPlan<'a> {
    pub kind: ProcessKind,
    pub turn: TurnRow,
    /// Steps already journaled (a resumed turn), by key.
    pub done: HashMap<StepKey, JournalEntry>,
    /// The events the turn answers.
    pub events: &'a [EventRow],
    /// Model calls per run; each resume of a yielded turn grants as many again.
    pub max_iterations: u32,
    /// A fork's share of the spending: the tokens one of its turns may spend, and the setting
    /// that says so; each resume grants as many again.
    pub max_tokens: Option<(u64, &'static str)>,
    /// Whether messages arriving mid-turn join it between tool calls.
    pub steer: bool,
    /// What a yielded turn's error says to do.
    pub resume_hint: String,
    /// The model's budget for tool schemas, in tokens ([`super::catalogue::offer`]).
    pub tool_tokens: u32,
    /// The longest answer a call asks for (the model's `max_tokens`).
    pub answer_tokens: u32,
}

/// What a model step produced, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ModelStep {
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub route: Vec<String>,
    /// Messages in the request.
    #[serde(default)]
    pub messages: usize,
    /// The request as sent: a SHA-256 of its JSON form (see [`fingerprint`]), and the tools it
    /// offered. Its content is what the journal, the session's events and the config revision
    /// already hold, so only its fingerprint is kept, not a copy of the whole context per step.
    #[serde(default)]
    pub request_sha256: String,
    #[serde(default)]
    pub tools: Vec<String>,
}

/// A tool result, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ToolStep {
    pub content: String,
    pub is_error: bool,
}

impl ToolStep {
    /// A call that failed or was refused, as its model is told.
    fn failed(call: &ToolCall, error: &clade_tools::Error) -> Self {
        Self { content: error.told(&call.name), is_error: true }
    }
}

/// A journal entry that does not read as its kind (a damaged or foreign row).
#[derive(Debug, thiserror::Error)]
#[error("journal step {step} does not read: {source}")]
pub struct UnreadableStep {
    pub step: StepKey,
    #[source]
    pub source: serde_json::Error,
}

/// A journal step as the API shows it: the typed view of the engine's own encoding.
pub fn step_view(entry: &JournalEntry) -> Result<clade_protocol::TurnStep, UnreadableStep> {
    use clade_protocol::TurnStep;
    let unreadable = |source: serde_json::Error| UnreadableStep { step: entry.step, source };
    let step = entry.step.to_string();
    Ok(match entry.step {
        StepKey::Model { iteration } => {
            let model: ModelStep = serde_json::from_str(&entry.data).map_err(unreadable)?;
            TurnStep::ModelResponse {
                step,
                iteration,
                model: model.model,
                text: model.text,
                tool_calls: model
                    .tool_calls
                    .into_iter()
                    .map(|c| clade_protocol::ModelToolCall {
                        id: c.id,
                        name: c.name,
                        arguments: c.arguments,
                    })
                    .collect(),
                input_tokens: model.input_tokens,
                output_tokens: model.output_tokens,
                cost_micros: model.cost_micros,
                route: model.route,
                messages: model.messages as u64,
                request_sha256: model.request_sha256,
                tools: model.tools,
            }
        }
        StepKey::ToolStart { iteration, index } => {
            let called: clade_protocol::ToolCalled =
                serde_json::from_str(&entry.data).map_err(unreadable)?;
            TurnStep::ToolStarted {
                step,
                iteration,
                index,
                call: called.call,
                name: called.name,
                arguments: called.arguments,
                effect: called.effect,
                key: called.key,
            }
        }
        StepKey::ToolResult { iteration, index } => {
            let result: ToolStep = serde_json::from_str(&entry.data).map_err(unreadable)?;
            TurnStep::ToolResult {
                step,
                iteration,
                index,
                content: result.content,
                is_error: result.is_error,
            }
        }
        StepKey::Resume { n } => TurnStep::Resumed { step, n },
    })
}

/// Where the state machine stands.
enum State {
    Compose,
    CallModel { iteration: u32 },
    Dispatch { iteration: u32, step: ModelStep, index: usize },
    Settle { step: Option<(JournalEntry, UsageRecord)>, ending: Ending },
}

/// How a turn ends.
struct Ending {
    status: TurnStatus,
    reply: Option<String>,
    error: Option<String>,
}

/// Runs (or resumes) one turn to its end. `Err` carries the reason it failed before it could
/// record an outcome itself (a write that did not commit).
pub(crate) async fn execute(
    plan: TurnPlan<'_>,
    journal: &mut impl Journal,
    thinker: &impl Thinker,
    (hands, stops): (&impl Hands, &impl Stops),
    sources: &mut [&mut dyn ContextSource],
) -> Result<(), TurnError> {
    let TurnPlan {
        kind,
        turn,
        done,
        events,
        max_iterations,
        max_tokens,
        steer,
        resume_hint,
        tool_tokens,
        answer_tokens,
    } = plan;
    let resumes = done.keys().filter(|k| matches!(k, StepKey::Resume { .. })).count() as u32;
    let budget = max_iterations.saturating_mul(resumes + 1);
    let token_cap =
        max_tokens.map(|(cap, name)| (cap.saturating_mul(u64::from(resumes) + 1), name));
    let mut spent = 0u64;
    let tools = hands.specs();
    let mut messages = Vec::new();
    // How many of the messages the context sources composed (the turn's own follow them), and
    // whether they were already asked to shrink after a too-long prompt.
    let mut composed = 0;
    let mut shrunk = false;
    let mut last_model = None;
    // Workspace files the reply carries (`reply.attach`): rebuilt from the journal on a resume.
    let mut files: Vec<clade_protocol::ReplyFile> = Vec::new();
    let mut state = State::Compose;
    loop {
        state = match state {
            State::Compose => {
                let input = TurnInput { turn: &turn, events, resumed: resumes > 0 };
                messages = compose(&input, sources).await;
                composed = messages.len();
                State::CallModel { iteration: 0 }
            }
            State::CallModel { iteration } if iteration >= budget => State::Settle {
                step: None,
                ending: Ending {
                    status: TurnStatus::Yielded,
                    reply: None,
                    error: Some(format!(
                        "stopped after {budget} model calls (sessions.max_iterations is {max_iterations} per run); {resume_hint}"
                    )),
                },
            },
            State::CallModel { .. } if token_cap.is_some_and(|(cap, _)| spent >= cap) => {
                let (cap, name) = token_cap.unwrap_or_default();
                State::Settle {
                    step: None,
                    ending: Ending {
                        status: TurnStatus::Yielded,
                        reply: None,
                        error: Some(format!(
                            "used its share of the spending: {spent} of {cap} tokens ({name} per turn); {resume_hint}"
                        )),
                    },
                }
            }
            State::CallModel { iteration } => {
                let step = StepKey::Model { iteration };
                match done.get(&step).and_then(|e| serde_json::from_str::<ModelStep>(&e.data).ok())
                {
                    None => {
                        // The tools this call offers: what the turn's own messages point at.
                        let own = composed.saturating_sub(events.len()).min(messages.len());
                        let said = super::catalogue::turn_texts(&messages[own..]);
                        let offered = super::catalogue::offer(&tools, &said, tool_tokens);
                        let request = ModelRequest {
                            // The context goes into the request and comes back after the call:
                            // it is a turn's largest value, so it is not copied per call.
                            messages: std::mem::take(&mut messages),
                            tools: offered.into(),
                            params: clade_model::Params {
                                max_tokens: answer_tokens,
                                ..clade_model::Params::default()
                            },
                            cache_scope: Some(turn.tenant_id.to_string()),
                        };
                        let paused = Checkpoint::BeforeModel { iteration, request: &request };
                        if let Told::Skip(answer) = stops.checkpoint(&turn, paused).await? {
                            // A person's answer stands for the model's: nothing is called.
                            messages = request.messages;
                            state = State::Settle { step: None, ending: Ending::reply(answer) };
                            continue;
                        }
                        let turn_id = turn.id.to_string();
                        let mut on_event = |event: &StreamEvent| {
                            if let StreamEvent::TextDelta(text) = event {
                                let delta = clade_protocol::TextDelta {
                                    turn: turn_id.clone(),
                                    text: text.clone(),
                                };
                                journal.live(&turn, &delta.into());
                            }
                        };
                        // Request and response are journaled together, once the response is
                        // in: a call that crashed before then is simply made again.
                        let called = thinker.call(kind, &request, &mut on_event).await;
                        let outcome = match called {
                            Ok(outcome) => outcome,
                            // The provider refused the prompt as too long: the sources shrink
                            // their part (the history is compacted) and the call is made once
                            // more, with the turn's own messages as they were.
                            Err(err)
                                if !shrunk
                                    && matches!(
                                        err.error,
                                        clade_model::Error::ContextTooLong { .. }
                                    ) =>
                            {
                                shrunk = true;
                                let refused = prompt_tokens(&request.messages);
                                let mut smaller = false;
                                for source in sources.iter_mut() {
                                    smaller |= source.shrink(refused).await;
                                }
                                if smaller {
                                    let own = request.messages.get(composed..).unwrap_or_default();
                                    let input =
                                        TurnInput { turn: &turn, events, resumed: resumes > 0 };
                                    messages = compose(&input, sources).await;
                                    composed = messages.len();
                                    messages.extend_from_slice(own);
                                    tracing::info!(turn = %turn.id, "the prompt was too long; retrying once with a compacted context");
                                    state = State::CallModel { iteration };
                                } else {
                                    let error = Some(call_failure(&turn, &err.error));
                                    let ending =
                                        Ending { status: TurnStatus::Failed, reply: None, error };
                                    state = State::Settle { step: None, ending };
                                }
                                continue;
                            }
                            Err(err) => {
                                let error = call_failure(&turn, &err.error);
                                let failed = Checkpoint::ModelFailed { iteration, error: &error };
                                let ending = match stops.checkpoint(&turn, failed).await? {
                                    Told::Skip(answer) => Ending::reply(answer),
                                    Told::Go | Told::Edit(_) => Ending {
                                        status: TurnStatus::Failed,
                                        reply: None,
                                        error: Some(error),
                                    },
                                };
                                state = State::Settle { step: None, ending };
                                continue;
                            }
                        };
                        let made = model_step(&outcome, &request, hands.specs_digest());
                        spent = spent.saturating_add(made.input_tokens + made.output_tokens);
                        messages = request.messages;
                        let entry = JournalEntry {
                            step,
                            data: serde_json::to_string(&made).unwrap_or_default(),
                        };
                        let usage = thinker.usage(&turn, &outcome);
                        messages.push(assistant(&made));
                        last_model = Some(made.model.clone());
                        if made.tool_calls.is_empty() {
                            // The last step commits with the outcome.
                            State::Settle {
                                step: Some((entry, usage)),
                                ending: Ending::reply(made.text),
                            }
                        } else {
                            // On disk before any of its calls runs.
                            let write =
                                Write { step: Some(entry), usage: Some(usage), ..Write::default() };
                            journal.write(&turn, write).await?;
                            State::Dispatch { iteration, step: made, index: 0 }
                        }
                    }
                    Some(replayed) => {
                        spent =
                            spent.saturating_add(replayed.input_tokens + replayed.output_tokens);
                        messages.push(assistant(&replayed));
                        last_model = Some(replayed.model.clone());
                        if replayed.tool_calls.is_empty() {
                            State::Settle { step: None, ending: Ending::reply(replayed.text) }
                        } else {
                            State::Dispatch { iteration, step: replayed, index: 0 }
                        }
                    }
                }
            }
            State::Dispatch { iteration, step, index } => match step.tool_calls.get(index) {
                Some(call) => {
                    let at = (iteration, index);
                    let mut result =
                        Box::pin(dispatch(&turn, &done, journal, (hands, stops), at, call)).await?;
                    if call.name == clade_tools::builtin::REPLY_ATTACH
                        && !result.is_error
                        && let Ok(file) =
                            serde_json::from_str::<clade_protocol::ReplyFile>(&result.content)
                    {
                        // Attached again: once, where it was last attached.
                        files.retain(|f| f.path != file.path);
                        if files.len() < clade_tools::builtin::MAX_REPLY_FILES {
                            files.push(file);
                        } else {
                            // Decided from the journal's results alone, so a resume says the same.
                            result.is_error = true;
                            result.content = format!(
                                "{} is not sent: a reply carries at most {} files",
                                file.path,
                                clade_tools::builtin::MAX_REPLY_FILES
                            );
                        }
                    }
                    messages.push(Message::Tool {
                        call_id: call.id.clone(),
                        content: result.content,
                        is_error: result.is_error,
                    });
                    State::Dispatch { iteration, step, index: index + 1 }
                }
                None => {
                    if steer {
                        messages.extend(journal.steer(&turn).await.into_iter().map(Message::user));
                    }
                    State::CallModel { iteration: iteration + 1 }
                }
            },
            State::Settle { step, ending } => {
                let Ending { status, reply, error } = ending;
                let (entry, usage) = step.map_or((None, None), |(e, u)| (Some(e), Some(u)));
                let outcome = TurnOutcome { status, reply, error, model: last_model };
                let write = Write {
                    step: entry,
                    usage,
                    audit: None,
                    outbox: vec![outcome_event(&turn, &outcome, std::mem::take(&mut files))],
                    ending: Some(outcome),
                };
                let reply = write.ending.as_ref().and_then(|o| o.reply.clone());
                journal.write(&turn, write).await?;
                if status == TurnStatus::Completed {
                    let reply = reply.unwrap_or_default();
                    for source in sources.iter_mut() {
                        source.completed(events, &reply);
                    }
                }
                return Ok(());
            }
        };
    }
}

impl Ending {
    fn reply(text: String) -> Self {
        Self { status: TurnStatus::Completed, reply: Some(text), error: None }
    }
}

fn assistant(step: &ModelStep) -> Message {
    Message::Assistant { text: step.text.clone(), tool_calls: step.tool_calls.clone() }
}

fn model_step(outcome: &CallOutcome, request: &ModelRequest, tools_sha256: &str) -> ModelStep {
    let usage = outcome.response.usage;
    ModelStep {
        model: outcome.model.clone(),
        text: outcome.response.text.clone(),
        tool_calls: outcome.response.tool_calls.clone(),
        input_tokens: usage.input_tokens + usage.cached_input_tokens,
        output_tokens: usage.output_tokens,
        cost_micros: outcome.cost_micros,
        route: outcome.events.iter().map(ToString::to_string).collect(),
        messages: request.messages.len(),
        request_sha256: fingerprint(request, tools_sha256),
        tools: request.tools.iter().map(|t| t.name.clone()).collect(),
    }
}

/// The lifecycle event that announces a turn's outcome.
/// The outbox event of a turn's end; only a completed turn's reply carries `files`.
pub(crate) fn outcome_event(
    turn: &TurnRow,
    outcome: &TurnOutcome,
    files: Vec<clade_protocol::ReplyFile>,
) -> OutboxEvent {
    let completed = outcome.status == TurnStatus::Completed;
    let ended = clade_protocol::LifecycleEvent::turn_ended(clade_protocol::TurnEnded {
        turn: turn.id.to_string(),
        status: outcome.status.into(),
        reply: outcome.reply.clone(),
        error: outcome.error.clone(),
        model: outcome.model.clone(),
        files: if completed { files } else { Vec::new() },
    });
    OutboxEvent::from(&ended)
}

/// What a turn whose model call failed says of it: the error's first line, with what to do
/// where the error alone does not say it. The whole error goes to the log.
fn call_failure(turn: &TurnRow, error: &clade_model::Error) -> String {
    tracing::warn!(turn = %turn.id, session = %turn.session_id, class = error.class(), error = %error, "a turn failed: its model call failed");
    let text = clade_model::error::public_text(&error.to_string());
    match error {
        clade_model::Error::ContextTooLong { .. } => format!(
            "{text}; even the shortest prompt (the persona, the message and the tools it needs) does not fit: shorten the message or the persona files, or route the agent to a model with a larger context_window"
        ),
        _ => text,
    }
}

/// About how many tokens `messages` are (one per 4 bytes of text).
fn prompt_tokens(messages: &[Message]) -> u32 {
    let bytes: usize = messages
        .iter()
        .map(|m| match m {
            Message::System { text } | Message::User { text } => text.len(),
            Message::Assistant { text, tool_calls } => {
                text.len()
                    + tool_calls.iter().map(|c| c.name.len() + c.arguments.len()).sum::<usize>()
            }
            Message::Tool { content, .. } => content.len(),
        })
        .sum();
    u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX)
}

/// The model's context: each source's part of the system prompt, in order, then the earlier
/// turns they hold, then this turn's messages.
async fn compose(input: &TurnInput<'_>, sources: &mut [&mut dyn ContextSource]) -> Vec<Message> {
    let mut composed = Composed::default();
    for source in sources.iter_mut() {
        source.contribute(input, &mut composed).await;
    }
    let Composed { system, history, working, recalled } = composed;
    let mut messages = Vec::with_capacity(2 + history.len() + input.events.len() + 1);
    messages.push(Message::system(system));
    messages.extend(history);
    // After the history, so the prompt's prefix stays the same from one turn to the next
    // (providers' prompt caches) however working memory and recall change.
    if !working.is_empty() {
        messages.push(Message::user(working));
    }
    if !recalled.is_empty() {
        messages.push(Message::user(recalled));
    }
    messages.extend(input.events.iter().map(|event| Message::user(event.text.clone())));
    messages
}

/// A tool call's place in its model call, as a step numbers it.
fn step_number(index: usize) -> Result<u32, TurnError> {
    u32::try_from(index)
        .map_err(|_| TurnError::Internal("more tool calls in one model call than a step numbers"))
}

/// Runs one tool call, or recovers its journaled outcome. An `AtMostOnce` call that started
/// but has no result is never run again: the model is told it was interrupted. A breakpoint
/// may pause the call before it runs (a person can then edit its arguments or skip it), or
/// after it failed.
async fn dispatch<H: Hands>(
    turn: &TurnRow,
    done: &HashMap<StepKey, JournalEntry>,
    journal: &mut impl Journal,
    (hands, stops): (&H, &impl Stops),
    (iteration, index): (u32, usize),
    call: &ToolCall,
) -> Result<ToolStep, TurnError> {
    let index = step_number(index)?;
    let result_step = StepKey::ToolResult { iteration, index };
    if let Some(replayed) =
        done.get(&result_step).and_then(|e| serde_json::from_str::<ToolStep>(&e.data).ok())
    {
        return Ok(replayed);
    }
    let start_step = StepKey::ToolStart { iteration, index };
    let key = effect_key(turn, &start_step);
    let mut result = match (hands.find(&call.name), call.parse_arguments()) {
        (None, args) => {
            let args = args.unwrap_or(Value::Null);
            ToolStep { content: hands.unknown(call, &args, &key, turn).await, is_error: true }
        }
        (Some(_), Err(message)) => ToolStep { content: message, is_error: true },
        (Some(tool), Ok(args)) => {
            let started_before = done.contains_key(&start_step);
            let effect = hands.effect(&tool);
            if started_before && effect == EffectClass::AtMostOnce {
                ToolStep {
                    content: format!(
                        "tool {} was interrupted by a restart; its outcome is unknown and it was not run again",
                        call.name
                    ),
                    is_error: true,
                }
            } else {
                let paused = Checkpoint::BeforeTool { iteration, index, call, args: &args };
                match stops.checkpoint(turn, paused).await? {
                    // What the person gave stands for the call's result: nothing runs.
                    Told::Skip(given) => ToolStep { content: given, is_error: false },
                    told => {
                        let args = if let Told::Edit(edited) = told { edited } else { args };
                        let call = Call { tool: &tool, call, args, key: &key, effect };
                        let start = (start_step, started_before);
                        Box::pin(run_call(turn, journal, hands, call, start)).await?
                    }
                }
            }
        }
    };
    if result.is_error {
        let failed = Checkpoint::ToolFailed { iteration, index, call, error: &result.content };
        if let Told::Skip(given) = stops.checkpoint(turn, failed).await? {
            result = ToolStep { content: given, is_error: false };
        }
    }
    hands.returned(&call.name, result.is_error);
    let returned = LifecycleEvent::from(clade_protocol::ToolReturned {
        call: call.id.clone(),
        name: call.name.clone(),
        content: result.content.clone(),
        is_error: result.is_error,
    });
    let write = Write {
        step: Some(JournalEntry {
            step: result_step,
            data: serde_json::to_string(&result).unwrap_or_default(),
        }),
        outbox: vec![OutboxEvent::from(&returned)],
        ..Write::default()
    };
    journal.write(turn, write).await?;
    Ok(result)
}

/// A tool call about to run.
struct Call<'a, T> {
    tool: &'a T,
    call: &'a ToolCall,
    args: Value,
    key: &'a str,
    effect: EffectClass,
}

/// Authorizes a tool call, journals its start with the decision's audit record (a resumed
/// idempotent call writes the record alone), and runs it.
async fn run_call<H: Hands>(
    turn: &TurnRow,
    journal: &mut impl Journal,
    hands: &H,
    Call { tool, call, args, key, effect }: Call<'_, H::Tool>,
    (start_step, started_before): (StepKey, bool),
) -> Result<ToolStep, TurnError> {
    let authorized = match hands.authorize(tool, call, &args, key, turn).await {
        Err(error) => return Ok(ToolStep::failed(call, &error)),
        Ok(authorized) => authorized,
    };
    let recorded = if started_before {
        hands.record_decision(&authorized).await
    } else {
        // The journal's start is the announcement's data: one encoding.
        let called = LifecycleEvent::from(clade_protocol::ToolCalled {
            call: call.id.clone(),
            name: call.name.clone(),
            arguments: args.clone(),
            effect: effect.as_str().to_owned(),
            key: key.to_owned(),
        });
        let announced = OutboxEvent::from(&called);
        let write = Write {
            step: Some(JournalEntry { step: start_step, data: announced.data.clone() }),
            audit: Some(hands.audit(&authorized)),
            outbox: vec![announced],
            ..Write::default()
        };
        journal.write(turn, write).await?;
        hands.reached("after_journal_intent");
        Ok(())
    };
    if let Err(error) = recorded {
        return Ok(ToolStep::failed(call, &error));
    }
    let result = match hands.execute(tool, args, &authorized).await {
        Ok(content) => ToolStep { content, is_error: false },
        Err(error) => ToolStep::failed(call, &error),
    };
    hands.reached("after_tool_effect_before_result");
    Ok(result)
}

/// SHA-256 of a model request's JSON, hashed as it is written out rather than from a copy.
/// Tools are stood for by their names and `tools_sha256`, the digest of every tool's name,
/// description and schema: the same tools give the same fingerprint, and their schemas are not
/// written out again for every call.
pub(crate) fn fingerprint(request: &ModelRequest, tools_sha256: &str) -> String {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    #[derive(Serialize)]
    struct Fingerprinted<'a> {
        messages: &'a [Message],
        tools: Vec<&'a str>,
        tools_sha256: &'a str,
        params: &'a clade_model::Params,
    }
    let fingerprinted = Fingerprinted {
        messages: &request.messages,
        tools: request.tools.iter().map(|t| t.name.as_str()).collect(),
        tools_sha256,
        params: &request.params,
    };
    // serde_json writes a value in many small pieces: they are gathered before hashing.
    let mut hashing = std::io::BufWriter::with_capacity(8 * 1024, Hashing(Sha256::new()));
    if serde_json::to_writer(&mut hashing, &fingerprinted).is_err() {
        return String::new();
    }
    match hashing.into_inner() {
        Ok(hashing) => hex::encode(hashing.0.finalize()),
        Err(_) => String::new(),
    }
}

/// `hash(tenant, session, turn, step)`: what an idempotent tool receives, the same on every
/// retry of the same call. The step (`tool/{iteration}/{index}`), not the model's call id, since
/// a provider may reuse call ids across the model calls of one turn.
fn effect_key(turn: &TurnRow, step: &StepKey) -> String {
    let call = step.call().unwrap_or_else(|| step.to_string());
    let digest = Sha256::new()
        .chain_update(turn.tenant_id.as_bytes())
        .chain_update(turn.session_id.as_bytes())
        .chain_update(turn.id.as_bytes())
        .chain_update(call.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// The executor alone, in process: a journal in memory, the scripted model, tools that count
/// their runs. Nothing here reads a clock or sleeps: every time the executor needs is given.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use clade_core::{
        AgentId, AuditKind, EventId, EventKind, EventStatus, SessionId, TenantId, Timestamp, TurnId,
    };
    use clade_model::{ModelResponse, Usage};
    use futures::future::BoxFuture;
    use serde_json::json;

    use super::*;

    const AT: Timestamp = Timestamp::from_millis(1_790_000_000_000);

    fn turn() -> TurnRow {
        TurnRow {
            id: TurnId::generate(AT),
            session_id: SessionId::generate(AT),
            tenant_id: TenantId::generate(AT),
            agent_id: AgentId::generate(AT),
            status: TurnStatus::Running,
            reply: None,
            error: None,
            model: None,
            config_revision: 0,
            started_at: AT,
            finished_at: None,
        }
    }

    fn event(turn: &TurnRow, text: &str) -> EventRow {
        EventRow {
            id: EventId::generate(AT),
            tenant_id: turn.tenant_id,
            session_id: turn.session_id,
            seq: 1,
            idempotency_key: String::new(),
            text: text.into(),
            status: EventStatus::Pending,
            turn_id: None,
            created_at: AT,
        }
    }

    /// What a write held, in a form tests compare.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Written {
        step: Option<StepKey>,
        /// The step's data, as journaled.
        data: Option<String>,
        audited: bool,
        outbox: Vec<EventKind>,
        ending: Option<TurnStatus>,
    }

    #[derive(Default)]
    struct MemoryJournal {
        writes: Vec<Written>,
        endings: Vec<TurnOutcome>,
        /// The write (0-based) that fails, as a crash or a full disk would.
        fail_at: Option<usize>,
        live: Mutex<Vec<EventKind>>,
        steered: Vec<String>,
    }

    impl Journal for MemoryJournal {
        async fn write(&mut self, _: &TurnRow, write: Write) -> Result<(), TurnError> {
            if self.fail_at == Some(self.writes.len()) {
                return Err(TurnError::Internal("disk full"));
            }
            self.writes.push(Written {
                step: write.step.as_ref().map(|e| e.step),
                data: write.step.map(|e| e.data),
                audited: write.audit.is_some(),
                outbox: write.outbox.iter().map(|e| e.kind).collect(),
                ending: write.ending.as_ref().map(|o| o.status),
            });
            self.endings.extend(write.ending);
            Ok(())
        }

        fn live(&self, _: &TurnRow, event: &LifecycleEvent) {
            self.live.lock().unwrap().push(event.kind());
        }

        async fn steer(&mut self, _: &TurnRow) -> Vec<String> {
            std::mem::take(&mut self.steered)
        }
    }

    /// The scripted model ([`clade_model::script`]), or one that always calls `echo`, or one
    /// that fails; it records each call's kind and first request.
    #[derive(Default)]
    struct Scripted {
        calls: AtomicU32,
        kinds: Mutex<Vec<ProcessKind>>,
        requests: Mutex<Vec<Vec<Message>>>,
        always_tools: bool,
        fail: bool,
    }

    impl Thinker for Scripted {
        async fn call(
            &self,
            kind: ProcessKind,
            request: &ModelRequest,
            on_event: &mut (dyn FnMut(&StreamEvent) + Send),
        ) -> Result<CallOutcome, CallError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.kinds.lock().unwrap().push(kind);
            self.requests.lock().unwrap().push(request.messages.clone());
            if self.fail {
                let error =
                    clade_model::Error::Overloaded { provider: "stub".into(), retry_after: None };
                return Err(CallError { error, events: Vec::new() });
            }
            let mut reply = clade_model::script::reply(&request.messages);
            if self.always_tools {
                reply.tool_calls =
                    vec![ToolCall { id: "c".into(), name: "echo".into(), arguments: "{}".into() }];
            }
            on_event(&StreamEvent::TextDelta(reply.text.clone()));
            let response = ModelResponse {
                text: reply.text,
                tool_calls: reply.tool_calls,
                usage: Usage { input_tokens: 3, output_tokens: 2, ..Usage::default() },
                stop_reason: None,
            };
            Ok(CallOutcome {
                model: "scripted".into(),
                response,
                cost_micros: 5,
                events: Vec::new(),
            })
        }

        fn usage(&self, turn: &TurnRow, outcome: &CallOutcome) -> UsageRecord {
            UsageRecord {
                tenant: turn.tenant_id,
                agent: Some(turn.agent_id),
                turn: Some(turn.id),
                model: outcome.model.clone(),
                input_tokens: 3,
                output_tokens: 2,
                cached_tokens: 0,
                cache_write_tokens: 0,
                cost_micros: outcome.cost_micros,
            }
        }
    }

    /// `echo` (idempotent) returns its arguments, `charge` must run at most once, `forbidden`
    /// is refused by policy; every other name is unknown.
    #[derive(Default)]
    struct Tools {
        runs: Mutex<Vec<String>>,
        decisions_alone: AtomicU32,
    }

    impl Hands for Tools {
        type Tool = &'static str;
        type Authorized = ();

        fn specs(&self) -> Arc<[ToolSpec]> {
            Arc::from(Vec::new())
        }
        fn specs_digest(&self) -> &str {
            "digest"
        }
        fn find(&self, name: &str) -> Option<&'static str> {
            ["echo", "charge", "forbidden"].into_iter().find(|known| *known == name)
        }
        fn effect(&self, tool: &&'static str) -> EffectClass {
            if *tool == "echo" { EffectClass::Idempotent } else { EffectClass::AtMostOnce }
        }
        async fn unknown(&self, call: &ToolCall, _: &Value, _: &str, _: &TurnRow) -> String {
            format!("unknown tool {}", call.name)
        }
        async fn authorize(
            &self,
            tool: &&'static str,
            _: &ToolCall,
            _: &Value,
            _: &str,
            _: &TurnRow,
        ) -> Result<(), clade_tools::Error> {
            if *tool == "forbidden" {
                Err(clade_tools::Error::Denied { reason: "by policy".into() })
            } else {
                Ok(())
            }
        }
        fn audit(&self, _: &()) -> AuditEntry {
            AuditEntry {
                tenant: TenantId::generate(AT),
                agent: None,
                kind: AuditKind::ToolDecision,
                tool: None,
                decision: None,
                detail: "{}".into(),
            }
        }
        async fn record_decision(&self, _: &()) -> Result<(), clade_tools::Error> {
            self.decisions_alone.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn execute(
            &self,
            tool: &&'static str,
            args: Value,
            _: &(),
        ) -> Result<String, clade_tools::Error> {
            self.runs.lock().unwrap().push((*tool).to_owned());
            Ok(format!("ran {tool} with {args}"))
        }
    }

    /// A fixed paragraph, and what it was told of completed turns.
    struct Note(&'static str, Vec<String>);

    impl ContextSource for Note {
        fn contribute<'a>(
            &'a mut self,
            _: &'a TurnInput<'a>,
            into: &'a mut Composed,
        ) -> BoxFuture<'a, ()> {
            into.system.push_str(self.0);
            Box::pin(async {})
        }
        fn completed(&mut self, _: &[EventRow], reply: &str) {
            self.1.push(reply.to_owned());
        }
    }

    fn entry(step: StepKey, data: impl Serialize) -> (StepKey, JournalEntry) {
        (step, JournalEntry { step, data: serde_json::to_string(&data).unwrap() })
    }

    fn model_calling(name: &str) -> ModelStep {
        ModelStep {
            model: "scripted".into(),
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "c0".into(),
                name: name.into(),
                arguments: "{}".into(),
            }],
            input_tokens: 1,
            output_tokens: 1,
            cost_micros: 0,
            route: Vec::new(),
            messages: 2,
            request_sha256: String::new(),
            tools: Vec::new(),
        }
    }

    /// One turn of `text` as `kind`, run on `journal` and `model`; `shape` adjusts its plan.
    struct Case {
        journal: MemoryJournal,
        model: Scripted,
        tools: Tools,
        note: Note,
        result: Result<(), TurnError>,
    }

    impl Case {
        async fn run(
            text: &str,
            kind: ProcessKind,
            journal: MemoryJournal,
            model: Scripted,
            shape: impl FnOnce(&mut TurnPlan<'_>),
        ) -> Self {
            let stops = super::super::debugger::NoStops;
            Self::run_with(text, (kind, journal, model), shape, &stops).await
        }

        /// [`Case::run`] with a person at the turn's breakpoints.
        async fn run_with(
            text: &str,
            (kind, mut journal, model): (ProcessKind, MemoryJournal, Scripted),
            shape: impl FnOnce(&mut TurnPlan<'_>),
            stops: &impl Stops,
        ) -> Self {
            let turn = turn();
            let events = [event(&turn, text)];
            let mut plan = TurnPlan {
                kind,
                turn: turn.clone(),
                done: HashMap::new(),
                events: &events,
                max_iterations: 4,
                max_tokens: None,
                steer: false,
                resume_hint: "resume it".into(),
                tool_tokens: 2000,
                answer_tokens: 1024,
            };
            shape(&mut plan);
            let (tools, mut note) = (Tools::default(), Note("persona", Vec::new()));
            let result = execute(
                plan,
                &mut journal,
                &model,
                (&tools, stops),
                &mut [&mut note as &mut dyn ContextSource],
            )
            .await;
            Self { journal, model, tools, note, result }
        }

        async fn plain(text: &str) -> Self {
            Self::run(
                text,
                ProcessKind::Channel,
                MemoryJournal::default(),
                Scripted::default(),
                |_| {},
            )
            .await
        }

        fn steps(&self) -> Vec<Option<StepKey>> {
            self.journal.writes.iter().map(|w| w.step).collect()
        }

        fn ending(&self) -> &TurnOutcome {
            &self.journal.endings[0]
        }

        fn runs(&self) -> Vec<String> {
            self.tools.runs.lock().unwrap().clone()
        }
    }

    /// A turn that resumes after model step 0 called `tool` and the call started.
    fn resumed_after_starting(tool: &str) -> impl FnOnce(&mut TurnPlan<'_>) {
        let model = model_calling(tool);
        move |plan| {
            plan.done = HashMap::from([
                entry(StepKey::Model { iteration: 0 }, model),
                entry(StepKey::ToolStart { iteration: 0, index: 0 }, json!({})),
            ]);
        }
    }

    #[tokio::test]
    async fn a_turn_calls_the_model_dispatches_its_tools_and_settles() {
        let text = "/tool echo {\"n\":1}\n/tool nope";
        let case = Case::plain(text).await;
        case.result.as_ref().unwrap();
        assert_eq!(
            case.steps(),
            [
                Some(StepKey::Model { iteration: 0 }),
                Some(StepKey::ToolStart { iteration: 0, index: 0 }),
                Some(StepKey::ToolResult { iteration: 0, index: 0 }),
                // The unknown tool never starts: only its result is journaled.
                Some(StepKey::ToolResult { iteration: 0, index: 1 }),
                Some(StepKey::Model { iteration: 1 }),
            ]
        );
        let writes = &case.journal.writes;
        // The decision's audit record commits with the call's start, and only there.
        let audited: Vec<_> = writes.iter().map(|w| w.audited).collect();
        assert_eq!(audited, [false, true, false, false, false]);
        assert_eq!(writes[1].outbox, [EventKind::ToolCalled]);
        assert_eq!(writes[4].outbox, [EventKind::TurnFinished]);
        assert_eq!(writes[4].ending, Some(TurnStatus::Completed));
        assert_eq!(case.runs(), ["echo"]);

        let reply = case.ending().reply.clone().unwrap();
        assert!(reply.contains("ran echo with {\"n\":1}"), "{reply}");
        assert!(reply.contains("unknown tool nope"), "{reply}");
        assert_eq!(case.ending().model.as_deref(), Some("scripted"));
        // Sources compose the system prompt and hear of the completed turn.
        let first = case.model.requests.lock().unwrap()[0].clone();
        assert_eq!(first, [Message::system("persona"), Message::user(text)]);
        assert_eq!(case.note.1, [reply]);
        assert_eq!(case.journal.live.lock().unwrap().len(), 2, "a text delta per model call");
    }

    #[tokio::test]
    async fn a_resumed_turn_replays_its_journal_and_never_reruns_an_at_most_once_call() {
        let (journal, model) = (MemoryJournal::default(), Scripted::default());
        let case = Case::run(
            "/tool charge",
            ProcessKind::Channel,
            journal,
            model,
            resumed_after_starting("charge"),
        )
        .await;
        assert!(case.runs().is_empty(), "the interrupted call ran again");
        assert_eq!(case.model.calls.load(Ordering::SeqCst), 1, "a journaled model step was redone");
        assert_eq!(
            case.steps(),
            [
                Some(StepKey::ToolResult { iteration: 0, index: 0 }),
                Some(StepKey::Model { iteration: 1 })
            ]
        );
        let reply = case.ending().reply.clone().unwrap();
        assert!(reply.contains("interrupted by a restart"), "{reply}");
    }

    #[tokio::test]
    async fn a_resumed_idempotent_call_runs_again_with_its_decision_recorded_alone() {
        let (journal, model) = (MemoryJournal::default(), Scripted::default());
        let case = Case::run(
            "/tool echo",
            ProcessKind::Channel,
            journal,
            model,
            resumed_after_starting("echo"),
        )
        .await;
        assert_eq!(case.runs(), ["echo"]);
        assert_eq!(case.tools.decisions_alone.load(Ordering::SeqCst), 1);
        assert!(case.journal.writes.iter().all(|w| !w.audited), "the start is written twice");
    }

    #[tokio::test]
    async fn a_failed_model_call_settles_the_turn_as_failed() {
        let model = Scripted { fail: true, ..Scripted::default() };
        let case =
            Case::run("hello", ProcessKind::Channel, MemoryJournal::default(), model, |_| {}).await;
        let failed = Written {
            step: None,
            data: None,
            audited: false,
            outbox: vec![EventKind::TurnFailed],
            ending: Some(TurnStatus::Failed),
        };
        assert_eq!(case.journal.writes, [failed]);
        assert!(case.ending().error.as_deref().unwrap().contains("overloaded"));
    }

    #[tokio::test]
    async fn a_turn_that_keeps_calling_tools_yields_after_its_budget() {
        let model = Scripted { always_tools: true, ..Scripted::default() };
        let case =
            Case::run("loop", ProcessKind::Channel, MemoryJournal::default(), model, |plan| {
                plan.max_iterations = 2;
            })
            .await;
        assert_eq!(case.model.calls.load(Ordering::SeqCst), 2);
        assert_eq!(case.ending().status, TurnStatus::Yielded);
        let error = case.ending().error.clone().unwrap();
        assert!(
            error.contains("stopped after 2 model calls") && error.contains("resume it"),
            "{error}"
        );
        assert_eq!(case.journal.writes.last().unwrap().outbox, [EventKind::TurnYielded]);
    }

    #[tokio::test]
    async fn a_fork_yields_once_it_spent_its_share_of_tokens() {
        // Each scripted call spends 5 tokens: 12 allow three calls, the third passing it.
        let model = Scripted { always_tools: true, ..Scripted::default() };
        let case =
            Case::run("loop", ProcessKind::Worker, MemoryJournal::default(), model, |plan| {
                plan.max_iterations = 10;
                plan.max_tokens = Some((12, "sessions.workers.max_tokens"));
            })
            .await;
        assert_eq!(case.model.calls.load(Ordering::SeqCst), 3);
        assert_eq!(case.ending().status, TurnStatus::Yielded);
        let error = case.ending().error.clone().unwrap();
        assert!(
            error.contains("15 of 12 tokens (sessions.workers.max_tokens per turn)")
                && error.contains("resume it"),
            "{error}"
        );
        // A share smaller than one call: that call is made, and the turn yields after it.
        let model = Scripted { always_tools: true, ..Scripted::default() };
        let case =
            Case::run("loop", ProcessKind::Worker, MemoryJournal::default(), model, |plan| {
                plan.max_tokens = Some((4, "sessions.workers.max_tokens"));
            })
            .await;
        assert_eq!(case.model.calls.load(Ordering::SeqCst), 1);
        assert_eq!(case.ending().status, TurnStatus::Yielded);
    }

    #[tokio::test]
    async fn a_write_that_fails_stops_the_turn_before_its_tool_runs() {
        // Write 1 is the call's start, with its decision's audit record.
        let journal = MemoryJournal { fail_at: Some(1), ..MemoryJournal::default() };
        let case =
            Case::run("/tool echo", ProcessKind::Channel, journal, Scripted::default(), |_| {})
                .await;
        assert_eq!(
            case.result.as_ref().map_err(ToString::to_string),
            Err("internal error: disk full".to_owned())
        );
        assert!(case.runs().is_empty(), "a call ran without its audit record");
    }

    #[tokio::test]
    async fn a_refused_call_tells_the_model_and_runs_nothing() {
        let case = Case::plain("/tool forbidden").await;
        assert!(case.runs().is_empty());
        assert!(case.ending().reply.as_deref().unwrap().contains("denied: by policy"));
        assert!(!case.steps().contains(&Some(StepKey::ToolStart { iteration: 0, index: 0 })));
    }

    #[tokio::test]
    async fn steering_adds_messages_between_tool_calls() {
        let journal =
            MemoryJournal { steered: vec!["also this".into()], ..MemoryJournal::default() };
        let case =
            Case::run("/tool echo", ProcessKind::Channel, journal, Scripted::default(), |plan| {
                plan.steer = true;
            })
            .await;
        let second = case.model.requests.lock().unwrap()[1].clone();
        assert_eq!(second.last(), Some(&Message::user("also this")));
    }

    /// The skeleton of a new process kind: a branch runs on the same executor, calling its
    /// own route; nothing in the executor names the kind.
    #[tokio::test]
    async fn another_process_kind_runs_on_the_same_executor_with_its_own_route() {
        let (journal, model) = (MemoryJournal::default(), Scripted::default());
        let case = Case::run("think about it", ProcessKind::Branch, journal, model, |_| {}).await;
        assert_eq!(*case.model.kinds.lock().unwrap(), [ProcessKind::Branch]);
        assert_eq!(case.ending().status, TurnStatus::Completed);
    }

    /// A person at every checkpoint, saying what `orders` say, in turn (then `Go`).
    struct Person {
        orders: Mutex<Vec<Told>>,
        reached: Mutex<Vec<String>>,
    }

    impl Stops for Person {
        async fn checkpoint(
            &self,
            _: &TurnRow,
            at: super::super::debugger::Checkpoint<'_>,
        ) -> Result<Told, TurnError> {
            use super::super::debugger::Checkpoint as C;
            self.reached.lock().unwrap().push(match at {
                C::BeforeModel { iteration, .. } => format!("model/{iteration}"),
                C::BeforeTool { iteration, index, .. } => format!("tool/{iteration}/{index}"),
                C::ModelFailed { iteration, .. } => format!("error/model/{iteration}"),
                C::ToolFailed { iteration, index, .. } => format!("error/tool/{iteration}/{index}"),
            });
            let mut orders = self.orders.lock().unwrap();
            Ok(if orders.is_empty() { Told::Go } else { orders.remove(0) })
        }
    }

    #[tokio::test]
    async fn a_person_edits_a_call_skips_another_and_answers_for_the_model() {
        let text = "/tool echo {\"n\":1}\n/tool echo {\"n\":2}\n/tool nope";
        let person = Person {
            orders: Mutex::new(vec![
                Told::Go,
                Told::Edit(json!({ "n": 10 })),
                Told::Skip("given".into()),
                Told::Skip("replaced".into()),
                Told::Skip("the person's answer".into()),
            ]),
            reached: Mutex::new(Vec::new()),
        };
        let parts = (ProcessKind::Channel, MemoryJournal::default(), Scripted::default());
        let case = Case::run_with(text, parts, |_| {}, &person).await;
        case.result.as_ref().unwrap();
        assert_eq!(
            *person.reached.lock().unwrap(),
            ["model/0", "tool/0/0", "tool/0/1", "error/tool/0/2", "model/1"],
            "an unknown tool has no call to pause before, only its error"
        );
        // The edited call ran with the person's arguments; the skipped one never ran.
        assert_eq!(case.runs(), ["echo"]);
        let data = |step: StepKey| {
            let written = case.journal.writes.iter().find(|w| w.step == Some(step)).unwrap();
            written.data.clone().unwrap()
        };
        let result = |index| data(StepKey::ToolResult { iteration: 0, index });
        assert!(data(StepKey::ToolStart { iteration: 0, index: 0 }).contains("10"));
        assert!(result(0).contains(r#"ran echo with {\"n\":10}"#), "{}", result(0));
        assert!(result(1).contains("\"given\"") && result(1).contains("\"is_error\":false"));
        assert!(result(2).contains("\"replaced\""), "{}", result(2));
        // The model answered once; the person answered for its second call.
        assert_eq!(case.ending().reply.as_deref(), Some("the person's answer"));
        assert_eq!(case.model.calls.load(Ordering::SeqCst), 1);
    }
}
