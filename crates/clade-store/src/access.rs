//! Grants, approvals and the audit log: what agents may do, what waits for an operator, and
//! the tamper-evident record of every decision.
//!
//! Rules are stored as plain columns (effect, tool and resource patterns, constraints as JSON);
//! the runtime gives them meaning. Every state change here commits together with its audit
//! record, so the log cannot miss a change that happened.

use crate::db::{Query, Row, Tx, query};
use clade_core::{AgentId, ApprovalId, GrantId, SessionId, TenantId, Timestamp, TurnId};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{Store, id_bytes, opt_id};
use crate::turns::{OutboxEvent, OutboxRow, insert_outbox};

/// A grant to create.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub tenant: TenantId,
    pub agent: AgentId,
    /// `allow`, `ask` or `deny`.
    pub effect: String,
    pub tool: String,
    pub resource: String,
    /// JSON object of constraints.
    pub constraints: String,
    pub parent: Option<GrantId>,
    /// Who granted it: `operator`, `approval <id>`, `agent <handle>`.
    pub granted_by: String,
    pub expires_at: Option<Timestamp>,
}

/// A stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: GrantId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub effect: String,
    pub tool: String,
    pub resource: String,
    pub constraints: String,
    pub parent_id: Option<GrantId>,
    pub granted_by: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl GrantRow {
    /// Unrevoked and unexpired at `now` (ancestors are checked by the caller).
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

pub use clade_core::ApprovalStatus;

/// A tool call waiting for an operator.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub tenant: TenantId,
    pub agent: AgentId,
    /// The call's effect key: one approval per call, found again after a restart.
    pub call_key: String,
    /// The model's id for the call, when a turn's model made it (what its `tool.called` says).
    pub call: Option<String>,
    pub tool: String,
    pub resource: String,
    /// The exact arguments (JSON) that will run if approved.
    pub arguments: String,
    pub arguments_hash: String,
    pub reason: String,
    pub session: Option<SessionId>,
    pub turn: Option<TurnId>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub id: ApprovalId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub call_key: String,
    pub tool: String,
    pub resource: String,
    pub arguments: String,
    pub arguments_hash: String,
    pub reason: String,
    pub status: ApprovalStatus,
    pub session_id: Option<SessionId>,
    pub turn_id: Option<TurnId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
}

/// How an approval was decided, with what commits alongside.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    pub status: ApprovalStatus,
    pub decided_by: String,
    pub note: Option<String>,
    /// Approve-always: the grant that stops the same call from asking again.
    pub grant: Option<NewGrant>,
    pub audits: Vec<AuditEntry>,
}

/// One audit record to append.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub tenant: TenantId,
    pub agent: Option<AgentId>,
    pub kind: clade_core::AuditKind,
    pub tool: Option<String>,
    pub decision: Option<String>,
    /// A JSON object; callers must have removed secrets.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: Timestamp,
    pub agent_id: Option<AgentId>,
    /// As stored: verification reads a record as the text it hashed, whatever it says.
    pub kind: String,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub agent: Option<AgentId>,
    pub tool: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Records after this sequence number (for paging).
    pub after: Option<i64>,
    pub limit: u32,
}

/// The result of checking a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub records: u64,
    /// The first record that does not chain, with why.
    pub broken: Option<(i64, String)>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record: covers the previous hash and every field, length-prefixed so no two
/// different records hash the same text.
fn record_hash(prev: &str, tenant: &TenantId, row: &AuditRow) -> String {
    let agent = row.agent_id.map(|a| a.to_string()).unwrap_or_default();
    let fields = [
        prev,
        &tenant.to_string(),
        &row.seq.to_string(),
        &row.at.as_millis().to_string(),
        &agent,
        &row.kind,
        row.tool.as_deref().unwrap_or(""),
        row.decision.as_deref().unwrap_or(""),
        &row.detail,
    ];
    let mut digest = Sha256::new();
    for field in fields {
        digest.update((field.len() as u64).to_le_bytes());
        digest.update(field.as_bytes());
    }
    hex::encode(digest.finalize())
}

/// Appends one record inside the caller's transaction.
pub(crate) async fn append_audit(conn: &mut Tx, entry: &AuditEntry, now: Timestamp) -> Result<()> {
    let tenant = entry.tenant.as_bytes().to_vec();
    // Each record chains to the one before: two nodes appending for a tenant take turns.
    conn.serialize(&format!("audit {}", entry.tenant)).await?;
    let last =
        query("SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(tenant.clone())
            .fetch_optional(&mut *conn)
            .await?;
    let (seq, prev) = match last {
        Some(row) => (row.try_get::<i64, _>("seq")? + 1, row.try_get::<String, _>("hash")?),
        None => (1, GENESIS.to_owned()),
    };
    let mut row = AuditRow {
        seq,
        at: now,
        agent_id: entry.agent,
        kind: entry.kind.as_str().to_owned(),
        tool: entry.tool.clone(),
        decision: entry.decision.clone(),
        detail: entry.detail.clone(),
        prev_hash: prev.clone(),
        hash: String::new(),
    };
    row.hash = record_hash(&prev, &entry.tenant, &row);
    query(
        "INSERT INTO audit_log (tenant_id, seq, at, agent_id, kind, tool, decision, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant)
    .bind(row.seq)
    .bind(row.at.as_millis())
    .bind(row.agent_id.map(|a| a.as_bytes().to_vec()))
    .bind(row.kind)
    .bind(row.tool)
    .bind(row.decision)
    .bind(row.detail)
    .bind(row.prev_hash)
    .bind(row.hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn opt_time(row: &Row, column: &str) -> Result<Option<Timestamp>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(Timestamp::from_millis))
}

fn grant_from_row(row: &Row) -> Result<GrantRow> {
    Ok(GrantRow {
        id: GrantId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        effect: row.try_get("effect")?,
        tool: row.try_get("tool")?,
        resource: row.try_get("resource")?,
        constraints: row.try_get("constraints")?,
        parent_id: opt_id(row, "parent_id")?.map(GrantId::from_bytes),
        granted_by: row.try_get("granted_by")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        expires_at: opt_time(row, "expires_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

fn approval_from_row(row: &Row) -> Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: ApprovalId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        call_key: row.try_get("call_key")?,
        tool: row.try_get("tool")?,
        resource: row.try_get("resource")?,
        arguments: row.try_get("arguments")?,
        arguments_hash: row.try_get("arguments_hash")?,
        reason: row.try_get("reason")?,
        status: row.word("status", ApprovalStatus::parse)?,
        session_id: opt_id(row, "session_id")?.map(SessionId::from_bytes),
        turn_id: opt_id(row, "turn_id")?.map(TurnId::from_bytes),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at")?),
        decided_at: opt_time(row, "decided_at")?,
        decided_by: row.try_get("decided_by")?,
        note: row.try_get("note")?,
    })
}

fn audit_from_row(row: &Row) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: row.try_get("seq")?,
        at: Timestamp::from_millis(row.try_get("at")?),
        agent_id: opt_id(row, "agent_id")?.map(AgentId::from_bytes),
        kind: row.try_get("kind")?,
        tool: row.try_get("tool")?,
        decision: row.try_get("decision")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

const GRANT_COLUMNS: &str = "id, tenant_id, agent_id, effect, tool, resource, constraints, parent_id, \
     granted_by, created_at, expires_at, revoked_at";
const APPROVAL_COLUMNS: &str = "id, tenant_id, agent_id, call_key, tool, resource, arguments, \
     arguments_hash, reason, status, session_id, turn_id, created_at, expires_at, decided_at, \
     decided_by, note";

async fn insert_grant(conn: &mut Tx, grant: &GrantRow) -> Result<()> {
    query(
        "INSERT INTO grants (id, tenant_id, agent_id, effect, tool, resource, constraints, parent_id, \
         granted_by, created_at, expires_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)",
    )
    .bind(grant.id.as_bytes().to_vec())
    .bind(grant.tenant_id.as_bytes().to_vec())
    .bind(grant.agent_id.as_bytes().to_vec())
    .bind(grant.effect.clone())
    .bind(grant.tool.clone())
    .bind(grant.resource.clone())
    .bind(grant.constraints.clone())
    .bind(grant.parent_id.map(|p| p.as_bytes().to_vec()))
    .bind(grant.granted_by.clone())
    .bind(grant.created_at.as_millis())
    .bind(grant.expires_at.map(|t| t.as_millis()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// The one row `query` finds, parsed, or the `missing` error.
    async fn one<T>(
        &self,
        query: Query,
        parse: fn(&Row) -> Result<T>,
        missing: impl FnOnce() -> Error,
    ) -> Result<T> {
        let row = self.maybe_row(query).await?;
        row.as_ref().map(parse).transpose()?.ok_or_else(missing)
    }

    fn grant_row(&self, grant: NewGrant) -> GrantRow {
        let now = self.now();
        GrantRow {
            id: GrantId::generate(now),
            tenant_id: grant.tenant,
            agent_id: grant.agent,
            effect: grant.effect,
            tool: grant.tool,
            resource: grant.resource,
            constraints: grant.constraints,
            parent_id: grant.parent,
            granted_by: grant.granted_by,
            created_at: now,
            expires_at: grant.expires_at,
            revoked_at: None,
        }
    }

    /// Stores a grant with its audit record (whose detail the caller wrote).
    pub async fn add_grant(&self, grant: NewGrant, audit: AuditEntry) -> Result<GrantRow> {
        let row = self.grant_row(grant);
        let stored = row.clone();
        let now = self.now();
        self.write(move |conn| {
            let audit = audit.clone();
            let stored = stored.clone();
            Box::pin(async move {
                insert_grant(conn, &stored).await?;
                append_audit(conn, &audit, now).await
            })
        })
        .await?;
        Ok(row)
    }

    /// Records a request for approval, or returns the one this call made before (same key);
    /// with the `approval.requested` it announced (none for a request made before), to publish.
    pub async fn request_approval(
        &self,
        approval: NewApproval,
        audit: AuditEntry,
    ) -> Result<(ApprovalRow, Vec<OutboxRow>)> {
        let now = self.now();
        let id = ApprovalId::generate(now);
        let tenant = approval.tenant;
        let key = approval.call_key.clone();
        let announced = self.write(move |conn| {
            let approval = approval.clone();
            let audit = audit.clone();
            Box::pin(async move {
                let exists = query("SELECT id FROM approvals WHERE tenant_id = $1 AND call_key = $2")
                    .bind(approval.tenant.as_bytes().to_vec())
                    .bind(approval.call_key.clone())
                    .fetch_optional(&mut *conn)
                    .await?;
                if exists.is_some() {
                    return Ok(Vec::new());
                }
                query(
                    "INSERT INTO approvals (id, tenant_id, agent_id, call_key, tool, resource, arguments, \
                     arguments_hash, reason, status, session_id, turn_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)",
                )
                .bind(id.as_bytes().to_vec())
                .bind(approval.tenant.as_bytes().to_vec())
                .bind(approval.agent.as_bytes().to_vec())
                .bind(approval.call_key)
                .bind(approval.tool.clone())
                .bind(approval.resource.clone())
                .bind(approval.arguments.clone())
                .bind(approval.arguments_hash.clone())
                .bind(approval.reason.clone())
                .bind(approval.session.map(|s| s.as_bytes().to_vec()))
                .bind(approval.turn.map(|t| t.as_bytes().to_vec()))
                .bind(now.as_millis())
                .bind(approval.expires_at.as_millis())
                .execute(&mut *conn)
                .await?;
                let mut audit = audit;
                audit.detail = merge_id(&audit.detail, "approval", &id.to_string());
                append_audit(conn, &audit, now).await?;
                // Subscribers (and resuming stream clients) learn that the turn waits.
                let requested = clade_protocol::ApprovalRequested {
                    approval: id.to_string(),
                    call: approval.call.clone(),
                    tool: approval.tool.clone(),
                    resource: approval.resource.clone(),
                    arguments: serde_json::from_str(&approval.arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(approval.arguments.clone())),
                    arguments_hash: approval.arguments_hash.clone(),
                    reason: approval.reason.clone(),
                    expires_at: approval.expires_at.as_millis(),
                };
                let event = OutboxEvent::from(&clade_protocol::LifecycleEvent::from(requested));
                insert_outbox(conn, now, approval.tenant, approval.session, approval.turn, &[event]).await
            })
        })
        .await?;
        Ok((self.access(tenant).approval_by_call(&key).await?, announced))
    }

    /// Appends one audit record on its own.
    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        let now = self.now();
        self.write(move |conn| {
            let entry = entry.clone();
            Box::pin(async move { append_audit(conn, &entry, now).await })
        })
        .await
    }
}

/// Adds `"key": value` to a JSON object text (used to name an id created in the transaction).
fn merge_id(detail: &str, key: &str, value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(detail) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
            serde_json::Value::Object(map).to_string()
        }
        _ => detail.to_owned(),
    }
}

/// One tenant's grants, approvals and audit trail: every read filters by the tenant it was
/// made for, whatever ids it is handed.
#[derive(Clone, Copy)]
pub struct Access<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s grants, approvals and audit records.
    pub fn access(&self, tenant: TenantId) -> Access<'_> {
        Access { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's grants, approvals and audit records.
    pub fn access(&self) -> Access<'_> {
        self.store().access(self.tenant())
    }
}

impl Access<'_> {
    /// Revokes a grant; its delegated children stop counting with it.
    pub async fn revoke_grant(self, id: GrantId, audit: AuditEntry) -> Result<()> {
        let tenant = self.tenant;
        let now = self.store.now();
        self.store.write(move |conn| {
            let audit = audit.clone();
            Box::pin(async move {
                let done = query(
                    "UPDATE grants SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
                if done == 0 {
                    return Err(Error::GrantNotFound(id.to_string()));
                }
                append_audit(conn, &audit, now).await
            })
        })
        .await
    }

    pub async fn grant(self, id: GrantId) -> Result<GrantRow> {
        let tenant = self.tenant;
        self.store
            .one(
                query(format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(id.as_bytes().to_vec()),
                grant_from_row,
                || Error::GrantNotFound(id.to_string()),
            )
            .await
    }

    /// Every grant of a tenant (or of one agent), revoked ones included, oldest first.
    pub async fn grants(self, agent: Option<AgentId>) -> Result<Vec<GrantRow>> {
        let tenant = self.tenant;
        let rows = match agent {
            Some(agent) => {
                self.store.rows(
                    query(format!(
                        "SELECT {GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND agent_id = $2 ORDER BY id"
                    ))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent.as_bytes().to_vec()),
                )
                .await?
            }
            None => {
                self.store.rows(
                    query(format!(
                        "SELECT {GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 ORDER BY id"
                    ))
                    .bind(tenant.as_bytes().to_vec()),
                )
                .await?
            }
        };
        rows.iter().map(grant_from_row).collect()
    }

    /// The grants in force for `agent` now: live, with every ancestor live. Ancestors may belong
    /// to other agents (delegation).
    pub async fn effective_grants(self, agent: AgentId) -> Result<Vec<GrantRow>> {
        let tenant = self.tenant;
        let now = self.store.now();
        let own = self.store.access(tenant).grants(Some(agent)).await?;
        let mut live = Vec::new();
        'grants: for grant in own {
            let mut current = grant.clone();
            for _ in 0..32 {
                if !current.is_live(now) {
                    continue 'grants;
                }
                match current.parent_id {
                    None => {
                        live.push(grant);
                        continue 'grants;
                    }
                    Some(parent) => match self.store.access(tenant).grant(parent).await {
                        Ok(p) => current = p,
                        Err(Error::GrantNotFound(_)) => continue 'grants,
                        Err(e) => return Err(e),
                    },
                }
            }
        }
        Ok(live)
    }

    pub async fn approval_by_call(self, call_key: &str) -> Result<ApprovalRow> {
        let tenant = self.tenant;
        self.store.one(
            query(format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND call_key = $2"
            ))
            .bind(tenant.as_bytes().to_vec())
            .bind(call_key.to_owned()),
            approval_from_row,
            || Error::ApprovalNotFound(call_key.to_owned()),
        )
        .await
    }

    pub async fn approval(self, id: ApprovalId) -> Result<ApprovalRow> {
        let tenant = self.tenant;
        self.store
            .one(
                query(format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(id.as_bytes().to_vec()),
                approval_from_row,
                || Error::ApprovalNotFound(id.to_string()),
            )
            .await
    }

    /// A tenant's approvals, newest first; only those with `status` when given.
    pub async fn approvals(
        self,
        agent: Option<AgentId>,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>> {
        let tenant = self.tenant;
        // An empty blob stands for "any agent": no id is empty.
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 \
                     AND ($2 = '' OR status = $2) AND (length($4) = 0 OR agent_id = $4) \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(status.map(|s| s.as_str()).unwrap_or("").to_owned())
                .bind(i64::from(limit))
                .bind(agent.map_or_else(Vec::new, |a| a.as_bytes().to_vec())),
            )
            .await?;
        rows.iter().map(approval_from_row).collect()
    }

    /// Decides a pending approval, with an optional grant (approve-always) in the same commit.
    /// A decided approval is never changed again.
    pub async fn decide_approval(
        self,
        id: ApprovalId,
        decision: ApprovalDecision,
    ) -> Result<(ApprovalRow, Vec<OutboxRow>)> {
        let tenant = self.tenant;
        let now = self.store.now();
        let ApprovalDecision { status, decided_by, note, grant, audits } = decision;
        let grant = grant.map(|g| self.store.grant_row(g));
        let announced = self
            .store
            .write(move |conn| {
                let audits = audits.clone();
                let decided_by = decided_by.clone();
                let grant = grant.clone();
                let note = note.clone();
                Box::pin(async move {
                    let done = query(
                    "UPDATE approvals SET status = $1, decided_at = $2, decided_by = $3, note = $4 \
                     WHERE tenant_id = $5 AND id = $6 AND status = 'pending'",
                )
                .bind(status.as_str())
                .bind(now.as_millis())
                .bind(decided_by)
                .bind(note)
                .bind(tenant.as_bytes().to_vec())
                .bind(id.as_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
                    if done == 0 {
                        let current =
                            query("SELECT status FROM approvals WHERE tenant_id = $1 AND id = $2")
                                .bind(tenant.as_bytes().to_vec())
                                .bind(id.as_bytes().to_vec())
                                .fetch_optional(&mut *conn)
                                .await?;
                        return Err(match current {
                            Some(row) => Error::ApprovalDecided {
                                id: id.to_string(),
                                status: row.try_get("status")?,
                            },
                            None => Error::ApprovalNotFound(id.to_string()),
                        });
                    }
                    if let Some(grant) = &grant {
                        insert_grant(conn, grant).await?;
                    }
                    let placed = query(
                    "SELECT session_id, turn_id FROM approvals WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(id.as_bytes().to_vec())
                .fetch_one(&mut *conn)
                .await?;
                    let session = opt_id(&placed, "session_id")?.map(SessionId::from_bytes);
                    let turn = opt_id(&placed, "turn_id")?.map(TurnId::from_bytes);
                    let decided = clade_protocol::ApprovalDecided {
                        approval: id.to_string(),
                        status: status.into(),
                    };
                    let event = OutboxEvent::from(&clade_protocol::LifecycleEvent::from(decided));
                    let announced =
                        insert_outbox(conn, now, tenant, session, turn, &[event]).await?;
                    for audit in &audits {
                        append_audit(conn, audit, now).await?;
                    }
                    Ok(announced)
                })
            })
            .await?;
        Ok((self.store.access(tenant).approval(id).await?, announced))
    }

    /// A tenant's audit records in order, filtered.
    pub async fn audit_records(self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let tenant = self.tenant;
        let rows = self.store
            .rows(
                query(
                    "SELECT seq, at, agent_id, kind, tool, decision, detail, prev_hash, hash FROM audit_log \
                     WHERE tenant_id = $1 AND seq > $2 AND at >= $3 AND at < $4 \
                     AND ($5 = '' OR tool = $5) AND ($6 = 0 OR agent_id = $7) \
                     ORDER BY seq LIMIT $8",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(filter.after.unwrap_or(0))
                .bind(filter.since.map(|t| t.as_millis()).unwrap_or(i64::MIN))
                .bind(filter.until.map(|t| t.as_millis()).unwrap_or(i64::MAX))
                .bind(filter.tool.clone().unwrap_or_default())
                .bind(i64::from(filter.agent.is_some()))
                .bind(filter.agent.map(|a| a.as_bytes().to_vec()).unwrap_or_default())
                .bind(i64::from(filter.limit.max(1))),
            )
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// Recomputes a tenant's whole chain: every record must hash to its stored hash and link to
    /// its predecessor, with no gap in sequence numbers.
    pub async fn verify_audit(self) -> Result<AuditVerification> {
        let tenant = self.tenant;
        let mut prev = GENESIS.to_owned();
        let mut expected_seq = 1;
        let mut records = 0;
        loop {
            let page = self
                .store
                .access(tenant)
                .audit_records(&AuditFilter {
                    after: Some(expected_seq - 1),
                    limit: 1000,
                    ..AuditFilter::default()
                })
                .await?;
            if page.is_empty() {
                return Ok(AuditVerification { records, broken: None });
            }
            for row in page {
                let broken = |why: &str| {
                    Ok(AuditVerification { records, broken: Some((row.seq, why.to_owned())) })
                };
                if row.seq != expected_seq {
                    return broken(&format!(
                        "sequence jumps from {} to {}: records were removed",
                        expected_seq - 1,
                        row.seq
                    ));
                }
                if row.prev_hash != prev {
                    return broken("its previous-hash does not match the record before it");
                }
                if record_hash(&prev, &tenant, &row) != row.hash {
                    return broken("its contents do not match its hash: the record was altered");
                }
                prev = row.hash.clone();
                expected_seq += 1;
                records += 1;
            }
        }
    }
}
