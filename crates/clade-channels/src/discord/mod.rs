//! Discord: messages from the gateway (a WebSocket: hello, identify, heartbeats, dispatches,
//! resume), replies through the shared [`Channel`] with the REST API (create, edit, typing).
//!
//! A chat is the source `discord` / `<bot>:<channel id>` / `<user id>`. Taken: direct messages,
//! and guild messages that mention the bot (its `<@id>` cut off); never bots' messages. A
//! message's key is its channel and id, so one the gateway replays after a resume is not a
//! second event. Replies never ping anyone (`allowed_mentions` empty). A dropped socket resumes
//! its session where Discord allows it (missed events are replayed); a heartbeat not
//! acknowledged means a dead connection, closed and resumed. A new session (after a restart,
//! or one Discord would not resume) replays nothing, so the bot then fetches, from the REST
//! API, the messages sent since the newest it took in each chat it knows
//! (`clade-store`'s `channel_chats`).
//!
//! The gateway socket can also be held by a listener of its own ([`Relay`], `clade channels
//! listen`, the bot in `mode: relay`): it posts each message to the gateway, and tells it when
//! a new session began, so the gateway runs that catch-up.

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use clade_runtime::Engine;
use clade_runtime::outbox::Subscriber;
use futures::future::BoxFuture;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

pub use api::{Api, MESSAGE_LIMIT, PUBLIC_API};

use crate::attachments::Attachment;
use crate::channel::{Channel, Inbound, Malformed, PlatformError, Settings};
use crate::health::Health;

/// The platform of Discord's sessions.
pub const PLATFORM: &str = clade_core::ChatPlatform::Discord.as_str();

/// GUILD_MESSAGES, DIRECT_MESSAGES and MESSAGE_CONTENT (privileged: enable it in the
/// developer portal).
pub const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

/// How long to wait for the gateway's hello.
const HELLO_WAIT: Duration = Duration::from_secs(30);
/// Tries to store one message before it is given up (the gateway cannot send it again).
const STORE_TRIES: u32 = 5;
/// The waits between those tries: 400 ms doubling.
const STORE_RETRY: clade_core::Backoff =
    clade_core::Backoff::new(Duration::from_millis(400), Duration::from_millis(6400));
/// The waits between attempts to relay a message to the gateway: 400 ms doubling to 30 s.
const RELAY_RETRY: clade_core::Backoff =
    clade_core::Backoff::new(Duration::from_millis(400), Duration::from_secs(30));
/// Pages of 100 messages fetched per chat after a new session, at most.
const CATCH_UP_PAGES: u32 = 10;
/// Tries to fetch one page before the chat's catch-up is given up.
const FETCH_TRIES: u32 = 5;

/// What one bot needs, resolved from `channels.discord.<name>`.
#[derive(Clone)]
pub struct BotOptions {
    pub settings: Settings,
    /// Relay mode's secret: a listener of its own holds the gateway socket and posts each
    /// message with it; `None` when this process holds the socket.
    pub relay_secret: Option<String>,
}

impl std::fmt::Debug for BotOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotOptions")
            .field("settings", &self.settings)
            .field("relay", &self.relay_secret.is_some())
            .finish()
    }
}

/// One Discord bot: its gateway connection over the shared [`Channel`].
pub struct Bot {
    channel: Arc<Channel<Api>>,
    /// Whether a catch-up runs: a new session while one does starts no second.
    catching_up: std::sync::atomic::AtomicBool,
    relay_secret: Option<String>,
    /// Itself, for the catch-up a new session spawns.
    me: std::sync::Weak<Bot>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").field("name", &self.channel.name()).finish_non_exhaustive()
    }
}

/// A gateway session that can be resumed.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    resume_url: String,
    /// The bot's own user id, which mentions name.
    user: String,
}

/// How a connection ended.
#[derive(Debug)]
enum Ended {
    /// Connect again (resuming if a session is kept).
    Again(String),
    /// Connecting again cannot help (a bad token, intents not enabled): stop and say why.
    Fatal(String),
}

impl From<PlatformError> for Ended {
    fn from(err: PlatformError) -> Self {
        match err {
            PlatformError::Unauthorized(why) => {
                Ended::Fatal(format!("{why} (check the variable token_env names)"))
            }
            other => Ended::Again(other.to_string()),
        }
    }
}

impl Bot {
    /// A bot from `channels.discord.<name>`.
    pub fn new(options: &BotOptions, engine: Engine, health: Health) -> Arc<Self> {
        let settings = &options.settings;
        let api = Api::new(reqwest::Client::new(), &settings.api_url, &settings.token);
        let mode = if options.relay_secret.is_some() { "relay" } else { "gateway" };
        let channel = Channel::new(settings, mode, api, engine, health);
        Arc::new_cyclic(|me| Self {
            channel,
            catching_up: std::sync::atomic::AtomicBool::new(false),
            relay_secret: options.relay_secret.clone(),
            me: me.clone(),
        })
    }

    /// Whether a listener of its own holds the socket (relay mode).
    pub fn is_relayed(&self) -> bool {
        self.relay_secret.is_some()
    }

    /// Checks a relayed message's `X-Clade-Relay-Secret`; never in gateway mode.
    pub fn relay_secret_matches(&self, given: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let Some(secret) = &self.relay_secret else { return false };
        // Digests compared, so the time taken says nothing about the secret's bytes.
        Sha256::digest(given) == Sha256::digest(secret.as_bytes())
    }

    /// Takes what a listener of its own relayed: `{"user": <the bot's id>, "d": <a
    /// MESSAGE_CREATE's data>}`, stored once (`Err` when it could not be now: the listener
    /// sends it again); or `{"ready": <the bot's id>}`, a new session, which starts a catch-up.
    pub async fn relayed(&self, body: &Value) -> Result<(), crate::channel::NotTaken> {
        if let Some(user) = body["ready"].as_str() {
            self.ready(user);
            return Ok(());
        }
        let Some(user) = body["user"].as_str() else {
            self.channel.malformed("a relayed message without the bot's user id");
            return Ok(());
        };
        match read_message(&body["d"], user) {
            Ok(Some(inbound)) => self.store_once(inbound, seen_of(&body["d"])).await,
            Ok(None) => Ok(()),
            Err(why) => {
                self.channel.malformed(&why.0);
                Ok(())
            }
        }
    }

    /// A new session replays nothing: fetch what was sent meanwhile, beside the socket, whose
    /// heartbeats must go on.
    fn ready(&self, user: &str) {
        let Some(bot) = self.me.upgrade() else { return };
        if !self.catching_up.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let user = user.to_owned();
            tokio::spawn(async move {
                bot.catch_up(&user).await;
                bot.catching_up.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
    }

    pub fn name(&self) -> &str {
        self.channel.name()
    }

    /// The outbox subscriber that sends this bot's replies.
    pub async fn subscriber(&self) -> Result<Subscriber, clade_store::Error> {
        self.channel.subscriber().await
    }

    /// Starts the gateway connection (in relay mode, a listener of its own holds it).
    /// Aborting the handle stops it.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let bot = self.clone();
        tokio::spawn(async move {
            if bot.relay_secret.is_none() {
                let clock = bot.channel.store().clock().clone();
                run(bot.channel.api(), bot.channel.name(), &*clock, &*bot).await;
            } else {
                tracing::info!(bot = %bot.channel.name(), "discord bot in relay mode: run `clade channels listen {}` to hold its gateway socket", bot.channel.name());
            }
        })
    }

    /// The key of this bot's chats in the store.
    fn chats_key(&self) -> String {
        format!("{PLATFORM}:{}", self.channel.name())
    }

    /// Stores one message, trying again a few times: the gateway will not send it again. Once
    /// stored, its chat's newest message moves to it (`seen`: its number and the chat's kind).
    async fn store(&self, inbound: Inbound, seen: Option<(i64, &'static str)>) {
        let clock = self.channel.store().clock().clone();
        for attempt in 1..=STORE_TRIES {
            match self.store_once(inbound.clone(), seen).await {
                Ok(()) => return,
                Err(err) if attempt == STORE_TRIES => {
                    tracing::error!(bot = %self.channel.name(), message = %inbound.id, error = %err, "a discord message could not be stored and is lost");
                }
                Err(err) => {
                    tracing::warn!(bot = %self.channel.name(), error = %err, "a discord message could not be stored; trying again");
                    clock.sleep(STORE_RETRY.after(attempt)).await;
                }
            }
        }
    }
}

impl Bot {
    /// Stores one message; once stored, its chat's newest message moves to it.
    async fn store_once(
        &self,
        inbound: Inbound,
        seen: Option<(i64, &'static str)>,
    ) -> Result<(), crate::channel::NotTaken> {
        self.channel.take(inbound.clone()).await?;
        if let Some((id, kind)) = seen {
            let system = self.channel.store().system();
            if let Err(err) = system.saw_in_chat(&self.chats_key(), &inbound.chat, kind, id).await {
                // Only a catch-up after a restart reads it, and fetches more then.
                tracing::debug!(bot = %self.channel.name(), error = %err, "the chat's newest message was not noted");
            }
        }
        Ok(())
    }

    /// Takes, from the REST API, the messages of the chats this bot knows that were sent after
    /// the newest it took in each: what a new session does not replay. At most
    /// [`CATCH_UP_PAGES`] pages a chat, oldest first; a message taken already is no second
    /// event (its key is its id).
    async fn catch_up(&self, user: &str) {
        let name = self.channel.name();
        let chats = match self.channel.store().system().chats_seen(&self.chats_key()).await {
            Ok(chats) => chats,
            Err(err) => {
                tracing::warn!(bot = name, error = %err, "cannot read the chats to catch up on; messages sent while the bot was away are not fetched");
                return;
            }
        };
        let clock = self.channel.store().clock().clone();
        let mut taken = 0usize;
        for chat in chats {
            let mut after = chat.last_id;
            'pages: for _ in 0..CATCH_UP_PAGES {
                let mut page = Vec::new();
                for attempt in 1..=FETCH_TRIES {
                    match self.channel.api().messages_after(&chat.chat, after, 100).await {
                        Ok(messages) => {
                            page = messages;
                            break;
                        }
                        Err(PlatformError::RateLimited { retry_after, .. })
                            if attempt < FETCH_TRIES =>
                        {
                            clock.sleep(retry_after).await;
                        }
                        // The bot was removed from the chat, or it is gone: it is not asked
                        // for again until a message there is taken.
                        Err(PlatformError::Refused(why)) => {
                            tracing::info!(bot = name, chat = %chat.chat, reason = %why, "a chat refuses the bot now; it is left out of catch-ups");
                            let system = self.channel.store().system();
                            if let Err(err) =
                                system.forget_chat(&self.chats_key(), &chat.chat).await
                            {
                                tracing::warn!(bot = name, chat = %chat.chat, error = %err, "cannot forget a chat that refuses the bot");
                            }
                            break 'pages;
                        }
                        Err(err) => {
                            tracing::warn!(bot = name, chat = %chat.chat, error = %err, "cannot fetch the messages sent while the bot was away in a chat");
                            break 'pages;
                        }
                    }
                }
                let full = page.len() >= 100;
                let mut page: Vec<(i64, Value)> = page
                    .into_iter()
                    .filter_map(|m| Some((m["id"].as_str()?.parse::<i64>().ok()?, m)))
                    .filter(|(id, _)| *id > after)
                    .collect();
                page.sort_by_key(|(id, _)| *id);
                for (id, mut message) in page {
                    after = after.max(id);
                    // A message read back from REST names no guild: the chat's kind says.
                    if chat.kind == "guild" && message.get("guild_id").is_none_or(Value::is_null) {
                        message["guild_id"] = Value::String("?".into());
                    }
                    match read_message(&message, user) {
                        Ok(Some(inbound)) => {
                            self.store(inbound, seen_of(&message)).await;
                            taken += 1;
                        }
                        Ok(None) => {}
                        Err(why) => {
                            self.channel.malformed(&why.0);
                        }
                    }
                }
                if !full {
                    break;
                }
            }
        }
        if taken > 0 {
            tracing::info!(
                bot = name,
                taken,
                "discord messages sent while the bot was away were taken"
            );
        }
    }
}

/// Where a gateway connection's messages go, and who hears how it goes.
pub trait Dispatches: Send + Sync {
    /// A new session began: nothing is replayed, so what was sent meanwhile must be fetched.
    /// `user` is the bot's own id.
    fn ready<'a>(&'a self, user: &'a str) -> BoxFuture<'a, ()>;
    /// One MESSAGE_CREATE's data, in a session of the bot `user`. Discord sends it once: it
    /// is stored before the next frame is read.
    fn message<'a>(&'a self, d: &'a Value, user: &'a str) -> BoxFuture<'a, ()>;
    fn connected(&self, _at: clade_core::Timestamp) {}
    fn failing(&self, _why: &str) {}
    fn malformed(&self, _why: &str) {}
}

impl Dispatches for Bot {
    fn ready<'a>(&'a self, user: &'a str) -> BoxFuture<'a, ()> {
        Bot::ready(self, user);
        Box::pin(async {})
    }
    fn message<'a>(&'a self, d: &'a Value, user: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match read_message(d, user) {
                Ok(Some(inbound)) => self.store(inbound, seen_of(d)).await,
                Ok(None) => {}
                Err(why) => {
                    self.channel.malformed(&why.0);
                }
            }
        })
    }
    fn connected(&self, at: clade_core::Timestamp) {
        self.channel.health().ok(PLATFORM, self.channel.name(), at);
    }
    fn failing(&self, why: &str) {
        self.channel.health().failed(PLATFORM, self.channel.name(), why);
    }
    fn malformed(&self, why: &str) {
        self.channel.malformed(why);
    }
}

/// Holds the bot's gateway connection: connects, resumes where Discord allows it, identifies
/// afresh where not, and passes each dispatch to `sink`. Runs until aborted, or until Discord
/// refuses the bot for good (a bad token, intents not enabled).
pub async fn run(api: &Api, name: &str, clock: &dyn clade_core::Clock, sink: &dyn Dispatches) {
    let mut session: Option<Session> = None;
    let mut seq: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let mut healthy = false;
        let ended = connection(api, name, clock, sink, &mut session, &mut seq, &mut healthy)
            .await
            .unwrap_or_else(|e| e);
        if healthy {
            failures = 0;
        }
        match ended {
            Ended::Fatal(why) => {
                sink.failing(&why);
                tracing::error!(bot = name, %why, "discord gateway refused the bot; it stays offline until restarted");
                return;
            }
            Ended::Again(why) if healthy => {
                tracing::info!(bot = name, %why, resumes = session.is_some(), "discord gateway connection ended; connecting again");
            }
            Ended::Again(why) => {
                failures += 1;
                sink.failing(&why);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(bot = name, failures, %why, "discord gateway failed; reconnecting with back-off");
                }
                clock.sleep(crate::RECONNECT.after(failures)).await;
            }
        }
    }
}

/// One connection, until it ends (and whether it got as far as a session).
async fn connection(
    api: &Api,
    name: &str,
    clock: &dyn clade_core::Clock,
    sink: &dyn Dispatches,
    session: &mut Option<Session>,
    seq: &mut Option<i64>,
    healthy: &mut bool,
) -> Result<Ended, Ended> {
    let base = match session {
        Some(session) => session.resume_url.clone(),
        None => api.gateway_url().await?,
    };
    let url = format!("{}/?v=10&encoding=json", base.trim_end_matches('/'));
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| Ended::Again(format!("cannot open the gateway: {e}")))?;
    let hello = match tokio::time::timeout(HELLO_WAIT, socket.next()).await {
        Ok(Some(Ok(Frame::Text(text)))) => serde_json::from_str::<Value>(text.as_str()).ok(),
        _ => None,
    };
    let interval = hello
        .filter(|h| h["op"] == 10)
        .and_then(|h| h["d"]["heartbeat_interval"].as_u64())
        .ok_or_else(|| Ended::Again("the gateway sent no hello".into()))?;
    let interval = Duration::from_millis(interval.max(100));
    let token = api.token().to_owned();
    let opening = match (&*session, *seq) {
        (Some(s), Some(at)) => {
            json!({"op": 6, "d": {"token": token, "session_id": s.id, "seq": at}})
        }
        _ => json!({"op": 2, "d": {
            "token": token,
            "intents": INTENTS,
            "properties": {"os": std::env::consts::OS, "browser": "clade", "device": "clade"},
        }}),
    };
    send(&mut socket, &opening).await?;
    // The first beat comes half an interval in (Discord asks for a random fraction).
    let mut next_beat = clock.now().plus(interval / 2);
    let mut acked = true;
    loop {
        let wait = next_beat.as_millis().saturating_sub(clock.now().as_millis()).max(0);
        let frame = tokio::select! {
            frame = socket.next() => frame,
            () = clock.sleep(Duration::from_millis(wait.unsigned_abs())) => {
                if !acked {
                    let _ = socket.close(None).await;
                    return Ok(Ended::Again("a heartbeat was not acknowledged (a zombie connection)".into()));
                }
                send(&mut socket, &json!({"op": 1, "d": *seq})).await?;
                acked = false;
                next_beat = clock.now().plus(interval);
                continue;
            }
        };
        let text = match frame {
            Some(Ok(Frame::Text(text))) => text,
            Some(Ok(Frame::Close(close))) => {
                let (code, reason) = close
                    .map(|c| (u16::from(c.code), c.reason.to_string()))
                    .unwrap_or((1000, String::new()));
                return Ok(closed(code, &reason, session, seq));
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                return Ok(Ended::Again(format!("the gateway socket failed: {err}")));
            }
            None => return Ok(Ended::Again("the gateway socket closed".into())),
        };
        let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else {
            sink.malformed("a gateway frame that is not JSON");
            continue;
        };
        if let Some(at) = payload["s"].as_i64() {
            *seq = Some(at);
        }
        match payload["op"].as_u64() {
            Some(0) => match payload["t"].as_str() {
                Some("READY") => {
                    let d = &payload["d"];
                    let ready = (
                        d["session_id"].as_str(),
                        d["resume_gateway_url"].as_str(),
                        d["user"]["id"].as_str(),
                    );
                    let (Some(id), Some(resume_url), Some(user)) = ready else {
                        return Ok(Ended::Again(
                            "READY without a session, resume URL or user".into(),
                        ));
                    };
                    *session = Some(Session {
                        id: id.to_owned(),
                        resume_url: resume_url.to_owned(),
                        user: user.to_owned(),
                    });
                    *healthy = true;
                    sink.connected(clock.now());
                    tracing::info!(bot = name, "discord gateway ready");
                    sink.ready(user).await;
                }
                Some("RESUMED") => {
                    *healthy = true;
                    sink.connected(clock.now());
                    tracing::info!(bot = name, "discord gateway session resumed");
                }
                Some("MESSAGE_CREATE") => {
                    let Some(user) = session.as_ref().map(|s| s.user.clone()) else { continue };
                    sink.message(&payload["d"], &user).await;
                }
                _ => {}
            },
            Some(1) => send(&mut socket, &json!({"op": 1, "d": *seq})).await?,
            Some(7) => {
                let _ = socket.close(None).await;
                return Ok(Ended::Again("Discord asked to reconnect".into()));
            }
            Some(9) => {
                if payload["d"] != true {
                    *session = None;
                    *seq = None;
                }
                let _ = socket.close(None).await;
                return Ok(Ended::Again("Discord said the session is invalid".into()));
            }
            Some(11) => acked = true,
            _ => {}
        }
    }
}

/// A listener of its own (`clade channels listen`): it holds the bot's gateway socket and posts
/// each message to the gateway's relay route for the bot (`POST /channels/discord/<bot>`, with
/// the relay secret), and says when a new session began, so the gateway fetches what was sent
/// meanwhile. Discord sends a message once, so posting runs beside the socket (whose heartbeats
/// must go on), in order, each message tried until the gateway has stored it: a gateway that is
/// down or restarting loses nothing while the listener runs.
pub struct Relay {
    forward: crate::channel::Forward,
    queue: tokio::sync::mpsc::UnboundedSender<Value>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("target", &self.target()).finish_non_exhaustive()
    }
}

/// The header a relayed message carries its secret in.
pub const RELAY_SECRET_HEADER: &str = "x-clade-relay-secret";

impl Relay {
    /// The relay, and its sender's task (which runs while the relay lives).
    /// Starts the relay's sender, which runs while the relay lives.
    pub fn start(forward: crate::channel::Forward) -> Self {
        let (queue, mut waiting) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let sender = forward.clone();
        tokio::spawn(async move {
            let clock = clade_core::SystemClock;
            while let Some(body) = waiting.recv().await {
                let mut failures = 0u32;
                loop {
                    let headers = [(RELAY_SECRET_HEADER, sender.secret().to_owned())];
                    let fix = "the bot must be in relay mode there, with the same relay_secret_env, or this listener paired for it";
                    let bytes = body.to_string().into_bytes();
                    match sender.send(&headers, bytes, "application/json", fix).await {
                        Ok(()) => break,
                        Err(why) => {
                            failures += 1;
                            if failures == 1 || failures.is_multiple_of(10) {
                                tracing::warn!(error = %why, failures, "a discord message could not be relayed yet; it is tried again, and those after it wait");
                            }
                            let wait = RELAY_RETRY.after(failures);
                            clade_core::Clock::sleep(&clock, wait).await;
                        }
                    }
                }
            }
        });
        Self { forward, queue }
    }

    pub fn target(&self) -> &str {
        self.forward.target()
    }
}

impl Dispatches for Relay {
    fn ready<'a>(&'a self, user: &'a str) -> BoxFuture<'a, ()> {
        let _ = self.queue.send(json!({ "ready": user }));
        Box::pin(async {})
    }
    fn message<'a>(&'a self, d: &'a Value, user: &'a str) -> BoxFuture<'a, ()> {
        let _ = self.queue.send(json!({ "user": user, "d": d }));
        Box::pin(async {})
    }
}

/// A message's number and its chat's kind (`dm` or `guild`), for the chats' catch-up.
fn seen_of(d: &Value) -> Option<(i64, &'static str)> {
    let id = d["id"].as_str()?.parse::<i64>().ok()?;
    let kind = if d.get("guild_id").is_none_or(Value::is_null) { "dm" } else { "guild" };
    Some((id, kind))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(socket: &mut Socket, payload: &Value) -> Result<(), Ended> {
    socket
        .send(Frame::Text(payload.to_string().into()))
        .await
        .map_err(|e| Ended::Again(format!("cannot write to the gateway: {e}")))
}

/// What a close code means (Discord's gateway close event codes).
fn closed(code: u16, reason: &str, session: &mut Option<Session>, seq: &mut Option<i64>) -> Ended {
    let said = format!("closed with {code} {reason}");
    match code {
        4004 => Ended::Fatal(format!(
            "{said}: the token is refused (check the variable token_env names)"
        )),
        4013 | 4014 => Ended::Fatal(format!(
            "{said}: the intents are refused; enable the Message Content intent for the bot in Discord's developer portal"
        )),
        // Invalid shard, sharding required, invalid API version.
        4010..=4012 => Ended::Fatal(said),
        // An invalid sequence or a session timed out: identify afresh.
        4007 | 4009 => {
            *session = None;
            *seq = None;
            Ended::Again(said)
        }
        _ => Ended::Again(said),
    }
}

/// The message a MESSAGE_CREATE carries, if it is one for the bot (`user`): a direct message,
/// or a guild message that mentions it. `Err` names what is missing.
fn read_message(d: &Value, user: &str) -> Result<Option<Inbound>, Malformed> {
    if d["author"]["bot"] == true {
        return Ok(None);
    }
    let field = |name: &str| {
        d[name]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Malformed(format!("a message without {name}")))
    };
    let (id, channel) = (field("id")?, field("channel_id")?);
    let author = d["author"]["id"]
        .as_str()
        .ok_or_else(|| Malformed("a message without an author".into()))?;
    let content = d["content"].as_str().unwrap_or_default();
    let mentions = [format!("<@{user}>"), format!("<@!{user}>")];
    let direct = d.get("guild_id").is_none_or(Value::is_null);
    let mentioned = d["mentions"]
        .as_array()
        .is_some_and(|list| list.iter().any(|m| m["id"].as_str() == Some(user)))
        || mentions.iter().any(|m| content.contains(m.as_str()));
    if !(direct || mentioned) {
        return Ok(None);
    }
    let text = mentions.iter().fold(content.to_owned(), |text, m| text.replace(m.as_str(), ""));
    let text = text.trim().to_owned();
    let attachments: Vec<Attachment> = d["attachments"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|file| {
                    Some(Attachment {
                        name: file["filename"].as_str().unwrap_or("file").to_owned(),
                        size: file["size"].as_u64(),
                        locator: file["url"].as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if text.is_empty() && attachments.is_empty() {
        return Ok(None);
    }
    Ok(Some(Inbound {
        chat: channel.to_owned(),
        actor: author.to_owned(),
        text,
        id: format!("{channel}:{id}"),
        attachments,
        // A guild channel is a group chat: its sender named as the others see them.
        group: (!direct).then(|| {
            let author_of = |field: &str| d["author"][field].as_str().filter(|n| !n.is_empty());
            author_of("global_name").or(author_of("username")).unwrap_or(author).to_owned()
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_messages_and_mentions_are_taken_the_rest_is_not() {
        let dm = json!({"id": "10", "channel_id": "D1", "author": {"id": "U1"}, "content": "hi"});
        let taken = read_message(&dm, "B0").unwrap().unwrap();
        assert_eq!(
            (taken.chat.as_str(), taken.actor.as_str(), taken.text.as_str()),
            ("D1", "U1", "hi")
        );
        assert_eq!(taken.id, "D1:10");
        let mention = json!({"id": "11", "channel_id": "C1", "guild_id": "G1", "author": {"id": "U1"}, "content": "<@!B0> what now?", "mentions": [{"id": "B0"}]});
        assert_eq!(read_message(&mention, "B0").unwrap().unwrap().text, "what now?");
        for skipped in [
            json!({"id": "12", "channel_id": "C1", "guild_id": "G1", "author": {"id": "U1"}, "content": "chatter"}),
            json!({"id": "13", "channel_id": "D1", "author": {"id": "B9", "bot": true}, "content": "a bot"}),
            json!({"id": "14", "channel_id": "D1", "author": {"id": "U1"}, "content": "<@B0>"}),
        ] {
            assert_eq!(read_message(&skipped, "B0").unwrap(), None, "{skipped}");
        }
        let broken = json!({"id": "15", "author": {"id": "U1"}, "content": "no channel"});
        assert!(read_message(&broken, "B0").unwrap_err().0.contains("channel_id"));
        // A file alone is a message; its CDN URL is how it is fetched.
        let file = json!({"id": "16", "channel_id": "D1", "author": {"id": "U1"}, "content": "",
            "attachments": [{"id": "a1", "filename": "plan.pdf", "size": 2048, "url": "https://cdn.example/plan.pdf"}]});
        let taken = read_message(&file, "B0").unwrap().unwrap();
        assert_eq!(
            taken.attachments,
            [Attachment {
                name: "plan.pdf".into(),
                size: Some(2048),
                locator: "https://cdn.example/plan.pdf".into()
            }]
        );
    }

    #[test]
    fn close_codes_say_whether_to_resume_identify_or_stop() {
        let (mut session, mut seq) = (
            Some(Session { id: "s".into(), resume_url: "ws://x".into(), user: "B0".into() }),
            Some(5),
        );
        assert!(matches!(closed(4000, "", &mut session, &mut seq), Ended::Again(_)));
        assert!(session.is_some(), "an unknown error resumes");
        assert!(matches!(closed(4004, "", &mut session, &mut seq), Ended::Fatal(_)));
        assert!(
            matches!(closed(4014, "", &mut session, &mut seq), Ended::Fatal(why) if why.contains("Message Content"))
        );
        assert!(matches!(closed(4009, "", &mut session, &mut seq), Ended::Again(_)));
        assert!(session.is_none() && seq.is_none(), "a timed-out session identifies afresh");
    }
}
