//! `/v1/agents`: create, list, show, delete the caller's agents.

use axum::Extension;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clade_core::{AgentConfig, Handle, TemplateName};
use clade_store::NewAgent;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::api::{
    AgentListResponse, AgentResponse, AgentsQuery, CreateAgentParams, DEFAULT_PAGE, MAX_PAGE,
};
use crate::auth::Caller;
use crate::error::{ApiError, Code};

/// A JSON body whose rejections become API errors naming what is wrong.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(Default::default())));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Code::PayloadTooLarge,
                    "request body is larger than server.max_body_bytes",
                )
            } else {
                ApiError::new(
                    Code::InvalidRequest,
                    format!("unreadable request body: {}", rejection.body_text()),
                )
            }
        })?;
        // Every body of the API is an object; serde would also read a struct from an array of
        // its fields in order (`[]` as a body with every field left out).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "invalid request body: expected a JSON object, found an array",
            ));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or a `+json` type).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else { return false };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => ApiError::new(
            Code::InvalidRequest,
            format!("invalid request body: {}", err.body_text()),
        ),
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::new(Code::InvalidRequest, format!("malformed JSON body: {}", err.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            Code::PayloadTooLarge,
            "request body is larger than server.max_body_bytes",
        ),
        other => ApiError::new(
            Code::InvalidRequest,
            format!("unreadable request body: {}", other.body_text()),
        ),
    }
}

/// A list's `limit`: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] if unsaid; any other is refused, as
/// the OpenAPI document says, not quietly clamped.
pub(crate) fn checked_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

pub(crate) fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::new(Code::InvalidRequest, format!("invalid query string: {}", rejection.body_text()))
}

fn record_agent(handle: &str) {
    tracing::Span::current().record("agent", handle);
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(params): JsonBody<CreateAgentParams>,
) -> Result<impl IntoResponse, ApiError> {
    let created = create_agent(&state, &caller, params).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// `text` as an agent's handle; one that cannot be is `invalid_handle`, saying why.
pub(crate) fn handle_of(text: &str) -> Result<Handle, ApiError> {
    Handle::parse(text).map_err(|e| ApiError::new(Code::InvalidHandle, e.to_string()))
}

/// Makes an agent of the caller's tenant and, given a task, sends it as the agent's first
/// message. `POST /v1/agents` and the AgentHub's `Spawn` are this.
pub(crate) async fn create_agent(
    state: &AppState,
    Caller(tenant, _, _): &Caller,
    params: CreateAgentParams,
) -> Result<AgentResponse, ApiError> {
    let handle = handle_of(&params.handle)?;
    record_agent(handle.as_str());
    let template = match params.template.as_deref() {
        Some(name) => TemplateName::parse(name)
            .map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?,
        None => TemplateName::builtin_default(),
    };
    if let Some(name) = &params.name {
        clade_core::agent::validate_display_name(name)
            .map_err(|e| ApiError::new(Code::InvalidRequest, e))?;
    }
    // Checked before the agent exists: a task refused for its size makes no agent.
    if let Some(task) = &params.task {
        crate::events::check_text("task", task)?;
        state.limits.take_event(tenant)?;
        state.limits.admit_bytes(&state.store, tenant, task.len() as u64).await?;
    }
    // Read before the agent exists: a broken tools.yaml makes no agent.
    let rules =
        clade_runtime::tools::template_tools(&state.agents, &template).map_err(
            |err| match err {
                clade_runtime::tools::AccessError::Invalid(message) => {
                    ApiError::new(Code::InvalidConfig, message)
                }
                other => other.into(),
            },
        )?;
    let new = NewAgent { handle, display_name: params.name, config: AgentConfig { template } };
    let by = format!("tenant {} (api)", tenant.name);
    let agents = state.agents.acting_as(by.clone());
    let agent = match state.limits.max_agents(tenant) {
        Some((max, key)) => agents.create_within(tenant.id, new, max, &key).await?,
        None => agents.create(tenant.id, new).await?,
    };
    tracing::info!(agent_id = %agent.id, "agent created");
    let mut created = AgentResponse::from(&agent);
    // A tenant's own token gives the template's tools only within the tenant's ceiling.
    let given = state
        .engine
        .tools()
        .grant_template_tools(&agent, rules, Some(tenant.name.as_str()), &by)
        .await?;
    created.tools = template_tools_response(&given);
    if let Some(text) = params.task {
        let envelope = clade_runtime::Envelope {
            tenant: tenant.clone(),
            agent: Some(agent.handle.to_string()),
            text,
            source: clade_store::Source {
                platform: TASK_SOURCE.0.into(),
                channel: TASK_SOURCE.1.into(),
                actor: TASK_SOURCE.2.into(),
            },
            idempotency_key: None,
        };
        let accepted = state.engine.submit(envelope).await?;
        created.task = Some(crate::events::accepted_body(&accepted));
    }
    Ok(created)
}

/// Where an agent's task from its creation comes from: platform, channel and actor.
pub(crate) const TASK_SOURCE: (&str, &str, &str) = ("hub", "spawn", "operator");

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<AgentsQuery>, QueryRejection>,
) -> Result<axum::Json<AgentListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    if let Some(cursor) = &query.cursor {
        // The cursor is the handle the previous page ended with.
        Handle::parse(cursor).map_err(|_| {
            ApiError::new(
                Code::InvalidRequest,
                format!("cursor {cursor:?} is not a next_cursor this list gave"),
            )
        })?;
    }
    let (agents, next_cursor) =
        reachable_page(&state, &tenant, &reach, query.cursor.as_deref(), limit).await?;
    Ok(axum::Json(AgentListResponse {
        items: agents.iter().map(AgentResponse::from).collect(),
        next_cursor,
    }))
}

/// A page of the agents `reach` reaches, by handle, after `cursor` (the last page's last
/// handle), and the next page's cursor. A token limited to some agents sees those alone, in the
/// same order and pages: nothing of the others, not even their handles.
pub(crate) async fn reachable_page(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<clade_core::Agent>, Option<String>), ApiError> {
    // Fetch one extra row to learn whether another page exists.
    let mut agents = Vec::new();
    for agent in reach.listing(None)? {
        match agent {
            None => agents = state.of(tenant).agents().list(cursor, limit + 1).await?,
            Some(id) => match state.of(tenant).agents().by_id(id).await {
                Ok(agent) => {
                    if cursor.is_none_or(|after| agent.handle.as_str() > after) {
                        agents.push(agent);
                    }
                }
                Err(clade_store::Error::AgentNotFound(_)) => {}
                Err(err) => return Err(err.into()),
            },
        }
    }
    if !reach.is_whole_tenant() {
        agents.sort_by(|a, b| a.handle.as_str().cmp(b.handle.as_str()));
    }
    let next_cursor = if agents.len() > limit as usize {
        agents.truncate(limit as usize);
        agents.last().map(|a| a.handle.to_string())
    } else {
        None
    };
    Ok((agents, next_cursor))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<AgentResponse>, ApiError> {
    record_agent(&handle);
    let agent = state.of(&tenant).agents().get(&handle).await?;
    reach.agent(&agent)?;
    Ok(axum::Json(AgentResponse::from(&agent)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<StatusCode, ApiError> {
    record_agent(&handle);
    // Deleting is the whole tenant's business (the admin scope, which no limited token has).
    if !reach.is_whole_tenant() {
        return Err(clade_store::Error::AgentNotFound(handle).into());
    }
    let by = format!("tenant {} (api)", tenant.name);
    let agent = state.agents.acting_as(by).delete(tenant.id, &handle).await?;
    tracing::info!(agent_id = %agent.id, "agent deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/agents/{handle}/events`: Server-Sent Events of everything the agent does (its
/// sessions' lifecycle events, each as `{"session", "data"}`), from `Last-Event-ID` (or
/// `?after=`) replayed from the outbox, else from now; with `deltas`, the model's text as it
/// is written.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(handle): Path<String>,
    headers: axum::http::HeaderMap,
    query: Result<Query<crate::api::AgentStreamQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let tenant = caller.0.id;
    let after = crate::live::resume_point(
        &state.stream_ids,
        tenant,
        headers.get("last-event-id"),
        query.after.as_deref(),
    )?;
    let kinds: Vec<clade_core::EventKind> = query.kind.map(|k| k.0).into_iter().collect();
    let only = crate::live::Only {
        live_only: query.deltas || kinds.iter().any(|k| k.is_live_only()),
        kinds,
    };
    let start = after.map_or(crate::live::Start::Now, crate::live::Start::After);
    let events = trace(&state, caller, &handle, query.session.as_deref(), start, only).await?;
    Ok(crate::live::sse(events, state.stream_ids.clone(), tenant, true))
}

/// An agent's lifecycle events (or one of its sessions') as the caller may follow them.
/// `GET /v1/agents/{handle}/events` and the AgentHub's `Trace` are this.
pub(crate) async fn trace(
    state: &AppState,
    caller: Caller,
    handle: &str,
    session: Option<&str>,
    start: crate::live::Start,
    only: crate::live::Only,
) -> Result<impl futures::Stream<Item = crate::live::Followed> + Send + use<>, ApiError> {
    let Caller(tenant, _, reach) = &caller;
    record_agent(handle);
    let agent = state.of(tenant).agents().get(handle).await?;
    let scope = match session {
        Some(id) => {
            let session = crate::sessions::reachable_row(state, tenant, reach, id).await?;
            if session.agent_id != agent.id {
                return Err(clade_store::Error::SessionNotFound(id.to_owned()).into());
            }
            crate::live::Scope::Session(session.id)
        }
        None => {
            reach.agent(&agent)?;
            crate::live::Scope::Agent(agent.id)
        }
    };
    crate::live::follow(state, caller, scope, start, only, None).await
}

/// What a new agent's template gave it, as a creation's answer (and the CLI's) shows it.
pub fn template_tools_response(
    given: &clade_runtime::tools::TemplateGrants,
) -> Vec<crate::api::TemplateToolResponse> {
    let shown = |rule: &clade_config::PolicyRule, left_out: Option<&String>| {
        crate::api::TemplateToolResponse {
            effect: rule.effect.as_str().to_owned(),
            tool: rule.tool.clone(),
            resource: rule.resource.clone(),
            left_out: left_out.cloned(),
        }
    };
    let granted = given.granted.iter().map(|rule| shown(rule, None));
    granted.chain(given.left_out.iter().map(|(rule, why)| shown(rule, Some(why)))).collect()
}
