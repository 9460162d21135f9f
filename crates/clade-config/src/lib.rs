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

mod cluster;
mod tools;

pub use cluster::{ClusterConfig, NODE_ENV, NodeNameError, ShardAssignment};

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
    /// Test-harness settings; never needed in production.
    #[serde(default)]
    pub testing: TestingConfig,
}

/// How `memory.embeddings` names a model run in process rather than a `models` entry.
pub const LOCAL_PREFIX: &str = "local:";

/// Agents' long-term memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Whether agents have memory: the `memory.*` tools and recall in each turn's context.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What makes the vectors recall compares meaning with: `local:<name>`, a model run in
    /// process from the data dir's `models/<name>` (installed by `clade models fetch`), or a
    /// `models` entry with provider `openai` (its `/embeddings` endpoint). Unset: the local
    /// `all-minilm-l6-v2` when its files are there, else recall uses full text alone.
    #[serde(default)]
    pub embeddings: Option<String>,
    /// Which memory a conversation reads and writes besides the agent's global memory: none
    /// (`global`, the default), one per person (`actor`: platform and actor) or one per
    /// conversation (`channel`: platform and channel). With `actor`, what one user tells the
    /// agent is never recalled for another.
    #[serde(default)]
    pub isolation: MemoryIsolation,
    /// Items recalled into each turn's context (0: none, the tools still work).
    #[serde(default = "default_recall_items")]
    pub recall_items: u32,
    /// About how many tokens the recalled items may take in a turn's context.
    #[serde(default = "default_recall_tokens")]
    pub recall_tokens: u32,
    /// The most items one agent may hold (1 to 10,000,000): past it, saving a new item is
    /// refused (`memory_full`) until some are forgotten, so no tenant fills the store. A repeat
    /// of an item still updates it.
    #[serde(default = "default_max_items")]
    pub max_items_per_agent: u64,
    /// Whether completed turns are mined for memories in the background: `heuristic` (the
    /// default) keeps the sentences people state about themselves, their plans and decisions,
    /// numbers and dates; `model` asks the `cortex` model route what is worth remembering in
    /// each turn (a model call per turn, charged to the agent; a failed call falls back to the
    /// heuristic for that turn); `off` leaves memory to the agents' tools and to compaction.
    #[serde(default)]
    pub ingest: MemoryIngest,
    /// How the cortex keeps each agent's memory in the background: repeats merged, items
    /// fading with disuse, the faded pruned (restorable until purged).
    #[serde(default)]
    pub upkeep: MemoryUpkeepConfig,
}

/// See [`MemoryConfig::upkeep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryUpkeepConfig {
    /// Whether the cortex keeps memories at all (`clade memory upkeep` still runs by hand).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Days an unused item of importance 0 takes to lose half its strength; one of
    /// importance 1 takes five times as long, and identity never fades. 0: nothing fades.
    #[serde(default = "default_half_life_days")]
    pub half_life_days: f64,
    /// Strength (0 to 1) under which a faded item is pruned; 0 prunes nothing.
    #[serde(default = "default_prune_below")]
    pub prune_below: f64,
    /// Days a pruned item can be restored before it is deleted for good.
    #[serde(default = "default_purge_after_days")]
    pub purge_after_days: f64,
    /// Seconds after an agent's write before its upkeep runs (later writes join it).
    #[serde(default = "default_upkeep_settle_secs")]
    pub settle_secs: u64,
    /// Passing items (observations, events) of one isolation key that the `cortex` model
    /// route reads into the lasting items they add up to (facts, preferences, decisions...),
    /// each passing item then linked `part_of` them. 0 (the default): never, since each
    /// consolidation is a model call charged to the agent; 20 is a fair start.
    #[serde(default)]
    pub consolidate_at: u32,
}

impl Default for MemoryUpkeepConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            half_life_days: default_half_life_days(),
            prune_below: default_prune_below(),
            purge_after_days: default_purge_after_days(),
            settle_secs: default_upkeep_settle_secs(),
            consolidate_at: 0,
        }
    }
}

fn default_half_life_days() -> f64 {
    30.0
}

fn default_prune_below() -> f64 {
    0.05
}

fn default_purge_after_days() -> f64 {
    30.0
}

fn default_upkeep_settle_secs() -> u64 {
    60
}

/// How completed turns are mined for memories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryIngest {
    #[default]
    Heuristic,
    Model,
    Off,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            embeddings: None,
            isolation: MemoryIsolation::default(),
            recall_items: default_recall_items(),
            recall_tokens: default_recall_tokens(),
            max_items_per_agent: default_max_items(),
            ingest: MemoryIngest::default(),
            upkeep: MemoryUpkeepConfig::default(),
        }
    }
}

fn default_recall_items() -> u32 {
    5
}

fn default_recall_tokens() -> u32 {
    400
}

fn default_max_items() -> u64 {
    100_000
}

/// See [`MemoryConfig::isolation`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryIsolation {
    #[default]
    Global,
    Actor,
    Channel,
}

/// A declared agent setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingConfig {
    /// What the setting is for, as agents and operators see it.
    #[serde(default)]
    pub description: String,
    /// The value read when none is stored (any JSON value).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// An environment variable whose value, when set, every agent reads instead (JSON if it
    /// parses as JSON, else text).
    #[serde(default)]
    pub env: Option<String>,
    /// Whether agents may change their value with `settings.set` and `settings.unset`, and
    /// tenants' tokens through the API; when false only the operator may.
    #[serde(default = "default_true")]
    pub agent_writable: bool,
}

/// One agent's heartbeat. Its prompt is its own: it never depends on a file having content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// When it beats: a cron expression, an alias (`@hourly`) or `@every 30m`.
    #[serde(default = "default_heartbeat_schedule")]
    pub schedule: String,
    /// What the agent is told at every beat.
    pub prompt: String,
    /// The IANA time zone the schedule is read in; UTC when absent.
    #[serde(default)]
    pub zone: Option<String>,
    /// Where beats go: `session:<name>` (default `session:heartbeat`) or `new`.
    #[serde(default)]
    pub target: Option<String>,
    /// Up to this many seconds added to each beat.
    #[serde(default)]
    pub jitter_secs: Option<u32>,
}

fn default_heartbeat_schedule() -> String {
    "@every 30m".into()
}

/// How the gateway fires agents' scheduled jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Whether this gateway fires jobs (one per store should; jobs stay due while none does).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A scheduled time missed by less than this still fires on time; older ones follow the
    /// job's misfire policy (skip, run_once, catch_up:N).
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    /// A job whose last this many runs failed (refused, or its turn failed) is disabled, with
    /// an audit record, until enabled again; 0 never disables one.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// When the retention sweep (`tenants.<name>.retention`) runs, as a cron expression in UTC.
    #[serde(default = "default_retention_schedule")]
    pub retention_schedule: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_secs: default_grace(),
            max_failures: default_max_failures(),
            retention_schedule: default_retention_schedule(),
        }
    }
}

fn default_grace() -> u64 {
    60
}
fn default_max_failures() -> u32 {
    5
}
fn default_retention_schedule() -> String {
    "0 3 * * *".into()
}

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

/// What is wrong with one section of a configuration, as the check says it.
struct Invalid(String);

/// One section's check ([`Config::check`] runs them in order).
type SectionCheck = fn(&Config) -> Result<(), Invalid>;

/// Refuses a section with `message`.
fn fail(message: String) -> Result<(), Invalid> {
    Err(Invalid(message))
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

/// How sessions run their turns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// What happens to messages that arrive while a turn runs.
    #[serde(default)]
    pub queue_mode: QueueMode,
    /// Model calls per turn before it yields (resumable).
    #[serde(default = "default_iterations")]
    pub max_iterations: u32,
    /// A turn running longer than this fails.
    #[serde(default = "default_turn_timeout")]
    pub turn_timeout_secs: u64,
    /// Events waiting per session before new ones are refused with 429.
    #[serde(default = "default_max_queued")]
    pub max_queued: u64,
    /// Seconds an idle session stays in memory.
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    /// Earlier turns shown word for word in the model's context, at most. With compaction on,
    /// older ones are folded into the session's summary rather than dropped.
    #[serde(default = "default_history")]
    pub history_turns: u32,
    /// How a session whose context grows toward its model's context window is compacted.
    #[serde(default)]
    pub compaction: CompactionConfig,
    /// How agents message each other (`agent.send`, `agent.ask`).
    #[serde(default)]
    pub messaging: MessagingConfig,
    /// Branches: forks of a session's context that think about one task in parallel
    /// (`agent.branch`). Unset limits take their defaults: 3 at once per session, 8 model calls
    /// a turn, 300 s.
    #[serde(default)]
    pub branches: ForkLimits,
    /// Workers: fresh contexts with a task and tools of their own (`agent.spawn_worker`).
    /// Unset limits take their defaults: 4 at once per session, 30 model calls a turn, 1800 s.
    #[serde(default)]
    pub workers: ForkLimits,
    /// Per-agent settings that override the ones above for that agent's sessions, keyed by
    /// agent reference (`tenant/handle`, or a bare handle in the default tenant).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSessionsConfig>,
}

/// What one agent's sessions do differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSessionsConfig {
    /// This agent's sessions' queue mode.
    #[serde(default)]
    pub queue_mode: Option<QueueMode>,
}

impl SessionsConfig {
    /// The queue mode of the sessions of the agent `handle` of the tenant named `tenant`.
    pub fn queue_mode_for(&self, tenant: &str, handle: &str) -> QueueMode {
        for_agent(&self.agents, tenant, handle)
            .and_then(|a| a.queue_mode)
            .unwrap_or(self.queue_mode)
    }
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
fn check_agent_keys<T>(field: &str, map: &BTreeMap<String, T>) -> Result<(), Invalid> {
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

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            queue_mode: QueueMode::default(),
            max_iterations: default_iterations(),
            turn_timeout_secs: default_turn_timeout(),
            max_queued: default_max_queued(),
            idle_secs: default_idle(),
            history_turns: default_history(),
            compaction: CompactionConfig::default(),
            messaging: MessagingConfig::default(),
            branches: ForkLimits::default(),
            workers: ForkLimits::default(),
            agents: BTreeMap::new(),
        }
    }
}

/// Compaction: when a turn's context passes `at_percent` of the channel model's context window
/// (or more turns than `sessions.history_turns` wait to be shown), the oldest turns are
/// summarised in the background through the `compactor` route and mined for memories, keeping
/// the newest turns (about `keep_percent` of the window) word for word. Past
/// `emergency_percent` a turn drops its oldest turns from its context without a model call.
/// The turns themselves are never deleted by compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactionConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Percent of the context window past which a compaction starts (in the background).
    #[serde(default = "default_compact_at")]
    pub at_percent: u8,
    /// Percent of the context window past which a turn's oldest history is left out at once.
    #[serde(default = "default_emergency_at")]
    pub emergency_percent: u8,
    /// Percent of the context window the turns kept word for word may fill after a compaction.
    #[serde(default = "default_keep")]
    pub keep_percent: u8,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            at_percent: default_compact_at(),
            emergency_percent: default_emergency_at(),
            keep_percent: default_keep(),
        }
    }
}

/// The limits of one kind of fork (branches or workers); unset ones take the kind's defaults
/// ([`SessionsConfig::branch_limits`], [`SessionsConfig::worker_limits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkLimits {
    /// How many may run at once for one session (1-16).
    #[serde(default)]
    pub max_per_session: Option<u32>,
    /// Model calls per turn before it yields (1-100).
    #[serde(default)]
    pub max_iterations: Option<u32>,
    /// A turn running longer than this fails (1-86400).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Its share of the agent's spending: the most tokens (input and output) one of its turns
    /// spends; past it, the turn yields until resumed (each resume grants as many again).
    /// 1,000 to 100,000,000.
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

/// [`ForkLimits`] with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkLimitsResolved {
    pub max_per_session: u32,
    pub max_iterations: u32,
    pub timeout_secs: u64,
    pub max_tokens: u64,
}

impl ForkLimits {
    fn resolve(self, defaults: ForkLimitsResolved) -> ForkLimitsResolved {
        ForkLimitsResolved {
            max_per_session: self.max_per_session.unwrap_or(defaults.max_per_session),
            max_iterations: self.max_iterations.unwrap_or(defaults.max_iterations),
            timeout_secs: self.timeout_secs.unwrap_or(defaults.timeout_secs),
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
        }
    }

    fn check(self, field: &str) -> Result<(), Invalid> {
        let within = |name: &str, value: Option<u64>, most: u64| match value {
            Some(v) if !(1..=most).contains(&v) => {
                Err(Invalid(format!("sessions.{field}.{name}: must be 1 to {most}, not {v}")))
            }
            _ => Ok(()),
        };
        within("max_per_session", self.max_per_session.map(u64::from), 16)?;
        within("max_iterations", self.max_iterations.map(u64::from), 100)?;
        within("timeout_secs", self.timeout_secs, 86_400)?;
        match self.max_tokens {
            Some(v) if !(1_000..=100_000_000).contains(&v) => Err(Invalid(format!(
                "sessions.{field}.max_tokens: must be 1,000 to 100,000,000, not {v}"
            ))),
            _ => Ok(()),
        }
    }
}

impl SessionsConfig {
    /// Branches' limits, defaults filled in.
    pub fn branch_limits(&self) -> ForkLimitsResolved {
        self.branches.resolve(ForkLimitsResolved {
            max_per_session: 3,
            max_iterations: 8,
            timeout_secs: 300,
            max_tokens: 200_000,
        })
    }

    /// Workers' limits, defaults filled in.
    pub fn worker_limits(&self) -> ForkLimitsResolved {
        self.workers.resolve(ForkLimitsResolved {
            max_per_session: 4,
            max_iterations: 30,
            timeout_secs: 1800,
            max_tokens: 2_000_000,
        })
    }
}

/// Messages between agents: each arrives as an event of the receiver, in its session with the
/// sender, and an `ask` waits for the receiver's turn, whose reply is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// The longest chain of messages one person's message may set off (agents messaging
    /// agents that message agents): a message past it is refused, which cuts loops (1-16).
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// How long an `ask` waits for the answer, at most (the turn's own time limit too);
    /// 1-3600.
    #[serde(default = "default_ask_timeout")]
    pub ask_timeout_secs: u64,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self { max_depth: default_max_depth(), ask_timeout_secs: default_ask_timeout() }
    }
}

fn default_max_depth() -> u32 {
    4
}
fn default_ask_timeout() -> u64 {
    120
}

fn default_compact_at() -> u8 {
    80
}
fn default_emergency_at() -> u8 {
    95
}
fn default_keep() -> u8 {
    40
}

fn default_iterations() -> u32 {
    8
}
fn default_turn_timeout() -> u64 {
    300
}
fn default_max_queued() -> u64 {
    64
}
fn default_idle() -> u64 {
    60
}
fn default_history() -> u32 {
    20
}

/// Messages arriving during a turn: `queue` runs them as the next turns, `coalesce` runs a
/// burst as one turn, `steer` injects them into the running turn between tool calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    #[default]
    Queue,
    Coalesce,
    Steer,
}

impl QueueMode {
    /// Its name in clade.yaml and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Queue => "queue",
            QueueMode::Coalesce => "coalesce",
            QueueMode::Steer => "steer",
        }
    }

    /// The mode of that name, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [QueueMode::Queue, QueueMode::Coalesce, QueueMode::Steer]
            .into_iter()
            .find(|mode| mode.as_str() == name)
    }
}

/// Chat platforms, each by bot name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Telegram bots by name (`[a-z0-9_-]`, 1-32): the name is the first part of their chats'
    /// channels (`<bot>:<chat id>`), so two bots' chats never share a session.
    #[serde(default)]
    pub telegram: BTreeMap<String, TelegramConfig>,
    /// Slack apps by name (`[a-z0-9_-]`, 1-32), the first part of their chats' channels
    /// (`<app>:<channel id>`, `<app>:<channel id>/<thread ts>` in a thread).
    #[serde(default)]
    pub slack: BTreeMap<String, SlackConfig>,
    /// Discord bots by name (`[a-z0-9_-]`, 1-32), the first part of their chats' channels
    /// (`<bot>:<channel id>`).
    #[serde(default)]
    pub discord: BTreeMap<String, DiscordConfig>,
}

/// One Discord bot: its token for the gateway and the REST API. Enable the Message Content
/// intent for it in Discord's developer portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The environment variable holding the bot token.
    pub token_env: String,
    /// The REST API's base URL (`…/api/v10`); Discord's own when not given. The gateway's URL
    /// comes from it (`GET /gateway/bot`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Who holds Discord's gateway socket: `gateway` (this process) or `relay` (a listener of
    /// its own, `clade channels listen`, which posts each message to
    /// `POST /channels/discord/<bot>`).
    #[serde(default)]
    pub mode: DiscordMode,
    /// Relay mode: the environment variable holding the secret the listener sends with each
    /// message (16-256 bytes; the gateway and the listener read the same).
    #[serde(default)]
    pub relay_secret_env: Option<String>,
    /// Whether replies stream into one message edited in place.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Group chats (Telegram groups, Discord guild channels, Slack channels): `shared` (the
    /// default), one conversation per chat in which each message names its sender, as people
    /// in a group expect; or `per_person`, one per sender in each chat.
    #[serde(default)]
    pub group_sessions: GroupSessions,
}

/// Who holds a Discord bot's gateway socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscordMode {
    #[default]
    Gateway,
    Relay,
}

impl DiscordConfig {
    /// What types alone cannot say: the name, the token variable, the URL, relay's secret.
    fn check(&self, name: &str) -> Result<(), Invalid> {
        let field = format!("channels.discord.{name}");
        check_channel(&field, name, &self.token_env, &self.api_url, self.max_attempts)?;
        let named = self.relay_secret_env.as_deref().is_some_and(|v| !v.trim().is_empty());
        if self.mode == DiscordMode::Relay && !named {
            return Err(Invalid(format!(
                "{field}.relay_secret_env: relay mode takes messages from a listener of its own, proved by a secret, or anyone could post messages as Discord; name the variable holding it"
            )));
        }
        Ok(())
    }
}

/// One Slack app: its bot token for the Web API, and Socket Mode or the Events API for what
/// people write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The environment variable holding the bot token (`xoxb-…`).
    pub token_env: String,
    /// The Web API's base URL; Slack's own when not given.
    #[serde(default)]
    pub api_url: Option<String>,
    /// How events arrive: `socket` (Socket Mode: the gateway connects out, no public URL) or
    /// `events` (the Events API posts them to `POST /channels/slack/<app>`).
    #[serde(default)]
    pub mode: SlackMode,
    /// Socket Mode: the environment variable holding the app-level token (`xapp-…`).
    #[serde(default)]
    pub app_token_env: Option<String>,
    /// Events API: the environment variable holding the app's signing secret.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Whether replies stream into one message edited in place (`chat.update`).
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Group chats (Telegram groups, Discord guild channels, Slack channels): `shared` (the
    /// default), one conversation per chat in which each message names its sender, as people
    /// in a group expect; or `per_person`, one per sender in each chat.
    #[serde(default)]
    pub group_sessions: GroupSessions,
}

/// How a Slack app's events arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    #[default]
    Socket,
    Events,
}

impl SlackConfig {
    /// What types alone cannot say: the name, the variables each mode needs, the URL.
    fn check(&self, name: &str) -> Result<(), Invalid> {
        let field = format!("channels.slack.{name}");
        check_channel(&field, name, &self.token_env, &self.api_url, self.max_attempts)?;
        let named = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        match self.mode {
            SlackMode::Socket if !named(&self.app_token_env) => Err(Invalid(format!(
                "{field}.app_token_env: Socket Mode connects with an app-level token (xapp-…); name the variable holding it, or use mode: events"
            ))),
            SlackMode::Events if !named(&self.signing_secret_env) => Err(Invalid(format!(
                "{field}.signing_secret_env: the Events API is checked against the app's signing secret, or anyone could post events as Slack; name the variable holding it"
            ))),
            _ => Ok(()),
        }
    }
}

/// What every channel's entry must hold: a plain name, a token variable, an http(s) API URL
/// if any, and at least one delivery attempt.
fn check_channel(
    field: &str,
    name: &str,
    token_env: &str,
    api_url: &Option<String>,
    max_attempts: u32,
) -> Result<(), Invalid> {
    check_channel_name(field, name)?;
    if token_env.trim().is_empty() {
        return Err(Invalid(format!(
            "{field}.token_env: name the variable holding the bot's token"
        )));
    }
    check_url(&format!("{field}.api_url"), api_url)?;
    if max_attempts == 0 {
        return Err(Invalid(format!("{field}.max_attempts: must be at least 1")));
    }
    Ok(())
}

/// An http(s) URL, if one is given.
fn check_url(field: &str, url: &Option<String>) -> Result<(), Invalid> {
    match url {
        Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
            Err(Invalid(format!("{field}: {url:?} is not an http(s) URL")))
        }
        _ => Ok(()),
    }
}

/// A channel's name: what its sessions' channels start with.
fn check_channel_name(field: &str, name: &str) -> Result<(), Invalid> {
    let good = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if good {
        Ok(())
    } else {
        Err(Invalid(format!("{field}: a name is 1-32 of a-z, 0-9, - and _")))
    }
}

/// One Telegram bot, through the Bot API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The environment variable holding the bot's token (from @BotFather). Tokens never go in
    /// this file.
    pub token_env: String,
    /// The Bot API's base URL; the public one when not given. A local Bot API server or a
    /// test emulator goes here.
    #[serde(default)]
    pub api_url: Option<String>,
    /// How updates arrive: `polling` (the gateway asks, `getUpdates`) or `webhook` (Telegram
    /// posts them to `POST /channels/telegram/<bot>`).
    #[serde(default)]
    pub mode: TelegramMode,
    /// Webhook mode: the environment variable holding the secret Telegram sends in
    /// `X-Telegram-Bot-Api-Secret-Token` (1-256 of A-Z, a-z, 0-9, _ and -).
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// Webhook mode: the gateway's public base URL. When given, the gateway registers
    /// `<public_url>/channels/telegram/<bot>` with `setWebhook` at start; without it, the
    /// operator registers the webhook.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Polling mode: how long one `getUpdates` waits for news, in seconds (1-50).
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u32,
    /// Whether replies stream: one message edited in place as the model writes, at most
    /// about once a second. Off, each reply is sent whole when its turn ends.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Group chats (Telegram groups, Discord guild channels, Slack channels): `shared` (the
    /// default), one conversation per chat in which each message names its sender, as people
    /// in a group expect; or `per_person`, one per sender in each chat.
    #[serde(default)]
    pub group_sessions: GroupSessions,
}

/// How a chat channel's group chats map to conversations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupSessions {
    /// One conversation per group chat, each message naming its sender.
    #[default]
    Shared,
    /// One conversation per sender in each group chat.
    PerPerson,
}

/// How a Telegram bot's updates arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    #[default]
    Polling,
    Webhook,
}

fn default_poll_timeout() -> u32 {
    25
}

impl TelegramConfig {
    /// What types alone cannot say: the name, the variables, the URLs, the timeout.
    fn check(&self, name: &str) -> Result<(), Invalid> {
        let field = format!("channels.telegram.{name}");
        check_channel(&field, name, &self.token_env, &self.api_url, self.max_attempts)?;
        check_url(&format!("{field}.public_url"), &self.public_url)?;
        if !(1..=50).contains(&self.poll_timeout_secs) {
            return Err(Invalid(format!(
                "{field}.poll_timeout_secs: {} is out of range; Telegram waits 1 to 50 seconds",
                self.poll_timeout_secs
            )));
        }
        match self.mode {
            TelegramMode::Webhook
                if self.webhook_secret_env.as_deref().is_none_or(|v| v.trim().is_empty()) =>
            {
                Err(Invalid(format!(
                    "{field}.webhook_secret_env: webhook mode needs a secret, or anyone could post updates as Telegram; name the variable holding it"
                )))
            }
            TelegramMode::Polling if self.public_url.is_some() => Err(Invalid(format!(
                "{field}.public_url: only webhook mode registers a URL; set mode: webhook, or remove it"
            ))),
            _ => Ok(()),
        }
    }
}

/// Maps (platform, channel, actor) patterns to an agent. `*` matches anything; the first
/// matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    #[serde(default = "star")]
    pub platform: String,
    #[serde(default = "star")]
    pub channel: String,
    #[serde(default = "star")]
    pub actor: String,
    /// The agent: `tenant/handle`, or a bare handle in the default tenant. A binding routes
    /// only events of that agent's tenant.
    pub agent: String,
    /// Whose memory the sessions it matches share, when not `memory.isolation`: `global` (the
    /// agent's), `actor` (each person's) or `channel` (each conversation's). The first binding
    /// that matches a session's source decides. Read at start.
    #[serde(default)]
    pub isolation: Option<MemoryIsolation>,
}

fn star() -> String {
    "*".into()
}

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

fn default_attempts() -> u32 {
    8
}
fn default_webhook_timeout() -> u64 {
    10
}

/// Test-harness settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestingConfig {
    /// Enables the `ledger.append` and `ledger.append_idempotent` tools, which append to this
    /// file, so crash tests can count side effects independently of Clade's records.
    #[serde(default)]
    pub ledger_file: Option<PathBuf>,
}

/// One named model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: ProviderKind,
    /// The provider's model id; defaults to this entry's name.
    #[serde(default)]
    pub model: Option<String>,
    /// API base URL, e.g. `http://127.0.0.1:11434/v1` for Ollama; defaults to the provider's.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key. Keys never go in this file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Name of the calling agent's secret holding the API key (`clade secrets set`).
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Subscription credentials refreshed with OAuth2.
    #[serde(default)]
    pub oauth: Option<OAuthModelConfig>,
    /// Stream responses (default) or wait for complete ones.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Prices in US dollars per million tokens, for cost accounting and cost budgets.
    #[serde(default)]
    pub price: PriceConfig,
    /// Longest reply, in tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The model's context window in tokens (prompt and reply), which a turn's prompt is
    /// fitted to and compaction keeps a session's context within [default: 4096 for
    /// `provider: local`, else 128000].
    #[serde(default)]
    pub context_window: Option<u32>,
    /// The most tokens of tool schemas one call offers: the tools the turn's messages point
    /// at, ranked, and `tools.find` for the rest [default: an eighth of the window, at most
    /// 2000].
    #[serde(default)]
    pub tool_tokens: Option<u32>,
    /// Speak HTTP/2 to an `http://` base URL from the first byte (h2c with prior knowledge),
    /// for a local server that supports it: concurrent calls then share one connection instead
    /// of holding one each. Over `https://` HTTP/2 is negotiated by itself when the server
    /// offers it (OpenAI and Anthropic do), so this is rarely needed.
    #[serde(default)]
    pub http2: bool,
    /// `provider: local` only: answers the model generates at once, each on its own copy of
    /// the attention cache (1 to 16) [default: one per two cores, at most 4].
    #[serde(default)]
    #[schemars(range(min = 1, max = 16))]
    pub concurrency: Option<u32>,
}

fn default_true() -> bool {
    true
}

/// Which wire protocol a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions and every compatible server.
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// The offline scripted provider (not a language model).
    Scripted,
    /// A small chat model run in process (a GGUF file; `model` names its folder under the
    /// data dir's `models`, as `clade models fetch local` installs it, or is a file's path).
    Local,
}

/// OAuth2 credentials: the tokens live in an agent secret (JSON with `access_token`,
/// `refresh_token`, `expires_at` in Unix milliseconds) and are refreshed in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthModelConfig {
    pub token_url: String,
    pub client_id: String,
    /// Name of the agent secret holding the tokens.
    pub secret: String,
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    #[serde(default)]
    pub input_per_mtok: f64,
    #[serde(default)]
    pub output_per_mtok: f64,
    #[serde(default)]
    pub cached_input_per_mtok: f64,
    #[serde(default)]
    pub cache_write_per_mtok: f64,
}

/// Model chains per kind of call; each list is tried in order (fallbacks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Used when a kind has no chain of its own.
    #[serde(default)]
    pub default: Vec<String>,
    #[serde(flatten)]
    pub kinds: RouteKinds,
    /// Per-agent overrides, keyed by agent reference (`tenant/handle`, or a bare handle in the
    /// default tenant).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRouting>,
    /// Per-template chains, keyed by persona template (`coder`, `researcher`, a folder under
    /// `<data-dir>/templates/`): the agents made from it use them unless `agents` names their
    /// own, so a role brings its models (a coder's larger model, a reviewer's careful one).
    #[serde(default)]
    pub templates: BTreeMap<String, AgentRouting>,
    /// Retries on one model before falling back (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Seconds a rate-limited model is skipped (default 30).
    #[serde(default)]
    pub cooldown_secs: Option<u64>,
}

/// A chain per process type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteKinds {
    #[serde(default)]
    pub channel: Vec<String>,
    #[serde(default)]
    pub branch: Vec<String>,
    #[serde(default)]
    pub worker: Vec<String>,
    #[serde(default)]
    pub compactor: Vec<String>,
    #[serde(default)]
    pub cortex: Vec<String>,
}

/// An agent's own chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRouting {
    #[serde(default)]
    pub default: Vec<String>,
    #[serde(flatten)]
    pub kinds: RouteKinds,
}

/// Spending limits per tenant and per agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Keyed by tenant name.
    #[serde(default)]
    pub tenants: BTreeMap<String, Limits>,
    /// Keyed by `tenant/handle`, or a bare handle for the default tenant.
    #[serde(default)]
    pub agents: BTreeMap<String, Limits>,
}

/// Limits over UTC calendar days and months; any subset may be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Loopback by default; bind a public address only behind TLS.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Open connections at most; at the limit, the oldest connection that has not sent a
    /// request yet makes room for a new one. Default: the descriptor limit less 512.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Seconds a connection may take to send a request's headers, and stay idle between
    /// requests.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// The admin socket's path (pairing, reload, wake-ups, status; the operator's user only,
    /// never over HTTP). Default: `admin.sock` in the data dir.
    #[serde(default)]
    pub admin_socket: Option<String>,
    /// The AgentHub over gRPC (`proto/clade/hub/v1/hub.proto`: Spawn, SendMessage, Trace),
    /// on a port of its own. Off unless set.
    #[serde(default)]
    pub grpc: Option<GrpcConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_connections: None,
            header_timeout_secs: default_header_timeout(),
            admin_socket: None,
            grpc: None,
        }
    }
}

/// The AgentHub's gRPC server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:7421`. Bind a public address only with
    /// `tls`.
    pub listen: String,
    /// Serve TLS with this certificate and key; without it the server speaks plain HTTP/2.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// A TLS identity: PEM files, relative to the configuration file's folder unless absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

fn default_header_timeout() -> u64 {
    10
}

fn default_listen() -> String {
    "127.0.0.1:7420".into()
}

fn default_max_body() -> u64 {
    1024 * 1024
}

/// Where state is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host/db` for PostgreSQL; absent means SQLite in the data dir
    /// (`<data-dir>/clade.db`). `--store` and `CLADE_STORE` override it.
    #[serde(default)]
    pub url: Option<String>,
    /// `full` (the default) syncs every commit to disk before acknowledging it; `normal` may lose
    /// the last commits on power loss (never on a process crash) in exchange for speed.
    #[serde(default)]
    pub durability: Durability,
}

/// How hard a commit is pushed to disk before it is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

/// Log output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`. `--log-format` overrides it.
    #[serde(default)]
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter such as `info,clade_store=debug`. `RUST_LOG` overrides it.
    #[serde(default)]
    pub filter: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
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

    /// The cluster's names, NATS address, shards and leases.
    fn check_cluster(&self) -> Result<(), Invalid> {
        match self.cluster.as_ref().and_then(ClusterConfig::problem) {
            Some(problem) => fail(problem),
            None => Ok(()),
        }
    }

    /// The gRPC listener's address and files.
    fn check_server(&self) -> Result<(), Invalid> {
        if let Some(grpc) = &self.server.grpc {
            if grpc.listen.trim().is_empty() || !grpc.listen.contains(':') {
                return fail(format!(
                    "server.grpc.listen: {:?} is not an address and port, such as 127.0.0.1:7421",
                    grpc.listen
                ));
            }
            if grpc.listen == self.server.listen {
                return fail(format!(
                    "server.grpc.listen: {} is server.listen too; give gRPC a port of its own",
                    grpc.listen
                ));
            }
            if let Some(tls) = &grpc.tls
                && (tls.cert.trim().is_empty() || tls.key.trim().is_empty())
            {
                return fail("server.grpc.tls: name both files, cert and key".into());
            }
        }
        Ok(())
    }

    /// Each model's provider, key, concurrency and the local model's settings.
    fn check_models(&self) -> Result<(), Invalid> {
        for (name, model) in &self.models {
            if let Some(n) = model.concurrency {
                if model.provider != ProviderKind::Local {
                    return fail(format!(
                        "models.{name}.concurrency: only a local model (provider: local) takes it; a remote provider limits its own calls"
                    ));
                }
                if !(1..=16).contains(&n) {
                    return fail(format!(
                        "models.{name}.concurrency: {n} answers at once; give 1 to 16"
                    ));
                }
            }
            if !matches!(model.provider, ProviderKind::Scripted | ProviderKind::Local)
                && model.api_key_env.is_none()
                && model.api_key_secret.is_none()
                && model.oauth.is_none()
                && model.base_url.is_none()
            {
                return fail(format!(
                    "models.{name}: set api_key_env, api_key_secret or oauth (or base_url for a local server without keys)"
                ));
            }
            if model.api_key_env.is_some() as u8
                + model.api_key_secret.is_some() as u8
                + model.oauth.is_some() as u8
                > 1
            {
                return fail(format!(
                    "models.{name}: use only one of api_key_env, api_key_secret, oauth"
                ));
            }
            let p = model.price;
            if [
                p.input_per_mtok,
                p.output_per_mtok,
                p.cached_input_per_mtok,
                p.cache_write_per_mtok,
            ]
            .iter()
            .any(|v| !v.is_finite() || *v < 0.0)
            {
                return fail(format!("models.{name}.price: prices must be zero or positive"));
            }
            if model.max_tokens == Some(0) {
                return fail(format!("models.{name}.max_tokens: must be at least 1"));
            }
            if model.context_window.is_some_and(|w| w < 1024) {
                return fail(format!("models.{name}.context_window: must be at least 1024 tokens"));
            }
            if let (Some(tools), window) = (model.tool_tokens, model.context_window)
                && tools > window.unwrap_or(u32::MAX) / 2
            {
                return fail(format!(
                    "models.{name}.tool_tokens: {tools} is more than half the context_window; lower it so that the conversation fits"
                ));
            }
        }
        if let Some(local) =
            self.memory.embeddings.as_deref().and_then(|n| n.strip_prefix(LOCAL_PREFIX))
        {
            let fits = !local.is_empty()
                && local.len() <= 64
                && local.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !local.starts_with('.');
            if !fits {
                return fail(format!(
                    "memory.embeddings: {local:?} is not a local model's name (a folder under the data dir's models/: letters, digits, '-', '_', '.')"
                ));
            }
        } else if let Some(name) = &self.memory.embeddings {
            match self.models.get(name) {
                None => {
                    return fail(format!(
                        "memory.embeddings: model {name:?} is not defined under models"
                    ));
                }
                Some(model) if model.provider != ProviderKind::Openai => {
                    return fail(format!(
                        "memory.embeddings: model {name:?} must have provider openai (an OpenAI-compatible /embeddings endpoint)"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Memory's sizes and its upkeep's rates.
    fn check_memory(&self) -> Result<(), Invalid> {
        if !(1..=10_000_000).contains(&self.memory.max_items_per_agent) {
            return fail(format!(
                "memory.max_items_per_agent: {} is out of range; 1 to 10,000,000",
                self.memory.max_items_per_agent
            ));
        }
        if self.memory.recall_items > 50 {
            return fail("memory.recall_items: at most 50".into());
        }
        let upkeep = &self.memory.upkeep;
        if !(0.0..=36_500.0).contains(&upkeep.half_life_days) {
            return fail(format!(
                "memory.upkeep.half_life_days: {} is out of range; 0 (nothing fades) to 36,500",
                upkeep.half_life_days
            ));
        }
        if !(0.0..1.0).contains(&upkeep.prune_below) {
            return fail(format!(
                "memory.upkeep.prune_below: {} is out of range; 0 (prune nothing) up to, not including, 1",
                upkeep.prune_below
            ));
        }
        if !(0.0..=36_500.0).contains(&upkeep.purge_after_days) {
            return fail(format!(
                "memory.upkeep.purge_after_days: {} is out of range; 0 to 36,500",
                upkeep.purge_after_days
            ));
        }
        if upkeep.consolidate_at > 10_000 {
            return fail(format!(
                "memory.upkeep.consolidate_at: {} is out of range; 0 (never) to 10,000",
                upkeep.consolidate_at
            ));
        }
        if upkeep.settle_secs > 86_400 {
            return fail(format!(
                "memory.upkeep.settle_secs: {} is out of range; 0 to 86,400 (a day)",
                upkeep.settle_secs
            ));
        }
        Ok(())
    }

    /// Every routing chain names declared models.
    fn check_routing(&self) -> Result<(), Invalid> {
        let known = |m: &String| self.models.contains_key(m) || m == "scripted";
        let r = &self.routing;
        let mut chains: Vec<(String, &Vec<String>)> = vec![("routing.default".into(), &r.default)];
        chains.extend(kinds(&r.kinds).map(|(k, v)| (format!("routing.{k}"), v)));
        for (section, entries) in [("agents", &r.agents), ("templates", &r.templates)] {
            for (name, routes) in entries {
                chains.push((format!("routing.{section}.{name}.default"), &routes.default));
                chains.extend(
                    kinds(&routes.kinds).map(|(k, v)| (format!("routing.{section}.{name}.{k}"), v)),
                );
            }
        }
        for (field, chain) in chains {
            if let Some(missing) = chain.iter().find(|m| !known(m)) {
                return fail(format!("{field}: model {missing:?} is not defined under models"));
            }
        }
        Ok(())
    }

    /// Budget limits are zero or positive.
    fn check_budgets(&self) -> Result<(), Invalid> {
        for (scope, limits) in self
            .budgets
            .tenants
            .iter()
            .map(|(k, v)| (format!("budgets.tenants.{k}"), v))
            .chain(self.budgets.agents.iter().map(|(k, v)| (format!("budgets.agents.{k}"), v)))
        {
            if [limits.usd_per_day, limits.usd_per_month]
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return fail(format!("{scope}: dollar limits must be zero or positive"));
            }
        }
        Ok(())
    }

    /// Sandbox limits, MCP servers, OpenAPI documents, settings' keys and tool hosts.
    fn check_tools(&self) -> Result<(), Invalid> {
        let limits = &self.tools.limits;
        for (field, value) in [
            ("timeout_secs", limits.timeout_secs),
            ("cpu_secs", limits.cpu_secs),
            ("memory_mib", limits.memory_mib),
            ("file_size_mib", limits.file_size_mib),
            ("workspace_mib", limits.workspace_mib),
            ("processes", limits.processes),
            ("output_bytes", limits.output_bytes),
        ] {
            if value == 0 {
                return fail(format!("tools.limits.{field}: must be at least 1"));
            }
        }
        for (name, server) in &self.mcp {
            if !source_name(name) {
                return fail(format!("mcp.{name}: server names use 1-64 of a-z, 0-9, - and _"));
            }
            if server.command.is_empty() == server.url.is_none() {
                return fail(format!(
                    "mcp.{name}: give exactly one of `command` (stdio) or `url` (streamable HTTP)"
                ));
            }
            if server.timeout_secs == 0 {
                return fail(format!("mcp.{name}.timeout_secs: must be at least 1"));
            }
        }
        for (name, api) in &self.openapi {
            if !source_name(name) {
                return fail(format!("openapi.{name}: API names use 1-64 of a-z, 0-9, - and _"));
            }
            if let Some(url) = &api.base_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return fail(format!(
                    "openapi.{name}.base_url: {url:?} is not an http:// or https:// URL"
                ));
            }
            if api.timeout_secs == 0 {
                return fail(format!("openapi.{name}.timeout_secs: must be at least 1"));
            }
            if let Some(header) = api.headers_env.keys().find(|h| {
                h.is_empty()
                    || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }) {
                return fail(format!(
                    "openapi.{name}.headers_env: {header:?} is not a header name"
                ));
            }
        }
        if let Some(key) = self.settings.keys().find(|k| !clade_core::is_setting_key(k)) {
            return fail(format!(
                "settings.{key}: keys use 1-64 of a-z, 0-9, ., _ and -, starting with a letter"
            ));
        }
        for (name, host) in &self.tool_hosts {
            if !source_name(name) {
                return fail(format!(
                    "tool_hosts.{name}: host names use 1-64 of a-z, 0-9, - and _"
                ));
            }
            if !(host.url.starts_with("http://") || host.url.starts_with("https://")) {
                return fail(format!(
                    "tool_hosts.{name}.url: {:?} is not an http:// or https:// URL",
                    host.url
                ));
            }
            if host.timeout_secs == 0 {
                return fail(format!("tool_hosts.{name}.timeout_secs: must be at least 1"));
            }
        }
        Ok(())
    }

    /// Compaction, messaging and fork limits.
    fn check_sessions(&self) -> Result<(), Invalid> {
        let c = self.sessions.compaction;
        if !(c.keep_percent >= 1
            && c.keep_percent < c.at_percent
            && c.at_percent < c.emergency_percent
            && c.emergency_percent <= 100)
        {
            return fail(format!(
                "sessions.compaction: needs 1 <= keep_percent < at_percent < emergency_percent <= 100, not {} < {} < {}",
                c.keep_percent, c.at_percent, c.emergency_percent
            ));
        }
        let m = self.sessions.messaging;
        if !(1..=16).contains(&m.max_depth) {
            return fail(format!(
                "sessions.messaging.max_depth: must be 1 to 16, not {}",
                m.max_depth
            ));
        }
        if !(1..=3600).contains(&m.ask_timeout_secs) {
            return fail(format!(
                "sessions.messaging.ask_timeout_secs: must be 1 to 3600, not {}",
                m.ask_timeout_secs
            ));
        }
        for (field, limits) in
            [("branches", self.sessions.branches), ("workers", self.sessions.workers)]
        {
            limits.check(field)?;
        }
        Ok(())
    }

    /// Every reference to an agent (heartbeats, bindings, the default agent, chat bots) names one agent of one tenant.
    fn check_agent_references(&self) -> Result<(), Invalid> {
        // Every agent reference names one agent of one tenant.
        for result in [
            check_agent_keys("routing.agents", &self.routing.agents),
            check_agent_keys("sessions.agents", &self.sessions.agents),
            check_agent_keys("budgets.agents", &self.budgets.agents),
            check_agent_keys("heartbeats", &self.heartbeats),
        ] {
            result?;
        }
        for (agent, heartbeat) in &self.heartbeats {
            if heartbeat.prompt.trim().is_empty() {
                return fail(format!(
                    "heartbeats.{agent}.prompt is empty: a heartbeat says what the agent is to do at every beat"
                ));
            }
        }
        let agent_ref = |field: String, text: &str| {
            clade_core::AgentRef::parse(text).map(|_| ()).map_err(|e| {
                format!("{field}: {e}; name an agent as tenant/handle, or a bare handle in the default tenant")
            })
        };
        for (index, binding) in self.bindings.iter().enumerate() {
            if let Err(message) = agent_ref(format!("bindings[{index}].agent"), &binding.agent) {
                return fail(message);
            }
        }
        if let Some(agent) = &self.default_agent
            && let Err(message) = agent_ref("default_agent".into(), agent)
        {
            return fail(message);
        }
        for (name, bot) in &self.channels.telegram {
            bot.check(name)?;
        }
        for (name, app) in &self.channels.slack {
            app.check(name)?;
        }
        for (name, bot) in &self.channels.discord {
            bot.check(name)?;
        }
        Ok(())
    }

    /// Each tenant's ceiling, quotas, retention, hooks and variables, and the agent patterns.
    fn check_tenants(&self) -> Result<(), Invalid> {
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

    /// Webhook subscribers' URLs, secrets and event kinds.
    fn check_subscribers(&self) -> Result<(), Invalid> {
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

    /// The tool policy's rules.
    fn check_policy(&self) -> Result<(), Invalid> {
        for (index, rule) in self.tools.policy.iter().enumerate() {
            if rule.tool.trim().is_empty() || rule.resource.is_empty() {
                return fail(format!(
                    "tools.policy[{index}]: `tool` and `resource` must not be empty (use \"*\" for any)"
                ));
            }
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

/// The chains of each process type, with their names.
pub fn kinds(kinds: &RouteKinds) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
    [
        ("channel", &kinds.channel),
        ("branch", &kinds.branch),
        ("worker", &kinds.worker),
        ("compactor", &kinds.compactor),
        ("cortex", &kinds.cortex),
    ]
    .into_iter()
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
