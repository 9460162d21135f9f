//! `GET /v1/ws`: a WebSocket carrying live events of the sessions and agents a client
//! subscribes to.
//!
//! Client messages: `{"type":"subscribe","session":"<id>"}` or
//! `{"type":"subscribe","agent":"<handle>"}`. Server messages: `{"type":"subscribed",…}`,
//! `{"type":"event","session":…,"id":<outbox id or null>,"kind":…,"data":…}` and
//! `{"type":"error","code":…,"message":…}`. Lifecycle events carry their outbox id, so a client
//! that reconnects can fetch what it missed from the session's SSE stream with `Last-Event-ID`.

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use clade_core::{SessionId, Tenant};
use clade_runtime::LiveEvent;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::Caller;
use crate::live::{CatchingUp, Lagged, Scope};

/// Largest client message accepted.
const MAX_MESSAGE: usize = 16 * 1024;
/// Subscriptions per connection.
const MAX_SUBSCRIPTIONS: usize = 256;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(Caller(tenant)): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| serve(socket, state, tenant))
}

fn error(code: &str, message: &str) -> Message {
    Message::Text(json!({ "type": "error", "code": code, "message": message }).to_string().into())
}

async fn serve(mut socket: WebSocket, state: AppState, tenant: Tenant) {
    let (tx, mut rx) = mpsc::channel::<LiveEvent>(1024);
    let mut subscriptions = 0;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { return };
                let text = match message {
                    Message::Text(text) => text.to_string(),
                    Message::Close(_) => return,
                    _ => continue,
                };
                let reply = match subscribe(&state, &tenant, &text, &tx, subscriptions).await {
                    Ok(reply) => {
                        subscriptions += 1;
                        Message::Text(reply.to_string().into())
                    }
                    Err((code, message)) => error(code, &message),
                };
                if socket.send(reply).await.is_err() {
                    return;
                }
            }
            Some(event) = rx.recv() => {
                let frame = json!({ "type": "event", "session": event.session.to_string(), "id": event.id, "kind": event.kind, "data": event.data });
                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn subscribe(
    state: &AppState,
    tenant: &Tenant,
    text: &str,
    tx: &mpsc::Sender<LiveEvent>,
    subscriptions: usize,
) -> Result<Value, (&'static str, String)> {
    let request: Value = serde_json::from_str(text)
        .map_err(|e| ("invalid_request", format!("message is not JSON: {e}")))?;
    if request["type"] != "subscribe" {
        return Err((
            "invalid_request",
            "expected {\"type\":\"subscribe\",\"session\"|\"agent\":…}".into(),
        ));
    }
    if subscriptions >= MAX_SUBSCRIPTIONS {
        return Err((
            "invalid_request",
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
        ));
    }
    if let Some(session) = request["session"].as_str() {
        let not_found = || ("session_not_found", format!("session {session:?} not found"));
        let id = SessionId::parse(session).map_err(|_| not_found())?;
        // Another tenant's session is reported exactly like a missing one.
        state.store.session(tenant.id, id).await.map_err(|_| not_found())?;
        // Events committed before the subscription are not this subscriber's; read where they
        // end first, so a later catch-up starts there.
        let head = state.store.outbox_head().await.map_err(|e| ("internal", e.to_string()))?;
        let lagged = Lagged::new(&state.store, tenant.id, Scope::Session(id));
        let receiver = state.engine.hub().subscribe(id);
        tokio::spawn(forward(CatchingUp::new(receiver, lagged, head), tx.clone()));
        Ok(json!({ "type": "subscribed", "session": session }))
    } else if let Some(handle) = request["agent"].as_str() {
        let agent = state
            .store
            .agent(tenant.id, handle)
            .await
            .map_err(|_| ("agent_not_found", format!("agent {handle:?} not found")))?;
        let head = state.store.outbox_head().await.map_err(|e| ("internal", e.to_string()))?;
        let lagged = Lagged::new(&state.store, tenant.id, Scope::Agent(agent.id));
        let receiver = state.engine.hub().subscribe_agent(agent.id);
        tokio::spawn(forward(CatchingUp::new(receiver, lagged, head), tx.clone()));
        Ok(json!({ "type": "subscribed", "agent": handle }))
    } else {
        Err(("invalid_request", "subscribe needs \"session\" or \"agent\"".into()))
    }
}

/// Moves one subscription's events into the connection's queue until either side goes away.
/// A subscription that falls behind re-reads the lifecycle events it missed from the outbox
/// (see [`CatchingUp`]), so it loses only text deltas.
async fn forward(mut events: CatchingUp, tx: mpsc::Sender<LiveEvent>) {
    while let Some(event) = events.next().await {
        if tx.send(event).await.is_err() {
            return;
        }
    }
}
