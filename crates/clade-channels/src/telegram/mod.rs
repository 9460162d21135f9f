//! Telegram, through the Bot API: updates by long polling or by webhook, replies from the
//! outbox, streamed by editing one message in place.
//!
//! A chat is the source `telegram` / `<bot>:<chat id>` (`<bot>:<chat id>/<thread>` in a forum
//! topic) / `<user id>`; the bindings pick its tenant and agent. The idempotency key of a
//! message is `telegram:<bot>:<chat id>:<message id>`, so an update Telegram sends again (after
//! a crash before it was confirmed, a webhook retried) is never a second event. In polling
//! mode an update is confirmed (the next `getUpdates`' offset) only after its event is durable.

pub mod api;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{EventKind, SessionId};
use clade_runtime::outbox::{Refused, Signing, Sink, Subscriber};
use clade_runtime::{Engine, Envelope, Subscription};
use clade_store::{OutboxRow, Source, Store};
use serde_json::Value;

pub use api::{Api, ApiError, MESSAGE_LIMIT, PUBLIC_API, Update};

use crate::health::Health;
use crate::split::split;

/// The platform of Telegram's sessions.
pub const PLATFORM: &str = "telegram";

/// How often a streamed draft is edited at most: Telegram allows about one edit a second a chat.
const EDIT_INTERVAL: Duration = Duration::from_millis(1000);
/// How long a session's editor waits for news before it stops (the next message starts it).
const EDITOR_IDLE: Duration = Duration::from_secs(600);
/// Polls that come back empty sooner than this (a server that does not hold long polls) wait
/// out the rest, so an idle bot does not spin.
const MIN_POLL: Duration = Duration::from_millis(500);
/// The longest wait between attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Sessions whose chat is remembered before the memory starts afresh.
const REMEMBERED: usize = 10_000;

/// What one bot needs, resolved from `channels.telegram.<name>`.
#[derive(Debug, Clone)]
pub struct BotOptions {
    pub name: String,
    pub api_url: String,
    pub token: String,
    /// Webhook mode's secret; `None` in polling mode.
    pub webhook_secret: Option<String>,
    /// Webhook mode: the gateway's public URL, to register with `setWebhook`.
    pub public_url: Option<String>,
    pub poll_timeout: Duration,
    pub stream: bool,
    pub max_attempts: u32,
}

/// Where a session's replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chat {
    id: i64,
    thread: Option<i64>,
}

impl Chat {
    /// The session's channel for this chat of bot `bot`.
    fn channel(self, bot: &str) -> String {
        match self.thread {
            Some(thread) => format!("{bot}:{}/{thread}", self.id),
            None => format!("{bot}:{}", self.id),
        }
    }

    /// The chat of a channel of bot `bot`, if it is one.
    fn of_channel(bot: &str, channel: &str) -> Option<Self> {
        let rest = channel.strip_prefix(bot)?.strip_prefix(':')?;
        let (id, thread) = match rest.split_once('/') {
            Some((id, thread)) => (id, Some(thread.parse().ok()?)),
            None => (rest, None),
        };
        Some(Self { id: id.parse().ok()?, thread })
    }
}

/// What became of one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Stored as an event (or found stored already: a redelivery).
    Event { session: SessionId, duplicate: bool },
    /// Nothing to do with it (an edit, a bot's message, no text, no binding, unreadable); the
    /// string says why.
    Skipped(String),
}

/// Why an update could not be taken now; the platform should deliver it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotTaken(pub String);

/// A streamed reply being drafted in one message.
#[derive(Debug, Default)]
struct Draft {
    text: String,
    message: Option<i64>,
    /// The reply's final delivery took the draft over: no more edits.
    closed: bool,
}

/// A final reply partly sent: what a retry starts from.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The draft message the first piece replaces.
    draft: Option<i64>,
    /// Pieces sent so far.
    sent: usize,
}

/// One Telegram bot: its listener's inbound side and its outbox sink.
pub struct Bot {
    options: BotOptions,
    api: Api,
    engine: Engine,
    store: Store,
    health: Health,
    /// Drafts of streamed replies, by turn id.
    drafts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Draft>>>>,
    /// Final replies partly sent, by turn id.
    progress: Mutex<HashMap<String, Progress>>,
    /// Turns whose reply went out: an editor that sees them late starts no draft.
    finished: Mutex<HashSet<String>>,
    /// Sessions with an editor following them.
    editing: Mutex<HashSet<SessionId>>,
    /// The chat of each session the sink was asked about (`None`: not this bot's).
    chats: Mutex<HashMap<SessionId, Option<Chat>>>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").field("name", &self.options.name).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bot {
    pub fn new(options: BotOptions, engine: Engine, health: Health) -> Arc<Self> {
        let api = Api::new(reqwest::Client::new(), &options.api_url, &options.token);
        let mode = if options.webhook_secret.is_some() { "webhook" } else { "polling" };
        health.register(PLATFORM, &options.name, mode);
        Arc::new(Self {
            api,
            store: engine.store().clone(),
            engine,
            health,
            options,
            drafts: Mutex::default(),
            progress: Mutex::default(),
            finished: Mutex::default(),
            editing: Mutex::default(),
            chats: Mutex::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The outbox subscriber that sends this bot's replies. Its cursor starts at the outbox's
    /// head the first time, so a bot added to a gateway with history sends nothing old.
    pub async fn subscriber(self: &Arc<Self>) -> Result<Subscriber, clade_store::Error> {
        let name = format!("channel:{PLATFORM}:{}", self.options.name);
        self.store.system().start_subscriber_at_head(&name).await?;
        let sink: Arc<dyn Sink> = self.clone();
        Ok(Subscriber {
            name,
            url: format!("{PLATFORM}:{}", self.options.name),
            signing: Signing::Sink(sink),
            events: [EventKind::TurnStarted, EventKind::TurnFinished, EventKind::TurnFailed]
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            agents: vec!["*".to_owned()],
            max_attempts: self.options.max_attempts,
            timeout: Duration::from_secs(30),
        })
    }

    /// Starts the bot: in polling mode its poller, in webhook mode its registration (when a
    /// public URL is given). Aborting the handle stops it.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let bot = self.clone();
        tokio::spawn(async move {
            match (&bot.options.webhook_secret, &bot.options.public_url) {
                (None, _) => bot.poll().await,
                (Some(secret), Some(public)) => {
                    let url = format!(
                        "{}/channels/{PLATFORM}/{}",
                        public.trim_end_matches('/'),
                        bot.options.name
                    );
                    bot.register_webhook(&url, secret).await;
                }
                (Some(_), None) => {
                    tracing::info!(bot = %bot.options.name, "telegram bot in webhook mode: register /channels/telegram/{} with setWebhook (or set public_url)", bot.options.name);
                }
            }
        })
    }

    async fn register_webhook(&self, url: &str, secret: &str) {
        let mut failures = 0;
        loop {
            match self.api.set_webhook(url, secret).await {
                Ok(()) => {
                    self.health.ok(PLATFORM, &self.options.name, self.store.now());
                    tracing::info!(bot = %self.options.name, url, "telegram webhook registered");
                    return;
                }
                Err(err) => {
                    failures += 1;
                    self.health.failed(PLATFORM, &self.options.name, &err.to_string());
                    tracing::warn!(bot = %self.options.name, error = %err, "cannot register the telegram webhook; trying again");
                    if !err.is_transient() && failures >= 3 {
                        return;
                    }
                    self.store.clock().sleep(backoff(failures, &err)).await;
                }
            }
        }
    }

    /// Long polling: fetch, take each update (trying one that fails again before any later
    /// one), then confirm them all with the next fetch's offset.
    async fn poll(self: &Arc<Self>) {
        let name = self.options.name.as_str();
        let clock = self.store.clock().clone();
        let mut offset: Option<i64> = None;
        let mut failures = 0u32;
        tracing::info!(bot = name, "telegram bot polling for updates");
        loop {
            let asked = clock.now();
            match self.api.get_updates(offset, self.options.poll_timeout).await {
                Ok(updates) => {
                    if failures > 0 {
                        tracing::info!(bot = name, "telegram reachable again");
                    }
                    failures = 0;
                    self.health.ok(PLATFORM, name, clock.now());
                    let empty = updates.is_empty();
                    for raw in &updates {
                        let mut tries = 0;
                        while let Err(err) = self.accept(raw).await {
                            tries += 1;
                            self.health.failed(PLATFORM, name, &err.0);
                            tracing::warn!(bot = name, error = %err, "a telegram update could not be stored; trying again");
                            clock
                                .sleep(backoff(tries, &ApiError::Unavailable(String::new())))
                                .await;
                        }
                        clade_runtime::failpoints::hit("before_update_confirmed");
                        if let Some(id) = raw["update_id"].as_i64() {
                            offset = Some(offset.map_or(id + 1, |o| o.max(id + 1)));
                        }
                    }
                    let took = Duration::from_millis(
                        clock
                            .now()
                            .as_millis()
                            .saturating_sub(asked.as_millis())
                            .max(0)
                            .unsigned_abs(),
                    );
                    if empty && took < MIN_POLL {
                        clock.sleep(MIN_POLL - took).await;
                    }
                }
                Err(err) => {
                    failures += 1;
                    self.health.failed(PLATFORM, name, &err.to_string());
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(bot = name, failures, error = %err, "telegram polling failed; reconnecting with back-off");
                    }
                    clock.sleep(backoff(failures, &err)).await;
                }
            }
        }
    }

    /// Checks a webhook request's `X-Telegram-Bot-Api-Secret-Token`.
    pub fn webhook_secret_matches(&self, given: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let Some(secret) = &self.options.webhook_secret else { return false };
        // Digests compared, so the time taken says nothing about the secret's bytes.
        Sha256::digest(given) == Sha256::digest(secret.as_bytes())
    }

    /// Takes one update: routes it and stores its event. `Err` when it could not be stored
    /// now and should come again; anything that can never be taken is `Skipped`.
    pub async fn accept(self: &Arc<Self>, raw: &Value) -> Result<Taken, NotTaken> {
        let name = self.options.name.as_str();
        let update = match api::parse_update(raw) {
            Ok(update) => update,
            Err(why) => {
                self.health.update(PLATFORM, name, |h| h.malformed += 1);
                tracing::warn!(bot = name, update = ?raw.get("update_id"), %why, "telegram update skipped");
                return Ok(Taken::Skipped(why));
            }
        };
        let Some(message) = update.message else {
            let why = if update.edited_message.is_some() {
                "an edit of an earlier message (only new messages are passed on)"
            } else {
                "not a message"
            };
            return Ok(Taken::Skipped(why.into()));
        };
        let Some(from) = &message.from else {
            return Ok(Taken::Skipped("a message with no sender".into()));
        };
        if from.is_bot {
            return Ok(Taken::Skipped("a bot's message (bots do not answer bots)".into()));
        }
        let Some(text) = message.content() else {
            return Ok(Taken::Skipped("a message with nothing to pass on".into()));
        };
        let chat = Chat { id: message.chat.id, thread: message.message_thread_id };
        let source = Source {
            platform: PLATFORM.to_owned(),
            channel: chat.channel(name),
            actor: from.id.to_string(),
        };
        let Some(agent) = self.engine.route_source(&source) else {
            self.health.update(PLATFORM, name, |h| h.unrouted += 1);
            tracing::info!(bot = name, channel = %source.channel, "telegram message matches no binding and there is no default agent: add a binding with platform: telegram");
            return Ok(Taken::Skipped("no binding".into()));
        };
        let tenant = match self.store.tenant(agent.tenant.as_str()).await {
            Ok(tenant) => tenant,
            Err(err) if err.is_not_found() => {
                tracing::warn!(bot = name, agent = %agent, "a binding names a tenant that does not exist; the message is dropped");
                return Ok(Taken::Skipped(format!("no tenant {}", agent.tenant)));
            }
            Err(err) => return Err(NotTaken(err.to_string())),
        };
        let envelope = Envelope {
            tenant,
            agent: Some(agent.handle.as_str().to_owned()),
            text,
            source,
            idempotency_key: Some(format!("{PLATFORM}:{name}:{}:{}", chat.id, message.message_id)),
        };
        match self.engine.submit_and_watch(envelope).await {
            Ok((accepted, watch)) => {
                if !accepted.duplicate {
                    self.health.update(PLATFORM, name, |h| h.received += 1);
                }
                lock(&self.chats).insert(accepted.session_id, Some(chat));
                if self.options.stream
                    && let Some(live) = watch.into_live()
                    && lock(&self.editing).insert(accepted.session_id)
                {
                    let bot = self.clone();
                    let session = accepted.session_id;
                    tokio::spawn(async move {
                        bot.edit_drafts(chat, live).await;
                        lock(&bot.editing).remove(&session);
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
                let _ = self.api.send_message(chat.id, chat.thread, &notice).await;
                Ok(Taken::Skipped("the session is full".into()))
            }
            Err(clade_runtime::engine::Error::Store(err)) if err.is_not_found() => {
                tracing::warn!(bot = name, agent = %agent, error = %err, "a binding names an agent that does not exist; the message is dropped");
                Ok(Taken::Skipped(err.to_string()))
            }
            Err(clade_runtime::engine::Error::NoAgent) => Ok(Taken::Skipped("no agent".into())),
            Err(err) => Err(NotTaken(err.to_string())),
        }
    }

    /// Follows one session's live events and drafts each reply in one message, edited as the
    /// model writes, until the session has been quiet for a while.
    async fn edit_drafts(&self, chat: Chat, mut live: Subscription) {
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
                Some(Ok(event)) if event.kind == EventKind::TurnStarted => {
                    let Some(turn) = event.data["turn"].as_str() else { continue };
                    // Announced twice: live as the turn begins, again once its row commits.
                    let known = current.as_ref().is_some_and(|(t, _)| t == turn)
                        || lock(&self.drafts).contains_key(turn);
                    if known || lock(&self.finished).contains(turn) {
                        continue;
                    }
                    let draft = Arc::new(tokio::sync::Mutex::new(Draft::default()));
                    lock(&self.drafts).insert(turn.to_owned(), draft.clone());
                    current = Some((turn.to_owned(), draft));
                    dirty = false;
                }
                Some(Ok(event)) if event.kind == EventKind::TextDelta => {
                    let (Some((turn, draft)), Some(text)) = (&current, event.data["text"].as_str())
                    else {
                        continue;
                    };
                    if event.data["turn"].as_str() != Some(turn.as_str()) {
                        continue;
                    }
                    draft.lock().await.text.push_str(text);
                    dirty = true;
                }
                Some(Ok(event)) if event.kind.ends_turn() => {
                    // The reply's delivery takes the draft from here.
                    current = None;
                    dirty = false;
                }
                Some(Ok(_)) => {}
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
                let shown = draft_text(&draft.text);
                let result = match draft.message {
                    Some(message) => self.api.edit_message(chat.id, message, &shown).await,
                    None => self
                        .api
                        .send_message(chat.id, chat.thread, &shown)
                        .await
                        .map(|id| draft.message = Some(id)),
                };
                shown_at = clock.now();
                dirty = false;
                if let Err(ApiError::RateLimited { retry_after, .. }) = result {
                    paused_until = clock.now().plus(retry_after);
                    dirty = true;
                } else if let Err(err) = result {
                    tracing::debug!(bot = %self.options.name, error = %err, "a draft could not be shown; the reply comes whole");
                }
            }
        }
    }

    /// The chat of `row`'s session if it is this bot's, checked against the bindings: a
    /// session whose chat the bindings now route to another tenant is sent nothing.
    async fn chat_of(&self, row: &OutboxRow) -> Result<Option<Chat>, Refused> {
        let Some(session) = row.session_id else { return Ok(None) };
        if let Some(known) = lock(&self.chats).get(&session) {
            return Ok(*known);
        }
        let found = match self.store.system().session_any_tenant(session).await {
            Ok(found) => found,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(Refused::transient(err.to_string())),
        };
        let mut chat = None;
        if found.source.platform == PLATFORM
            && let Some(ours) = Chat::of_channel(&self.options.name, &found.source.channel)
        {
            let routed = match self.engine.route_source(&found.source) {
                Some(agent) => match self.store.tenant(agent.tenant.as_str()).await {
                    Ok(tenant) => tenant.id == found.tenant_id,
                    Err(err) if err.is_not_found() => false,
                    Err(err) => return Err(Refused::transient(err.to_string())),
                },
                None => false,
            };
            if routed {
                chat = Some(ours);
            } else {
                tracing::warn!(bot = %self.options.name, %session, "a telegram session whose chat the bindings no longer route to its tenant: its replies are not sent");
            }
        }
        let mut chats = lock(&self.chats);
        if chats.len() >= REMEMBERED {
            chats.clear();
        }
        chats.insert(session, chat);
        Ok(chat)
    }

    async fn deliver_row(&self, row: &OutboxRow) -> Result<(), Refused> {
        let Some(chat) = self.chat_of(row).await? else { return Ok(()) };
        let data: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
        let turn = data["turn"].as_str().unwrap_or_default().to_owned();
        match row.kind {
            EventKind::TurnStarted => {
                // Only a hint: a failure is not worth holding the reply back for.
                let _ = self.api.typing(chat.id, chat.thread).await;
                Ok(())
            }
            EventKind::TurnFinished => {
                let reply = data["reply"].as_str().unwrap_or_default();
                self.send_reply(chat, &turn, reply).await
            }
            EventKind::TurnFailed => {
                let notice = "Sorry: this message could not be answered. The operator can see why in the session's history; try again later.";
                self.send_reply(chat, &turn, notice).await
            }
            _ => Ok(()),
        }
    }

    /// Sends a turn's reply in pieces the platform accepts, the first replacing the turn's
    /// draft if it had one; a retry goes on from the first piece not sent.
    async fn send_reply(&self, chat: Chat, turn: &str, reply: &str) -> Result<(), Refused> {
        let mut progress = match lock(&self.progress).get(turn) {
            Some(progress) => *progress,
            None => Progress::default(),
        };
        let draft = lock(&self.drafts).remove(turn);
        if let Some(draft) = draft {
            let mut draft = draft.lock().await;
            draft.closed = true;
            progress.draft = draft.message;
        }
        {
            let mut finished = lock(&self.finished);
            if finished.len() >= REMEMBERED {
                finished.clear();
            }
            finished.insert(turn.to_owned());
        }
        let mut pieces = split(reply, MESSAGE_LIMIT);
        if pieces.is_empty() {
            if progress.draft.is_none() {
                return Ok(());
            }
            pieces.push("(no reply)".to_owned());
        }
        let result = self.send_pieces(chat, &pieces, &mut progress).await;
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
        chat: Chat,
        pieces: &[String],
        progress: &mut Progress,
    ) -> Result<(), Refused> {
        for piece in pieces.iter().skip(progress.sent) {
            let sent = match (progress.sent, progress.draft) {
                (0, Some(message)) => match self.api.edit_message(chat.id, message, piece).await {
                    // The draft is gone (deleted in the chat): the reply comes as a message.
                    Err(ApiError::Refused(_)) => {
                        self.api.send_message(chat.id, chat.thread, piece).await.map(drop)
                    }
                    other => other,
                },
                _ => self.api.send_message(chat.id, chat.thread, piece).await.map(drop),
            };
            match sent {
                Ok(()) => {
                    progress.sent += 1;
                    self.health.update(PLATFORM, &self.options.name, |h| h.sent += 1);
                }
                Err(err) => {
                    self.health.failed(PLATFORM, &self.options.name, &err.to_string());
                    return Err(refusal(err));
                }
            }
        }
        self.health.ok(PLATFORM, &self.options.name, self.store.now());
        Ok(())
    }
}

impl Sink for Bot {
    fn deliver<'a>(
        &'a self,
        row: &'a OutboxRow,
    ) -> futures::future::BoxFuture<'a, Result<(), Refused>> {
        Box::pin(self.deliver_row(row))
    }
}

/// A draft as shown: the first message's worth, marked as still being written.
fn draft_text(text: &str) -> String {
    let mut pieces = split(text, MESSAGE_LIMIT - 2);
    let first = if pieces.is_empty() { String::new() } else { pieces.swap_remove(0) };
    format!("{first} …")
}

/// What the dispatcher makes of a failed call.
fn refusal(err: ApiError) -> Refused {
    let reason = err.to_string();
    match err {
        ApiError::RateLimited { retry_after, .. } => {
            Refused { reason, retry_after: Some(retry_after), permanent: false }
        }
        ApiError::Refused(_) => Refused::permanent(reason),
        _ => Refused::transient(reason),
    }
}

/// The wait before attempt `failures + 1`: doubling from 1 s to 30 s, or what Telegram asked.
fn backoff(failures: u32, err: &ApiError) -> Duration {
    let doubling = Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    match err {
        ApiError::RateLimited { retry_after, .. } => *retry_after,
        _ => doubling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_round_trips_through_its_channel_and_only_its_bots() {
        let chat = Chat { id: -100123, thread: None };
        assert_eq!(chat.channel("desk"), "desk:-100123");
        assert_eq!(Chat::of_channel("desk", "desk:-100123"), Some(chat));
        let topic = Chat { id: -100123, thread: Some(7) };
        assert_eq!(Chat::of_channel("desk", &topic.channel("desk")), Some(topic));
        assert_eq!(Chat::of_channel("desk", "desk2:1"), None);
        assert_eq!(Chat::of_channel("desk", "other:1"), None);
        assert_eq!(Chat::of_channel("desk", "desk:x"), None);
    }

    #[test]
    fn failures_back_off_doubling_or_as_telegram_asks() {
        let down = ApiError::Unavailable("x".into());
        assert_eq!(backoff(1, &down), Duration::from_secs(1));
        assert_eq!(backoff(3, &down), Duration::from_secs(4));
        assert_eq!(backoff(40, &down), MAX_BACKOFF);
        let limited =
            ApiError::RateLimited { retry_after: Duration::from_secs(7), description: "x".into() };
        assert_eq!(backoff(1, &limited), Duration::from_secs(7));
        assert!(refusal(ApiError::Refused("blocked".into())).permanent);
        assert_eq!(refusal(limited).retry_after, Some(Duration::from_secs(7)));
    }
}
