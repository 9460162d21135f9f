//! Step-through debugging over the API: `GET`/`POST /v1/breakpoints`, `DELETE
//! /v1/breakpoints/{id}`, `GET /v1/debug/stops` and `/v1/debug/stops/{id}`, and `POST
//! /v1/debug/stops/{id}` to tell a paused turn what to do. Breakpoints and stops are the
//! caller's tenant's only, and a token limited to some agents reaches only theirs; the engine
//! does the rest (see `clade_runtime::engine::debugger`).

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use clade_core::{BreakpointId, StopId};
use clade_store::{BreakpointRow, Debugging, NewBreakpoint, StopRow};

use crate::AppState;
use crate::agents::{JsonBody, checked_limit, query_rejection};
use crate::api::{
    BreakpointListResponse, BreakpointResponse, BreakpointsQuery, CreateBreakpointParams,
    ResumeStopParams, StopFilter, StopListResponse, StopResponse, StopsQuery,
};
use crate::auth::{Caller, Reach};
use crate::error::{ApiError, Code};
use crate::tools::Handles;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, message)
}

fn breakpoint_response(row: BreakpointRow, agent: String) -> BreakpointResponse {
    BreakpointResponse {
        id: row.id.to_string(),
        agent,
        agent_id: row.agent.to_string(),
        session: row.session.map(|s| s.to_string()),
        at: row.at.into(),
        tool: row.tool,
        created_by: row.created_by,
        created_at: row.created_at.as_millis(),
    }
}

fn stop_response(row: StopRow, agent: String) -> StopResponse {
    let waiting = row.waiting();
    let json = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    StopResponse {
        id: row.id.to_string(),
        agent,
        agent_id: row.agent.to_string(),
        session_id: row.session.to_string(),
        turn_id: row.turn.to_string(),
        place: row.place,
        at: row.at.into(),
        waiting,
        detail: json(&row.detail),
        action: row.action.map(Into::into),
        action_data: row.action_data.as_deref().map(json),
        decided_by: row.decided_by,
        created_at: row.created_at.as_millis(),
        decided_at: row.decided_at.map(|t| t.as_millis()),
    }
}

/// The agents a listing reads, narrowed to `named` when the query names one.
async fn listing(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &Reach,
    named: Option<&str>,
) -> Result<Vec<Option<clade_core::AgentId>>, ApiError> {
    let agent = match named {
        Some(handle) => Some(state.of(tenant).agents().get(handle).await?),
        None => None,
    };
    reach.listing(agent.as_ref())
}

pub(crate) async fn breakpoints(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<BreakpointsQuery>, QueryRejection>,
) -> Result<axum::Json<BreakpointListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let mut rows = Vec::new();
    for agent in listing(&state, &tenant, &reach, query.agent.as_deref()).await? {
        rows.extend(Debugging::from(&state.of(&tenant)).breakpoints(agent).await?);
    }
    rows.sort_by_key(|b| b.id);
    let mut handles = Handles::new(&state, &tenant);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let agent = handles.of(row.agent).await;
        items.push(breakpoint_response(row, agent));
    }
    Ok(axum::Json(BreakpointListResponse { items }))
}

pub(crate) async fn set_breakpoint(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    JsonBody(params): JsonBody<CreateBreakpointParams>,
) -> Result<(StatusCode, axum::Json<BreakpointResponse>), ApiError> {
    let (_, agent) = crate::jobs::scope(&state, &tenant, &reach, &params.agent).await?;
    let session = match params.session.as_deref() {
        Some(id) => {
            let session = crate::sessions::reachable_row(&state, &tenant, &reach, id).await?;
            if session.agent_id != agent.id {
                return Err(invalid(format!(
                    "session {id} is not one of {}'s: name the agent the session belongs to",
                    agent.handle
                )));
            }
            Some(session.id)
        }
        None => None,
    };
    let new = NewBreakpoint { agent: agent.id, session, at: params.at.0, tool: params.tool };
    let row = state.engine.set_breakpoint(tenant.id, new).await?;
    Ok((StatusCode::CREATED, axum::Json(breakpoint_response(row, agent.handle.to_string()))))
}

pub(crate) async fn remove_breakpoint(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id =
        BreakpointId::parse(&id).map_err(|_| clade_store::Error::BreakpointNotFound(id.clone()))?;
    if !reach.is_whole_tenant() {
        let found = Debugging::from(&state.of(&tenant)).breakpoints(None).await?;
        if !found.iter().any(|b| b.id == id && reach.allows(b.agent)) {
            return Err(clade_store::Error::BreakpointNotFound(id.to_string()).into());
        }
    }
    state.engine.remove_breakpoint(tenant.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn stops(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<StopsQuery>, QueryRejection>,
) -> Result<axum::Json<StopListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let all = query.status == StopFilter::All;
    let limit = checked_limit(query.limit)?;
    let mut rows = Vec::new();
    for agent in listing(&state, &tenant, &reach, query.agent.as_deref()).await? {
        rows.extend(Debugging::from(&state.of(&tenant)).stops(agent, all, limit).await?);
    }
    rows.sort_by_key(|s| std::cmp::Reverse(s.id));
    rows.truncate(limit as usize);
    let mut handles = Handles::new(&state, &tenant);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let agent = handles.of(row.agent).await;
        items.push(stop_response(row, agent));
    }
    Ok(axum::Json(StopListResponse { items }))
}

/// The stop `id` names, if the caller reaches its agent.
async fn reachable_stop(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &Reach,
    id: &str,
) -> Result<StopRow, ApiError> {
    let id = StopId::parse(id).map_err(|_| clade_store::Error::StopNotFound(id.to_owned()))?;
    let stop = Debugging::from(&state.of(tenant)).stop(id).await?;
    if !reach.allows(stop.agent) {
        return Err(clade_store::Error::StopNotFound(id.to_string()).into());
    }
    Ok(stop)
}

pub(crate) async fn stop(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<StopResponse>, ApiError> {
    let stop = reachable_stop(&state, &tenant, &reach, &id).await?;
    let agent = Handles::new(&state, &tenant).of(stop.agent).await;
    Ok(axum::Json(stop_response(stop, agent)))
}

pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(params): JsonBody<ResumeStopParams>,
) -> Result<axum::Json<StopResponse>, ApiError> {
    let stop = reachable_stop(&state, &tenant, &reach, &id).await?;
    let order = clade_runtime::StopOrder {
        action: params.action.0,
        arguments: params.arguments,
        result: params.result,
    };
    let by = format!("tenant {} (api)", tenant.name);
    let row = state.engine.decide_stop(tenant.id, stop.id, order, &by).await?;
    let agent = Handles::new(&state, &tenant).of(row.agent).await;
    Ok(axum::Json(stop_response(row, agent)))
}
