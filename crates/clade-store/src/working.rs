//! Sessions' working memory: a scratchpad of small named values (a plan, a counter, state
//! carried between turns) that an agent writes with a tool and sees in every turn's context.
//! Each write is a new version of its name, recorded with the turn that wrote it; a cleared
//! name is a version without a value. Writing the value a name holds already adds nothing, so a
//! repeated tool call changes nothing.

use clade_core::{SessionId, TenantId, Timestamp, TurnId};

use crate::db::{Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes};

/// The longest value, in bytes: working memory is shown in every turn's context.
pub const MAX_WORKING_VALUE_BYTES: usize = 2048;
/// The most names a session holds values under at once.
pub const MAX_WORKING_NAMES: i64 = 32;
/// The longest name, in bytes.
pub const MAX_WORKING_NAME_BYTES: usize = 64;
/// Versions kept of each name, the newest.
pub const WORKING_VERSIONS_KEPT: i64 = 16;

/// One version of a name's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingEntry {
    pub name: String,
    /// `None`: the name was cleared.
    pub value: Option<String>,
    /// 1 for the first write of the name, one more for each write after it.
    pub version: u32,
    /// The turn whose tool call wrote it.
    pub turn: Option<TurnId>,
    pub written_at: Timestamp,
}

/// Checks a name: 1 to 64 letters, digits, `_`, `-` or `.`.
pub fn check_working_name(name: &str) -> Result<()> {
    let fits = (1..=MAX_WORKING_NAME_BYTES).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if fits {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "working memory name {name:?}: 1 to {MAX_WORKING_NAME_BYTES} letters, digits, '_', '-' or '.'"
        )))
    }
}

/// Checks a value: text of at most 2 KiB, no control characters but line breaks and tabs.
pub fn check_working_value(value: &str) -> Result<()> {
    if value.len() > MAX_WORKING_VALUE_BYTES {
        return Err(Error::InvalidInput(format!(
            "a working memory value holds at most {MAX_WORKING_VALUE_BYTES} bytes, not {}: keep the essential, or save it to long-term memory",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(Error::InvalidInput(
            "a working memory value holds control characters: it must be text".into(),
        ));
    }
    Ok(())
}

fn entry(row: &Row) -> Result<WorkingEntry> {
    let version: i64 = row.try_get("version")?;
    let turn: Option<Vec<u8>> = row.try_get("turn_id")?;
    let turn = match turn {
        Some(bytes) => Some(TurnId::from_bytes(
            bytes.try_into().map_err(|_| Error::BadRow("working memory: bad turn id".into()))?,
        )),
        None => None,
    };
    Ok(WorkingEntry {
        name: row.try_get("name")?,
        value: row.try_get("value")?,
        version: u32::try_from(version).unwrap_or(u32::MAX),
        turn,
        written_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

const COLUMNS: &str = "w.name, w.value, w.version, w.turn_id, w.created_at";

/// The newest version of each name of a session, `$1`.
const NEWEST: &str = "w.session_id = $1 AND w.version = (SELECT MAX(x.version) \
     FROM working_memory x WHERE x.session_id = w.session_id AND x.name = w.name)";

/// One tenant's working memory: the named notes a session keeps while it runs.
#[derive(Clone, Copy)]
pub struct Working<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s working memory of sessions.
    pub fn working(&self, tenant: TenantId) -> Working<'_> {
        Working { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's working memory of sessions.
    pub fn working(&self) -> Working<'_> {
        self.store().working(self.tenant())
    }
}

impl Working<'_> {
    /// Sets (`Some`) or clears (`None`) `name` in `tenant`'s session's working memory, written by
    /// `turn`. The value the name holds already is not written again: the entry that holds it
    /// is returned. A new name past [`MAX_WORKING_NAMES`] is refused.
    pub async fn write(
        self,
        session: SessionId,
        name: &str,
        value: Option<String>,
        turn: Option<TurnId>,
    ) -> Result<WorkingEntry> {
        let tenant = self.tenant;
        check_working_name(name)?;
        if let Some(value) = &value {
            check_working_value(value)?;
        }
        let name = name.to_owned();
        let (written, _) = self.store
            .transact(tenant, move |work| {
                let (name, value) = (name.clone(), value.clone());
                Box::pin(async move {
                    let id = session.as_bytes().to_vec();
                    let owner = query("SELECT agent_id FROM sessions WHERE id = $1 AND tenant_id = $2")
                        .bind(id.clone())
                        .bind(tenant.as_bytes().to_vec())
                        .fetch_optional(work.conn())
                        .await?;
                    let Some(owner) = owner else {
                        return Err(Error::SessionNotFound(session.to_string()));
                    };
                    let agent = id_bytes(&owner, "agent_id")?.to_vec();
                    let latest = query(format!(
                        "SELECT {COLUMNS} FROM working_memory w WHERE w.session_id = $1 \
                         AND w.name = $2 ORDER BY w.version DESC LIMIT 1"
                    ))
                    .bind(id.clone())
                    .bind(name.clone())
                    .fetch_optional(work.conn())
                    .await?
                    .as_ref()
                    .map(entry)
                    .transpose()?;
                    match &latest {
                        Some(latest) if latest.value == value => return Ok(latest.clone()),
                        None if value.is_none() => {
                            return Ok(WorkingEntry {
                                name,
                                value: None,
                                version: 0,
                                turn: None,
                                written_at: work.now(),
                            });
                        }
                        _ => {}
                    }
                    let new_name = latest.as_ref().is_none_or(|l| l.value.is_none());
                    if new_name && value.is_some() {
                        let held = query(format!(
                            "SELECT COUNT(*) AS n FROM working_memory w WHERE {NEWEST} \
                             AND w.value IS NOT NULL"
                        ))
                        .bind(id.clone())
                        .fetch_one(work.conn())
                        .await?;
                        if held.try_get::<i64, _>("n")? >= MAX_WORKING_NAMES {
                            return Err(Error::InvalidInput(format!(
                                "working memory holds {MAX_WORKING_NAMES} values already: clear one you no longer need first"
                            )));
                        }
                    }
                    let version = latest.as_ref().map_or(1, |l| l.version.saturating_add(1));
                    query(
                        "INSERT INTO working_memory (session_id, name, version, tenant_id, \
                         agent_id, value, turn_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(id.clone())
                    .bind(name.clone())
                    .bind(i64::from(version))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent)
                    .bind(value.clone())
                    .bind(turn.map(|t| t.as_bytes().to_vec()))
                    .bind(work.now().as_millis())
                    .execute(work.conn())
                    .await?;
                    query(
                        "DELETE FROM working_memory WHERE session_id = $1 AND name = $2 \
                         AND version <= $3",
                    )
                    .bind(id)
                    .bind(name.clone())
                    .bind(i64::from(version) - WORKING_VERSIONS_KEPT)
                    .execute(work.conn())
                    .await?;
                    Ok(WorkingEntry { name, value, version, turn, written_at: work.now() })
                })
            })
            .await?;
        Ok(written)
    }

    /// The values `tenant`'s session holds now, by name; none for another tenant's session.
    pub async fn list(self, session: SessionId) -> Result<Vec<WorkingEntry>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM working_memory w WHERE {NEWEST} AND w.tenant_id = $2 \
                     AND w.value IS NOT NULL ORDER BY w.name"
                ))
                .bind(session.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(entry).collect()
    }

    /// The versions kept of `name` in `tenant`'s session, newest first.
    pub async fn history(self, session: SessionId, name: &str) -> Result<Vec<WorkingEntry>> {
        let tenant = self.tenant;
        check_working_name(name)?;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM working_memory w WHERE w.session_id = $1 \
                     AND w.tenant_id = $2 AND w.name = $3 ORDER BY w.version DESC"
                ))
                .bind(session.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .bind(name.to_owned()),
            )
            .await?;
        rows.iter().map(entry).collect()
    }
}
