//! `GET /v1/usage`: model usage and cost of the caller's tenant, or of every tenant for the
//! operator.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use clade_core::Timestamp;

use crate::AppState;
use crate::agents::query_rejection;
use crate::api::{UsageItem, UsageQuery, UsageResponse};
use crate::auth::Caller;
use crate::error::ApiError;

const DEFAULT_WINDOW_MS: i64 = 30 * 86_400_000;

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<axum::Json<UsageResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let since = query.since.unwrap_or_else(|| state.store.now().as_millis() - DEFAULT_WINDOW_MS);
    let since_at = Timestamp::from_millis(since);
    if query.all_tenants {
        return every_tenant(&state, &tenant, &reach, &query, since_at)
            .await
            .map(|items| axum::Json(UsageResponse { since, items }));
    }
    let agent = match &query.agent {
        Some(handle) => Some(state.of(&tenant).agents().get(handle).await?),
        None => None,
    };
    let reads = reach.listing(agent.as_ref())?;
    // Rows are per agent and model, so several agents' reads simply add up.
    let mut items = Vec::new();
    for agent in reads {
        let rows = state.of(&tenant).usage().summary(agent, since_at, split(&query)).await?;
        items.extend(rows.into_iter().map(|u| item(None, u)));
    }
    Ok(axum::Json(UsageResponse { since, items }))
}

/// Every tenant's usage, each item naming its tenant: the operator's only.
async fn every_tenant(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    query: &UsageQuery,
    since: Timestamp,
) -> Result<Vec<UsageItem>, ApiError> {
    crate::config::operator_only(tenant, reach)?;
    // Each tenant is asked for the agent by its handle: one no agent can have is refused once,
    // not found nowhere.
    if let Some(handle) = &query.agent {
        crate::agents::handle_of(handle)?;
    }
    let mut items = Vec::new();
    for each in state.store.tenants().list().await? {
        let scope = state.of(&each);
        // A handle names an agent within a tenant: the agents of that handle, where they are.
        let agent = match &query.agent {
            Some(handle) => match scope.agents().get(handle).await {
                Ok(agent) => Some(agent.id),
                Err(err) if err.is_not_found() => continue,
                Err(err) => return Err(err.into()),
            },
            None => None,
        };
        let rows = scope.usage().summary(agent, since, split(query)).await?;
        items.extend(rows.into_iter().map(|u| item(Some(each.name.to_string()), u)));
    }
    Ok(items)
}

/// How the query splits the report in time.
fn split(query: &UsageQuery) -> clade_store::UsageBy {
    match (query.by_hour, query.by_day) {
        (true, _) => clade_store::UsageBy::Hour,
        (false, true) => clade_store::UsageBy::Day,
        (false, false) => clade_store::UsageBy::Total,
    }
}

fn item(tenant: Option<String>, u: clade_store::UsageSummary) -> UsageItem {
    UsageItem {
        tenant,
        day: u.day,
        hour: u.hour,
        agent: u.agent,
        model: u.model,
        calls: u.calls,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cached_tokens: u.cached_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_micros: u.cost_micros,
    }
}
