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
use clade_runtime::{LiveEvent, Subscription};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::AppState;
use crate::auth::Caller;
use crate::sessions::{Lagged, Scope};

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
        tokio::spawn(forward(receiver, tx.clone(), (lagged, head)));
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
        tokio::spawn(forward(receiver, tx.clone(), (lagged, head)));
        Ok(json!({ "type": "subscribed", "agent": handle }))
    } else {
        Err(("invalid_request", "subscribe needs \"session\" or \"agent\"".into()))
    }
}

/// Moves one subscription's events into the connection's queue until either side goes away.
/// A subscription (to a session or to an agent) that falls behind re-reads the lifecycle
/// events it missed from the outbox, from `head` (where the outbox ended when it subscribed)
/// or the last one it passed on, so it loses only text deltas.
async fn forward(
    mut receiver: Subscription,
    tx: mpsc::Sender<LiveEvent>,
    (lagged, head): (Lagged, i64),
) {
    let mut last = head;
    loop {
        let events = match receiver.recv().await {
            Ok(LiveEvent { id: Some(id), .. }) if id <= last => continue,
            Ok(event) => vec![event],
            Err(broadcast::error::RecvError::Lagged(_)) => lagged
                .outbox_after(last)
                .await
                .into_iter()
                .filter_map(|row| {
                    Some(LiveEvent {
                        session: row.session_id?,
                        id: Some(row.id),
                        data: serde_json::from_str(&row.data).unwrap_or(Value::Null),
                        kind: row.kind,
                    })
                })
                .collect(),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for event in events {
            last = event.id.unwrap_or(last).max(last);
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clade_core::{AgentConfig, Handle, SystemClock, Tenant};
    use clade_store::{Location, NewAgent, NewEvent, OutboxEvent, Source, Store, StoreOptions};

    use super::*;

    /// A subscriber that falls behind gets the lifecycle events it missed from the outbox, in
    /// order and once, and loses only deltas: a session's subscriber, and an agent's, which
    /// gets none of another agent's events.
    #[tokio::test]
    async fn a_lagging_subscription_catches_up_from_the_outbox() {
        for by_agent in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(StoreOptions {
                location: Location::Sqlite(dir.path().join("clade.db")),
                durability: clade_store::Durability::Normal,
                clock: Arc::new(SystemClock),
            })
            .await
            .unwrap();
            let tenant = store.tenant(Tenant::DEFAULT_NAME).await.unwrap();
            let new = |handle: &str| NewAgent {
                handle: Handle::parse(handle).unwrap(),
                display_name: None,
                config: AgentConfig::default(),
            };
            let agents =
                store.create_agents(tenant.id, vec![new("ada"), new("bob")]).await.unwrap();
            let head = store.outbox_head().await.unwrap();
            let mut sessions = Vec::new();
            for agent in &agents {
                let accepted = store
                    .accept_event(NewEvent {
                        tenant: tenant.id,
                        agent: agent.id,
                        source: Source {
                            platform: "t".into(),
                            channel: "c".into(),
                            actor: "a".into(),
                        },
                        text: "hi".into(),
                        idempotency_key: None,
                        payload_hash: "h".into(),
                        max_open_per_session: 10,
                    })
                    .await
                    .unwrap();
                let session = store.session(tenant.id, accepted.session_id).await.unwrap();
                sessions.push((session, accepted.event_id));
            }
            let (live, _) = broadcast::channel(2);
            let receiver = Subscription::detached(&live);
            let (tx, mut rx) = mpsc::channel(64);
            let ada = sessions[0].0.id;
            let lagged = match by_agent {
                true => Lagged::new(&store, tenant.id, Scope::Agent(agents[0].id)),
                false => Lagged::new(&store, tenant.id, Scope::Session(ada)),
            };
            // Committed (bob's too), then ada's published with more deltas than the channel
            // holds: the subscriber lags before it sees any of it.
            for (n, (session, event)) in sessions.iter().enumerate() {
                let kinds =
                    if n == 0 { vec!["turn.started", "tool.called"] } else { vec!["turn.started"] };
                let outbox = kinds
                    .into_iter()
                    .map(|kind| OutboxEvent { kind: kind.into(), data: "{}".into() })
                    .collect();
                let (_, rows) = store.start_turn(session, vec![*event], 0, outbox).await.unwrap();
                for row in rows.iter().filter(|_| n == 0) {
                    let id = Some(row.id);
                    let event =
                        LiveEvent { session: ada, id, kind: row.kind.clone(), data: Value::Null };
                    live.send(event).unwrap();
                }
            }
            for _ in 0..5 {
                let kind = "text.delta".to_owned();
                live.send(LiveEvent { session: ada, id: None, kind, data: Value::Null }).unwrap();
            }
            let task = tokio::spawn(forward(receiver, tx, (lagged, head)));
            let mut seen = Vec::new();
            while let Ok(Some(event)) =
                tokio::time::timeout(std::time::Duration::from_millis(500), rx.recv()).await
            {
                assert_eq!(event.session, ada, "another session's event reached the subscriber");
                seen.push(event.kind);
            }
            task.abort();
            let by = if by_agent { "agent" } else { "session" };
            assert_eq!(
                seen,
                ["turn.started", "tool.called", "text.delta", "text.delta"],
                "by {by}"
            );
        }
    }
}
