//! Discord's REST API as Discord documents it (<https://discord.com/developers/docs>): JSON
//! over `https://discord.com/api/v10`, authorised `Bot <token>`; a rate-limited call is HTTP
//! 429 with `retry_after` (seconds, fractional) in its body and `Retry-After` in its headers.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::attachments::Upload;
use crate::channel::{Body, ChatApi, Endpoint, PlatformError, wait_of};

/// Discord's REST API, version 10.
pub const PUBLIC_API: &str = "https://discord.com/api/v10";

/// A message's longest content, in characters.
pub const MESSAGE_LIMIT: usize = 2000;

/// A bot's client of the REST API.
#[derive(Clone, Debug)]
pub struct Api {
    endpoint: Endpoint,
}

impl Api {
    pub fn new(http: reqwest::Client, api_url: &str, token: &str) -> Self {
        Self { endpoint: Endpoint::new(http, api_url, token) }
    }

    pub(crate) fn token(&self) -> &str {
        self.endpoint.token()
    }

    /// `method path` with an optional JSON body; the answer's JSON (`null` for 204).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, PlatformError> {
        let timeout = std::time::Duration::from_secs(30);
        self.call_with(method, path, body.map(Body::Json), timeout).await
    }

    /// [`Api::call`] with a body of any kind (a multipart upload).
    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body<'_>>,
        timeout: std::time::Duration,
    ) -> Result<Value, PlatformError> {
        let authorization = format!("Bot {}", self.endpoint.token());
        let answer =
            self.endpoint.exchange_body(method, path, &authorization, body, timeout).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let message = answer.body["message"].as_str().unwrap_or("no message").to_owned();
        let said = format!("{path}: HTTP {} {message}", answer.status);
        Err(match answer.status {
            429 => PlatformError::RateLimited {
                retry_after: wait_of(
                    answer.body["retry_after"].as_f64().or(answer.retry_after).unwrap_or(1.0),
                ),
                description: said,
            },
            401 => PlatformError::Unauthorized(said),
            500.. => PlatformError::Unavailable(said),
            _ => PlatformError::Refused(said),
        })
    }

    /// Up to `limit` (at most 100) messages of `channel` after message `after`, as Discord
    /// lists them (newest first).
    pub async fn messages_after(
        &self,
        channel: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Value>, PlatformError> {
        let path = format!("/channels/{channel}/messages?after={after}&limit={}", limit.min(100));
        let answer = self.call(reqwest::Method::GET, &path, None).await?;
        match answer {
            Value::Array(messages) => Ok(messages),
            _ => Err(PlatformError::Malformed(format!("{path}: not a list of messages"))),
        }
    }

    /// The gateway's WebSocket URL.
    pub async fn gateway_url(&self) -> Result<String, PlatformError> {
        let answer = self.call(reqwest::Method::GET, "/gateway/bot", None).await?;
        answer["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PlatformError::Malformed("/gateway/bot gave no url".into()))
    }
}

impl ChatApi for Api {
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
    ) -> BoxFuture<'a, Result<String, PlatformError>> {
        Box::pin(async move {
            let body = json!({ "content": text, "allowed_mentions": { "parse": [] } });
            let path = format!("/channels/{chat}/messages");
            let sent = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
            sent["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| PlatformError::Malformed("a message created without an id".into()))
        })
    }

    fn edit<'a>(
        &'a self,
        chat: &'a str,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), PlatformError>> {
        Box::pin(async move {
            let body = json!({ "content": text });
            let path = format!("/channels/{chat}/messages/{message}");
            self.call(reqwest::Method::PATCH, &path, Some(&body)).await.map(drop)
        })
    }

    fn typing<'a>(&'a self, chat: &'a str) -> BoxFuture<'a, Result<(), PlatformError>> {
        Box::pin(async move {
            let path = format!("/channels/{chat}/typing");
            self.call(reqwest::Method::POST, &path, None).await.map(drop)
        })
    }

    /// From the attachment's CDN URL, which needs no token.
    fn download<'a>(
        &'a self,
        attachment: &'a crate::attachments::Attachment,
        max: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, PlatformError>> {
        let request = self.endpoint.http().get(&attachment.locator);
        Box::pin(crate::attachments::fetch_capped(request, max))
    }

    /// What a bot may attach without a boosted server.
    fn max_upload(&self) -> u64 {
        10 * 1024 * 1024
    }

    /// A message with the file attached (`payload_json` and `files[0]`), its caption as the
    /// content, mentioning no one.
    fn send_file<'a>(
        &'a self,
        chat: &'a str,
        file: &'a Upload,
    ) -> BoxFuture<'a, Result<(), PlatformError>> {
        Box::pin(async move {
            let name = crate::attachments::safe_name(&file.name);
            let payload = json!({
                "content": file.caption.clone().unwrap_or_default(),
                "allowed_mentions": { "parse": [] },
                "attachments": [{ "id": 0, "filename": name }],
            });
            let fields = [("payload_json", payload.to_string())];
            let (content_type, bytes) = crate::attachments::multipart(&fields, "files[0]", file);
            let path = format!("/channels/{chat}/messages");
            let body = Some(Body::Raw { content_type, bytes });
            let timeout = crate::channel::UPLOAD_TIMEOUT;
            self.call_with(reqwest::Method::POST, &path, body, timeout).await.map(drop)
        })
    }
}
