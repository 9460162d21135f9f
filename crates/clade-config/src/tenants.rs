//! Per-tenant settings (`tenants`): variables, agents' quotas, inbound hooks, retention and quotas.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// What the operator decides for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// What this tenant's own tokens may grant its agents through the API (`POST /v1/grants`);
    /// the operator's CLI is not bound by it. Without one, the `default` tenant (the
    /// operator's own) may grant anything, and any other tenant no `allow` grant at all.
    /// Deny and ask grants, which only narrow, are always accepted.
    #[serde(default)]
    pub ceiling: Option<GrantCeiling>,
    /// Limits on what the tenant's tokens may do through the API, each answered with a 429
    /// naming it. The entry `"*"` holds the quotas of every tenant without its own; without
    /// either, a tenant is unlimited.
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// How long the tenant's conversations and deliveries are kept; the entry `"*"` holds the
    /// policy of every tenant without its own. Without either, everything is kept.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Inbound webhooks: each takes signed requests at `POST /hooks/<tenant>/<name>` and sends
    /// their bodies to an agent of this tenant.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookConfig>,
    /// Values the tenant's agents' persona files name as `{{name}}`, filled in each time a
    /// prompt is composed (so a change reaches the next turn), beside the built-in `{{agent}}`
    /// (its display name), `{{handle}}` and `{{tenant}}`. The entry `"*"` holds those of every
    /// tenant, which a tenant's own override. Names are 1-64 of a-z, 0-9 and _; values at most
    /// 4 KiB. A name nobody set stays as written.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// What one agent of this tenant, by handle, has apart from the others: its `quotas`
    /// replace the tenant's for it.
    #[serde(default)]
    pub agents: BTreeMap<String, TenantAgentConfig>,
}

/// One agent of a tenant, as the operator sets it apart (`tenants.<name>.agents.<handle>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantAgentConfig {
    #[serde(default)]
    pub quotas: AgentQuotas,
}

/// Limits of one agent that replace its tenant's `quotas` for it, tighter or looser: an agent
/// that may watch a feed every ten seconds while the others keep to a minute, or one that may
/// make no jobs at all. Unset, the tenant's apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentQuotas {
    /// The shortest time, in seconds, between two fires of a job this agent has (made by the
    /// tenant's tokens or by the agent itself).
    #[serde(default)]
    pub cron_min_interval_secs: Option<u64>,
    /// Jobs this agent may have (0: none).
    #[serde(default)]
    pub cron_jobs: Option<u64>,
}

/// The persona variables every agent has: its display name, its handle and its tenant's name.
pub const BUILTIN_VARIABLES: [&str; 3] = ["agent", "handle", "tenant"];

/// An inbound webhook: another service's requests, signed with a shared secret, become
/// events of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The agent (a handle of this tenant) its requests are sent to.
    pub agent: String,
    /// The environment variable holding the signing secret (`whsec_<base64>`, or any string).
    pub secret_env: String,
    /// How requests are signed: `standard` (the Standard Webhooks specification: `webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`) or `clade` (`X-Clade-Signature: sha256=<hex>`
    /// of the body, as Clade's own deliveries are).
    #[serde(default)]
    pub scheme: HookScheme,
    /// `async` answers 202 once the request is stored; `wait` answers 200 with the agent's
    /// reply once its turn has ended (202 if it takes over 120 s).
    #[serde(default)]
    pub mode: HookMode,
    /// A JSON pointer (`/repository/full_name`) into the body naming the conversation: requests
    /// with the same value share a session. Without it, or when the body has no string there,
    /// every request of the hook goes to one session.
    #[serde(default)]
    pub session: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookScheme {
    #[default]
    Standard,
    Clade,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookMode {
    #[default]
    Async,
    Wait,
}

/// What a retention sweep deletes: each age unset keeps that kind of record forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Sessions idle for longer than this many days, with their events, turns, journals and
    /// lifecycle events; a session with an event waiting or running is kept.
    #[serde(default)]
    pub sessions_days: Option<u32>,
    /// Lifecycle events older than this, once every subscriber has been sent them.
    #[serde(default)]
    pub outbox_days: Option<u32>,
    /// Dead-lettered deliveries older than this.
    #[serde(default)]
    pub dead_letters_days: Option<u32>,
}

/// A tenant's quotas and rate limits (absent: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Agents the tenant may have (the operator's CLI is not bound).
    #[serde(default)]
    pub agents: Option<u64>,
    /// Events per second sent to `POST /v1/events`, on average.
    #[serde(default)]
    pub events_per_second: Option<f64>,
    /// Events that may come at once above that rate (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u64>,
    /// Turns of the tenant's sessions that run at once; more wait for a turn to end (and
    /// their time waiting does not count against `sessions.turn_timeout_secs`).
    #[serde(default)]
    pub concurrent_turns: Option<u64>,
    /// Bytes of conversation the store may hold for the tenant (events, replies, journals,
    /// lifecycle events, executions); past it new events are refused. Measured by the store
    /// every few seconds, with what was accepted since added in between.
    #[serde(default)]
    pub stored_bytes: Option<u64>,
    /// The shortest time, in seconds, between two fires of a job the tenant's tokens or agents
    /// make (default 60; the operator's own jobs and heartbeats are not bound).
    #[serde(default)]
    pub cron_min_interval_secs: Option<u64>,
    /// Jobs each of the tenant's agents may have, made through the API or by the agent itself
    /// (default 100).
    #[serde(default)]
    pub cron_jobs_per_agent: Option<u64>,
    /// Long-lived streams (SSE, WebSocket, gRPC traces) the tenant may hold open at once
    /// (default 100); more are refused with 429 and `Retry-After`.
    #[serde(default)]
    pub streams: Option<u64>,
    /// Long-lived streams one of the tenant's tokens may hold open at once (default 50).
    #[serde(default)]
    pub streams_per_token: Option<u64>,
    /// Connections to the API (HTTP and gRPC, each listener counted apart) the tenant's
    /// tokens may hold at once; a request on one more is refused with 429 and `Retry-After`.
    /// Default: no cap below `server.max_connections`, at which the tenant holding the most
    /// gives up its oldest.
    #[serde(default)]
    pub connections: Option<u64>,
    /// Connections one of the tenant's tokens may hold at once, within `connections` (each
    /// listener counted apart); a request on one more is refused with 429 and `Retry-After`.
    /// Default: no cap of its own.
    #[serde(default)]
    pub connections_per_token: Option<u64>,
    /// MiB the workspaces of all the tenant's agents may hold together (each is also bound by
    /// `tools.limits.workspace_mib`). Counted from each workspace's size as this gateway last
    /// measured it: at a host-touching tool call's start and end, and all of them again at
    /// most a minute apart.
    #[serde(default)]
    pub workspace_mib: Option<u64>,
}

/// The agents a tenant sets apart: named by handle, under a tenant of its own.
fn check_tenant_agents(tenant: &str, config: &TenantConfig) -> Result<(), Invalid> {
    for handle in config.agents.keys() {
        let field = format!("tenants.{tenant}.agents.{handle}");
        if tenant == "*" {
            return fail(format!(
                "{field}: an agent belongs to one tenant, not to \"*\": declare it under that tenant"
            ));
        }
        if let Err(e) = clade_core::Handle::parse(handle) {
            return fail(format!("{field}: {handle:?} is not an agent handle: {e}"));
        }
    }
    Ok(())
}

impl Config {
    /// A per-tenant setting of the tenant named `tenant`: its own, else `"*"`'s, else none.
    fn tenant_setting<T>(
        tenants: &BTreeMap<String, TenantConfig>,
        tenant: &str,
        setting: impl Fn(&TenantConfig) -> Option<T>,
    ) -> Option<T> {
        tenants.get(tenant).and_then(&setting).or_else(|| tenants.get("*").and_then(&setting))
    }

    /// The retention policy of the tenant named `tenant`: its own, else `"*"`'s, else none.
    pub fn retention_of(
        tenants: &BTreeMap<String, TenantConfig>,
        tenant: &str,
    ) -> Option<Retention> {
        Self::tenant_setting(tenants, tenant, |t| t.retention)
    }

    /// The quotas of the tenant named `tenant`: its own, else `"*"`'s, else none.
    pub fn quotas_of(tenants: &BTreeMap<String, TenantConfig>, tenant: &str) -> Option<Quotas> {
        Self::tenant_setting(tenants, tenant, |t| t.quotas)
    }
}

impl Config {
    /// Each tenant's ceiling, quotas, retention, hooks and variables, and the agent patterns.
    pub(crate) fn check_tenants(&self) -> Result<(), Invalid> {
        for (tenant, config) in &self.tenants {
            for (name, value) in &config.variables {
                let field = format!("tenants.{tenant}.variables.{name}");
                let good_name = (1..=64).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !good_name {
                    return fail(format!("{field}: a variable's name is 1-64 of a-z, 0-9 and _"));
                }
                if BUILTIN_VARIABLES.contains(&name.as_str()) {
                    return fail(format!(
                        "{field}: {{{{{name}}}}} is built in (the agent's own); choose another name"
                    ));
                }
                if value.len() > 4096 {
                    return fail(format!(
                        "{field}: {} bytes, over the 4,096 a value may hold",
                        value.len()
                    ));
                }
            }
            check_tenant_agents(tenant, config)?;
            for (name, hook) in &config.hooks {
                let field = format!("tenants.{tenant}.hooks.{name}");
                if tenant == "*" {
                    return fail(format!(
                        "{field}: a hook belongs to one tenant, not to \"*\": declare it under that tenant"
                    ));
                }
                let good_name = name.len() <= 64
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    });
                if !good_name {
                    return fail(format!(
                        "{field}: a hook's name is 1-64 of a-z, 0-9, - and _, starting with a letter or digit"
                    ));
                }
                if clade_core::Handle::parse(&hook.agent).is_err() {
                    return fail(format!("{field}.agent: {:?} is not an agent handle", hook.agent));
                }
                if hook.secret_env.trim().is_empty() {
                    return fail(format!(
                        "{field}.secret_env: name the variable holding its secret"
                    ));
                }
                if let Some(pointer) = &hook.session
                    && !pointer.starts_with('/')
                {
                    return fail(format!(
                        "{field}.session: {pointer:?} is not a JSON pointer: start it with /, as /repository/full_name"
                    ));
                }
            }
        }
        let patterns = self
            .mcp
            .iter()
            .map(|(name, server)| (format!("mcp.{name}.agents"), &server.agents))
            .chain(
                self.tool_hosts
                    .iter()
                    .map(|(name, host)| (format!("tool_hosts.{name}.agents"), &host.agents)),
            )
            .chain(
                self.openapi
                    .iter()
                    .map(|(name, api)| (format!("openapi.{name}.agents"), &api.agents)),
            );
        for (field, agents) in patterns {
            for pattern in agents {
                if !is_agent_pattern(pattern) {
                    return fail(format!(
                        "{field}: {pattern:?} is not an agent reference (tenant/handle, or a bare handle in the default tenant), tenant/* or *"
                    ));
                }
            }
        }
        Ok(())
    }
}
