//! `GET /v1/usage`: model usage and cost of the caller's tenant.

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
    let agent = match &query.agent {
        Some(handle) => Some(state.of(&tenant).agents().get(handle).await?),
        None => None,
    };
    let reads = reach.listing(agent.as_ref())?;
    // Rows are per agent and model, so several agents' reads simply add up.
    let mut rows = Vec::new();
    for agent in reads {
        let since = Timestamp::from_millis(since);
        rows.extend(state.of(&tenant).usage().summary(agent, since, query.by_day).await?);
    }
    let items = rows
        .into_iter()
        .map(|u| UsageItem {
            day: u.day,
            agent: u.agent,
            model: u.model,
            calls: u.calls,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_tokens: u.cached_tokens,
            cache_write_tokens: u.cache_write_tokens,
            cost_micros: u.cost_micros,
        })
        .collect();
    Ok(axum::Json(UsageResponse { since, items }))
}
