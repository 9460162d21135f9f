//! The `tools:` section: the sandbox, its limits, the operator's policy rules and approvals.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Invalid, fail, source_name};

/// How agents' tools run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// `bubblewrap` (the default) runs host-touching tools in a bubblewrap sandbox, and refuses
    /// to run them when bubblewrap is missing; `none` runs them unsandboxed (not recommended;
    /// `clade serve` warns at start).
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// The bubblewrap executable; found on `PATH` (then `/usr/bin/bwrap`) when absent.
    #[serde(default)]
    pub bwrap: Option<PathBuf>,
    /// Limits on every sandboxed process.
    #[serde(default)]
    pub limits: SandboxLimits,
    /// Rules for every agent of every tenant, before the agents' own grants. Host-touching
    /// tools (`shell.exec`, `fs.*`, `http.request`) are denied unless a rule allows them.
    #[serde(default)]
    pub policy: Vec<PolicyRule>,
    /// Seconds an `ask` waits for an answer before it counts as a denial.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            sandbox: SandboxMode::default(),
            bwrap: None,
            limits: SandboxLimits::default(),
            policy: Vec::new(),
            approval_timeout_secs: default_approval_timeout(),
        }
    }
}

fn default_approval_timeout() -> u64 {
    600
}

/// Where host-touching tools run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    #[default]
    Bubblewrap,
    None,
}

/// Resource limits of one sandboxed process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// Wall-clock seconds before the whole process tree is killed.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// CPU seconds per process.
    #[serde(default = "default_cpu")]
    pub cpu_secs: u64,
    /// Address space per process, in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Largest file a process may write, in MiB.
    #[serde(default = "default_file_size")]
    pub file_size_mib: u64,
    /// What an agent's workspace may hold, in MiB: a command may grow files only by what is
    /// left, and `fs.write` refuses what would pass it.
    #[serde(default = "default_workspace")]
    pub workspace_mib: u64,
    /// Processes (and threads) the sandbox may hold at once.
    #[serde(default = "default_processes")]
    pub processes: u64,
    /// Bytes of stdout and of stderr kept; a process writing more is killed.
    #[serde(default = "default_output")]
    pub output_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout_secs: default_timeout(),
            cpu_secs: default_cpu(),
            memory_mib: default_memory(),
            file_size_mib: default_file_size(),
            workspace_mib: default_workspace(),
            processes: default_processes(),
            output_bytes: default_output(),
        }
    }
}

fn default_timeout() -> u64 {
    30
}
fn default_cpu() -> u64 {
    20
}
fn default_memory() -> u64 {
    512
}
fn default_file_size() -> u64 {
    64
}
fn default_workspace() -> u64 {
    1024
}
fn default_processes() -> u64 {
    64
}
fn default_output() -> u64 {
    64 * 1024
}

/// What a rule decides.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEffect {
    Allow,
    Ask,
    Deny,
}

impl PolicyEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyEffect::Allow => "allow",
            PolicyEffect::Ask => "ask",
            PolicyEffect::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allow" => Some(Self::Allow),
            "ask" => Some(Self::Ask),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

/// One rule: for calls of `tool` on `resource`, `effect`.
///
/// Patterns use `*` for any run of characters. The resource of `fs.*` is the path relative to
/// the agent's workspace, of `http.request` the URL's host, of `shell.exec` the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub effect: PolicyEffect,
    /// Tool name pattern, such as `fs.*` or `mcp.github.*`.
    pub tool: String,
    /// Resource pattern; `*` (any) when absent.
    #[serde(default = "any")]
    pub resource: String,
    /// What an allowed call may use beyond the defaults.
    #[serde(default)]
    pub constraints: Constraints,
}

fn any() -> String {
    "*".into()
}

/// Reads a persona template's default tools (its `tools.yaml`): a list of rules as
/// `tools.policy` writes them. The error names the template and the line.
pub fn parse_template_tools(text: &str, template: &str) -> Result<Vec<PolicyRule>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_saphyr::from_str::<Vec<PolicyRule>>(text).map_err(|err| {
        // The first line says where and what; the rest is a snippet of the file.
        let err = err.to_string();
        let what = err.lines().next().unwrap_or_default().trim_start_matches("error: ");
        format!("template {template:?}'s tools.yaml is not a list of rules (effect, tool, resource, constraints): {what}")
    })
}

/// The most a tenant's own `allow` grants may give (see `TenantConfig::ceiling`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantCeiling {
    /// Tool patterns a grant's tool pattern must lie within (`fs.*`, `shell.exec`); `*`
    /// allows any tool.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Grants may give `network` (through the egress proxy, public addresses).
    #[serde(default)]
    pub network: bool,
    /// Grants may give `private_network` (loopback and private addresses: this host's
    /// services).
    #[serde(default)]
    pub private_network: bool,
    /// Grants may pass agent secrets into a command's environment (`env`).
    #[serde(default)]
    pub secrets: bool,
}

/// Capabilities an allowed call gets beyond the sandbox's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// `shell.exec`: the command may reach the network, through Clade's egress proxy
    /// (`HTTP_PROXY`/`HTTPS_PROXY`; HTTP, and any protocol a client tunnels with `CONNECT`),
    /// which refuses loopback, private, link-local and metadata addresses.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// `http.request` and a networked `shell.exec`: loopback, private, link-local and shared
    /// addresses may be reached too (cloud metadata never).
    #[serde(default, skip_serializing_if = "is_false")]
    pub private_network: bool,
    /// A networked `shell.exec`: only these destinations, as `host` or `host:port` patterns
    /// (`*.github.com`, `127.0.0.1:8080`); empty means any the address rules allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `shell.exec`: agent secrets passed as environment variables of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// An MCP server whose tools agents get as `mcp.<name>.<tool>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Command and arguments of a server speaking MCP on stdio. Give this or `url`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of the command (it gets nothing else but `PATH`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// URL of a streamable-HTTP MCP server. Give this or `command`.
    #[serde(default)]
    pub url: Option<String>,
    /// The agents that get its tools: agent references (`tenant/handle`, or a bare handle in
    /// the default tenant), `tenant/*` for every agent of a tenant, or `*` for every agent of
    /// every tenant. Default: `default/*`, the default tenant's agents only, so a server (and
    /// whatever credentials it holds) reaches another tenant only when named.
    #[serde(default = "default_tenant_agents")]
    pub agents: Vec<String>,
    /// Seconds one call (or the start-up) may take.
    #[serde(default = "default_mcp_timeout")]
    pub timeout_secs: u64,
    /// Let a stdio server reach the network. Stdio servers run in the tool sandbox (read-only
    /// system, `<data-dir>/mcp/<name>/` as their only writable directory) and without network
    /// unless this is set.
    #[serde(default)]
    pub network: bool,
}

/// A remote tool host (`docs/specs/remote-tools.md`): a process of its own, such as
/// `clade cron-service`, whose tools agents call through the gateway's policy, approval and
/// audit path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolHostConfig {
    /// The host's base URL (`http://127.0.0.1:7430/`): its manifest is `<url>manifest`.
    pub url: String,
    /// The environment variable holding the bearer token the host expects (`clade
    /// cron-service` reads the same variable). Without one, no token is sent.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The agents that get its tools, as for `mcp.<name>.agents`. Default: the default
    /// tenant's agents only.
    #[serde(default = "default_tenant_agents")]
    pub agents: Vec<String>,
    /// Seconds one call (or fetching the manifest) may take.
    #[serde(default = "default_mcp_timeout")]
    pub timeout_secs: u64,
}

/// An HTTP API described by an OpenAPI 3 document, whose operations become tools
/// `openapi.<name>.<operationId>` (denied unless a policy rule allows them; requests pass the
/// SSRF guard like `http.request`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    /// The document's path (JSON or YAML), relative to this file's directory.
    pub document: String,
    /// Where requests go. Default: the document's first `servers` URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The agents that get its tools, as for `mcp.<name>.agents`. Default: the default
    /// tenant's agents only.
    #[serde(default = "default_tenant_agents")]
    pub agents: Vec<String>,
    /// Only these operations (by `operationId`). Default: every operation.
    #[serde(default)]
    pub operations: Option<Vec<String>>,
    /// Headers every request carries, each read from an environment variable (credentials):
    /// `{ Authorization: PETS_AUTH }`.
    #[serde(default)]
    pub headers_env: std::collections::BTreeMap<String, String>,
    /// Seconds one request may take.
    #[serde(default = "default_openapi_timeout")]
    pub timeout_secs: u64,
}

fn default_openapi_timeout() -> u64 {
    30
}

fn default_tenant_agents() -> Vec<String> {
    vec![format!("{}/*", clade_core::Tenant::DEFAULT_NAME)]
}

fn default_mcp_timeout() -> u64 {
    60
}

impl crate::Config {
    /// Sandbox limits, MCP servers, OpenAPI documents, settings' keys and tool hosts.
    pub(crate) fn check_tools(&self) -> Result<(), Invalid> {
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

    /// The tool policy's rules.
    pub(crate) fn check_policy(&self) -> Result<(), Invalid> {
        for (index, rule) in self.tools.policy.iter().enumerate() {
            if rule.tool.trim().is_empty() || rule.resource.is_empty() {
                return fail(format!(
                    "tools.policy[{index}]: `tool` and `resource` must not be empty (use \"*\" for any)"
                ));
            }
        }
        Ok(())
    }
}
