//! Inbound webhooks: `POST /hooks/{tenant}/{name}`, declared per tenant in `clade.yaml`
//! (`tenants.<tenant>.hooks.<name>`). No token: a request is taken when its signature verifies
//! under the hook's secret (Standard Webhooks, or Clade's own `X-Clade-Signature`); its body
//! becomes an event of the hook's agent, once: the request's id (`webhook-id`, or
//! `Idempotency-Key`) is the event's idempotency key, so a redelivery is answered as the first
//! and never runs a second turn. A hook that does not exist and one that does not verify answer
//! alike to a caller without the secret (404 and 401 say no more than that).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use clade_runtime::Envelope;
use clade_runtime::signing::{StandardKey, verify_clade};
use clade_store::Source;

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
    pub fn new(config: &clade_config::HookConfig, secret: &[u8]) -> Result<Self, String> {
        let key = match config.scheme {
            clade_config::HookScheme::Standard => {
                HookKey::Standard(StandardKey::new(secret).map_err(|err| err.to_string())?)
            }
            clade_config::HookScheme::Clade if secret.is_empty() => {
                return Err("the secret is empty".into());
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
    let not_found = || {
        ApiError::new(
            Code::HookNotFound,
            format!(
                "no hook {name:?} for tenant {tenant_name:?}: hooks are declared in clade.yaml under tenants.<tenant>.hooks"
            ),
        )
    };
    let hook = state.hooks.get(&tenant_name, &name).ok_or_else(not_found)?;
    let now = state.store.now().as_millis().div_euclid(1000);
    let (verified, id) = match &hook.key {
        HookKey::Standard(key) => {
            let id = header(&headers, "webhook-id");
            let verified = key.verify(
                id,
                header(&headers, "webhook-timestamp"),
                header(&headers, "webhook-signature"),
                &body,
                now,
            );
            (verified, id)
        }
        HookKey::Clade(secret) => (
            verify_clade(secret, &body, header(&headers, "x-clade-signature")),
            header(&headers, "idempotency-key").or_else(|| header(&headers, "x-clade-event-id")),
        ),
    };
    if let Err(why) = verified {
        tracing::info!(tenant = %tenant_name, hook = %name, reason = %why, "hook request refused");
        return Err(ApiError::new(
            Code::InvalidSignature,
            format!("the request's signature does not verify: {why}"),
        ));
    }
    // Only a caller holding the secret gets here: the tenant is read now, not before.
    let tenant = match state.store.tenant(&tenant_name).await {
        Ok(tenant) => tenant,
        Err(clade_store::Error::TenantNotFound(_)) => return Err(not_found()),
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
    let key = match id {
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
        source: Source { platform: PLATFORM.to_owned(), channel, actor: name.clone() },
        idempotency_key: key,
    };
    crate::events::respond(&state, envelope, hook.wait).await
}
