//! Slack: events by Socket Mode (a WebSocket the gateway opens, no public URL) or by the
//! Events API (Slack posts them to `POST /channels/slack/<app>`, signed with the app's signing
//! secret); replies through the shared [`Channel`] with the Web API (`chat.postMessage`,
//! streamed with `chat.update`).
//!
//! A chat is the source `slack` / `<app>:<channel id>` (`/<thread ts>` in a thread) / `<user
//! id>`. Taken: direct messages, and mentions of the app anywhere (`app_mention`); not the
//! app's own or other bots' messages, edits, or other channels' chatter. A message's key is its
//! channel and `ts`, so a redelivery (Socket Mode after a dropped socket, the Events API's
//! retries) and the `message` and `app_mention` events of one message are one event. A Socket
//! Mode envelope is acknowledged only once its event is stored.
//!
//! Socket Mode can also run as a process of its own ([`Relay`], `clade channels listen`): it
//! posts each event to the gateway's Events API route, signed as Slack signs it, and
//! acknowledges it once the gateway answered that it is stored.

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

use crate::channel::{Channel, Inbound, Malformed, NotTaken, PlatformError, Settings, Taken};
use crate::health::Health;

/// The platform of Slack's sessions.
pub const PLATFORM: &str = clade_core::ChatPlatform::Slack.as_str();

/// How old a signed Events API request may be (Slack's advice: 5 minutes).
const MAX_SKEW_SECS: i64 = 300;
/// A Socket Mode connection silent for this long is taken for dead and opened again.
const SILENCE: Duration = Duration::from_secs(90);
/// How often the gateway pings its socket.
const PING_EVERY: Duration = Duration::from_secs(30);

/// How an app's events arrive.
#[derive(Clone)]
pub enum Mode {
    /// Socket Mode, with the app-level token.
    Socket { app_token: String },
    /// The Events API, checked against the signing secret.
    Events { signing_secret: String },
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Socket { .. } => "Socket",
            Mode::Events { .. } => "Events",
        })
    }
}

/// What one app needs, resolved from `channels.slack.<name>`.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub settings: Settings,
    pub mode: Mode,
}

/// One Slack app: its inbound side (socket or Events API) over the shared [`Channel`].
pub struct App {
    options: AppOptions,
    channel: Arc<Channel<Api>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("name", &self.options.settings.name).finish_non_exhaustive()
    }
}

/// Why an Events API request was refused (said in the log, never to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("this app takes events over Socket Mode, not the Events API")]
    NotEventsMode,
    #[error("no X-Slack-Request-Timestamp, or not a number")]
    NoTimestamp,
    #[error("the timestamp is more than 5 minutes from now (a replay, or a clock off)")]
    Stale,
    #[error("X-Slack-Signature does not match the body under the signing secret")]
    BadSignature,
}

impl App {
    pub fn new(options: AppOptions, engine: Engine, health: Health) -> Arc<Self> {
        let settings = &options.settings;
        let api = Api::new(reqwest::Client::new(), &settings.api_url, &settings.token);
        let mode = match options.mode {
            Mode::Socket { .. } => "socket",
            Mode::Events { .. } => "events",
        };
        let channel = Channel::new(settings, mode, api, engine, health);
        Arc::new(Self { options, channel })
    }

    pub fn name(&self) -> &str {
        self.channel.name()
    }

    /// The outbox subscriber that sends this app's replies.
    pub async fn subscriber(&self) -> Result<Subscriber, clade_store::Error> {
        self.channel.subscriber().await
    }

    /// Starts Socket Mode's connection (nothing to start for the Events API). Aborting the
    /// handle stops it.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            if let Mode::Socket { app_token } = &app.options.mode {
                app.socket(app_token).await;
            }
        })
    }

    /// Whether events come to the gateway's Events API route (events mode).
    pub fn takes_events(&self) -> bool {
        matches!(self.options.mode, Mode::Events { .. })
    }

    /// Checks an Events API request: `v0=` HMAC-SHA256 of `v0:<timestamp>:<body>` under the
    /// signing secret, made within 5 minutes of `now_secs`.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), Unsigned> {
        use hmac::{KeyInit as _, Mac as _};
        let Mode::Events { signing_secret } = &self.options.mode else {
            return Err(Unsigned::NotEventsMode);
        };
        let stamp: i64 =
            timestamp.and_then(|t| t.trim().parse().ok()).ok_or(Unsigned::NoTimestamp)?;
        if (now_secs - stamp).abs() > MAX_SKEW_SECS {
            return Err(Unsigned::Stale);
        }
        let given = signature
            .and_then(|s| s.strip_prefix("v0="))
            .and_then(|hex_text| hex::decode(hex_text).ok())
            .ok_or(Unsigned::BadSignature)?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_secret.as_bytes())
            .map_err(|_| Unsigned::BadSignature)?;
        mac.update(format!("v0:{stamp}:").as_bytes());
        mac.update(body);
        // Constant time.
        mac.verify_slice(&given).map_err(|_| Unsigned::BadSignature)
    }

    /// Takes one `event_callback` payload. `Err` when it could not be stored now and should
    /// come again; anything that can never be taken is `Skipped`.
    pub async fn accept(&self, payload: &Value) -> Result<Taken, NotTaken> {
        match read_event(payload) {
            Ok(Some(inbound)) => self.channel.take(inbound).await,
            Ok(None) => Ok(Taken::Skipped("not a message for the app".into())),
            Err(why) => Ok(self.channel.malformed(&why.0)),
        }
    }

    /// Socket Mode, each event taken by this gateway.
    async fn socket(&self, app_token: &str) {
        let clock = self.channel.store().clock().clone();
        let name = &self.options.settings.name;
        socket_mode(self.channel.api(), name, app_token, &*clock, self).await
    }
}

/// Where Socket Mode's events go, and who hears how the connection goes.
pub trait Events: Send + Sync {
    /// Takes one `event_callback` payload; `Err` (why) when it should come again: it is not
    /// acknowledged, and Slack delivers it again.
    fn take<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Result<(), NotTaken>>;
    /// Slack said hello, or an event was taken.
    fn connected(&self, _at: clade_core::Timestamp) {}
    /// Connecting failed.
    fn failing(&self, _why: &str) {}
    /// A frame could not be read.
    fn malformed(&self, _why: &str) {}
}

impl Events for App {
    fn take<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Result<(), NotTaken>> {
        Box::pin(async move { self.accept(payload).await.map(drop) })
    }
    fn connected(&self, at: clade_core::Timestamp) {
        self.channel.health().ok(PLATFORM, &self.options.settings.name, at);
    }
    fn failing(&self, why: &str) {
        self.channel.health().failed(PLATFORM, &self.options.settings.name, why);
    }
    fn malformed(&self, why: &str) {
        self.channel.malformed(why);
    }
}

/// Socket Mode: opens a connection, takes its envelopes (acknowledging each once taken), and
/// opens another when Slack asks, the socket drops or falls silent. Runs until aborted.
pub async fn socket_mode(
    api: &Api,
    name: &str,
    app_token: &str,
    clock: &dyn clade_core::Clock,
    events: &dyn Events,
) {
    let mut failures = 0u32;
    loop {
        match connect_once(api, name, app_token, clock, events).await {
            Ok(reason) => {
                failures = 0;
                tracing::info!(app = name, %reason, "slack socket closed; connecting again");
            }
            Err(err) => {
                failures += 1;
                events.failing(&err.to_string());
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(app = name, failures, error = %err, "slack socket mode failed; reconnecting with back-off");
                }
                let wait = match err {
                    PlatformError::RateLimited { retry_after, .. } => retry_after,
                    _ => crate::RECONNECT.after(failures),
                };
                clock.sleep(wait).await;
            }
        }
    }
}

/// One connection, until it ends; why it ended.
async fn connect_once(
    api: &Api,
    name: &str,
    app_token: &str,
    clock: &dyn clade_core::Clock,
    events: &dyn Events,
) -> Result<String, PlatformError> {
    let url = api.open_connection(app_token).await?;
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| PlatformError::Unavailable(format!("cannot open the socket: {e}")))?;
    let mut last_ping = clock.now();
    loop {
        // An I/O deadline: a socket that says nothing for this long is dead.
        let frame = match tokio::time::timeout(PING_EVERY, socket.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(err))) => return Err(PlatformError::Unavailable(err.to_string())),
            Ok(None) => return Ok("the socket closed".into()),
            Err(_) => {
                let silent = clock.now().as_millis() - last_ping.as_millis();
                if silent >= SILENCE.as_millis() as i64 {
                    return Err(PlatformError::Unavailable(
                        "the socket fell silent (no pong to our pings)".into(),
                    ));
                }
                socket
                    .send(Frame::Ping(Vec::new().into()))
                    .await
                    .map_err(|e| PlatformError::Unavailable(e.to_string()))?;
                continue;
            }
        };
        last_ping = clock.now();
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Close(_) => return Ok("Slack closed the socket".into()),
            _ => continue,
        };
        let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else {
            events.malformed("a socket frame that is not JSON");
            continue;
        };
        match envelope["type"].as_str() {
            Some("hello") => {
                events.connected(clock.now());
                tracing::info!(app = name, "slack socket mode connected");
            }
            Some("disconnect") => {
                let reason = envelope["reason"].as_str().unwrap_or("no reason");
                return Ok(format!("Slack asked to reconnect ({reason})"));
            }
            Some("events_api") => {
                let Some(id) = envelope["envelope_id"].as_str() else {
                    events.malformed("an events_api envelope without envelope_id");
                    continue;
                };
                // Not acknowledged when it could not be taken: Slack sends it again.
                if let Err(err) = events.take(&envelope["payload"]).await {
                    tracing::warn!(app = name, error = %err, "a slack event could not be taken; Slack sends it again");
                    continue;
                }
                clade_runtime::failpoints::hit("before_update_confirmed");
                let ack = json!({ "envelope_id": id }).to_string();
                socket
                    .send(Frame::Text(ack.into()))
                    .await
                    .map_err(|e| PlatformError::Unavailable(e.to_string()))?;
                events.connected(clock.now());
            }
            Some(other) => {
                // Slash commands and interactivity: acknowledged, not passed on.
                if let Some(id) = envelope["envelope_id"].as_str() {
                    let ack = json!({ "envelope_id": id }).to_string();
                    let _ = socket.send(Frame::Text(ack.into())).await;
                }
                tracing::debug!(app = name, kind = other, "slack envelope not passed on");
            }
            None => {
                events.malformed("a socket frame without a type");
            }
        }
    }
}

/// A listener of its own (`clade channels listen`): each event taken over Socket Mode is posted
/// to the gateway's Events API route for the app, signed with the app's signing secret as
/// Slack signs it; it is acknowledged to Slack only once the gateway has stored it (any 2xx).
#[derive(Debug)]
pub struct Relay(pub crate::channel::Forward);

impl Events for Relay {
    fn take<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Result<(), NotTaken>> {
        Box::pin(async move {
            use hmac::{KeyInit as _, Mac as _};
            let body = payload.to_string();
            let mut headers = Vec::new();
            let signing_secret = self.0.secret();
            if !signing_secret.is_empty() {
                let stamp = clade_core::Clock::now(&clade_core::SystemClock).as_millis() / 1000;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_secret.as_bytes())
                    .map_err(|e| NotTaken(e.to_string()))?;
                mac.update(format!("v0:{stamp}:").as_bytes());
                mac.update(body.as_bytes());
                let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
                headers.push(("x-slack-request-timestamp", stamp.to_string()));
                headers.push(("x-slack-signature", signature));
            }
            let fix = "the app must be in events mode there, with the same signing secret, or this listener paired for it";
            self.0.send(&headers, body.into_bytes(), "application/json", fix).await
        })
    }
}

/// The message an `event_callback` payload carries, if it is one for the app: a direct
/// message, or a mention. `Err` names what is missing.
fn read_event(payload: &Value) -> Result<Option<Inbound>, Malformed> {
    if payload["type"] != "event_callback" {
        return Ok(None);
    }
    let event = &payload["event"];
    let kind = event["type"].as_str().ok_or_else(|| Malformed("an event without a type".into()))?;
    let direct = kind == "message" && event["channel_type"] == "im";
    if !(direct || kind == "app_mention") {
        return Ok(None);
    }
    // Edits, deletions, joins and the like (a message with files is `file_share`); and bots
    // (this app included) never answer bots.
    let subtype = event.get("subtype").filter(|s| !s.is_null());
    if subtype.is_some_and(|s| s != "file_share")
        || event.get("bot_id").is_some_and(|b| !b.is_null())
    {
        return Ok(None);
    }
    let field = |name: &str| {
        event[name]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Malformed(format!("a {kind} event without {name}")))
    };
    let (channel, user, ts) = (field("channel")?, field("user")?, field("ts")?);
    let text = event["text"].as_str().unwrap_or_default();
    // A mention starts with the app's own `<@U…>`: the person's words come after it.
    let text = match text.trim_start().strip_prefix("<@") {
        Some(rest) if kind == "app_mention" => {
            rest.split_once('>').map_or(text, |(_, after)| after).trim().to_owned()
        }
        _ => text.trim().to_owned(),
    };
    let attachments: Vec<crate::attachments::Attachment> = event["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|file| {
                    let url =
                        file["url_private_download"].as_str().or(file["url_private"].as_str());
                    Some(crate::attachments::Attachment {
                        name: file["name"].as_str().unwrap_or("file").to_owned(),
                        size: file["size"].as_u64(),
                        locator: url?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if text.is_empty() && attachments.is_empty() {
        return Ok(None);
    }
    let thread = event["thread_ts"].as_str();
    Ok(Some(Inbound {
        chat: api::chat_text(channel, thread),
        actor: user.to_owned(),
        text,
        id: format!("{channel}:{ts}"),
        attachments,
        // Outside a direct message, a channel's people share its conversation; Slack shows
        // `<@U…>` as the person's name.
        group: (!direct).then(|| format!("<@{user}>")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(event: Value) -> Value {
        json!({"type": "event_callback", "event_id": "Ev1", "event": event})
    }

    #[test]
    fn direct_messages_and_mentions_are_taken_the_rest_is_not() {
        let dm = callback(
            json!({"type": "message", "channel_type": "im", "channel": "D1", "user": "U1", "text": "hi", "ts": "1.1"}),
        );
        let taken = read_event(&dm).unwrap().unwrap();
        assert_eq!(
            (taken.chat.as_str(), taken.actor.as_str(), taken.text.as_str()),
            ("D1", "U1", "hi")
        );
        assert_eq!(taken.id, "D1:1.1");
        let mention = callback(
            json!({"type": "app_mention", "channel": "C1", "user": "U1", "text": "<@UAPP> what now?", "ts": "2.2", "thread_ts": "1.0"}),
        );
        let taken = read_event(&mention).unwrap().unwrap();
        assert_eq!((taken.chat.as_str(), taken.text.as_str()), ("C1/1.0", "what now?"));
        for skipped in [
            json!({"type": "message", "channel_type": "channel", "channel": "C1", "user": "U1", "text": "chatter", "ts": "3"}),
            json!({"type": "message", "channel_type": "im", "channel": "D1", "bot_id": "B1", "text": "me", "ts": "4"}),
            json!({"type": "message", "channel_type": "im", "subtype": "message_changed", "channel": "D1", "ts": "5"}),
            json!({"type": "reaction_added", "user": "U1"}),
        ] {
            assert_eq!(read_event(&callback(skipped.clone())).unwrap(), None, "{skipped}");
        }
        let broken = callback(
            json!({"type": "message", "channel_type": "im", "text": "no channel", "ts": "6"}),
        );
        assert!(read_event(&broken).unwrap_err().0.contains("channel"));
        // A file shared in a direct message is taken, to be fetched with the bot token.
        let shared = callback(
            json!({"type": "message", "subtype": "file_share", "channel_type": "im",
            "channel": "D1", "user": "U1", "text": "", "ts": "7",
            "files": [{"id": "F1", "name": "notes.txt", "size": 12, "url_private_download": "https://files.example/F1/notes.txt"}]}),
        );
        let taken = read_event(&shared).unwrap().unwrap();
        assert_eq!(taken.attachments.len(), 1);
        assert_eq!(taken.attachments[0].locator, "https://files.example/F1/notes.txt");
    }
}
