use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{Clock, SystemClock};
use clade_model::oauth::{OAuth2, OAuthConfig, OAuthTokens, TokenStore};
use clade_model::openai::OpenAi;
use clade_model::{CredentialProvider, Error, HttpOptions};
use futures::future::BoxFuture;

use super::support::{call, stub, user};

#[derive(Default)]
struct Saved(Mutex<Vec<OAuthTokens>>);

impl TokenStore for Saved {
    fn save<'a>(&'a self, tokens: &'a OAuthTokens) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.0.lock().unwrap().push(tokens.clone());
            Ok(())
        })
    }
}

fn oauth(stub: &clade_stub::Stub, tokens: OAuthTokens, saved: Arc<Saved>) -> Arc<OAuth2> {
    let config = OAuthConfig {
        token_url: format!("{}/oauth/token", stub.url()),
        client_id: "clade-test".into(),
        margin: Duration::from_secs(60),
    };
    Arc::new(OAuth2::new(reqwest::Client::new(), config, tokens, saved, Arc::new(SystemClock)))
}

fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

#[tokio::test]
async fn refreshes_before_expiry_and_persists() {
    let stub = stub().await;
    let saved = Arc::new(Saved::default());
    let tokens = OAuthTokens {
        access_token: "old".into(),
        refresh_token: "refresh-1".into(),
        expires_at: now_ms() + 10_000,
    };
    let credentials = oauth(&stub, tokens, saved.clone());
    let token = credentials.token().await.unwrap();
    assert!(token.starts_with("stub-access-"), "expiring within the margin refreshes: {token}");
    assert_eq!(credentials.token().await.unwrap(), token, "a fresh token is reused");
    let persisted = saved.0.lock().unwrap().clone();
    assert_eq!(persisted.len(), 1);
    assert_eq!(persisted[0].access_token, token);
    assert_eq!(persisted[0].refresh_token, "refresh-1+", "a rotated refresh token is kept");
    assert!(persisted[0].expires_at > now_ms() + 3_000_000);
}

#[tokio::test]
async fn refreshes_once_on_401_then_succeeds() {
    let stub = stub().await;
    let saved = Arc::new(Saved::default());
    // Looks valid for an hour, but the server no longer accepts it.
    let tokens = OAuthTokens {
        access_token: "revoked".into(),
        refresh_token: "refresh-2".into(),
        expires_at: now_ms() + 3_600_000,
    };
    let credentials = oauth(&stub, tokens, saved.clone());
    let mut options = HttpOptions::new(format!("{}/v1", stub.url()));
    options.credentials = Some(credentials.clone() as Arc<dyn CredentialProvider>);
    let provider = OpenAi::new("openai", reqwest::Client::new(), options);
    let response = call(&provider, "stub+oauth", &user("hi")).await.unwrap();
    assert_eq!(response.text, "echo: hi");
    assert_eq!(saved.0.lock().unwrap().len(), 1, "exactly one refresh");
    let auth: Vec<_> = stub.captured().iter().map(|c| c.headers["authorization"].clone()).collect();
    assert_eq!(auth.len(), 2);
    assert_eq!(auth[0], "Bearer revoked");
    assert!(auth[1].starts_with("Bearer stub-access-"));
}

#[tokio::test]
async fn a_refused_refresh_is_a_clear_error() {
    let stub = stub().await;
    let tokens =
        OAuthTokens { access_token: "x".into(), refresh_token: "bogus".into(), expires_at: 0 };
    let credentials = oauth(&stub, tokens, Arc::new(Saved::default()));
    let err = credentials.token().await.unwrap_err();
    assert!(matches!(err, Error::Credentials(_)), "{err:?}");
    assert!(err.to_string().contains("sign in again"), "{err}");
}
