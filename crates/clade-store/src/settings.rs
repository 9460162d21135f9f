//! Agents' settings: a JSON value per agent and key, stored and removed with an audit record
//! naming the key (never the value, which may be a credential). What an agent reads (the
//! environment over the stored value over a default) is `clade-runtime`'s to resolve.

use clade_core::{AgentId, AuditKind, TenantId, Timestamp};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::Store;

/// The most keys one agent may store.
pub const MAX_SETTINGS_PER_AGENT: usize = 100;
/// The longest value stored, as JSON text.
pub const MAX_SETTING_BYTES: usize = 4 * 1024;

/// One stored setting.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow {
    pub key: String,
    pub value: serde_json::Value,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// Whether `key` may name a setting: 1-64 of `a-z`, `0-9`, `.`, `_` and `-`, starting with a
/// letter. The error says so.
pub fn check_key(key: &str) -> Result<()> {
    if clade_core::is_setting_key(key) {
        Ok(())
    } else {
        Err(Error::InvalidSetting(format!(
            "key {key:?}: keys use 1-64 of a-z, 0-9, ., _ and -, starting with a letter"
        )))
    }
}

fn setting_row(row: &Row) -> Result<SettingRow> {
    let key: String = row.try_get("key")?;
    let text: String = row.try_get("value")?;
    let value = serde_json::from_str(&text)
        .map_err(|e| Error::BadRow(format!("setting {key:?} is not JSON: {e}")))?;
    Ok(SettingRow {
        key,
        value,
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
        updated_by: row.try_get("updated_by")?,
    })
}

/// One tenant's agents' stored settings.
#[derive(Clone, Copy)]
pub struct AgentSettings<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s agents' stored settings.
    pub fn settings(&self, tenant: TenantId) -> AgentSettings<'_> {
        AgentSettings { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's agents' stored settings.
    pub fn settings(&self) -> AgentSettings<'_> {
        self.store().settings(self.tenant())
    }
}

impl AgentSettings<'_> {
    /// An agent's stored settings, by key.
    pub async fn list(self, agent: AgentId) -> Result<Vec<SettingRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT key, value, updated_at, updated_by FROM agent_settings \
                     WHERE tenant_id = $1 AND agent_id = $2 ORDER BY key",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(setting_row).collect()
    }

    /// Stores `value` under `key` for the agent (replacing what was there), audited.
    pub async fn set(
        self,
        agent: AgentId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<SettingRow> {
        let tenant = self.tenant;
        check_key(key)?;
        let text = value.to_string();
        if text.len() > MAX_SETTING_BYTES {
            return Err(Error::InvalidSetting(format!(
                "{key}: the value is {} bytes of JSON, over {MAX_SETTING_BYTES}",
                text.len()
            )));
        }
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::SettingChanged,
            serde_json::json!({ "key": key, "change": "set" }),
        );
        let by = self.store.actor().to_owned();
        let key = key.to_owned();
        let (row, _) = self.store
            .transact(tenant, move |work| {
                let (audit, by, key, text, value) =
                    (audit.clone(), by.clone(), key.clone(), text.clone(), value.clone());
                Box::pin(async move {
                    let now = work.now();
                    // An id from anywhere but this tenant's agents stores nothing.
                    let owned = query("SELECT 1 AS one FROM agents WHERE id = $1 AND tenant_id = $2")
                        .bind(agent.as_bytes().to_vec())
                        .bind(tenant.as_bytes().to_vec())
                        .fetch_optional(work.conn())
                        .await?;
                    if owned.is_none() {
                        return Err(Error::AgentNotFound(agent.to_string()));
                    }
                    let count = query(
                        "SELECT COUNT(*) AS n, SUM(CASE WHEN key = $3 THEN 1 ELSE 0 END) AS this \
                         FROM agent_settings WHERE tenant_id = $1 AND agent_id = $2",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent.as_bytes().to_vec())
                    .bind(key.clone())
                    .fetch_one(work.conn())
                    .await?;
                    let stored: i64 = count.try_get("n")?;
                    let this: Option<i64> = count.try_get("this")?;
                    if this.unwrap_or(0) == 0 && stored >= MAX_SETTINGS_PER_AGENT as i64 {
                        return Err(Error::InvalidSetting(format!(
                            "{key}: an agent stores at most {MAX_SETTINGS_PER_AGENT} settings; remove one first"
                        )));
                    }
                    query(
                        "INSERT INTO agent_settings (tenant_id, agent_id, key, value, updated_at, updated_by) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (agent_id, key) DO UPDATE SET value = excluded.value, \
                         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent.as_bytes().to_vec())
                    .bind(key.clone())
                    .bind(text)
                    .bind(now.as_millis())
                    .bind(by.clone())
                    .execute(work.conn())
                    .await?;
                    work.audit(&audit).await?;
                    Ok(SettingRow { key, value, updated_at: now, updated_by: by })
                })
            })
            .await?;
        Ok(row)
    }

    /// Removes the agent's `key`, audited; [`Error::SettingNotFound`] if none was stored.
    pub async fn unset(self, agent: AgentId, key: &str) -> Result<()> {
        let tenant = self.tenant;
        check_key(key)?;
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::SettingChanged,
            serde_json::json!({ "key": key, "change": "unset" }),
        );
        let key = key.to_owned();
        self.store.transact(tenant, move |work| {
            let (audit, key) = (audit.clone(), key.clone());
            Box::pin(async move {
                let deleted = query(
                    "DELETE FROM agent_settings WHERE tenant_id = $1 AND agent_id = $2 AND key = $3",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(key.clone())
                .execute(work.conn())
                .await?;
                if deleted == 0 {
                    return Err(Error::SettingNotFound(key));
                }
                work.audit(&audit).await?;
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}
