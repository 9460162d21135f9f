//! What every chat channel shares: routing a platform's message to the agent its bindings
//! pick and storing it once, and sending the agents' replies back from the outbox (in pieces
//! the platform accepts, drafted in one message edited as the model writes). A platform
//! provides only its wire: [`ChatApi`] (send, edit, typing) and its inbound side.
//!
//! A chat is a platform's own text (Telegram: `<chat id>[/<thread>]`; Slack: `<channel>[/<thread
//! ts>]`); a session's channel is `<name>:<chat>`, so two bots' chats never share a session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{EventKind, SessionId};
use clade_protocol::{LifecycleEvent, ReplyFile};
use clade_runtime::outbox::{Refused, Signing, Sink, Subscriber};
use clade_runtime::{Engine, Envelope, Subscription};
use clade_store::{OutboxRow, Source, Store};
use clade_tools::builtin::{MAX_REPLY_FILE_BYTES, MAX_REPLY_FILES};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::attachments::{Attachment, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, Upload, size_text};
use crate::health::Health;
use crate::split::split;

/// How often a streamed draft is edited at most: platforms allow about one edit a second a chat.
const EDIT_INTERVAL: Duration = Duration::from_millis(1000);
/// How long a session's editor waits for news before it stops (the next message starts it).
const EDITOR_IDLE: Duration = Duration::from_secs(600);
/// Sessions whose chat is remembered before the memory starts afresh.
const REMEMBERED: usize = 10_000;

/// What a platform's API said when a call failed, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Rate limited: wait `retry_after` before the next call.
    #[error("rate limited, asked to wait {}s: {description}", retry_after.as_secs())]
    RateLimited { retry_after: Duration, description: String },
    /// 5xx, or no answer at all: worth trying again.
    #[error("unreachable or failing: {0}")]
    Unavailable(String),
    /// Another client holds what this one needs (Telegram: another poller, or a webhook set).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The credentials are wrong or revoked.
    #[error("the credentials are refused: {0} (check the token's environment variable)")]
    Unauthorized(String),
    /// This request can never succeed (chat gone, bot blocked or removed, bad text).
    #[error("refused: {0}")]
    Refused(String),
    /// An answer that is not the platform's shape.
    #[error("an answer that could not be read: {0}")]
    Malformed(String),
}

impl PlatformError {
    /// Whether trying the same request again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_) | Self::Conflict(_))
    }
}

/// A platform's outbound calls, on a chat as the platform's inbound side named it.
pub trait ChatApi: Send + Sync + 'static {
    /// The platform of its sessions (`telegram`, `slack`).
    fn platform(&self) -> &'static str;
    /// A message's longest text, in UTF-16 code units.
    fn limit(&self) -> usize;
    /// Posts `text` in `chat`; the new message's id.
    fn send<'a>(
        &'a self,
        chat: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, PlatformError>>;
    /// Replaces the text of the channel's own message `message` in `chat`.
    fn edit<'a>(
        &'a self,
        chat: &'a str,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), PlatformError>>;
    /// Shows that an answer is coming, where the platform can.
    fn typing<'a>(&'a self, chat: &'a str) -> BoxFuture<'a, Result<(), PlatformError>>;
    /// The bytes of a file sent with a message, at most `max` of them (more is refused with
    /// [`crate::attachments::too_large`]).
    fn download<'a>(
        &'a self,
        attachment: &'a Attachment,
        max: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, PlatformError>>;
    /// The largest file the platform takes from a bot.
    fn max_upload(&self) -> u64;
    /// Sends a file into `chat`, its caption with it.
    fn send_file<'a>(
        &'a self,
        chat: &'a str,
        file: &'a Upload,
    ) -> BoxFuture<'a, Result<(), PlatformError>>;
}

/// The actor of a shared group chat's conversation.
pub const GROUP_ACTOR: &str = "group";

/// What every channel's configuration says besides its platform's own settings.
#[derive(Clone)]
pub struct Settings {
    /// The channel's name: its sessions' channels start with it.
    pub name: String,
    /// The platform API's base URL.
    pub api_url: String,
    /// The bot's token: never logged.
    pub token: String,
    /// Whether replies stream into one message edited in place.
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    pub max_attempts: u32,
    /// Whether a group chat is one conversation (its messages naming their senders), rather
    /// than one per sender.
    pub shared_groups: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("api_url", &self.api_url)
            .field("stream", &self.stream)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A platform's JSON-over-HTTP API: its base URL and the token every call carries, which no
/// log and no `Debug` shows.
#[derive(Clone)]
pub struct Endpoint {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("base", &self.base).finish_non_exhaustive()
    }
}

/// A platform's answer, before its own rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<f64>,
    /// The body's JSON; `null` when empty or not JSON.
    pub body: Value,
}

impl Endpoint {
    pub fn new(http: reqwest::Client, base: &str, token: &str) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `method <base><path>` with `authorization` (a scheme and a token) and an optional JSON
    /// body, within 30 s. Only a call that got no answer is an error.
    pub async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: &str,
        body: Option<&Value>,
    ) -> Result<Answer, PlatformError> {
        let body = body.map(Body::Json);
        self.exchange_body(method, path, authorization, body, Duration::from_secs(30)).await
    }

    /// [`Endpoint::exchange`] with a body of any kind, within `timeout`.
    pub async fn exchange_body(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: &str,
        body: Option<Body<'_>>,
        timeout: Duration,
    ) -> Result<Answer, PlatformError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .timeout(timeout);
        match body {
            Some(Body::Json(body)) => request = request.json(body),
            Some(Body::Raw { content_type, bytes }) => {
                request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
            }
            None => {}
        }
        let response = request
            .send()
            .await
            // reqwest's error names the URL, which may hold a token: keep only its kind.
            .map_err(|e| PlatformError::Unavailable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PlatformError::Unavailable(e.without_url().to_string()))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, retry_after, body })
    }
}

/// A request's body.
#[derive(Debug)]
pub enum Body<'a> {
    Json(&'a Value),
    /// Bytes of a content type (a multipart form, a form).
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
}

/// How long sending a file may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a listener of its own sends what it takes: the gateway's route for its channel,
/// `<gateway>/channels/<platform>/<name>`, with the channel's secret, or signed with the key
/// of a listener paired for the channel (`clade pair listener`). Each platform's `Relay` says
/// how the secret travels.
#[derive(Clone)]
pub struct Forward {
    http: reqwest::Client,
    target: String,
    /// The route's path, as the gateway sees it (what a signature covers).
    path: String,
    /// The channel's secret; empty when paired.
    secret: String,
    signer: Option<Arc<clade_tools::remote::identity::Identity>>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("target", &self.target)
            .field("signed", &self.signer.is_some())
            .finish()
    }
}

impl Forward {
    pub fn new(
        gateway: &str,
        platform: &str,
        name: &str,
        secret: &str,
        signer: Option<Arc<clade_tools::remote::identity::Identity>>,
    ) -> Self {
        let path = format!("/channels/{platform}/{name}");
        let target = format!("{}{path}", gateway.trim_end_matches('/'));
        let secret = secret.to_owned();
        Self { http: reqwest::Client::new(), target, path, secret, signer }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The channel's secret; empty when the listener is paired.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Posts `body` (of `content_type`) with `headers` (an empty value is left out): `Ok`
    /// once the gateway answered that it is stored (any 2xx); else why, with `fix` when the
    /// gateway refused the listener.
    pub async fn send(
        &self,
        headers: &[(&str, String)],
        body: Vec<u8>,
        content_type: &str,
        fix: &str,
    ) -> Result<(), NotTaken> {
        use clade_protocol::remote_tools::{PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER};
        use clade_tools::remote::identity;
        let target = &self.target;
        let mut request = self
            .http
            .post(target)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(Duration::from_secs(60));
        for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            request = request.header(*name, value);
        }
        if let Some(signer) = &self.signer {
            let time = clade_core::Clock::now(&clade_core::SystemClock).as_millis();
            let signed = identity::request_text("POST", &self.path, time, &body);
            request = request
                .header(PEER_HEADER, signer.public())
                .header(PEER_TIME_HEADER, time.to_string())
                .header(PEER_SIGNATURE_HEADER, signer.sign(&[identity::REQUEST, &signed]));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| NotTaken(format!("cannot reach the gateway at {target}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let said = response.text().await.unwrap_or_default();
        Err(NotTaken(match status.as_u16() {
            401 | 403 => {
                format!("the gateway refuses this listener (HTTP {status}): {fix} ({said})")
            }
            _ => format!("the gateway answered HTTP {status}: {said}"),
        }))
    }
}

/// A wait a platform asked for, in seconds, as a duration between 50 ms and an hour.
pub fn wait_of(seconds: f64) -> Duration {
    Duration::from_millis((seconds.clamp(0.05, 3600.0) * 1000.0) as u64)
}

/// What became of one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Stored as an event (or found stored already: a redelivery).
    Event { session: SessionId, duplicate: bool },
    /// Nothing to do with it (an edit, a bot's message, no text, no binding, unreadable); the
    /// string says why.
    Skipped(String),
}

/// Why a message could not be taken now; the platform should deliver it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotTaken(pub String);

/// A platform's payload that does not read as what it claims to be: what is missing or wrong.
/// It is skipped (counted as malformed), never tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// A message as a platform's inbound side read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Where replies go, in the platform's terms.
    pub chat: String,
    /// Who wrote it: the platform's user id.
    pub actor: String,
    pub text: String,
    /// The platform's own id of the message, unique in the channel: its idempotency key.
    pub id: String,
    /// Files sent with it.
    pub attachments: Vec<Attachment>,
    /// In a group chat, how its sender is named to the others; `None` in a one-to-one chat.
    pub group: Option<String>,
}

/// A streamed reply being drafted in one message.
#[derive(Debug, Default)]
struct Draft {
    text: String,
    message: Option<String>,
    /// The reply's final delivery took the draft over: no more edits.
    closed: bool,
}

/// A final reply partly sent: what a retry starts from.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The draft message the first piece replaces.
    draft: Option<String>,
    /// Pieces sent so far.
    sent: usize,
}

/// One channel (a bot of a platform): its routing and its outbox sink.
pub struct Channel<A: ChatApi> {
    name: String,
    api: A,
    engine: Engine,
    store: Store,
    health: Health,
    stream: bool,
    shared_groups: bool,
    max_attempts: u32,
    /// Drafts of streamed replies, by turn id.
    drafts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Draft>>>>,
    /// Final replies partly sent, by turn id.
    progress: Mutex<HashMap<String, Progress>>,
    /// Turns whose reply went out: an editor that sees them late starts no draft.
    finished: Mutex<HashSet<String>>,
    /// Sessions with an editor following them.
    editing: Mutex<HashSet<SessionId>>,
    /// The chat of each session the sink was asked about (`None`: not this channel's).
    chats: Mutex<HashMap<SessionId, Option<String>>>,
}

impl<A: ChatApi> std::fmt::Debug for Channel<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("platform", &self.api.platform())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The chat of a session's channel if it is channel `name`'s.
fn chat_of_channel(name: &str, channel: &str) -> Option<String> {
    let chat = channel.strip_prefix(name)?.strip_prefix(':')?;
    (!chat.is_empty()).then(|| chat.to_owned())
}

impl<A: ChatApi> Channel<A> {
    /// Registers the channel's health as `mode` (`polling`, `webhook`, `socket`, `gateway`).
    pub fn new(
        settings: &Settings,
        mode: &str,
        api: A,
        engine: Engine,
        health: Health,
    ) -> Arc<Self> {
        health.register(api.platform(), &settings.name, mode);
        Arc::new(Self {
            name: settings.name.clone(),
            api,
            store: engine.store().clone(),
            engine,
            health,
            stream: settings.stream,
            shared_groups: settings.shared_groups,
            max_attempts: settings.max_attempts,
            drafts: Mutex::default(),
            progress: Mutex::default(),
            finished: Mutex::default(),
            editing: Mutex::default(),
            chats: Mutex::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The outbox subscriber that sends this channel's replies. Its cursor starts at the
    /// outbox's head the first time, so a channel added to a gateway with history sends
    /// nothing old.
    pub async fn subscriber(self: &Arc<Self>) -> Result<Subscriber, clade_store::Error> {
        let name = format!("channel:{}:{}", self.api.platform(), self.name);
        self.store.system().deliveries().start_at_head(&name).await?;
        let sink: Arc<dyn Sink> = self.clone();
        Ok(Subscriber {
            name,
            url: format!("{}:{}", self.api.platform(), self.name),
            signing: Signing::Sink(sink),
            events: [EventKind::TurnStarted, EventKind::TurnFinished, EventKind::TurnFailed]
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            agents: vec!["*".to_owned()],
            max_attempts: self.max_attempts,
            timeout: Duration::from_secs(30),
        })
    }

    /// Counts an update that could not be read, and says why in the log.
    pub fn malformed(&self, why: &str) -> Taken {
        self.health.update(self.api.platform(), &self.name, |h| h.malformed += 1);
        tracing::warn!(channel = %self.name, platform = self.api.platform(), %why, "an update was skipped");
        Taken::Skipped(why.to_owned())
    }

    /// Routes `message` through the bindings and stores it as an event, keyed by the
    /// platform's id of it. `Err` when it could not be stored now and should come again;
    /// anything that can never be taken is `Skipped`.
    /// Fetches the files of message `message` (from `chat`) into the workspace of the agent `handle` of `tenant` (see
    /// [`crate::attachments`]): the lines its text gains, one a file. A file over the limit is
    /// not fetched, and the chat is told.
    async fn keep_attachments(
        &self,
        tenant: &clade_core::Tenant,
        handle: &str,
        message: &str,
        chat: &str,
        attachments: &[Attachment],
    ) -> Result<String, NotTaken> {
        let agent = match self.store.agents(tenant.id).get(handle).await {
            Ok(agent) => agent,
            // The submission says what is wrong with the binding.
            Err(err) if err.is_not_found() => return Ok(String::new()),
            Err(err) => return Err(NotTaken(err.to_string())),
        };
        let workspace =
            self.engine.workspaces().open(&agent).map_err(|e| NotTaken(e.to_string()))?;
        let platform = self.api.platform();
        let mut lines = Vec::new();
        let mut too_large = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        for (n, attachment) in attachments.iter().enumerate() {
            if n == MAX_ATTACHMENTS {
                let left = attachments.len() - n;
                lines.push(format!(
                    "[{left} more files were not kept: at most {MAX_ATTACHMENTS} a message]"
                ));
                break;
            }
            let mut name = crate::attachments::safe_name(&attachment.name);
            if !names.insert(name.clone()) {
                name = format!("{n}-{name}");
                names.insert(name.clone());
            }
            let over = attachment.size.is_some_and(|size| size > MAX_ATTACHMENT_BYTES);
            let fetched = if over {
                Err(crate::attachments::too_large(attachment.size, MAX_ATTACHMENT_BYTES))
            } else {
                self.api.download(attachment, MAX_ATTACHMENT_BYTES).await
            };
            let line = match fetched {
                Ok(bytes) => {
                    let size = bytes.len() as u64;
                    let (workspace, dir) =
                        (workspace.clone(), [platform.to_owned(), message.to_owned()]);
                    let file = name.clone();
                    let kept = tokio::task::spawn_blocking(move || {
                        let dir = ["inbox", dir[0].as_str(), dir[1].as_str()];
                        crate::attachments::keep(&workspace, &dir, &file, &bytes)
                    })
                    .await;
                    match kept {
                        Ok(Ok(path)) => format!(
                            "[file sent with this message: {} ({})]",
                            path.display(),
                            size_text(size)
                        ),
                        Ok(Err(why)) => format!("[file {name} was not kept: {why}]"),
                        Err(stopped) => {
                            format!("[file {name} was not kept: the write stopped: {stopped}]")
                        }
                    }
                }
                Err(PlatformError::Refused(why)) if why.contains("over the") => {
                    too_large.push(name.clone());
                    format!("[file {name} was not kept: {why}]")
                }
                Err(err) => format!("[file {name} could not be fetched: {err}]"),
            };
            lines.push(line);
        }
        if !too_large.is_empty() {
            let notice = format!(
                "{} is over the {} limit and was not passed on: send a smaller file, or a link to it.",
                too_large.join(", "),
                size_text(MAX_ATTACHMENT_BYTES)
            );
            if let Err(err) = self.api.send(chat, &notice).await {
                tracing::debug!(channel = %self.name, error = %err, "the notice of a file too large was not sent");
            }
        }
        Ok(lines.join("\n"))
    }

    pub async fn take(self: &Arc<Self>, message: Inbound) -> Result<Taken, NotTaken> {
        let (name, platform) = (self.name.as_str(), self.api.platform());
        let mut message = message;
        // A shared group chat is one conversation: its sender is named in the text instead.
        let actor = match message.group.take() {
            Some(sender) if self.shared_groups => {
                message.text = format!("{sender}: {}", message.text);
                GROUP_ACTOR.to_owned()
            }
            _ => std::mem::take(&mut message.actor),
        };
        let source = Source {
            platform: platform.into(),
            channel: format!("{name}:{}", message.chat),
            actor,
        };
        let Some(agent) = self.engine.route_source(&source) else {
            self.health.update(platform, name, |h| h.unrouted += 1);
            tracing::info!(channel = name, platform, chat = %source.channel, "a message matches no binding and there is no default agent: add a binding for its platform");
            return Ok(Taken::Skipped("no binding".into()));
        };
        let tenant = match self.store.tenants().named(agent.tenant.as_str()).await {
            Ok(tenant) => tenant,
            Err(err) if err.is_not_found() => {
                tracing::warn!(channel = name, agent = %agent, "a binding names a tenant that does not exist; the message is dropped");
                return Ok(Taken::Skipped(format!("no tenant {}", agent.tenant)));
            }
            Err(err) => return Err(NotTaken(err.to_string())),
        };
        let key = format!("{platform}:{name}:{}", message.id);
        let mut text = message.text;
        if !message.attachments.is_empty() {
            // A message the platform sends again was stored with its files the first time:
            // nothing is fetched or written twice.
            let seen = self.store.sessions(tenant.id).event_of_key(&key).await;
            if let Some((_, session)) = seen.map_err(|e| NotTaken(e.to_string()))? {
                lock(&self.chats).insert(session, Some(message.chat.clone()));
                return Ok(Taken::Event { session, duplicate: true });
            }
            let handle = agent.handle.as_str();
            let (id, chat, files) = (&message.id, &message.chat, &message.attachments);
            let kept = self.keep_attachments(&tenant, handle, id, chat, files).await?;
            text = if text.trim().is_empty() { kept } else { format!("{text}\n{kept}") };
        }
        let envelope = Envelope {
            tenant,
            agent: Some(agent.handle.as_str().to_owned()),
            text,
            source,
            idempotency_key: Some(key),
        };
        let chat = message.chat;
        match self.engine.submit_and_watch(envelope).await {
            Ok((accepted, watch)) => {
                if !accepted.duplicate {
                    self.health.update(platform, name, |h| h.received += 1);
                }
                lock(&self.chats).insert(accepted.session_id, Some(chat.clone()));
                if self.stream
                    && let Some(live) = watch.into_live()
                    && lock(&self.editing).insert(accepted.session_id)
                {
                    let channel = self.clone();
                    let session = accepted.session_id;
                    tokio::spawn(async move {
                        channel.edit_drafts(chat, live).await;
                        lock(&channel.editing).remove(&session);
                    });
                }
                Ok(Taken::Event { session: accepted.session_id, duplicate: accepted.duplicate })
            }
            Err(clade_runtime::engine::Error::Store(clade_store::Error::SessionBusy {
                pending,
            })) => {
                let notice = format!(
                    "{pending} messages are still waiting for an answer in this chat; send this one again once they are answered."
                );
                let _ = self.api.send(&chat, &notice).await;
                Ok(Taken::Skipped("the session is full".into()))
            }
            Err(clade_runtime::engine::Error::Store(err)) if err.is_not_found() => {
                tracing::warn!(channel = name, agent = %agent, error = %err, "a binding names an agent that does not exist; the message is dropped");
                Ok(Taken::Skipped(err.to_string()))
            }
            Err(clade_runtime::engine::Error::NoAgent) => Ok(Taken::Skipped("no agent".into())),
            // The platform sent the message again and its files read otherwise this time (one
            // could not be fetched): the first version stands.
            Err(clade_runtime::engine::Error::Store(clade_store::Error::IdempotencyConflict(
                _,
            ))) => Ok(Taken::Skipped("taken already".into())),
            Err(err) => Err(NotTaken(err.to_string())),
        }
    }

    /// Follows one session's live events and drafts each reply in one message, edited as the
    /// model writes, until the session has been quiet for a while.
    async fn edit_drafts(&self, chat: String, mut live: Subscription) {
        let clock = self.store.clock().clone();
        // The turn being drafted, its text, and when it was last shown.
        let mut current: Option<(String, Arc<tokio::sync::Mutex<Draft>>)> = None;
        let mut shown_at = clock.now();
        let mut dirty = false;
        let mut paused_until = clock.now();
        loop {
            let wait = if dirty { EDIT_INTERVAL } else { EDITOR_IDLE };
            let next = tokio::select! {
                event = live.recv() => Some(event),
                () = clock.sleep(wait) => None,
            };
            match next {
                Some(Ok(live)) => match &*live.event {
                    LifecycleEvent::TurnStarted(started) => {
                        let turn = &started.turn;
                        // Announced twice: live as the turn begins, again once its row commits.
                        let known = current.as_ref().is_some_and(|(t, _)| t == turn)
                            || lock(&self.drafts).contains_key(turn);
                        if known || lock(&self.finished).contains(turn) {
                            continue;
                        }
                        let draft = Arc::new(tokio::sync::Mutex::new(Draft::default()));
                        lock(&self.drafts).insert(turn.clone(), draft.clone());
                        current = Some((turn.clone(), draft));
                        dirty = false;
                    }
                    LifecycleEvent::TextDelta(delta) => {
                        let Some((turn, draft)) = &current else { continue };
                        if delta.turn != *turn {
                            continue;
                        }
                        draft.lock().await.text.push_str(&delta.text);
                        dirty = true;
                    }
                    event if event.kind().ends_turn() => {
                        // The reply's delivery takes the draft from here.
                        current = None;
                        dirty = false;
                    }
                    _ => {}
                },
                // Deltas were lost: the draft would show a gap, so stop drafting this turn; its
                // reply still arrives whole.
                Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                    current = None;
                    dirty = false;
                }
                Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                None if !dirty => return,
                None => {}
            }
            let now = clock.now();
            let due = now.as_millis().saturating_sub(shown_at.as_millis())
                >= EDIT_INTERVAL.as_millis() as i64;
            let drafting = current.as_ref().map(|(_, draft)| draft.clone());
            if dirty
                && due
                && now >= paused_until
                && let Some(draft) = drafting
            {
                let mut draft = draft.lock().await;
                if draft.closed {
                    current = None;
                    dirty = false;
                    continue;
                }
                let shown = draft_text(&draft.text, self.api.limit());
                let result = match &draft.message {
                    Some(message) => self.api.edit(&chat, message, &shown).await,
                    None => self.api.send(&chat, &shown).await.map(|id| draft.message = Some(id)),
                };
                shown_at = clock.now();
                dirty = false;
                if let Err(PlatformError::RateLimited { retry_after, .. }) = result {
                    paused_until = clock.now().plus(retry_after);
                    dirty = true;
                } else if let Err(err) = result {
                    tracing::debug!(channel = %self.name, error = %err, "a draft could not be shown; the reply comes whole");
                }
            }
        }
    }

    /// The chat of `row`'s session if it is this channel's, checked against the bindings: a
    /// session whose chat the bindings now route to another tenant is sent nothing.
    async fn chat_of(&self, row: &OutboxRow) -> Result<Option<String>, Refused> {
        let Some(session) = row.session_id else { return Ok(None) };
        if let Some(known) = lock(&self.chats).get(&session) {
            return Ok(known.clone());
        }
        let found = match self.store.system().session_any_tenant(session).await {
            Ok(found) => found,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(Refused::transient(err.to_string())),
        };
        let mut chat = None;
        if found.source.platform.as_str() == self.api.platform()
            && let Some(ours) = chat_of_channel(&self.name, &found.source.channel)
        {
            let routed = match self.engine.route_source(&found.source) {
                Some(agent) => match self.store.tenants().named(agent.tenant.as_str()).await {
                    Ok(tenant) => tenant.id == found.tenant_id,
                    Err(err) if err.is_not_found() => false,
                    Err(err) => return Err(Refused::transient(err.to_string())),
                },
                None => false,
            };
            if routed {
                chat = Some(ours);
            } else {
                tracing::warn!(channel = %self.name, %session, "a session whose chat the bindings no longer route to its tenant: its replies are not sent");
            }
        }
        let mut chats = lock(&self.chats);
        if chats.len() >= REMEMBERED {
            chats.clear();
        }
        chats.insert(session, chat.clone());
        Ok(chat)
    }

    async fn deliver_row(&self, row: &OutboxRow) -> Result<(), Refused> {
        let Some(chat) = self.chat_of(row).await? else { return Ok(()) };
        let data: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
        let event = match LifecycleEvent::from_parts(row.kind, data) {
            Ok(event) => event,
            Err(error) => {
                // Only a damaged store holds such a row: the outbox is written from these types.
                tracing::warn!(channel = %self.name, outbox = row.id, %error, "an outbox row does not read as its kind; nothing is sent for it");
                return Ok(());
            }
        };
        match event {
            LifecycleEvent::TurnStarted(_) => {
                // Only a hint: a failure is not worth holding the reply back for.
                let _ = self.api.typing(&chat).await;
                Ok(())
            }
            LifecycleEvent::TurnFinished(ended) => {
                let reply = ended.reply.as_deref().unwrap_or_default();
                self.send_reply(&chat, row, &ended.turn, reply, &ended.files).await
            }
            LifecycleEvent::TurnFailed(ended) => {
                let notice = "Sorry: this message could not be answered. The operator can see why in the session's history; try again later.";
                self.send_reply(&chat, row, &ended.turn, notice, &[]).await
            }
            _ => Ok(()),
        }
    }

    /// Sends a turn's reply in pieces the platform accepts, the first replacing the turn's
    /// draft if it had one, then the files it carries; a retry goes on from the first piece
    /// (or file) not sent.
    async fn send_reply(
        &self,
        chat: &str,
        row: &OutboxRow,
        turn: &str,
        reply: &str,
        files: &[ReplyFile],
    ) -> Result<(), Refused> {
        let mut progress = lock(&self.progress).get(turn).cloned().unwrap_or_default();
        let draft = lock(&self.drafts).remove(turn);
        if let Some(draft) = draft {
            let mut draft = draft.lock().await;
            draft.closed = true;
            progress.draft = draft.message.clone();
        }
        {
            let mut finished = lock(&self.finished);
            if finished.len() >= REMEMBERED {
                finished.clear();
            }
            finished.insert(turn.to_owned());
        }
        let mut pieces = split(reply, self.api.limit());
        if pieces.is_empty() && progress.draft.is_some() {
            pieces.push("(no reply)".to_owned());
        }
        if pieces.is_empty() && files.is_empty() {
            return Ok(());
        }
        let mut result = self.send_pieces(chat, &pieces, &mut progress).await;
        if result.is_ok() && !files.is_empty() {
            result = self.send_files(chat, row, files, pieces.len(), &mut progress).await;
        }
        let mut saved = lock(&self.progress);
        match &result {
            Ok(()) => {
                saved.remove(turn);
            }
            Err(_) => {
                saved.insert(turn.to_owned(), progress);
            }
        }
        result
    }

    async fn send_pieces(
        &self,
        chat: &str,
        pieces: &[String],
        progress: &mut Progress,
    ) -> Result<(), Refused> {
        for piece in pieces.iter().skip(progress.sent) {
            let sent = match (progress.sent, &progress.draft) {
                (0, Some(message)) => match self.api.edit(chat, message, piece).await {
                    // The draft is gone (deleted in the chat): the reply comes as a message.
                    Err(PlatformError::Refused(_)) => self.api.send(chat, piece).await.map(drop),
                    other => other,
                },
                _ => self.api.send(chat, piece).await.map(drop),
            };
            match sent {
                Ok(()) => {
                    progress.sent += 1;
                    self.health.update(self.api.platform(), &self.name, |h| h.sent += 1);
                }
                Err(err) => {
                    self.health.failed(self.api.platform(), &self.name, &err.to_string());
                    return Err(refusal(err));
                }
            }
        }
        self.health.ok(self.api.platform(), &self.name, self.store.now());
        Ok(())
    }
}

impl<A: ChatApi> Channel<A> {
    /// Sends the files a reply carries, after its `texts` pieces: each read again from the
    /// workspace of the session's agent as it goes (no link on its path, one name, within the
    /// limit). One that cannot be read or that the platform refuses is named in the chat
    /// instead, and the rest still go; a platform that is busy or down is tried again later,
    /// from the first file not sent.
    async fn send_files(
        &self,
        chat: &str,
        row: &OutboxRow,
        files: &[ReplyFile],
        texts: usize,
        progress: &mut Progress,
    ) -> Result<(), Refused> {
        let workspace = self.workspace_of(row).await?;
        let max = MAX_REPLY_FILE_BYTES.min(self.api.max_upload());
        for file in files.iter().take(MAX_REPLY_FILES).skip(progress.sent.saturating_sub(texts)) {
            let name = file.path.rsplit('/').next().unwrap_or(&file.path).to_owned();
            let read = match &workspace {
                Some(workspace) => {
                    let (workspace, path) = (workspace.clone(), file.path.clone());
                    match tokio::task::spawn_blocking(move || {
                        clade_tools::workspace::read_upload(&workspace, &path, max)
                    })
                    .await
                    {
                        Ok(read) => read.map_err(|why| why.to_string()),
                        Err(stopped) => Err(format!("the read stopped: {stopped}")),
                    }
                }
                None => Err("its agent is gone".to_owned()),
            };
            let sent = match read {
                Ok(bytes) => {
                    let upload =
                        Upload { name: name.clone(), bytes, caption: file.caption.clone() };
                    self.api.send_file(chat, &upload).await
                }
                Err(why) => Err(PlatformError::Refused(why)),
            };
            match sent {
                Ok(()) => {
                    self.health.update(self.api.platform(), &self.name, |h| h.sent += 1);
                }
                Err(err) if err.is_transient() => {
                    self.health.failed(self.api.platform(), &self.name, &err.to_string());
                    return Err(refusal(err));
                }
                Err(err) => {
                    tracing::info!(channel = %self.name, file = %file.path, error = %err, "a reply's file was not sent");
                    let notice = format!("[{name} could not be sent: {err}]");
                    if let Err(err) = self.api.send(chat, &notice).await
                        && err.is_transient()
                    {
                        return Err(refusal(err));
                    }
                }
            }
            progress.sent += 1;
        }
        Ok(())
    }

    /// The workspace of the agent of `row`'s session; `None` when the agent is gone.
    async fn workspace_of(&self, row: &OutboxRow) -> Result<Option<std::path::PathBuf>, Refused> {
        let Some(session) = row.session_id else { return Ok(None) };
        let found = match self.store.system().session_any_tenant(session).await {
            Ok(found) => found,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(Refused::transient(err.to_string())),
        };
        let agent = match self.store.agents(found.tenant_id).by_id(found.agent_id).await {
            Ok(agent) => agent,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(Refused::transient(err.to_string())),
        };
        self.engine
            .workspaces()
            .open(&agent)
            .map(Some)
            .map_err(|e| Refused::transient(e.to_string()))
    }
}

impl<A: ChatApi> Sink for Channel<A> {
    fn deliver<'a>(&'a self, row: &'a OutboxRow) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(self.deliver_row(row))
    }
}

/// A draft as shown: the first message's worth, marked as still being written.
fn draft_text(text: &str, limit: usize) -> String {
    let mut pieces = split(text, limit.saturating_sub(2));
    let first = if pieces.is_empty() { String::new() } else { pieces.swap_remove(0) };
    format!("{first} …")
}

/// What the dispatcher makes of a failed call.
fn refusal(err: PlatformError) -> Refused {
    let reason = err.to_string();
    match err {
        PlatformError::RateLimited { retry_after, .. } => {
            Refused { reason, retry_after: Some(retry_after), permanent: false }
        }
        PlatformError::Refused(_) => Refused::permanent(reason),
        _ => Refused::transient(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_is_only_its_channels() {
        assert_eq!(chat_of_channel("desk", "desk:-100123/7").as_deref(), Some("-100123/7"));
        assert_eq!(chat_of_channel("desk", "desk2:1"), None);
        assert_eq!(chat_of_channel("desk", "other:1"), None);
        assert_eq!(chat_of_channel("desk", "desk:"), None);
    }

    #[test]
    fn a_failure_becomes_a_wait_a_retry_or_a_dead_letter() {
        let limited = PlatformError::RateLimited {
            retry_after: Duration::from_secs(7),
            description: "x".into(),
        };
        assert_eq!(refusal(limited).retry_after, Some(Duration::from_secs(7)));
        assert!(refusal(PlatformError::Refused("blocked".into())).permanent);
        assert!(!refusal(PlatformError::Unavailable("down".into())).permanent);
        assert_eq!(draft_text("abc", 4096), "abc …");
    }
}
