//! `/v1/agents/{handle}/jobs`: an agent's scheduled jobs and the record of their runs. A job
//! is checked as every edge checks one (`clade_sched::new_job`), and created, enabled,
//! disabled and removed with an audit record naming the tenant that asked.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clade_core::Tenant;
use clade_store::{JobRow, JobRun, RunOutcome, TenantStore};

use crate::AppState;
use crate::agents::{JsonBody, checked_limit, query_rejection};
use crate::api::{
    CreateJobParams, JobListResponse, JobResponse, JobRunListResponse, JobRunResponse,
    JobRunsQuery, UpdateJobParams,
};
use crate::auth::{Caller, Reach};
use crate::error::{ApiError, Code};

/// A job as the API (and the CLI's `--json`) shows it.
pub fn job_response(job: JobRow) -> JobResponse {
    JobResponse {
        id: job.id.to_string(),
        agent: job.agent,
        name: job.name,
        schedule: job.schedule,
        zone: job.zone,
        misfire: job.misfire,
        target: job.target.to_string(),
        jitter_secs: job.jitter_secs,
        prompt: job.prompt,
        enabled: job.enabled,
        disabled_reason: job.disabled_reason,
        next_at: job.next_at.map(|t| t.as_millis()),
        settled_at: job.settled_at.as_millis(),
        skipped: job.skipped,
        created_at: job.created_at.as_millis(),
    }
}

/// A run as the API (and the CLI's `--json`) shows it.
pub fn run_response(run: JobRun) -> JobRunResponse {
    let (mut error, mut turn_id, mut turn_status, mut flow_run_id, mut flow_run_status) =
        (None, None, None, None, None);
    match run.outcome {
        RunOutcome::Refused(why) => error = Some(why),
        RunOutcome::Turn { id, status } => {
            turn_id = Some(id.to_string());
            turn_status = Some(status.into());
        }
        RunOutcome::Flow { run, status } => {
            flow_run_id = Some(run.to_string());
            flow_run_status = status.map(Into::into);
        }
        RunOutcome::Waiting | RunOutcome::Gone => {}
    }
    JobRunResponse {
        scheduled_at: run.scheduled_at.as_millis(),
        fired_at: run.fired_at.as_millis(),
        delivered: run.event_id.is_some() || flow_run_id.is_some(),
        error,
        event_id: run.event_id.map(|e| e.to_string()),
        turn_id,
        turn_status,
        flow_run_id,
        flow_run_status,
    }
}

/// The tenant's store as the caller sees it, acting as the caller (for audit records), and the
/// agent it reaches by `handle`.
pub(crate) async fn scope(
    state: &AppState,
    tenant: &Tenant,
    reach: &Reach,
    handle: &str,
) -> Result<(TenantStore, clade_core::Agent), ApiError> {
    let store =
        state.store.acting_as(format!("tenant {} (api)", tenant.name)).tenant_scope(tenant.id);
    let agent = store.agents().get(handle).await?;
    reach.agent(&agent)?;
    Ok((store, agent))
}

/// Refuses a change to a job `clade.yaml` declares (a heartbeat): the file is its source.
fn declared(name: &str) -> Result<(), ApiError> {
    if name.starts_with('_') {
        return Err(ApiError::new(
            Code::JobDeclared,
            format!("job {name:?} is declared in clade.yaml (heartbeats): change it there"),
        ));
    }
    Ok(())
}

fn job_not_found(handle: &str, name: &str) -> ApiError {
    ApiError::new(
        Code::JobNotFound,
        format!("agent {handle} has no job {name:?}: list them with GET /v1/agents/{handle}/jobs"),
    )
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<JobListResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let items = store.jobs().list(Some(agent.id)).await?.into_iter().map(job_response).collect();
    Ok(axum::Json(JobListResponse { items }))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Extension(granted): Extension<crate::auth::Granted>,
    Path(handle): Path<String>,
    JsonBody(params): JsonBody<CreateJobParams>,
) -> Result<impl IntoResponse, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let spec = clade_sched::JobSpec {
        name: params.name,
        schedule: params.schedule,
        zone: params.zone,
        misfire: params.misfire,
        target: params.target,
        // Past u32, it is past the hour `new_job` allows, and refused as such.
        jitter_secs: params.jitter_secs.map(|secs| u32::try_from(secs).unwrap_or(u32::MAX)),
        prompt: params.prompt,
    };
    let new =
        clade_sched::new_job(&spec, tenant.id, agent.id, state.store.now()).map_err(
            |e| match e {
                // The document's pattern says so: a malformed request, not an unusable job.
                clade_sched::JobError::Name(_) => {
                    ApiError::new(Code::InvalidRequest, e.to_string())
                }
                _ => ApiError::new(Code::InvalidJob, e.to_string()),
            },
        )?;
    // A flow's run may ask any of the tenant's agents: a token limited to some finds no flow,
    // as on the flows' own routes.
    if let clade_store::JobTarget::Flow { name, version } = &new.target {
        if !reach.is_whole_tenant() {
            return Err(clade_store::Error::FlowNotFound(name.clone()).into());
        }
        let flow = clade_store::StoredFlows::scoped(&store).get(name, *version).await?;
        crate::flows::may_make_agents(&granted, &flow.source)?;
    }
    // The operator schedules as it likes; a tenant's tokens within its quotas.
    if crate::config::operator_only(&tenant, &reach).is_err() {
        let owned = store.jobs().list(Some(agent.id)).await?.len();
        state.limits.job_limits(&tenant, agent.handle.as_str()).check(&new, owned).map_err(
            |e| match e {
                clade_sched::JobError::TooMany { .. } => {
                    ApiError::new(Code::QuotaExceeded, e.to_string())
                }
                _ => ApiError::new(Code::InvalidJob, e.to_string()),
            },
        )?;
    }
    let job = store.create_job(new).await.map_err(|err| match err {
        clade_store::Error::JobExists(name) => ApiError::new(
            Code::JobExists,
            format!("agent {handle} already has a job named {name:?}: choose another name, or remove it first"),
        ),
        clade_store::Error::SessionNotFound(id) => ApiError::new(
            Code::InvalidJob,
            format!("target session {id} is not a session of agent {handle}: list sessions with GET /v1/sessions"),
        ),
        other => other.into(),
    })?;
    tracing::info!(job_id = %job.id, "job created");
    Ok((StatusCode::CREATED, axum::Json(job_response(job))))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, name)): Path<(String, String)>,
) -> Result<axum::Json<JobResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let job = named(&store, &agent, &handle, &name).await?;
    Ok(axum::Json(job_response(job)))
}

async fn named(
    store: &TenantStore,
    agent: &clade_core::Agent,
    handle: &str,
    name: &str,
) -> Result<JobRow, ApiError> {
    store.jobs().named(agent.id, name).await.map_err(|err| match err {
        clade_store::Error::JobNotFound(_) => job_not_found(handle, name),
        other => other.into(),
    })
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, name)): Path<(String, String)>,
    JsonBody(params): JsonBody<UpdateJobParams>,
) -> Result<axum::Json<JobResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let job = named(&store, &agent, &handle, &name).await?;
    declared(&name)?;
    let job = store.jobs().set_enabled(job.id, params.enabled, None).await?;
    Ok(axum::Json(job_response(job)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let job = named(&store, &agent, &handle, &name).await?;
    declared(&name)?;
    store.jobs().delete(job.id).await?;
    tracing::info!(job_id = %job.id, "job removed");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn runs(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, name)): Path<(String, String)>,
    query: Result<Query<JobRunsQuery>, QueryRejection>,
) -> Result<axum::Json<JobRunListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let job = named(&store, &agent, &handle, &name).await?;
    let limit = checked_limit(query.limit)?;
    let items =
        store.jobs().runs(job.id, None, limit).await?.into_iter().map(run_response).collect();
    Ok(axum::Json(JobRunListResponse { items }))
}
