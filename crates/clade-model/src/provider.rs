//! The provider interface every adapter implements, and the credentials adapters use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::Error;
use crate::types::{EventStream, ModelRequest};

/// A model API: given a model name and a request, a stream of events.
pub trait Provider: Send + Sync {
    /// A short label for logs and errors, e.g. `openai` or `anthropic`.
    fn name(&self) -> &str;

    fn stream<'a>(
        &'a self,
        model: &'a str,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<EventStream, Error>>;

    /// What [`Provider::stream`] would send to the model for `request`: the request body, or
    /// the prompt text a model in process reads. `None` where the provider cannot say. For
    /// previews (`clade agents prompt`); never on a call's path.
    fn body(&self, model: &str, request: &ModelRequest) -> Option<String> {
        let _ = (model, request);
        None
    }
}

/// Supplies the secret an adapter authenticates with.
pub trait CredentialProvider: Send + Sync {
    /// The current token or API key, refreshed first if it is about to expire.
    fn token(&self) -> BoxFuture<'_, Result<String, Error>>;

    /// Called once when the provider answered 401 with `token`: refresh if possible. Returns
    /// whether a retry with a new token makes sense.
    fn rejected<'a>(&'a self, token: &'a str) -> BoxFuture<'a, bool> {
        let _ = token;
        Box::pin(async { false })
    }
}

/// A fixed API key (from Clade's encrypted secrets or the environment).
pub struct StaticKey(String);

impl StaticKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKey(***)")
    }
}

impl CredentialProvider for StaticKey {
    fn token(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// Settings shared by the HTTP adapters.
#[derive(Clone)]
pub struct HttpOptions {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub credentials: Option<Arc<dyn CredentialProvider>>,
    /// Extra headers sent with every request (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: HashMap<String, String>,
    /// Use the streaming API (default) or wait for the whole response.
    pub stream: bool,
    /// Longest wait for response headers.
    pub connect_timeout: Duration,
    /// Longest silence between two chunks of a streamed response.
    pub idle_timeout: Duration,
}

impl HttpOptions {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            credentials: None,
            headers: HashMap::new(),
            stream: true,
            connect_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.credentials = Some(Arc::new(StaticKey::new(key)));
        self
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

/// Provider tool names allow only `[a-zA-Z0-9_-]{1,64}`; Clade's are namespaced with dots
/// (`time.now`, `mcp.github.search`). This maps them both ways for one request.
#[derive(Debug, Default, Clone)]
pub(crate) struct ToolNames {
    to_wire: HashMap<String, String>,
    from_wire: HashMap<String, String>,
}

impl ToolNames {
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = Self::default();
        for name in names {
            if map.to_wire.contains_key(name) {
                continue;
            }
            let mut wire: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .take(60)
                .collect();
            if wire.is_empty() {
                wire.push('t');
            }
            let base = wire.clone();
            let mut n = 2;
            while map.from_wire.contains_key(&wire) {
                wire = format!("{base}_{n}");
                n += 1;
            }
            map.to_wire.insert(name.to_owned(), wire.clone());
            map.from_wire.insert(wire, name.to_owned());
        }
        map
    }

    pub(crate) fn wire<'a>(&'a self, name: &'a str) -> &'a str {
        self.to_wire.get(name).map_or(name, String::as_str)
    }

    /// The Clade name of a wire name; an unknown name is passed through so the caller can tell
    /// the model it called a tool that does not exist.
    pub(crate) fn clade(&self, wire: &str) -> String {
        self.from_wire.get(wire).cloned().unwrap_or_else(|| wire.to_owned())
    }
}

/// Sends with credentials, retrying once with refreshed credentials after a 401.
pub(crate) async fn send_authed(
    options: &HttpOptions,
    provider: &str,
    build: impl Fn(Option<&str>) -> reqwest::RequestBuilder,
    classify_body: fn(&str, u16, &str) -> Option<Error>,
) -> Result<reqwest::Response, Error> {
    let Some(credentials) = &options.credentials else {
        return crate::http::send(provider, build(None), classify_body).await;
    };
    let token = credentials.token().await?;
    match crate::http::send(provider, build(Some(&token)), classify_body).await {
        Err(err @ Error::Auth { .. }) => {
            if !credentials.rejected(&token).await {
                return Err(err);
            }
            let fresh = credentials.token().await?;
            crate::http::send(provider, build(Some(&fresh)), classify_body).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_round_trip_and_stay_distinct() {
        let names = ToolNames::new(["time.now", "time_now", "mcp.git hub.search", "time.now"]);
        assert_eq!(names.wire("time.now"), "time_now");
        assert_eq!(names.wire("time_now"), "time_now_2");
        assert_eq!(names.clade("time_now"), "time.now");
        assert_eq!(names.clade("time_now_2"), "time_now");
        assert_eq!(names.clade(names.wire("mcp.git hub.search")), "mcp.git hub.search");
        assert_eq!(names.clade("unknown"), "unknown");
    }
}
