//! `POST /v1/events`: the front door. Answers only after the event is durably stored.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clade_core::Origin;
use clade_runtime::Envelope;
use clade_store::Source;

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::{EventParams, EventResponse, ReplyBody};
use crate::auth::Caller;
use crate::error::{ApiError, Code};

/// Characters, as the OpenAPI document's `maxLength` counts them.
const MAX_TEXT: usize = 64 * 1024;
/// Characters of a source's platform, channel or actor (`clade_core::LABEL_PATTERN`).
const MAX_FIELD: usize = 256;
const WAIT: Duration = Duration::from_secs(120);

pub(crate) fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > MAX_FIELD {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("{name} must be 1-{MAX_FIELD} characters"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| clade_core::is_spoofing_char(*c)) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "{name} contains the invisible or control character U+{:04X}: names shown in listings may not carry control, bidirectional-override or zero-width characters",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(params): JsonBody<EventParams>,
) -> Result<Response, ApiError> {
    let header_key = headers.get("idempotency-key").map(|v| {
        v.to_str()
            .map(str::to_owned)
            .map_err(|_| ApiError::new(Code::InvalidRequest, "Idempotency-Key must be ASCII"))
    });
    let wait = params.wait;
    let envelope = envelope_of(&state, &caller, params, header_key.transpose()?).await?;
    respond(&state, envelope, wait).await
}

/// A message's text: not blank, at most [`MAX_TEXT`] characters.
pub(crate) fn check_text(name: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::new(Code::InvalidRequest, format!("{name} must not be empty")));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("{name} is longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

/// The envelope an event of `caller`'s becomes, once every check passed: its rate and size
/// limits, its session or source, its agent (one the caller reaches), and its idempotency key
/// (`header_key` is the `Idempotency-Key` header's). `POST /v1/events` and the AgentHub's
/// `SendMessage` are this.
pub(crate) async fn envelope_of(
    state: &AppState,
    Caller(tenant, _, reach): &Caller,
    params: EventParams,
    header_key: Option<String>,
) -> Result<Envelope, ApiError> {
    let tenant = tenant.clone();
    state.limits.take_event(&tenant)?;
    check_text("text", &params.text)?;
    state.limits.admit_bytes(&state.store, &tenant, params.text.len() as u64).await?;
    let session = match &params.session {
        Some(id) => {
            let id = clade_core::SessionId::parse(id)
                .map_err(|e| ApiError::new(Code::InvalidRequest, format!("session: {e}")))?;
            let session = state.of(&tenant).sessions().get(id).await?;
            reach.session(&session)?;
            Some(session)
        }
        None => None,
    };
    let source = match (params.source, &session) {
        (Some(given), Some(session))
            if given.platform != session.source.platform.as_str()
                || given.channel != session.source.channel
                || given.actor != session.source.actor =>
        {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "source is not the session's: leave it out to send into the session",
            ));
        }
        (_, Some(session)) => session.source.clone(),
        (Some(given), None) => {
            check_field("source.platform", &given.platform)?;
            check_field("source.channel", &given.channel)?;
            check_field("source.actor", &given.actor)?;
            Source { platform: given.platform.into(), channel: given.channel, actor: given.actor }
        }
        (None, None) => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "source is required (platform, channel and actor), unless the event names its session",
            ));
        }
    };
    // Only an agent's own tool call speaks on it: an event there would claim an agent sent it.
    // Likewise a branch's or worker's session takes only what its parent's tools send it.
    if clade_store::fork_kind_of(&source.platform).is_some() {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "platform {:?} is kept for branches and workers (the agent.branch and agent.spawn_worker tools): send on another platform",
                source.platform.as_str()
            ),
        ));
    }
    // A chat platform's session is opened only by its listener: a reply there goes to a chat
    // through the operator's bot, so a client naming one could message any chat. Sending into
    // an existing session of the tenant's own (which the bindings gave it) is allowed.
    if session.is_none() && matches!(source.platform, Origin::Chat(_)) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "platform {:?} is kept for its chat channel's listener, which opens its conversations: send on another platform, or into one of its sessions by id",
                source.platform.as_str()
            ),
        ));
    }
    if source.platform == Origin::Agent {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "platform {:?} is kept for agents' messages to each other (the agent.send and agent.ask tools): send on another platform",
                Origin::Agent.as_str()
            ),
        ));
    }
    let key = match (params.idempotency_key.clone(), header_key) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "idempotency_key and the Idempotency-Key header differ",
            ));
        }
        (Some(k), _) | (None, Some(k)) => Some(k),
        (None, None) => None,
    };
    if let Some(key) = &key {
        check_field("idempotency_key", key)?;
    }
    let agent = match &session {
        Some(session) => {
            let handle =
                state.of(&tenant).agents().by_id(session.agent_id).await?.handle.to_string();
            if params.agent.as_ref().is_some_and(|named| *named != handle) {
                return Err(ApiError::new(
                    Code::InvalidRequest,
                    "agent is not the session's: leave it out to send into the session",
                ));
            }
            Some(handle)
        }
        None => params.agent.clone(),
    };
    if let Some(agent) = &agent {
        tracing::Span::current().record("agent", agent.as_str());
    }
    let mut envelope =
        Envelope { tenant: tenant.clone(), agent, text: params.text, source, idempotency_key: key };
    // A token limited to some agents sends only to them, wherever the bindings would route
    // its event: the agent is decided here, before anything is stored. A leased operator may
    // also send into a session it was leased: the event's agent and source are that session's.
    if !reach.is_whole_tenant() && session.is_none() {
        let handle = state.engine.route(&envelope)?;
        let agent = state.of(&tenant).agents().get(&handle).await?;
        if reach.leased_session_for(agent.id, &envelope.source).is_none() {
            reach.agent(&agent)?;
        }
        envelope.agent = Some(handle);
    }
    Ok(envelope)
}

/// Submits `envelope` and answers as `POST /v1/events` does: 202 once it is stored, or with
/// `wait` 200 and the reply once its turn has ended (202 if it is still running after 120 s).
pub(crate) async fn respond(
    state: &AppState,
    envelope: Envelope,
    wait: bool,
) -> Result<Response, ApiError> {
    let (status, body) = answer(state, envelope, wait).await?;
    Ok((status, axum::Json(body)).into_response())
}

/// What [`respond`] answers, for the edges that frame it otherwise (the WebSocket's event
/// frames).
pub(crate) async fn answer(
    state: &AppState,
    envelope: Envelope,
    wait: bool,
) -> Result<(StatusCode, EventResponse), ApiError> {
    if !wait {
        let accepted = state.engine.submit(envelope).await?;
        return Ok((StatusCode::ACCEPTED, accepted_body(&accepted)));
    }
    let tenant = envelope.tenant.clone();
    let handle = state.engine.route(&envelope).ok();
    let (accepted, watch) = state.engine.submit_and_watch(envelope).await?;
    let mut body = accepted_body(&accepted);
    if let Some(notice) = paused(state, &tenant, handle.as_deref(), accepted.session_id).await {
        // Its turn starts when the pause is lifted: waiting would only hold the caller.
        body.paused = Some(notice);
        return Ok((StatusCode::ACCEPTED, body));
    }
    match watch.ended(WAIT).await? {
        Some(finished) => {
            body.turn_id = Some(finished.turn_id.to_string());
            body.reply =
                finished.reply.map(|text| ReplyBody { text, model: finished.model.clone() });
            body.error = finished.error;
            body.status = Some(finished.status.into());
            Ok((StatusCode::OK, body))
        }
        // Still running: the event is safe; the caller can follow the session's stream.
        None => Ok((StatusCode::ACCEPTED, body)),
    }
}

/// What an event's sender is told when its agent (`handle`) or session is paused.
async fn paused(
    state: &AppState,
    tenant: &clade_core::Tenant,
    handle: Option<&str>,
    session: clade_core::SessionId,
) -> Option<String> {
    if !state.engine.any_paused() {
        return None;
    }
    let agent = state.of(tenant).agents().get(handle?).await.ok()?;
    state.engine.is_paused(agent.id, session).then(|| {
        format!(
            "agent {} is paused: the event is stored and waits; it runs when the pause is lifted (`clade agents resume {}`)",
            agent.handle, agent.handle
        )
    })
}

/// The answer for an event once stored, before its turn has ended.
pub(crate) fn accepted_body(accepted: &clade_store::Accepted) -> EventResponse {
    EventResponse {
        event_id: accepted.event_id.to_string(),
        session_id: accepted.session_id.to_string(),
        turn_id: None,
        status: None,
        reply: None,
        error: None,
        paused: None,
    }
}

/// `GET /v1/events`: the tenant's lifecycle events, oldest first, a page at a time. A token
/// limited to some agents names one of them (or one of their sessions).
pub(crate) async fn history(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    query: Result<
        axum::extract::Query<crate::api::EventHistoryQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<axum::Json<crate::api::EventHistoryResponse>, ApiError> {
    let axum::extract::Query(query) = query.map_err(crate::agents::query_rejection)?;
    let limit = crate::agents::checked_limit(query.limit)?;
    if query.cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "cursor: the `next_cursor` of a page, or 0 for the first",
        ));
    }
    let store = state.of(&tenant);
    let named = match &query.agent {
        Some(handle) => Some(store.agents().get(handle).await?),
        None => None,
    };
    // The agents the token reaches (none listed: all of the tenant's), or the one named.
    let agents: Vec<clade_core::AgentId> =
        reach.listing(named.as_ref())?.into_iter().flatten().collect();
    let session = match &query.session {
        Some(id) => Some(crate::sessions::reachable_row(&state, &tenant, &reach, id).await?.id),
        None => None,
    };
    if !reach.is_whole_tenant() && agents.is_empty() && session.is_none() {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "this token reaches single sessions only: name one with `session`",
        ));
    }
    let filter = clade_store::HistoryFilter {
        agents,
        session,
        kind: query.kind.map(|k| k.0),
        since: query.since.map(clade_core::Timestamp::from_millis),
    };
    let rows = store.sessions().event_history(&filter, query.cursor.unwrap_or(0), limit).await?;
    let next_cursor = rows.last().map(|r| r.id);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let data = serde_json::from_str(&row.data).unwrap_or(serde_json::Value::Null);
        let event = clade_protocol::LifecycleEvent::from_parts(row.kind, data).map_err(|e| {
            tracing::error!(seq = row.id, error = %e, "a stored lifecycle event does not read as its type");
            ApiError::new(Code::Internal, "a stored event could not be read")
        })?;
        items.push(clade_protocol::WebhookEvent {
            id: row.event_id,
            seq: row.id,
            tenant: row.tenant_id.to_string(),
            session: row.session_id.map(|s| s.to_string()),
            turn: row.turn_id.map(|t| t.to_string()),
            created_at: row.created_at.as_millis(),
            event,
        });
    }
    Ok(axum::Json(crate::api::EventHistoryResponse { items, next_cursor }))
}
