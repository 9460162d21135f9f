//! The MCP server: `POST /v1/mcp` (every agent the token reaches) and
//! `POST /v1/agents/{handle}/mcp` (one agent), MCP's streamable HTTP transport (wire types in
//! `clade-protocol`'s [`mcp`](crate::api::mcp)).
//!
//! Each agent is a tool named by its handle: a call sends its `message` to the agent, in the
//! session its `session` names, and answers with the agent's reply, streamed as progress
//! notifications when the client gave a progress token. The agents' sessions are resources
//! (`clade://sessions/<id>`, a Markdown transcript), and so is each agent's memory
//! (`clade://agents/<handle>/memories`). No MCP session is kept: every request is
//! authenticated by its bearer token and answered whole, so `GET` (a stream of the server's
//! own requests) answers 405 and no `Mcp-Session-Id` is given.
//!
//! Scopes: `tools/call` needs `send`; the resources need `read`; listing the tools needs
//! either. What the token does not reach (another tenant's agents, agents it is not limited
//! to) is not listed and answers as if it did not exist.

use std::collections::HashMap;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use clade_core::Scope::{Read, Send as SendScope};
use clade_core::{Agent, Handle, SessionId, Tenant};
use clade_runtime::Envelope;
use clade_store::Source;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::mcp::{
    AskAnswer, AskArguments, CallToolResult, Implementation, InitializeResult, ListChanged,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, McpMessage, McpNotification,
    McpResponse, PROTOCOL_VERSION_HEADER, PROTOCOL_VERSIONS, ProgressParams, ReadResourceResult,
    RequestId, Resource, ResourceContents, ResourceTemplate, ResourcesCapability,
    ServerCapabilities, TextContent, Tool, codes, tool_schema,
};
use crate::auth::{Caller, Granted, Reach};
use crate::error::ApiError;

/// The platform of every event these routes accept.
pub(crate) const PLATFORM: &str = "mcp";
/// The conversation of a call that names none.
const DEFAULT_SESSION: &str = "default";
/// The longest a call waits for its agent's answer.
const WAIT: Duration = Duration::from_secs(300);
/// Tools (agents) per `tools/list` page.
const TOOLS_PAGE: u32 = 100;
/// Sessions per `resources/list` page.
const RESOURCES_LISTED: u32 = 100;
/// Turns a transcript reads at most (of which it shows the newest that fit).
const TRANSCRIPT_TURNS: usize = 10_000;
const SESSION_URI: &str = "clade://sessions/";
/// An agent's global memory: `clade://agents/<handle>/memories`.
const AGENT_URI: &str = "clade://agents/";
const MEMORIES: &str = "/memories";
/// Memory items a memory resource shows, the most recently updated.
const MEMORY_ITEMS: u32 = 200;
/// Messages a streamed call holds for a slow client before it merges the text.
const STREAM_BUFFER: usize = 32;
/// The longest progress token taken (it is repeated in every notification).
const MAX_PROGRESS_TOKEN: usize = 256;
/// The most a transcript shows, in bytes: its newest turns that fit.
const TRANSCRIPT_BYTES: usize = 1024 * 1024;
const METHODS: &str = "initialize, ping, tools/list, tools/call, resources/list, resources/templates/list and resources/read";

/// Who asks, and what they reach.
struct Ctx {
    state: AppState,
    tenant: Tenant,
    reach: Reach,
    granted: Granted,
    /// The one agent of `/v1/agents/{handle}/mcp`.
    only: Option<Agent>,
}

/// `POST /v1/mcp`.
pub(crate) async fn serve(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Extension(granted): Extension<Granted>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = Ctx { state, tenant, reach, granted, only: None };
    answer(ctx, &headers, &body).await
}

/// `POST /v1/agents/{handle}/mcp`.
pub(crate) async fn serve_agent(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Extension(granted): Extension<Granted>,
    Path(handle): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let agent = match state.of(&tenant).agents().get(&handle).await {
        Ok(agent) if reach.allows(agent.id) => agent,
        Ok(_) | Err(clade_store::Error::AgentNotFound(_)) => {
            let id = serde_json::from_slice::<Value>(&body).ok().and_then(|v| id_of(&v));
            let message = format!(
                "agent {handle:?} not found: the URL names an agent of the token's tenant (GET /v1/agents lists them)"
            );
            return refusal(StatusCode::NOT_FOUND, id, codes::INVALID_REQUEST, message);
        }
        Err(err) => {
            let id = serde_json::from_slice::<Value>(&body).ok().and_then(|v| id_of(&v));
            let error = ApiError::from(err);
            return refusal(error.code.status(), id, codes::INTERNAL_ERROR, error.message);
        }
    };
    let ctx = Ctx { state, tenant, reach, granted, only: Some(agent) };
    answer(ctx, &headers, &body).await
}

/// A JSON-RPC error at an HTTP status of its own (the message could not be taken at all).
fn refusal(status: StatusCode, id: Option<RequestId>, code: i64, message: String) -> Response {
    (status, axum::Json(McpResponse::error(id, code, message))).into_response()
}

fn id_of(value: &Value) -> Option<RequestId> {
    serde_json::from_value(value.get("id")?.clone()).ok()
}

/// Reads one message and answers it: a request with its response (JSON, or a stream for a
/// call that asked for progress), a notification with 202.
async fn answer(ctx: Ctx, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(version) = headers.get(PROTOCOL_VERSION_HEADER) {
        let version = version.to_str().unwrap_or_default();
        if !PROTOCOL_VERSIONS.contains(&version) {
            let message = format!(
                "MCP-Protocol-Version {version:?} is not one this server speaks: {}",
                PROTOCOL_VERSIONS.join(", ")
            );
            return refusal(StatusCode::BAD_REQUEST, None, codes::INVALID_REQUEST, message);
        }
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            let message = format!("the body is not JSON ({err}): post one JSON-RPC 2.0 message");
            return refusal(StatusCode::BAD_REQUEST, None, codes::PARSE_ERROR, message);
        }
    };
    if value.is_array() {
        let message =
            "batches are not taken (MCP 2025-06-18 removed them): post one message at a time"
                .to_owned();
        return refusal(StatusCode::BAD_REQUEST, None, codes::INVALID_REQUEST, message);
    }
    let message: McpMessage = match serde_json::from_value(value.clone()) {
        Ok(message) => message,
        Err(err) => {
            let message = format!(
                "not a JSON-RPC 2.0 request or notification ({err}): it needs \"jsonrpc\": \"2.0\", a \"method\", an \"id\" (string or integer) for a request, and \"params\" as an object if any"
            );
            return refusal(
                StatusCode::BAD_REQUEST,
                id_of(&value),
                codes::INVALID_REQUEST,
                message,
            );
        }
    };
    if value.get("id").is_some_and(Value::is_null)
        || value.get("params").is_some_and(Value::is_null)
    {
        let message = "\"id\" and \"params\" may be left out but not null: a request's id is a string or an integer".to_owned();
        return refusal(StatusCode::BAD_REQUEST, None, codes::INVALID_REQUEST, message);
    }
    if message.method.is_empty() || message.method.chars().count() > 128 {
        let why = "\"method\" must be 1-128 characters".to_owned();
        return refusal(StatusCode::BAD_REQUEST, message.id, codes::INVALID_REQUEST, why);
    }
    let Some(id) = message.id.clone() else {
        // Notifications (`initialized`, `cancelled`, …) need nothing: a call already running
        // goes on, its turn being the agent's to finish.
        return StatusCode::ACCEPTED.into_response();
    };
    let params = message.params.unwrap_or_default();
    let accepts_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let result = match message.method.as_str() {
        "initialize" => Ok(initialize(&ctx, &params)),
        "ping" => Ok(json!({})),
        "tools/list" => tools(&ctx, &params).await,
        "tools/call" => {
            let progress = params
                .get("_meta")
                .and_then(|meta| meta.get("progressToken"))
                .filter(|token| token.is_string() || token.is_i64())
                .cloned();
            match progress {
                Some(Value::String(token)) if token.chars().count() > MAX_PROGRESS_TOKEN => {
                    Err(Refused::params(format!(
                        "_meta.progressToken is longer than {MAX_PROGRESS_TOKEN} characters"
                    )))
                }
                Some(token) if accepts_stream => return call_streamed(ctx, id, params, token),
                _ => call(&ctx, &params, None).await,
            }
        }
        "resources/list" => resources(&ctx, &params).await,
        "resources/templates/list" => templates(&ctx),
        "resources/read" => read(&ctx, &params).await,
        other => Err(Refused::new(
            codes::METHOD_NOT_FOUND,
            format!("unknown method {other:?}: this server offers {METHODS}"),
        )),
    };
    let response = match result {
        Ok(result) => McpResponse::result(Some(id), result),
        Err(Refused { code, message }) => McpResponse::error(Some(id), code, message),
    };
    axum::Json(response).into_response()
}

/// A JSON-RPC error to answer a request with.
struct Refused {
    code: i64,
    message: String,
}

impl Refused {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self::new(codes::INTERNAL_ERROR, error.message)
    }
}

impl From<clade_store::Error> for Refused {
    fn from(error: clade_store::Error) -> Self {
        ApiError::from(error).into()
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, Refused> {
    serde_json::to_value(value).map_err(|err| ApiError::internal(err).into())
}

fn needs(ctx: &Ctx, scopes: &[clade_core::Scope], method: &str) -> Result<(), Refused> {
    if ctx.granted.allows(scopes) {
        return Ok(());
    }
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    Err(Refused::new(
        codes::FORBIDDEN,
        format!(
            "this token's scopes do not allow {method}, which needs {}: create a token with `clade tokens create --scope …`",
            names.join(" or ")
        ),
    ))
}

fn initialize(ctx: &Ctx, params: &serde_json::Map<String, Value>) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
    let version = PROTOCOL_VERSIONS.iter().find(|v| **v == asked).unwrap_or(&PROTOCOL_VERSIONS[0]);
    let can_read = ctx.granted.allows(&[Read]);
    let capabilities = ServerCapabilities {
        tools: ctx.granted.allows(&[Read, SendScope]).then(ListChanged::default),
        resources: can_read.then(ResourcesCapability::default),
    };
    let whose = match &ctx.only {
        Some(agent) => format!("the agent {} of tenant {}", agent.handle, ctx.tenant.name),
        None => format!("the agents of tenant {} this token reaches", ctx.tenant.name),
    };
    let result = InitializeResult {
        protocol_version: (*version).to_owned(),
        capabilities,
        server_info: Implementation {
            name: "clade".into(),
            title: "Clade".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        instructions: Some(format!(
            "This server is {whose}. Each tool is an agent, named by its handle: call it with a `message` to ask it; the same `session` continues a conversation, which the agent remembers. Each session's transcript is a resource (clade://sessions/<id>), and so is each agent's memory (clade://agents/<handle>/memories)."
        )),
    };
    serde_json::to_value(result).unwrap_or_default()
}

/// `tools/list`: the agents, by handle, a page at a time (the cursor is the last handle).
async fn tools(ctx: &Ctx, params: &serde_json::Map<String, Value>) -> Result<Value, Refused> {
    needs(ctx, &[Read, SendScope], "tools/list")?;
    let (agents, next_cursor) = match &ctx.only {
        Some(agent) => (vec![agent.clone()], None),
        None => {
            let after = match params.get("cursor") {
                None | Some(Value::Null) => None,
                Some(Value::String(cursor)) => Some(cursor.as_str()),
                Some(_) => return Err(Refused::params("cursor must be a string")),
            };
            if after.is_some_and(|cursor| Handle::parse(cursor).is_err()) {
                return Err(Refused::params("cursor is not a nextCursor this list gave"));
            }
            crate::agents::reachable_page(&ctx.state, &ctx.tenant, &ctx.reach, after, TOOLS_PAGE)
                .await?
        }
    };
    let tools = agents
        .into_iter()
        .map(|agent| Tool {
            name: agent.handle.to_string(),
            title: format!("Ask {}", agent.handle),
            description: format!(
                "Ask the agent {} (tenant {}): it answers `message` in the conversation `session` names, which it remembers, using its own tools and model.",
                agent.handle, ctx.tenant.name
            ),
            input_schema: tool_schema::<AskArguments>(),
            output_schema: tool_schema::<AskAnswer>(),
        })
        .collect();
    to_value(&ListToolsResult { tools, next_cursor })
}

/// The agent a `tools/call` names, and its arguments; what is wrong with them otherwise.
async fn called(
    ctx: &Ctx,
    params: &serde_json::Map<String, Value>,
) -> Result<Result<(Agent, AskArguments), String>, Refused> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(Refused::params("tools/call needs `name`, the tool's (the agent's handle)"));
    };
    let unknown = || {
        Refused::params(format!(
            "unknown tool {name:?}: tools/list names the agents this token reaches"
        ))
    };
    let agent = match &ctx.only {
        Some(agent) if agent.handle.as_str() == name => agent.clone(),
        Some(_) => return Err(unknown()),
        None => {
            let Ok(handle) = Handle::parse(name) else { return Err(unknown()) };
            match ctx.state.of(&ctx.tenant).agents().get(handle.as_str()).await {
                Ok(agent) if ctx.reach.allows(agent.id) => agent,
                Ok(_) | Err(clade_store::Error::AgentNotFound(_)) => return Err(unknown()),
                Err(err) => return Err(err.into()),
            }
        }
    };
    let arguments = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
    let arguments = match serde_json::from_value::<AskArguments>(arguments) {
        Ok(arguments) => arguments,
        Err(err) => {
            return Ok(Err(format!(
                "the arguments do not match the tool's inputSchema: {err} (`message`, a string, is required; `session`, a string, is optional)"
            )));
        }
    };
    if arguments.message.trim().is_empty() {
        return Ok(Err("`message` has no text: say something to the agent".to_owned()));
    }
    if arguments.message.chars().count() > 65_536 {
        return Ok(Err("`message` is longer than 65536 characters".to_owned()));
    }
    if let Some(session) = &arguments.session
        && let Err(err) = crate::events::check_field("session", session)
    {
        return Ok(Err(err.message));
    }
    Ok(Ok((agent, arguments)))
}

/// A tool's failure, which the client's model reads (MCP's `isError`), not a protocol error.
fn failed(message: impl Into<String>) -> CallToolResult {
    CallToolResult {
        content: vec![TextContent::new(message)],
        structured_content: None,
        is_error: true,
    }
}

/// `tools/call`: the agent's answer, given whole; `on_text` (a streamed call) is given the
/// answer as it is written.
async fn call(
    ctx: &Ctx,
    params: &serde_json::Map<String, Value>,
    on_text: Option<&mut (dyn FnMut(&str) + Send)>,
) -> Result<Value, Refused> {
    needs(ctx, &[SendScope], "tools/call")?;
    let result = match called(ctx, params).await? {
        Ok((agent, arguments)) => ask(ctx, &agent, arguments, on_text).await,
        Err(why) => failed(why),
    };
    to_value(&result)
}

async fn ask(
    ctx: &Ctx,
    agent: &Agent,
    arguments: AskArguments,
    on_text: Option<&mut (dyn FnMut(&str) + Send)>,
) -> CallToolResult {
    let state = &ctx.state;
    if let Err(err) = state.limits.take_event(&ctx.tenant) {
        return failed(err.message);
    }
    if let Err(err) =
        state.limits.admit_bytes(&state.store, &ctx.tenant, arguments.message.len() as u64).await
    {
        return failed(err.message);
    }
    let envelope = Envelope {
        tenant: ctx.tenant.clone(),
        agent: Some(agent.handle.to_string()),
        text: arguments.message,
        source: Source {
            platform: PLATFORM.into(),
            channel: arguments.session.unwrap_or_else(|| DEFAULT_SESSION.to_owned()),
            actor: "mcp".to_owned(),
        },
        idempotency_key: None,
    };
    let (accepted, watch) = match state.engine.submit_and_watch(envelope).await {
        Ok(submitted) => submitted,
        Err(err) => return failed(ApiError::from(err).message),
    };
    let finished = match on_text {
        Some(on_text) => watch.streamed(WAIT, on_text).await,
        None => watch.ended(WAIT).await,
    };
    let finished = finished
        .map_err(ApiError::from)
        .and_then(|finished| crate::openai::ended(finished, &accepted, WAIT));
    match finished {
        Ok(finished) => {
            let answer = AskAnswer {
                reply: finished.reply.unwrap_or_default(),
                session_id: accepted.session_id.to_string(),
                turn_id: finished.turn_id.to_string(),
            };
            CallToolResult {
                content: vec![TextContent::new(answer.reply.clone())],
                structured_content: serde_json::to_value(&answer).ok(),
                is_error: false,
            }
        }
        Err(err) => failed(err.message),
    }
}

/// A `tools/call` with a progress token, answered as a stream: the answer's text in
/// `notifications/progress` as the model writes it, then the response. A client that reads
/// slowly gets the text in fewer, larger notifications: what it has not taken yet is held as
/// one piece of text (at most the answer), never as a queue of messages.
fn call_streamed(
    ctx: Ctx,
    id: RequestId,
    params: serde_json::Map<String, Value>,
    token: Value,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(STREAM_BUFFER);
    tokio::spawn(async move {
        let progress = |text: String, written: usize| {
            let notification = McpNotification {
                jsonrpc: Default::default(),
                method: "notifications/progress".into(),
                params: serde_json::to_value(ProgressParams {
                    progress_token: token.clone(),
                    progress: written as f64,
                    message: text,
                })
                .unwrap_or_default(),
            };
            serde_json::to_string(&notification).unwrap_or_default()
        };
        let (mut pending, mut written) = (String::new(), 0usize);
        let result = {
            let mut on_text = |text: &str| {
                written += text.chars().count();
                pending.push_str(text);
                if let Ok(permit) = tx.try_reserve() {
                    permit.send(progress(std::mem::take(&mut pending), written));
                }
            };
            call(&ctx, &params, Some(&mut on_text)).await
        };
        if !pending.is_empty() {
            let _ = tx.send(progress(pending, written)).await;
        }
        let response = match result {
            Ok(result) => McpResponse::result(Some(id), result),
            Err(Refused { code, message }) => McpResponse::error(Some(id), code, message),
        };
        let _ = tx.send(serde_json::to_string(&response).unwrap_or_default()).await;
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        let event = Event::default().event("message").data(data);
        Some((Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// `resources/list`: the sessions of the agents reached, most recently active first, a page
/// at a time.
async fn resources(ctx: &Ctx, params: &serde_json::Map<String, Value>) -> Result<Value, Refused> {
    needs(ctx, &[Read], "resources/list")?;
    let store = ctx.state.of(&ctx.tenant);
    let cursor = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.as_str()),
        Some(_) => return Err(Refused::params("cursor must be a string")),
    };
    let paged = crate::sessions::page(
        &ctx.state,
        &ctx.tenant,
        &ctx.reach,
        ctx.only.as_ref(),
        cursor,
        RESOURCES_LISTED,
    )
    .await;
    let (rows, next_cursor) = match paged {
        Ok(paged) => paged,
        Err(err) if err.code == crate::error::Code::InvalidRequest => {
            return Err(Refused::params(err.message));
        }
        Err(err) => return Err(err.into()),
    };
    let mut handles: HashMap<clade_core::AgentId, String> = HashMap::new();
    let mut resources = Vec::with_capacity(rows.len());
    // The first page begins with each agent's memory (the agents of the first page of tools).
    if cursor.is_none() {
        let agents = match &ctx.only {
            Some(agent) => vec![agent.clone()],
            None => {
                let reach = &ctx.reach;
                crate::agents::reachable_page(&ctx.state, &ctx.tenant, reach, None, TOOLS_PAGE)
                    .await?
                    .0
            }
        };
        for agent in agents {
            resources.push(Resource {
                uri: format!("{AGENT_URI}{}{MEMORIES}", agent.handle),
                name: format!("{}/memories", agent.handle),
                title: format!("{}: memory", agent.handle),
                description: format!(
                    "What {} remembers across conversations (its global memory; the newest {MEMORY_ITEMS} items)",
                    agent.handle
                ),
                mime_type: "text/markdown".into(),
            });
        }
    }
    for row in rows {
        let handle = match handles.get(&row.agent_id) {
            Some(handle) => handle.clone(),
            None => {
                let handle = store.agents().by_id(row.agent_id).await?.handle.to_string();
                handles.insert(row.agent_id, handle.clone());
                handle
            }
        };
        resources.push(Resource {
            uri: format!("{SESSION_URI}{}", row.id),
            name: format!("{handle}/{}/{}", row.source.platform, row.source.channel),
            title: format!("{handle}: {} {}", row.source.platform, row.source.channel),
            description: format!(
                "The transcript of {handle}'s session with {} on {} (channel {}), last active {}",
                row.source.actor, row.source.platform, row.source.channel, row.updated_at
            ),
            mime_type: "text/markdown".into(),
        });
    }
    to_value(&ListResourcesResult { resources, next_cursor })
}

fn templates(ctx: &Ctx) -> Result<Value, Refused> {
    needs(ctx, &[Read], "resources/templates/list")?;
    to_value(&ListResourceTemplatesResult {
        resource_templates: vec![
            ResourceTemplate {
                uri_template: format!("{SESSION_URI}{{session_id}}"),
                name: "session".into(),
                description: "A session's transcript: each turn's messages and the agent's answer"
                    .into(),
                mime_type: "text/markdown".into(),
            },
            ResourceTemplate {
                uri_template: format!("{AGENT_URI}{{handle}}{MEMORIES}"),
                name: "memories".into(),
                description: "What an agent remembers across conversations: its global memory's items, newest first".into(),
                mime_type: "text/markdown".into(),
            },
        ],
    })
}

/// `resources/read`: a session's transcript, in Markdown.
async fn read(ctx: &Ctx, params: &serde_json::Map<String, Value>) -> Result<Value, Refused> {
    needs(ctx, &[Read], "resources/read")?;
    let Some(uri) = params.get("uri").and_then(Value::as_str) else {
        return Err(Refused::params("resources/read needs `uri`, a string"));
    };
    let not_found = || {
        Refused::new(
            codes::RESOURCE_NOT_FOUND,
            format!(
                "resource {uri:?} not found: a session's is {SESSION_URI}<session id>, an agent's memory {AGENT_URI}<handle>{MEMORIES} (resources/list names them)"
            ),
        )
    };
    if let Some(handle) = uri.strip_prefix(AGENT_URI).and_then(|rest| rest.strip_suffix(MEMORIES)) {
        return memories(ctx, uri, handle).await?.ok_or_else(not_found);
    }
    let id = uri.strip_prefix(SESSION_URI).ok_or_else(not_found)?;
    let id = SessionId::parse(id).map_err(|_| not_found())?;
    let store = ctx.state.of(&ctx.tenant);
    let session = match store.sessions().get(id).await {
        Ok(session) => session,
        Err(clade_store::Error::SessionNotFound(_)) => return Err(not_found()),
        Err(err) => return Err(err.into()),
    };
    let reached = ctx.reach.session(&session).is_ok()
        && ctx.only.as_ref().is_none_or(|agent| agent.id == session.agent_id);
    if !reached {
        return Err(not_found());
    }
    let agent = store.agents().by_id(session.agent_id).await?;
    // Every turn is read, a page at a time, and only the newest that fit in the transcript's
    // bytes are kept: memory is bounded by the transcript, not by the session.
    let section = |n: usize, record: &clade_store::TurnRecord| {
        let status = clade_core::Word::as_str(record.turn.status);
        let mut section = format!("\n## Turn {n} ({status})\n\n");
        for event in &record.events {
            section.push_str(&format!("**{}:** {}\n\n", session.source.actor, event.text));
        }
        if let Some(reply) = &record.turn.reply {
            section.push_str(&format!("**{}:** {reply}\n", agent.handle));
        }
        if let Some(error) = &record.turn.error {
            section.push_str(&format!("*(ended {status}: {error})*\n"));
        }
        section
    };
    let mut sections = std::collections::VecDeque::new();
    let (mut bytes, mut total, mut after) = (0usize, 0usize, None);
    while total < TRANSCRIPT_TURNS {
        let page = store.sessions().turn_records(session.id, after, 100).await?;
        let full = page.len() == 100;
        after = page.last().map(|record| record.turn.id);
        for record in &page {
            total += 1;
            let text = section(total, record);
            bytes += text.len();
            sections.push_back(text);
            while bytes > TRANSCRIPT_BYTES {
                let Some(oldest) = sections.pop_front() else { break };
                bytes -= oldest.len();
            }
        }
        if !full {
            break;
        }
    }
    let left_out = total - sections.len();
    let mut text = format!(
        "# Session {}\n\nAgent `{}`, {} channel `{}`, with `{}`: {}{} turn{}{}.\n",
        session.id,
        agent.handle,
        session.source.platform,
        session.source.channel,
        session.source.actor,
        if total >= TRANSCRIPT_TURNS { "the first " } else { "" },
        total,
        if total == 1 { "" } else { "s" },
        if left_out > 0 {
            format!(
                " (the first {left_out} left out: a transcript shows at most 1 MiB, the newest)"
            )
        } else {
            String::new()
        },
    );
    text.extend(sections);
    to_value(&ReadResourceResult {
        contents: vec![ResourceContents {
            uri: uri.to_owned(),
            mime_type: "text/markdown".into(),
            text,
        }],
    })
}

/// An agent's global memory as Markdown, newest first; `None` when the token does not reach an
/// agent of that handle (as if it did not exist).
async fn memories(ctx: &Ctx, uri: &str, handle: &str) -> Result<Option<Value>, Refused> {
    let agent = match &ctx.only {
        Some(agent) if agent.handle.as_str() == handle => agent.clone(),
        Some(_) => return Ok(None),
        None => {
            let Ok(handle) = Handle::parse(handle) else { return Ok(None) };
            match ctx.state.of(&ctx.tenant).agents().get(handle.as_str()).await {
                Ok(agent) if ctx.reach.allows(agent.id) => agent,
                Ok(_) | Err(clade_store::Error::AgentNotFound(_)) => return Ok(None),
                Err(err) => return Err(err.into()),
            }
        }
    };
    let filter = clade_store::MemoryFilter::default();
    let store = ctx.state.of(&ctx.tenant);
    let items = store.memories().list(agent.id, &filter, None, MEMORY_ITEMS).await?;
    let mut text = format!(
        "# Memory of `{}`\n\n{} item{} of its global memory, newest first{}.\n\n",
        agent.handle,
        items.len(),
        if items.len() == 1 { "" } else { "s" },
        if items.len() == MEMORY_ITEMS as usize { " (the newest only)" } else { "" }
    );
    for item in &items {
        let content = item.content.replace('\n', " ");
        // What nobody vouches for is quoted, as a turn's context shows it: data, not instructions.
        let content = if item.untrusted { format!("\"{content}\" (unverified)") } else { content };
        text.push_str(&format!("- **{}** ({}): {content}\n", item.kind.as_str(), item.updated_at));
    }
    to_value(&ReadResourceResult {
        contents: vec![ResourceContents {
            uri: uri.to_owned(),
            mime_type: "text/markdown".into(),
            text,
        }],
    })
    .map(Some)
}
