//! Telegram, through the Bot API: updates by long polling or by webhook; replies through the
//! shared [`Channel`] (from the outbox, streamed by editing one message in place).
//!
//! A chat is the source `telegram` / `<bot>:<chat id>` (`<bot>:<chat id>/<thread>` in a forum
//! topic) / `<user id>`; the bindings pick its tenant and agent. The idempotency key of a
//! message is `telegram:<bot>:<chat id>:<message id>`, so an update Telegram sends again (after
//! a crash before it was confirmed, a webhook retried) is never a second event. In polling
//! mode an update is confirmed (the next `getUpdates`' offset) only after its event is durable.
//!
//! The poller can also run as a process of its own ([`Relay`], `clade channels listen`): it
//! posts each update to the gateway's webhook route, as Telegram would, and confirms it once
//! the gateway answered that it is stored.

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use clade_runtime::Engine;
use clade_runtime::outbox::Subscriber;
use futures::future::BoxFuture;
use serde_json::Value;

pub use api::{Api, ApiError, MESSAGE_LIMIT, PUBLIC_API, Update};

use crate::channel::{Channel, Inbound, Settings};
pub use crate::channel::{NotTaken, Taken};
use crate::health::Health;

/// The platform of Telegram's sessions.
pub const PLATFORM: &str = clade_core::ChatPlatform::Telegram.as_str();

/// Polls that come back empty sooner than this (a server that does not hold long polls) wait
/// out the rest, so an idle bot does not spin.
const MIN_POLL: Duration = Duration::from_millis(500);

/// What one bot needs, resolved from `channels.telegram.<name>`.
#[derive(Debug, Clone)]
pub struct BotOptions {
    pub settings: Settings,
    /// Webhook mode's secret; `None` in polling mode.
    pub webhook_secret: Option<String>,
    /// Webhook mode: the gateway's public URL, to register with `setWebhook`.
    pub public_url: Option<String>,
    pub poll_timeout: Duration,
}

/// One Telegram bot: its inbound side (poller or webhook) over the shared [`Channel`].
pub struct Bot {
    options: BotOptions,
    channel: Arc<Channel<Api>>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").field("name", &self.channel.name()).finish_non_exhaustive()
    }
}

impl Bot {
    pub fn new(options: BotOptions, engine: Engine, health: Health) -> Arc<Self> {
        let settings = &options.settings;
        let api = Api::new(reqwest::Client::new(), &settings.api_url, &settings.token);
        let mode = if options.webhook_secret.is_some() { "webhook" } else { "polling" };
        let channel = Channel::new(settings, mode, api, engine, health);
        Arc::new(Self { options, channel })
    }

    pub fn name(&self) -> &str {
        self.channel.name()
    }

    /// The outbox subscriber that sends this bot's replies.
    pub async fn subscriber(&self) -> Result<Subscriber, clade_store::Error> {
        self.channel.subscriber().await
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
                        bot.options.settings.name
                    );
                    bot.register_webhook(&url, secret).await;
                }
                (Some(_), None) => {
                    tracing::info!(bot = %bot.options.settings.name, "telegram bot in webhook mode: register /channels/telegram/{} with setWebhook (or set public_url)", bot.options.settings.name);
                }
            }
        })
    }

    async fn register_webhook(&self, url: &str, secret: &str) {
        let mut failures = 0;
        loop {
            match self.channel.api().set_webhook(url, secret).await {
                Ok(()) => {
                    self.channel.health().ok(
                        PLATFORM,
                        &self.options.settings.name,
                        self.channel.store().now(),
                    );
                    tracing::info!(bot = %self.options.settings.name, url, "telegram webhook registered");
                    return;
                }
                Err(err) => {
                    failures += 1;
                    self.channel.health().failed(
                        PLATFORM,
                        &self.options.settings.name,
                        &err.to_string(),
                    );
                    tracing::warn!(bot = %self.options.settings.name, error = %err, "cannot register the telegram webhook; trying again");
                    if !err.is_transient() && failures >= 3 {
                        return;
                    }
                    self.channel.store().clock().sleep(backoff(failures, &err)).await;
                }
            }
        }
    }

    /// Long polling, each update taken by this gateway.
    async fn poll(self: &Arc<Self>) {
        let clock = self.channel.store().clock().clone();
        let options = &self.options;
        poll(self.channel.api(), &options.settings.name, options.poll_timeout, &*clock, &**self)
            .await
    }

    /// Whether updates come to the gateway's webhook route (webhook mode), not from its poller.
    pub fn takes_webhooks(&self) -> bool {
        self.options.webhook_secret.is_some()
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
    pub async fn accept(&self, raw: &Value) -> Result<Taken, NotTaken> {
        let update = match api::parse_update(raw) {
            Ok(update) => update,
            Err(why) => return Ok(self.channel.malformed(&why.0)),
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
        let chat = api::chat_text(message.chat.id, message.message_thread_id);
        let inbound = Inbound {
            id: format!("{}:{}", message.chat.id, message.message_id),
            chat,
            actor: from.id.to_string(),
            text,
            attachments: message.attachments(),
            group: message.chat.is_group().then(|| from.named()),
        };
        self.channel.take(inbound).await
    }
}

/// Where a poller's updates go, and who hears how polling goes.
pub trait Updates: Send + Sync {
    /// Takes one update; `Err` (why) when it should be taken again: no later update is
    /// confirmed to Telegram before it.
    fn take<'a>(&'a self, raw: &'a Value) -> BoxFuture<'a, Result<(), NotTaken>>;
    /// Telegram answered a poll.
    fn reachable(&self, _at: clade_core::Timestamp) {}
    /// A poll, or taking an update, failed.
    fn failing(&self, _why: &str) {}
}

impl Updates for Bot {
    fn take<'a>(&'a self, raw: &'a Value) -> BoxFuture<'a, Result<(), NotTaken>> {
        Box::pin(async move { self.accept(raw).await.map(drop) })
    }
    fn reachable(&self, at: clade_core::Timestamp) {
        self.channel.health().ok(PLATFORM, &self.options.settings.name, at);
    }
    fn failing(&self, why: &str) {
        self.channel.health().failed(PLATFORM, &self.options.settings.name, why);
    }
}

/// Long polling: fetch, take each update (trying one that fails again before any later one),
/// then confirm them all with the next fetch's offset. Runs until aborted.
pub async fn poll(
    api: &Api,
    name: &str,
    wait: Duration,
    clock: &dyn clade_core::Clock,
    updates: &dyn Updates,
) {
    let mut offset: Option<i64> = None;
    let mut failures = 0u32;
    tracing::info!(bot = name, "telegram bot polling for updates");
    loop {
        let asked = clock.now();
        match api.get_updates(offset, wait).await {
            Ok(polled) => {
                if failures > 0 {
                    tracing::info!(bot = name, "telegram reachable again");
                }
                failures = 0;
                updates.reachable(clock.now());
                let empty = polled.is_empty();
                for raw in &polled {
                    let mut tries = 0;
                    while let Err(why) = updates.take(raw).await {
                        tries += 1;
                        updates.failing(&why.0);
                        tracing::warn!(bot = name, error = %why, "a telegram update could not be taken; trying again");
                        clock.sleep(backoff(tries, &ApiError::Unavailable(String::new()))).await;
                    }
                    clade_runtime::failpoints::hit("before_update_confirmed");
                    if let Some(id) = raw["update_id"].as_i64() {
                        offset = Some(offset.map_or(id + 1, |o| o.max(id + 1)));
                    }
                }
                let took = Duration::from_millis(
                    clock.now().as_millis().saturating_sub(asked.as_millis()).max(0).unsigned_abs(),
                );
                if empty && took < MIN_POLL {
                    clock.sleep(MIN_POLL - took).await;
                }
            }
            Err(err) => {
                failures += 1;
                updates.failing(&err.to_string());
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(bot = name, failures, error = %err, "telegram polling failed; reconnecting with back-off");
                }
                clock.sleep(backoff(failures, &err)).await;
            }
        }
    }
}

/// A listener of its own (`clade channels listen`): each update polled from Telegram is posted
/// to the gateway's webhook route for the bot, with the bot's webhook secret, as Telegram would
/// post it; it is confirmed to Telegram only once the gateway has stored it (any 2xx).
#[derive(Debug)]
pub struct Relay(pub crate::channel::Forward);

impl Updates for Relay {
    fn take<'a>(&'a self, raw: &'a Value) -> BoxFuture<'a, Result<(), NotTaken>> {
        Box::pin(async move {
            let headers = [("x-telegram-bot-api-secret-token", self.0.secret().to_owned())];
            let fix = "the bot must be in webhook mode there, with the same secret in webhook_secret_env, or this listener paired for it";
            self.0.send(&headers, raw.to_string().into_bytes(), "application/json", fix).await
        })
    }
}

/// The wait before attempt `failures + 1`: doubling from 1 s to 30 s, or what Telegram asked.
fn backoff(failures: u32, err: &ApiError) -> Duration {
    match err {
        ApiError::RateLimited { retry_after, .. } => *retry_after,
        _ => crate::RECONNECT.after(failures),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_names_its_topic() {
        assert_eq!(api::chat_text(-100123, None), "-100123");
        assert_eq!(api::chat_text(-100123, Some(7)), "-100123/7");
    }

    #[test]
    fn failures_back_off_doubling_or_as_telegram_asks() {
        let down = ApiError::Unavailable("x".into());
        assert_eq!(backoff(1, &down), Duration::from_secs(1));
        assert_eq!(backoff(3, &down), Duration::from_secs(4));
        assert_eq!(backoff(40, &down), Duration::from_secs(30));
        let limited =
            ApiError::RateLimited { retry_after: Duration::from_secs(7), description: "x".into() };
        assert_eq!(backoff(1, &limited), Duration::from_secs(7));
    }
}
