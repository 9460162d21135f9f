//! `/v1/leases`: a tenant leases its events (or one agent's, or one session's) to a paired
//! subscriber for a while, lists its leases, and ends one. A token limited to some agents
//! leases, sees and ends only leases of those agents and their sessions.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clade_core::{LeaseId, SessionId};
use clade_store::peer_leases::{LeaseRow, LeaseScope};

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::{CreateLeaseParams, LeaseListResponse, LeaseResponse};
use crate::auth::{Caller, Reach};
use crate::error::{ApiError, Code};

/// How many leases a listing returns, newest first.
const LISTED: u32 = 200;

fn lease_response(
    lease: LeaseRow,
    agent: Option<String>,
    now: clade_core::Timestamp,
) -> LeaseResponse {
    let (scope, session) = match lease.scope {
        LeaseScope::Tenant => ("tenant", None),
        LeaseScope::Agent(_) => ("agent", None),
        LeaseScope::Session(id) => ("session", Some(id.to_string())),
    };
    LeaseResponse {
        id: lease.id.to_string(),
        live: lease.live(now),
        peer: lease.peer_name,
        kind: lease.peer_kind,
        scope: scope.into(),
        agent,
        session,
        granted_at: lease.granted_at.as_millis(),
        expires_at: lease.expires_at.as_millis(),
        granted_by: lease.granted_by,
        ended_at: lease.ended_at.map(|t| t.as_millis()),
        ended_why: lease.ended_why,
    }
}

/// The handle of the agent a lease narrows to, or `None` for a tenant's lease; `Err` when the
/// caller's token does not reach that agent (or the agent or session is gone, which a limited
/// token may not see either).
async fn agent_of(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &Reach,
    lease: &LeaseRow,
) -> Result<Option<String>, ApiError> {
    let hidden = || ApiError::from(clade_store::Error::LeaseNotFound(lease.id.to_string()));
    let agent = match lease.scope {
        LeaseScope::Tenant if reach.is_whole_tenant() => return Ok(None),
        LeaseScope::Tenant => return Err(hidden()),
        LeaseScope::Agent(id) => id,
        LeaseScope::Session(id) => match state.of(tenant).sessions().get(id).await {
            Ok(session) => session.agent_id,
            Err(clade_store::Error::SessionNotFound(_)) if reach.is_whole_tenant() => {
                return Ok(None);
            }
            Err(clade_store::Error::SessionNotFound(_)) => return Err(hidden()),
            Err(other) => return Err(other.into()),
        },
    };
    if !reach.allows(agent) {
        return Err(hidden());
    }
    match state.of(tenant).agents().by_id(agent).await {
        Ok(agent) => Ok(Some(agent.handle.to_string())),
        Err(clade_store::Error::AgentNotFound(_)) if reach.is_whole_tenant() => Ok(None),
        Err(clade_store::Error::AgentNotFound(_)) => Err(hidden()),
        Err(other) => Err(other.into()),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<LeaseListResponse>, ApiError> {
    let now = state.of(&tenant).now();
    let mut items = Vec::new();
    for lease in state.of(&tenant).leases().list(LISTED).await? {
        match agent_of(&state, &tenant, &reach, &lease).await {
            Ok(agent) => items.push(lease_response(lease, agent, now)),
            Err(err) if err.code == Code::LeaseNotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(axum::Json(LeaseListResponse { items }))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    JsonBody(params): JsonBody<CreateLeaseParams>,
) -> Result<(StatusCode, axum::Json<LeaseResponse>), ApiError> {
    if reach.is_leased() {
        return Err(ApiError::new(
            Code::Forbidden,
            "an operator paired `leased` acts only on what it is leased, and may not grant leases: the tenant grants them",
        ));
    }
    let scope = match (&params.agent, &params.session) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                Code::InvalidLease,
                "name an agent or a session, not both (neither leases the whole tenant)",
            ));
        }
        (Some(handle), None) => {
            let agent = state.of(&tenant).agents().get(handle).await?;
            reach.agent(&agent)?;
            LeaseScope::Agent(agent.id)
        }
        (None, Some(id)) => {
            let id = SessionId::parse(id)
                .map_err(|e| ApiError::new(Code::InvalidRequest, format!("session: {e}")))?;
            let session = state.of(&tenant).sessions().get(id).await?;
            reach.session(&session)?;
            LeaseScope::Session(id)
        }
        (None, None) if reach.is_whole_tenant() => LeaseScope::Tenant,
        (None, None) => {
            return Err(ApiError::new(
                Code::InvalidLease,
                "this token reaches only some agents: lease one of their agents or sessions, not the whole tenant",
            ));
        }
    };
    let ttl = std::time::Duration::from_secs(params.ttl_secs);
    let store =
        state.store.acting_as(format!("tenant {} (api)", tenant.name)).tenant_scope(tenant.id);
    let lease = clade_runtime::outbox::grant_lease(
        &store,
        &tenant,
        params.kind.as_str(),
        &params.peer,
        scope,
        ttl,
    )
    .await?;
    let agent = agent_of(&state, &tenant, &reach, &lease).await?;
    Ok((StatusCode::CREATED, axum::Json(lease_response(lease, agent, store.now()))))
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<LeaseResponse>, ApiError> {
    let id = LeaseId::parse(&id).map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?;
    let lease = state.of(&tenant).leases().get(id).await?;
    let agent = agent_of(&state, &tenant, &reach, &lease).await?;
    let store =
        state.store.acting_as(format!("tenant {} (api)", tenant.name)).tenant_scope(tenant.id);
    let lease = store.leases().end(id, "revoked").await?;
    Ok(axum::Json(lease_response(lease, agent, store.now())))
}
