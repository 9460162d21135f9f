//! Inbound webhooks: `POST /hooks/{tenant}/{name}`, declared per tenant in `clade.yaml`
//! (`tenants.<tenant>.hooks.<name>`). No token: a request is taken when its signature verifies
//! under the hook's secret (Standard Webhooks, or Clade's own `X-Clade-Signature`); its body
//! becomes an event of the hook's agent, once: what names the request (the signed
//! `webhook-id`, or for Clade's scheme, whose signature covers the body alone, the body's
//! digest) is the event's idempotency key, so a redelivery or a replay is answered as the first
//! and never runs a second turn. A hook that does not exist and a request that does not verify
//! answer alike (401 `invalid_signature`), so a caller without the secret learns nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use clade_runtime::Envelope;
use clade_runtime::signing::{StandardKey, verify_clade};
use clade_store::Source;
use sha2::Digest as _;

use crate::AppState;
use crate::error::{ApiError, Code};

/// The platform of every event hooks send.
pub const PLATFORM: &str = "hook";
/// Characters of a body, as `POST /v1/events` takes for a text.
const MAX_TEXT: usize = 64 * 1024;

/// How a hook's requests are signed, with its secret.
#[derive(Clone, Debug)]
pub enum HookKey {
    Standard(StandardKey),
    Clade(Vec<u8>),
}

/// One hook, its secret resolved.
#[derive(Clone, Debug)]
pub struct Hook {
    pub agent: String,
    pub key: HookKey,
    pub wait: bool,
    /// A JSON pointer into the body naming the session.
    pub session: Option<String>,
}

impl Hook {
    /// A hook of `config` signed with `secret`; `Err` if the secret cannot be a key.
    pub fn new(
        config: &clade_config::HookConfig,
        secret: &[u8],
    ) -> Result<Self, clade_runtime::signing::SignatureError> {
        let key = match config.scheme {
            clade_config::HookScheme::Standard => HookKey::Standard(StandardKey::new(secret)?),
            clade_config::HookScheme::Clade if secret.is_empty() => {
                return Err(clade_runtime::signing::SignatureError::BadSecret);
            }
            clade_config::HookScheme::Clade => HookKey::Clade(secret.to_vec()),
        };
        Ok(Self {
            agent: config.agent.clone(),
            key,
            wait: config.mode == clade_config::HookMode::Wait,
            session: config.session.clone(),
        })
    }
}

/// Every tenant's hooks, by (tenant, name); replaced whole when the configuration changes.
#[derive(Default)]
pub struct Hooks(RwLock<Arc<HashMap<(String, String), Hook>>>);

impl Hooks {
    pub fn new(hooks: HashMap<(String, String), Hook>) -> Self {
        Self(RwLock::new(Arc::new(hooks)))
    }

    pub fn reload(&self, hooks: HashMap<(String, String), Hook>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hooks);
    }

    fn get(&self, tenant: &str, name: &str) -> Option<Hook> {
        let hooks = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        hooks.get(&(tenant.to_owned(), name.to_owned())).cloned()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /hooks/{tenant}/{name}`.
pub(crate) async fn receive(
    State(state): State<AppState>,
    Path((tenant_name, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A hook that does not exist and a signature that does not verify answer alike, in about
    // the same time: a caller without the secret learns neither which tenants nor which hooks
    // exist. Which check failed goes to the log.
    let refused = |why: &dyn std::fmt::Display| {
        tracing::info!(tenant = %tenant_name, hook = %name, reason = %why, "hook request refused");
        ApiError::new(
            Code::InvalidSignature,
            "the request is not signed by this hook's secret, or there is no such hook: sign the exact body with the secret in the hook's secret_env, under its scheme, and send it at once (the gateway's log says which check failed)",
        )
    };
    let now = state.store.now().as_millis().div_euclid(1000);
    let Some(hook) = state.hooks.get(&tenant_name, &name) else {
        let _ = clade_runtime::signing::clade_signature(b"no such hook", &body);
        return Err(refused(&"no such hook"));
    };
    let (verified, key) = match &hook.key {
        HookKey::Standard(key) => {
            let id = header(&headers, "webhook-id");
            let verified = key.verify(
                id,
                header(&headers, "webhook-timestamp"),
                header(&headers, "webhook-signature"),
                &body,
                now,
            );
            (verified, id.map(str::to_owned))
        }
        // The signature covers the body alone, so no header may name the request: a replay
        // with another key would run again. The body names it; a repeated body is a repeat.
        HookKey::Clade(secret) => (
            verify_clade(secret, &body, header(&headers, "x-clade-signature")),
            Some(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))),
        ),
    };
    if let Err(why) = verified {
        return Err(refused(&why));
    }
    // Only a caller holding the secret gets here: the tenant is read now, not before.
    let tenant = match state.store.tenants().named(&tenant_name).await {
        Ok(tenant) => tenant,
        Err(clade_store::Error::TenantNotFound(_)) => {
            return Err(refused(&"the tenant does not exist"));
        }
        Err(err) => return Err(err.into()),
    };
    state.limits.take_event(&tenant)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(Code::InvalidRequest, "the body is not UTF-8 text: a hook takes text or JSON")
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::new(Code::InvalidRequest, "the body is empty"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "the body is longer than {MAX_TEXT} characters, as much as an agent is sent at once"
            ),
        ));
    }
    state.limits.admit_bytes(&state.store, &tenant, text.len() as u64).await?;
    let key = match key {
        Some(id) => {
            let key = format!("hook:{name}:{id}");
            crate::events::check_field("the request's id (webhook-id or Idempotency-Key)", &key)?;
            Some(key)
        }
        None => None,
    };
    let channel = hook
        .session
        .as_deref()
        .and_then(|pointer| {
            let body: serde_json::Value = serde_json::from_str(text).ok()?;
            body.pointer(pointer)?.as_str().map(str::to_owned)
        })
        .filter(|channel| crate::events::check_field("session", channel).is_ok())
        .unwrap_or_else(|| name.clone());
    let envelope = Envelope {
        tenant,
        agent: Some(hook.agent.clone()),
        text: text.to_owned(),
        source: Source { platform: PLATFORM.into(), channel, actor: name.clone() },
        idempotency_key: key,
    };
    crate::events::respond(&state, envelope, hook.wait).await
}
