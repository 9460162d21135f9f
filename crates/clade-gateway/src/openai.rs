//! The OpenAI-compatible routes: `POST /v1/chat/completions` and `GET /v1/models`, so that
//! any OpenAI client reaches an agent unchanged (the wire types are `clade-protocol`'s
//! [`openai`](crate::api::openai)).
//!
//! The model name is the agent (`handle`, or `tenant/handle` for the operator). The gateway
//! keeps the conversation: a request's last message, the user's, becomes an event of the
//! agent, in the session its `X-Session-Id` header or its `user` field names, or else the one
//! its conversation's opening messages name (so a client that sends the whole history each
//! time stays in one session). The turn runs as any other, tools and all, and its answer comes
//! back whole or streamed as `chat.completion.chunk` events. Errors come in OpenAI's shape.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use clade_core::{Handle, Tenant, TurnStatus};
use clade_runtime::{Envelope, Finished};
use clade_store::Source;
use futures::stream;
use sha2::Digest as _;

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    Choice, ChunkChoice, ChunkDelta, CompletionUsage, ModelEntry, ModelList, OpenAiError,
    OpenAiErrorResponse,
};
use crate::auth::{Caller, Reach};
use crate::error::{ApiError, Code};

/// The platform of every event these routes accept.
pub(crate) const PLATFORM: &str = "openai";
/// The longest a request without `stream` waits for its turn.
const WAIT: Duration = Duration::from_secs(120);
/// The longest a stream stays open for its turn.
const STREAM_WAIT: Duration = Duration::from_secs(600);
/// Characters of the message sent, as `POST /v1/events` takes.
const MAX_TEXT: usize = 64 * 1024;
/// The roles a message may have (OpenAI's).
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];
/// Agents `GET /v1/models` lists at most.
const MAX_MODELS: u32 = 1_000;

/// An error in OpenAI's shape: the gateway's own, with the request field at fault when one is,
/// and OpenAI's code where it has one for the case.
pub(crate) struct OpenAiApiError {
    error: ApiError,
    param: Option<&'static str>,
    openai_code: Option<&'static str>,
}

impl OpenAiApiError {
    fn about(param: &'static str, message: impl Into<String>) -> Self {
        Self { param: Some(param), ..ApiError::new(Code::InvalidRequest, message).into() }
    }
}

impl From<ApiError> for OpenAiApiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None, openai_code: None }
    }
}

impl From<clade_store::Error> for OpenAiApiError {
    fn from(error: clade_store::Error) -> Self {
        ApiError::from(error).into()
    }
}

impl From<clade_runtime::engine::Error> for OpenAiApiError {
    fn from(error: clade_runtime::engine::Error) -> Self {
        ApiError::from(error).into()
    }
}

impl OpenAiApiError {
    fn body(&self) -> OpenAiErrorResponse {
        OpenAiErrorResponse {
            error: OpenAiError {
                message: self.error.message.clone(),
                kind: kind_of(self.error.code.status()).to_owned(),
                param: self.param.map(str::to_owned),
                code: Some(self.openai_code.unwrap_or(self.error.code.as_str()).to_owned()),
            },
        }
    }
}

impl IntoResponse for OpenAiApiError {
    fn into_response(self) -> Response {
        let status = self.error.code.status();
        let body = self.body();
        let error = self.error;
        // The gateway's own answer carries what OpenAI's clients read besides the body (the
        // status, `Retry-After`); only the body is replaced.
        let mut response = error.into_response();
        let headers = std::mem::take(response.headers_mut());
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(retry) = headers.get(axum::http::header::RETRY_AFTER) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry.clone());
        }
        response
    }
}

/// OpenAI's error `type` for a status.
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

/// `GET /v1/models`: the agents the token reaches, by handle.
pub(crate) async fn models(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<ModelList>, OpenAiApiError> {
    let (agents, _) =
        crate::agents::reachable_page(&state, &tenant, &reach, None, MAX_MODELS).await?;
    let data = agents
        .into_iter()
        .map(|agent| ModelEntry {
            id: agent.handle.to_string(),
            object: "model".into(),
            created: agent.created_at.as_millis() / 1_000,
            owned_by: tenant.name.to_string(),
        })
        .collect();
    Ok(axum::Json(ModelList { object: "list".into(), data }))
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    headers: HeaderMap,
    body: Result<JsonBody<ChatCompletionRequest>, ApiError>,
) -> Result<Response, OpenAiApiError> {
    let JsonBody(request) = body?;
    state.limits.take_event(&tenant)?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(OpenAiApiError::about("n", "n must be 1: an agent answers once"));
    }
    if request.tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
        return Err(OpenAiApiError::about(
            "tools",
            "tools are the agent's own and run on the server: leave `tools` out",
        ));
    }
    if let Some(bad) = request.messages.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
        return Err(OpenAiApiError::about(
            "messages",
            format!("a message's role is {:?}: one of {} is expected", bad.role, ROLES.join(", ")),
        ));
    }
    let text = last_user_text(&request.messages)?;
    state.limits.admit_bytes(&state.store, &tenant, text.len() as u64).await?;
    let (owner, handle) = model_agent(&state, &tenant, &reach, &request.model).await?;
    let source = source_of(&headers, &request)?;
    let key = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value.to_str().map_err(|_| {
                ApiError::new(Code::InvalidRequest, "Idempotency-Key must be ASCII")
            })?;
            crate::events::check_field("Idempotency-Key", key)?;
            Some(key.to_owned())
        }
        None => None,
    };
    let envelope = Envelope {
        tenant: owner.clone(),
        agent: Some(handle.to_string()),
        text,
        source,
        idempotency_key: key,
    };
    let (accepted, watch) = match state.engine.submit_and_watch(envelope).await {
        Ok(submitted) => submitted,
        Err(err) => {
            let err = ApiError::from(err);
            return Err(if err.code == Code::AgentNotFound {
                model_not_found(&request.model)
            } else {
                err.into()
            });
        }
    };
    let answer = Answer {
        id: format!("chatcmpl-{}", accepted.event_id),
        created: state.store.now().as_millis() / 1_000,
        model: request.model.clone(),
    };
    if request.stream != Some(true) {
        let finished = watch.ended(WAIT).await?;
        let finished = ended(finished, &accepted, WAIT)?;
        let usage = usage_of(&state, &owner, &finished).await;
        return Ok(
            axum::Json(answer.whole(finished.reply.unwrap_or_default(), usage)).into_response()
        );
    }
    let include_usage =
        request.stream_options.as_ref().and_then(|options| options.include_usage) == Some(true);
    Ok(stream_answer(state, owner, accepted, watch, answer, include_usage).into_response())
}

/// What every chunk of one answer repeats.
#[derive(Clone)]
struct Answer {
    id: String,
    created: i64,
    model: String,
}

impl Answer {
    fn whole(&self, content: String, usage: CompletionUsage) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage { role: "assistant".into(), content },
                finish_reason: "stop".into(),
            }],
            usage,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish: Option<&str>) -> Event {
        self.event(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
            }],
            usage: None,
        })
    }

    fn usage_chunk(&self, usage: CompletionUsage) -> Event {
        self.event(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
        })
    }

    fn event(&self, chunk: &ChatCompletionChunk) -> Event {
        Event::default().data(serde_json::to_string(chunk).unwrap_or_default())
    }
}

/// The text the agent is sent: the last message's, which must be the user's.
fn last_user_text(messages: &[ChatMessage]) -> Result<String, OpenAiApiError> {
    let last = messages
        .last()
        .ok_or_else(|| OpenAiApiError::about("messages", "messages must not be empty"))?;
    if last.role != "user" {
        return Err(OpenAiApiError::about(
            "messages",
            format!(
                "the last message is the {:?}'s: the agent answers a user's message, so end with one (the gateway keeps the conversation; tool results are its own)",
                last.role
            ),
        ));
    }
    let text = last.content.as_ref().map(|content| content.text()).unwrap_or_default();
    if text.trim().is_empty() {
        return Err(OpenAiApiError::about("messages", "the last user message has no text"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(OpenAiApiError::about(
            "messages",
            format!("the last user message is longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(text)
}

/// The agent `model` names, by handle, and its tenant: `handle` in the caller's tenant, or, for
/// the operator only, `tenant/handle`. Anything else the caller cannot reach is not found, as
/// an agent that does not exist. A token of the whole tenant reaches every agent of it, so its
/// agent is not read here: accepting the event finds it (or finds none: [`model_not_found`]).
async fn model_agent(
    state: &AppState,
    caller: &Tenant,
    reach: &Reach,
    model: &str,
) -> Result<(Tenant, Handle), OpenAiApiError> {
    let not_found = || model_not_found(model);
    let (tenant, handle) = match model.split_once('/') {
        None => (caller.clone(), model),
        Some((name, handle)) if name == caller.name.as_str() => (caller.clone(), handle),
        Some((name, handle)) => {
            let operator = caller.name.as_str() == Tenant::DEFAULT_NAME
                && reach.is_whole_tenant()
                && !reach.is_leased();
            if !operator {
                return Err(not_found());
            }
            match state.store.tenants().named(name).await {
                Ok(tenant) => (tenant, handle),
                Err(clade_store::Error::TenantNotFound(_)) => return Err(not_found()),
                Err(err) => return Err(err.into()),
            }
        }
    };
    let handle = Handle::parse(handle).map_err(|_| not_found())?;
    if tenant.id == caller.id && !reach.is_whole_tenant() {
        match state.of(&tenant).agents().get(handle.as_str()).await {
            Ok(agent) if reach.allows(agent.id) => {}
            Ok(_) | Err(clade_store::Error::AgentNotFound(_)) => return Err(not_found()),
            Err(err) => return Err(err.into()),
        }
    }
    Ok((tenant, handle))
}

/// No agent `model` names that the caller reaches.
fn model_not_found(model: &str) -> OpenAiApiError {
    OpenAiApiError {
        openai_code: Some("model_not_found"),
        param: Some("model"),
        ..ApiError::new(
            Code::AgentNotFound,
            format!(
                "the model {model:?} does not exist or this token does not reach it: a model is an agent's handle (GET /v1/models lists them)"
            ),
        )
        .into()
    }
}

/// Where the event comes from, which names its session: the `X-Session-Id` header, else the
/// `user` field, else the conversation's opening messages (up to its first user message).
fn source_of(
    headers: &HeaderMap,
    request: &ChatCompletionRequest,
) -> Result<Source, OpenAiApiError> {
    let header = match headers.get("x-session-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::new(Code::InvalidRequest, "X-Session-Id must be ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    if let Some(id) = &header {
        crate::events::check_field("X-Session-Id", id)?;
    }
    if let Some(user) = &request.user {
        crate::events::check_field("user", user)
            .map_err(|err| OpenAiApiError { param: Some("user"), ..err.into() })?;
    }
    let channel = match (header, &request.user) {
        (Some(id), _) => id,
        (None, Some(user)) => user.clone(),
        (None, None) => fingerprint(&request.messages),
    };
    let actor = request.user.clone().unwrap_or_else(|| "client".to_owned());
    Ok(Source { platform: PLATFORM.into(), channel, actor })
}

/// Names a conversation by its opening: its messages up to and including the first user
/// message, which a client that resends the history sends unchanged every time.
fn fingerprint(messages: &[ChatMessage]) -> String {
    let mut hash = sha2::Sha256::new();
    for message in messages {
        let text = message.content.as_ref().map(|content| content.text()).unwrap_or_default();
        hash.update(message.role.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
        if message.role == "user" {
            break;
        }
    }
    format!("conversation-{}", &hex::encode(hash.finalize())[..32])
}

/// The turn that ended, or why there is no answer to give (`waited`: how long it was waited
/// for).
pub(crate) fn ended(
    finished: Option<Finished>,
    accepted: &clade_store::Accepted,
    waited: Duration,
) -> Result<Finished, ApiError> {
    let Some(finished) = finished else {
        return Err(ApiError::new(
            Code::TurnRunning,
            format!(
                "the agent is still answering after {} s: the answer will be in session {} (GET /v1/sessions/{}/turns)",
                waited.as_secs(),
                accepted.session_id,
                accepted.session_id
            ),
        ));
    };
    if finished.status == TurnStatus::Completed {
        return Ok(finished);
    }
    Err(ApiError::new(
        Code::TurnFailed,
        format!(
            "the agent's turn {} ended {}: {}",
            finished.turn_id,
            clade_core::Word::as_str(finished.status),
            finished.error.as_deref().unwrap_or("no reason was recorded")
        ),
    ))
}

/// The usage of the turn's model calls, in OpenAI's words (none if it cannot be read).
async fn usage_of(state: &AppState, tenant: &Tenant, finished: &Finished) -> CompletionUsage {
    match state.of(tenant).turn_usage(finished.turn_id).await {
        Ok(usage) => CompletionUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens + usage.output_tokens,
        },
        Err(err) => {
            tracing::warn!(error = %err, turn = %finished.turn_id, "the turn's usage could not be read");
            CompletionUsage::default()
        }
    }
}

/// What the streaming task hands the response.
enum Streamed {
    Text(String),
    Ended(Result<Finished, OpenAiApiError>),
}

/// The answer as server-sent events: a first chunk with the role, the text as the model streams
/// it, a last chunk with `finish_reason`, the usage if asked for, and `[DONE]`. A turn that
/// fails ends the stream with an `error` object, which OpenAI's clients raise.
fn stream_answer(
    state: AppState,
    tenant: Tenant,
    accepted: clade_store::Accepted,
    watch: clade_runtime::TurnWatch,
    answer: Answer,
    include_usage: bool,
) -> impl IntoResponse {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let text_tx = tx.clone();
        let mut on_text = move |text: &str| {
            let _ = text_tx.send(Streamed::Text(text.to_owned()));
        };
        let finished = match watch.streamed(STREAM_WAIT, &mut on_text).await {
            Ok(finished) => ended(finished, &accepted, STREAM_WAIT).map_err(Into::into),
            Err(err) => Err(err.into()),
        };
        let _ = tx.send(Streamed::Ended(finished));
    });
    let first = answer
        .chunk(ChunkDelta { role: Some("assistant".into()), content: Some(String::new()) }, None);
    let state =
        StreamState { rx, answer, state, tenant, include_usage, sent: String::new(), done: false };
    let rest = stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let events = match s.rx.recv().await {
            Some(Streamed::Text(text)) => {
                s.sent.push_str(&text);
                vec![s.answer.chunk(ChunkDelta { role: None, content: Some(text) }, None)]
            }
            Some(Streamed::Ended(Ok(finished))) => {
                s.done = true;
                let mut events = Vec::new();
                // Deltas a lagging subscriber lost: what of the reply was not streamed.
                let reply = finished.reply.clone().unwrap_or_default();
                if let Some(rest) = reply.strip_prefix(s.sent.as_str())
                    && !rest.is_empty()
                {
                    events.push(
                        s.answer
                            .chunk(ChunkDelta { role: None, content: Some(rest.to_owned()) }, None),
                    );
                }
                events.push(s.answer.chunk(ChunkDelta::default(), Some("stop")));
                if s.include_usage {
                    let usage = usage_of(&s.state, &s.tenant, &finished).await;
                    events.push(s.answer.usage_chunk(usage));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            Some(Streamed::Ended(Err(err))) => {
                s.done = true;
                let body = error_body(err);
                vec![Event::default().data(body), Event::default().data("[DONE]")]
            }
            None => {
                s.done = true;
                Vec::new()
            }
        };
        Some((stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>)), s))
    });
    use futures::StreamExt as _;
    let events = stream::once(async move { Ok(first) }).chain(rest.flatten());
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

struct StreamState {
    rx: tokio::sync::mpsc::UnboundedReceiver<Streamed>,
    answer: Answer,
    state: AppState,
    tenant: Tenant,
    include_usage: bool,
    /// The text streamed so far.
    sent: String,
    done: bool,
}

/// An error as a stream's last data: OpenAI's error object.
fn error_body(err: OpenAiApiError) -> String {
    serde_json::to_string(&err.body()).unwrap_or_default()
}
