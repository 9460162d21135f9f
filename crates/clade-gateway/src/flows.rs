//! Flows (`clade-flow`): `POST /v1/flows/check` checks a flow file; `POST /v1/flows` stores
//! one (versioned), `GET /v1/flows[/{name}[/versions]]` reads them, `DELETE /v1/flows/{name}`
//! deletes one; `POST /v1/flows/runs` starts a run of a text given inline and
//! `POST /v1/flows/{name}/runs` one of a stored flow, pinned to a version;
//! `GET /v1/flows/runs[/{id}]` and `GET /v1/flows/{name}/runs` list and show runs, and
//! `POST /v1/flows/runs/{id}/cancel|pause|resume|retry` steers one.
//!
//! A flow drives several agents of its tenant, so only a token that reaches the whole tenant
//! uses these routes; a token limited to some agents finds no runs and starts none. Runs are
//! read through the caller's tenant, so another tenant's run id reads as missing.

use std::path::Path as FilePath;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use clade_core::{ExecutionId, ExecutionKind, Tenant};
use clade_flow::StartStored;
use clade_flow::run::{RunError, StartRun};
use clade_protocol as api;
use clade_store::{ExecutionRow, StoredFlows};

use crate::AppState;
use crate::agents::{JsonBody, checked_limit, query_rejection};
use crate::auth::{Caller, Granted, Reach};
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
        RunError::Invalid(_)
        | RunError::Inputs(_)
        | RunError::TemplateAgent { .. }
        | RunError::ReservedName(_) => ApiError::new(Code::InvalidFlow, err.to_string()),
        RunError::UnderWay { .. } => ApiError::new(Code::RunUnderWay, err.to_string()),
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

/// A flow that makes agents for its runs (`agents.NAME.template`) is started only by a token
/// that may make agents (`admin`, as `POST /v1/agents` asks): one that may only operate the
/// tenant's agents gets no new ones through a flow. A text that does not parse is left to the
/// runner, which names its problems.
pub(crate) fn may_make_agents(granted: &Granted, source: &str) -> Result<(), ApiError> {
    let Ok(flow) = clade_flow::parse(source, FilePath::new("flow.yaml")) else { return Ok(()) };
    if clade_flow::made::makes_any(&flow) && !granted.allows(&[clade_core::Scope::Admin]) {
        return Err(ApiError::new(
            Code::Forbidden,
            "this flow makes agents for its runs (agents.NAME.template), which needs a token with the admin scope, as POST /v1/agents does: use one, or name existing agents by handle",
        ));
    }
    Ok(())
}

pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Extension(granted): Extension<Granted>,
    JsonBody(params): JsonBody<api::StartFlowRunParams>,
) -> Result<(axum::http::StatusCode, axum::Json<api::FlowRunResponse>), ApiError> {
    whole_tenant(&reach)?;
    may_make_agents(&granted, &params.flow)?;
    let start = StartRun {
        source: params.flow,
        file: file_name(params.file)?,
        inputs: params.inputs,
        ..StartRun::default()
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
    runs_of(&state, &tenant, &reach, None, checked_limit(query.limit)?).await
}

/// How many of the tenant's newest runs `GET /v1/flows/{name}/runs` looks through.
const RUNS_SEARCHED: u32 = 1_000;

/// The tenant's newest flow runs, of flow `name` only when given.
async fn runs_of(
    state: &AppState,
    tenant: &Tenant,
    reach: &Reach,
    name: Option<&str>,
    limit: u32,
) -> Result<axum::Json<api::FlowRunListResponse>, ApiError> {
    if !reach.is_whole_tenant() {
        return Ok(axum::Json(api::FlowRunListResponse { runs: Vec::new() }));
    }
    let searched = if name.is_some() { RUNS_SEARCHED } else { limit };
    let rows = state.of(tenant).executions().list_of(ExecutionKind::Flow, searched).await?;
    let mut runs = Vec::new();
    for row in rows {
        let run = response(state, row)?;
        if name.is_none_or(|name| run.flow == name) {
            runs.push(run);
        }
        if runs.len() >= limit as usize {
            break;
        }
    }
    Ok(axum::Json(api::FlowRunListResponse { runs }))
}

pub(crate) async fn list_of_flow(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(name): Path<String>,
    query: Result<Query<api::FlowRunsQuery>, QueryRejection>,
) -> Result<axum::Json<api::FlowRunListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    let name = flow_name(&name)?;
    let runs = runs_of(&state, &tenant, &reach, Some(&name), limit).await?;
    // A name the tenant has neither stored nor run is no flow of its.
    if runs.runs.is_empty() && stored(&state, &tenant, &reach, &name, None).await.is_err() {
        return Err(clade_store::Error::FlowNotFound(name).into());
    }
    Ok(runs)
}

/// The tenant's stored flow `name` (at `version`, else its newest), read as missing for a
/// token limited to some agents, which sees no stored flow.
async fn stored(
    state: &AppState,
    tenant: &Tenant,
    reach: &Reach,
    name: &str,
    version: Option<i64>,
) -> Result<clade_store::FlowVersion, ApiError> {
    sees_flows(reach, name)?;
    Ok(StoredFlows::scoped(&state.of(tenant)).get(name, version).await?)
}

/// A token limited to some agents sees no stored flow: `name` reads as missing to it.
fn sees_flows(reach: &Reach, name: &str) -> Result<(), ApiError> {
    if reach.is_whole_tenant() {
        return Ok(());
    }
    Err(clade_store::Error::FlowNotFound(name.to_owned()).into())
}

/// A stored flow's name from a path: a handle (the flow file's `name`), not a reserved word.
fn flow_name(text: &str) -> Result<String, ApiError> {
    let handle = clade_core::Handle::parse(text).map_err(|e| {
        ApiError::new(Code::InvalidRequest, format!("{text:?} is not a flow's name: {e}"))
    })?;
    if clade_flow::RESERVED_NAMES.contains(&handle.as_str()) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("{text:?} is a word of the API's own, never a stored flow's name"),
        ));
    }
    Ok(handle.as_str().to_owned())
}

/// A version a request names: from 1 to `MAX_FLOW_VERSION`, as the document says.
fn version_of(version: Option<u64>) -> Result<Option<i64>, ApiError> {
    match version {
        None => Ok(None),
        Some(v) if (1..=api::MAX_FLOW_VERSION).contains(&v) => Ok(Some(v as i64)),
        Some(v) => Err(ApiError::new(
            Code::InvalidRequest,
            format!("version: a number from 1 to {}, not {v}", api::MAX_FLOW_VERSION),
        )),
    }
}

/// A stored flow's version as the API shows it.
fn flow_response(flow: clade_store::FlowVersion, with_source: bool) -> api::FlowResponse {
    let file = clade_flow::stored::file_of(&flow.name);
    let tasks = clade_flow::parse(&flow.source, FilePath::new(&file))
        .map(|parsed| parsed.task_order().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    api::FlowResponse {
        name: flow.name,
        version: flow.version,
        sha256: flow.sha256,
        saved_by: flow.saved_by,
        created_at: flow.created_at.as_millis(),
        tasks,
        source: with_source.then_some(flow.source),
    }
}

pub(crate) async fn save(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    JsonBody(params): JsonBody<api::FlowCheckParams>,
) -> Result<(axum::http::StatusCode, axum::Json<api::FlowResponse>), ApiError> {
    whole_tenant(&reach)?;
    let file = file_name(params.file)?;
    let saved = state.flows.save(tenant.id, &params.flow, &file).await.map_err(run_error)?;
    let status =
        if saved.created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    Ok((status, axum::Json(flow_response(saved.flow, false))))
}

pub(crate) async fn list_flows(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<api::FlowListResponse>, ApiError> {
    if !reach.is_whole_tenant() {
        return Ok(axum::Json(api::FlowListResponse { flows: Vec::new() }));
    }
    let flows = StoredFlows::scoped(&state.of(&tenant)).list().await?;
    let flows = flows.into_iter().map(|flow| flow_response(flow, false)).collect();
    Ok(axum::Json(api::FlowListResponse { flows }))
}

pub(crate) async fn show_flow(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(name): Path<String>,
    query: Result<Query<api::FlowVersionQuery>, QueryRejection>,
) -> Result<axum::Json<api::FlowResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let name = flow_name(&name)?;
    let version = version_of(query.version)?;
    let flow = stored(&state, &tenant, &reach, &name, version).await?;
    Ok(axum::Json(flow_response(flow, true)))
}

pub(crate) async fn versions(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<axum::Json<api::FlowListResponse>, ApiError> {
    let name = flow_name(&name)?;
    let flows = if reach.is_whole_tenant() {
        StoredFlows::scoped(&state.of(&tenant)).versions(&name).await?
    } else {
        Vec::new()
    };
    if flows.is_empty() {
        return Err(clade_store::Error::FlowNotFound(name).into());
    }
    let flows = flows.into_iter().map(|flow| flow_response(flow, false)).collect();
    Ok(axum::Json(api::FlowListResponse { flows }))
}

pub(crate) async fn delete_flow(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let name = flow_name(&name)?;
    sees_flows(&reach, &name)?;
    StoredFlows::scoped(&state.of(&tenant)).delete(&name).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

pub(crate) async fn start_stored(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Extension(granted): Extension<Granted>,
    Path(name): Path<String>,
    JsonBody(params): JsonBody<api::StartStoredFlowRunParams>,
) -> Result<(axum::http::StatusCode, axum::Json<api::FlowRunResponse>), ApiError> {
    let name = flow_name(&name)?;
    let version = version_of(params.version)?;
    let flow = stored(&state, &tenant, &reach, &name, version).await?;
    may_make_agents(&granted, &flow.source)?;
    let start = StartStored { name, version, inputs: params.inputs, id: None };
    let row = state.flows.start_stored(&tenant, start).await.map_err(run_error)?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(response(&state, row)?)))
}

pub(crate) async fn retry(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Extension(granted): Extension<Granted>,
    Path(id): Path<String>,
) -> Result<(axum::http::StatusCode, axum::Json<api::FlowRunResponse>), ApiError> {
    let row = reachable(&state, &tenant, &reach, &id).await?;
    if let Ok(input) = clade_flow::run::RunInput::of(&row) {
        may_make_agents(&granted, &input.source)?;
    }
    let row = state.flows.retry(&tenant, row.id).await.map_err(run_error)?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(response(&state, row)?)))
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
    Ok(axum::Json(with_usage(&state, row).await?))
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
        version: input.version,
        retry_of: input.retry_of,
        scheduled_by: input.scheduled.map(|by| api::FlowRunScheduledBy {
            job_id: by.job,
            job: by.name,
            scheduled_at: by.scheduled_at,
        }),
        status: row.status.into(),
        error: row.error,
        inputs: input.inputs,
        tasks,
        created_at: row.created_at.as_millis(),
        updated_at: row.updated_at.as_millis(),
        finished_at: row.finished_at.map(|t| t.as_millis()),
        usage: None,
    })
}

/// A run as `GET /v1/flows/runs/{id}` shows it: with what its tasks spent.
async fn with_usage(state: &AppState, row: ExecutionRow) -> Result<api::FlowRunResponse, ApiError> {
    let tenant = row.tenant_id;
    let recorded = state.flows.recorded_usage(&row);
    let mut run = response(state, row)?;
    let turns: Vec<String> =
        run.tasks.iter().flat_map(|t| t.result.turns.iter().cloned()).collect();
    let usage = match recorded {
        Some(usage) => usage,
        None => clade_flow::budget::usage_of(state.flows.store(), tenant, &turns).await?.into(),
    };
    run.usage = Some(api::FlowUsage {
        model_calls: usage.model_calls,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd: usage.cost_micros as f64 / 1e6,
    });
    Ok(run)
}
