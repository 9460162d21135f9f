//! Reads across tenants for the engine and the dispatchers: open events, history, journals
//! and the outbox.

use crate::db::{Query, query};
use clade_core::{EventStatus, ExecutionKind, SessionId, TenantId, Timestamp, TurnId};

use crate::error::{Error, Result};
use crate::scoped::SystemStore;
use crate::store::{Store, id_bytes};

use super::*;

impl Store {
    /// The session's turns from the id `from` on (`op`: `>` after it, `>=` from it).
    pub(super) async fn records_from(
        &self,
        tenant: TenantId,
        session: SessionId,
        op: &str,
        from: Vec<u8>,
        limit: u32,
    ) -> Result<Vec<TurnRecord>> {
        let turns = self
            .rows(
                query(format!(
                    "SELECT {TURN_COLUMNS}, model_calls, input_tokens AS usage_input, \
                     output_tokens AS usage_output, cost_micros AS usage_cost \
                     FROM executions WHERE owner_id = $1 AND kind = $5 AND tenant_id = $2 \
                     AND id {op} $3 ORDER BY id LIMIT $4"
                ))
                .bind(b(session.as_bytes()))
                .bind(b(tenant.as_bytes()))
                .bind(from)
                .bind(i64::from(limit))
                .bind(ExecutionKind::Turn.as_str()),
            )
            .await?;
        let mut records = turns
            .iter()
            .map(|row| {
                let n = |c: &str| row.try_get::<i64, _>(c).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(TurnRecord {
                    turn: turn_row(row)?,
                    events: Vec::new(),
                    usage: TurnUsage {
                        model_calls: n("model_calls")?,
                        input_tokens: n("usage_input")?,
                        output_tokens: n("usage_output")?,
                        cost_micros: n("usage_cost")?,
                    },
                    steps: Vec::new(),
                    step_times: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(records);
        };
        // Turn ids are time-ordered: the page's events and steps are those of turns in its
        // range (other sessions' turns may interleave, hence the session filter).
        let range = |q: Query| {
            q.bind(b(first.turn.id.as_bytes()))
                .bind(b(last.turn.id.as_bytes()))
                .bind(b(session.as_bytes()))
        };
        let events = self
            .rows(range(query(format!(
                "SELECT {EVENT_COLUMNS} FROM events \
                 WHERE turn_id BETWEEN $1 AND $2 AND session_id = $3 ORDER BY seq"
            ))))
            .await?;
        let steps = self
            .rows(range(query(
                "SELECT s.execution_id AS turn_id, s.step_key AS step, s.data AS data, \
                 s.created_at AS written_at \
                 FROM execution_steps s JOIN executions t ON t.id = s.execution_id \
                 WHERE s.execution_id BETWEEN $1 AND $2 AND t.owner_id = $3 \
                 ORDER BY s.execution_id, s.seq",
            )))
            .await?;
        let index: std::collections::HashMap<TurnId, usize> =
            records.iter().enumerate().map(|(i, r)| (r.turn.id, i)).collect();
        for row in &events {
            let event = event_row(row)?;
            if let Some(&i) = event.turn_id.as_ref().and_then(|t| index.get(t)) {
                records[i].events.push(event);
            }
        }
        for row in &steps {
            let turn = TurnId::from_bytes(id_bytes(row, "turn_id")?);
            if let Some(&i) = index.get(&turn) {
                records[i].steps.push(journal_entry(row)?);
                records[i].step_times.push(Timestamp::from_millis(row.try_get("written_at")?));
            }
        }
        Ok(records)
    }

    /// The newest outbox position a follower may start after (0 when empty): a live
    /// subscriber that starts now has seen nothing after it. Below a row still committing
    /// ([`crate::horizon`]), so a subscriber starting here is sent that row.
    pub async fn outbox_head(&self) -> Result<i64> {
        let horizon = self.outbox_horizon().await?;
        let head = query("SELECT COALESCE(MAX(id), 0) AS head FROM outbox WHERE id <= $1");
        self.row(head.bind(horizon)).await?.try_get("head")
    }

    /// Integrity check of the whole database file (SQLite); used after crash recovery.
    pub async fn integrity_check(&self) -> Result<String> {
        if self.backend() != crate::Backend::Sqlite {
            return Ok("ok".into());
        }
        let row = self.row(query("PRAGMA integrity_check")).await?;
        row.try_get(0)
    }
}

/// Reads across tenants, for the engine's recovery and delivery (see [`SystemStore`]).
impl SystemStore {
    /// A session by id across tenants (the engine's own use, never a caller's).
    pub async fn session_any_tenant(&self, id: SessionId) -> Result<SessionRow> {
        let row = self
            .maybe_row(
                query(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
                    .bind(b(id.as_bytes())),
            )
            .await?;
        row.as_ref()
            .map(session_row)
            .transpose()?
            .ok_or_else(|| Error::SessionNotFound(id.to_string()))
    }

    /// The texts of the events a turn took, in the order they were accepted.
    pub async fn turn_texts(&self, turn: TurnId) -> Result<Vec<String>> {
        let rows = self
            .rows(
                query("SELECT text FROM events WHERE turn_id = $1 ORDER BY seq")
                    .bind(b(turn.as_bytes())),
            )
            .await?;
        rows.iter().map(|r| r.try_get("text")).collect()
    }

    /// Sessions that have open events (to resume at start-up).
    pub async fn sessions_with_open_events(&self) -> Result<Vec<(TenantId, SessionId)>> {
        let rows = self
            .rows(query(
                "SELECT DISTINCT tenant_id, session_id FROM events WHERE status IN ('pending', 'running')",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let tenant = TenantId::from_bytes(id_bytes(r, "tenant_id")?);
                Ok((tenant, SessionId::from_bytes(id_bytes(r, "session_id")?)))
            })
            .collect()
    }

    /// The session's open events, oldest first: those of the running turn if there is one,
    /// else the pending ones (all of them, or only the first unless `all`); and whether more
    /// open events wait behind those.
    pub async fn open_events(&self, session: SessionId, all: bool) -> Result<OpenEvents> {
        let rows = self.rows(query(open_events_sql()).bind(b(session.as_bytes()))).await?;
        let open: Vec<EventRow> = rows.iter().map(event_row).collect::<Result<_>>()?;
        let total = open.len();
        let events: Vec<EventRow> = match open.first() {
            None => Vec::new(),
            Some(first) => match first.turn_id {
                Some(turn) => open.into_iter().take_while(|e| e.turn_id == Some(turn)).collect(),
                None => {
                    let pending = open.into_iter().take_while(|e| e.status == EventStatus::Pending);
                    if all { pending.collect() } else { pending.take(1).collect() }
                }
            },
        };
        Ok(OpenEvents { more: total > events.len(), events })
    }

    /// The session's events not yet part of a turn, oldest first.
    pub async fn pending_events(&self, session: SessionId) -> Result<Vec<EventRow>> {
        let rows = self.rows(query(pending_events_sql()).bind(b(session.as_bytes()))).await?;
        rows.iter().map(event_row).collect()
    }

    /// The last `limit` completed turns of a session before `before` (and after `after`, when
    /// given: the turns a summary does not cover), oldest first, with the texts of their
    /// events: the conversation history a new turn sees.
    pub async fn history(
        &self,
        session: SessionId,
        after: Option<TurnId>,
        before: TurnId,
        limit: u32,
    ) -> Result<Vec<crate::summaries::PastTurn>> {
        self.past_turns(HISTORY, session, after, before, limit).await
    }

    /// The first `limit` completed turns of a session after `after`, oldest first: what
    /// compaction folds when more turns wait than it reads at once.
    pub async fn oldest_turns(
        &self,
        session: SessionId,
        after: Option<TurnId>,
        limit: u32,
    ) -> Result<Vec<crate::summaries::PastTurn>> {
        let end = TurnId::from_bytes([0xff; 16]);
        self.past_turns(HISTORY_OLDEST, session, after, end, limit).await
    }

    async fn past_turns(
        &self,
        sql: &'static str,
        session: SessionId,
        after: Option<TurnId>,
        before: TurnId,
        limit: u32,
    ) -> Result<Vec<crate::summaries::PastTurn>> {
        // Turn ids are never all zero bytes, so "after nothing" is after the zero id.
        let after = after.map_or_else(|| vec![0u8; 16], |id| id.as_bytes().to_vec());
        let rows = self
            .rows(
                query(sql)
                    .bind(b(session.as_bytes()))
                    .bind(b(before.as_bytes()))
                    .bind(i64::from(limit))
                    .bind(after),
            )
            .await?;
        let mut out: Vec<crate::summaries::PastTurn> = Vec::new();
        for row in &rows {
            let id = TurnId::from_bytes(id_bytes(row, "id")?);
            let text: String = row.try_get("text")?;
            match out.last_mut() {
                Some(last) if last.id == id => {
                    last.user.push('\n');
                    last.user.push_str(&text);
                }
                _ => {
                    let reply: Option<String> = row.try_get("reply")?;
                    out.push(crate::summaries::PastTurn {
                        id,
                        user: text,
                        reply: reply.unwrap_or_default(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The turn's journal: its execution's steps, in the order they were written.
    pub async fn journal(&self, turn: TurnId) -> Result<Vec<JournalEntry>> {
        let rows = self
            .rows(
                query(
                    "SELECT step_key AS step, data FROM execution_steps WHERE execution_id = $1 \
                     ORDER BY seq",
                )
                .bind(b(turn.as_bytes())),
            )
            .await?;
        rows.iter().map(journal_entry).collect()
    }

    pub async fn turn(&self, id: TurnId) -> Result<TurnRow> {
        let row = self
            .maybe_row(
                query(format!("SELECT {TURN_COLUMNS} FROM executions WHERE id = $1 AND kind = $2"))
                    .bind(b(id.as_bytes()))
                    .bind(ExecutionKind::Turn.as_str()),
            )
            .await?;
        row.as_ref().map(turn_row).transpose()?.ok_or_else(|| Error::TurnNotFound(id.to_string()))
    }

    /// What the model calls of `tenant`'s turn `id` consumed.
    pub async fn turn_usage(&self, tenant: TenantId, id: TurnId) -> Result<TurnUsage> {
        let row = self
            .maybe_row(
                query(
                    "SELECT model_calls, input_tokens, output_tokens, cost_micros FROM executions \
                     WHERE id = $1 AND tenant_id = $2 AND kind = $3",
                )
                .bind(b(id.as_bytes()))
                .bind(b(tenant.as_bytes()))
                .bind(ExecutionKind::Turn.as_str()),
            )
            .await?
            .ok_or_else(|| Error::TurnNotFound(id.to_string()))?;
        let n = |c: &str| row.try_get::<i64, _>(c).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(TurnUsage {
            model_calls: n("model_calls")?,
            input_tokens: n("input_tokens")?,
            output_tokens: n("output_tokens")?,
            cost_micros: n("cost_micros")?,
        })
    }

    /// Outbox rows after `after`, all tenants (for the dispatcher).
    pub async fn outbox_after(&self, after: i64, limit: u32) -> Result<Vec<OutboxRow>> {
        let horizon = self.outbox_horizon().await?;
        let rows = self
            .rows(
                query(format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id > $1 AND id <= $2 \
                     ORDER BY id LIMIT $3"
                ))
                .bind(after)
                .bind(horizon)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    pub async fn outbox_row(&self, id: i64) -> Result<OutboxRow> {
        let row = self
            .maybe_row(query(format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1")).bind(id))
            .await?;
        row.as_ref()
            .map(outbox_row)
            .transpose()?
            .ok_or_else(|| Error::EventNotFound(format!("outbox #{id}")))
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let rows = self.rows(query("SELECT subscriber, outbox_id, reason, attempts, created_at FROM dead_letters ORDER BY created_at, outbox_id")).await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    subscriber: r.try_get("subscriber")?,
                    outbox_id: r.try_get("outbox_id")?,
                    reason: r.try_get("reason")?,
                    attempts: r.try_get("attempts")?,
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}
