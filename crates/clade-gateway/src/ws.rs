//! `GET /v1/ws`: a WebSocket carrying live events of the sessions and agents a client
//! subscribes to, and the events it sends.
//!
//! Client messages are `clade_protocol::ClientFrame`s: `{"type":"subscribe","session":"<id>"}`,
//! `{"type":"subscribe","agent":"<handle>"}`, or `{"type":"event","ref":…,"event":{…}}` with
//! the body `POST /v1/events` takes. Server messages are `ServerFrame`s: `{"type":"subscribed",…}`,
//! `{"type":"event","session":…,"id":<stream id or null>,"kind":…,"data":…}`,
//! `{"type":"accepted","ref":…,"event_id":…,…}` once an event is stored, and
//! `{"type":"error","ref":…,"code":…,"message":…}`. Lifecycle events carry their stream id, so a
//! client that reconnects can fetch what it missed from the session's SSE stream with
//! `Last-Event-ID`.
//!
//! An event frame goes through what `POST /v1/events` does (`events::envelope_of`, then
//! `events::answer`): the same checks, limits and idempotency keys, answered only once stored.
//! At most [`MAX_IN_FLIGHT`] await their answers at once; past that the server reads no more
//! of the client's frames until one is answered, so a client that sends faster than events are
//! stored is slowed by its own socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse as _, Response};
use clade_core::{SessionId, Tenant};
use clade_protocol::{ClientFrame, ErrorBody, ServerFrame};
use clade_runtime::LiveEvent;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::{Caller, Granted, Reach};
use crate::live::{CatchingUp, Lagged, Scope, forward};

/// Largest client message accepted: an event frame's text may be 65,536 characters.
const MAX_MESSAGE: usize = 384 * 1024;
/// Event frames of one connection awaiting their answers; past this, no frame is read.
const MAX_IN_FLIGHT: usize = 16;
/// Subscriptions per connection.
const MAX_SUBSCRIPTIONS: usize = 256;
/// Events queued for one connection. A subscription whose queue is full waits, and once its
/// live channel overflows it re-reads what it missed from the outbox: the server never holds
/// more than this for a client that does not read.
const QUEUE: usize = 32;
/// A client that takes no frame for this long is closed (`1008`): it is not reading.
const SLOW_CLIENT: Duration = Duration::from_secs(10);

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(Caller(tenant, credential, reach)): Extension<Caller>,
    Extension(granted): Extension<Granted>,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // A request that is not a WebSocket handshake gets the API's JSON error, like any other.
    let not_a_handshake = |why: String| {
        crate::error::ApiError::new(
            crate::error::Code::InvalidRequest,
            format!("not a WebSocket upgrade request: {why}"),
        )
        .into_response()
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return not_a_handshake(rejection.body_text()),
    };
    let key = headers.get("sec-websocket-key").map(|key| key.as_bytes()).unwrap_or_default();
    if !is_handshake_key(key) {
        return not_a_handshake(
            "Sec-WebSocket-Key must be 16 random bytes in base64 (24 characters ending in `==`, RFC 6455)".into(),
        );
    }
    let slot = match state.limits.open_stream(&tenant, &credential) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    ws.max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE).on_upgrade(
        move |socket| async move {
            serve(socket, state, Caller(tenant, credential, reach), granted).await;
            drop(slot);
        },
    )
}

/// Whether `key` is what RFC 6455 asks of a handshake's `Sec-WebSocket-Key`: 16 bytes in
/// base64, which is 22 characters of its alphabet and `==` (the OpenAPI document's pattern).
fn is_handshake_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

fn error(code: &str, message: &str) -> Message {
    let error = ErrorBody { code: code.to_owned(), message: message.to_owned() };
    frame(&ServerFrame::Error { reference: None, error })
}

fn frame(frame: &ServerFrame) -> Message {
    Message::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

/// Closes the connection with `code` and a reason, giving the client a moment to take it.
async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.to_owned().into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame))))
        .await;
}

/// The close code for a frame the server could not take: too large (1009), not UTF-8 (1007),
/// or any other protocol error (1002).
fn close_for(err: &axum::Error) -> (u16, String) {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(inner) = source {
        if let Some(err) = inner.downcast_ref::<tungstenite::Error>() {
            return match err {
                tungstenite::Error::Capacity(_) => (
                    close_code::SIZE,
                    format!("message too large: at most {} KiB", MAX_MESSAGE / 1024),
                ),
                tungstenite::Error::Utf8(_) => {
                    (close_code::INVALID, "text frame is not valid UTF-8".to_owned())
                }
                _ => (close_code::PROTOCOL, format!("protocol error: {err}")),
            };
        }
        source = inner.source();
    }
    (close_code::PROTOCOL, format!("protocol error: {err}"))
}

async fn serve(mut socket: WebSocket, state: AppState, caller: Caller, granted: Granted) {
    let Caller(tenant, credential, reach) = &caller;
    let (tx, mut rx) = mpsc::channel::<LiveEvent>(QUEUE);
    let (answered, mut answers) = mpsc::channel::<ServerFrame>(MAX_IN_FLIGHT);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut subscriptions = 0;
    let mut recheck =
        clade_core::Interval::new(state.store.clock().clone(), crate::auth::RECHECK_EVERY);
    loop {
        let reply = tokio::select! {
            incoming = socket.recv(), if in_flight.available_permits() > 0 => {
                let text = match incoming {
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Err(err)) => {
                        let (code, reason) = close_for(&err);
                        return close(socket, code, &reason).await;
                    }
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(_))) => {
                        return close(socket, close_code::UNSUPPORTED, "send JSON text frames").await;
                    }
                    Some(Ok(_)) => continue,
                };
                if is_event_frame(&text) {
                    let sending = Sending { state: &state, caller: &caller, granted: &granted };
                    match sending.start(&text, &in_flight, &answered) {
                        Ok(()) => continue,
                        Err(refused) => refused,
                    }
                } else {
                    match subscribe(&state, tenant, reach, &text, &tx, subscriptions).await {
                        Ok(reply) => {
                            subscriptions += 1;
                            frame(&reply)
                        }
                        Err((code, message)) => error(code, &message),
                    }
                }
            }
            Some(answer) = answers.recv() => frame(&answer),
            Some(event) = rx.recv() => {
                let id = event.id.map(|id| state.stream_ids.encode(tenant.id, id));
                frame(&ServerFrame::Event {
                    session: event.session.to_string(),
                    id,
                    kind: event.kind().into(),
                    data: event.data(),
                })
            }
            _ = recheck.tick() => {
                if !credential.still_valid(&state.store, tenant, reach).await {
                    return close(socket, close_code::POLICY, "token revoked or tenant deleted").await;
                }
                continue;
            }
        };
        match tokio::time::timeout(SLOW_CLIENT, socket.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(tenant = %tenant.name, "closing a WebSocket whose client does not read");
                return close(socket, close_code::POLICY, "client too slow: it stopped reading")
                    .await;
            }
        }
    }
}

/// Whether a client frame is an event (`"type": "event"`), not a subscription.
fn is_event_frame(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Kind<'_>>(text).is_ok_and(|frame| frame.kind.as_deref() == Some("event"))
}

/// An event frame of one connection's caller, on its way to being stored.
struct Sending<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    granted: &'a Granted,
}

impl Sending<'_> {
    /// Reads an event frame and stores its event in a task of its own, whose answer goes to
    /// `answered`; holds one of `in_flight` until then. A frame that cannot be read, or that
    /// the token may not send, is refused at once.
    fn start(
        &self,
        text: &str,
        in_flight: &Arc<tokio::sync::Semaphore>,
        answered: &mpsc::Sender<ServerFrame>,
    ) -> Result<(), Message> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            refusal(None, crate::error::Code::InvalidRequest, format!("message is not JSON: {e}"))
        })?;
        let reference = match value.get("ref") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if name.chars().count() <= 256 => Some(name.clone()),
            Some(other) => {
                let why =
                    format!("\"ref\" must be a string of at most 256 characters, not {other}");
                return Err(refusal(None, crate::error::Code::InvalidRequest, why));
            }
        };
        let params = match serde_json::from_value::<ClientFrame>(value) {
            Ok(ClientFrame::Event { event, .. }) => event,
            Ok(ClientFrame::Subscribe { .. }) | Err(_) => {
                let why = "expected {\"type\":\"event\",\"ref\":…,\"event\":{…}} with the body POST /v1/events takes in \"event\" (agent, text, source or session, idempotency_key, wait)";
                return Err(refusal(reference, crate::error::Code::InvalidRequest, why.into()));
            }
        };
        if !self.granted.allows(&[clade_core::Scope::Send]) {
            let why = "this token may not send events, which needs the send scope: create a token with `clade tokens create --scope send`";
            return Err(refusal(reference, crate::error::Code::Forbidden, why.into()));
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let why = format!("at most {MAX_IN_FLIGHT} events await their answers at once");
            return Err(refusal(reference, crate::error::Code::RateLimited, why));
        };
        let (state, caller, answered) = (self.state.clone(), self.caller.clone(), answered.clone());
        tokio::spawn(async move {
            let wait = params.wait;
            let stored = async {
                let envelope = crate::events::envelope_of(&state, &caller, params, None).await?;
                crate::events::answer(&state, envelope, wait).await
            };
            let answer = match stored.await {
                Ok((_, event)) => ServerFrame::Accepted { reference, event },
                Err(err) => {
                    let error =
                        ErrorBody { code: err.code.as_str().to_owned(), message: err.message };
                    ServerFrame::Error { reference, error }
                }
            };
            // A client gone meanwhile misses the answer, not the event: it is stored.
            let _ = answered.send(answer).await;
            drop(permit);
        });
        Ok(())
    }
}

/// An event frame refused before anything was stored.
fn refusal(reference: Option<String>, code: crate::error::Code, message: String) -> Message {
    let error = ErrorBody { code: code.as_str().to_owned(), message };
    frame(&ServerFrame::Error { reference, error })
}

async fn subscribe(
    state: &AppState,
    tenant: &Tenant,
    reach: &Reach,
    text: &str,
    tx: &mpsc::Sender<LiveEvent>,
    subscriptions: usize,
) -> Result<ServerFrame, (&'static str, String)> {
    let request: Value = serde_json::from_str(text)
        .map_err(|e| ("invalid_request", format!("message is not JSON: {e}")))?;
    for field in ["type", "session", "agent"] {
        if let Some(value) = request.get(field).filter(|v| !v.is_string()) {
            return Err(("invalid_request", format!("\"{field}\" must be a string, not {value}")));
        }
    }
    let Ok(ClientFrame::Subscribe { session, agent }) = serde_json::from_value(request) else {
        return Err((
            "invalid_request",
            "expected {\"type\":\"subscribe\",\"session\"|\"agent\":…}".into(),
        ));
    };
    if subscriptions >= MAX_SUBSCRIPTIONS {
        return Err((
            "invalid_request",
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
        ));
    }
    if let Some(session) = session.as_deref() {
        let not_found = || ("session_not_found", format!("session {session:?} not found"));
        let id = SessionId::parse(session).map_err(|_| not_found())?;
        // Another tenant's session, or one of an agent the token does not reach, is reported
        // exactly like a missing one.
        let found = state.of(tenant).sessions().get(id).await.map_err(|_| not_found())?;
        if !reach.allows_session(found.id, found.agent_id) {
            return Err(not_found());
        }
        // Events committed before the subscription are not this subscriber's; read where they
        // end first, so a later catch-up starts there.
        let head = state.store.outbox_head().await.map_err(|e| ("internal", e.to_string()))?;
        let lagged = Lagged::new(&state.store, tenant.id, Scope::Session(id));
        let receiver = state.engine.hub().subscribe(id);
        tokio::spawn(forward(CatchingUp::new(receiver, lagged, head), tx.clone()));
        Ok(ServerFrame::Subscribed { session: Some(session.to_owned()), agent: None })
    } else if let Some(handle) = agent.as_deref() {
        let agent = state
            .store
            .agents(tenant.id)
            .get(handle)
            .await
            .ok()
            .filter(|agent| reach.allows(agent.id))
            .ok_or_else(|| ("agent_not_found", format!("agent {handle:?} not found")))?;
        let head = state.store.outbox_head().await.map_err(|e| ("internal", e.to_string()))?;
        let lagged = Lagged::new(&state.store, tenant.id, Scope::Agent(agent.id));
        let receiver = state.engine.hub().subscribe_agent(agent.id);
        tokio::spawn(forward(CatchingUp::new(receiver, lagged, head), tx.clone()));
        Ok(ServerFrame::Subscribed { session: None, agent: Some(handle.to_owned()) })
    } else {
        Err(("invalid_request", "subscribe needs \"session\" or \"agent\"".into()))
    }
}
