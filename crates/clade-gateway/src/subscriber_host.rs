//! A paired subscriber: the component's side of delivering a gateway's lifecycle events to a
//! component paired with `clade pair subscriber` (`docs/specs/webhooks.md`, "Paired
//! subscribers"). `clade subscriber-service` serves it and writes each event as a JSON line.
//!
//! Routes: `GET health`, which signs a paired gateway's challenge (the gateway asks before it
//! delivers, so an impostor at the same address receives nothing), `POST events`, one event
//! each, and the pairing steps ([`crate::pairing`]). An event whose `id` was taken already is
//! acknowledged without being passed on again: delivery is at least once, and this side drops
//! the repeats it remembers (the last [`SubscriberOptions::remembered`] ids, in memory).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clade_protocol::remote_tools::{ErrorCode, PROTOCOL};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::pairing::{HostError, Pairing, refuse};

/// How a subscriber serves.
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    pub name: String,
    /// The bearer token that authorizes pairing (and unpaired deliveries).
    pub token: Option<String>,
    /// The subscriber's own key pair.
    pub identity: Option<Arc<clade_tools::remote::identity::Identity>>,
    /// Where the keys of the gateways paired with it are kept (a private JSON file).
    pub peers_file: Option<std::path::PathBuf>,
    /// How many event ids are remembered to drop repeats.
    pub remembered: usize,
}

/// Where events go (a file, standard output): `Err` makes the gateway deliver the event again
/// later.
pub type Sink = Arc<dyn Fn(Value) -> BoxFuture<'static, std::io::Result<()>> + Send + Sync>;

struct Subscriber {
    options: SubscriberOptions,
    pairing: Pairing,
    sink: Sink,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl crate::pairing::Paired for Subscriber {
    fn pairing(&self) -> &Pairing {
        &self.pairing
    }
}

/// The subscriber's routes, at the root. Fails on a peers file that cannot be read.
pub fn router(sink: Sink, options: SubscriberOptions) -> Result<Router, HostError> {
    let pairing = Pairing::load(
        options.token.as_deref(),
        options.identity.clone(),
        options.peers_file.clone(),
    )?;
    let subscriber = Arc::new(Subscriber { options, pairing, sink, seen: Mutex::default() });
    Ok(Router::new()
        .route("/health", get(health))
        .route("/events", post(event))
        .merge(crate::pairing::routes())
        .with_state(subscriber))
}

async fn health(State(subscriber): State<Arc<Subscriber>>, headers: HeaderMap) -> Response {
    if let Err((code, message)) = subscriber.pairing.admit("GET", "health", &headers, &[]) {
        return refuse(code, message);
    }
    let mut response = axum::Json(serde_json::json!({
        "status": "ok",
        "protocol": PROTOCOL,
        "name": subscriber.options.name,
    }))
    .into_response();
    subscriber.pairing.prove(&headers, &mut response);
    response
}

async fn event(
    State(subscriber): State<Arc<Subscriber>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err((code, message)) = subscriber.pairing.admit("POST", "events", &headers, &body) {
        return refuse(code, message);
    }
    let event: Value = match serde_json::from_slice(&body) {
        Ok(event @ Value::Object(_)) => event,
        Ok(_) => return refuse(ErrorCode::BadRequest, "an event is a JSON object"),
        Err(e) => return refuse(ErrorCode::BadRequest, format!("the body is not JSON: {e}")),
    };
    let Some(id) = event.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return refuse(ErrorCode::BadRequest, "an event needs its string `id`");
    };
    if subscriber.seen.lock().unwrap_or_else(|e| e.into_inner()).0.contains(&id) {
        return axum::Json(serde_json::json!({ "repeat": true })).into_response();
    }
    if let Err(message) = (subscriber.sink)(event).await {
        return refuse(ErrorCode::Unavailable, format!("the event was not kept: {message}"));
    }
    let mut seen = subscriber.seen.lock().unwrap_or_else(|e| e.into_inner());
    let (ids, order) = &mut *seen;
    if ids.insert(id.clone()) {
        order.push_back(id);
        while order.len() > subscriber.options.remembered.max(1) {
            if let Some(oldest) = order.pop_front() {
                ids.remove(&oldest);
            }
        }
    }
    axum::Json(serde_json::json!({ "repeat": false })).into_response()
}
