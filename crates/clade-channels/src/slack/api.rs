//! Slack's Web API as Slack documents it (<https://api.slack.com/web>): `POST <api>/<method>`
//! with a bearer token and a JSON body, answered `{"ok": true, …}` or `{"ok": false, "error":
//! "<code>"}`; a rate-limited call is HTTP 429 with `Retry-After` in seconds.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::attachments::Upload;
use crate::channel::{Body, ChatApi, Endpoint, PlatformError, wait_of};

/// Slack's Web API.
pub const PUBLIC_API: &str = "https://slack.com/api";

/// The longest text sent as one message. Slack takes up to 40,000 characters but advises
/// keeping a message's text under 4,000, which is also what people read comfortably.
pub const MESSAGE_LIMIT: usize = 4000;

/// An app's client of the Web API.
#[derive(Clone, Debug)]
pub struct Api {
    endpoint: Endpoint,
}

impl Api {
    pub fn new(http: reqwest::Client, api_url: &str, token: &str) -> Self {
        Self { endpoint: Endpoint::new(http, api_url, token) }
    }

    /// Calls `method` with `token` (the bot's unless given).
    pub async fn call(
        &self,
        method: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, PlatformError> {
        self.call_with(method, Body::Json(body), token).await
    }

    /// [`Api::call`] with a body of any kind (a form, for the methods that take no JSON).
    async fn call_with(
        &self,
        method: &str,
        body: Body<'_>,
        token: Option<&str>,
    ) -> Result<Value, PlatformError> {
        let authorization = format!("Bearer {}", token.unwrap_or(self.endpoint.token()));
        let path = format!("/{method}");
        let timeout = Duration::from_secs(30);
        let answer = self
            .endpoint
            .exchange_body(reqwest::Method::POST, &path, &authorization, Some(body), timeout)
            .await?;
        if answer.status == 429 {
            return Err(PlatformError::RateLimited {
                retry_after: wait_of(answer.retry_after.unwrap_or(1.0)),
                description: format!("{method} is rate limited"),
            });
        }
        if answer.status >= 500 {
            return Err(PlatformError::Unavailable(format!("{method}: HTTP {}", answer.status)));
        }
        if answer.body["ok"] == true {
            return Ok(answer.body);
        }
        match answer.body["error"].as_str() {
            Some(code) => Err(classify(method, code)),
            None => Err(PlatformError::Malformed(format!(
                "{method}: HTTP {} without the Web API's answer",
                answer.status
            ))),
        }
    }

    /// Posts `text` in `channel` (in `thread` if given); the message's `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<String, PlatformError> {
        let mut body = json!({"channel": channel, "text": text});
        if let Some(thread) = thread {
            body["thread_ts"] = json!(thread);
        }
        let answer = self.call("chat.postMessage", &body, None).await?;
        answer["ts"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PlatformError::Malformed("chat.postMessage gave no ts".into()))
    }

    /// Replaces the text of the app's message `ts` in `channel`.
    pub async fn update(&self, channel: &str, ts: &str, text: &str) -> Result<(), PlatformError> {
        let body = json!({"channel": channel, "ts": ts, "text": text});
        self.call("chat.update", &body, None).await.map(drop)
    }

    /// Shares `file` in `channel` (in `thread` if given), as Slack's upload works: an upload
    /// URL from `files.getUploadURLExternal` (a form: that method takes no JSON), the bytes
    /// posted to it, then `files.completeUploadExternal` into the chat.
    pub async fn upload(
        &self,
        channel: &str,
        thread: Option<&str>,
        file: &Upload,
    ) -> Result<(), PlatformError> {
        let name = crate::attachments::safe_name(&file.name);
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("filename", &name)
            .append_pair("length", &file.bytes.len().to_string())
            .finish();
        let body = Body::Raw {
            content_type: "application/x-www-form-urlencoded".to_owned(),
            bytes: form.into_bytes(),
        };
        let answer = self.call_with("files.getUploadURLExternal", body, None).await?;
        let (Some(url), Some(id)) = (answer["upload_url"].as_str(), answer["file_id"].as_str())
        else {
            return Err(PlatformError::Malformed(
                "files.getUploadURLExternal gave no upload_url or file_id".into(),
            ));
        };
        // Slack's own signed URL: no token goes with it.
        let response = self
            .endpoint
            .http()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(file.bytes.clone())
            .timeout(crate::channel::UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| PlatformError::Unavailable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        match status {
            200..300 => {}
            429 => {
                return Err(PlatformError::RateLimited {
                    retry_after: Duration::from_secs(1),
                    description: "the file upload is rate limited".into(),
                });
            }
            500.. => {
                return Err(PlatformError::Unavailable(format!("the file upload: HTTP {status}")));
            }
            _ => return Err(PlatformError::Refused(format!("the file upload: HTTP {status}"))),
        }
        let mut body = json!({"files": [{"id": id, "title": name}], "channel_id": channel});
        if let Some(thread) = thread {
            body["thread_ts"] = json!(thread);
        }
        if let Some(caption) = &file.caption {
            body["initial_comment"] = json!(caption);
        }
        self.call("files.completeUploadExternal", &body, None).await.map(drop)
    }

    /// A Socket Mode WebSocket URL, asked for with the app-level token.
    pub async fn open_connection(&self, app_token: &str) -> Result<String, PlatformError> {
        let answer = self.call("apps.connections.open", &json!({}), Some(app_token)).await?;
        answer["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PlatformError::Malformed("apps.connections.open gave no url".into()))
    }
}

/// What an `error` code means for the caller.
fn classify(method: &str, code: &str) -> PlatformError {
    let said = format!("{method}: {code}");
    match code {
        "ratelimited" => {
            PlatformError::RateLimited { retry_after: Duration::from_secs(1), description: said }
        }
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired"
        | "no_permission" | "missing_scope" => PlatformError::Unauthorized(said),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            PlatformError::Unavailable(said)
        }
        _ => PlatformError::Refused(said),
    }
}

/// A chat as the channel names it: `<channel id>`, or `<channel id>/<thread ts>`.
pub fn chat_text(channel: &str, thread: Option<&str>) -> String {
    match thread {
        Some(thread) => format!("{channel}/{thread}"),
        None => channel.to_owned(),
    }
}

fn parse_chat(chat: &str) -> (&str, Option<&str>) {
    match chat.split_once('/') {
        Some((channel, thread)) => (channel, Some(thread)),
        None => (chat, None),
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
        let (channel, thread) = parse_chat(chat);
        Box::pin(self.post_message(channel, thread, text))
    }

    fn edit<'a>(
        &'a self,
        chat: &'a str,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), PlatformError>> {
        let (channel, _) = parse_chat(chat);
        Box::pin(self.update(channel, message, text))
    }

    /// Slack shows no typing for apps outside its legacy RTM API: nothing to do.
    fn typing<'a>(&'a self, _chat: &'a str) -> BoxFuture<'a, Result<(), PlatformError>> {
        Box::pin(async { Ok(()) })
    }

    /// From the file's `url_private_download`, with the bot token (the `files:read` scope).
    fn download<'a>(
        &'a self,
        attachment: &'a crate::attachments::Attachment,
        max: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, PlatformError>> {
        let request =
            self.endpoint.http().get(&attachment.locator).bearer_auth(self.endpoint.token());
        Box::pin(crate::attachments::fetch_capped(request, max))
    }

    /// Slack takes files up to 1 GB.
    fn max_upload(&self) -> u64 {
        1024 * 1024 * 1024
    }

    /// Needs the `files:write` scope.
    fn send_file<'a>(
        &'a self,
        chat: &'a str,
        file: &'a Upload,
    ) -> BoxFuture<'a, Result<(), PlatformError>> {
        Box::pin(async move {
            let (channel, thread) = parse_chat(chat);
            self.upload(channel, thread, file).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_say_whether_to_retry() {
        assert!(matches!(classify("m", "ratelimited"), PlatformError::RateLimited { .. }));
        assert!(matches!(classify("m", "invalid_auth"), PlatformError::Unauthorized(_)));
        assert!(classify("m", "internal_error").is_transient());
        assert!(!classify("m", "channel_not_found").is_transient());
        assert_eq!(parse_chat(&chat_text("C1", Some("171.0001"))), ("C1", Some("171.0001")));
        assert_eq!(parse_chat("D9"), ("D9", None));
    }
}
