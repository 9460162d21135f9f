//! Clade's HTTP API: health and readiness, the `/v1` REST resources, bearer-token auth per
//! tenant, JSON errors with stable codes, and the OpenAPI document describing all of it.
//!
//! Owns the public wire shapes ([`api`]) and the one table mapping errors to codes and HTTP
//! statuses ([`error`]). It must not know how state is stored (it calls `clade-store`'s
//! handles, never SQL) and it never spawns processes.
//!
//! Start at [`router`], then `agents.rs` for a resource end to end.

mod agents;
pub mod api;
mod auth;
pub mod error;
mod events;
mod live;
pub mod openapi;
pub mod quotas;
pub mod scopes;
mod server;
mod sessions;
pub mod stream_ids;
mod tools;
mod trace;
mod usage;
mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clade_runtime::tools::SandboxHealth;
use clade_store::{Agents, Store};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use server::{ConnectionLimits, serve};

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub agents: Agents,
    pub engine: clade_runtime::Engine,
    /// Per-tenant quotas and rate limits.
    pub limits: std::sync::Arc<quotas::TenantLimits>,
    /// The ids streams show for lifecycle events.
    pub stream_ids: stream_ids::StreamIds,
}

/// Server settings taken from `clade.yaml`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_body_bytes: usize,
}

/// The complete HTTP application.
pub fn router(state: AppState, options: &ServerOptions) -> Router {
    let v1 = Router::new()
        .route("/agents", get(agents::list).post(agents::create))
        .route("/agents/{handle}", get(agents::show).delete(agents::delete))
        .route("/agents/{handle}/tools", get(tools::list))
        .route("/agents/{handle}/tools/{name}/call", axum::routing::post(tools::call))
        .route("/approvals", get(tools::approvals))
        .route("/approvals/{id}", axum::routing::post(tools::decide))
        .route("/grants", get(tools::grants).post(tools::add_grant))
        .route("/grants/{id}", axum::routing::delete(tools::revoke_grant))
        .route("/audit", get(tools::audit))
        .route("/usage", get(usage::get))
        .route("/events", axum::routing::post(events::post))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::show).patch(sessions::update))
        .route("/sessions/{id}/turns", get(sessions::turns))
        .route("/sessions/{id}/events", get(sessions::stream))
        .route("/sessions/{id}/resume", axum::routing::post(sessions::resume))
        .route("/sessions/{id}/cancel", axum::routing::post(sessions::cancel))
        .route("/ws", get(ws::upgrade))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(axum::middleware::from_fn(trace::request_span))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    // The sandbox's self-check runs in the background from start: its outcome is reported, and
    // a broken sandbox makes the gateway degraded (tools refused), not unready (chat works).
    let sandbox = state.engine.tools().sandbox_health().map(|health| {
        let reason = match &health {
            SandboxHealth::Broken(reason) => Some(reason.clone()),
            _ => None,
        };
        serde_json::json!({ "status": health.as_str(), "reason": reason })
    });
    let broken = sandbox.as_ref().is_some_and(|s| s["status"] == "broken");
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => {
            let status = if broken { "degraded" } else { "ready" };
            axum::Json(serde_json::json!({ "status": status, "sandbox": sandbox })).into_response()
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "status": "unavailable", "reason": err.to_string(), "sandbox": sandbox })))
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "unavailable", "reason": "store did not answer within 2 s", "sandbox": sandbox })),
        )
            .into_response(),
    }
}

async fn openapi_json() -> impl IntoResponse {
    axum::Json(openapi::document())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        error::Code::MethodNotAllowed,
        "this path does not accept that method: see /openapi.json",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(error::Code::RouteNotFound, "no such route: see /openapi.json for the API")
}
