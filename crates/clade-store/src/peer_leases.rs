//! Leases to paired components: a tenant grants a paired subscriber its events (or one
//! agent's, or one session's) until an expiry. A lease ends at its expiry, when the tenant
//! revokes it, when its session or agent is deleted, when the component stops answering, or
//! when the component is unpaired; an ended lease stays listed with when and why. Granting,
//! revoking and finding a lease expired are audited in the lease's tenant.
//!
//! Whether a component may be leased to at all (the agents it serves) is the caller's to
//! check: this layer does not read agent patterns.

use std::time::Duration;

use clade_core::{AgentId, AuditKind, LeaseId, SessionId, TenantId, Timestamp};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes, opt_id};

/// The most leases a tenant may hold live at once.
pub const MAX_LIVE_LEASES_PER_TENANT: i64 = 100;
/// The longest a lease may run.
pub const MAX_LEASE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What a lease covers within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseScope {
    Tenant,
    Agent(AgentId),
    Session(SessionId),
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub id: LeaseId,
    pub tenant_id: TenantId,
    pub peer_kind: String,
    pub peer_name: String,
    pub scope: LeaseScope,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
    pub granted_by: String,
    pub ended_at: Option<Timestamp>,
    pub ended_why: Option<String>,
}

impl LeaseRow {
    /// Whether the lease is in force at `now`.
    pub fn live(&self, now: Timestamp) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }

    /// Whether an event of `tenant`, in `session` of `agent`, made at `at`, falls under the
    /// lease: within its scope, and made while the lease was in force.
    pub fn covers(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        session: Option<SessionId>,
        at: Timestamp,
    ) -> bool {
        let in_time = at >= self.granted_at
            && at < self.expires_at
            && self.ended_at.is_none_or(|ended| at < ended);
        let in_scope = match self.scope {
            LeaseScope::Tenant => true,
            LeaseScope::Agent(id) => agent == Some(id),
            LeaseScope::Session(id) => session == Some(id),
        };
        tenant == self.tenant_id && in_time && in_scope
    }
}

const COLUMNS: &str = "id, tenant_id, peer_kind, peer_name, agent_id, session_id, granted_at, \
                       expires_at, granted_by, ended_at, ended_why";

fn lease_row(row: &Row) -> Result<LeaseRow> {
    let agent = opt_id(row, "agent_id")?.map(AgentId::from_bytes);
    let session = opt_id(row, "session_id")?.map(SessionId::from_bytes);
    let ended_at: Option<i64> = row.try_get("ended_at")?;
    Ok(LeaseRow {
        id: LeaseId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        peer_kind: row.try_get("peer_kind")?,
        peer_name: row.try_get("peer_name")?,
        scope: match (agent, session) {
            (_, Some(session)) => LeaseScope::Session(session),
            (Some(agent), None) => LeaseScope::Agent(agent),
            (None, None) => LeaseScope::Tenant,
        },
        granted_at: Timestamp::from_millis(row.try_get("granted_at")?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at")?),
        granted_by: row.try_get("granted_by")?,
        ended_at: ended_at.map(Timestamp::from_millis),
        ended_why: row.try_get("ended_why")?,
    })
}

fn scope_detail(scope: LeaseScope) -> serde_json::Value {
    match scope {
        LeaseScope::Tenant => serde_json::json!({ "scope": "tenant" }),
        LeaseScope::Agent(id) => serde_json::json!({ "scope": "agent", "agent": id.to_string() }),
        LeaseScope::Session(id) => {
            serde_json::json!({ "scope": "session", "session": id.to_string() })
        }
    }
}

impl Store {
    async fn open_leases(&self, peer_kind: &str, peer_name: &str) -> Result<Vec<LeaseRow>> {
        let rows = self
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM peer_leases WHERE peer_kind = $1 AND peer_name = $2 \
                     AND ended_at IS NULL ORDER BY granted_at"
                ))
                .bind(peer_kind.to_owned())
                .bind(peer_name.to_owned()),
            )
            .await?;
        rows.iter().map(lease_row).collect()
    }

    /// Ends each lease (a lease another writer ended first is left alone), with an audit
    /// record in its tenant.
    async fn end_leases(&self, leases: Vec<LeaseRow>, why: &str) -> Result<()> {
        for lease in leases {
            let mut detail = scope_detail(lease.scope);
            detail["lease"] = lease.id.to_string().into();
            detail["peer"] = format!("{}/{}", lease.peer_kind, lease.peer_name).into();
            detail["why"] = why.into();
            let audit = self.admin_record(lease.tenant_id, None, AuditKind::LeaseEnded, detail);
            let (id, why) = (lease.id, why.to_owned());
            self.transact(lease.tenant_id, move |work| {
                let (audit, why) = (audit.clone(), why.clone());
                Box::pin(async move {
                    let now = work.now();
                    let ended = query(
                        "UPDATE peer_leases SET ended_at = $2, ended_why = $3 \
                         WHERE id = $1 AND ended_at IS NULL",
                    )
                    .bind(id.as_bytes().to_vec())
                    .bind(now.as_millis())
                    .bind(why)
                    .execute(work.conn())
                    .await?;
                    if ended > 0 {
                        work.audit(&audit).await?;
                    }
                    Ok(())
                })
            })
            .await?;
        }
        Ok(())
    }
}

/// One tenant's leases to paired components.
#[derive(Clone, Copy)]
pub struct PeerLeases<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s leases to paired components.
    pub fn leases(&self, tenant: TenantId) -> PeerLeases<'_> {
        PeerLeases { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's leases to paired components.
    pub fn leases(&self) -> PeerLeases<'_> {
        self.store().leases(self.tenant())
    }
}

impl PeerLeases<'_> {
    /// Leases `scope` of `tenant` to the paired component `peer_kind`/`peer_name` for `ttl`,
    /// audited. Refuses a component that is not paired, an agent or session of another
    /// tenant, a `ttl` of zero or over [`MAX_LEASE`], and a tenant at
    /// [`MAX_LIVE_LEASES_PER_TENANT`].
    pub async fn grant(
        self,
        peer_kind: &str,
        peer_name: &str,
        scope: LeaseScope,
        ttl: Duration,
    ) -> Result<LeaseRow> {
        let tenant = self.tenant;
        if ttl.is_zero() || ttl > MAX_LEASE {
            return Err(Error::InvalidLease(format!(
                "ttl_secs: a lease runs 1 s to {} days",
                MAX_LEASE.as_secs() / 86_400
            )));
        }
        let now = self.store.now();
        let lease = LeaseRow {
            id: LeaseId::generate(now),
            tenant_id: tenant,
            peer_kind: peer_kind.to_owned(),
            peer_name: peer_name.to_owned(),
            scope,
            granted_at: now,
            expires_at: now.plus(ttl),
            granted_by: self.store.actor().to_owned(),
            ended_at: None,
            ended_why: None,
        };
        let mut detail = scope_detail(scope);
        detail["lease"] = lease.id.to_string().into();
        detail["peer"] = format!("{peer_kind}/{peer_name}").into();
        detail["expires_at"] = lease.expires_at.as_millis().into();
        let agent = match scope {
            LeaseScope::Agent(id) => Some(id),
            _ => None,
        };
        let audit = self.store.admin_record(tenant, agent, AuditKind::LeaseGranted, detail);
        let row = lease.clone();
        self.store.transact(tenant, move |work| {
            let (lease, audit) = (row.clone(), audit.clone());
            Box::pin(async move {
                let paired = query("SELECT 1 AS one FROM peers WHERE kind = $1 AND name = $2")
                    .bind(lease.peer_kind.clone())
                    .bind(lease.peer_name.clone())
                    .fetch_optional(work.conn())
                    .await?;
                if paired.is_none() {
                    return Err(Error::PeerNotFound(lease.peer_name.clone()));
                }
                let tenant_bytes = lease.tenant_id.as_bytes().to_vec();
                let (agent, session) = match lease.scope {
                    LeaseScope::Tenant => (None, None),
                    LeaseScope::Agent(id) => {
                        let owned = query("SELECT 1 AS one FROM agents WHERE id = $1 AND tenant_id = $2")
                            .bind(id.as_bytes().to_vec())
                            .bind(tenant_bytes.clone())
                            .fetch_optional(work.conn())
                            .await?;
                        if owned.is_none() {
                            return Err(Error::AgentNotFound(id.to_string()));
                        }
                        (Some(id.as_bytes().to_vec()), None)
                    }
                    LeaseScope::Session(id) => {
                        let owned = query("SELECT agent_id FROM sessions WHERE id = $1 AND tenant_id = $2")
                            .bind(id.as_bytes().to_vec())
                            .bind(tenant_bytes.clone())
                            .fetch_optional(work.conn())
                            .await?;
                        let Some(owned) = owned else {
                            return Err(Error::SessionNotFound(id.to_string()));
                        };
                        let agent: Vec<u8> = owned.try_get("agent_id")?;
                        (Some(agent), Some(id.as_bytes().to_vec()))
                    }
                };
                let live = query(
                    "SELECT COUNT(*) AS n FROM peer_leases WHERE tenant_id = $1 \
                     AND ended_at IS NULL AND expires_at > $2",
                )
                .bind(tenant_bytes.clone())
                .bind(lease.granted_at.as_millis())
                .fetch_one(work.conn())
                .await?;
                let live: i64 = live.try_get("n")?;
                if live >= MAX_LIVE_LEASES_PER_TENANT {
                    return Err(Error::QuotaExceeded(format!(
                        "a tenant holds at most {MAX_LIVE_LEASES_PER_TENANT} live leases; revoke one first"
                    )));
                }
                query(format!(
                    "INSERT INTO peer_leases ({COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)"
                ))
                .bind(lease.id.as_bytes().to_vec())
                .bind(tenant_bytes)
                .bind(lease.peer_kind.clone())
                .bind(lease.peer_name.clone())
                .bind(agent)
                .bind(session)
                .bind(lease.granted_at.as_millis())
                .bind(lease.expires_at.as_millis())
                .bind(lease.granted_by.clone())
                .execute(work.conn())
                .await?;
                work.audit(&audit).await
            })
        })
        .await?;
        Ok(lease)
    }

    /// A tenant's leases, newest first: live and ended.
    pub async fn list(self, limit: u32) -> Result<Vec<LeaseRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM peer_leases WHERE tenant_id = $1 \
                     ORDER BY granted_at DESC, id DESC LIMIT $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(lease_row).collect()
    }

    /// One of a tenant's leases; another tenant's is not found.
    pub async fn get(self, id: LeaseId) -> Result<LeaseRow> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM peer_leases WHERE id = $1 AND tenant_id = $2"
                ))
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        match rows.first() {
            Some(row) => lease_row(row),
            None => Err(Error::LeaseNotFound(id.to_string())),
        }
    }

    /// Ends one of a tenant's leases now, saying `why`, audited; one already ended is left as
    /// it was.
    pub async fn end(self, id: LeaseId, why: &str) -> Result<LeaseRow> {
        let tenant = self.tenant;
        let lease = self.store.leases(tenant).get(id).await?;
        if lease.ended_at.is_some() {
            return Ok(lease);
        }
        self.store.end_leases(vec![lease], why).await?;
        self.store.leases(tenant).get(id).await
    }

    /// Ends the open leases of one session to a component (a leased CLI's chat on it closed),
    /// saying `why`, audited; how many ended.
    pub async fn end_for_session(
        self,
        peer_kind: &str,
        peer_name: &str,
        session: SessionId,
        why: &str,
    ) -> Result<usize> {
        let tenant = self.tenant;
        let open: Vec<_> = self
            .store
            .open_leases(peer_kind, peer_name)
            .await?
            .into_iter()
            .filter(|lease| {
                lease.tenant_id == tenant && lease.scope == LeaseScope::Session(session)
            })
            .collect();
        let count = open.len();
        self.store.end_leases(open, why).await?;
        Ok(count)
    }
}

impl crate::Peers<'_> {
    /// The live leases to a component, after ending (and auditing) those found expired.
    pub async fn leases_of(self, peer_kind: &str, peer_name: &str) -> Result<Vec<LeaseRow>> {
        let leases = self.store.open_leases(peer_kind, peer_name).await?;
        let now = self.store.now();
        let (live, expired): (Vec<_>, Vec<_>) = leases.into_iter().partition(|l| l.live(now));
        if !expired.is_empty() {
            self.store.end_leases(expired, "expired").await?;
        }
        Ok(live)
    }

    /// Ends every open lease to a component (it stopped answering, or was unpaired), saying
    /// `why`, audited; how many ended.
    pub async fn end_leases_of(self, peer_kind: &str, peer_name: &str, why: &str) -> Result<usize> {
        let open = self.store.open_leases(peer_kind, peer_name).await?;
        let count = open.len();
        self.store.end_leases(open, why).await?;
        Ok(count)
    }
}
