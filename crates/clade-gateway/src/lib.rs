//! Clade's HTTP API: health and readiness, the `/v1` REST resources, bearer-token auth per
//! tenant, JSON errors with stable codes, and the OpenAPI document describing all of it.
//!
//! Owns the routes (each declared once with its handler, scopes and documentation,
//! `routes.rs`), and the one table mapping errors to codes and HTTP statuses ([`error`]); the
//! wire types are `clade-protocol`'s. It must not know how state is stored (it calls `clade-store`'s
//! handles, never SQL) and it never spawns processes.
//!
//! Start at [`router`], then `agents.rs` for a resource end to end.

mod agents;
pub use agents::template_tools_response;
/// The wire types, which `clade-protocol` owns.
pub use clade_protocol as api;
mod auth;
mod channels;
pub use auth::PeerAuth;
mod cluster;
mod config;
pub mod config_flow;
pub mod console;
mod control;
mod debugging;
pub mod error;
mod events;
pub mod flows;
pub mod hooks;
#[cfg(feature = "grpc")]
mod hub;
#[cfg(feature = "grpc")]
pub use hub::{GrpcError, GrpcOptions, check_grpc_tls, serve_grpc};
mod jobs;
mod leases;

pub use jobs::{job_response, run_response};
mod live;
mod mcp;
mod memories;
mod messages;
pub mod metrics;
mod openai;
pub mod openapi;
mod paced;
pub mod pairing;
mod prompt;
pub mod quotas;
pub mod routes;
pub mod runs;
pub mod scopes;
mod server;
mod sessions;
mod settings;
pub mod stream_ids;
pub mod subscriber_host;
pub mod tool_host;
mod tools;
mod trace;
mod usage;
mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clade_runtime::tools::SandboxHealth;
use clade_store::{Agents, Store};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use server::{ConnectionLimits, bind, serve};

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
    /// The configuration file `POST /v1/config` applies to.
    pub config_path: Option<std::path::PathBuf>,
    /// The declared agent settings (defaults, environment overrides).
    pub settings: std::sync::Arc<clade_runtime::settings::Catalog>,
    /// What `POST /v1/config` with `smoke: true` runs before writing (none: refused).
    pub smoke: Option<config_flow::SmokeFn>,
    /// What `POST /v1/config` checks of the gateway's environment before writing.
    pub environment: Option<config_flow::EnvironmentCheck>,
    /// What checks paired operators' signed requests (none: only bearer tokens are taken).
    pub peers: Option<std::sync::Arc<auth::PeerAuth>>,
    /// The tenants' inbound webhooks (`POST /hooks/{tenant}/{name}`).
    pub hooks: std::sync::Arc<hooks::Hooks>,
    /// The chat channels (Telegram's webhook, `GET /v1/channels`, `/readyz`).
    pub channels: std::sync::Arc<clade_channels::Channels>,
    /// This node's shard keeper, on a cluster's node (`GET /v1/cluster/nodes` shows what it
    /// heard of the nodes); `None` for a gateway alone.
    pub keeper: Option<std::sync::Arc<clade_cluster::Keeper>>,
    /// The flow runner: starts, steers and shows flow runs.
    pub flows: clade_flow::run::Runner,
    /// The web console's sign-ins (`/console`).
    pub console: std::sync::Arc<console::Logins>,
}

impl AppState {
    /// The store as `tenant` sees it: every handler reads tenant data through this, so no
    /// request reaches another tenant's rows whatever ids it names.
    pub(crate) fn of(&self, tenant: &clade_core::Tenant) -> clade_store::TenantStore {
        self.store.tenant_scope(tenant.id)
    }
}

/// Server settings taken from `clade.yaml`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_body_bytes: usize,
}

/// The complete HTTP application: every route of [`routes::OPERATIONS`], the `/v1` ones behind
/// the token check.
pub fn router(state: AppState, options: &ServerOptions) -> Router {
    let (mut v1, mut public) = (Router::new(), Router::new());
    for op in routes::OPERATIONS {
        match op.path.strip_prefix("/v1") {
            Some(path) => v1 = v1.route(path, (op.handler)()),
            None => public = public.route(op.path, (op.handler)()),
        }
    }
    let v1 =
        v1.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    public
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(axum::middleware::from_fn(trace::request_span))
}

pub(crate) async fn healthz() -> impl IntoResponse {
    axum::Json(api::HealthResponse { status: "ok".into() })
}

/// Whether the gateway takes traffic, for anyone; what its sandbox and chat channels are doing
/// only for the operator's token (a stranger learns no bot's name).
pub(crate) async fn readyz(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let operator = auth::is_operator(&state, headers.get(axum::http::header::AUTHORIZATION)).await;
    // The sandbox's self-check runs in the background from start: its outcome is reported, and
    // a broken sandbox makes the gateway degraded (tools refused), not unready (chat works).
    let health = state.engine.tools().sandbox_health();
    let broken = matches!(health, Some(SandboxHealth::Broken(_)));
    let sandbox = health.map(|health| api::SandboxReport {
        status: health.as_str().to_owned(),
        reason: match health {
            SandboxHealth::Broken(reason) => Some(reason),
            _ => None,
        },
    });
    let channels: Vec<api::ChannelReadiness> = state
        .channels
        .health()
        .snapshot()
        .into_iter()
        .map(|h| api::ChannelReadiness {
            platform: h.platform,
            name: h.name,
            state: h.state.as_str().to_owned(),
        })
        .collect();
    let failing =
        channels.iter().any(|c| c.state == clade_channels::ChannelState::Failing.as_str());
    let answer = |status: &str, reason: Option<String>| api::ReadinessResponse {
        status: status.to_owned(),
        reason,
        sandbox: if operator { sandbox.clone() } else { None },
        channels: if operator { channels.clone() } else { Vec::new() },
    };
    if state.engine.draining() {
        let reason = "draining before it stops: it takes no new events";
        let body = answer("unavailable", Some(reason.into()));
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if state.engine.lease_lost() {
        let reason = "another node took this node's lease on its sessions; restart it, or send requests to that node";
        let body = answer("unavailable", Some(reason.into()));
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    // A node whose clock drifted from the database's runs on, and says so.
    let clock = state.keeper.as_ref().and_then(|k| k.clock_off()).map(|skew| {
        format!("{skew}: sync this machine's clock (NTP: chrony or systemd-timesyncd)")
    });
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => {
            let status = if broken || failing || clock.is_some() { "degraded" } else { "ready" };
            axum::Json(answer(status, clock)).into_response()
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check failed");
            let body = answer("unavailable", Some(err.to_string()));
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
        Err(_) => {
            let body = answer("unavailable", Some("store did not answer within 2 s".into()));
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

pub(crate) async fn openapi_json() -> impl IntoResponse {
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
