//! `/v1/config`: the deployment's configuration revisions, and applying one or reverting to
//! one through the flow `clade config apply` runs ([`crate::config_flow`]). The deployment is
//! the operator's: only an admin token of the default tenant reaches these routes; to any other
//! tenant they do not exist.

use axum::Extension;
use axum::extract::{Path, State};
use clade_core::Tenant;
use clade_store::ConfigRevision;

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::{
    ApplyConfigParams, ApplyConfigResponse, ConfigRevisionListResponse, ConfigRevisionResponse,
};
use crate::auth::{Caller, Reach};
use crate::config_flow::{Applied, Step};
use crate::error::{ApiError, Code};

fn revision_response(revision: ConfigRevision) -> ConfigRevisionResponse {
    ConfigRevisionResponse {
        revision: revision.revision,
        sha256: revision.sha256,
        applied_by: revision.applied_by,
        applied_at: revision.applied_at.as_millis(),
        reverts: revision.reverts,
        diff: revision.diff,
        yaml: revision.yaml,
    }
}

/// Refuses any caller but the operator, as if the route were not there.
pub(crate) fn operator_only(tenant: &Tenant, reach: &Reach) -> Result<(), ApiError> {
    if tenant.name.as_str() == Tenant::DEFAULT_NAME && reach.is_whole_tenant() {
        return Ok(());
    }
    Err(ApiError::new(
        Code::RouteNotFound,
        "no such route for this token: the deployment's configuration is the operator's (an admin token of the default tenant)",
    ))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<ConfigRevisionListResponse>, ApiError> {
    operator_only(&tenant, &reach)?;
    let revisions = state.store.config_revisions().list(crate::api::MAX_PAGE).await?;
    Ok(axum::Json(ConfigRevisionListResponse {
        items: revisions.into_iter().map(revision_response).collect(),
    }))
}

/// The revision a path names: a whole number from 1.
async fn revision(state: &AppState, text: &str) -> Result<ConfigRevision, ApiError> {
    let revision = text.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::new(
            Code::InvalidRequest,
            format!("revision {text:?} is not a whole number from 1"),
        )
    })?;
    state.store.config_revisions().get(revision).await.map_err(|err| match err {
        clade_store::Error::ConfigRevisionNotFound(n) => ApiError::new(
            Code::RevisionNotFound,
            format!(
                "there is no configuration revision {n}: list them with GET /v1/config/revisions"
            ),
        ),
        other => other.into(),
    })
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(number): Path<String>,
) -> Result<axum::Json<ConfigRevisionResponse>, ApiError> {
    operator_only(&tenant, &reach)?;
    Ok(axum::Json(revision_response(revision(&state, &number).await?)))
}

async fn run_flow(
    state: &AppState,
    tenant: &Tenant,
    text: &str,
    reverts: Option<i64>,
    smoke: bool,
) -> Result<axum::Json<ApplyConfigResponse>, ApiError> {
    let Some(path) = &state.config_path else {
        return Err(ApiError::new(
            Code::InvalidConfig,
            "this gateway was started without a configuration file to apply to",
        ));
    };
    let store = state.store.acting_as(format!("tenant {} (api)", tenant.name));
    let smoke: Option<crate::config_flow::SmokeTest<'_>> = match (smoke, &state.smoke) {
        (false, _) => None,
        (true, None) => {
            return Err(ApiError::new(
                Code::InvalidConfig,
                "this gateway cannot run a smoke test: apply without `smoke`",
            ));
        }
        (true, Some(test)) => {
            let test = test.clone();
            Some(Box::new(move |config: &clade_config::Config| test(config.clone())))
        }
    };
    let trials = crate::config_flow::Trials { environment: state.environment.clone(), smoke };
    match crate::config_flow::apply(&store, path, path, text, reverts, trials).await {
        Ok(Applied::Unchanged) => Ok(axum::Json(ApplyConfigResponse {
            applied: false,
            revision: None,
            at_restart: vec![],
        })),
        Ok(Applied::Revision { revision, at_restart }) => Ok(axum::Json(ApplyConfigResponse {
            applied: true,
            revision: Some(revision_response(revision)),
            at_restart: at_restart.into_iter().map(str::to_owned).collect(),
        })),
        Err(err) => Err(match err.step {
            Step::Parse | Step::Check | Step::Smoke => {
                ApiError::new(Code::InvalidConfig, err.to_string())
            }
            Step::Write | Step::Record => ApiError::internal(err.to_string()),
        }),
    }
}

pub(crate) async fn apply(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    JsonBody(params): JsonBody<ApplyConfigParams>,
) -> Result<axum::Json<ApplyConfigResponse>, ApiError> {
    operator_only(&tenant, &reach)?;
    run_flow(&state, &tenant, &params.yaml, None, params.smoke).await
}

pub(crate) async fn revert(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(number): Path<String>,
) -> Result<axum::Json<ApplyConfigResponse>, ApiError> {
    operator_only(&tenant, &reach)?;
    let old = revision(&state, &number).await?;
    run_flow(&state, &tenant, &old.yaml, Some(old.revision), false).await
}
