//! Policy: the operator's rules and the agent's grants decide a call (allow, deny, ask), within the tenant's ceiling and its workspace's room.

use std::sync::Arc;

use clade_config::{PolicyEffect, PolicyRule};
use clade_core::Agent;
use clade_tools::policy::{self, Decision, SourcedRule};
use clade_tools::{Tool, WorkspaceRoom};
use serde_json::Value;

use super::*;

impl ToolRunner {
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
    pub(super) async fn workspace_room(
        &self,
        set: &ToolSet,
        agent: &Agent,
    ) -> Option<WorkspaceRoom> {
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
}
