//! The typed `clade.yaml`: the operator's source of truth.
//!
//! Owns the configuration types, their parsing (unknown keys are errors, every error names the
//! file, line and field) and the JSON Schema generated from the same types. It does no I/O
//! besides reading the one file it is asked to load, and knows nothing of stores or servers.
//! Start at [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// One module per section of the file, each with its types and its own checks (an `impl
// Config` block of `check_<section>` methods that `Config::check` runs in order).
mod agents;
mod bindings;
mod channels;
mod cluster;
mod memory;
mod models;
mod scheduler;
mod server;
mod sessions;
mod subscribers;
mod tenants;
mod tools;

pub use agents::*;
pub use bindings::*;
pub use channels::*;
pub use cluster::{ClusterConfig, NODE_ENV, NodeNameError, ShardAssignment};
pub use memory::*;
pub use models::*;
pub use scheduler::*;
pub use server::*;
pub use sessions::*;
pub use subscribers::*;
pub use tenants::*;

pub use tools::{
    Constraints, GrantCeiling, McpServerConfig, OpenApiConfig, PolicyEffect, PolicyRule,
    SandboxLimits, SandboxMode, ToolHostConfig, ToolsConfig, parse_template_tools,
};

/// Whether `name` may name a tool source (an MCP server, a tool host, an API): 1-64 of
/// `a-z`, `0-9`, `-` and `_`, as the middle of its tools' names.
pub fn source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Whether `pattern` names agents as tool sources' `agents` do: an agent reference
/// (`tenant/handle`, or a bare handle in the default tenant), `tenant/*` or `*`.
pub fn is_agent_pattern(pattern: &str) -> bool {
    let tenant_wide = pattern.strip_suffix("/*").map(clade_core::Handle::parse);
    pattern == "*"
        || tenant_wide.as_ref().is_some_and(Result::is_ok)
        || (tenant_wide.is_none() && clade_core::AgentRef::parse(pattern).is_ok())
}

/// The file name looked up in the data dir when `--config` is not given.
pub const FILE_NAME: &str = "clade.yaml";

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: PathBuf, line: u64, column: u64, message: String },
    #[error("{path}: {message}")]
    InvalidNoLocation { path: PathBuf, message: String },
}

/// Everything `clade.yaml` can say. Every section is optional; defaults are documented per field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "clade.yaml", description = "Configuration of a Clade gateway.")]
pub struct Config {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Named models. Without any, `OPENAI_API_KEY` or `ANTHROPIC_API_KEY` in the environment
    /// selects that provider (model from `CLADE_MODEL`), else the offline scripted provider.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Which models each kind of call uses, in fallback order.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Spending limits, enforced before every model call.
    #[serde(default)]
    pub budgets: BudgetsConfig,
    /// How sessions run their turns.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// Rules mapping an event's source to an agent when the event names none.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// The agent (`tenant/handle`, or a bare handle in the default tenant) of an event of its
    /// tenant that names none and matches no binding; without one, such an event is refused
    /// (`no_agent`). Events of other tenants never reach it.
    #[serde(default)]
    pub default_agent: Option<String>,
    /// Webhooks that receive lifecycle events (at least once, in order, signed).
    #[serde(default)]
    pub subscribers: Vec<SubscriberConfig>,
    /// Tools: the sandbox, its limits, policy rules and approvals.
    #[serde(default)]
    pub tools: ToolsConfig,
    /// MCP servers by name (`[a-z0-9_-]`); their tools are `mcp.<name>.<tool>`, denied unless
    /// a policy rule allows them.
    #[serde(default)]
    pub mcp: BTreeMap<String, McpServerConfig>,
    /// Remote tool hosts by name (`[a-z0-9_-]`), speaking Clade's remote tool protocol; their
    /// tools keep the names their manifests give.
    #[serde(default)]
    pub tool_hosts: BTreeMap<String, ToolHostConfig>,
    /// HTTP APIs by name (`[a-z0-9_-]`), described by OpenAPI 3 documents: their operations
    /// are tools `openapi.<name>.<operationId>`.
    #[serde(default)]
    pub openapi: BTreeMap<String, OpenApiConfig>,
    /// Agents' settings by key (`a-z0-9._-`): what each is for, its default, and an
    /// environment variable that overrides every agent's value. An agent reads the environment
    /// over its stored value over the default (`settings.get`); keys not declared here may be
    /// stored too, without a default.
    #[serde(default)]
    pub settings: BTreeMap<String, SettingConfig>,
    /// Per-tenant settings, by tenant name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Agents' scheduled jobs.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Heartbeats, keyed by agent reference (`tenant/handle`, or a bare handle in the default
    /// tenant): a job of the agent's own that sends it its prompt on a schedule, kept as this
    /// file says from each start of `clade serve`.
    #[serde(default)]
    pub heartbeats: BTreeMap<String, HeartbeatConfig>,
    /// Agents' long-term memory: the `memory.*` tools, and recall in every turn's context.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Chat platforms the gateway listens on. Which agent a chat reaches is up to `bindings`
    /// (platform `telegram`, channel `<bot>:<chat id>`, actor the sender's user id), so one
    /// bot serves many tenants.
    #[serde(default)]
    pub channels: ChannelsConfig,
    /// This gateway as a node of a cluster on one PostgreSQL store (signals over NATS).
    /// Absent: a single gateway running every session itself.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// The terminal UI's look (`clade tui`).
    #[serde(default)]
    pub tui: TuiConfig,
    /// Test-harness settings; never needed in production.
    #[serde(default)]
    pub testing: TestingConfig,
}

/// What is wrong with one section of a configuration, as the check says it.
pub(crate) struct Invalid(pub(crate) String);

/// One section's check ([`Config::check`] runs them in order).
pub(crate) type SectionCheck = fn(&Config) -> Result<(), Invalid>;

/// Refuses a section with `message`.
pub(crate) fn fail(message: String) -> Result<(), Invalid> {
    Err(Invalid(message))
}

/// The entry for one agent in a map keyed by agent reference: `tenant/handle`, or a bare
/// `handle` for the default tenant's agent ([`Config::check`] refuses a map naming one agent
/// both ways). Never another tenant's agent of the same handle.
pub fn for_agent<'a, T>(map: &'a BTreeMap<String, T>, tenant: &str, handle: &str) -> Option<&'a T> {
    if map.is_empty() {
        return None;
    }
    let bare = || (tenant == clade_core::Tenant::DEFAULT_NAME).then(|| map.get(handle)).flatten();
    map.get(&format!("{tenant}/{handle}")).or_else(bare)
}

/// Whether `pattern` covers the agent `handle` of the tenant named `tenant`: an agent reference
/// names one agent, `tenant/*` every agent of a tenant, `*` every agent of every tenant.
pub fn agent_pattern_covers(pattern: &str, tenant: &str, handle: &str) -> bool {
    match pattern.split_once('/') {
        _ if pattern == "*" => true,
        Some((of, "*")) => of == tenant,
        Some((of, name)) => of == tenant && name == handle,
        None => tenant == clade_core::Tenant::DEFAULT_NAME && pattern == handle,
    }
}

/// Checks the keys of a map keyed by agent reference: each parses, and no two name one agent.
pub(crate) fn check_agent_keys<T>(field: &str, map: &BTreeMap<String, T>) -> Result<(), Invalid> {
    let mut seen: BTreeMap<clade_core::AgentRef, &str> = BTreeMap::new();
    for key in map.keys() {
        let agent = clade_core::AgentRef::parse(key).map_err(|e| {
            Invalid(format!("{field}.{key}: {e}; name an agent as tenant/handle, or a bare handle in the default tenant"))
        })?;
        if let Some(other) = seen.insert(agent.clone(), key) {
            return Err(Invalid(format!(
                "{field}: {other:?} and {key:?} both name the agent {agent}; keep one"
            )));
        }
    }
    Ok(())
}

pub(crate) fn default_true() -> bool {
    true
}

impl Config {
    /// Parses YAML text; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        // An empty file is a valid, all-defaults configuration.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str::<Config>(text).map_err(|err| yaml_error(&err, path))
    }

    /// Checks what types alone cannot: every routed model exists, credentials are named
    /// consistently, prices and limits are sane. Errors name the field.
    pub fn check(&self, path: &Path) -> Result<(), Error> {
        let sections: [SectionCheck; 12] = [
            Self::check_server,
            Self::check_cluster,
            Self::check_models,
            Self::check_memory,
            Self::check_routing,
            Self::check_budgets,
            Self::check_tools,
            Self::check_sessions,
            Self::check_agent_references,
            Self::check_tenants,
            Self::check_subscribers,
            Self::check_policy,
        ];
        for check in sections {
            check(self).map_err(|Invalid(message)| Error::InvalidNoLocation {
                path: path.to_owned(),
                message,
            })?;
        }
        Ok(())
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let config = Self::parse(&text, path)?;
        config.check(path)?;
        Ok(config)
    }

    /// Reads `path` if it exists, else returns the defaults.
    pub fn load_or_default(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let config = Self::parse(&text, path)?;
                config.check(path)?;
                Ok(config)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::Read { path: path.to_owned(), source }),
        }
    }

    /// The JSON Schema of `clade.yaml`, generated from these types.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
    }
}

fn yaml_error(err: &serde_saphyr::Error, path: &Path) -> Error {
    // The rendered message carries a source snippet over several lines; keep the first line,
    // which names the problem, and put the position in front in the `file:line:col` form that
    // editors and terminals make clickable.
    let rendered = err.to_string();
    let message = rendered.lines().next().unwrap_or("invalid YAML").trim().to_owned();
    match err.location() {
        Some(loc) if loc.line() > 0 => Error::Invalid {
            path: path.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message,
        },
        _ => Error::InvalidNoLocation { path: path.to_owned(), message },
    }
}
