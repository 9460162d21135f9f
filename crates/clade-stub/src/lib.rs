//! `clade-stub`: an LLM server speaking the OpenAI Chat Completions and Anthropic Messages wire
//! protocols (streaming and not, tool calls, usage, errors, 429s), and OpenAI's embeddings, as
//! the providers document them, with scripted, deterministic behaviour. Tests, demos and `clade bench` run against it
//! because no machine here reaches a real provider.
//!
//! Owns the provider-side wire formats, parsed and written independently of `clade-model`'s
//! adapters (it borrows only the script that decides what to answer), so that testing the
//! adapters against it means something. Start at [`Stub::start`], then [`behaviour`].

pub mod behaviour;
pub mod standalone;
mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub use behaviour::Behaviour;

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct StubOptions {
    /// Applied to every request before its own directives.
    pub defaults: Behaviour,
    /// Lifetime of access tokens issued by `/oauth/token`, in seconds.
    pub oauth_expires_in: u64,
    /// Requests kept for [`Stub::captured`], the latest ones; 0 keeps none (a benchmark, where
    /// copying every request would be the stub's own cost, not the client's).
    pub capture: usize,
    /// Failures drawn from a seed, beside the ones directives ask for: the simulator's model
    /// faults.
    pub faults: Option<SeededFaults>,
}

impl Default for StubOptions {
    fn default() -> Self {
        Self { defaults: Behaviour::default(), oauth_expires_in: 3600, capture: 1000, faults: None }
    }
}

/// Which requests fail, drawn from a seed: the `n`-th time a request body is sent, it fails
/// with `status` when the seed's draw for (body, `n`) falls under `per_mille` / 1000. The draw
/// depends on what is asked and how often, never on when or in which order, so one seed fails
/// the same calls in every run however their tasks interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededFaults {
    pub seed: u64,
    pub per_mille: u32,
    /// The status failed requests get: 429 (rate limited), or a server error (500, 503, 529).
    pub status: u16,
}

/// A request the stub received, for tests to assert on.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) options: StubOptions,
    pub(crate) captured: Mutex<std::collections::VecDeque<Captured>>,
    /// Failures already served per directive string, for `status=<code>x<n>`.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Times each request body was seen, for [`SeededFaults`].
    pub(crate) bodies_seen: Mutex<HashMap<u64, u32>>,
    /// Prompt prefixes seen with `cache_control`, to answer cache reads the second time.
    pub(crate) cached_prefixes: Mutex<HashSet<u64>>,
    /// Access tokens issued by `/oauth/token`, with their expiry.
    pub(crate) tokens: Mutex<HashMap<String, tokio::time::Instant>>,
    pub(crate) token_counter: Mutex<u64>,
}

/// A running stub server.
pub struct Stub {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Stub {
    /// Serves on `addr` (use `127.0.0.1:0` for a free port) until dropped.
    pub async fn start(addr: &str, options: StubOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local: SocketAddr = listener.local_addr()?;
        let listener = without_nagle(listener);
        let shared = Arc::new(Shared { options, ..Shared::default() });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self { url: format!("http://{local}"), shared, shutdown: Some(tx) })
    }

    /// `http://127.0.0.1:<port>`; OpenAI clients use `<url>/v1` as base URL, Anthropic clients
    /// `<url>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests received so far (bodies of the model endpoints).
    pub fn captured(&self) -> Vec<Captured> {
        self.shared.captured.lock().map(|c| c.iter().cloned().collect()).unwrap_or_default()
    }

    /// Issues an access token as `/oauth/token` would (for tests that start with one).
    pub fn issue_token(&self, expires_in: std::time::Duration) -> String {
        issue(&self.shared, expires_in)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The stub's HTTP application (also usable inside another server).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(wire::openai::handle))
        .route("/v1/messages", post(wire::anthropic::handle))
        .route("/v1/embeddings", post(wire::embeddings::handle))
        .route("/oauth/token", post(oauth_token))
        .with_state(shared)
}

/// Serves until the process is stopped (the binary's main loop).
pub async fn serve(listener: tokio::net::TcpListener, options: StubOptions) -> std::io::Result<()> {
    let shared = Arc::new(Shared { options, ..Shared::default() });
    axum::serve(without_nagle(listener), router(shared)).await
}

/// Sets TCP_NODELAY on every accepted connection: a streamed reply is many small writes, and
/// with Nagle's algorithm each waits for the client's acknowledgement of the one before, as a
/// real provider's would not.
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

async fn models() -> impl IntoResponse {
    axum::Json(json!({
        "object": "list",
        "data": [
            { "id": "stub", "object": "model", "created": 1_700_000_000, "owned_by": "clade-stub" },
            { "id": "stub-claude", "object": "model", "created": 1_700_000_000, "owned_by": "clade-stub" }
        ]
    }))
}

fn issue(shared: &Shared, expires_in: std::time::Duration) -> String {
    let n = match shared.token_counter.lock() {
        Ok(mut counter) => {
            *counter += 1;
            *counter
        }
        Err(_) => 0,
    };
    let token = format!("stub-access-{n}");
    if let Ok(mut tokens) = shared.tokens.lock() {
        #[allow(clippy::disallowed_methods)] // A fake provider keeps real time, as one would.
        tokens.insert(token.clone(), tokio::time::Instant::now() + expires_in);
    }
    token
}

async fn oauth_token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let fields: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace('+', " ")))
        .collect();
    let refresh = fields.get("refresh_token").map(String::as_str).unwrap_or_default();
    if fields.get("grant_type").map(String::as_str) != Some("refresh_token")
        || !refresh.starts_with("refresh")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({ "error": "invalid_grant", "error_description": "unknown refresh token" }),
            ),
        )
            .into_response();
    }
    let expires_in = shared.options.oauth_expires_in;
    let access = issue(&shared, std::time::Duration::from_secs(expires_in));
    axum::Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": expires_in,
        "refresh_token": format!("{refresh}+"),
    }))
    .into_response()
}

pub(crate) fn token_is_valid(shared: &Shared, headers: &HeaderMap) -> bool {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(token) = presented else { return false };
    #[allow(clippy::disallowed_methods)] // A fake provider keeps real time, as one would.
    let now = tokio::time::Instant::now();
    shared.tokens.lock().map(|t| t.get(token).is_some_and(|exp| *exp > now)).unwrap_or(false)
}

pub(crate) fn capture(shared: &Shared, path: &str, headers: &HeaderMap, body: &Value) {
    if shared.options.capture == 0 {
        return;
    }
    let headers = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect();
    if let Ok(mut captured) = shared.captured.lock() {
        if captured.len() >= shared.options.capture {
            captured.pop_front();
        }
        captured.push_back(Captured { path: path.to_owned(), headers, body: body.clone() });
    }
}

/// A streamed body from pre-built frames, paced by `pause` between frames. Unpaced, the frames
/// go out as one chunk (still chunked transfer encoding, as the providers send it): a client
/// must split events however the bytes arrive, and one write instead of one per frame keeps
/// the stub's own cost out of benchmarks.
pub(crate) fn paced_body(frames: Vec<String>, pause: Option<std::time::Duration>) -> Body {
    let Some(pause) = pause else {
        let all = bytes::Bytes::from(frames.concat());
        return Body::from_stream(futures::stream::once(async move {
            Ok::<_, std::convert::Infallible>(all)
        }));
    };
    let stream = futures::stream::unfold(
        (frames.into_iter(), true),
        move |(mut frames, first)| async move {
            let frame = frames.next()?;
            if !first {
                #[allow(clippy::disallowed_methods)] // A fake provider's real pacing.
                tokio::time::sleep(pause).await;
            }
            Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(frame)), (frames, false)))
        },
    );
    Body::from_stream(stream)
}
