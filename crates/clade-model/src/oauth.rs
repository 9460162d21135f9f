//! Subscription-backed credentials: an OAuth2 access token with a refresh token and expiry,
//! refreshed shortly before it expires and once when the provider answers 401. Refreshed tokens
//! are handed to a [`TokenStore`] (the runtime stores them encrypted).

use std::sync::Arc;
use std::time::Duration;

use clade_core::Clock;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::provider::CredentialProvider;

/// Tokens as persisted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Persists refreshed tokens.
pub trait TokenStore: Send + Sync {
    fn save<'a>(&'a self, tokens: &'a OAuthTokens) -> BoxFuture<'a, Result<(), Error>>;
}

/// Where and how to refresh.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub token_url: String,
    pub client_id: String,
    /// Refresh this long before expiry.
    pub margin: Duration,
}

pub struct OAuth2 {
    client: reqwest::Client,
    config: OAuthConfig,
    tokens: tokio::sync::Mutex<OAuthTokens>,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
}

impl OAuth2 {
    pub fn new(
        client: reqwest::Client,
        config: OAuthConfig,
        tokens: OAuthTokens,
        store: Arc<dyn TokenStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { client, config, tokens: tokio::sync::Mutex::new(tokens), store, clock }
    }

    async fn refresh(&self, tokens: &mut OAuthTokens) -> Result<(), Error> {
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh_token),
            ("client_id", &self.config.client_id),
        ]);
        let response = self
            .client
            .post(&self.config.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                Error::Credentials(format!(
                    "token refresh at {} failed: {e}",
                    self.config.token_url
                ))
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Credentials(format!(
                "token refresh was refused (HTTP {}): {}; sign in again to get a new refresh token",
                status.as_u16(),
                text.chars().take(200).collect::<String>()
            )));
        }
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            #[serde(default)]
            refresh_token: Option<String>,
            #[serde(default)]
            expires_in: Option<i64>,
        }
        let answer: Answer = serde_json::from_str(&text).map_err(|e| {
            Error::Credentials(format!("token endpoint answered something unexpected: {e}"))
        })?;
        tokens.access_token = answer.access_token;
        if let Some(refresh) = answer.refresh_token {
            tokens.refresh_token = refresh;
        }
        tokens.expires_at =
            self.clock.now().as_millis() + answer.expires_in.unwrap_or(3600).saturating_mul(1000);
        self.store.save(tokens).await?;
        tracing::info!(expires_at = tokens.expires_at, "refreshed OAuth access token");
        Ok(())
    }
}

impl CredentialProvider for OAuth2 {
    fn token(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move {
            let mut tokens = self.tokens.lock().await;
            let margin = i64::try_from(self.config.margin.as_millis()).unwrap_or(i64::MAX);
            if self.clock.now().as_millis().saturating_add(margin) >= tokens.expires_at {
                self.refresh(&mut tokens).await?;
            }
            Ok(tokens.access_token.clone())
        })
    }

    fn rejected<'a>(&'a self, token: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut tokens = self.tokens.lock().await;
            if tokens.access_token != token {
                return true; // Someone else refreshed meanwhile; retry with theirs.
            }
            match self.refresh(&mut tokens).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "refresh after 401 failed");
                    false
                }
            }
        })
    }
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_encodes() {
        assert_eq!(super::form(&[("a b", "x&y=z/é")]), "a+b=x%26y%3Dz%2F%C3%A9");
    }
}
