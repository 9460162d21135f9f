//! Operators' control of what agents run: `POST /v1/agents/{handle}/pause` and `/resume`
//! (every session of the agent), `POST /v1/sessions/{id}/pause` (one session; its `/resume`
//! lifts it), and `GET /v1/agents/{handle}/status`, what an agent runs now. A pause is stored
//! and audited through the caller's [`clade_store::TenantStore`], then the engine holds back the
//! sessions it names: turns under way finish, no new one starts, events wait.

use axum::Extension;
use axum::extract::{Path, State};
use clade_store::{PauseRow, SessionActivity};

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::{
    AgentStatusResponse, PauseParams, PauseResponse, SessionActivityResponse, UnpauseResponse,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::scope;

/// Sessions a status lists, at most.
const STATUS_SESSIONS: u32 = 100;

fn pause_response(row: &PauseRow) -> PauseResponse {
    PauseResponse {
        session: row.session.map(|s| s.to_string()),
        reason: row.reason.clone(),
        paused_at: row.created_at.as_millis(),
    }
}

fn activity(row: SessionActivity, now: clade_core::Timestamp) -> SessionActivityResponse {
    let state = row.state();
    SessionActivityResponse {
        session: row.session.to_string(),
        platform: row.platform,
        channel: row.channel,
        actor: row.actor,
        state: state.to_owned(),
        open_events: row.open_events,
        turn: row.turn.map(|t| t.to_string()),
        turn_age_ms: row.turn_started_at.map(|at| (now.as_millis() - at.as_millis()).max(0)),
        turn_steps: row.turn_steps,
    }
}

pub(crate) async fn pause_agent(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    JsonBody(params): JsonBody<PauseParams>,
) -> Result<axum::Json<PauseResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let row = store.pauses().pause(agent.id, None, params.reason).await?;
    state.engine.paused(&row);
    Ok(axum::Json(pause_response(&row)))
}

pub(crate) async fn resume_agent(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<UnpauseResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let unpaused = store.pauses().unpause(agent.id, None).await?;
    state.engine.unpaused(tenant.id, agent.id, None).await?;
    Ok(axum::Json(UnpauseResponse { unpaused }))
}

pub(crate) async fn pause_session(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(params): JsonBody<PauseParams>,
) -> Result<axum::Json<PauseResponse>, ApiError> {
    let session = crate::sessions::reachable_row(&state, &tenant, &reach, &id).await?;
    let store =
        state.store.acting_as(format!("tenant {} (api)", tenant.name)).tenant_scope(tenant.id);
    let row = store.pauses().pause(session.agent_id, Some(session.id), params.reason).await?;
    state.engine.paused(&row);
    Ok(axum::Json(pause_response(&row)))
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<AgentStatusResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let pauses = store.pauses().of_agent(agent.id).await?;
    let sessions = store.pauses().agent_status(agent.id, STATUS_SESSIONS).await?;
    let now = state.store.now();
    Ok(axum::Json(AgentStatusResponse {
        agent: agent.handle.to_string(),
        paused: pauses.iter().find(|p| p.session.is_none()).map(pause_response),
        sessions: sessions.into_iter().map(|s| activity(s, now)).collect(),
    }))
}

/// `GET /v1/agents/{handle}/lineage`: who made the agent, and the tree of agents it made
/// (bounded: agents make at most 10 children, 3 levels deep). Agents the caller's token does
/// not reach are left out.
pub(crate) async fn lineage(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<crate::api::LineageResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let lineage = store.lineage();
    let ancestors = lineage
        .ancestors_of(agent.id)
        .await?
        .into_iter()
        .filter(|(id, _)| reach.allows(*id))
        .map(|(_, handle)| handle)
        .collect();
    // Level by level, each node's children in place (paths index into the tree built so far).
    let mut children: Vec<crate::api::LineageNode> = Vec::new();
    let mut level: Vec<(clade_core::AgentId, Vec<usize>)> = vec![(agent.id, Vec::new())];
    for _ in 0..=clade_store::lineage::MAX_DEPTH {
        let mut next = Vec::new();
        for (parent, path) in level {
            for (child, handle) in lineage.children_of(parent).await? {
                if !reach.allows(child) {
                    continue;
                }
                let siblings = at_path(&mut children, &path);
                siblings.push(crate::api::LineageNode { handle, children: Vec::new() });
                let mut child_path = path.clone();
                child_path.push(siblings.len() - 1);
                next.push((child, child_path));
            }
        }
        level = next;
    }
    Ok(axum::Json(crate::api::LineageResponse {
        agent: agent.handle.to_string(),
        ancestors,
        children,
    }))
}

/// The children list of the node `path` leads to (the root's for an empty path).
fn at_path<'a>(
    nodes: &'a mut Vec<crate::api::LineageNode>,
    path: &[usize],
) -> &'a mut Vec<crate::api::LineageNode> {
    let Some((first, rest)) = path.split_first() else { return nodes };
    if *first >= nodes.len() {
        return nodes;
    }
    at_path(&mut nodes[*first].children, rest)
}
