//! A remote tool host: serves a tool [`Registry`] over Clade's remote tool protocol
//! (`docs/specs/remote-tools.md`), the host's side of `clade_tools::remote`. `clade
//! cron-service` serves the cron tools with it.
//!
//! Every route needs the host's bearer token when it has one. A call runs in a task of its own
//! (a gateway that hangs up does not cancel it); its answer streams a heartbeat at least every
//! `heartbeat` and ends with the result or a typed error. A repeated idempotency key gets the
//! first call's outcome without running again, the same key with another tool or other
//! arguments is refused, and the last [`HostOptions::remembered`] keys are kept (in memory:
//! a restarted host forgets them, which the spec allows a host to say of itself).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clade_protocol::remote_tools::{
    CallError, CallFrame, CallRequest, ErrorCode, FRAMES_CONTENT_TYPE, Health, HostInfo, Manifest,
    PROTOCOL, ToolDescriptor,
};
use clade_tools::{CallContext, EffectClass, Registry};
use sha2::{Digest, Sha256};

use crate::pairing::{Pairing, refuse};

/// How a host serves.
#[derive(Clone)]
pub struct HostOptions {
    pub name: String,
    pub version: String,
    /// The bearer token every request must carry; none lets any client in (loopback tests).
    pub token: Option<String>,
    /// The longest a call's answer stays silent.
    pub heartbeat: Duration,
    /// How many idempotency keys are remembered.
    pub remembered: usize,
    /// The host's own key pair, for pairing: without one, the host only takes its token.
    pub identity: Option<Arc<clade_tools::remote::identity::Identity>>,
    /// Where the keys of the gateways paired with it are kept (a private JSON file).
    pub peers_file: Option<std::path::PathBuf>,
    /// A store that keeps the outcome of each idempotency key (under `name`), so a repeat
    /// after the host restarted is answered, not run again; without one, keys are remembered
    /// in memory only.
    pub memory: Option<clade_store::Store>,
}

pub use crate::pairing::HostError;

/// A call's place in the idempotency memory: what was asked, and its outcome once known.
struct Remembered {
    fingerprint: [u8; 32],
    outcome: tokio::sync::watch::Receiver<Option<CallFrame>>,
}

struct Host {
    registry: Registry,
    options: HostOptions,
    calls: Mutex<(HashMap<String, Remembered>, VecDeque<String>)>,
    pairing: Pairing,
}

/// The host's routes: `manifest`, `health`, `calls`, and `pair` and `pair/confirm`
/// ([`crate::pairing`]), at the root. Fails on a peers file that cannot be read.
pub fn router(registry: Registry, options: HostOptions) -> Result<Router, HostError> {
    let pairing = Pairing::load(
        options.token.as_deref(),
        options.identity.clone(),
        options.peers_file.clone(),
    )?;
    let host = Arc::new(Host { registry, options, calls: Mutex::default(), pairing });
    Ok(Router::new()
        .route("/manifest", get(manifest))
        .route("/health", get(health))
        .route("/calls", post(call))
        .merge(crate::pairing::routes())
        .with_state(host))
}

impl crate::pairing::Paired for Host {
    fn pairing(&self) -> &Pairing {
        &self.pairing
    }
}

impl Host {
    fn manifest(&self) -> Manifest {
        let tools = self
            .registry
            .iter()
            .map(|tool| ToolDescriptor {
                name: tool.name().to_owned(),
                description: tool.description().to_owned(),
                input_schema: tool.input_schema(),
                effect: match tool.effect() {
                    EffectClass::Pure => clade_protocol::remote_tools::Effect::Pure,
                    EffectClass::Idempotent => clade_protocol::remote_tools::Effect::Idempotent,
                    EffectClass::AtMostOnce => clade_protocol::remote_tools::Effect::AtMostOnce,
                },
                touches_host: tool.touches_host(),
                resource_argument: tool.resource_argument().map(str::to_owned),
            })
            .collect();
        Manifest {
            protocol: PROTOCOL.into(),
            host: HostInfo {
                name: self.options.name.clone(),
                version: self.options.version.clone(),
            },
            heartbeat_secs: u32::try_from(self.options.heartbeat.as_secs().max(1)).unwrap_or(300),
            tools,
        }
    }
}

async fn manifest(State(host): State<Arc<Host>>, headers: HeaderMap) -> Response {
    if let Err((code, message)) = host.pairing.admit("GET", "manifest", &headers, &[]) {
        return refuse(code, message);
    }
    let mut response = axum::Json(host.manifest()).into_response();
    host.pairing.prove(&headers, &mut response);
    response
}

async fn health(State(host): State<Arc<Host>>, headers: HeaderMap) -> Response {
    if let Err((code, message)) = host.pairing.admit("GET", "health", &headers, &[]) {
        return refuse(code, message);
    }
    let tools = u32::try_from(host.registry.iter().count()).unwrap_or(u32::MAX);
    axum::Json(Health { status: "ok".into(), protocol: PROTOCOL.into(), tools }).into_response()
}

async fn call(State(host): State<Arc<Host>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err((code, message)) = host.pairing.admit("POST", "calls", &headers, &body) {
        return refuse(code, message);
    }
    let request: CallRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(ErrorCode::BadRequest, format!("the body is not a call request: {e}"));
        }
    };
    if request.idempotency_key.is_empty() || request.idempotency_key.len() > 512 {
        return refuse(ErrorCode::BadRequest, "idempotency_key must be 1 to 512 bytes");
    }
    let Some(tool) = host.registry.get(&request.tool).cloned() else {
        return refuse(
            ErrorCode::UnknownTool,
            format!("this host has no tool {:?}; GET manifest lists its tools", request.tool),
        );
    };
    if !request.arguments.is_object() {
        return refuse(ErrorCode::InvalidArguments, "arguments must be a JSON object");
    }
    let caller = match request.caller.as_ref().map(parse_caller).transpose() {
        Ok(caller) => caller,
        Err(bad) => return refuse(ErrorCode::BadRequest, bad.to_string()),
    };
    let fingerprint = {
        let mut hasher = Sha256::new();
        hasher.update(request.tool.as_bytes());
        hasher.update([0]);
        hasher.update(request.arguments.to_string().as_bytes());
        hasher.finalize().into()
    };
    let conflict = || {
        refuse(
            ErrorCode::IdempotencyConflict,
            "this idempotency key was used for another tool or other arguments",
        )
    };
    let key = request.idempotency_key.clone();
    // A key this process has not seen may still be one the host answered before it restarted.
    let earlier = match host.memory(&key).await {
        Ok(earlier) => earlier,
        Err(err) => {
            let message =
                format!("cannot read this host's memory of idempotency keys: {err}; try again");
            return refuse(ErrorCode::Unavailable, message);
        }
    };
    let outcome = {
        let mut calls = host.calls.lock().unwrap_or_else(|e| e.into_inner());
        let (remembered, order) = &mut *calls;
        match (remembered.get(&key), earlier) {
            (Some(running), _) if running.fingerprint != fingerprint => return conflict(),
            (Some(running), _) => running.outcome.clone(),
            (None, Some((earlier, _))) if earlier != fingerprint => return conflict(),
            (None, earlier) => {
                // The call's latest frame: progress while it runs, then its outcome.
                let (done, outcome) = tokio::sync::watch::channel(None);
                let done = Arc::new(done);
                remembered
                    .insert(key.clone(), Remembered { fingerprint, outcome: outcome.clone() });
                order.push_back(key.clone());
                while order.len() > host.options.remembered.max(1) {
                    if let Some(oldest) = order.pop_front() {
                        remembered.remove(&oldest);
                    }
                }
                match earlier {
                    Some((_, frame)) => {
                        let _ = done.send(Some(frame));
                    }
                    None => {
                        let call = Call { host: host.clone(), key, fingerprint, done };
                        call.run(tool, request.arguments, request.call_id, caller);
                    }
                }
                outcome
            }
        }
    };
    let heartbeat = host.options.heartbeat;
    // Each frame the call sets is sent once; the outcome is the last. A reader slower than
    // the call's progress gets its latest report.
    let frames = futures::stream::unfold(Some((outcome, true)), move |state| async move {
        let (mut outcome, mut look) = state?;
        loop {
            let latest = if look { outcome.borrow_and_update().clone() } else { None };
            if let Some(frame) = latest {
                let next = (!is_outcome(&frame)).then_some((outcome, false));
                return Some((line(&frame), next));
            }
            match tokio::time::timeout(heartbeat, outcome.changed()).await {
                Ok(Ok(())) => look = true,
                // The call's task ended without an outcome (it panicked).
                Ok(Err(_)) => {
                    let frame = CallFrame::Error(CallError {
                        code: ErrorCode::Unavailable,
                        message: "the call ended without an outcome".into(),
                        retryable: false,
                    });
                    return Some((line(&frame), None));
                }
                Err(_) => return Some((line(&CallFrame::Heartbeat {}), Some((outcome, false)))),
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, FRAMES_CONTENT_TYPE)
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl Host {
    /// The fingerprint and outcome the host's durable memory (`HostOptions::memory`) holds for
    /// `key`, if any.
    async fn memory(&self, key: &str) -> Result<Option<([u8; 32], CallFrame)>, clade_store::Error> {
        let Some(store) = &self.options.memory else { return Ok(None) };
        let found = store.host_calls().get(&self.options.name, key).await?;
        Ok(found.and_then(|call| {
            let fingerprint = <[u8; 32]>::try_from(call.fingerprint.as_slice()).ok()?;
            let frame = serde_json::from_str(&call.frame).ok()?;
            Some((fingerprint, frame))
        }))
    }
}

/// A call this host runs: its outcome is published to every reader of the key, and kept in
/// the host's durable memory first, when it has one.
struct Call {
    host: Arc<Host>,
    key: String,
    fingerprint: [u8; 32],
    done: Arc<tokio::sync::watch::Sender<Option<CallFrame>>>,
}

impl Call {
    fn run(
        self,
        tool: Arc<dyn clade_tools::Tool>,
        arguments: serde_json::Value,
        call_id: String,
        caller: Option<clade_tools::Caller>,
    ) {
        let reports = self.done.clone();
        let progress = clade_tools::Progress::new(move |message, fraction| {
            let frame = CallFrame::Progress { message: message.to_owned(), fraction };
            // Nothing after the outcome.
            reports.send_if_modified(|latest| {
                let running = !latest.as_ref().is_some_and(is_outcome);
                if running {
                    *latest = Some(frame);
                }
                running
            });
        });
        let ctx = CallContext {
            idempotency_key: self.key.clone(),
            call_id,
            caller,
            progress: Some(progress),
            ..CallContext::default()
        };
        tokio::spawn(async move {
            let frame = match tool.call(arguments, &ctx).await {
                Ok(content) => CallFrame::Result { content },
                Err(error) => {
                    if let Some(detail) = error.detail() {
                        tracing::warn!(%error, detail, "a hosted tool failed on this host's side");
                    }
                    CallFrame::Error(CallError {
                        code: ErrorCode::ToolFailed,
                        message: error.to_string(),
                        retryable: false,
                    })
                }
            };
            if let Some(store) = &self.host.options.memory {
                let kept = clade_store::host_calls::HostCall {
                    fingerprint: self.fingerprint.to_vec(),
                    frame: serde_json::to_string(&frame).unwrap_or_default(),
                };
                if let Err(err) =
                    store.host_calls().remember(&self.host.options.name, &self.key, kept).await
                {
                    tracing::warn!(key = %self.key, error = %err, "cannot keep a call's outcome: a repeat after a restart would run it again");
                }
            }
            let _ = self.done.send(Some(frame));
        });
    }
}

/// Whether `frame` ends a call.
fn is_outcome(frame: &CallFrame) -> bool {
    matches!(frame, CallFrame::Result { .. } | CallFrame::Error(_))
}

fn line(frame: &CallFrame) -> Result<Bytes, std::convert::Infallible> {
    let mut text = serde_json::to_string(frame).unwrap_or_default();
    text.push('\n');
    Ok(Bytes::from(text))
}

/// A field of a call's `caller` that does not read as its id.
#[derive(Debug, thiserror::Error)]
#[error("caller.{field}: {source}")]
struct BadCaller {
    field: &'static str,
    source: clade_core::id::Error,
}

fn parse_caller(
    caller: &clade_protocol::remote_tools::Caller,
) -> Result<clade_tools::Caller, BadCaller> {
    let bad = |field| move |source| BadCaller { field, source };
    let tenant = clade_core::TenantId::parse(&caller.tenant).map_err(bad("tenant"))?;
    let agent = clade_core::AgentId::parse(&caller.agent).map_err(bad("agent"))?;
    let session = caller
        .session
        .as_deref()
        .map(clade_core::SessionId::parse)
        .transpose()
        .map_err(bad("session"))?;
    Ok(clade_tools::Caller { tenant, agent, session, turn: None })
}
