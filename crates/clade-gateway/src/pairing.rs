//! The component's side of pairing (`docs/specs/remote-tools.md` §8), shared by every kind of
//! component a gateway pairs with: a tool host ([`crate::tool_host`]) and a subscriber
//! ([`crate::subscriber_host`]).
//!
//! A component holds its bearer token, its own key pair and a private peers file of the
//! gateways paired with it. [`Pairing`] admits a request (a paired gateway's signature, else the
//! token; then the protocol version), answers the two pairing steps, and signs a paired
//! gateway's challenge so that it can tell this component from an impostor.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clade_core::Clock as _;
use clade_protocol::remote_tools::{
    CHALLENGE_HEADER, CallError, ErrorBody, ErrorCode, HOST_SIGNATURE_HEADER, PEER_HEADER,
    PEER_SIGNATURE_HEADER, PEER_TIME_HEADER, PairConfirm, PairRequest, PairResponse, VERSION,
    VERSION_HEADER,
};
use clade_tools::remote::identity::{self, Identity};
use sha2::{Digest as _, Sha256};

/// How far a signed request's time may be from the component's clock.
const SIGNED_WITHIN_MS: i64 = 5 * 60 * 1000;
/// How many pairings may be under way at once.
const PENDING_PAIRINGS: usize = 16;

/// A gateway paired with this component, as the peers file keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PairedPeer {
    /// The name the gateway gave this component.
    name: String,
    paired_at: i64,
}

/// Why a component could not start.
#[derive(Debug, thiserror::Error)]
#[error("the peers file {path}: {message}")]
pub struct HostError {
    pub path: String,
    pub message: String,
}

/// A refusal to send: the protocol's error code and what to say.
pub type Refusal = (ErrorCode, String);

/// The component's credentials and the gateways paired with it.
pub struct Pairing {
    token_digest: Option<[u8; 32]>,
    identity: Option<Arc<Identity>>,
    peers_file: Option<PathBuf>,
    /// Paired gateways by key.
    peers: Mutex<BTreeMap<String, PairedPeer>>,
    /// Pairings asked for and not yet confirmed: the gateway's key, its name for this
    /// component, and the challenge it must sign.
    pending: Mutex<VecDeque<(String, String, String)>>,
}

impl Pairing {
    /// Reads the peers file (none yet is no pairing yet). Fails on a file that cannot be read.
    pub fn load(
        token: Option<&str>,
        identity: Option<Arc<Identity>>,
        peers_file: Option<PathBuf>,
    ) -> Result<Self, HostError> {
        let peers = match &peers_file {
            None => BTreeMap::new(),
            Some(path) => {
                let fail =
                    |message: String| HostError { path: path.display().to_string(), message };
                match std::fs::read(path) {
                    Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        fail(format!(
                            "not a peers file ({e}); move it away to pair again from nothing"
                        ))
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                    Err(e) => return Err(fail(e.to_string())),
                }
            }
        };
        Ok(Self {
            token_digest: token.map(digest),
            identity,
            peers_file,
            peers: Mutex::new(peers),
            pending: Mutex::default(),
        })
    }

    /// The gateways paired with this component: each one's key and the name it gave this
    /// component, newest first.
    pub fn paired(&self) -> Vec<(String, String)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut paired: Vec<_> = peers
            .iter()
            .map(|(key, peer)| (peer.paired_at, key.clone(), peer.name.clone()))
            .collect();
        paired.sort_by_key(|p| std::cmp::Reverse(p.0));
        paired.into_iter().map(|(_, key, name)| (key, name)).collect()
    }

    /// A paired gateway's signature, else the token; then the version.
    pub fn admit(
        &self,
        method: &str,
        route: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
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
            return version(headers);
        }
        self.token(headers)?;
        version(headers)
    }

    fn signed_by_peer(
        &self,
        key: &str,
        time: Option<&str>,
        signature: Option<&str>,
        method: &str,
        route: &str,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let refused = |message: String| (ErrorCode::Unauthorized, message);
        if !self.peers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key) {
            return Err(refused(format!(
                "the key {}… is not paired with this component",
                identity::fingerprint(key)
            )));
        }
        let time: i64 = time.and_then(|t| t.parse().ok()).ok_or_else(|| {
            refused(format!("a signed request needs {PEER_TIME_HEADER} (Unix milliseconds)"))
        })?;
        let now = clade_core::SystemClock.now().as_millis();
        if (now - time).abs() > SIGNED_WITHIN_MS {
            return Err(refused(format!(
                "the request was signed {} s from this component's clock; at most {} s are taken",
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

    fn token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(expected) = &self.token_digest {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // Comparing digests: the time taken says nothing of the token's bytes.
            if given.map(digest).as_ref() != Some(expected) {
                return Err((
                    ErrorCode::Unauthorized,
                    "this component needs its bearer token in the Authorization header".into(),
                ));
            }
        }
        Ok(())
    }

    /// Signs the challenge a paired gateway sent with `headers` into `response`: the proof
    /// that this is the component it paired with.
    pub fn prove(&self, headers: &HeaderMap, response: &mut Response) {
        let challenge = headers.get(CHALLENGE_HEADER).and_then(|v| v.to_str().ok());
        if let (Some(challenge), Some(identity)) = (challenge, &self.identity) {
            let signature = identity.sign(&[identity::HOST_PROOF, challenge.as_bytes()]);
            if let Ok(value) = HeaderValue::from_str(&signature) {
                response.headers_mut().insert(HOST_SIGNATURE_HEADER, value);
            }
        }
    }

    /// Checks what a pairing step needs: the token (never a signature: pairing is what makes
    /// one count), the version, and the component's identity.
    fn pairing_admitted(&self, headers: &HeaderMap) -> Result<&Identity, Refusal> {
        if self.token_digest.is_none() {
            return Err((
                ErrorCode::Unauthorized,
                "this component takes no pairing: it has no token to authorize one".into(),
            ));
        }
        self.token(headers)?;
        version(headers)?;
        self.identity.as_deref().ok_or_else(|| {
            (ErrorCode::Unavailable, "this component has no identity to pair with".into())
        })
    }

    /// `POST pair`: signs the gateway's challenge and sends one of its own.
    pub fn pair(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let identity = match self.pairing_admitted(headers) {
            Ok(identity) => identity,
            Err((code, message)) => return refuse(code, message),
        };
        let asked: PairRequest = match serde_json::from_slice(body) {
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
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|(key, _, _)| *key != asked.gateway_key);
            pending.push_back((asked.gateway_key.clone(), asked.name.clone(), challenge.clone()));
            while pending.len() > PENDING_PAIRINGS {
                pending.pop_front();
            }
        }
        axum::Json(PairResponse { host_key: identity.public(), signature, challenge })
            .into_response()
    }

    /// `POST pair/confirm`: checks the gateway's signature of this component's challenge and
    /// keeps its key.
    pub fn confirm(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let identity = match self.pairing_admitted(headers) {
            Ok(identity) => identity,
            Err((code, message)) => return refuse(code, message),
        };
        let confirmed: PairConfirm = match serde_json::from_slice(body) {
            Ok(confirmed) => confirmed,
            Err(e) => {
                return refuse(ErrorCode::BadRequest, format!("not a pairing confirmation: {e}"));
            }
        };
        let under_way = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let at = pending.iter().position(|(key, _, _)| *key == confirmed.gateway_key);
            at.and_then(|at| pending.remove(at))
        };
        let Some((key, name, challenge)) = under_way else {
            return refuse(
                ErrorCode::BadRequest,
                "no pairing of this key is under way: POST pair first",
            );
        };
        let own_key = identity.public();
        let signed = [identity::PAIR_GATEWAY, challenge.as_bytes(), b"\n", own_key.as_bytes()];
        if !identity::verify(&key, &signed, &confirmed.signature) {
            return refuse(
                ErrorCode::Unauthorized,
                "the confirmation is not signed by the key that asked to pair",
            );
        }
        let paired_at = clade_core::SystemClock.now().as_millis();
        let peers = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.insert(key, PairedPeer { name, paired_at });
            peers.clone()
        };
        if let Some(path) = &self.peers_file
            && let Err(e) = write_peers(path, &peers)
        {
            return refuse(ErrorCode::Unavailable, format!("cannot keep the pairing: {e}"));
        }
        axum::Json(serde_json::json!({})).into_response()
    }
}

/// A component's state, which holds its [`Pairing`].
pub trait Paired: Send + Sync + 'static {
    fn pairing(&self) -> &Pairing;
}

impl Paired for Pairing {
    fn pairing(&self) -> &Pairing {
        self
    }
}

/// A component that only pairs (a CLI waiting for `clade pair cli`): `health`, which signs a
/// challenge, and the pairing routes.
pub fn waiting_router(pairing: Arc<Pairing>) -> Router {
    Router::new()
        .route(
            "/health",
            axum::routing::get(
                |State(pairing): State<Arc<Pairing>>, headers: HeaderMap| async move {
                    if let Err((code, message)) = pairing.admit("GET", "health", &headers, &[]) {
                        return refuse(code, message);
                    }
                    let mut response =
                        axum::Json(serde_json::json!({ "status": "ok" })).into_response();
                    pairing.prove(&headers, &mut response);
                    response
                },
            ),
        )
        .merge(routes())
        .with_state(pairing)
}

/// The routes `pair` and `pair/confirm`, for a component's router.
pub fn routes<S: Paired>() -> Router<Arc<S>> {
    Router::new()
        .route(
            "/pair",
            post(|State(component): State<Arc<S>>, headers: HeaderMap, body: Bytes| async move {
                component.pairing().pair(&headers, &body)
            }),
        )
        .route(
            "/pair/confirm",
            post(|State(component): State<Arc<S>>, headers: HeaderMap, body: Bytes| async move {
                component.pairing().confirm(&headers, &body)
            }),
        )
}

/// The protocol version header, which every request carries.
pub fn version(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        Some(other) => Err((
            ErrorCode::UnsupportedVersion,
            format!("this component speaks version {VERSION} of the protocol, not {other:?}"),
        )),
        None => Err((
            ErrorCode::UnsupportedVersion,
            format!("name the protocol version in the {VERSION_HEADER} header ({VERSION})"),
        )),
    }
}

/// The protocol's error answer.
pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = ErrorBody { error: CallError { code, message: message.into(), retryable: false } };
    (status, axum::Json(body)).into_response()
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Writes the peers file whole, private, through a temporary file renamed over it.
fn write_peers(
    path: &std::path::Path,
    peers: &BTreeMap<String, PairedPeer>,
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
