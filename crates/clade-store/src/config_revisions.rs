//! The deployment's configuration revisions: every `clade.yaml` applied, in order, with who
//! applied it and the diff from the one before. Applying records one in a transaction that
//! also writes its audit record and its `config.applied` lifecycle event (both the operator's:
//! the default tenant's); a serving gateway reloads when a newer revision appears.

use clade_core::{AuditKind, Tenant, Timestamp};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::Store;

/// One applied configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRevision {
    pub revision: i64,
    /// Of the text, hex.
    pub sha256: String,
    pub yaml: String,
    pub applied_by: String,
    pub applied_at: Timestamp,
    /// From the revision before (for the first, from the file it replaced).
    pub diff: String,
    /// The revision this one went back to, for a revert.
    pub reverts: Option<i64>,
}

/// A revision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConfigRevision {
    pub yaml: String,
    pub diff: String,
    pub reverts: Option<i64>,
}

const COLUMNS: &str = "revision, sha256, yaml, applied_by, applied_at, diff, reverts";

fn revision_row(row: &Row) -> Result<ConfigRevision> {
    Ok(ConfigRevision {
        revision: row.try_get("revision")?,
        sha256: row.try_get("sha256")?,
        yaml: row.try_get("yaml")?,
        applied_by: row.try_get("applied_by")?,
        applied_at: Timestamp::from_millis(row.try_get("applied_at")?),
        diff: row.try_get("diff")?,
        reverts: row.try_get("reverts")?,
    })
}

/// The deployment's configuration revisions, each recorded with its audit record and
/// `config.applied` event.
#[derive(Clone, Copy)]
pub struct ConfigRevisions<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The deployment's configuration revisions.
    pub fn config_revisions(&self) -> ConfigRevisions<'_> {
        ConfigRevisions { store: self }
    }
}

impl ConfigRevisions<'_> {
    /// Records `new` as the next revision, applied by this store's actor, with its audit
    /// record and `config.applied` event in the same transaction.
    pub async fn record(self, new: NewConfigRevision) -> Result<ConfigRevision> {
        use sha2::Digest as _;
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let sha256 = hex::encode(sha2::Sha256::digest(new.yaml.as_bytes()));
        let by = self.store.actor().to_owned();
        let audit = self.store.admin_record(
            operator.id,
            None,
            AuditKind::ConfigApplied,
            serde_json::json!({ "sha256": sha256, "reverts": new.reverts }),
        );
        let (revision, _) = self.store
            .transact(operator.id, move |work| {
                let (new, audit, sha256, by) =
                    (new.clone(), audit.clone(), sha256.clone(), by.clone());
                Box::pin(async move {
                    let now = work.now();
                    let next = query(
                        "SELECT COALESCE(MAX(revision), 0) + 1 AS next FROM config_revisions",
                    )
                    .fetch_one(work.conn())
                    .await?;
                    let revision: i64 = next.try_get("next")?;
                    query(format!(
                        "INSERT INTO config_revisions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .bind(revision)
                    .bind(sha256.clone())
                    .bind(new.yaml.clone())
                    .bind(by.clone())
                    .bind(now.as_millis())
                    .bind(new.diff.clone())
                    .bind(new.reverts)
                    .execute(work.conn())
                    .await?;
                    let mut audit = audit;
                    let mut detail: serde_json::Value =
                        serde_json::from_str(&audit.detail).unwrap_or_default();
                    detail["revision"] = revision.into();
                    audit.detail = detail.to_string();
                    work.audit(&audit).await?;
                    let event = clade_protocol::LifecycleEvent::from(clade_protocol::ConfigApplied {
                        revision,
                        sha256: sha256.clone(),
                        applied_by: by.clone(),
                        reverts: new.reverts,
                    });
                    work.announce(None, &[crate::turns::OutboxEvent::from(&event)]).await?;
                    Ok(ConfigRevision {
                        revision,
                        sha256,
                        yaml: new.yaml,
                        applied_by: by,
                        applied_at: Timestamp::from_millis(now.as_millis()),
                        diff: new.diff,
                        reverts: new.reverts,
                    })
                })
            })
            .await?;
        Ok(revision)
    }

    /// The newest revisions first, at most `limit`.
    pub async fn list(self, limit: u32) -> Result<Vec<ConfigRevision>> {
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM config_revisions ORDER BY revision DESC LIMIT $1"
                ))
                .bind(i64::from(limit.max(1))),
            )
            .await?;
        rows.iter().map(revision_row).collect()
    }

    pub async fn get(self, revision: i64) -> Result<ConfigRevision> {
        let row = self
            .store
            .maybe_row(
                query(format!("SELECT {COLUMNS} FROM config_revisions WHERE revision = $1"))
                    .bind(revision),
            )
            .await?;
        row.as_ref()
            .map(revision_row)
            .transpose()?
            .ok_or_else(|| Error::ConfigRevisionNotFound(revision))
    }

    /// The newest revision's number (0 before any was applied): what a gateway compares with
    /// the one it runs.
    pub async fn latest(self) -> Result<i64> {
        let row = self
            .store
            .maybe_row(query("SELECT COALESCE(MAX(revision), 0) AS latest FROM config_revisions"))
            .await?;
        Ok(row.map(|row| row.try_get("latest")).transpose()?.unwrap_or(0))
    }
}
