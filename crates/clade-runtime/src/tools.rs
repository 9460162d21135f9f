//! The one path every tool call takes, from a model or an operator: policy, approval, sandboxed
//! execution, audit.
//!
//! [`ToolRunner::authorize`] loads the operator's rules and the agent's live grants, decides,
//! and for `ask` records an approval (one per call, so a restarted turn finds it again) and
//! waits for it; [`ToolRunner::execute`] runs the tool with only what was granted. Every
//! decision, approval, result and grant change lands in the tenant's audit chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_config::{Constraints, PolicyEffect, PolicyRule, ToolsConfig};
use clade_core::{
    Agent, AgentId, ApprovalId, AuditKind, GrantId, SecretName, SessionId, TenantId, Timestamp,
    TurnId,
};
use clade_store::{
    ApprovalDecision, ApprovalRow, ApprovalStatus, AuditEntry, GrantRow, NewApproval, NewGrant,
    Secrets, Store,
};
use clade_tools::policy::{self, Decision, SourcedRule};
use clade_tools::sandbox::Finding;
pub use clade_tools::sandbox::SandboxHealth;
use clade_tools::{CallContext, Registry, Tool, WorkspaceRoom};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::hub::Hub;

/// Errors of grant and approval management (not of tool calls, which end as tool results).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    #[error("{0}")]
    Invalid(String),
    /// Beyond what the caller may do (a tenant's grant above its ceiling).
    #[error("{0}")]
    Forbidden(String),
}

impl clade_core::Fault for AccessError {
    fn is_internal(&self) -> bool {
        match self {
            AccessError::Store(store) => clade_core::Fault::is_internal(store),
            AccessError::Invalid(_) | AccessError::Forbidden(_) => false,
        }
    }
}

/// What a new agent's template gave it.
#[derive(Debug, Clone, Default)]
pub struct TemplateGrants {
    /// The rules granted.
    pub granted: Vec<PolicyRule>,
    /// The rules left out, each with why (beyond what its tenant may grant).
    pub left_out: Vec<(PolicyRule, String)>,
}

/// The default tools of `template` (its `tools.yaml`), read before an agent is made of it, so
/// a broken file stops the creation rather than making an agent without them.
pub fn template_tools(
    agents: &clade_store::Agents,
    template: &clade_core::TemplateName,
) -> Result<Vec<PolicyRule>, AccessError> {
    let Some(text) = agents.template_tools(template)? else { return Ok(Vec::new()) };
    clade_config::parse_template_tools(&text, template.as_str()).map_err(AccessError::Invalid)
}

/// An operator's (or the clock's) answer to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    ApproveAlways,
    Deny,
    /// Not answered within the timeout: a denial.
    Expire,
}

/// Who asked for a call.
#[derive(Debug, Clone)]
pub struct CallOrigin {
    /// Stable per call: names its approval and, for idempotent tools, its effect.
    pub call_key: String,
    pub call_id: String,
    pub session: Option<SessionId>,
    pub turn: Option<TurnId>,
    /// `turn` or `operator`.
    pub by: &'static str,
}

impl CallOrigin {
    /// A call an operator makes directly (CLI or API), with a fresh key.
    pub fn operator(now: Timestamp) -> Self {
        let id = ApprovalId::generate(now).to_string();
        Self {
            call_key: format!("operator:{id}"),
            call_id: id,
            session: None,
            turn: None,
            by: "operator",
        }
    }
}

/// A call the policy let through, ready to run.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub context: CallContext,
    pub decision: Decision,
    /// The record of the decision that lets the call run: written in the same transaction as
    /// the journal's start of the call (a turn), or by [`ToolRunner::record_decision`] before
    /// it runs (an operator's call). If it cannot be written, the call does not run.
    pub audit: AuditEntry,
}

/// The end of one call through [`ToolRunner::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub content: String,
    pub is_error: bool,
    /// What the policy (and the approval, if asked) decided.
    pub decision: PolicyEffect,
}

/// The tools and the operator's rules at one generation. A [`ToolRunner`] swaps its set whole
/// ([`ToolRunner::reload`]); whoever took a set ([`ToolRunner::tool_set`]) keeps it, so a turn
/// finishes on the tools and rules it started with.
pub struct ToolSet {
    generation: u64,
    registry: Registry,
    rules: Vec<SourcedRule>,
    approval_timeout: Duration,
    /// Every tool's spec for the model, with a digest of all of them; a set never changes, so
    /// schemas are generated once rather than on every turn.
    specs: std::sync::OnceLock<(Arc<[clade_model::ToolSpec]>, String)>,
    /// The tool lists of agents that lack some tools, by which tools they have.
    spec_lists: Mutex<HashMap<Vec<bool>, Arc<[clade_model::ToolSpec]>>>,
    /// The operator's per-tenant settings (`tenants:` in clade.yaml): what each tenant's own
    /// token may grant (`ceiling`), and what its agents' workspaces may hold together.
    tenants: Arc<std::collections::BTreeMap<String, clade_config::TenantConfig>>,
    /// Each tool's argument validator, compiled on its first call (`None`: unreadable schema).
    validators: Mutex<HashMap<String, Option<Arc<jsonschema::Validator>>>>,
}

impl ToolSet {
    /// The bytes `tenant`'s agents' workspaces may hold together (`quotas.workspace_mib` of
    /// its own quotas, else of `"*"`'s, as every quota is read), if set.
    fn workspace_quota(&self, tenant: &str) -> Option<u64> {
        let quotas = |name: &str| self.tenants.get(name).and_then(|t| t.quotas);
        let mib = quotas(tenant).or_else(|| quotas("*"))?.workspace_mib?;
        Some(mib.saturating_mul(1024 * 1024))
    }

    fn new(generation: u64, registry: Registry, config: &ToolsConfig) -> Self {
        let rules = config
            .policy
            .iter()
            .enumerate()
            .map(|(index, rule)| SourcedRule {
                rule: rule.clone(),
                source: format!("clade.yaml tools.policy[{index}]"),
            })
            .collect();
        Self {
            generation,
            registry,
            rules,
            approval_timeout: Duration::from_secs(config.approval_timeout_secs),
            specs: std::sync::OnceLock::new(),
            spec_lists: Mutex::default(),
            tenants: Arc::default(),
            validators: Mutex::default(),
        }
    }

    /// 1 for the set the process started with, one more for each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn all_specs(&self) -> &(Arc<[clade_model::ToolSpec]>, String) {
        self.specs.get_or_init(|| {
            let specs: Vec<clade_model::ToolSpec> = self
                .registry
                .iter()
                .map(|t| clade_model::ToolSpec {
                    name: t.name().to_owned(),
                    description: t.description().to_owned(),
                    input_schema: t.input_schema(),
                })
                .collect();
            let mut digest = Sha256::new();
            for spec in &specs {
                digest.update(spec.name.as_bytes());
                digest.update(spec.description.as_bytes());
                digest.update(spec.input_schema.to_string().as_bytes());
                digest.update([0]);
            }
            (specs.into(), hex::encode(digest.finalize()))
        })
    }

    /// The specs of the tools the agent `handle` of the tenant named `tenant` has, as the model
    /// sees them.
    pub fn specs_for(&self, tenant: &str, handle: &str) -> Arc<[clade_model::ToolSpec]> {
        self.specs_offered(tenant, handle, |_| true)
    }

    /// [`ToolSet::specs_for`], of the tools `offered` keeps (a branch's or worker's narrower
    /// set).
    pub fn specs_offered(
        &self,
        tenant: &str,
        handle: &str,
        offered: impl Fn(&str) -> bool,
    ) -> Arc<[clade_model::ToolSpec]> {
        let (specs, _) = self.all_specs();
        let has = |s: &clade_model::ToolSpec| {
            offered(&s.name) && self.registry.get_for(&s.name, tenant, handle).is_some()
        };
        // Most agents have every tool (only MCP servers are per agent); agents with the same
        // tools share one list, so a turn clones no schema.
        if specs.iter().all(has) {
            return specs.clone();
        }
        let has: Vec<bool> = specs.iter().map(has).collect();
        let mut lists = self.spec_lists.lock().unwrap_or_else(|e| e.into_inner());
        lists
            .entry(has)
            .or_insert_with_key(|has| {
                specs.iter().zip(has).filter(|(_, has)| **has).map(|(s, _)| s.clone()).collect()
            })
            .clone()
    }

    /// A digest of every tool's name, description and schema.
    pub fn specs_digest(&self) -> &str {
        &self.all_specs().1
    }

    /// `Err` naming what is wrong when `args` do not fit `tool`'s JSON Schema: what the model
    /// (or caller) is told, so it can call again. A schema the validator cannot read (a tool
    /// host's, say) checks nothing; the tool still reads its arguments itself.
    pub fn check_arguments(
        &self,
        tool: &dyn clade_tools::Tool,
        args: &Value,
    ) -> Result<(), InvalidArguments> {
        let validator = {
            let mut validators = self.validators.lock().unwrap_or_else(|e| e.into_inner());
            validators
                .entry(tool.name().to_owned())
                .or_insert_with(|| {
                    let schema = tool.input_schema();
                    match jsonschema::validator_for(&schema) {
                        Ok(validator) => Some(Arc::new(validator)),
                        Err(err) => {
                            tracing::warn!(tool = tool.name(), error = %err, "the tool's argument schema cannot be read; its calls are not checked against it");
                            None
                        }
                    }
                })
                .clone()
        };
        let Some(validator) = validator else { return Ok(()) };
        let problems: Vec<String> = validator
            .iter_errors(args)
            .take(3)
            .map(|error| {
                let at = error.instance_path().to_string();
                if at.is_empty() { error.to_string() } else { format!("{at}: {error}") }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(InvalidArguments {
            tool: tool.name().to_owned(),
            problems,
            parameters: tool.input_schema(),
        })
    }
}

/// A call's arguments do not fit its tool's schema: the validator's first problems, and the
/// parameters the tool takes, which is what the model needs to call again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid arguments for {tool}: {}; its parameters are {parameters}", problems.join("; "))]
pub struct InvalidArguments {
    pub tool: String,
    pub problems: Vec<String>,
    pub parameters: Value,
}

/// Tools, rules and the stores behind decisions; one per process.
pub struct ToolRunner {
    /// The current tools and rules (see [`ToolSet`]).
    current: std::sync::RwLock<Arc<ToolSet>>,
    store: Store,
    /// Where agents' files are: a tool runs in its agent's directory.
    workspaces: Arc<dyn clade_store::Workspaces>,
    secrets: Option<Secrets>,
    waiters: Mutex<HashMap<ApprovalId, Arc<Notify>>>,
    /// Where a turn's clients learn that it waits for an approval.
    hub: std::sync::OnceLock<Hub>,
    /// Tools run so far: any of them may have written into a workspace (see
    /// [`ToolRunner::runs`]).
    runs: std::sync::atomic::AtomicU64,
    /// The sandbox host-touching tools run in, for its self-check's outcome.
    sandbox: Option<Arc<clade_tools::sandbox::Sandbox>>,
    /// Tenant names by id, which configuration names agents by (see [`ToolRunner::tenant_name`]).
    tenant_names: Mutex<HashMap<TenantId, Arc<str>>>,
    /// What tenants' workspaces hold, for their totals (`quotas.workspace_mib`).
    disk: Arc<crate::disk::DiskLedger>,
}

/// A call policy asked an operator about, and how long the operator has to answer.
struct Asked<'a> {
    tool: &'a str,
    resource: &'a str,
    args: &'a Value,
    decision: &'a Decision,
    timeout: Duration,
}

/// Cancels a pending approval whose waiting call went away (see `await_approval`).
struct CancelOnDrop {
    store: Store,
    /// Where its `approval.decided` goes live.
    hub: Option<crate::hub::Hub>,
    tenant: TenantId,
    agent: clade_core::AgentId,
    tool: String,
    id: ApprovalId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if !self.armed {
            return;
        }
        let (store, tenant, id) = (self.store.clone(), self.tenant, self.id);
        let (hub, agent) = (self.hub.take(), self.agent);
        let note = "the call that asked for it ended before a decision".to_owned();
        let audit = AuditEntry {
            tenant,
            agent: Some(self.agent),
            kind: AuditKind::ApprovalDecided,
            tool: Some(std::mem::take(&mut self.tool)),
            decision: Some(ApprovalStatus::Cancelled.as_str().into()),
            detail: json!({ "approval": id.to_string(), "by": "turn ended", "note": note })
                .to_string(),
        };
        runtime.spawn(async move {
            let decision = ApprovalDecision {
                status: ApprovalStatus::Cancelled,
                decided_by: "turn ended".into(),
                note: Some(note),
                grant: None,
                audits: vec![audit],
            };
            // Decided meanwhile: that decision stands.
            if let (Ok((_, announced)), Some(hub)) =
                (store.access(tenant).decide_approval(id, decision).await, hub)
            {
                hub.publish_aside(agent, &announced);
            }
        });
    }
}

/// How often a waiting call re-reads its approval (a decision made by another process).
const APPROVAL_POLL: Duration = Duration::from_millis(300);

impl ToolRunner {
    pub fn new(
        registry: Registry,
        store: Store,
        workspaces: impl clade_store::Workspaces,
        secrets: Option<Secrets>,
        config: &ToolsConfig,
    ) -> Self {
        Self {
            current: std::sync::RwLock::new(Arc::new(ToolSet::new(1, registry, config))),
            store,
            workspaces: Arc::new(workspaces),
            secrets,
            waiters: Mutex::new(HashMap::new()),
            hub: std::sync::OnceLock::new(),
            runs: std::sync::atomic::AtomicU64::new(0),
            sandbox: None,
            tenant_names: Mutex::default(),
            disk: Arc::default(),
        }
    }

    /// The name of the tenant `id`, read once: a tenant's name never changes (a tenant made
    /// again under a deleted one's name has a new id). Empty if the tenant is gone, which no
    /// agent reference names.
    async fn tenant_name(&self, id: TenantId) -> Arc<str> {
        let cached = self.tenant_names.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
        if let Some(name) = cached {
            return name;
        }
        let Ok(tenant) = self.store.tenants().by_id(id).await else { return Arc::from("") };
        let name: Arc<str> = Arc::from(tenant.name.as_str());
        self.tenant_names.lock().unwrap_or_else(|e| e.into_inner()).insert(id, name.clone());
        name
    }

    /// The sandbox the registry's tools run in, whose health [`ToolRunner::sandbox_health`]
    /// reports.
    pub fn with_sandbox(mut self, sandbox: Arc<clade_tools::sandbox::Sandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// What the sandbox's self-check found; `None` when no sandbox was given.
    pub fn sandbox_health(&self) -> Option<SandboxHealth> {
        self.sandbox.as_ref().map(|s| s.health())
    }

    /// The operator's per-tenant settings (`tenants:` in clade.yaml): what each tenant's own
    /// token may grant, part of the first set.
    pub fn with_tenants(
        mut self,
        tenants: std::collections::BTreeMap<String, clade_config::TenantConfig>,
    ) -> Self {
        let current = self.current.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = Arc::get_mut(current) {
            set.tenants = Arc::new(tenants);
        }
        self
    }

    /// Whether `tenant`'s own token may give its agent `rule` (see
    /// `clade_config::TenantConfig::ceiling`); the operator's CLI does not ask.
    pub fn check_ceiling(&self, tenant: &str, rule: &PolicyRule) -> Result<(), AccessError> {
        let set = self.tool_set();
        let ceiling = match set.tenants.get(tenant).and_then(|t| t.ceiling.as_ref()) {
            Some(ceiling) => ceiling.clone(),
            None if tenant == clade_core::Tenant::DEFAULT_NAME => return Ok(()),
            None => clade_config::GrantCeiling::default(),
        };
        match policy::ceiling_error(&ceiling, rule) {
            None => Ok(()),
            Some(why) => Err(AccessError::Forbidden(format!(
                "tenant {tenant:?} may not grant this: {why}; the operator sets what it may grant in clade.yaml under tenants.{tenant}.ceiling"
            ))),
        }
    }

    /// How many tool calls have run in this process. Whoever caches what lives in a workspace
    /// (the turn engine's persona files) re-reads it once this has moved.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current tools and rules. A caller that needs them to stay the same for a while
    /// (a turn) keeps this; a reload does not change it.
    pub fn tool_set(&self) -> Arc<ToolSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in `registry`, `config`'s rules and `tenants`' grant ceilings (the current ones
    /// when `None`) as the next generation, which it returns. Calls that took the previous set
    /// finish on it.
    pub fn reload(
        &self,
        registry: Registry,
        config: &ToolsConfig,
        tenants: Option<&std::collections::BTreeMap<String, clade_config::TenantConfig>>,
    ) -> u64 {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = current.generation + 1;
        let mut next = ToolSet::new(generation, registry, config);
        next.tenants = match tenants {
            Some(tenants) => Arc::new(tenants.clone()),
            None => current.tenants.clone(),
        };
        *current = Arc::new(next);
        generation
    }

    /// Adds `tools` (a tool host paired while serving) to the current set as the next
    /// generation, keeping its rules and ceilings; a tool whose name is taken is left out and
    /// returned.
    pub fn add_tools(&self, tools: Vec<Arc<dyn clade_tools::Tool>>) -> Vec<String> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut registry = current.registry.clone();
        let mut taken = Vec::new();
        for tool in tools {
            if registry.get(tool.name()).is_some() {
                taken.push(tool.name().to_owned());
            } else {
                registry.register(tool);
            }
        }
        let next = ToolSet {
            generation: current.generation + 1,
            registry,
            rules: current.rules.clone(),
            approval_timeout: current.approval_timeout,
            specs: std::sync::OnceLock::new(),
            spec_lists: Mutex::default(),
            tenants: current.tenants.clone(),
            validators: Mutex::default(),
        };
        *current = Arc::new(next);
        taken
    }

    /// Lets waiting calls announce themselves on their session's live stream.
    pub fn attach_hub(&self, hub: Hub) {
        let _ = self.hub.set(hub);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The rules that apply to `agent` now: the operator's, then its live grants.
    pub async fn rules_for(&self, agent: &Agent) -> Result<Vec<SourcedRule>, clade_store::Error> {
        self.rules_in(&self.tool_set(), agent).await
    }

    pub(crate) async fn rules_in(
        &self,
        set: &ToolSet,
        agent: &Agent,
    ) -> Result<Vec<SourcedRule>, clade_store::Error> {
        let mut rules = set.rules.clone();
        for grant in self.store.access(agent.tenant_id).effective_grants(agent.id).await? {
            if let Some(rule) = rule_of(&grant) {
                rules.push(SourcedRule { rule, source: format!("grant {}", grant.id) });
            }
        }
        Ok(rules)
    }

    /// Decides a call under the current rules (see [`ToolRunner::authorize_in`]).
    pub async fn authorize(
        &self,
        agent: &Agent,
        tool: &dyn Tool,
        args: &Value,
        origin: &CallOrigin,
    ) -> Result<Authorized, clade_tools::Error> {
        self.authorize_in(&self.tool_set(), agent, tool, args, origin).await
    }

    /// Decides a call under `set`'s rules and, for `ask`, waits for the operator. `Err` is the
    /// tool result the model (or operator) gets instead of a run.
    pub async fn authorize_in(
        &self,
        set: &ToolSet,
        agent: &Agent,
        tool: &dyn Tool,
        args: &Value,
        origin: &CallOrigin,
    ) -> Result<Authorized, clade_tools::Error> {
        // What the model is told is the error's text, as for a refused resource.
        let checked = set.check_arguments(tool, args).map_err(clade_tools::Error::from);
        let resource = match checked.and_then(|()| tool.resource(args)) {
            Ok(resource) => resource,
            Err(why) => {
                let why_text = why.told(tool.name());
                let record = decision_entry(
                    agent,
                    tool.name(),
                    "",
                    PolicyEffect::Deny,
                    &why_text,
                    args,
                    origin,
                );
                self.write_entry(record).await;
                return Err(why);
            }
        };
        let rules = self.rules_in(set, agent).await.map_err(|e| {
            clade_tools::Error::internal("not run: the agent's policy could not be read", e)
        })?;
        let argv = tool.argv(args);
        let target = match &argv {
            Some(argv) => policy::Target::Argv(argv),
            None => policy::Target::Text(&resource),
        };
        let decision = policy::decide(&rules, tool.name(), target, tool.needs_grant());
        let entry = |decision: &Decision| {
            decision_entry(
                agent,
                tool.name(),
                &resource,
                decision.effect,
                &decision.reason,
                args,
                origin,
            )
        };
        let decision = match decision.effect {
            PolicyEffect::Deny => {
                self.write_entry(entry(&decision)).await;
                return Err(clade_tools::Error::Denied { reason: decision.reason });
            }
            PolicyEffect::Allow => decision,
            PolicyEffect::Ask => {
                // An operator is asked only once the question is on record.
                self.store.audit(entry(&decision)).await.map_err(unrecorded)?;
                let asked = Asked {
                    tool: tool.name(),
                    resource: &resource,
                    args,
                    decision: &decision,
                    timeout: set.approval_timeout,
                };
                self.await_approval(agent, asked, origin).await?;
                // The approval covers the call, with what allow rules grant (if any) on top.
                let mut allowed = rules.clone();
                allowed.retain(|r| r.rule.effect == PolicyEffect::Allow);
                let granted = policy::decide(&allowed, tool.name(), target, tool.needs_grant());
                Decision {
                    effect: PolicyEffect::Allow,
                    reason: "approved by an operator".into(),
                    constraints: granted.constraints,
                }
            }
        };
        let mut context = self.context(agent, origin, &decision.constraints).await?;
        if tool.touches_host() {
            context.workspace_room = self.workspace_room(set, agent).await;
        }
        let audit = entry(&decision);
        Ok(Authorized { context, decision, audit })
    }

    /// What `agent`'s workspace may hold under its tenant's total, if the tenant has one: the
    /// total less what its other agents' workspaces hold, kept current while runs write.
    /// Unmeasurable, it is none (closed).
    async fn workspace_room(&self, set: &ToolSet, agent: &Agent) -> Option<WorkspaceRoom> {
        let name = self.tenant_name(agent.tenant_id).await;
        let total = set.workspace_quota(&name)?;
        let measured =
            self.disk.others((&self.store, &self.workspaces), agent.tenant_id, agent.id).await;
        let disk: Arc<dyn clade_tools::TenantDisk> = match measured {
            Ok(_) => Arc::new(crate::disk::AgentDisk {
                ledger: self.disk.clone(),
                tenant: agent.tenant_id,
                agent: agent.id,
                total,
            }),
            Err(_) => Arc::new(crate::disk::NoRoom),
        };
        Some(WorkspaceRoom::new(disk))
    }

    /// Writes the record of an authorized call's decision, for a call that has no journal
    /// step to write it with; `Err` (the call must not run) if it cannot be written.
    pub async fn record_decision(&self, authorized: &Authorized) -> Result<(), clade_tools::Error> {
        self.store.audit(authorized.audit.clone()).await.map_err(unrecorded)
    }

    async fn context(
        &self,
        agent: &Agent,
        origin: &CallOrigin,
        granted: &Constraints,
    ) -> Result<CallContext, clade_tools::Error> {
        let workspace = self.workspaces.open(agent).map_err(|e| {
            clade_tools::Error::internal("cannot prepare the agent's workspace: try again later", e)
        })?;
        let mut env = Vec::new();
        for name in &granted.env {
            let (Some(secrets), Ok(secret)) = (&self.secrets, SecretName::parse(name)) else {
                return Err(format!("granted secret {name:?} is not available").into());
            };
            let value = secrets.get(agent, &secret).await.map_err(|e| {
                clade_tools::Error::internal(format!("granted secret {name} cannot be read"), e)
            })?;
            env.push((name.clone(), String::from_utf8_lossy(&value).into_owned()));
        }
        Ok(CallContext {
            idempotency_key: origin.call_key.clone(),
            call_id: origin.call_id.clone(),
            workspace: Some(workspace),
            granted: granted.clone(),
            env,
            caller: Some(clade_tools::Caller {
                tenant: agent.tenant_id,
                agent: agent.id,
                session: origin.session,
                turn: origin.turn,
            }),
            progress: None,
            workspace_room: None,
        })
    }

    /// Runs an authorized call and audits its outcome.
    pub async fn execute(
        &self,
        agent: &Agent,
        tool: &dyn Tool,
        args: Value,
        authorized: &Authorized,
    ) -> Result<String, clade_tools::Error> {
        #[allow(clippy::disallowed_methods)] // Measures how long the tool really ran.
        let started = tokio::time::Instant::now();
        // The command line, for what the sandbox hid from it (see `sandbox::findings`).
        let command = if tool.runs_in_sandbox() {
            match tool.argv(&args) {
                // Unquoted: `findings` looks for host paths among its words.
                Some(argv) => argv.join(" "),
                None => tool.resource(&args).unwrap_or_default(),
            }
        } else {
            String::new()
        };
        let result = tool.call(args, &authorized.context).await;
        let told = result.as_ref().map_err(|e| e.told(tool.name()));
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Release);
        if let (Some(_), Some(workspace)) =
            (&authorized.context.workspace_room, authorized.context.workspace.clone())
        {
            let used =
                tokio::task::spawn_blocking(move || clade_tools::workspace::usage(&workspace))
                    .await
                    .unwrap_or(u64::MAX);
            self.disk.record(agent.tenant_id, agent.id, used);
        }
        let secrets = clade_tools::redact::Redactor::new(
            authorized.context.env.iter().map(|(_, v)| v.as_str()),
        );
        let (ok, text) = match &told {
            Ok(text) => (true, text.as_str()),
            Err(text) => (false, text.as_str()),
        };
        let detail = json!({
            "call": authorized.context.call_id,
            "ok": ok,
            "bytes": text.len(),
            "millis": started.elapsed().as_millis() as u64,
            "error": (!ok).then(|| secrets.redact(&text.chars().take(300).collect::<String>())),
        });
        self.write_audit(
            agent.tenant_id,
            Some(agent.id),
            AuditKind::ToolResult,
            Some(tool.name()),
            Some(if ok { "ok" } else { "error" }),
            detail,
        )
        .await;
        // What the sandbox stopped or refused is recorded apart from the result, so the audit
        // log answers "what did this agent try" without reading outputs.
        let findings = if tool.runs_in_sandbox() {
            let granted_env: Vec<&str> =
                authorized.context.env.iter().map(|(name, _)| name.as_str()).collect();
            let run = clade_tools::sandbox::RunFacts {
                command: &command,
                network: authorized.context.granted.network,
                granted_env: &granted_env,
            };
            clade_tools::sandbox::findings(text, &run)
        } else {
            Vec::new()
        };
        for finding in findings {
            // Whether the kernel or the sandbox saw it, or it was read from the command's text.
            let source =
                if finding.best_effort() { "output text (best-effort)" } else { "sandbox" };
            let (kind, outcome, what) = match finding {
                Finding::Violation(calls) => (
                    AuditKind::SandboxViolation,
                    "killed",
                    json!({ "forbidden system calls": calls, "then": "each process was killed" }),
                ),
                Finding::Limit(line) => (AuditKind::SandboxLimit, "stopped", json!(line)),
                Finding::SeemsLimited(line) => {
                    (AuditKind::SandboxLimit, "limited", json!(secrets.redact(&line)))
                }
                Finding::Refused(lines) => {
                    let lines: Vec<String> = lines.iter().map(|l| secrets.redact(l)).collect();
                    (AuditKind::SandboxDenied, "refused", json!(lines))
                }
                Finding::Denied(lines) => {
                    let lines: Vec<String> = lines.iter().map(|l| secrets.redact(l)).collect();
                    (AuditKind::SandboxDenied, "denied", json!(lines))
                }
                Finding::Hidden(paths) => {
                    let paths: Vec<String> = paths.iter().map(|p| secrets.redact(p)).collect();
                    (AuditKind::SandboxDenied, "hidden", json!({ "hidden host paths": paths }))
                }
                Finding::Withheld(what) => {
                    (AuditKind::SandboxDenied, "withheld", json!({ "withheld": what }))
                }
            };
            let detail =
                json!({ "call": authorized.context.call_id, "what": what, "source": source });
            self.write_audit(
                agent.tenant_id,
                Some(agent.id),
                kind,
                Some(tool.name()),
                Some(outcome),
                detail,
            )
            .await;
        }
        // A secret the command printed must not reach the model either.
        result.map(|t| secrets.redact(&t)).map_err(|e| e.redacted(|t| secrets.redact(t)))
    }

    /// One whole call (the operator's path and the one tests use): authorize, then execute.
    pub async fn call(
        &self,
        agent: &Agent,
        name: &str,
        args: Value,
        origin: &CallOrigin,
    ) -> CallOutcome {
        let tenant = self.tenant_name(agent.tenant_id).await;
        let set = self.tool_set();
        let Some(tool) = set.registry.get_for(name, &tenant, agent.handle.as_str()).cloned() else {
            return CallOutcome {
                content: self.unknown_tool_in(&set, agent, (name, &args), &|_| true, origin).await,
                is_error: true,
                decision: PolicyEffect::Deny,
            };
        };
        let denied = |error: clade_tools::Error| CallOutcome {
            content: error.to_string(),
            is_error: true,
            decision: PolicyEffect::Deny,
        };
        match self.authorize_in(&set, agent, tool.as_ref(), &args, origin).await {
            Err(error) => denied(error),
            Ok(authorized) if let Err(error) = self.record_decision(&authorized).await => {
                denied(error)
            }
            Ok(authorized) => match self.execute(agent, tool.as_ref(), args, &authorized).await {
                Ok(content) => {
                    CallOutcome { content, is_error: false, decision: PolicyEffect::Allow }
                }
                Err(error) => CallOutcome {
                    content: error.to_string(),
                    is_error: true,
                    decision: PolicyEffect::Allow,
                },
            },
        }
    }

    /// The answer to a call of a tool the agent does not have in `set`, audited as a denial;
    /// it lists the tools the caller is `offered` (a worker's, only those it was given).
    pub async fn unknown_tool_in(
        &self,
        set: &ToolSet,
        agent: &Agent,
        (name, args): (&str, &Value),
        offered: &(dyn Fn(&str) -> bool + Sync),
        origin: &CallOrigin,
    ) -> String {
        let tenant = self.tenant_name(agent.tenant_id).await;
        let known: Vec<&str> = set
            .registry
            .for_agent(&tenant, agent.handle.as_str())
            .map(|t| t.name())
            .filter(|name| offered(name))
            .collect();
        let content = format!("unknown tool {name:?}; available tools: {}", known.join(", "));
        self.write_entry(decision_entry(
            agent,
            name,
            "",
            PolicyEffect::Deny,
            &content,
            args,
            origin,
        ))
        .await;
        content
    }

    async fn await_approval(
        &self,
        agent: &Agent,
        asked: Asked<'_>,
        origin: &CallOrigin,
    ) -> Result<(), clade_tools::Error> {
        let Asked { tool, resource, args, decision, timeout } = asked;
        let arguments = args.to_string();
        let hash = arguments_hash(tool, args);
        let expires = Timestamp::from_millis(
            self.store
                .now()
                .as_millis()
                .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
        );
        let audit = AuditEntry {
            tenant: agent.tenant_id,
            agent: Some(agent.id),
            kind: AuditKind::ApprovalRequested,
            tool: Some(tool.to_owned()),
            decision: Some(ApprovalStatus::Pending.as_str().into()),
            detail: json!({ "call": origin.call_id, "resource": resource, "reason": decision.reason, "arguments_hash": hash }).to_string(),
        };
        let (approval, announced) = self
            .store
            .request_approval(
                NewApproval {
                    tenant: agent.tenant_id,
                    agent: agent.id,
                    call_key: origin.call_key.clone(),
                    call: origin.turn.is_some().then(|| origin.call_id.clone()),
                    tool: tool.to_owned(),
                    resource: resource.to_owned(),
                    arguments,
                    arguments_hash: hash.clone(),
                    reason: decision.reason.clone(),
                    session: origin.session,
                    turn: origin.turn,
                    expires_at: expires,
                },
                audit,
            )
            .await
            .map_err(|e| {
                clade_tools::Error::internal(
                    "cannot record the approval request: try again later",
                    e,
                )
            })?;
        tracing::info!(approval = %approval.id, agent = %agent.handle, tool, "tool call waits for approval");
        if let Some(hub) = self.hub.get() {
            hub.publish_aside(agent.id, &announced);
        }
        let notify = self.waiter(approval.id);
        // Dropped before a decision (its turn timed out or was cancelled, its client left),
        // the approval is cancelled: approving it later would run nothing.
        let mut guard = CancelOnDrop {
            store: self.store.clone(),
            hub: self.hub.get().cloned(),
            tenant: agent.tenant_id,
            agent: agent.id,
            tool: tool.to_owned(),
            id: approval.id,
            armed: true,
        };
        let result = loop {
            let current = match self.store.access(agent.tenant_id).approval(approval.id).await {
                Ok(row) => row,
                Err(e) => {
                    let told = format!("cannot read approval {}: try again later", approval.id);
                    break Err(clade_tools::Error::internal(told, e));
                }
            };
            match current.status {
                ApprovalStatus::Approved if current.arguments_hash == hash => break Ok(()),
                ApprovalStatus::Approved => {
                    break Err(clade_tools::Error::failed(format!(
                        "approval {} was for other arguments; not run",
                        approval.id
                    )));
                }
                ApprovalStatus::Denied => {
                    let note = current.note.map(|n| format!(": {n}")).unwrap_or_default();
                    let denied = format!("denied by an operator (approval {}){note}", approval.id);
                    break Err(clade_tools::Error::failed(denied));
                }
                ApprovalStatus::Expired => break Err(expired_text(&current).into()),
                ApprovalStatus::Cancelled => {
                    break Err(clade_tools::Error::failed(format!(
                        "approval {} was cancelled: {}",
                        approval.id,
                        current.note.unwrap_or_default()
                    )));
                }
                ApprovalStatus::Pending if self.store.now() >= current.expires_at => {
                    match self
                        .decide(agent.tenant_id, approval.id, Verdict::Expire, "timeout", None)
                        .await
                    {
                        Ok(row) if row.status == ApprovalStatus::Approved => break Ok(()),
                        _ => break Err(expired_text(&current).into()),
                    }
                }
                ApprovalStatus::Pending => {
                    // Until a decision here, a look for one made elsewhere, or the expiry.
                    let now = self.store.now().as_millis();
                    let expiry = current.expires_at.as_millis().saturating_sub(now).max(0);
                    let wait = APPROVAL_POLL.min(Duration::from_millis(expiry.unsigned_abs()));
                    tokio::select! {
                        () = notify.notified() => {}
                        () = self.store.clock().sleep(wait) => {}
                    }
                }
            }
        };
        guard.armed = false;
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&approval.id);
        }
        result
    }

    fn waiter(&self, id: ApprovalId) -> Arc<Notify> {
        match self.waiters.lock() {
            Ok(mut waiters) => waiters.entry(id).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Decides a pending approval and wakes the waiting call. `ApproveAlways` also adds an
    /// allow grant for exactly this tool and resource to the agent, so the same call is not
    /// asked again; both commit together and are audited.
    pub async fn decide(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        verdict: Verdict,
        by: &str,
        note: Option<String>,
    ) -> Result<ApprovalRow, AccessError> {
        let (status, always) = match verdict {
            Verdict::Approve => (ApprovalStatus::Approved, false),
            Verdict::ApproveAlways => (ApprovalStatus::Approved, true),
            Verdict::Deny => (ApprovalStatus::Denied, false),
            Verdict::Expire => (ApprovalStatus::Expired, false),
        };
        let pending = self.store.access(tenant).approval(id).await?;
        let grant = if always {
            // An argv tool's resource is quoted: a `*` in it is literal, and the grant exact.
            if pending.resource.contains('*')
                && !policy::ARGV_TOOLS.contains(&pending.tool.as_str())
            {
                return Err(AccessError::Invalid(format!(
                    "cannot approve always: the resource {:?} contains `*`, which a rule would read as a wildcard; approve once, or add a grant with `clade grants add`",
                    pending.resource
                )));
            }
            Some(NewGrant {
                tenant,
                agent: pending.agent_id,
                effect: "allow".into(),
                tool: pending.tool.clone(),
                resource: pending.resource.clone(),
                constraints: "{}".into(),
                parent: None,
                granted_by: format!("approval {id}"),
                expires_at: None,
            })
        } else {
            None
        };
        let mut audits = vec![AuditEntry {
            tenant,
            agent: Some(pending.agent_id),
            kind: AuditKind::ApprovalDecided,
            tool: Some(pending.tool.clone()),
            decision: Some(status.as_str().into()),
            detail: json!({ "approval": id.to_string(), "by": by, "note": note, "always": always, "arguments_hash": pending.arguments_hash }).to_string(),
        }];
        if let Some(grant) = &grant {
            audits.push(grant_audit(grant, AuditKind::GrantAdded, by));
        }
        let decision = ApprovalDecision { status, decided_by: by.to_owned(), note, grant, audits };
        let (row, announced) = self.store.access(tenant).decide_approval(id, decision).await?;
        if let Some(hub) = self.hub.get() {
            hub.publish_aside(row.agent_id, &announced);
        }
        if let Some(notify) = self.waiters.lock().ok().and_then(|w| w.get(&id).cloned()) {
            // A permit, not a broadcast: the waiter may be between its read and its wait.
            notify.notify_one();
        }
        Ok(row)
    }

    /// Adds a grant. With `parent`, it is a delegation and must narrow that grant (tool,
    /// resource, constraints, expiry); the child then lives only as long as its parent.
    /// Grants `agent` its template's default tools (`rules`, from [`template_tools`]). With
    /// `ceiling_of` (a tenant's own token made the agent), only what that tenant's ceiling
    /// allows: the rest is left out, each with why, as is a rule a grant cannot hold.
    pub async fn grant_template_tools(
        &self,
        agent: &Agent,
        rules: Vec<PolicyRule>,
        ceiling_of: Option<&str>,
        by: &str,
    ) -> Result<TemplateGrants, AccessError> {
        let mut given = TemplateGrants::default();
        for rule in rules {
            if let Some(tenant) = ceiling_of
                && let Err(AccessError::Forbidden(why)) = self.check_ceiling(tenant, &rule)
            {
                given.left_out.push((rule, why));
                continue;
            }
            match self.add_grant(agent, rule.clone(), None, None, by).await {
                Ok(_) => given.granted.push(rule),
                Err(AccessError::Invalid(why)) => given.left_out.push((rule, why)),
                Err(other) => return Err(other),
            }
        }
        Ok(given)
    }

    pub async fn add_grant(
        &self,
        agent: &Agent,
        rule: PolicyRule,
        parent: Option<GrantId>,
        expires_at: Option<Timestamp>,
        by: &str,
    ) -> Result<GrantRow, AccessError> {
        if rule.tool.trim().is_empty() || rule.resource.is_empty() {
            return Err(AccessError::Invalid(
                "tool and resource patterns must not be empty (use \"*\" for any)".into(),
            ));
        }
        if policy::may_be_argv_tool(&rule.tool)
            && let Err(why) = clade_tools::argv::ArgvPattern::parse(&rule.resource)
        {
            return Err(AccessError::Invalid(format!(
                "resource {:?} is not a command pattern for {}: {why} (e.g. \"git status **\")",
                rule.resource,
                policy::ARGV_TOOLS.join(", ")
            )));
        }
        let mut expires_at = expires_at;
        if let Some(parent_id) = parent {
            let parent = self.store.access(agent.tenant_id).grant(parent_id).await?;
            let now = self.store.now();
            if !parent.is_live(now) {
                return Err(AccessError::Invalid(format!(
                    "grant {parent_id} is revoked or expired; it cannot be delegated"
                )));
            }
            let parent_rule = rule_of(&parent)
                .ok_or_else(|| AccessError::Invalid(format!("grant {parent_id} is unreadable")))?;
            if let Some(why) = policy::narrowing_error(&parent_rule, &rule) {
                return Err(AccessError::Invalid(format!(
                    "a delegated grant can only narrow its parent: {why}"
                )));
            }
            expires_at = match (expires_at, parent.expires_at) {
                (Some(child), Some(limit)) if child > limit => {
                    return Err(AccessError::Invalid(
                        "a delegated grant cannot outlive its parent".into(),
                    ));
                }
                (None, limit) => limit,
                (child, _) => child,
            };
        }
        let grant = NewGrant {
            tenant: agent.tenant_id,
            agent: agent.id,
            effect: rule.effect.as_str().into(),
            tool: rule.tool.clone(),
            resource: rule.resource.clone(),
            constraints: serde_json::to_string(&rule.constraints).unwrap_or_else(|_| "{}".into()),
            parent,
            granted_by: by.to_owned(),
            expires_at,
        };
        let audit = grant_audit(&grant, AuditKind::GrantAdded, by);
        Ok(self.store.add_grant(grant, audit).await?)
    }

    pub async fn revoke_grant(
        &self,
        tenant: TenantId,
        id: GrantId,
        by: &str,
    ) -> Result<(), AccessError> {
        let grant = self.store.access(tenant).grant(id).await?;
        let audit = AuditEntry {
            tenant,
            agent: Some(grant.agent_id),
            kind: AuditKind::GrantRevoked,
            tool: Some(grant.tool.clone()),
            decision: Some(grant.effect.clone()),
            detail: json!({ "grant": id.to_string(), "by": by, "resource": grant.resource })
                .to_string(),
        };
        Ok(self.store.access(tenant).revoke_grant(id, audit).await?)
    }

    #[allow(clippy::too_many_arguments)]
    /// Appends a record whose loss stops nothing (a refusal: the call does not run anyway);
    /// a failure is logged.
    async fn write_entry(&self, entry: AuditEntry) {
        let kind = entry.kind;
        if let Err(err) = self.store.audit(entry).await {
            tracing::error!(error = %err, %kind, "cannot append to the audit log");
        }
    }

    async fn write_audit(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        kind: AuditKind,
        tool: Option<&str>,
        decision: Option<&str>,
        detail: Value,
    ) {
        let entry = AuditEntry {
            tenant,
            agent,
            kind,
            tool: tool.map(str::to_owned),
            decision: decision.map(str::to_owned),
            detail: detail.to_string(),
        };
        if let Err(err) = self.store.audit(entry).await {
            tracing::error!(error = %err, %kind, "cannot append to the audit log");
        }
    }
}

/// The `tool.decision` record of a call.
fn decision_entry(
    agent: &Agent,
    tool: &str,
    resource: &str,
    effect: PolicyEffect,
    reason: &str,
    args: &Value,
    origin: &CallOrigin,
) -> AuditEntry {
    let detail = json!({
        "call": origin.call_id,
        "by": origin.by,
        "session": origin.session.map(|s| s.to_string()),
        "turn": origin.turn.map(|t| t.to_string()),
        "resource": resource,
        "reason": reason,
        "arguments": redact(args),
    });
    AuditEntry {
        tenant: agent.tenant_id,
        agent: Some(agent.id),
        kind: AuditKind::ToolDecision,
        tool: Some(tool.to_owned()),
        decision: Some(effect.as_str().to_owned()),
        detail: detail.to_string(),
    }
}

fn expired_text(approval: &ApprovalRow) -> String {
    format!("denied: approval {} was not given before its timeout", approval.id)
}

fn grant_audit(grant: &NewGrant, kind: AuditKind, by: &str) -> AuditEntry {
    AuditEntry {
        tenant: grant.tenant,
        agent: Some(grant.agent),
        kind,
        tool: Some(grant.tool.clone()),
        decision: Some(grant.effect.clone()),
        detail: json!({
            "by": by,
            "resource": grant.resource,
            "constraints": serde_json::from_str::<Value>(&grant.constraints).unwrap_or(Value::Null),
            "parent": grant.parent.map(|p| p.to_string()),
            "expires_at": grant.expires_at.map(|t| t.to_string()),
        })
        .to_string(),
    }
}

/// The rule a stored grant holds, if its columns parse.
pub fn rule_of(grant: &GrantRow) -> Option<PolicyRule> {
    Some(PolicyRule {
        effect: PolicyEffect::parse(&grant.effect)?,
        tool: grant.tool.clone(),
        resource: grant.resource.clone(),
        constraints: serde_json::from_str(&grant.constraints).ok()?,
    })
}

/// The hash an approval binds: the tool and its exact arguments.
pub fn arguments_hash(tool: &str, args: &Value) -> String {
    let digest = Sha256::new()
        .chain_update(tool.as_bytes())
        .chain_update([0])
        .chain_update(args.to_string().as_bytes())
        .finalize();
    hex::encode(digest)
}

/// Arguments with credential-looking fields blanked, for the audit log.
fn redact(args: &Value) -> Value {
    const SENSITIVE: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "api_key",
        "apikey",
        "cookie",
        "credential",
    ];
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SENSITIVE.iter().any(|s| lower.contains(s)) {
                        (k.clone(), Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// A call refused because its decision could not be put on record: it must not run.
fn unrecorded(error: clade_store::Error) -> clade_tools::Error {
    clade_tools::Error::internal(
        "not run: the decision could not be recorded in the audit log",
        error,
    )
}

impl From<InvalidArguments> for clade_tools::Error {
    fn from(invalid: InvalidArguments) -> Self {
        let reason =
            format!("{}; its parameters are {}", invalid.problems.join("; "), invalid.parameters);
        clade_tools::Error::InvalidArguments { tool: invalid.tool, reason }
    }
}
