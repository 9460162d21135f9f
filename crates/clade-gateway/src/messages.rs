//! `/v1/agents/{handle}/messages`: the messages an agent sent to or received from the other
//! agents of its tenant, newest first, read through the caller's [`clade_store::TenantStore`]
//! (an agent the token does not reach reads as missing).

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use clade_core::MessageId;
use clade_store::MessageRow;

use crate::AppState;
use crate::agents::{checked_limit, query_rejection};
use crate::api::{AgentMessageListResponse, AgentMessageResponse, AgentMessagesQuery};
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::jobs::scope;

fn message_response(row: MessageRow) -> AgentMessageResponse {
    AgentMessageResponse {
        id: row.id.to_string(),
        kind: row.kind.into(),
        from: row.from_handle,
        to: row.to_handle,
        from_session: row.from_session.map(|s| s.to_string()),
        from_turn: row.from_turn.map(|t| t.to_string()),
        to_session: row.to_session.to_string(),
        event: row.event.to_string(),
        text: row.text,
        depth: row.depth,
        created_at: row.created_at.as_millis(),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    query: Result<Query<AgentMessagesQuery>, QueryRejection>,
) -> Result<axum::Json<AgentMessageListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    let before = query
        .cursor
        .as_deref()
        .map(|text| {
            MessageId::parse(text).map_err(|_| {
                ApiError::new(
                    Code::InvalidRequest,
                    format!("cursor {text:?} is not one a page gave"),
                )
            })
        })
        .transpose()?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let rows = store.messages().of_agent(agent.id, before, limit + 1).await?;
    let more = rows.len() > limit as usize;
    let rows: Vec<MessageRow> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = if more { rows.last().map(|r| r.id.to_string()) } else { None };
    Ok(axum::Json(AgentMessageListResponse {
        items: rows.into_iter().map(message_response).collect(),
        next_cursor,
    }))
}
