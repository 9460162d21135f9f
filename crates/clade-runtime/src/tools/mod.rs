//! The one path every tool call takes, from a model or an operator: policy, approval, sandboxed
//! execution, audit.
//!
//! [`ToolRunner::authorize`] loads the operator's rules and the agent's live grants, decides,
//! and for `ask` records an approval (one per call, so a restarted turn finds it again) and
//! waits for it; [`ToolRunner::execute`] runs the tool with only what was granted. Every
//! decision, approval, result and grant change lands in the tenant's audit chain.
//!
//! Split by concern: `set.rs` (the tools and rules in force, argument checks), `authorization.rs`
//! (policy decisions), `approvals.rs` (waiting for an operator), `grants.rs` (agents' grants),
//! `audit.rs` (the audit chain); this module holds the runner and a call's execution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clade_config::{Constraints, PolicyEffect, ToolsConfig};
use clade_core::{
    Agent, ApprovalId, AuditKind, SecretName, SessionId, TenantId, Timestamp, TurnId,
};
use clade_store::{AuditEntry, Secrets, Store};
use clade_tools::policy::Decision;
use clade_tools::sandbox::Finding;
pub use clade_tools::sandbox::SandboxHealth;
use clade_tools::{CallContext, Registry, Tool};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::hub::Hub;

mod approvals;
mod audit;
mod authorization;
mod grants;
mod set;

use approvals::{Asked, decision_entry};
use audit::{arguments_hash, redact, unrecorded};
use grants::grant_audit;
pub use grants::{TemplateGrants, rule_of, template_tools};
pub use set::{InvalidArguments, ToolSet};

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
}
