//! Agents' secrets as stored rows, already sealed: written, read, listed and removed.

use clade_core::{AgentId, AuditKind, SecretName, TenantId, Timestamp};

use super::*;
use crate::crypto::Sealed;
use crate::db::{Tx, query};
use crate::error::{Error, Result};

/// A secret as listed: name and dates, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: SecretName,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The audit record of a change to an agent's secret (its name, never its value), in the
/// chain of the agent's tenant.
async fn secret_audit(
    conn: &mut Tx,
    actor: &str,
    agent: AgentId,
    kind: AuditKind,
    name: &str,
    now: Timestamp,
) -> Result<()> {
    let row = query("SELECT tenant_id FROM agents WHERE id = $1")
        .bind(agent.as_bytes().to_vec())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Err(Error::AgentNotFound(agent.to_string())) };
    let entry = crate::access::AuditEntry {
        tenant: TenantId::from_bytes(id_bytes(&row, "tenant_id")?),
        agent: Some(agent),
        kind,
        tool: None,
        decision: None,
        detail: serde_json::json!({ "secret": name, "by": actor }).to_string(),
    };
    crate::access::append_audit(conn, &entry, now).await
}

impl Store {
    pub(crate) async fn put_sealed(
        &self,
        agent: AgentId,
        name: &SecretName,
        sealed: Sealed,
    ) -> Result<()> {
        let at = self.now();
        let now = at.as_millis();
        let name = name.to_string();
        let actor = self.actor.clone();
        self.write(move |conn| {
            let actor = actor.clone();
            let name = name.clone();
            let sealed = sealed.clone();
            Box::pin(async move {
                secret_audit(conn, &actor, agent, AuditKind::SecretSet, &name, at).await?;
                let agent = agent.as_bytes().to_vec();
                let updated = query(
                    "UPDATE secrets SET nonce = $1, ciphertext = $2, updated_at = $3 \
                     WHERE agent_id = $4 AND name = $5",
                )
                .bind(sealed.nonce.clone())
                .bind(sealed.ciphertext.clone())
                .bind(now)
                .bind(agent.clone())
                .bind(name.clone())
                .execute(&mut *conn)
                .await?;
                if updated == 0 {
                    query(
                        "INSERT INTO secrets (agent_id, name, nonce, ciphertext, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(agent)
                    .bind(name)
                    .bind(sealed.nonce)
                    .bind(sealed.ciphertext)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn sealed(&self, agent: AgentId, name: &SecretName) -> Result<Sealed> {
        let row = self
            .maybe_row(
                query("SELECT nonce, ciphertext FROM secrets WHERE agent_id = $1 AND name = $2")
                    .bind(agent.as_bytes().to_vec())
                    .bind(name.to_string()),
            )
            .await?
            .ok_or_else(|| Error::SecretNotFound(name.to_string()))?;
        Ok(Sealed { nonce: row.try_get("nonce")?, ciphertext: row.try_get("ciphertext")? })
    }
}

/// Agents' stored secrets as rows, already encrypted: listed by name, removed and counted.
/// [`crate::Secrets`] seals and opens their values.
#[derive(Clone, Copy)]
pub struct SecretRows<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The stored secrets' rows, already encrypted ([`crate::Secrets`] encrypts and opens them).
    pub(crate) fn secret_rows(&self) -> SecretRows<'_> {
        SecretRows { store: self }
    }
}

impl SecretRows<'_> {
    pub async fn of_agent(self, agent: AgentId) -> Result<Vec<SecretInfo>> {
        let rows = self.store.rows(query(
            "SELECT name, created_at, updated_at FROM secrets WHERE agent_id = $1 ORDER BY name",
        )
        .bind(agent.as_bytes().to_vec())).await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                Ok(SecretInfo {
                    name: SecretName::parse(&name).map_err(|e| Error::BadRow(e.to_string()))?,
                    created_at: Timestamp::from_millis(row.try_get("created_at")?),
                    updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }

    pub async fn delete(self, agent: AgentId, name: &SecretName) -> Result<()> {
        let name = name.to_string();
        let (actor, at) = (self.store.actor.clone(), self.store.now());
        self.store
            .write(move |conn| {
                let actor = actor.clone();
                let name = name.clone();
                Box::pin(async move {
                    secret_audit(conn, &actor, agent, AuditKind::SecretRemoved, &name, at).await?;
                    let done = query("DELETE FROM secrets WHERE agent_id = $1 AND name = $2")
                        .bind(agent.as_bytes().to_vec())
                        .bind(name.clone())
                        .execute(&mut *conn)
                        .await?;
                    if done == 0 {
                        return Err(Error::SecretNotFound(name));
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Number of stored secrets across all tenants (to detect a lost master key).
    pub async fn count(self) -> Result<i64> {
        let row = self.store.row(query("SELECT COUNT(*) FROM secrets")).await?;
        row.try_get(0)
    }
}
