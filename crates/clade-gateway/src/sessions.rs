//! `/v1/sessions`: history, resumable event streams (SSE), resume and cancel.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use clade_core::{SessionId, TurnId};
use clade_store::{SessionCursor, TurnRecord};
use futures::Stream;

use crate::AppState;
use crate::agents::{JsonBody, query_rejection};
use crate::api::{
    CancelResponse, QueueMode, ResumeResponse, SessionListResponse, SessionResponse, SessionUpdate,
    SessionsQuery, StepsQuery, StreamQuery, SummaryListResponse, SummaryResponse, TurnEvent,
    TurnListResponse, TurnResponse, TurnStepPage, TurnUsageBody, TurnsQuery, WorkingEntryResponse,
    WorkingListResponse,
};
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::live::Scope;

pub(crate) fn session_id(text: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text)
        .map_err(|_| ApiError::new(Code::SessionNotFound, format!("session {text:?} not found")))
}

fn session_response(s: clade_store::SessionRow) -> SessionResponse {
    let queue_mode =
        s.queue_mode.as_deref().and_then(clade_config::QueueMode::parse).map(|mode| match mode {
            clade_config::QueueMode::Queue => QueueMode::Queue,
            clade_config::QueueMode::Coalesce => QueueMode::Coalesce,
            clade_config::QueueMode::Steer => QueueMode::Steer,
        });
    SessionResponse {
        id: s.id.to_string(),
        agent_id: s.agent_id.to_string(),
        platform: s.source.platform.to_string(),
        channel: s.source.channel,
        actor: s.source.actor,
        last_active_channel: s.last_active_channel,
        queue_mode,
        created_at: s.created_at.as_millis(),
        updated_at: s.updated_at.as_millis(),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<axum::Json<SessionListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = crate::agents::checked_limit(query.limit)?;
    let agent = match &query.agent {
        Some(handle) => Some(state.of(&tenant).agents().get(handle).await?),
        None => None,
    };
    let (rows, next_cursor) =
        page(&state, &tenant, &reach, agent.as_ref(), query.cursor.as_deref(), limit).await?;
    Ok(axum::Json(SessionListResponse {
        items: rows.into_iter().map(session_response).collect(),
        next_cursor,
    }))
}

/// A page of the sessions `reach` reaches (of `agent`, or all), most recently active first,
/// after `cursor` (a page's `next_cursor`); and the next page's cursor.
pub(crate) async fn page(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    agent: Option<&clade_core::Agent>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<clade_store::SessionRow>, Option<String>), ApiError> {
    let before = match cursor {
        Some(text) => Some(SessionCursor::parse(text).ok_or_else(|| {
            ApiError::new(
                Code::InvalidRequest,
                format!("cursor {text:?} is not a next_cursor this list gave"),
            )
        })?),
        None => None,
    };
    let mut rows = Vec::new();
    // One extra row tells whether another page exists.
    for agent in reach.listing(agent)? {
        rows.extend(state.of(tenant).sessions().list_before(agent, before, limit + 1).await?);
    }
    // Several agents' reads merge in the store's order: the most recently active first.
    rows.sort_by_key(|s| std::cmp::Reverse((s.updated_at, s.id)));
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| SessionCursor::after(last).encode())
    } else {
        None
    };
    Ok((rows, next_cursor))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<SessionResponse>, ApiError> {
    let row = state.of(&tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&row)?;
    Ok(axum::Json(session_response(row)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<SessionUpdate>,
) -> Result<axum::Json<SessionResponse>, ApiError> {
    let id = reachable(&state, &tenant, &reach, &id).await?;
    let mode = update.queue_mode.map(|mode| match mode {
        QueueMode::Queue => clade_config::QueueMode::Queue,
        QueueMode::Coalesce => clade_config::QueueMode::Coalesce,
        QueueMode::Steer => clade_config::QueueMode::Steer,
    });
    let row = state.engine.set_queue_mode(tenant.id, id, mode).await?;
    Ok(axum::Json(session_response(row)))
}

pub(crate) async fn turns(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<TurnsQuery>, QueryRejection>,
) -> Result<axum::Json<TurnListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = crate::agents::checked_limit(query.limit)?;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(cursor.parse::<TurnId>().map_err(|_| {
            ApiError::new(
                Code::InvalidRequest,
                format!("cursor {cursor:?} is not a next_cursor this list gave"),
            )
        })?),
    };
    let session = state.of(&tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&session)?;
    // Fetch one extra turn to learn whether another page exists.
    let mut records =
        state.of(&tenant).sessions().turn_records(session.id, after, limit + 1).await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| r.turn.id.to_string())
    } else {
        None
    };
    let items = records.into_iter().map(turn_response).collect();
    Ok(axum::Json(TurnListResponse { items, next_cursor }))
}

/// `GET /v1/sessions/{id}/turns/{turn}`: one turn, as the list gives it (what a feed of
/// `turn.finished` events reads its messages from).
pub(crate) async fn turn(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((id, turn)): Path<(String, String)>,
) -> Result<axum::Json<TurnResponse>, ApiError> {
    let session = state.of(&tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&session)?;
    let not_found = || turn_not_found(&id, &turn);
    let turn_id = turn.parse::<TurnId>().map_err(|_| not_found())?;
    // Found through its session, which is the caller's: another session's (or tenant's) turn
    // reads as missing.
    match state.of(&tenant).sessions().turn_record(session.id, turn_id).await {
        Ok(record) => Ok(axum::Json(turn_response(record))),
        Err(clade_store::Error::TurnNotFound(_)) => Err(not_found()),
        Err(other) => Err(other.into()),
    }
}

pub(crate) fn turn_not_found(session: &str, turn: &str) -> ApiError {
    ApiError::new(
        Code::TurnNotFound,
        format!(
            "turn {turn:?} not found in session {session}; list its turns with GET /v1/sessions/{session}/turns"
        ),
    )
}

fn turn_response(record: TurnRecord) -> TurnResponse {
    let TurnRecord { turn: t, events, usage, steps, .. } = record;
    TurnResponse {
        step_count: steps.len() as u64,
        id: t.id.to_string(),
        status: t.status.into(),
        reply: t.reply,
        error: t.error,
        model: t.model,
        config_revision: format!("{:016x}", t.config_revision),
        started_at: t.started_at.as_millis(),
        finished_at: t.finished_at.map(|f| f.as_millis()),
        events: events
            .into_iter()
            .map(|e| TurnEvent { id: e.id.to_string(), seq: e.seq, text: e.text })
            .collect(),
        usage: TurnUsageBody {
            model_calls: usage.model_calls,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_micros: usage.cost_micros,
        },
    }
}

/// `GET /v1/sessions/{id}/summaries`: what compaction made of the session's older turns.
pub(crate) async fn summaries(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<SummaryListResponse>, ApiError> {
    let session = state.of(&tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&session)?;
    let rows = state.of(&tenant).sessions().summaries(session.id, 100).await?;
    let items = rows
        .into_iter()
        .map(|s| SummaryResponse {
            through_turn: s.through.to_string(),
            text: s.text,
            turns: s.turns,
            model: s.model,
            memories: s.memories,
            created_at: s.created_at.as_millis(),
        })
        .collect();
    Ok(axum::Json(SummaryListResponse { items }))
}

/// `GET /v1/sessions/{id}/working`: the values the session's working memory holds now.
pub(crate) async fn working(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<WorkingListResponse>, ApiError> {
    let session = state.of(&tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&session)?;
    let entries = state.of(&tenant).working().list(session.id).await?;
    let items = entries
        .into_iter()
        .filter_map(|e| {
            Some(WorkingEntryResponse {
                value: e.value?,
                name: e.name,
                version: e.version,
                turn_id: e.turn.map(|t| t.to_string()),
                written_at: e.written_at.as_millis(),
            })
        })
        .collect();
    Ok(axum::Json(WorkingListResponse { items }))
}

/// `GET /v1/sessions/{id}/turns/{turn}/steps`: a page of one turn's journal, in the order it
/// was written, each step in its typed view.
pub(crate) async fn steps(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((id, turn)): Path<(String, String)>,
    query: Result<Query<StepsQuery>, QueryRejection>,
) -> Result<axum::Json<TurnStepPage>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = crate::agents::checked_limit(query.limit)? as usize;
    let session = state.of(&tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&session)?;
    let not_found = || turn_not_found(&id, &turn);
    let turn_id = turn.parse::<TurnId>().map_err(|_| not_found())?;
    // Found through its session, which is the caller's: another session's (or tenant's) turn
    // reads as missing.
    let journal = match state.of(&tenant).journal(session.id, turn_id).await {
        Err(clade_store::Error::TurnNotFound(_)) => return Err(not_found()),
        other => other?,
    };
    // Steps are numbered from 1 in the order they were written: after step n come those from
    // the (n+1)th on.
    let start = usize::try_from(query.cursor.unwrap_or(0)).unwrap_or(usize::MAX);
    let page: Vec<_> = journal.iter().skip(start).take(limit).collect();
    let given = start.saturating_add(page.len());
    let next_cursor = (given < journal.len()).then(|| given.to_string());
    let items = page
        .into_iter()
        .map(|entry| clade_runtime::step_view(entry).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(TurnStepPage { items, next_cursor }))
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<ResumeResponse>, ApiError> {
    let session = reachable_row(&state, &tenant, &reach, &id).await?;
    // Resuming a paused session lets it run again.
    let store =
        state.store.acting_as(format!("tenant {} (api)", tenant.name)).tenant_scope(tenant.id);
    let unpaused = store.pauses().unpause(session.agent_id, Some(session.id)).await?;
    if unpaused {
        state.engine.unpaused(tenant.id, session.agent_id, Some(session.id)).await?;
    }
    let n = state.engine.resume(tenant.id, session.id).await?;
    Ok(axum::Json(ResumeResponse { resumed_events: n, unpaused }))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<CancelResponse>, ApiError> {
    let id = reachable(&state, &tenant, &reach, &id).await?;
    let cancelled = state.engine.cancel(tenant.id, id).await?;
    Ok(axum::Json(CancelResponse { cancelled }))
}

/// The session `id` names, read, if the caller's token reaches it (another tenant's reads as
/// missing).
pub(crate) async fn reachable_row(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    id: &str,
) -> Result<clade_store::SessionRow, ApiError> {
    let session = state.of(tenant).sessions().get(session_id(id)?).await?;
    reach.session(&session)?;
    Ok(session)
}

/// The session `id` names, if the caller's token reaches it: a token limited to some agents
/// finds only their sessions (one more read); a whole-tenant token leaves the check to the
/// operation, which finds only its tenant's.
async fn reachable(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    id: &str,
) -> Result<SessionId, ApiError> {
    let id = session_id(id)?;
    if !reach.is_whole_tenant() {
        reach.session(&state.of(tenant).sessions().get(id).await?)?;
    }
    Ok(id)
}

/// Server-Sent Events: the session's lifecycle events after `Last-Event-ID` (or `?after=`),
/// replayed from the outbox, then live ones, with text deltas as the model streams them.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let Caller(tenant, _, reach) = &caller;
    let session = state.of(tenant).sessions().get(session_id(&id)?).await?;
    reach.session(&session)?;
    let after = crate::live::resume_point(
        &state.stream_ids,
        tenant.id,
        headers.get("last-event-id"),
        query.after.as_deref(),
    )?;
    // A leased operator that reaches this session through a lease of it alone holds the
    // lease for this chat: it ends when the stream does.
    let release = reach.leased_operator().filter(|_| !reach.allows(session.agent_id)).map(|peer| {
        Box::new(ReleaseOnClose {
            store: state.of(tenant),
            peer: peer.to_owned(),
            session: session.id,
        }) as Box<dyn Send + Sync>
    });
    let tenant_id = tenant.id;
    // Ends when the session's channel closes, or with an `error` event once the token stops
    // being valid (revoked, or its tenant deleted).
    let events = crate::live::follow(
        &state,
        caller,
        Scope::Session(session.id),
        crate::live::Start::After(after.unwrap_or(0)),
        crate::live::Only::everything(),
        release,
    )
    .await?;
    Ok(crate::live::sse(events, state.stream_ids.clone(), tenant_id, false))
}

/// Ends a leased operator's leases of one session when its stream of the session closes (the
/// CLI's chat ended, or its connection dropped): "revoked on disconnect".
struct ReleaseOnClose {
    store: clade_store::TenantStore,
    peer: String,
    session: clade_core::SessionId,
}

impl Drop for ReleaseOnClose {
    fn drop(&mut self) {
        let (store, peer, session) = (self.store.clone(), self.peer.clone(), self.session);
        tokio::spawn(async move {
            let kind = clade_store::peers::OPERATOR;
            match store.leases().end_for_session(kind, &peer, session, "disconnected").await {
                Ok(ended) if ended > 0 => {
                    tracing::info!(operator = %peer, %session, ended, "the chat's stream closed: its session leases ended");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(operator = %peer, %session, error = %err, "cannot end the leases of a closed chat; they end at their expiry")
                }
            }
        });
    }
}
