//! Retention: deleting a tenant's old records as its policy says, never more. One sweep of a
//! tenant is one transaction, with an audit record of what it deleted.
//!
//! - Sessions idle since before a cutoff go with everything they own (events, turns and their
//!   journals, lifecycle events, and the ended runs they own: branches, workers, sub-agent
//!   runs, cron fires), unless an event of theirs waits or runs. A run still under way stays. Job runs that delivered into them stay, and read as gone with their
//!   session.
//! - Lifecycle events older than a cutoff go once every subscriber has been sent them.
//! - Dead letters older than a cutoff go.

use clade_core::{AuditKind, EventStatus, ExecutionKind, TenantId, Timestamp};

use crate::db::{Tx, query};
use crate::error::Result;
use crate::store::{Store, id_bytes};

/// What a sweep deletes: records older than each cutoff (`None` keeps that kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cutoffs {
    pub sessions: Option<Timestamp>,
    pub outbox: Option<Timestamp>,
    pub dead_letters: Option<Timestamp>,
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub events: u64,
    pub turns: u64,
    /// Ended runs other than turns.
    pub runs: u64,
    pub steps: u64,
    pub outbox: u64,
    pub dead_letters: u64,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        *self == Swept::default()
    }
}

impl Store {
    /// Deletes `tenant`'s records older than `cutoffs` (see the module's documentation), in one
    /// transaction with its audit record (when it deleted anything).
    pub async fn sweep(&self, tenant: TenantId, cutoffs: Cutoffs) -> Result<Swept> {
        let by = self.admin_record(tenant, None, AuditKind::RetentionSwept, serde_json::json!({}));
        let (swept, _) = self
            .transact(tenant, move |work| {
                let mut audit = by.clone();
                Box::pin(async move {
                    let mut swept = Swept::default();
                    let id = tenant.as_bytes().to_vec();
                    let now = work.now().as_millis();
                    let conn = work.conn();
                    if let Some(cutoff) = cutoffs.sessions {
                        sweep_sessions(conn, tenant, cutoff, now, &mut swept).await?;
                    }
                    if let Some(cutoff) = cutoffs.dead_letters {
                        swept.dead_letters += query(
                            "DELETE FROM dead_letters WHERE created_at < $2 AND outbox_id IN \
                             (SELECT id FROM outbox WHERE tenant_id = $1)",
                        )
                        .bind(id.clone())
                        .bind(cutoff.as_millis())
                        .execute(&mut *conn)
                        .await?;
                    }
                    if let Some(cutoff) = cutoffs.outbox {
                        // Only what every subscriber has been sent (and no dead letter names).
                        query(crate::turns::REMEMBER_OUTBOX_IDS).execute(&mut *conn).await?;
                        swept.outbox += query(
                            "DELETE FROM outbox WHERE tenant_id = $1 AND created_at < $2 \
                             AND id <= (SELECT COALESCE(MIN(last_id), 0) FROM subscriber_cursors) \
                             AND id NOT IN (SELECT outbox_id FROM dead_letters)",
                        )
                        .bind(id.clone())
                        .bind(cutoff.as_millis())
                        .execute(&mut *conn)
                        .await?;
                    }
                    if !swept.is_empty() {
                        let mut detail: serde_json::Value =
                            serde_json::from_str(&audit.detail).unwrap_or_default();
                        detail["sessions"] = swept.sessions.into();
                        detail["events"] = swept.events.into();
                        detail["turns"] = swept.turns.into();
                        detail["runs"] = swept.runs.into();
                        detail["steps"] = swept.steps.into();
                        detail["outbox"] = swept.outbox.into();
                        detail["dead_letters"] = swept.dead_letters.into();
                        audit.detail = detail.to_string();
                        work.audit(&audit).await?;
                    }
                    Ok(swept)
                })
            })
            .await?;
        Ok(swept)
    }
}

/// Deletes `tenant`'s sessions idle since before `cutoff` with everything they own. On
/// PostgreSQL another node may be accepting an event into one of them: each chosen session's
/// row is locked, as an accept locks it when it reads it (`SESSION_FOR_EVENT`), and checked
/// again once locked, so a session revived meanwhile stays with its event, and an accept that
/// comes after waits and then finds it gone and starts a new one. Row locks, not advisory
/// ones: a sweep may hold thousands, and those would fill PostgreSQL's shared lock table.
async fn sweep_sessions(
    conn: &mut Tx,
    tenant: TenantId,
    cutoff: Timestamp,
    now: i64,
    swept: &mut Swept,
) -> Result<()> {
    let id = tenant.as_bytes().to_vec();
    let idle = |sql: String| {
        query(sql)
            .bind(id.clone())
            .bind(cutoff.as_millis())
            .bind(EventStatus::Pending.as_str())
            .bind(EventStatus::Running.as_str())
    };
    let rows = idle(format!("SELECT id FROM sessions s {IDLE_SINCE} ORDER BY s.id"))
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let session = id_bytes(&row, "id")?.to_vec();
        if let Tx::Postgres(_) = conn {
            query("SELECT id FROM sessions WHERE id = $1 AND tenant_id = $2 FOR UPDATE")
                .bind(session.clone())
                .bind(id.clone())
                .fetch_optional(&mut *conn)
                .await?;
        }
        let still_idle = idle(format!("SELECT id FROM sessions s {IDLE_SINCE} AND s.id = $5"))
            .bind(session.clone())
            .fetch_optional(&mut *conn)
            .await?;
        if still_idle.is_some() {
            delete_session(conn, id.clone(), session, now, swept).await?;
        }
    }
    Ok(())
}

/// A tenant's sessions idle since before `$2`, with no event of theirs waiting or running
/// (`$3`, `$4`).
const IDLE_SINCE: &str = "WHERE s.tenant_id = $1 AND s.updated_at < $2 \
     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.session_id = s.id AND e.status IN ($3, $4))";

/// Deletes the executions a session owns, with their steps: its ended runs (branches, workers,
/// sub-agent runs, cron fires), then its turns, so nothing is left naming what is gone. A run
/// still under way stays, to end where it runs.
async fn delete_executions(
    conn: &mut Tx,
    tenant: &[u8],
    session: &[u8],
    swept: &mut Swept,
) -> Result<()> {
    let owned = "tenant_id = $3 AND owner_id = $1";
    let runs = format!("{owned} AND kind <> $2 AND finished_at IS NOT NULL");
    let turns = format!("{owned} AND kind = $2");
    for (which, count) in [(runs, &mut swept.runs), (turns, &mut swept.turns)] {
        let bound = |sql: String| {
            query(sql)
                .bind(session.to_vec())
                .bind(ExecutionKind::Turn.as_str())
                .bind(tenant.to_vec())
        };
        swept.steps += bound(format!(
            "DELETE FROM execution_steps WHERE execution_id IN \
             (SELECT id FROM executions WHERE {which})"
        ))
        .execute(&mut *conn)
        .await?;
        *count +=
            bound(format!("DELETE FROM executions WHERE {which}")).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes one session with everything it owns.
async fn delete_session(
    conn: &mut Tx,
    tenant: Vec<u8>,
    session: Vec<u8>,
    now: i64,
    swept: &mut Swept,
) -> Result<()> {
    delete_executions(conn, &tenant, &session, swept).await?;
    // Leases of the session end with it.
    query(
        "UPDATE peer_leases SET ended_at = $3, \
         ended_why = 'session deleted' WHERE session_id = $1 \
         AND tenant_id = $2 AND ended_at IS NULL",
    )
    .bind(session.clone())
    .bind(tenant.clone())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for table in ["session_summaries", "working_memory"] {
        query(format!("DELETE FROM {table} WHERE session_id = $1 AND tenant_id = $2"))
            .bind(session.clone())
            .bind(tenant.clone())
            .execute(&mut *conn)
            .await?;
    }
    // A branch or worker goes with its own session; one whose parent
    // goes stays a session of its own, reporting to no one.
    query(
        "DELETE FROM forks WHERE (session_id = $1 \
         OR parent_session = $1) AND tenant_id = $2",
    )
    .bind(session.clone())
    .bind(tenant.clone())
    .execute(&mut *conn)
    .await?;
    query("DELETE FROM pauses WHERE target = $1 AND tenant_id = $2")
        .bind(session.clone())
        .bind(tenant.clone())
        .execute(&mut *conn)
        .await?;
    // A message goes with the conversation it was delivered into.
    query(
        "DELETE FROM agent_messages WHERE to_session = $1 \
         AND tenant_id = $2",
    )
    .bind(session.clone())
    .bind(tenant.clone())
    .execute(&mut *conn)
    .await?;
    query(crate::turns::REMEMBER_OUTBOX_IDS).execute(&mut *conn).await?;
    swept.outbox += query("DELETE FROM outbox WHERE session_id = $1 AND tenant_id = $2")
        .bind(session.clone())
        .bind(tenant.clone())
        .execute(&mut *conn)
        .await?;
    swept.events += query("DELETE FROM events WHERE session_id = $1 AND tenant_id = $2")
        .bind(session.clone())
        .bind(tenant.clone())
        .execute(&mut *conn)
        .await?;
    swept.sessions += query("DELETE FROM sessions WHERE id = $1 AND tenant_id = $2")
        .bind(session)
        .bind(tenant.clone())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
