//! Remote tool hosts: processes speaking Clade's remote tool protocol
//! (`docs/specs/remote-tools.md`, types in `clade_protocol::remote_tools`), whose tools agents
//! call like built-ins. A host's manifest gives each tool's name, schema and side-effect class;
//! a call carries its idempotency key and its caller, and its answer streams frames until a
//! result or a typed error. A host that answers garbage, ends without a result, or stays silent
//! for three heartbeats fails the call with an error naming the host and what it did.
//!
//! [`conformance`] checks any host against the protocol.

pub mod conformance;
pub mod identity;

use std::sync::Arc;
use std::time::Duration;

use clade_core::Clock as _;
use clade_protocol::remote_tools::{
    CHALLENGE_HEADER, CallError, CallFrame, CallRequest, Caller, Effect, ErrorBody, ErrorCode,
    HOST_SIGNATURE_HEADER, Manifest, PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER,
    PROTOCOL, PairConfirm, PairRequest, PairResponse, VERSION, VERSION_HEADER,
};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::{CallContext, EffectClass, Error, Listing, Tool, ToolResult};

/// The longest frame (one line of a call's answer) read.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// The longest manifest or error body read.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One configured host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// `[a-z0-9_-]+`, for messages and logs.
    pub name: String,
    /// The base URL; its routes are `manifest`, `health` and `calls` under it.
    pub url: String,
    /// The bearer token the host expects.
    pub token: Option<String>,
    /// The agents that get its tools ([`clade_config::agent_pattern_covers`]).
    pub agents: Vec<String>,
    pub timeout: Duration,
    /// For a paired host: how this side signs, and the key the host must prove it holds.
    pub peer: Option<Peer>,
}

/// Why a host could not be used.
#[derive(Debug, thiserror::Error)]
#[error("tool host {host}: {message}")]
pub struct RemoteError {
    pub host: String,
    pub message: String,
    /// A paired host answered with another key than the one paired: a security matter, for
    /// the audit log.
    pub key_changed: bool,
}

/// A paired host: this side's identity, which signs every request, and the host's key, which
/// must sign the answer to each connection's challenge.
#[derive(Debug, Clone)]
pub struct Peer {
    pub identity: Arc<identity::Identity>,
    pub host_key: String,
}

/// Why a host gave no usable answer. Each says what the host did, in words its operator (or
/// a model, for a call) can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The host's address, or a request to it, cannot be made.
    #[error("{0}")]
    Address(String),
    /// The host could not be reached, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The host refused: `what` was answered `status`, for the reason it gave.
    #[error("{what} was answered {status}: {why}")]
    Refused { what: String, status: reqwest::StatusCode, why: String },
    /// The host answered outside the protocol: a body too long, a line that is no frame, a
    /// manifest this gateway cannot offer.
    #[error("{0}")]
    Protocol(String),
}

/// An HTTP client of one host's routes.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
    peer: Option<Peer>,
}

impl Client {
    /// A client of the host at `url` (a trailing `/` is added when missing).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let with_slash = if url.ends_with('/') { url.to_owned() } else { format!("{url}/") };
        let base = url::Url::parse(&with_slash)
            .map_err(|e| ClientError::Address(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Address(format!("{url:?} is not an http:// or https:// URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Address(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, base, token, peer: None })
    }

    /// This client, signing its requests as `peer`'s identity.
    pub fn with_peer(mut self, peer: Option<Peer>) -> Self {
        self.peer = peer;
        self
    }

    /// A request to `route` carrying `body`, signed when paired.
    pub fn signed(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let mut request = self.request(method.clone(), route)?;
        if let Some(peer) = &self.peer {
            let time = clade_core::SystemClock.now().as_millis();
            let text = identity::request_text(method.as_str(), route, time, &body);
            request = request
                .header(PEER_HEADER, peer.identity.public())
                .header(PEER_TIME_HEADER, time.to_string())
                .header(PEER_SIGNATURE_HEADER, peer.identity.sign(&[identity::REQUEST, &text]));
        }
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        Ok(request)
    }

    fn route(&self, route: &str) -> Result<url::Url, ClientError> {
        self.base
            .join(route)
            .map_err(|e| ClientError::Address(format!("cannot form the {route} URL: {e}")))
    }

    /// A request to `route` with the version header and the token, if any.
    pub fn request(
        &self,
        method: reqwest::Method,
        route: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let request = self.http.request(method, self.route(route)?).header(VERSION_HEADER, VERSION);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }

    /// `GET manifest`, checked ([`check_manifest`]).
    pub async fn manifest(&self, timeout: Duration) -> Result<Manifest, ClientError> {
        self.manifest_proved(timeout).await.map(|(manifest, _)| manifest)
    }

    /// `GET manifest` with a fresh challenge when paired; the manifest, and whether the
    /// answer was signed with the paired host's key (always true when not paired).
    pub async fn manifest_proved(
        &self,
        timeout: Duration,
    ) -> Result<(Manifest, bool), ClientError> {
        let challenge = identity::challenge();
        let mut request = self.signed(reqwest::Method::GET, "manifest", Vec::new())?;
        if self.peer.is_some() {
            request = request.header(CHALLENGE_HEADER, &challenge);
        }
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!("no manifest within {} s", timeout.as_secs()))
            })?
            .map_err(|e| ClientError::Unreachable(format!("cannot fetch the manifest: {e}")))?;
        let proved = self.proves(&response, &challenge);
        let status = response.status();
        let body = read_capped(response, MAX_BODY_BYTES).await?;
        if !status.is_success() {
            return Err(refused("the manifest request", status, &body));
        }
        let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!("the manifest is not a manifest of this protocol: {e}"))
        })?;
        check_manifest(&manifest)?;
        Ok((manifest, proved))
    }

    /// Whether `response` carries the paired component's signature of `challenge` (always
    /// true when not paired).
    fn proves(&self, response: &reqwest::Response, challenge: &str) -> bool {
        match &self.peer {
            None => true,
            Some(peer) => response
                .headers()
                .get(HOST_SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|signature| {
                    identity::verify(
                        &peer.host_key,
                        &[identity::HOST_PROOF, challenge.as_bytes()],
                        signature,
                    )
                }),
        }
    }

    /// `GET health` with a fresh challenge: `Ok(true)` when the component answered and, when
    /// paired, signed the challenge with the key it was paired with.
    pub async fn health_proved(&self, timeout: Duration) -> Result<bool, ClientError> {
        let challenge = identity::challenge();
        let mut request = self.signed(reqwest::Method::GET, "health", Vec::new())?;
        if self.peer.is_some() {
            request = request.header(CHALLENGE_HEADER, &challenge);
        }
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!(
                    "no answer to health within {} s",
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| ClientError::Unreachable(format!("cannot reach it: {e}")))?;
        let proved = self.proves(&response, &challenge);
        let status = response.status();
        if !status.is_success() {
            let body = read_capped(response, MAX_BODY_BYTES).await.unwrap_or_default();
            return Err(refused("health", status, &body));
        }
        Ok(proved)
    }

    /// `POST calls`: the answer's frames, or the host's refusal.
    pub async fn call(
        &self,
        request: &CallRequest,
        timeout: Duration,
    ) -> Result<Frames, CallFailure> {
        let body = serde_json::to_vec(request).map_err(|e| {
            CallFailure::Transport(ClientError::Address(format!("cannot encode the call: {e}")))
        })?;
        let send = self
            .signed(reqwest::Method::POST, "calls", body)
            .map_err(CallFailure::Transport)?
            .send();
        let response = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| {
                CallFailure::Transport(ClientError::Unreachable(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )))
            })?
            .map_err(|e| {
                CallFailure::Transport(ClientError::Unreachable(format!("cannot reach it: {e}")))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Frames { response, buffer: Vec::new(), line: 0 });
        }
        let body = read_capped(response, MAX_BODY_BYTES).await.map_err(CallFailure::Transport)?;
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(refused) => {
                Err(CallFailure::Refused { status: status.as_u16(), error: refused.error })
            }
            Err(_) => Err(CallFailure::Garbage(format!(
                "answered {status} without a protocol error body: {}",
                snippet(&body)
            ))),
        }
    }
}

/// Why a call got no frames.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// The host could not be reached, or did not answer in time.
    Transport(ClientError),
    /// The host refused the request with a protocol error.
    Refused { status: u16, error: CallError },
    /// The host answered something that is not the protocol.
    Garbage(String),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Transport(error) => write!(f, "{error}"),
            CallFailure::Garbage(message) => f.write_str(message),
            CallFailure::Refused { status, error } => {
                write!(f, "refused the call ({status}, {error})")
            }
        }
    }
}

/// A call's answer, read a frame at a time.
pub struct Frames {
    response: reqwest::Response,
    buffer: Vec<u8>,
    line: usize,
}

impl Frames {
    /// The content type the host answered with.
    pub fn content_type(&self) -> Option<String> {
        self.response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The next frame; `Ok(None)` when the answer ended. An error says what the host did:
    /// stayed silent longer than `idle`, sent a line that is not a frame, or one too long.
    pub async fn next(&mut self, idle: Duration) -> Result<Option<CallFrame>, ClientError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                self.line += 1;
                let text = &line[..line.len() - 1];
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(text).map(Some).map_err(|e| {
                    ClientError::Protocol(format!(
                        "line {} of its answer is not a call frame ({e}): {}",
                        self.line,
                        snippet(text)
                    ))
                });
            }
            if self.buffer.len() > MAX_FRAME_BYTES {
                return Err(ClientError::Protocol(format!(
                    "sent a frame over {MAX_FRAME_BYTES} bytes"
                )));
            }
            let chunk = tokio::time::timeout(idle, self.response.chunk())
                .await
                .map_err(|_| {
                    ClientError::Unreachable(format!(
                        "stayed silent for {} s, sending not even a heartbeat",
                        idle.as_secs()
                    ))
                })?
                .map_err(|e| ClientError::Unreachable(format!("broke off its answer: {e}")))?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => {
                    return Err(ClientError::Protocol(format!(
                        "ended its answer inside a frame: {}",
                        snippet(&self.buffer)
                    )));
                }
            }
        }
    }

    /// Reads frames until the last: `Ok` with the result or error frame's content.
    pub async fn outcome(
        &mut self,
        idle: Duration,
    ) -> Result<Result<String, CallError>, ClientError> {
        self.outcome_reporting(idle, None).await
    }

    /// [`Frames::outcome`], passing each progress frame to `progress`.
    pub async fn outcome_reporting(
        &mut self,
        idle: Duration,
        progress: Option<&crate::Progress>,
    ) -> Result<Result<String, CallError>, ClientError> {
        while let Some(frame) = self.next(idle).await? {
            match frame {
                CallFrame::Progress { message, fraction } => {
                    if let Some(progress) = progress {
                        progress.report(&message, fraction);
                    }
                }
                // A heartbeat only shows the call is alive.
                CallFrame::Heartbeat {} => {}
                CallFrame::Result { content } => return Ok(Ok(content)),
                CallFrame::Error(error) => return Ok(Err(error)),
            }
        }
        Err(ClientError::Protocol("ended its answer without a result or an error frame".into()))
    }
}

/// The checks a gateway makes of a manifest before it offers a host's tools.
pub fn check_manifest(manifest: &Manifest) -> Result<(), ClientError> {
    manifest_fault(manifest).map_or(Ok(()), |fault| Err(ClientError::Protocol(fault)))
}

fn manifest_fault(manifest: &Manifest) -> Option<String> {
    if manifest.protocol != PROTOCOL {
        return Some(format!(
            "the host speaks {:?}, and this gateway {PROTOCOL:?}",
            manifest.protocol
        ));
    }
    if manifest.heartbeat_secs == 0 || manifest.heartbeat_secs > 300 {
        return Some(format!("heartbeat_secs is {}: it must be 1 to 300", manifest.heartbeat_secs));
    }
    let mut seen = std::collections::BTreeSet::new();
    for tool in &manifest.tools {
        if !valid_tool_name(&tool.name) {
            return Some(format!(
                "tool name {:?}: names use 1-64 of a-z, 0-9, ., _ and -, starting with a letter",
                tool.name
            ));
        }
        if !seen.insert(tool.name.as_str()) {
            return Some(format!("tool {:?} is listed twice", tool.name));
        }
        if tool.input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Some(format!(
                "tool {:?}: input_schema must be a JSON Schema of type object",
                tool.name
            ));
        }
    }
    None
}

fn valid_tool_name(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ClientError::Unreachable(format!("broke off its answer: {e}")))?
    {
        if body.len() + chunk.len() > cap {
            return Err(ClientError::Protocol(format!("answered with a body over {cap} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `what` answered `status` with `body`: the host's own refusal.
fn refused(what: &str, status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    ClientError::Refused { what: what.to_owned(), status, why: refusal(body) }
}

/// A protocol error body's words, or the start of whatever came instead.
fn refusal(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(refused) => refused.error.to_string(),
        Err(_) => snippet(body),
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// A connected host.
pub struct Host {
    spec: HostSpec,
    client: Client,
    /// Three heartbeats: the longest a call's answer may stay silent.
    idle: Duration,
}

impl Host {
    fn error(&self, message: impl std::fmt::Display) -> RemoteError {
        RemoteError {
            host: self.spec.name.clone(),
            message: message.to_string(),
            key_changed: false,
        }
    }

    /// Fetches the host's manifest and makes a tool of each of its tools.
    pub async fn connect(spec: HostSpec) -> Result<(Arc<Self>, Vec<Arc<dyn Tool>>), RemoteError> {
        let fail = |error: ClientError| RemoteError {
            host: spec.name.clone(),
            message: error.to_string(),
            key_changed: false,
        };
        let client =
            Client::new(&spec.url, spec.token.clone()).map_err(fail)?.with_peer(spec.peer.clone());
        let (manifest, proved) = client.manifest_proved(spec.timeout).await.map_err(fail)?;
        if !proved {
            let expected = spec.peer.as_ref().map(|p| identity::fingerprint(&p.host_key));
            return Err(RemoteError {
                host: spec.name.clone(),
                message: format!(
                    "did not prove it holds the key it was paired with ({}…): refused, since the host may have been replaced; if its identity changed on purpose, pair it again",
                    expected.unwrap_or_default()
                ),
                key_changed: true,
            });
        }
        let idle = Duration::from_secs(u64::from(manifest.heartbeat_secs) * 3);
        let agents: Arc<[String]> = spec.agents.clone().into();
        let host = Arc::new(Self { spec, client, idle });
        let tools = manifest
            .tools
            .into_iter()
            .map(|tool| {
                Arc::new(RemoteTool {
                    host: host.clone(),
                    effect: match tool.effect {
                        Effect::Pure => EffectClass::Pure,
                        Effect::Idempotent => EffectClass::Idempotent,
                        Effect::AtMostOnce => EffectClass::AtMostOnce,
                    },
                    listing: Listing {
                        name: tool.name,
                        description: tool.description,
                        schema: tool.input_schema,
                        agents: agents.clone(),
                    },
                    touches_host: tool.touches_host,
                    resource_argument: tool.resource_argument,
                }) as Arc<dyn Tool>
            })
            .collect();
        Ok((host, tools))
    }

    async fn call(&self, tool: &str, args: Value, ctx: &CallContext) -> ToolResult {
        let request = CallRequest {
            call_id: ctx.call_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            tool: tool.to_owned(),
            arguments: args,
            caller: ctx.caller.map(|c| Caller {
                tenant: c.tenant.to_string(),
                agent: c.agent.to_string(),
                session: c.session.map(|s| s.to_string()),
            }),
            timeout_ms: u64::try_from(self.spec.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let whole = async {
            let mut frames = self.client.call(&request, self.spec.timeout).await.map_err(
                |failure| match failure {
                    CallFailure::Refused { error, .. } if error.code == ErrorCode::ToolFailed => {
                        Error::Failed(error.message)
                    }
                    other => self.failed(format!("{tool}: {other}")),
                },
            )?;
            match frames.outcome_reporting(self.idle, ctx.progress.as_ref()).await {
                Ok(Ok(content)) => Ok(content),
                Ok(Err(error)) if error.code == ErrorCode::ToolFailed => {
                    Err(Error::Failed(error.message))
                }
                Ok(Err(error)) => Err(self.failed(format!("{tool}: {error}"))),
                Err(message) => Err(self.failed(format!("{tool}: {message}"))),
            }
        };
        tokio::time::timeout(self.spec.timeout, whole).await.unwrap_or_else(|_| {
            let secs = self.spec.timeout.as_secs();
            Err(self.failed(format!("{tool} did not finish within {secs} s")))
        })
    }

    /// What the model is told of a failure of the host itself (not of the tool's work).
    fn failed(&self, message: String) -> Error {
        Error::Failed(self.error(message).to_string())
    }
}

/// One tool of a remote host.
pub struct RemoteTool {
    host: Arc<Host>,
    listing: Listing,
    effect: EffectClass,
    touches_host: bool,
    resource_argument: Option<String>,
}

impl Tool for RemoteTool {
    crate::listed!();
    fn effect(&self) -> EffectClass {
        self.effect
    }
    fn touches_host(&self) -> bool {
        self.touches_host
    }
    fn resource(&self, args: &Value) -> Result<String, crate::Error> {
        let Some(field) = &self.resource_argument else { return Ok(String::new()) };
        match args.get(field) {
            Some(Value::String(value)) => Ok(value.clone()),
            None | Some(Value::Null) => Ok(String::new()),
            Some(_) => Err(Error::InvalidArguments {
                tool: self.listing.name.clone(),
                reason: format!("{field} must be a string"),
            }),
        }
    }
    fn resource_argument(&self) -> Option<&str> {
        self.resource_argument.as_deref()
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(self.host.call(&self.listing.name, args, ctx))
    }
}

/// Pairs with the host at `url`, authorized by its bearer `token`: sends `identity`'s key with a
/// challenge, checks the host's signature of it, and signs the host's challenge back. The
/// host's key, to keep.
pub async fn pair(
    name: &str,
    url: &str,
    token: &str,
    identity: &identity::Identity,
    timeout: Duration,
) -> Result<String, RemoteError> {
    let fail = |error: ClientError| RemoteError {
        host: name.to_owned(),
        message: error.to_string(),
        key_changed: false,
    };
    let client = Client::new(url, Some(token.to_owned())).map_err(fail)?;
    let challenge = identity::challenge();
    let asked = PairRequest { gateway_key: identity.public(), name: name.to_owned(), challenge };
    let answer: PairResponse = exchange(&client, "pair", &asked, timeout).await.map_err(fail)?;
    let signed =
        [identity::PAIR_HOST, asked.challenge.as_bytes(), b"\n", asked.gateway_key.as_bytes()];
    if identity::key_bytes(&answer.host_key).is_none()
        || !identity::verify(&answer.host_key, &signed, &answer.signature)
    {
        return Err(fail(ClientError::Protocol(
            "answered the pairing challenge without a valid signature of its own key: not paired"
                .into(),
        )));
    }
    let confirm = PairConfirm {
        gateway_key: identity.public(),
        signature: identity.sign(&[
            identity::PAIR_GATEWAY,
            answer.challenge.as_bytes(),
            b"\n",
            answer.host_key.as_bytes(),
        ]),
    };
    let _: serde_json::Value =
        exchange(&client, "pair/confirm", &confirm, timeout).await.map_err(fail)?;
    Ok(answer.host_key)
}

/// POSTs `body` as JSON to `route` and reads a JSON answer, or the host's refusal.
async fn exchange<T: serde::de::DeserializeOwned>(
    client: &Client,
    route: &str,
    body: &impl serde::Serialize,
    timeout: Duration,
) -> Result<T, ClientError> {
    let body = serde_json::to_vec(body)
        .map_err(|e| ClientError::Address(format!("cannot encode the {route} request: {e}")))?;
    let send = client.signed(reqwest::Method::POST, route, body)?.send();
    let response = tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| {
            ClientError::Unreachable(format!("no answer to {route} within {} s", timeout.as_secs()))
        })?
        .map_err(|e| ClientError::Unreachable(format!("cannot reach it: {e}")))?;
    let status = response.status();
    let body = read_capped(response, MAX_BODY_BYTES).await?;
    if !status.is_success() {
        return Err(refused(route, status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::Protocol(format!(
            "{route} was answered with something else ({e}): {}",
            snippet(&body)
        ))
    })
}
