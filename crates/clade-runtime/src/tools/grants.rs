//! Grants: an agent's live permissions beside the operator's rules, made from a template's tools or one by one, revoked, each change audited.

use clade_config::{PolicyEffect, PolicyRule};
use clade_core::{Agent, AuditKind, GrantId, TenantId, Timestamp};
use clade_store::{AuditEntry, GrantRow, NewGrant};
use clade_tools::policy;
use serde_json::{Value, json};

use super::*;

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

pub(super) fn grant_audit(grant: &NewGrant, kind: AuditKind, by: &str) -> AuditEntry {
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

impl ToolRunner {
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
}
