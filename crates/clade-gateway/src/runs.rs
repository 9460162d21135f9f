//! Runs (durable executions): `GET /v1/agents/{handle}/runs` lists an agent's, `GET
//! /v1/runs/{id}` shows one, `POST /v1/runs/{id}/cancel` cancels a branch's or worker's run,
//! and `POST /v1/sessions/{id}/forks` starts a branch or a worker of a session as its model's
//! tools would. Everything is read through the caller's [`clade_store::TenantStore`]; a run of
//! an agent the token does not reach reads as missing.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use clade_core::{ExecutionId, ExecutionKind};
use clade_store::{ExecutionOwner, ExecutionRow, ForkRow, NewFork, RunFilter};

use crate::AppState;
use crate::agents::{JsonBody, checked_limit, query_rejection};
use crate::api::{ForkResponse, RunListResponse, RunResponse, RunsQuery, StartForkParams};
use crate::auth::{Caller, Reach};
use crate::error::{ApiError, Code};
use crate::jobs::scope;

fn fork_response(fork: &ForkRow) -> ForkResponse {
    ForkResponse {
        id: fork.session.to_string(),
        parent_session: fork.parent_session.to_string(),
        task: fork.task.clone(),
        tools: fork.tools.clone(),
        execution: fork.execution.to_string(),
        progress: fork.progress.clone(),
        progress_at: fork.progress_at.map(|t| t.as_millis()),
    }
}

/// A run as the API shows it (and the CLI's `--json`).
pub fn run_response(row: ExecutionRow, fork: Option<&ForkRow>) -> RunResponse {
    RunResponse {
        id: row.id.to_string(),
        kind: row.kind.into(),
        status: row.status.into(),
        agent_id: row.agent_id.to_string(),
        session: match row.owner {
            ExecutionOwner::Session(session) => Some(session.to_string()),
            _ => None,
        },
        input: row.input,
        output: row.output,
        error: row.error,
        created_at: row.created_at.as_millis(),
        updated_at: row.updated_at.as_millis(),
        finished_at: row.finished_at.map(|t| t.as_millis()),
        fork: fork.map(fork_response),
    }
}

/// The longest task over the API, in characters (at most 4 bytes each: within the 32 KiB a
/// task may hold).
const MAX_TASK_CHARS: usize = 8192;

fn run_id(text: &str) -> Result<ExecutionId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::new(Code::InvalidRequest, format!("{text:?} is not a run id")))
}

/// The run `id`, if the token reaches its agent (and its session, for a token leased sessions).
async fn reachable_run(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &Reach,
    id: &str,
) -> Result<(ExecutionRow, Option<ForkRow>), ApiError> {
    let store = state.of(tenant);
    let row = store.executions().get(run_id(id)?).await?;
    let reached = match row.owner {
        ExecutionOwner::Session(session) => reach.allows_session(session, row.agent_id),
        _ => reach.allows(row.agent_id),
    };
    if !reached {
        return Err(clade_store::Error::ExecutionNotFound(id.to_owned()).into());
    }
    let fork = match row.kind {
        ExecutionKind::Branch | ExecutionKind::Worker => store.forks().of_execution(row.id).await?,
        _ => None,
    };
    Ok((row, fork))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<axum::Json<RunListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let filter = RunFilter {
        agent: Some(agent.id),
        kind: query.kind.map(|k| k.0),
        open_only: query.open.unwrap_or(false),
        limit,
    };
    let rows = store.forks().runs(&filter).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        if let ExecutionOwner::Session(session) = row.owner
            && !reach.allows_session(session, row.agent_id)
        {
            continue;
        }
        let fork = match row.kind {
            ExecutionKind::Branch | ExecutionKind::Worker => {
                store.forks().of_execution(row.id).await?
            }
            _ => None,
        };
        items.push(run_response(row, fork.as_ref()));
    }
    Ok(axum::Json(RunListResponse { items }))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<RunResponse>, ApiError> {
    let (row, fork) = reachable_run(&state, &tenant, &reach, &id).await?;
    Ok(axum::Json(run_response(row, fork.as_ref())))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<RunResponse>, ApiError> {
    let (row, fork) = reachable_run(&state, &tenant, &reach, &id).await?;
    let Some(fork) = fork else {
        return Err(ApiError::new(
            Code::RunNotCancellable,
            format!(
                "run {id} is a {}: only a branch's or worker's run is cancelled here (a turn with POST /v1/sessions/{{id}}/cancel)",
                row.kind
            ),
        ));
    };
    if fork.execution == row.id {
        state.engine.cancel_run(tenant.id, *row.id.as_bytes()).await?;
    }
    let (row, fork) = reachable_run(&state, &tenant, &reach, &id).await?;
    Ok(axum::Json(run_response(row, fork.as_ref())))
}

pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(params): JsonBody<StartForkParams>,
) -> Result<(axum::http::StatusCode, axum::Json<RunResponse>), ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::new(Code::InvalidRequest, "Idempotency-Key must be ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let (run, duplicate) = start_fork(&state, &caller, &id, params, key).await?;
    let status =
        if duplicate { axum::http::StatusCode::OK } else { axum::http::StatusCode::CREATED };
    Ok((status, axum::Json(run)))
}

/// Starts a branch or worker of the session `id` as its model's tools would; the run, and
/// whether `key` had started it before. `POST /v1/sessions/{id}/forks` and the AgentHub's
/// `Spawn` are this.
pub(crate) async fn start_fork(
    state: &AppState,
    Caller(tenant, _, reach): &Caller,
    id: &str,
    params: StartForkParams,
    key: Option<String>,
) -> Result<(RunResponse, bool), ApiError> {
    let session = crate::sessions::reachable_row(state, tenant, reach, id).await?;
    let kind = params.kind.0;
    if params.task.trim().is_empty() || params.task.chars().count() > MAX_TASK_CHARS {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "task: say what is to be done, in 1 to {MAX_TASK_CHARS} characters, not only spaces"
            ),
        ));
    }
    let sessions = &state.engine.settings().sessions;
    let limits = match kind {
        ExecutionKind::Branch => sessions.branch_limits(),
        _ => sessions.worker_limits(),
    };
    let tools = params.tools.unwrap_or_default();
    // What the request cannot show by itself (the agent's tools, the forks running now) is
    // `invalid_fork`.
    let refused = |message: String| ApiError::new(Code::InvalidFork, message);
    if kind == ExecutionKind::Branch && !tools.is_empty() {
        return Err(refused(
            "tools: a branch has its agent's tools; only a worker is given some".into(),
        ));
    }
    let key = key.unwrap_or_else(|| ExecutionId::generate(state.store.now()).to_string());
    crate::events::check_field("Idempotency-Key", &key)?;
    let forked = state
        .engine
        .fork(NewFork {
            tenant: tenant.id,
            agent: session.agent_id,
            kind,
            parent_session: session.id,
            parent_turn: None,
            task: params.task,
            tools,
            key: format!("api:{key}"),
            max_running: limits.max_per_session,
        })
        .await
        .map_err(|err| match err {
            clade_runtime::engine::Error::Store(clade_store::Error::InvalidInput(message)) => {
                refused(message)
            }
            other => other.into(),
        })?;
    let (row, fork) =
        reachable_run(state, tenant, reach, &forked.fork.execution.to_string()).await?;
    Ok((run_response(row, fork.as_ref()), forked.accepted.duplicate))
}
