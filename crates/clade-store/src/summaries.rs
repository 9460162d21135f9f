//! What compaction made of sessions' older turns: each summary covers every completed turn of
//! its session up to one turn (`through`). Summaries are only added: the turns they cover
//! stay in the store (the transcript is archived, never replaced by its summary), and so do
//! earlier summaries, which the newest one includes.

use clade_core::{AgentId, SessionId, TenantId, Timestamp, TurnId};

use crate::db::query;
use crate::error::{Error, Result};
use crate::scoped::SystemStore;
use crate::store::{Store, id_bytes};

/// A session's summary as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: SessionId,
    /// The last turn it covers.
    pub through: TurnId,
    pub text: String,
    /// Turns folded into it, those of the summaries before it included.
    pub turns: u32,
    /// The model that wrote it; `None` when compaction wrote it without one.
    pub model: Option<String>,
    /// Memory items the compaction saved from the turns it folded.
    pub memories: u32,
    pub created_at: Timestamp,
}

/// A new summary of `session`, of `tenant`'s agent `agent`.
#[derive(Debug, Clone)]
pub struct NewSummary {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub session: SessionId,
    pub through: TurnId,
    pub text: String,
    pub turns: u32,
    pub model: Option<String>,
    pub memories: u32,
}

/// A completed turn as its successors' history shows it: the texts of its events (a line
/// each) and its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastTurn {
    pub id: TurnId,
    pub user: String,
    pub reply: String,
}

const COLUMNS: &str = "session_id, through_turn, text, turns, model, memories, created_at";

fn summary_row(row: &crate::db::Row) -> Result<SessionSummary> {
    let turns: i64 = row.try_get("turns")?;
    let memories: i64 = row.try_get("memories")?;
    Ok(SessionSummary {
        session_id: SessionId::from_bytes(id_bytes(row, "session_id")?),
        through: TurnId::from_bytes(id_bytes(row, "through_turn")?),
        text: row.try_get("text")?,
        turns: u32::try_from(turns).unwrap_or(u32::MAX),
        model: row.try_get("model")?,
        memories: u32::try_from(memories).unwrap_or(u32::MAX),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

/// The longest summary stored, in bytes: a summary goes into every turn's context.
pub const MAX_SUMMARY_BYTES: usize = 64 * 1024;

impl Store {
    /// Stores a summary of `new.session`'s turns through `new.through`. Refused when the
    /// session is not the tenant's agent's, when the turn is not that session's, and when the
    /// session has a summary through a later turn already (a compaction that lost a race);
    /// the same `through` again is a no-op that returns the stored one.
    pub async fn save_summary(&self, new: NewSummary) -> Result<SessionSummary> {
        if new.text.trim().is_empty() || new.text.len() > MAX_SUMMARY_BYTES {
            return Err(Error::InvalidInput(format!(
                "a session summary holds 1 to {MAX_SUMMARY_BYTES} bytes of text, not {}",
                new.text.len()
            )));
        }
        let (summary, _) = self
            .transact(new.tenant, move |work| {
                let new = new.clone();
                Box::pin(async move {
                    let session = new.session.as_bytes().to_vec();
                    let owned = query(
                        "SELECT 1 AS one FROM executions WHERE id = $1 AND owner_id = $2 \
                         AND tenant_id = $3 AND agent_id = $4 AND kind = 'turn'",
                    )
                    .bind(new.through.as_bytes().to_vec())
                    .bind(session.clone())
                    .bind(new.tenant.as_bytes().to_vec())
                    .bind(new.agent.as_bytes().to_vec())
                    .fetch_optional(work.conn())
                    .await?;
                    if owned.is_none() {
                        return Err(Error::TurnNotFound(new.through.to_string()));
                    }
                    let latest = query(
                        "SELECT through_turn FROM session_summaries WHERE session_id = $1 \
                         ORDER BY through_turn DESC LIMIT 1",
                    )
                    .bind(session.clone())
                    .fetch_optional(work.conn())
                    .await?;
                    if let Some(latest) = latest {
                        let through = TurnId::from_bytes(id_bytes(&latest, "through_turn")?);
                        if through > new.through {
                            return Err(Error::InvalidInput(format!(
                                "session {} has a summary through a later turn ({through})",
                                new.session
                            )));
                        }
                    }
                    query(
                        "INSERT INTO session_summaries (session_id, through_turn, tenant_id, \
                         agent_id, text, turns, model, memories, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (session_id, through_turn) DO NOTHING",
                    )
                    .bind(session.clone())
                    .bind(new.through.as_bytes().to_vec())
                    .bind(new.tenant.as_bytes().to_vec())
                    .bind(new.agent.as_bytes().to_vec())
                    .bind(new.text.clone())
                    .bind(i64::from(new.turns))
                    .bind(new.model.clone())
                    .bind(i64::from(new.memories))
                    .bind(work.now().as_millis())
                    .execute(work.conn())
                    .await?;
                    let row = query(format!(
                        "SELECT {COLUMNS} FROM session_summaries \
                         WHERE session_id = $1 AND through_turn = $2"
                    ))
                    .bind(session)
                    .bind(new.through.as_bytes().to_vec())
                    .fetch_one(work.conn())
                    .await?;
                    summary_row(&row)
                })
            })
            .await?;
        Ok(summary)
    }
}

impl SystemStore {
    /// The session's newest summary that covers only turns before `before` (a resumed turn
    /// older than the newest summary sees none).
    pub async fn summary_before(
        &self,
        session: SessionId,
        before: TurnId,
    ) -> Result<Option<SessionSummary>> {
        let row = self
            .0
            .maybe_row(
                query(format!(
                    "SELECT {COLUMNS} FROM session_summaries WHERE session_id = $1 \
                     AND through_turn < $2 ORDER BY through_turn DESC LIMIT 1"
                ))
                .bind(session.as_bytes().to_vec())
                .bind(before.as_bytes().to_vec()),
            )
            .await?;
        row.as_ref().map(summary_row).transpose()
    }
}

impl crate::Sessions<'_> {
    /// `tenant`'s session's summaries, newest first, at most `limit`.
    pub async fn summaries(self, session: SessionId, limit: u32) -> Result<Vec<SessionSummary>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM session_summaries WHERE session_id = $1 \
                     AND tenant_id = $2 ORDER BY through_turn DESC LIMIT $3"
                ))
                .bind(session.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(summary_row).collect()
    }
}
