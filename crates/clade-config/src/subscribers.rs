//! Webhooks that receive lifecycle events (`subscribers`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// A webhook subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    pub name: String,
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: String,
    /// Event types to deliver; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    /// The tenants whose events it receives, by name; `*` for every tenant. Default: the
    /// default tenant only, so another tenant's conversations reach a subscriber only when the
    /// operator names that tenant.
    #[serde(default = "default_tenant_only")]
    pub tenants: Vec<String>,
    /// Attempts before an event is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Seconds to wait for the subscriber to answer.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
}

fn default_tenant_only() -> Vec<String> {
    vec![clade_core::Tenant::DEFAULT_NAME.to_owned()]
}

pub(crate) fn default_attempts() -> u32 {
    8
}
fn default_webhook_timeout() -> u64 {
    10
}

impl Config {
    /// Webhook subscribers' URLs, secrets and event kinds.
    pub(crate) fn check_subscribers(&self) -> Result<(), Invalid> {
        // Only what enters the outbox reaches a webhook: not live-only deltas or progress.
        let delivered = || clade_core::EventKind::ALL.iter().filter(|k| !k.is_live_only());
        for (index, subscriber) in self.subscribers.iter().enumerate() {
            for tenant in &subscriber.tenants {
                if tenant != "*" && clade_core::Handle::parse(tenant).is_err() {
                    return fail(format!(
                        "subscribers[{index}].tenants: {tenant:?} is not a tenant name (or `*` for every tenant)"
                    ));
                }
            }
            for kind in &subscriber.events {
                if !delivered().any(|k| k.as_str() == kind) {
                    let known: Vec<&str> = delivered().map(|k| k.as_str()).collect();
                    return fail(format!(
                        "subscribers[{index}].events: {kind:?} is not an event webhooks receive; use any of {}",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}
