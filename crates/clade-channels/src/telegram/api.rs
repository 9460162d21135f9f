//! The Telegram Bot API's wire format, as documented (<https://core.telegram.org/bots/api>):
//! every method is `POST <api>/bot<token>/<method>` with a JSON body, answered by
//! `{"ok": true, "result": …}` or `{"ok": false, "error_code", "description", "parameters"}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// The public Bot API.
pub const PUBLIC_API: &str = "https://api.telegram.org";

/// A message's longest text, in UTF-16 code units.
pub const MESSAGE_LIMIT: usize = 4096;

pub use crate::attachments::Attachment;
pub use crate::channel::PlatformError as ApiError;

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// One incoming update. Only the fields Clade reads; the rest are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub edited_message: Option<Message>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default)]
    pub from: Option<User>,
    pub chat: Chat,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    /// Forum topics: replies go to the same thread.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// The kinds of attachment Clade names when a message has no text.
    #[serde(default)]
    pub photo: Option<Value>,
    #[serde(default)]
    pub document: Option<Value>,
    #[serde(default)]
    pub sticker: Option<Value>,
    #[serde(default)]
    pub voice: Option<Value>,
    #[serde(default)]
    pub video: Option<Value>,
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub location: Option<Value>,
}

impl Message {
    /// What the person wrote (empty when they sent only files), or what they sent when it has
    /// neither text nor a file.
    pub fn content(&self) -> Option<String> {
        if let Some(text) = self.text.as_deref().or(self.caption.as_deref()) {
            return Some(text.to_owned());
        }
        if !self.attachments().is_empty() {
            return Some(String::new());
        }
        let kinds = [("a sticker", &self.sticker), ("a location", &self.location)];
        let (what, _) = kinds.into_iter().find(|(_, field)| field.is_some())?;
        Some(format!("[sent {what} without text, which this channel does not pass on]"))
    }

    /// The files it carries: its largest photo, a document, a voice message, a video or an
    /// audio file, each by its `file_id`.
    pub fn attachments(&self) -> Vec<Attachment> {
        let of = |file: &Value, default: &str| {
            Some(Attachment {
                name: file["file_name"].as_str().unwrap_or(default).to_owned(),
                size: file["file_size"].as_u64(),
                locator: file["file_id"].as_str()?.to_owned(),
            })
        };
        let mut files = Vec::new();
        // Telegram sends a photo in several sizes, the largest last.
        if let Some(largest) = self.photo.as_ref().and_then(|sizes| sizes.as_array()?.last()) {
            files.extend(of(largest, "photo.jpg"));
        }
        for (file, default) in [
            (&self.document, "document"),
            (&self.voice, "voice.ogg"),
            (&self.video, "video.mp4"),
            (&self.audio, "audio"),
        ] {
            if let Some(file) = file {
                files.extend(of(file, default));
            }
        }
        files
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    /// How the others in a group know them: first name and `@username`, as far as known.
    pub fn named(&self) -> String {
        match (self.first_name.as_deref(), self.username.as_deref()) {
            (Some(first), Some(user)) => format!("{first} (@{user})"),
            (Some(first), None) => first.to_owned(),
            (None, Some(user)) => format!("@{user}"),
            (None, None) => format!("user {}", self.id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl Chat {
    /// Whether several people talk in it.
    pub fn is_group(&self) -> bool {
        matches!(self.kind.as_deref(), Some("group" | "supergroup"))
    }
}

/// A bot's client of the Bot API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `<api>/bot<token>/`: holds the token, so never logged.
    base: String,
    /// `<api>/file/bot<token>/`, where files are fetched from.
    files: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(http: reqwest::Client, api_url: &str, token: &str) -> Self {
        let api = api_url.trim_end_matches('/');
        Self { http, base: format!("{api}/bot{token}/"), files: format!("{api}/file/bot{token}/") }
    }

    /// Calls `method`; `timeout` bounds the whole exchange.
    pub async fn call(
        &self,
        method: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        self.post(method, |request| request.json(body), timeout).await
    }

    /// Calls `method` with the body `build` gives the request.
    async fn post(
        &self,
        method: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let response = build(self.http.post(format!("{}{method}", self.base)))
            .timeout(timeout)
            .send()
            .await
            // reqwest's error names the URL, which holds the token: keep only its kind.
            .map_err(|e| ApiError::Unavailable(describe(e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ApiError::Unavailable(describe(e)))?;
        let envelope: Envelope = match serde_json::from_slice(&bytes) {
            Ok(envelope) => envelope,
            Err(_) if status.is_server_error() => {
                return Err(ApiError::Unavailable(format!("HTTP {}", status.as_u16())));
            }
            Err(err) => {
                return Err(ApiError::Malformed(format!(
                    "HTTP {} with a body that is not the Bot API's JSON ({err})",
                    status.as_u16()
                )));
            }
        };
        if envelope.ok {
            return Ok(envelope.result);
        }
        let code = envelope.error_code.unwrap_or(status.as_u16());
        let mut description = envelope.description.unwrap_or_else(|| format!("error {code}"));
        let parameters = envelope.parameters;
        if let Some(chat) = parameters.as_ref().and_then(|p| p.migrate_to_chat_id) {
            description.push_str(&format!(" (the group is now the supergroup {chat})"));
        }
        Err(match code {
            429 => ApiError::RateLimited {
                retry_after: Duration::from_secs(
                    parameters.and_then(|p| p.retry_after).unwrap_or(1).clamp(1, 3600),
                ),
                description,
            },
            409 => ApiError::Conflict(format!(
                "{description} (another process polls this bot, or a webhook is set: stop the other poller, or use mode: webhook)"
            )),
            401 | 404 => ApiError::Unauthorized(description),
            500.. => ApiError::Unavailable(description),
            _ => ApiError::Refused(description),
        })
    }

    /// Waits up to `wait` for updates after `offset` (confirming those before it).
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        wait: Duration,
    ) -> Result<Vec<Value>, ApiError> {
        let mut body = json!({
            "timeout": wait.as_secs(),
            "allowed_updates": ["message", "edited_message"],
        });
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        // The long poll's own wait, and room for the answer to come back.
        let result = self.call("getUpdates", &body, wait + Duration::from_secs(10)).await?;
        match result {
            Value::Array(updates) => Ok(updates),
            other => Err(ApiError::Malformed(format!("getUpdates gave {other} for a list"))),
        }
    }

    /// Sends `text` to `chat` (in its thread, if any); the new message's id.
    pub async fn send_message(
        &self,
        chat: i64,
        thread: Option<i64>,
        text: &str,
    ) -> Result<i64, ApiError> {
        let mut body = json!({"chat_id": chat, "text": text});
        if let Some(thread) = thread {
            body["message_thread_id"] = json!(thread);
        }
        let sent = self.call("sendMessage", &body, CALL_TIMEOUT).await?;
        sent["message_id"]
            .as_i64()
            .ok_or_else(|| ApiError::Malformed("sendMessage gave no message_id".into()))
    }

    /// Replaces the text of the bot's message `message` in `chat`. Text equal to what it
    /// holds already is not an error.
    pub async fn edit_message(&self, chat: i64, message: i64, text: &str) -> Result<(), ApiError> {
        let body = json!({"chat_id": chat, "message_id": message, "text": text});
        match self.call("editMessageText", &body, CALL_TIMEOUT).await {
            Err(ApiError::Refused(why)) if why.contains("message is not modified") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Shows "typing…" in `chat` for a few seconds.
    pub async fn typing(&self, chat: i64, thread: Option<i64>) -> Result<(), ApiError> {
        let mut body = json!({"chat_id": chat, "action": "typing"});
        if let Some(thread) = thread {
            body["message_thread_id"] = json!(thread);
        }
        self.call("sendChatAction", &body, CALL_TIMEOUT).await.map(drop)
    }

    /// Sends `file` to `chat` (in its thread, if any) as a document (`sendDocument`, a
    /// multipart upload).
    pub async fn send_document(
        &self,
        chat: i64,
        thread: Option<i64>,
        file: &crate::attachments::Upload,
    ) -> Result<(), ApiError> {
        let mut fields = vec![("chat_id", chat.to_string())];
        if let Some(thread) = thread {
            fields.push(("message_thread_id", thread.to_string()));
        }
        if let Some(caption) = &file.caption {
            fields.push(("caption", caption.clone()));
        }
        let (content_type, body) = crate::attachments::multipart(&fields, "document", file);
        let build = |request: reqwest::RequestBuilder| {
            request.header(reqwest::header::CONTENT_TYPE, content_type).body(body)
        };
        self.post("sendDocument", build, crate::channel::UPLOAD_TIMEOUT).await.map(drop)
    }

    /// Registers `url` for updates, which Telegram posts with `secret` in a header.
    pub async fn set_webhook(&self, url: &str, secret: &str) -> Result<(), ApiError> {
        let body = json!({
            "url": url,
            "secret_token": secret,
            "allowed_updates": ["message", "edited_message"],
        });
        self.call("setWebhook", &body, CALL_TIMEOUT).await.map(drop)
    }
}

/// A chat as the channel names it: `<chat id>`, or `<chat id>/<thread>` in a forum topic.
pub fn chat_text(chat: i64, thread: Option<i64>) -> String {
    match thread {
        Some(thread) => format!("{chat}/{thread}"),
        None => chat.to_string(),
    }
}

fn parse_chat(chat: &str) -> Result<(i64, Option<i64>), ApiError> {
    let bad = || ApiError::Refused(format!("{chat:?} is not a Telegram chat"));
    match chat.split_once('/') {
        Some((id, thread)) => {
            Ok((id.parse().map_err(|_| bad())?, Some(thread.parse().map_err(|_| bad())?)))
        }
        None => Ok((chat.parse().map_err(|_| bad())?, None)),
    }
}

impl crate::channel::ChatApi for Api {
    fn platform(&self) -> &'static str {
        super::PLATFORM
    }

    fn limit(&self) -> usize {
        MESSAGE_LIMIT
    }

    fn send<'a>(
        &'a self,
        chat: &'a str,
        text: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move {
            let (id, thread) = parse_chat(chat)?;
            self.send_message(id, thread, text).await.map(|message| message.to_string())
        })
    }

    fn edit<'a>(
        &'a self,
        chat: &'a str,
        message: &'a str,
        text: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (id, _) = parse_chat(chat)?;
            let message = message
                .parse()
                .map_err(|_| ApiError::Refused(format!("{message:?} is not a message id")))?;
            self.edit_message(id, message, text).await
        })
    }

    fn typing<'a>(&'a self, chat: &'a str) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (id, thread) = parse_chat(chat)?;
            Api::typing(self, id, thread).await
        })
    }

    /// What a bot may send through the Bot API.
    fn max_upload(&self) -> u64 {
        50 * 1024 * 1024
    }

    fn send_file<'a>(
        &'a self,
        chat: &'a str,
        file: &'a crate::attachments::Upload,
    ) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (id, thread) = parse_chat(chat)?;
            self.send_document(id, thread, file).await
        })
    }

    /// `getFile` for the file's path, then the file from `<api>/file/bot<token>/<path>`.
    fn download<'a>(
        &'a self,
        attachment: &'a Attachment,
        max: u64,
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, ApiError>> {
        Box::pin(async move {
            let body = json!({"file_id": attachment.locator});
            let file = self.call("getFile", &body, CALL_TIMEOUT).await?;
            let size = file["file_size"].as_u64();
            if size.is_some_and(|size| size > max) {
                return Err(crate::attachments::too_large(size, max));
            }
            let path = file["file_path"]
                .as_str()
                .ok_or_else(|| ApiError::Malformed("getFile gave no file_path".into()))?;
            let request = self.http.get(format!("{}{path}", self.files));
            // reqwest's errors would name the URL, which holds the token.
            crate::attachments::fetch_capped(request, max).await.map_err(|err| match err {
                ApiError::Unavailable(_) => {
                    ApiError::Unavailable("the file could not be fetched".into())
                }
                other => other,
            })
        })
    }
}

/// How long a call other than a long poll may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    if err.is_timeout() {
        "no answer in time".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        err.to_string()
    }
}

/// Reads one update; an error names what is missing or wrong.
pub fn parse_update(raw: &Value) -> Result<Update, crate::channel::Malformed> {
    serde_json::from_value(raw.clone())
        .map_err(|err| crate::channel::Malformed(format!("not a Telegram update: {err}")))
}
