//! Tools agents call: the [`Tool`] trait, side-effect classes, a [`Registry`], the built-ins,
//! the process [`sandbox`], the SSRF guard ([`net`]) and policy evaluation ([`policy`]).
//!
//! Owns what a tool is, what it may touch and how that is decided from rules. It knows nothing
//! of sessions, journals or storage and must not depend on them: the runtime loads rules and
//! grants, asks [`policy::decide`], waits for approvals, writes the audit log, journals intent
//! first, and never re-runs an `AtMostOnce` call that may have happened.
//!
//! Start at [`Tool`], then [`builtin`] and [`sandbox`].

pub mod argv;
pub mod builtin;
pub mod egress;
mod error;
pub mod init;
pub mod mcp;
mod meter;
pub mod net;
pub mod openapi;
pub mod pattern;
pub mod policy;
pub mod redact;
pub mod remote;
pub mod sandbox;
mod seccomp;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use clade_config::Constraints;
pub use error::Error;

/// What happens if a call is repeated — decides what crash recovery may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectClass {
    /// No side effect: safe to run again.
    Pure,
    /// Side effects keyed by the idempotency key it receives: repeating with the same key has
    /// no further effect.
    Idempotent,
    /// Must not run twice: after a crash between start and result, it is reported to the model
    /// as interrupted instead of being re-run. The default.
    AtMostOnce,
}

impl EffectClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectClass::Pure => "pure",
            EffectClass::Idempotent => "idempotent",
            EffectClass::AtMostOnce => "at_most_once",
        }
    }
}

/// What a call knows about where it runs.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Stable across retries of the same call: derived from tenant, session, turn and call id.
    pub idempotency_key: String,
    pub call_id: String,
    /// The calling agent's workspace: the only host directory its tools may touch.
    pub workspace: Option<PathBuf>,
    /// Capabilities the policy granted this call (network, secrets in the environment).
    pub granted: Constraints,
    /// Values of the granted secrets, by environment variable name.
    pub env: Vec<(String, String)>,
    /// Who calls. A tool that acts on its agent's own records (its jobs) takes the tenant and
    /// agent from here, never from its arguments, which the model writes.
    pub caller: Option<Caller>,
    /// Where a long call reports how it is getting on (a remote host's progress frames), to
    /// the session's live subscribers; none outside a turn.
    pub progress: Option<Progress>,
    /// What the calling agent's workspace may hold under its tenant's total, when that binds
    /// tighter than `tools.limits.workspace_mib` may.
    pub workspace_room: Option<WorkspaceRoom>,
}

/// A tenant's total for all its agents' workspaces, as one agent's calls see it. The runtime's
/// ledger implements it; a run reports what its workspace holds as it writes, so the tenant's
/// other runs have that much less room at once, not only after it ends.
pub trait TenantDisk: Send + Sync {
    /// Bytes this agent's workspace may hold now: the total less what the others hold.
    fn room(&self) -> u64;
    /// Records what this agent's workspace holds now.
    fn record(&self, used: u64);
}

/// The most a workspace may hold under its tenant's total, kept current while runs write.
#[derive(Clone)]
pub struct WorkspaceRoom(Arc<dyn TenantDisk>);

impl WorkspaceRoom {
    pub fn new(disk: Arc<dyn TenantDisk>) -> Self {
        Self(disk)
    }

    /// Bytes the workspace may hold now.
    pub fn bytes(&self) -> u64 {
        self.0.room()
    }

    /// Records what the workspace holds now.
    pub fn record(&self, used: u64) {
        self.0.record(used);
    }
}

impl std::fmt::Debug for WorkspaceRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkspaceRoom").field(&self.bytes()).finish()
    }
}

/// Where a running call reports its progress: what it is doing, and how far along it is (0 to
/// 1) when it knows. Live only: nothing is stored.
#[derive(Clone)]
pub struct Progress(Arc<Report>);

/// What [`Progress`] calls: the message, and the fraction done when known.
type Report = dyn Fn(&str, Option<f64>) + Send + Sync;

impl Progress {
    pub fn new(report: impl Fn(&str, Option<f64>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(report))
    }

    pub fn report(&self, message: &str, fraction: Option<f64>) {
        (self.0)(message, fraction.filter(|f| (0.0..=1.0).contains(f)));
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// The agent a call runs for, and the session of a model's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub tenant: clade_core::TenantId,
    pub agent: clade_core::AgentId,
    pub session: Option<clade_core::SessionId>,
    /// The turn whose model asked for the call; none for an operator's call or a remote host's.
    pub turn: Option<clade_core::TurnId>,
}

impl CallContext {
    /// The caller, or the error a tool that acts for an agent returns without one.
    pub fn caller(&self) -> Result<Caller, Error> {
        self.caller.ok_or_else(|| Error::failed("this tool acts for an agent, and none called it"))
    }

    /// The workspace, or the error a host-touching tool returns without one.
    pub fn workspace(&self) -> Result<&PathBuf, Error> {
        self.workspace.as_ref().ok_or_else(|| Error::failed("this tool needs an agent workspace"))
    }
}

/// What a tool source (an MCP server, a remote tool host, an OpenAPI document) says of one of
/// its tools, and the agents the configuration gives it to.
#[derive(Debug, Clone)]
pub struct Listing {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments object.
    pub schema: Value,
    /// Agent patterns ([`clade_config::agent_pattern_covers`]).
    pub agents: Arc<[String]>,
}

impl Listing {
    pub fn available_to(&self, tenant: &str, handle: &str) -> bool {
        self.agents.iter().any(|p| clade_config::agent_pattern_covers(p, tenant, handle))
    }
}

/// [`Tool`]'s name, description, schema and availability, read from a `listing` field.
macro_rules! listed {
    () => {
        fn name(&self) -> &str {
            &self.listing.name
        }
        fn description(&self) -> &str {
            &self.listing.description
        }
        fn input_schema(&self) -> serde_json::Value {
            self.listing.schema.clone()
        }
        fn available_to(&self, tenant: &str, handle: &str) -> bool {
            self.listing.available_to(tenant, handle)
        }
    };
}
pub(crate) use listed;

/// A tool's result: text for the model, or why it failed ([`Error`]).
pub type ToolResult = Result<String, Error>;

/// A function an agent may call.
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the arguments object.
    fn input_schema(&self) -> Value;
    fn effect(&self) -> EffectClass {
        EffectClass::AtMostOnce
    }
    /// Whether it touches the host (files, processes, network): such tools are denied unless a
    /// policy rule allows them.
    fn touches_host(&self) -> bool {
        false
    }
    /// Whether a call needs a rule or grant that allows it: so are tools that touch the host,
    /// and tools that reach beyond the calling agent (messaging another agent).
    fn needs_grant(&self) -> bool {
        self.touches_host()
    }
    /// Whether its result is a sandbox run's account ([`sandbox::findings`] reads what the
    /// sandbox stopped or refused from it, for the audit log).
    fn runs_in_sandbox(&self) -> bool {
        false
    }
    /// What policy patterns match besides the tool's name (a path, a host, a command line);
    /// an error rejects the arguments before any decision.
    fn resource(&self, _args: &Value) -> Result<String, Error> {
        Ok(String::new())
    }
    /// The top-level string argument [`Tool::resource`] is, when it is one (a remote tool
    /// host's manifest says so, so the gateway's policy matches it without the tool's code).
    fn resource_argument(&self) -> Option<&str> {
        None
    }
    /// The argument list of a call that runs a program: policy then matches it with argv
    /// patterns ([`argv`]) instead of globs on [`Tool::resource`].
    fn argv(&self, _args: &Value) -> Option<Vec<String>> {
        None
    }
    /// Whether the agent `handle` of the tenant named `tenant` has the tool (MCP servers are
    /// configured per agent).
    fn available_to(&self, _tenant: &str, _handle: &str) -> bool {
        true
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult>;
}

/// A tool with typed arguments, whose JSON Schema is derived from the argument type. Every
/// `TypedTool` is a [`Tool`].
pub trait TypedTool: Send + Sync {
    type Args: DeserializeOwned + schemars::JsonSchema + Send;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const EFFECT: EffectClass = EffectClass::AtMostOnce;
    const TOUCHES_HOST: bool = false;
    /// See [`Tool::needs_grant`].
    const NEEDS_GRANT: bool = Self::TOUCHES_HOST;
    const RUNS_IN_SANDBOX: bool = false;
    /// The argument [`TypedTool::resource`] returns, when it returns one argument as it is.
    const RESOURCE_ARGUMENT: Option<&'static str> = None;
    fn resource(&self, _args: &Self::Args) -> Result<String, Error> {
        Ok(String::new())
    }
    fn argv(&self, _args: &Self::Args) -> Option<Vec<String>> {
        None
    }
    fn run<'a>(&'a self, args: Self::Args, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult>;
}

fn parse_args<A: DeserializeOwned>(name: &str, args: Value) -> Result<A, Error> {
    serde_json::from_value(args)
        .map_err(|e| Error::InvalidArguments { tool: name.to_owned(), reason: e.to_string() })
}

impl<T: TypedTool> Tool for T {
    fn name(&self) -> &str {
        T::NAME
    }
    fn description(&self) -> &str {
        T::DESCRIPTION
    }
    fn input_schema(&self) -> Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(T::Args)).unwrap_or_default();
        if let Some(object) = schema.as_object_mut() {
            // Providers want the bare object schema.
            object.remove("$schema");
            object.remove("title");
        }
        schema
    }
    fn effect(&self) -> EffectClass {
        T::EFFECT
    }
    fn touches_host(&self) -> bool {
        T::TOUCHES_HOST
    }
    fn needs_grant(&self) -> bool {
        T::NEEDS_GRANT
    }
    fn runs_in_sandbox(&self) -> bool {
        T::RUNS_IN_SANDBOX
    }
    fn resource(&self, args: &Value) -> Result<String, Error> {
        let typed: T::Args = parse_args(T::NAME, args.clone())?;
        TypedTool::resource(self, &typed)
    }
    fn resource_argument(&self) -> Option<&str> {
        T::RESOURCE_ARGUMENT
    }
    fn argv(&self, args: &Value) -> Option<Vec<String>> {
        let typed: T::Args = parse_args(T::NAME, args.clone()).ok()?;
        TypedTool::argv(self, &typed)
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        match parse_args::<T::Args>(T::NAME, args) {
            Ok(typed) => self.run(typed, ctx),
            Err(message) => Box::pin(async move { Err(message) }),
        }
    }
}

/// The tools available to an agent, by name.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.name().to_owned(), tool);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values()
    }

    /// The tool `name` if the agent `handle` of the tenant named `tenant` has it.
    pub fn get_for(&self, name: &str, tenant: &str, handle: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name).filter(|t| t.available_to(tenant, handle))
    }

    /// The tools the agent `handle` of the tenant named `tenant` has.
    pub fn for_agent<'a>(
        &'a self,
        tenant: &'a str,
        handle: &'a str,
    ) -> impl Iterator<Item = &'a Arc<dyn Tool>> {
        self.tools.values().filter(move |t| t.available_to(tenant, handle))
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// The pattern the name of something a tenant's agents share follows (a shared folder, a
/// shared memory pool): 1-64 of a-z, 0-9, `_` and `-`, starting with a letter or digit.
pub const SHARED_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// A shared folder's or pool's name that does not follow [`SHARED_NAME_PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {name:?}: 1-64 of a-z, 0-9, _ and -, starting with a letter or digit")]
pub struct BadSharedName {
    pub what: &'static str,
    pub name: String,
}

impl From<BadSharedName> for Error {
    fn from(bad: BadSharedName) -> Self {
        Self::Failed(bad.to_string())
    }
}

/// Checks the name of a shared `what` (`folder`, `pool`) against [`SHARED_NAME_PATTERN`].
pub fn check_shared_name(what: &'static str, name: &str) -> Result<(), BadSharedName> {
    let first = name.chars().next();
    let fits = (1..=64).contains(&name.len())
        && first.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if fits { Ok(()) } else { Err(BadSharedName { what, name: name.to_owned() }) }
}
