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
use clade_core::Clock as _;
use clade_protocol::remote_tools::{
    CHALLENGE_HEADER, HOST_SIGNATURE_HEADER, PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER,
    PairConfirm, PairRequest, PairResponse,
};
use clade_protocol::remote_tools::{
    CallError, CallFrame, CallRequest, ErrorBody, ErrorCode, FRAMES_CONTENT_TYPE, Health, HostInfo,
    Manifest, PROTOCOL, ToolDescriptor, VERSION, VERSION_HEADER,
};
use clade_tools::remote::identity;
use clade_tools::{CallContext, EffectClass, Registry};
use sha2::{Digest, Sha256};

/// How a host serves.
#[derive(Debug, Clone)]
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
}

/// How far a signed request's time may be from the host's clock.
const SIGNED_WITHIN_MS: i64 = 5 * 60 * 1000;
/// How many pairings may be under way at once.
const PENDING_PAIRINGS: usize = 16;

/// A gateway paired with this host, as the peers file keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PairedPeer {
    /// The name the gateway gave this host.
    name: String,
    paired_at: i64,
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
#[error("the peers file {path}: {message}")]
pub struct HostError {
    pub path: String,
    pub message: String,
}

/// A call's place in the idempotency memory: what was asked, and its outcome once known.
struct Remembered {
    fingerprint: [u8; 32],
    outcome: tokio::sync::watch::Receiver<Option<CallFrame>>,
}

struct Host {
    registry: Registry,
    options: HostOptions,
    token_digest: Option<[u8; 32]>,
    calls: Mutex<(HashMap<String, Remembered>, VecDeque<String>)>,
    /// Paired gateways by key.
    peers: Mutex<std::collections::BTreeMap<String, PairedPeer>>,
    /// Pairings asked for and not yet confirmed: the gateway's key, its name for this host,
    /// and the challenge it must sign.
    pending: Mutex<VecDeque<(String, String, String)>>,
}

/// The host's routes: `manifest`, `health`, `calls`, and `pair` and `pair/confirm`, at the
/// root. Fails on a peers file that cannot be read.
pub fn router(registry: Registry, options: HostOptions) -> Result<Router, HostError> {
    let token_digest = options.token.as_deref().map(digest);
    let peers = match &options.peers_file {
        None => Default::default(),
        Some(path) => {
            let fail = |message: String| HostError { path: path.display().to_string(), message };
            match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    fail(format!("not a peers file ({e}); move it away to pair again from nothing"))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                Err(e) => return Err(fail(e.to_string())),
            }
        }
    };
    let host = Arc::new(Host {
        registry,
        options,
        token_digest,
        calls: Mutex::default(),
        peers: Mutex::new(peers),
        pending: Mutex::default(),
    });
    Ok(Router::new()
        .route("/manifest", get(manifest))
        .route("/health", get(health))
        .route("/calls", post(call))
        .route("/pair", post(pair))
        .route("/pair/confirm", post(confirm))
        .with_state(host))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = ErrorBody { error: CallError { code, message: message.into(), retryable: false } };
    (status, axum::Json(body)).into_response()
}

impl Host {
    /// A paired gateway's signature, else the token; then the version. `Err` is the refusal
    /// to send.
    fn admit(
        &self,
        method: &str,
        route: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), (ErrorCode, String)> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(key) = text(PEER_HEADER) {
            self.signed_by_peer(
                key,
                text(PEER_TIME_HEADER),
                text(PEER_SIGNATURE_HEADER),
                method,
                route,
                body,
            )?;
            return self.version(headers);
        }
        self.token(headers)?;
        self.version(headers)
    }

    fn signed_by_peer(
        &self,
        key: &str,
        time: Option<&str>,
        signature: Option<&str>,
        method: &str,
        route: &str,
        body: &[u8],
    ) -> Result<(), (ErrorCode, String)> {
        let refused = |message: String| (ErrorCode::Unauthorized, message);
        if !self.peers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key) {
            return Err(refused(format!(
                "the key {}… is not paired with this host",
                identity::fingerprint(key)
            )));
        }
        let time: i64 = time.and_then(|t| t.parse().ok()).ok_or_else(|| {
            refused(format!("a signed request needs {PEER_TIME_HEADER} (Unix milliseconds)"))
        })?;
        let now = clade_core::SystemClock.now().as_millis();
        if (now - time).abs() > SIGNED_WITHIN_MS {
            return Err(refused(format!(
                "the request was signed {} s from this host's clock; at most {} s are taken",
                (now - time).abs() / 1000,
                SIGNED_WITHIN_MS / 1000
            )));
        }
        let text = identity::request_text(method, route, time, body);
        match signature {
            Some(signature) if identity::verify(key, &[identity::REQUEST, &text], signature) => {
                Ok(())
            }
            _ => Err(refused("the request's signature is not its key's".into())),
        }
    }

    fn token(&self, headers: &HeaderMap) -> Result<(), (ErrorCode, String)> {
        if let Some(expected) = &self.token_digest {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // Comparing digests: the time taken says nothing of the token's bytes.
            if given.map(digest).as_ref() != Some(expected) {
                return Err((
                    ErrorCode::Unauthorized,
                    "this host needs its bearer token in the Authorization header".into(),
                ));
            }
        }
        Ok(())
    }

    fn version(&self, headers: &HeaderMap) -> Result<(), (ErrorCode, String)> {
        match headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()) {
            Some(VERSION) => Ok(()),
            Some(other) => Err((
                ErrorCode::UnsupportedVersion,
                format!("this host speaks version {VERSION} of the protocol, not {other:?}"),
            )),
            None => Err((
                ErrorCode::UnsupportedVersion,
                format!("name the protocol version in the {VERSION_HEADER} header ({VERSION})"),
            )),
        }
    }

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
    if let Err((code, message)) = host.admit("GET", "manifest", &headers, &[]) {
        return refuse(code, message);
    }
    let mut response = axum::Json(host.manifest()).into_response();
    // A paired gateway's challenge: the proof that this is the host it paired with.
    let challenge = headers.get(CHALLENGE_HEADER).and_then(|v| v.to_str().ok());
    if let (Some(challenge), Some(identity)) = (challenge, &host.options.identity) {
        let signature = identity.sign(&[identity::HOST_PROOF, challenge.as_bytes()]);
        if let Ok(value) = axum::http::HeaderValue::from_str(&signature) {
            response.headers_mut().insert(HOST_SIGNATURE_HEADER, value);
        }
    }
    response
}

async fn health(State(host): State<Arc<Host>>, headers: HeaderMap) -> Response {
    if let Err((code, message)) = host.admit("GET", "health", &headers, &[]) {
        return refuse(code, message);
    }
    let tools = u32::try_from(host.registry.iter().count()).unwrap_or(u32::MAX);
    axum::Json(Health { status: "ok".into(), protocol: PROTOCOL.into(), tools }).into_response()
}

async fn call(State(host): State<Arc<Host>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err((code, message)) = host.admit("POST", "calls", &headers, &body) {
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
        Err(message) => return refuse(ErrorCode::BadRequest, message),
    };
    let fingerprint = {
        let mut hasher = Sha256::new();
        hasher.update(request.tool.as_bytes());
        hasher.update([0]);
        hasher.update(request.arguments.to_string().as_bytes());
        hasher.finalize().into()
    };
    let outcome = {
        let mut calls = host.calls.lock().unwrap_or_else(|e| e.into_inner());
        let (remembered, order) = &mut *calls;
        match remembered.get(&request.idempotency_key) {
            Some(earlier) if earlier.fingerprint != fingerprint => {
                return refuse(
                    ErrorCode::IdempotencyConflict,
                    "this idempotency key was used for another tool or other arguments",
                );
            }
            Some(earlier) => earlier.outcome.clone(),
            None => {
                let (done, outcome) = tokio::sync::watch::channel(None);
                remembered.insert(
                    request.idempotency_key.clone(),
                    Remembered { fingerprint, outcome: outcome.clone() },
                );
                order.push_back(request.idempotency_key.clone());
                while order.len() > host.options.remembered.max(1) {
                    if let Some(oldest) = order.pop_front() {
                        remembered.remove(&oldest);
                    }
                }
                let ctx = CallContext {
                    idempotency_key: request.idempotency_key.clone(),
                    call_id: request.call_id.clone(),
                    caller,
                    ..CallContext::default()
                };
                let arguments = request.arguments.clone();
                tokio::spawn(async move {
                    let frame = match tool.call(arguments, &ctx).await {
                        Ok(content) => CallFrame::Result { content },
                        Err(message) => CallFrame::Error(CallError {
                            code: ErrorCode::ToolFailed,
                            message,
                            retryable: false,
                        }),
                    };
                    let _ = done.send(Some(frame));
                });
                outcome
            }
        }
    };
    let heartbeat = host.options.heartbeat;
    let frames = futures::stream::unfold(Some(outcome), move |state| async move {
        let mut outcome = state?;
        loop {
            if let Some(frame) = outcome.borrow().clone() {
                return Some((line(&frame), None));
            }
            match tokio::time::timeout(heartbeat, outcome.changed()).await {
                Ok(Ok(())) => continue,
                // The call's task ended without an outcome (it panicked).
                Ok(Err(_)) => {
                    let frame = CallFrame::Error(CallError {
                        code: ErrorCode::Unavailable,
                        message: "the call ended without an outcome".into(),
                        retryable: false,
                    });
                    return Some((line(&frame), None));
                }
                Err(_) => return Some((line(&CallFrame::Heartbeat {}), Some(outcome))),
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, FRAMES_CONTENT_TYPE)
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line(frame: &CallFrame) -> Result<Bytes, std::convert::Infallible> {
    let mut text = serde_json::to_string(frame).unwrap_or_default();
    text.push('\n');
    Ok(Bytes::from(text))
}

fn parse_caller(
    caller: &clade_protocol::remote_tools::Caller,
) -> Result<clade_tools::Caller, String> {
    let tenant =
        clade_core::TenantId::parse(&caller.tenant).map_err(|e| format!("caller.tenant: {e}"))?;
    let agent =
        clade_core::AgentId::parse(&caller.agent).map_err(|e| format!("caller.agent: {e}"))?;
    let session = caller
        .session
        .as_deref()
        .map(clade_core::SessionId::parse)
        .transpose()
        .map_err(|e| format!("caller.session: {e}"))?;
    Ok(clade_tools::Caller { tenant, agent, session })
}

/// Checks what a pairing step needs: the token (never a signature: pairing is what makes one
/// count), the version, and the host's identity.
fn pairing_admitted<'a>(
    host: &'a Host,
    headers: &HeaderMap,
) -> Result<&'a identity::Identity, (ErrorCode, String)> {
    if host.token_digest.is_none() {
        return Err((
            ErrorCode::Unauthorized,
            "this host takes no pairing: it has no token to authorize one".into(),
        ));
    }
    host.token(headers)?;
    host.version(headers)?;
    host.options
        .identity
        .as_deref()
        .ok_or_else(|| (ErrorCode::Unavailable, "this host has no identity to pair with".into()))
}

async fn pair(State(host): State<Arc<Host>>, headers: HeaderMap, body: Bytes) -> Response {
    let identity = match pairing_admitted(&host, &headers) {
        Ok(identity) => identity,
        Err((code, message)) => return refuse(code, message),
    };
    let asked: PairRequest = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(e) => return refuse(ErrorCode::BadRequest, format!("not a pairing request: {e}")),
    };
    if identity::key_bytes(&asked.gateway_key).is_none() {
        return refuse(
            ErrorCode::BadRequest,
            "gateway_key is not an Ed25519 public key (base64url of 32 bytes)",
        );
    }
    if asked.challenge.len() < 16 || asked.challenge.len() > 128 || asked.name.len() > 64 {
        return refuse(
            ErrorCode::BadRequest,
            "challenge must be 16 to 128 characters, name at most 64",
        );
    }
    let signature = identity.sign(&[
        identity::PAIR_HOST,
        asked.challenge.as_bytes(),
        b"\n",
        asked.gateway_key.as_bytes(),
    ]);
    let challenge = identity::challenge();
    {
        let mut pending = host.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|(key, _, _)| *key != asked.gateway_key);
        pending.push_back((asked.gateway_key.clone(), asked.name.clone(), challenge.clone()));
        while pending.len() > PENDING_PAIRINGS {
            pending.pop_front();
        }
    }
    axum::Json(PairResponse { host_key: identity.public(), signature, challenge }).into_response()
}

async fn confirm(State(host): State<Arc<Host>>, headers: HeaderMap, body: Bytes) -> Response {
    let identity = match pairing_admitted(&host, &headers) {
        Ok(identity) => identity,
        Err((code, message)) => return refuse(code, message),
    };
    let confirmed: PairConfirm = match serde_json::from_slice(&body) {
        Ok(confirmed) => confirmed,
        Err(e) => return refuse(ErrorCode::BadRequest, format!("not a pairing confirmation: {e}")),
    };
    let under_way = {
        let mut pending = host.pending.lock().unwrap_or_else(|e| e.into_inner());
        let at = pending.iter().position(|(key, _, _)| *key == confirmed.gateway_key);
        at.and_then(|at| pending.remove(at))
    };
    let Some((key, name, challenge)) = under_way else {
        return refuse(
            ErrorCode::BadRequest,
            "no pairing of this key is under way: POST pair first",
        );
    };
    let host_key = identity.public();
    let signed = [identity::PAIR_GATEWAY, challenge.as_bytes(), b"\n", host_key.as_bytes()];
    if !identity::verify(&key, &signed, &confirmed.signature) {
        return refuse(
            ErrorCode::Unauthorized,
            "the confirmation is not signed by the key that asked to pair",
        );
    }
    let paired_at = clade_core::SystemClock.now().as_millis();
    let peers = {
        let mut peers = host.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(key, PairedPeer { name, paired_at });
        peers.clone()
    };
    if let Some(path) = &host.options.peers_file
        && let Err(e) = write_peers(path, &peers)
    {
        return refuse(ErrorCode::Unavailable, format!("cannot keep the pairing: {e}"));
    }
    axum::Json(serde_json::json!({})).into_response()
}

/// Writes the peers file whole, private, through a temporary file renamed over it.
fn write_peers(
    path: &std::path::Path,
    peers: &std::collections::BTreeMap<String, PairedPeer>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let text = serde_json::to_vec_pretty(peers).map_err(std::io::Error::other)?;
    let staged = path.with_extension("staged");
    let _ = std::fs::remove_file(&staged);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staged)?;
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&staged, path)
}
