//! `/v1/agents/{handle}/tools`, `/v1/approvals`, `/v1/grants`, `/v1/audit`: one tool call
//! through the model's own path, and the operator's side of permissions.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use clade_config::{PolicyEffect, PolicyRule};
use clade_core::{AgentId, ApprovalId, GrantId, Tenant, Timestamp};
use clade_runtime::{CallOrigin, Verdict};
use clade_store::{ApprovalRow, ApprovalStatus, AuditFilter, GrantRow};
use serde_json::Value;

use crate::AppState;
use crate::agents::{JsonBody, query_rejection};
use crate::api::{
    ApprovalListResponse, ApprovalResponse, ApprovalsQuery, AuditQuery, AuditRecord, AuditResponse,
    CreateGrantParams, DecideApprovalParams, GrantListResponse, GrantResponse, GrantsQuery,
    ToolCallParams, ToolCallResponse, ToolInfo, ToolListResponse,
};
use crate::auth::Caller;
use crate::error::{ApiError, Code};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, message)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<ToolListResponse>, ApiError> {
    let agent = state.of(&tenant).agents().get(&handle).await?;
    reach.agent(&agent)?;
    let tools = state.engine.tools().tool_set();
    let items = tools
        .registry()
        .for_agent(tenant.name.as_str(), agent.handle.as_str())
        .map(|t| ToolInfo {
            name: t.name().to_owned(),
            description: t.description().to_owned(),
            effect: t.effect().as_str().to_owned(),
            touches_host: t.touches_host(),
            input_schema: t.input_schema(),
        })
        .collect();
    Ok(axum::Json(ToolListResponse { items }))
}

pub(crate) async fn call(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, name)): Path<(String, String)>,
    JsonBody(params): JsonBody<ToolCallParams>,
) -> Result<axum::Json<ToolCallResponse>, ApiError> {
    let agent = state.of(&tenant).agents().get(&handle).await?;
    reach.agent(&agent)?;
    let runner = state.engine.tools();
    let tools = runner.tool_set();
    if tools.registry().get_for(&name, tenant.name.as_str(), agent.handle.as_str()).is_none() {
        return Err(ApiError::new(
            Code::ToolNotFound,
            format!(
                "agent {handle} has no tool {name:?}: list them with GET /v1/agents/{handle}/tools"
            ),
        ));
    }
    let arguments = Value::Object(params.arguments.unwrap_or_default());
    let origin = CallOrigin::operator(state.store.now());
    let outcome = runner.call(&agent, &name, arguments, &origin).await;
    Ok(axum::Json(ToolCallResponse {
        content: outcome.content,
        is_error: outcome.is_error,
        decision: outcome.decision.as_str().to_owned(),
    }))
}

/// Agent handles by id, looked up once per request.
pub(crate) struct Handles<'a> {
    state: &'a AppState,
    tenant: &'a Tenant,
    known: HashMap<AgentId, String>,
}

impl<'a> Handles<'a> {
    pub(crate) fn new(state: &'a AppState, tenant: &'a Tenant) -> Self {
        Self { state, tenant, known: HashMap::new() }
    }

    pub(crate) async fn of(&mut self, id: AgentId) -> String {
        if let Some(handle) = self.known.get(&id) {
            return handle.clone();
        }
        let handle = match self.state.of(self.tenant).agents().by_id(id).await {
            Ok(agent) => agent.handle.to_string(),
            Err(_) => format!("(deleted agent {id})"),
        };
        self.known.insert(id, handle.clone());
        handle
    }
}

fn approval_response(row: ApprovalRow, agent: String) -> ApprovalResponse {
    ApprovalResponse {
        id: row.id.to_string(),
        agent,
        tool: row.tool,
        resource: row.resource,
        arguments: serde_json::from_str(&row.arguments).unwrap_or(Value::Null),
        arguments_hash: row.arguments_hash,
        reason: row.reason,
        status: row.status.into(),
        session_id: row.session_id.map(|s| s.to_string()),
        turn_id: row.turn_id.map(|t| t.to_string()),
        created_at: row.created_at.as_millis(),
        expires_at: row.expires_at.as_millis(),
        decided_at: row.decided_at.map(|t| t.as_millis()),
        decided_by: row.decided_by,
        note: row.note,
    }
}

pub(crate) async fn approvals(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<ApprovalsQuery>, QueryRejection>,
) -> Result<axum::Json<ApprovalListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let status = match query.status.as_deref().unwrap_or(ApprovalStatus::Pending.as_str()) {
        crate::api::APPROVALS_ALL => None,
        other => Some(ApprovalStatus::parse(other).ok_or_else(|| {
            invalid(format!(
                "unknown status {other:?}: use pending, approved, denied, expired, cancelled or all"
            ))
        })?),
    };
    let limit = crate::agents::checked_limit(query.limit)?;
    let mut rows = Vec::new();
    for agent in reach.listing(None)? {
        rows.extend(state.of(&tenant).access().approvals(agent, status, limit).await?);
    }
    // Several agents' reads merge in the store's order: newest first.
    rows.sort_by_key(|a| std::cmp::Reverse(a.id));
    rows.truncate(limit as usize);
    let mut handles = Handles::new(&state, &tenant);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let agent = handles.of(row.agent_id).await;
        items.push(approval_response(row, agent));
    }
    Ok(axum::Json(ApprovalListResponse { items }))
}

pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(params): JsonBody<DecideApprovalParams>,
) -> Result<axum::Json<ApprovalResponse>, ApiError> {
    let id = ApprovalId::parse(&id).map_err(|e| invalid(e.to_string()))?;
    // A token limited to some agents decides only their approvals (another's is not found).
    if !reach.is_whole_tenant() {
        let approval = state.of(&tenant).access().approval(id).await?;
        if !reach.allows(approval.agent_id) {
            return Err(clade_store::Error::ApprovalNotFound(id.to_string()).into());
        }
    }
    let verdict = match params.decision.as_str() {
        "approve" => Verdict::Approve,
        "approve_always" => Verdict::ApproveAlways,
        "deny" => Verdict::Deny,
        other => {
            return Err(invalid(format!(
                "unknown decision {other:?}: use approve, approve_always or deny"
            )));
        }
    };
    // "Always" leaves an allow grant behind: one the tenant could not give itself is refused
    // (approving once stays possible, where the operator's rules ask the tenant).
    if matches!(verdict, Verdict::ApproveAlways) {
        let approval = state.of(&tenant).access().approval(id).await?;
        let rule = PolicyRule {
            effect: clade_config::PolicyEffect::Allow,
            tool: approval.tool,
            resource: approval.resource,
            constraints: Default::default(),
        };
        state.engine.tools().check_ceiling(tenant.name.as_str(), &rule)?;
    }
    let row = state
        .engine
        .tools()
        .decide(tenant.id, id, verdict, &format!("tenant {} (api)", tenant.name), params.note)
        .await?;
    let agent = Handles::new(&state, &tenant).of(row.agent_id).await;
    Ok(axum::Json(approval_response(row, agent)))
}

fn grant_response(row: GrantRow, agent: String) -> GrantResponse {
    GrantResponse {
        id: row.id.to_string(),
        agent,
        effect: row.effect,
        tool: row.tool,
        resource: row.resource,
        constraints: serde_json::from_str(&row.constraints).unwrap_or(Value::Null),
        parent: row.parent_id.map(|p| p.to_string()),
        granted_by: row.granted_by,
        created_at: row.created_at.as_millis(),
        expires_at: row.expires_at.map(|t| t.as_millis()),
        revoked_at: row.revoked_at.map(|t| t.as_millis()),
    }
}

pub(crate) async fn grants(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<GrantsQuery>, QueryRejection>,
) -> Result<axum::Json<GrantListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let agent = match &query.agent {
        Some(handle) => Some(state.of(&tenant).agents().get(handle).await?),
        None => None,
    };
    let reads = reach.listing(agent.as_ref())?;
    let mut rows = Vec::new();
    for agent in reads {
        rows.extend(state.of(&tenant).access().grants(agent).await?);
    }
    rows.sort_by_key(|g| g.id);
    let mut handles = Handles::new(&state, &tenant);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let agent = handles.of(row.agent_id).await;
        items.push(grant_response(row, agent));
    }
    Ok(axum::Json(GrantListResponse { items }))
}

pub(crate) async fn add_grant(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    JsonBody(params): JsonBody<CreateGrantParams>,
) -> Result<(StatusCode, axum::Json<GrantResponse>), ApiError> {
    let agent = state.of(&tenant).agents().get(&params.agent).await?;
    reach.agent(&agent)?;
    let effect = match params.effect.as_deref() {
        None => PolicyEffect::Allow,
        Some(text) => PolicyEffect::parse(text)
            .ok_or_else(|| invalid(format!("unknown effect {text:?}: use allow, ask or deny")))?,
    };
    let constraints = params.constraints.map(constraints_from_wire).unwrap_or_default();
    let parent = params
        .parent
        .as_deref()
        .map(GrantId::parse)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    if params.expires_in_secs.is_some_and(|secs| secs > crate::api::MAX_GRANT_SECS) {
        return Err(invalid(format!(
            "expires_in_secs must be at most {} (a hundred years)",
            crate::api::MAX_GRANT_SECS
        )));
    }
    let expires_at = params.expires_in_secs.map(|secs| {
        let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp::from_millis(state.store.now().as_millis().saturating_add(ms))
    });
    let rule = PolicyRule {
        effect,
        tool: params.tool,
        resource: params.resource.unwrap_or_else(|| "*".into()),
        constraints,
    };
    // A tenant's own token: only within the ceiling the operator set for it.
    state.engine.tools().check_ceiling(tenant.name.as_str(), &rule)?;
    let by = format!("tenant {} (api)", tenant.name);
    let row = state.engine.tools().add_grant(&agent, rule, parent, expires_at, &by).await?;
    Ok((StatusCode::CREATED, axum::Json(grant_response(row, agent.handle.to_string()))))
}

pub(crate) async fn revoke_grant(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = GrantId::parse(&id).map_err(|e| invalid(e.to_string()))?;
    // Grants are the whole tenant's business (the admin scope, which no limited token has).
    if !reach.is_whole_tenant() {
        return Err(clade_store::Error::GrantNotFound(id.to_string()).into());
    }
    state
        .engine
        .tools()
        .revoke_grant(tenant.id, id, &format!("tenant {} (api)", tenant.name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    // The audit chain is the whole tenant's (the admin scope, which no limited token has).
    if !reach.is_whole_tenant() {
        return Err(ApiError::new(
            Code::Forbidden,
            "a token limited to some agents cannot read the tenant's audit log: use a token for the whole tenant",
        ));
    }
    // Checked whatever else is asked: a bad parameter is refused, not ignored.
    let agent = match &query.agent {
        Some(handle) => Some(state.of(&tenant).agents().get(handle).await?.id),
        None => None,
    };
    let limit = crate::agents::checked_limit(query.limit)?;
    if query.verify == Some(true) {
        let result = state.of(&tenant).access().verify_audit().await?;
        let body = crate::api::AuditVerifyResponse {
            records: result.records,
            ok: result.broken.is_none(),
            broken_at: result.broken.as_ref().map(|(seq, _)| *seq),
            reason: result.broken.map(|(_, why)| why),
        };
        return Ok(axum::response::IntoResponse::into_response(axum::Json(body)));
    }
    let filter = AuditFilter {
        agent,
        tool: query.tool,
        since: query.since.map(Timestamp::from_millis),
        until: query.until.map(Timestamp::from_millis),
        after: query.after,
        limit,
    };
    let rows = state.of(&tenant).access().audit_records(&filter).await?;
    let next_after = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.seq)).flatten();
    let items = rows
        .into_iter()
        .map(|r| {
            let kind = clade_core::AuditKind::parse(&r.kind).ok_or_else(|| {
                ApiError::internal(format!(
                    "audit record {} has an unknown kind {:?}",
                    r.seq, r.kind
                ))
            })?;
            Ok(AuditRecord {
                seq: r.seq,
                at: r.at.as_millis(),
                agent_id: r.agent_id.map(|a| a.to_string()),
                kind: kind.into(),
                tool: r.tool,
                decision: r.decision,
                detail: serde_json::from_str(&r.detail).unwrap_or(Value::Null),
                prev_hash: r.prev_hash,
                hash: r.hash,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::response::IntoResponse::into_response(axum::Json(AuditResponse { items, next_after })))
}

/// A grant's constraints as clade.yaml's policy has them. The two types cannot share one
/// definition (`clade-config` and `clade-protocol` are of one layer); naming every field on
/// both sides makes a field added to either a compile error here until the other has it.
fn constraints_from_wire(wire: crate::api::GrantConstraints) -> clade_config::Constraints {
    let crate::api::GrantConstraints { network, private_network, hosts, env } = wire;
    clade_config::Constraints { network, private_network, hosts, env }
}
