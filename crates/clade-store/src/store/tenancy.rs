//! Tenants and their agents: created, listed and deleted, each change audited.

use clade_core::{
    Agent, AgentConfig, AgentId, AuditKind, Handle, TemplateName, Tenant, TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};

use super::*;
use crate::db::{Row, Tx, query};
use crate::error::{Error, Result};

/// What is needed to create an agent.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub handle: Handle,
    pub display_name: Option<String>,
    pub config: AgentConfig,
}

/// Agent config as stored in the `config` column: versioned so old rows keep loading.
#[derive(Serialize, Deserialize)]
struct StoredAgentConfig {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
}

fn encode_config(config: &AgentConfig) -> String {
    let stored = StoredAgentConfig {
        v: 1,
        template: (config.template != TemplateName::builtin_default())
            .then(|| config.template.to_string()),
    };
    serde_json::to_string(&stored).unwrap_or_else(|_| "{\"v\":1}".into())
}

fn decode_config(text: &str) -> Result<AgentConfig> {
    let stored: StoredAgentConfig =
        serde_json::from_str(text).map_err(|e| Error::BadRow(format!("agent config: {e}")))?;
    let template = match stored.template {
        Some(name) => TemplateName::parse(&name).map_err(|e| Error::BadRow(e.to_string()))?,
        None => TemplateName::builtin_default(),
    };
    Ok(AgentConfig { template })
}

pub(super) fn tenant_from_row(row: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_bytes(id_bytes(row, "id")?),
        name: handle_column(row, "name")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

pub(super) fn agent_from_row(row: &Row) -> Result<Agent> {
    let handle = handle_column(row, "handle")?;
    let display_name: Option<String> = row.try_get("display_name")?;
    Ok(Agent {
        id: AgentId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        display_name: display_name.unwrap_or_else(|| handle.to_string()),
        handle,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        config: decode_config(&row.try_get::<String, _>("config")?)?,
    })
}

const AGENT_COLUMNS: &str = "id, tenant_id, handle, display_name, created_at, config";

/// Rows per multi-row INSERT; 6 columns each stays far below SQLite's 32,766 parameters.
const INSERT_CHUNK: usize = 500;

async fn insert_agents(conn: &mut Tx, agents: &[Agent]) -> Result<()> {
    let mut sql = format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES ");
    for i in 0..agents.len() {
        let b = i * 6;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6
        ));
    }
    // Only placeholders are interpolated; every value is bound.
    let mut query = query(sql);
    for agent in agents {
        // Store no display name when it equals the handle: the common case costs no bytes.
        let display =
            (agent.display_name != agent.handle.as_str()).then(|| agent.display_name.clone());
        query = query
            .bind(agent.id.as_bytes().to_vec())
            .bind(agent.tenant_id.as_bytes().to_vec())
            .bind(agent.handle.to_string())
            .bind(display)
            .bind(agent.created_at.as_millis())
            .bind(encode_config(&agent.config));
    }
    query.execute(&mut *conn).await.map_err(|e| {
        if e.is_unique_violation() {
            // Name the handle when there is only one; in a bulk insert, say which could clash.
            match agents {
                [one] => Error::HandleTaken(one.handle.clone()),
                _ => Error::InvalidInput(format!(
                    "one of {} handles already exists in this tenant; nothing was created",
                    agents.len()
                )),
            }
        } else if e.is_foreign_key_violation() {
            Error::TenantNotFound("(deleted while creating the agent)".into())
        } else {
            e
        }
    })?;
    Ok(())
}

/// One tenant's agents' rows (their workspaces are [`crate::Agents`]'): created, read, counted
/// and deleted, each change audited.
#[derive(Clone, Copy)]
pub struct TenantAgents<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s agents.
    pub fn agents(&self, tenant: TenantId) -> TenantAgents<'_> {
        TenantAgents { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's agents.
    pub fn agents(&self) -> TenantAgents<'_> {
        self.store().agents(self.tenant())
    }
}

impl TenantAgents<'_> {
    // ---- agents ----

    pub async fn create(self, agent: NewAgent) -> Result<Agent> {
        let tenant = self.tenant;
        let mut created = self.store.agents(tenant).create_many(vec![agent]).await?;
        created.pop().ok_or_else(|| Error::BadRow("no agent created".into()))
    }

    /// Creates all of `agents` in one transaction, or none of them.
    pub async fn create_many(self, agents: Vec<NewAgent>) -> Result<Vec<Agent>> {
        let tenant = self.tenant;
        self.store.agents(tenant).create_many_within(agents, None).await
    }

    /// Like [`crate::TenantAgents::create_many`], but the tenant may have at most `limit.0` agents
    /// afterwards (counted in the transaction); `limit.1` names where the quota is set.
    pub async fn create_many_within(
        self,
        agents: Vec<NewAgent>,
        limit: Option<(u64, String)>,
    ) -> Result<Vec<Agent>> {
        let tenant = self.tenant;
        for agent in &agents {
            if let Some(name) = &agent.display_name {
                clade_core::agent::validate_display_name(name).map_err(Error::InvalidInput)?;
            }
        }
        let now = self.store.now();
        let agents: Vec<Agent> = agents
            .into_iter()
            .map(|new| Agent {
                id: AgentId::generate(now),
                tenant_id: tenant,
                display_name: new.display_name.unwrap_or_else(|| new.handle.to_string()),
                handle: new.handle,
                created_at: now,
                config: new.config,
            })
            .collect();
        let rows = agents.clone();
        // One record per call: a bulk creation (`clade bench agents`) names its first handles.
        let handles: Vec<&str> = agents.iter().take(20).map(|a| a.handle.as_str()).collect();
        let audit = self.store.admin_record(
            tenant,
            (agents.len() == 1).then(|| agents[0].id),
            AuditKind::AgentCreated,
            serde_json::json!({ "handles": handles, "count": agents.len() }),
        );
        self.store.write(move |conn| {
            let audit = audit.clone();
            let limit = limit.clone();
            let rows = rows.clone();
            Box::pin(async move {
                if let Some((max, key)) = &limit {
                    let row = query("SELECT COUNT(*) AS n FROM agents WHERE tenant_id = $1")
                        .bind(tenant.as_bytes().to_vec())
                        .fetch_one(&mut *conn)
                        .await?;
                    let have = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                    if have + rows.len() as u64 > *max {
                        return Err(Error::QuotaExceeded(format!(
                            "the tenant has {have} agents and may have {max} ({key}): delete some, or ask the operator to raise the quota"
                        )));
                    }
                }
                for chunk in rows.chunks(INSERT_CHUNK) {
                    insert_agents(conn, chunk).await?;
                }
                crate::access::append_audit(conn, &audit, now).await?;
                Ok(())
            })
        })
        .await?;
        Ok(agents)
    }

    pub async fn get(self, handle: &str) -> Result<Agent> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND handle = $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(handle),
            )
            .await?;
        row.as_ref()
            .map(agent_from_row)
            .transpose()?
            .ok_or_else(|| Error::AgentNotFound(handle.into()))
    }

    pub async fn by_id(self, id: AgentId) -> Result<Agent> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(id.as_bytes().to_vec()),
            )
            .await?;
        row.as_ref()
            .map(agent_from_row)
            .transpose()?
            .ok_or_else(|| Error::AgentNotFound(id.to_string()))
    }

    /// Agents of a tenant ordered by handle, `limit` at a time, starting after `after`.
    pub async fn list(self, after: Option<&str>, limit: u32) -> Result<Vec<Agent>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND handle > $2 \
             ORDER BY handle LIMIT $3"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    pub async fn count(self) -> Result<i64> {
        let tenant = self.tenant;
        let row = self
            .store
            .row(
                query("SELECT COUNT(*) FROM agents WHERE tenant_id = $1")
                    .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        row.try_get(0)
    }

    /// Deletes an agent's row and everything stored under it; returns what was deleted.
    pub async fn delete(self, handle: &str) -> Result<Agent> {
        let tenant = self.tenant;
        let agent = self.store.agents(tenant).get(handle).await?;
        let id = agent.id;
        let handle = handle.to_owned();
        let now = self.store.now().as_millis();
        let audit = self.store.admin_record(
            tenant,
            Some(id),
            AuditKind::AgentDeleted,
            serde_json::json!({ "handle": handle }),
        );
        let at = self.store.now();
        self.store.write(move |conn| {
            let audit = audit.clone();
            let handle = handle.clone();
            Box::pin(async move {
                crate::access::append_audit(conn, &audit, at).await?;
                let id = id.as_bytes().to_vec();
                // Its grants and pending approvals stay on record (the audit chain names them)
                // but are dead: a new agent with the same handle inherits nothing, and a grant
                // delegated from one of them dies with it.
                query(
                    "UPDATE grants SET revoked_at = $2 WHERE tenant_id = $3 AND agent_id = $1 \
                     AND revoked_at IS NULL",
                )
                .bind(id.clone())
                .bind(now)
                .bind(tenant.as_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
                query(
                    "UPDATE approvals SET status = 'cancelled', decided_at = $2, \
                     decided_by = 'agent deleted', note = 'its agent was deleted' \
                     WHERE tenant_id = $3 AND agent_id = $1 AND status = 'pending'",
                )
                .bind(id.clone())
                .bind(now)
                .bind(tenant.as_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
                // Leases of the agent, or of one of its sessions, end with it.
                query(
                    "UPDATE peer_leases SET ended_at = $2, ended_why = 'agent deleted' \
                     WHERE ended_at IS NULL AND (agent_id = $1 OR session_id IN \
                     (SELECT id FROM sessions WHERE agent_id = $1))",
                )
                .bind(id.clone())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                query(crate::turns::REMEMBER_OUTBOX_IDS).execute(&mut *conn).await?;
                for table in [
                    "DELETE FROM secrets WHERE agent_id = $1",
                    "DELETE FROM model_usage WHERE agent_id = $1",
                    "DELETE FROM job_runs WHERE job_id IN (SELECT id FROM jobs WHERE agent_id = $1)",
                    "DELETE FROM jobs WHERE agent_id = $1",
                    "DELETE FROM agent_settings WHERE agent_id = $1",
                    "DELETE FROM memory_links WHERE agent_id = $1",
                    "DELETE FROM memories WHERE agent_id = $1",
                    "DELETE FROM memory_upkeep WHERE agent_id = $1",
                    "DELETE FROM session_summaries WHERE agent_id = $1",
                    "DELETE FROM working_memory WHERE agent_id = $1",
                    "DELETE FROM agent_messages WHERE from_agent = $1 OR to_agent = $1",
                    "DELETE FROM pauses WHERE agent_id = $1",
                    "DELETE FROM breakpoints WHERE agent_id = $1",
                    "DELETE FROM debug_stops WHERE agent_id = $1",
                    "DELETE FROM topic_subscriptions WHERE agent_id = $1",
                    "DELETE FROM agent_lineage WHERE child_id = $1 OR parent_id = $1",
                    "DELETE FROM forks WHERE agent_id = $1",
                    "DELETE FROM execution_steps WHERE execution_id IN (SELECT id FROM executions WHERE agent_id = $1)",
                    "DELETE FROM executions WHERE agent_id = $1",
                    "DELETE FROM outbox WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = $1)",
                    "DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = $1)",
                    "DELETE FROM sessions WHERE agent_id = $1",
                ] {
                    query(table).bind(id.clone()).execute(&mut *conn).await?;
                }
                let deleted = query("DELETE FROM agents WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                if deleted == 0 {
                    return Err(Error::AgentNotFound(handle));
                }
                Ok(())
            })
        })
        .await?;
        Ok(agent)
    }
}

/// The gateway's tenants: created, read and deleted with everything they own.
#[derive(Clone, Copy)]
pub struct Tenants<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The tenants.
    pub fn tenants(&self) -> Tenants<'_> {
        Tenants { store: self }
    }
}

impl Tenants<'_> {
    pub async fn create(self, name: &str) -> Result<Tenant> {
        let name = Handle::parse(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let now = self.store.now();
        let tenant = Tenant { id: TenantId::generate(now), name, created_at: now };
        let row = tenant.clone();
        let audit = self.store.admin_record(
            tenant.id,
            None,
            AuditKind::TenantCreated,
            serde_json::json!({ "tenant": tenant.name.as_str() }),
        );
        self.store
            .write(move |conn| {
                let audit = audit.clone();
                let row = row.clone();
                Box::pin(async move {
                    query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                        .bind(row.id.as_bytes().to_vec())
                        .bind(row.name.to_string())
                        .bind(row.created_at.as_millis())
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| {
                            if e.is_unique_violation() {
                                Error::TenantExists(row.name.to_string())
                            } else {
                                e
                            }
                        })?;
                    crate::access::append_audit(conn, &audit, now).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(tenant)
    }

    pub async fn named(self, name: &str) -> Result<Tenant> {
        let row = self
            .store
            .maybe_row(query("SELECT id, name, created_at FROM tenants WHERE name = $1").bind(name))
            .await?;
        row.as_ref()
            .map(tenant_from_row)
            .transpose()?
            .ok_or_else(|| Error::TenantNotFound(name.into()))
    }

    pub async fn by_id(self, id: TenantId) -> Result<Tenant> {
        let row = self
            .store
            .maybe_row(
                query("SELECT id, name, created_at FROM tenants WHERE id = $1")
                    .bind(id.as_bytes().to_vec()),
            )
            .await?;
        row.as_ref()
            .map(tenant_from_row)
            .transpose()?
            .ok_or_else(|| Error::TenantNotFound(id.to_string()))
    }

    pub async fn list(self) -> Result<Vec<Tenant>> {
        let rows = self
            .store
            .rows(query("SELECT id, name, created_at FROM tenants ORDER BY name"))
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Deletes a tenant with all its agents, tokens and secrets; returns the ids of the deleted
    /// agents so their workspaces can be removed.
    pub async fn delete(self, name: &str) -> Result<Vec<AgentId>> {
        if name == Tenant::DEFAULT_NAME {
            return Err(Error::DefaultTenant);
        }
        let tenant = self.store.tenants().named(name).await?;
        // The tenant's own chain goes with it: the operator's (the default tenant's) keeps it.
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let audit = self.store.admin_record(
            operator.id,
            None,
            AuditKind::TenantDeleted,
            serde_json::json!({ "tenant": tenant.name.as_str(), "id": tenant.id.to_string() }),
        );
        let now = self.store.now();
        self.store.write(move |conn| {
            let audit = audit.clone();
            Box::pin(async move {
                crate::access::append_audit(conn, &audit, now).await?;
                let id = tenant.id.as_bytes().to_vec();
                let rows = query("SELECT id FROM agents WHERE tenant_id = $1")
                    .bind(id.clone())
                    .fetch_all(&mut *conn)
                    .await?;
                let agents = rows
                    .iter()
                    .map(|r| id_bytes(r, "id").map(AgentId::from_bytes))
                    .collect::<Result<Vec<_>>>()?;
                // Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite only
                // honours when foreign keys are enabled on that connection.
                query(crate::turns::REMEMBER_OUTBOX_IDS).execute(&mut *conn).await?;
                for table in [
                    "DELETE FROM model_usage WHERE tenant_id = $1",
                    "DELETE FROM job_runs WHERE job_id IN (SELECT id FROM jobs WHERE tenant_id = $1)",
                    "DELETE FROM jobs WHERE tenant_id = $1",
                    "DELETE FROM agent_settings WHERE tenant_id = $1",
                    "DELETE FROM memory_links WHERE tenant_id = $1",
                    "DELETE FROM memories WHERE tenant_id = $1",
                    "DELETE FROM memory_upkeep WHERE tenant_id = $1",
                    "DELETE FROM session_summaries WHERE tenant_id = $1",
                    "DELETE FROM working_memory WHERE tenant_id = $1",
                    "DELETE FROM agent_messages WHERE tenant_id = $1",
                    "DELETE FROM pauses WHERE tenant_id = $1",
                    "DELETE FROM breakpoints WHERE tenant_id = $1",
                    "DELETE FROM debug_stops WHERE tenant_id = $1",
                    "DELETE FROM flows WHERE tenant_id = $1",
                    "DELETE FROM topic_subscriptions WHERE tenant_id = $1",
                    "DELETE FROM agent_lineage WHERE tenant_id = $1",
                    "DELETE FROM forks WHERE tenant_id = $1",
                    "DELETE FROM peer_leases WHERE tenant_id = $1",
                    "DELETE FROM execution_steps WHERE execution_id IN (SELECT id FROM executions WHERE tenant_id = $1)",
                    "DELETE FROM executions WHERE tenant_id = $1",
                    "DELETE FROM outbox WHERE tenant_id = $1",
                    "DELETE FROM events WHERE tenant_id = $1",
                    "DELETE FROM sessions WHERE tenant_id = $1",
                    "DELETE FROM secrets WHERE agent_id IN (SELECT id FROM agents WHERE tenant_id = $1)",
                    "DELETE FROM agents WHERE tenant_id = $1",
                    "DELETE FROM api_tokens WHERE tenant_id = $1",
                    "DELETE FROM tenants WHERE id = $1",
                ] {
                    query(table).bind(id.clone()).execute(&mut *conn).await?;
                }
                Ok(agents)
            })
        })
        .await
    }
}
