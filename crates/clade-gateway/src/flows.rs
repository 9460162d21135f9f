//! Flows (`clade-flow`): `POST /v1/flows/check` checks a flow file, `POST /v1/flows/runs`
//! starts a run of one, `GET /v1/flows/runs[/{id}]` lists and shows runs, and
//! `POST /v1/flows/runs/{id}/cancel|pause|resume` steers one.
//!
//! A flow drives several agents of its tenant, so only a token that reaches the whole tenant
//! uses these routes; a token limited to some agents finds no runs and starts none. Runs are
//! read through the caller's tenant, so another tenant's run id reads as missing.

use std::path::Path as FilePath;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use clade_core::{ExecutionId, ExecutionKind, Tenant};
use clade_flow::run::{RunError, StartRun};
use clade_protocol as api;
use clade_store::ExecutionRow;

use crate::AppState;
use crate::agents::{JsonBody, checked_limit, query_rejection};
use crate::auth::{Caller, Reach};
use crate::error::{ApiError, Code};

/// The name a flow's text goes by in problems when the request gives none.
const DEFAULT_FILE: &str = "flow.yaml";
/// The longest file name a request may give (`FlowCheckParams::file`'s `maxLength`).
const MAX_FILE_NAME: usize = 256;

fn whole_tenant(reach: &Reach) -> Result<(), ApiError> {
    if reach.is_whole_tenant() {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Forbidden,
        "a flow drives several agents of the tenant: use a token that reaches all of them (this one is limited to some agents)",
    ))
}

fn run_id(text: &str) -> Result<ExecutionId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::new(Code::InvalidRequest, format!("{text:?} is not a run id")))
}

fn run_error(err: RunError) -> ApiError {
    match err {
        RunError::Invalid(_) | RunError::Inputs(_) | RunError::TemplateAgent { .. } => {
            ApiError::new(Code::InvalidFlow, err.to_string())
        }
        RunError::UnknownAgent { .. } => ApiError::new(Code::AgentNotFound, err.to_string()),
        RunError::NotFound(_) => ApiError::new(Code::RunNotFound, err.to_string()),
        RunError::TooMany => ApiError::new(Code::QuotaExceeded, err.to_string()),
        RunError::Ended { .. } => ApiError::new(Code::RunEnded, err.to_string()),
        RunError::Store(store) => store.into(),
        RunError::Unreadable(..) => ApiError::internal(err),
    }
}

pub(crate) async fn check(
    Extension(Caller(_, _, _)): Extension<Caller>,
    JsonBody(params): JsonBody<api::FlowCheckParams>,
) -> Result<axum::Json<api::FlowCheckResponse>, ApiError> {
    let file = file_name(params.file)?;
    Ok(axum::Json(checked(&params.flow, &file)))
}

/// The name problems give the flow's text: the request's (at most 256 characters, as the
/// document says), else `flow.yaml`.
fn file_name(file: Option<String>) -> Result<String, ApiError> {
    match file {
        Some(file) if file.chars().count() > MAX_FILE_NAME => Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "file: a name of at most {MAX_FILE_NAME} characters, not {}",
                file.chars().count()
            ),
        )),
        Some(file) => Ok(file),
        None => Ok(DEFAULT_FILE.to_owned()),
    }
}

/// What `POST /v1/flows/check` answers for `text`.
pub fn checked(text: &str, file: &str) -> api::FlowCheckResponse {
    match clade_flow::parse(text, FilePath::new(file)) {
        Ok(flow) => api::FlowCheckResponse {
            ok: true,
            problems: Vec::new(),
            name: Some(flow.name.clone()),
            tasks: flow.task_order().into_iter().map(str::to_owned).collect(),
        },
        Err(err) => api::FlowCheckResponse {
            ok: false,
            problems: err
                .problems()
                .into_iter()
                .map(|p| api::FlowProblem {
                    line: p.place.line,
                    column: p.place.column,
                    message: p.message,
                })
                .collect(),
            name: None,
            tasks: Vec::new(),
        },
    }
}

pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    JsonBody(params): JsonBody<api::StartFlowRunParams>,
) -> Result<(axum::http::StatusCode, axum::Json<api::FlowRunResponse>), ApiError> {
    whole_tenant(&reach)?;
    let start = StartRun {
        source: params.flow,
        file: file_name(params.file)?,
        inputs: params.inputs,
        id: None,
    };
    let row = state.flows.start(&tenant, start).await.map_err(run_error)?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(response(&state, row)?)))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<api::FlowRunsQuery>, QueryRejection>,
) -> Result<axum::Json<api::FlowRunListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    if !reach.is_whole_tenant() {
        return Ok(axum::Json(api::FlowRunListResponse { runs: Vec::new() }));
    }
    let rows = state.of(&tenant).executions().list_of(ExecutionKind::Flow, limit).await?;
    let runs = rows.into_iter().map(|row| response(&state, row)).collect::<Result<_, _>>()?;
    Ok(axum::Json(api::FlowRunListResponse { runs }))
}

/// The run `id` of the caller's tenant, read as missing for a token limited to some agents.
async fn reachable(
    state: &AppState,
    tenant: &Tenant,
    reach: &Reach,
    id: &str,
) -> Result<ExecutionRow, ApiError> {
    let id = run_id(id)?;
    if !reach.is_whole_tenant() {
        return Err(run_error(RunError::NotFound(id)));
    }
    state.flows.get(tenant.id, id).await.map_err(run_error)
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<api::FlowRunResponse>, ApiError> {
    let row = reachable(&state, &tenant, &reach, &id).await?;
    Ok(axum::Json(response(&state, row)?))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<api::FlowRunResponse>, ApiError> {
    let row = reachable(&state, &tenant, &reach, &id).await?;
    let row = state.flows.cancel(tenant.id, row.id).await.map_err(run_error)?;
    Ok(axum::Json(response(&state, row)?))
}

pub(crate) async fn pause(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<api::FlowRunResponse>, ApiError> {
    let row = reachable(&state, &tenant, &reach, &id).await?;
    let row = state.flows.pause(tenant.id, row.id).await.map_err(run_error)?;
    Ok(axum::Json(response(&state, row)?))
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<api::FlowRunResponse>, ApiError> {
    let row = reachable(&state, &tenant, &reach, &id).await?;
    let row = state.flows.resume(&tenant, row.id).await.map_err(run_error)?;
    Ok(axum::Json(response(&state, row)?))
}

/// A run as the API shows it.
fn response(state: &AppState, row: ExecutionRow) -> Result<api::FlowRunResponse, ApiError> {
    let results = state.flows.results(&row).map_err(run_error)?;
    let input = clade_flow::run::RunInput::of(&row).map_err(run_error)?;
    let order = clade_flow::parse(&input.source, FilePath::new(&input.file))
        .map(|flow| flow.task_order().into_iter().map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_else(|_| results.keys().cloned().collect());
    let tasks = order
        .into_iter()
        .filter_map(|id| {
            let result = results.get(&id)?.clone();
            Some(api::FlowTaskEntry {
                id,
                result: api::FlowTaskResponse {
                    status: clade_core::FlowTaskStatus::from(result.status).into(),
                    output: result.output,
                    outputs: result.outputs,
                    error: result.error,
                    attempts: result.attempts,
                    turns: result.turns,
                },
            })
        })
        .collect();
    Ok(api::FlowRunResponse {
        id: row.id.to_string(),
        flow: input.flow,
        status: row.status.into(),
        error: row.error,
        inputs: input.inputs,
        tasks,
        created_at: row.created_at.as_millis(),
        updated_at: row.updated_at.as_millis(),
        finished_at: row.finished_at.map(|t| t.as_millis()),
    })
}
