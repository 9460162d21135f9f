//! Approvals: a call policy asked an operator about waits for the decision (or its timeout), and a call that went away cancels its approval.

use std::sync::Arc;
use std::time::Duration;

use clade_config::PolicyEffect;
use clade_core::{Agent, ApprovalId, AuditKind, TenantId, Timestamp};
use clade_store::{
    ApprovalDecision, ApprovalRow, ApprovalStatus, AuditEntry, NewApproval, NewGrant, Store,
};
use clade_tools::policy::{self, Decision};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::*;

/// A call policy asked an operator about, and how long the operator has to answer.
pub(super) struct Asked<'a> {
    pub(super) tool: &'a str,
    pub(super) resource: &'a str,
    pub(super) args: &'a Value,
    pub(super) decision: &'a Decision,
    pub(super) timeout: Duration,
}

/// Cancels a pending approval whose waiting call went away (see `await_approval`).
pub(super) struct CancelOnDrop {
    pub(super) store: Store,
    /// Where its `approval.decided` goes live.
    pub(super) hub: Option<crate::hub::Hub>,
    pub(super) tenant: TenantId,
    pub(super) agent: clade_core::AgentId,
    pub(super) tool: String,
    pub(super) id: ApprovalId,
    pub(super) armed: bool,
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
pub(super) const APPROVAL_POLL: Duration = Duration::from_millis(300);

/// The `tool.decision` record of a call.
pub(super) fn decision_entry(
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

pub(super) fn expired_text(approval: &ApprovalRow) -> String {
    format!("denied: approval {} was not given before its timeout", approval.id)
}

impl ToolRunner {
    pub(super) async fn await_approval(
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

    pub(super) fn waiter(&self, id: ApprovalId) -> Arc<Notify> {
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
                    "cannot approve always: the resource {:?} contains `*`, which a rule would read as a wildcard; approve once, or add a grant instead",
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
}
