//! Components paired with the gateway (`clade pair`): what kind each is, its name, endpoint and
//! public key, and the agents it serves. Pairing, removal and a peer's failed proof of its key
//! are audited as the operator's (the default tenant's).

use clade_core::{AuditKind, Tenant, Timestamp, TokenId};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, opt_id};

/// The kind of a paired operator (`clade pair cli`): a CLI that calls the API with its key.
pub const OPERATOR: &str = "operator";
/// The kind of a paired subscriber (`clade pair subscriber`): it is sent the events it leases.
pub const SUBSCRIBER: &str = "subscriber";

/// A pairing to record.
#[derive(Debug, Clone)]
pub struct NewPeer {
    pub kind: String,
    pub name: String,
    pub endpoint: String,
    pub key: String,
    pub agents: Vec<String>,
    pub leased: bool,
    pub token: Option<TokenId>,
}

/// Revokes the token of the peer `kind`/`name`, if it has one: it is replaced or removed.
async fn revoke_peer_token(
    work: &mut crate::Work<'_>,
    kind: &str,
    name: &str,
    now: i64,
) -> Result<()> {
    query(
        "UPDATE api_tokens SET revoked_at = $3 WHERE revoked_at IS NULL AND id IN \
         (SELECT token_id FROM peers WHERE kind = $1 AND name = $2)",
    )
    .bind(kind.to_owned())
    .bind(name.to_owned())
    .bind(now)
    .execute(work.conn())
    .await?;
    Ok(())
}

/// One paired component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    /// `tool` for a remote tool host.
    pub kind: String,
    pub name: String,
    pub endpoint: String,
    /// Its public key, as it travels.
    pub key: String,
    /// The agents it serves (agent patterns).
    pub agents: Vec<String>,
    /// A subscriber that receives only what a lease gives it.
    pub leased: bool,
    /// An operator's API token, whose tenant, scopes and agents its signed requests get.
    pub token: Option<TokenId>,
    pub paired_at: Timestamp,
    pub paired_by: String,
}

const COLUMNS: &str =
    "kind, name, endpoint, peer_key, agents, leased, token_id, paired_at, paired_by";

fn peer_row(row: &Row) -> Result<PeerRow> {
    let name: String = row.try_get("name")?;
    let agents: String = row.try_get("agents")?;
    Ok(PeerRow {
        kind: row.try_get("kind")?,
        agents: serde_json::from_str(&agents)
            .map_err(|e| Error::BadRow(format!("peer {name:?}'s agents: {e}")))?,
        name,
        endpoint: row.try_get("endpoint")?,
        key: row.try_get("peer_key")?,
        leased: row.try_get::<i64, _>("leased")? != 0,
        token: opt_id(row, "token_id")?.map(TokenId::from_bytes),
        paired_at: Timestamp::from_millis(row.try_get("paired_at")?),
        paired_by: row.try_get("paired_by")?,
    })
}

impl Store {
    /// Narrows a leased operator's access to what its live leases in its token's tenant
    /// name (within the token's own reach): the whole tenant, some agents, some sessions.
    async fn narrow_to_leases(
        &self,
        tenant: &Tenant,
        name: &str,
        access: &mut crate::TokenAccess,
    ) -> Result<()> {
        use crate::peer_leases::LeaseScope;
        let live: Vec<_> = self
            .peers()
            .leases_of(OPERATOR, name)
            .await?
            .into_iter()
            .filter(|lease| lease.tenant_id == tenant.id)
            .collect();
        access.leased = Some(name.to_owned());
        if live.iter().any(|lease| lease.scope == LeaseScope::Tenant) {
            return Ok(());
        }
        let mut agents = Vec::new();
        let mut sessions = Vec::new();
        for lease in live {
            match lease.scope {
                LeaseScope::Tenant => {}
                LeaseScope::Agent(agent) if access.reaches(agent) => agents.push(agent),
                LeaseScope::Agent(_) => {}
                LeaseScope::Session(id) => match self.sessions(tenant.id).get(id).await {
                    Ok(session) if access.reaches(session.agent_id) => {
                        sessions.push(crate::LeasedSession {
                            id,
                            agent_id: session.agent_id,
                            source: session.source,
                        });
                    }
                    Ok(_) | Err(Error::SessionNotFound(_)) => {}
                    Err(err) => return Err(err),
                },
            }
        }
        access.agents = Some(agents);
        access.sessions = sessions;
        Ok(())
    }

    /// The paired component of `kind` named `name`, if any.
    pub async fn peer(&self, kind: &str, name: &str) -> Result<Option<PeerRow>> {
        let rows = self
            .rows(
                query(format!("SELECT {COLUMNS} FROM peers WHERE kind = $1 AND name = $2"))
                    .bind(kind.to_owned())
                    .bind(name.to_owned()),
            )
            .await?;
        rows.first().map(peer_row).transpose()
    }
}

/// The components paired with this gateway (the operator's, shared by every tenant): recorded,
/// proved, listed and removed, and the leases each holds.
#[derive(Clone, Copy)]
pub struct Peers<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The paired components (the operator's, shared by every tenant).
    pub fn peers(&self) -> Peers<'_> {
        Peers { store: self }
    }
}

impl Peers<'_> {
    /// Records a pairing (replacing one of the same kind and name, whose operator token, if
    /// any, is revoked with it), audited.
    pub async fn record(self, new: NewPeer) -> Result<PeerRow> {
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let audit = self.store.admin_record(
            operator.id,
            None,
            AuditKind::PeerPaired,
            serde_json::json!({
                "kind": new.kind, "name": new.name, "endpoint": new.endpoint, "key": new.key,
            }),
        );
        let peer = PeerRow {
            kind: new.kind,
            name: new.name,
            endpoint: new.endpoint,
            key: new.key,
            agents: new.agents,
            leased: new.leased,
            token: new.token,
            paired_at: self.store.now(),
            paired_by: self.store.actor().to_owned(),
        };
        let row = peer.clone();
        self.store
            .transact(operator.id, move |work| {
                let (peer, audit) = (row.clone(), audit.clone());
                Box::pin(async move {
                    let now = work.now().as_millis();
                    revoke_peer_token(work, &peer.kind, &peer.name, now).await?;
                    query(format!(
                        "INSERT INTO peers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (kind, name) DO UPDATE SET endpoint = excluded.endpoint, \
                     peer_key = excluded.peer_key, agents = excluded.agents, \
                     leased = excluded.leased, token_id = excluded.token_id, \
                     paired_at = excluded.paired_at, paired_by = excluded.paired_by"
                    ))
                    .bind(peer.kind.clone())
                    .bind(peer.name.clone())
                    .bind(peer.endpoint.clone())
                    .bind(peer.key.clone())
                    .bind(serde_json::to_string(&peer.agents).unwrap_or_else(|_| "[]".into()))
                    .bind(i64::from(peer.leased))
                    .bind(peer.token.map(|t| t.as_bytes().to_vec()))
                    .bind(peer.paired_at.as_millis())
                    .bind(peer.paired_by.clone())
                    .execute(work.conn())
                    .await?;
                    work.audit(&audit).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(peer)
    }

    /// Whether `key` is paired as the component of `kind` named `name` (a channel's listener:
    /// no tenant's data, only whose key it is).
    pub async fn is_paired(self, kind: &str, name: &str, key: &str) -> Result<bool> {
        let row = self
            .store
            .maybe_row(
                query("SELECT 1 AS one FROM peers WHERE kind = $1 AND name = $2 AND peer_key = $3")
                    .bind(kind.to_owned())
                    .bind(name.to_owned())
                    .bind(key.to_owned()),
            )
            .await?;
        Ok(row.is_some())
    }

    /// The tenant and access of the operator paired with `key` (its token's), or
    /// [`Error::BadToken`] when no operator holds that key or its token was revoked.
    pub async fn authenticate(self, key: &str) -> Result<(Tenant, crate::TokenAccess)> {
        let row = self
            .store
            .maybe_row(
                query(
                    "SELECT t.id, t.name, t.created_at, k.scopes, k.agents, p.name AS peer_name, \
                     p.leased FROM peers p \
                     JOIN api_tokens k ON k.id = p.token_id JOIN tenants t ON t.id = k.tenant_id \
                     WHERE p.kind = $1 AND p.peer_key = $2 AND k.revoked_at IS NULL \
                     AND (k.expires_at IS NULL OR k.expires_at > $3)",
                )
                .bind(OPERATOR.to_owned())
                .bind(key.to_owned())
                .bind(self.store.now().as_millis()),
            )
            .await?;
        let Some(row) = row else { return Err(Error::BadToken) };
        let (tenant, mut access) = crate::store::token_access_from_row(&row)?;
        if row.try_get::<i64, _>("leased")? != 0 {
            let name: String = row.try_get("peer_name")?;
            self.store.narrow_to_leases(&tenant, &name, &mut access).await?;
        }
        Ok((tenant, access))
    }

    /// Every paired component, by kind and name.
    pub async fn list(self) -> Result<Vec<PeerRow>> {
        let rows = self
            .store
            .rows(query(format!("SELECT {COLUMNS} FROM peers ORDER BY kind, name")))
            .await?;
        rows.iter().map(peer_row).collect()
    }

    /// Forgets a pairing, audited; [`Error::PeerNotFound`] if there was none.
    pub async fn remove(self, kind: &str, name: &str) -> Result<()> {
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let audit = self.store.admin_record(
            operator.id,
            None,
            AuditKind::PeerRemoved,
            serde_json::json!({ "kind": kind, "name": name }),
        );
        let (kind, name) = (kind.to_owned(), name.to_owned());
        self.store
            .transact(operator.id, move |work| {
                let (kind, name, audit) = (kind.clone(), name.clone(), audit.clone());
                Box::pin(async move {
                    let now = work.now().as_millis();
                    revoke_peer_token(work, &kind, &name, now).await?;
                    let removed = query("DELETE FROM peers WHERE kind = $1 AND name = $2")
                        .bind(kind.clone())
                        .bind(name.clone())
                        .execute(work.conn())
                        .await?;
                    if removed == 0 {
                        return Err(Error::PeerNotFound(name));
                    }
                    // Its leases end with it.
                    query(
                        "UPDATE peer_leases SET ended_at = $3, ended_why = 'unpaired' \
                     WHERE peer_kind = $1 AND peer_name = $2 AND ended_at IS NULL",
                    )
                    .bind(kind)
                    .bind(name.clone())
                    .bind(work.now().as_millis())
                    .execute(work.conn())
                    .await?;
                    work.audit(&audit).await
                })
            })
            .await?;
        Ok(())
    }

    /// Records that a paired component failed to prove its key (`detail` says how).
    pub async fn audit_refused(self, kind: &str, name: &str, detail: &str) -> Result<()> {
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let entry = self.store.admin_record(
            operator.id,
            None,
            AuditKind::PeerRefused,
            serde_json::json!({ "kind": kind, "name": name, "why": detail }),
        );
        self.store.audit(entry).await
    }
}
