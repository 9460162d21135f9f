//! Stored flows (migration 33, `flows`): a tenant's flow files, every version kept. Saving a
//! text that differs from the newest version makes the next version; saving the same text
//! again changes nothing. A run started from a stored flow copies the version's text into its
//! own record, so deleting or saving the flow later never changes a run under way. Saves and
//! deletions are audited (`flow.saved`, `flow.deleted`: name, version and hash, never the text).

use clade_core::{AuditKind, TenantId, Timestamp};
use sha2::{Digest, Sha256};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::Store;

/// How many flows one tenant may store.
pub const MAX_FLOWS_PER_TENANT: i64 = 500;
/// How many versions of one flow are kept: a tenant saving in a loop cannot fill the disk.
pub const MAX_VERSIONS_PER_FLOW: i64 = 1_000;

/// One version of a stored flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowVersion {
    pub name: String,
    pub version: i64,
    /// Of the text, hex.
    pub sha256: String,
    pub source: String,
    pub saved_by: String,
    pub created_at: Timestamp,
}

/// What [`StoredFlows::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub flow: FlowVersion,
    /// Whether this made a new version (`false`: the newest had the same text).
    pub created: bool,
}

const COLUMNS: &str = "name, version, sha256, source, saved_by, created_at";

fn flow_row(row: &Row) -> Result<FlowVersion> {
    Ok(FlowVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        source: row.try_get("source")?,
        saved_by: row.try_get("saved_by")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

/// The query for flow `name` at `version`, or its newest version.
fn select_version(tenant: TenantId, name: &str, version: Option<i64>) -> crate::db::Query {
    let tenant = tenant.as_bytes().to_vec();
    match version {
        Some(version) => query(format!(
            "SELECT {COLUMNS} FROM flows WHERE tenant_id = $1 AND name = $2 AND version = $3"
        ))
        .bind(tenant)
        .bind(name.to_owned())
        .bind(version),
        None => query(format!(
            "SELECT {COLUMNS} FROM flows WHERE tenant_id = $1 AND name = $2 \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(name.to_owned()),
    }
}

fn found(row: Option<Row>, name: &str, version: Option<i64>) -> Result<FlowVersion> {
    row.as_ref().map(flow_row).transpose()?.ok_or_else(|| {
        Error::FlowNotFound(match version {
            Some(version) => format!("{name} version {version}"),
            None => name.to_owned(),
        })
    })
}

/// [`StoredFlows::get`] inside a transaction: what a scheduled job's fire runs.
pub(crate) async fn version_in(
    conn: &mut crate::db::Tx,
    tenant: TenantId,
    name: &str,
    version: Option<i64>,
) -> Result<FlowVersion> {
    let row = select_version(tenant, name, version).fetch_optional(conn).await?;
    found(row, name, version)
}

/// One tenant's stored flows.
#[derive(Clone, Copy)]
pub struct StoredFlows<'s> {
    store: &'s Store,
    tenant: TenantId,
}

impl<'s> StoredFlows<'s> {
    /// `tenant`'s stored flows.
    pub fn of(store: &'s Store, tenant: TenantId) -> Self {
        Self { store, tenant }
    }

    /// The stored flows of the tenant `scope` is bound to.
    pub fn scoped(scope: &'s crate::TenantStore) -> Self {
        Self { store: scope.store(), tenant: scope.tenant() }
    }
}

impl StoredFlows<'_> {
    /// Saves `source` as flow `name`'s next version, unless its newest version has the same
    /// text. The caller has checked the text; the name is the one the text declares.
    pub async fn save(self, name: &str, source: &str) -> Result<Saved> {
        let sha256 = hex::encode(Sha256::digest(source.as_bytes()));
        let tenant = self.tenant;
        let by = self.store.actor().to_owned();
        let audit = self.store.admin_record(
            tenant,
            None,
            AuditKind::FlowSaved,
            serde_json::json!({ "flow": name, "sha256": sha256 }),
        );
        let (name, source) = (name.to_owned(), source.to_owned());
        let (saved, _) = self
            .store
            .transact(tenant, move |work| {
                let (name, source, sha256, by) =
                    (name.clone(), source.clone(), sha256.clone(), by.clone());
                let mut audit = audit.clone();
                Box::pin(async move {
                    let newest = query(format!(
                        "SELECT {COLUMNS} FROM flows WHERE tenant_id = $1 AND name = $2 \
                         ORDER BY version DESC LIMIT 1"
                    ))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(name.clone())
                    .fetch_optional(work.conn())
                    .await?;
                    let newest = newest.as_ref().map(flow_row).transpose()?;
                    if let Some(newest) = newest.filter(|n| n.sha256 == sha256) {
                        return Ok(Saved { flow: newest, created: false });
                    }
                    let counts = query(
                        "SELECT CAST(COUNT(DISTINCT name) AS BIGINT) AS flows, \
                         CAST(COALESCE(SUM(CASE WHEN name = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS versions, \
                         CAST(COALESCE(MAX(CASE WHEN name = $2 THEN version ELSE 0 END), 0) AS BIGINT) AS newest \
                         FROM flows WHERE tenant_id = $1",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(name.clone())
                    .fetch_one(work.conn())
                    .await?;
                    let (flows, versions, newest): (i64, i64, i64) =
                        (counts.try_get("flows")?, counts.try_get("versions")?, counts.try_get("newest")?);
                    if versions == 0 && flows >= MAX_FLOWS_PER_TENANT {
                        return Err(Error::QuotaExceeded(format!(
                            "the tenant stores {flows} flows, the most it may; delete one first"
                        )));
                    }
                    if versions >= MAX_VERSIONS_PER_FLOW {
                        return Err(Error::QuotaExceeded(format!(
                            "flow {name} has {versions} versions, the most kept; delete it and save it again"
                        )));
                    }
                    let flow = FlowVersion {
                        name,
                        version: newest + 1,
                        sha256,
                        source,
                        saved_by: by,
                        created_at: work.now(),
                    };
                    query(format!(
                        "INSERT INTO flows (tenant_id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(flow.name.clone())
                    .bind(flow.version)
                    .bind(flow.sha256.clone())
                    .bind(flow.source.clone())
                    .bind(flow.saved_by.clone())
                    .bind(flow.created_at.as_millis())
                    .execute(work.conn())
                    .await?;
                    let mut detail: serde_json::Value =
                        serde_json::from_str(&audit.detail).unwrap_or_default();
                    detail["version"] = flow.version.into();
                    audit.detail = detail.to_string();
                    work.audit(&audit).await?;
                    Ok(Saved { flow, created: true })
                })
            })
            .await?;
        Ok(saved)
    }

    /// Flow `name` at `version`, or its newest version.
    pub async fn get(self, name: &str, version: Option<i64>) -> Result<FlowVersion> {
        let row = self.store.maybe_row(select_version(self.tenant, name, version)).await?;
        found(row, name, version)
    }

    /// The newest version of each stored flow, by name.
    pub async fn list(self) -> Result<Vec<FlowVersion>> {
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM flows AS f WHERE tenant_id = $1 AND version = \
                     (SELECT MAX(version) FROM flows WHERE tenant_id = f.tenant_id AND name = f.name) \
                     ORDER BY name"
                ))
                .bind(self.tenant.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(flow_row).collect()
    }

    /// Every version of flow `name`, newest first (none when it is not stored).
    pub async fn versions(self, name: &str) -> Result<Vec<FlowVersion>> {
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM flows WHERE tenant_id = $1 AND name = $2 \
                     ORDER BY version DESC"
                ))
                .bind(self.tenant.as_bytes().to_vec())
                .bind(name.to_owned()),
            )
            .await?;
        rows.iter().map(flow_row).collect()
    }

    /// Deletes every version of flow `name`; runs keep the text they started with. Returns
    /// how many versions it held.
    pub async fn delete(self, name: &str) -> Result<u64> {
        let tenant = self.tenant;
        let audit = self.store.admin_record(
            tenant,
            None,
            AuditKind::FlowDeleted,
            serde_json::json!({ "flow": name }),
        );
        let name = name.to_owned();
        let (deleted, _) = self
            .store
            .transact(tenant, move |work| {
                let (name, audit) = (name.clone(), audit.clone());
                Box::pin(async move {
                    let done = query("DELETE FROM flows WHERE tenant_id = $1 AND name = $2")
                        .bind(tenant.as_bytes().to_vec())
                        .bind(name.clone())
                        .execute(work.conn())
                        .await?;
                    if done == 0 {
                        return Err(Error::FlowNotFound(name));
                    }
                    work.audit(&audit).await?;
                    Ok(done)
                })
            })
            .await?;
        Ok(deleted)
    }
}
