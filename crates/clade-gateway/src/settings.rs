//! `/v1/agents/{handle}/settings`: an agent's settings as it reads them (the environment over
//! its stored value over the declared default), and its stored values set and removed, each
//! audited with the key and never the value.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clade_runtime::settings::Resolved;

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::{SetSettingParams, SettingListResponse, SettingResponse};
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::jobs::scope;

fn setting_response(setting: Resolved) -> SettingResponse {
    SettingResponse {
        source: setting.source.as_str().to_owned(),
        key: setting.key,
        value: setting.value,
        description: setting.description,
        agent_writable: setting.agent_writable,
        updated_at: setting.stored.as_ref().map(|row| row.updated_at.as_millis()),
        updated_by: setting.stored.as_ref().map(|row| row.updated_by.clone()),
        stored: setting.stored.map(|row| row.value),
    }
}

/// Refuses a key the document's pattern refuses, as a malformed request.
fn checked(key: &str) -> Result<(), ApiError> {
    if clade_core::is_setting_key(key) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::InvalidRequest,
        format!(
            "setting key {key:?}: keys use 1-64 of a-z, 0-9, ., _ and -, starting with a letter"
        ),
    ))
}

/// Refuses a tenant's token a setting the operator locked (`agent_writable: false`): a lock
/// the agent cannot lift with its tools must not give way to its tenant's admin either.
fn unlocked(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    key: &str,
) -> Result<(), ApiError> {
    if state.settings.agent_writable(key) || crate::config::operator_only(tenant, reach).is_ok() {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Forbidden,
        format!(
            "setting {key:?} is locked by the operator (settings.{key}.agent_writable is false in clade.yaml): only the operator can change it"
        ),
    ))
}

fn refusal(handle: &str, err: clade_store::Error) -> ApiError {
    match err {
        clade_store::Error::InvalidSetting(message) => ApiError::new(Code::InvalidSetting, message),
        clade_store::Error::SettingNotFound(key) => ApiError::new(
            Code::SettingNotFound,
            format!(
                "agent {handle} has no stored value of {key:?}: list its settings with GET /v1/agents/{handle}/settings"
            ),
        ),
        other => other.into(),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<SettingListResponse>, ApiError> {
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let stored = store.settings().list(agent.id).await?;
    let items = state.settings.resolve(stored).into_iter().map(setting_response).collect();
    Ok(axum::Json(SettingListResponse { items }))
}

pub(crate) async fn set(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, key)): Path<(String, String)>,
    JsonBody(params): JsonBody<SetSettingParams>,
) -> Result<axum::Json<SettingResponse>, ApiError> {
    checked(&key)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    unlocked(&state, &tenant, &reach, &key)?;
    store.settings().set(agent.id, &key, params.value).await.map_err(|e| refusal(&handle, e))?;
    let stored = store.settings().list(agent.id).await?;
    let setting = state
        .settings
        .resolve(stored)
        .into_iter()
        .find(|s| s.key == key)
        .ok_or_else(|| ApiError::new(Code::Internal, "a setting just stored cannot be read"))?;
    Ok(axum::Json(setting_response(setting)))
}

pub(crate) async fn unset(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    checked(&key)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    unlocked(&state, &tenant, &reach, &key)?;
    store.settings().unset(agent.id, &key).await.map_err(|e| refusal(&handle, e))?;
    Ok(StatusCode::NO_CONTENT)
}
