//! One tenant's sessions: their events, turns, outbox and history, as the API reads them.

use crate::db::query;
use clade_core::{
    AgentId, EventId, EventStatus, ExecutionKind, SessionId, StepKey, TenantId, TurnId, TurnStatus,
};

use crate::error::{Error, Result};
use crate::store::{Store, id_bytes};

use super::write::journal_in;
use super::*;

/// One tenant's sessions as the API and the operator read them: a session, its events,
/// turns, summaries and outbox, and its queue mode. The engine's turn path writes through
/// [`crate::Work::turns`] and the store's turn methods instead.
#[derive(Clone, Copy)]
pub struct Sessions<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s sessions, their events, turns and outbox.
    pub fn sessions(&self, tenant: TenantId) -> Sessions<'_> {
        Sessions { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's sessions, their events, turns and outbox.
    pub fn sessions(&self) -> Sessions<'_> {
        self.store().sessions(self.tenant())
    }
}

impl Sessions<'_> {
    /// The event of `tenant` with id `id`.
    /// The event stored under idempotency `key` in `tenant`, with its session, if one is.
    pub async fn event_of_key(self, key: &str) -> Result<Option<(EventId, SessionId)>> {
        let tenant = self.tenant;
        let row = self.store
            .maybe_row(
                query("SELECT id, session_id FROM events WHERE tenant_id = $1 AND idempotency_key = $2")
                    .bind(b(tenant.as_bytes()))
                    .bind(key),
            )
            .await?;
        row.map(|r| {
            Ok((
                EventId::from_bytes(id_bytes(&r, "id")?),
                SessionId::from_bytes(id_bytes(&r, "session_id")?),
            ))
        })
        .transpose()
    }

    pub async fn event(self, id: EventId) -> Result<EventRow> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 AND tenant_id = $2"
                ))
                .bind(b(id.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref().map(event_row).transpose()?.ok_or_else(|| Error::EventNotFound(id.to_string()))
    }

    /// The turn that ended `event` (done, failed or yielded), once it has ended: one read
    /// where [`crate::Sessions::event`] and [`Store::turn`] would be two.
    pub async fn ended_turn_of(self, event: EventId) -> Result<Option<TurnRow>> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(ENDED_TURN_OF_EVENT).bind(b(event.as_bytes())).bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref().map(turn_row).transpose()
    }

    /// Resumes the session's yielded turns: each runs on from its journal, with a fresh budget
    /// of model calls, and nothing it already did (a tool call, a model call) runs again. Each
    /// resumed turn gets a `resumed` journal step and a `turn.resumed` outbox event in the same
    /// transaction. Returns how many events went back to running, and the outbox rows.
    pub async fn resume(self, session: SessionId) -> Result<(u64, Vec<OutboxRow>)> {
        let tenant = self.tenant;
        let now = self.store.now();
        let fence = self.store.shard_leases().fencing().of(session.as_bytes());
        self.store
            .write(move |conn| {
                Box::pin(async move {
                    crate::leases::check(conn, fence).await?;
                    let yielded = query(
                        "SELECT id FROM executions WHERE owner_id = $1 AND kind = $2 \
                     AND tenant_id = $3 AND status = $4",
                    )
                    .bind(b(session.as_bytes()))
                    .bind(ExecutionKind::Turn.as_str())
                    .bind(b(tenant.as_bytes()))
                    .bind(TurnStatus::Yielded.execution_status().as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                    let (mut events, mut rows) = (0, Vec::new());
                    for row in &yielded {
                        let turn = TurnId::from_bytes(id_bytes(row, "id")?);
                        let resumes: i64 = query(
                            "SELECT COUNT(*) AS n FROM execution_steps WHERE execution_id = $1 \
                         AND step_key LIKE 'resume/%'",
                        )
                        .bind(b(turn.as_bytes()))
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get("n")?;
                        let n = u32::try_from(resumes).map_err(|_| {
                            Error::BadRow(format!("turn {turn} was resumed {resumes} times"))
                        })?;
                        let entry = JournalEntry { step: StepKey::Resume { n }, data: "{}".into() };
                        journal_in(conn, tenant, turn, entry, now).await?;
                        query(
                            "UPDATE executions SET status = $2, error = NULL, updated_at = $3, \
                         finished_at = NULL WHERE id = $1",
                        )
                        .bind(b(turn.as_bytes()))
                        .bind(TurnStatus::Running.execution_status().as_str())
                        .bind(now.as_millis())
                        .execute(&mut *conn)
                        .await?;
                        events += query(TURN_EVENTS_STATUS)
                            .bind(b(turn.as_bytes()))
                            .bind(EventStatus::Running.as_str())
                            .execute(&mut *conn)
                            .await?;
                        let resumed =
                            clade_protocol::LifecycleEvent::from(clade_protocol::TurnResumed {
                                turn: turn.to_string(),
                                resumes: u64::from(n) + 1,
                            });
                        let outbox = [OutboxEvent::from(&resumed)];
                        rows.extend(
                            insert_outbox(conn, now, tenant, Some(session), Some(turn), &outbox)
                                .await?,
                        );
                    }
                    Ok((events, rows))
                })
            })
            .await
    }

    pub async fn get(self, id: SessionId) -> Result<SessionRow> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND tenant_id = $2"
                ))
                .bind(b(id.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref()
            .map(session_row)
            .transpose()?
            .ok_or_else(|| Error::SessionNotFound(id.to_string()))
    }

    /// Sets (or, with `None`, clears) a session's own queue mode; the caller checks the value.
    pub async fn set_queue_mode(
        self,
        session: SessionId,
        mode: Option<String>,
    ) -> Result<SessionRow> {
        let tenant = self.tenant;
        let now = self.store.now();
        self.store.write(move |conn| {
            let mode = mode.clone();
            Box::pin(async move {
                let updated = query(
                    "UPDATE sessions SET queue_mode = $3, updated_at = $4 WHERE id = $1 AND tenant_id = $2",
                )
                .bind(b(session.as_bytes()))
                .bind(b(tenant.as_bytes()))
                .bind(mode)
                .bind(now.as_millis())
                .execute(&mut *conn)
                .await?;
                if updated == 0 {
                    return Err(Error::SessionNotFound(session.to_string()));
                }
                let row = query(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
                    .bind(b(session.as_bytes()))
                    .fetch_one(&mut *conn)
                    .await?;
                session_row(&row)
            })
        })
        .await
    }

    /// A tenant's sessions, most recently active first.
    pub async fn list(self, agent: Option<AgentId>, limit: u32) -> Result<Vec<SessionRow>> {
        let tenant = self.tenant;
        self.store.sessions(tenant).list_before(agent, None, limit).await
    }

    /// A page of a tenant's sessions, most recently active first (ties by id): those after
    /// `before` in that order, at most `limit`. A session active again while pages are read
    /// moves to the front, so a listing that pages on may miss it or show it twice.
    pub async fn list_before(
        self,
        agent: Option<AgentId>,
        before: Option<SessionCursor>,
        limit: u32,
    ) -> Result<Vec<SessionRow>> {
        let tenant = self.tenant;
        // With no cursor, a position after every session: the newest time there is.
        let (at, id) =
            before.map_or((i64::MAX, vec![0xff; 16]), |c| (c.updated_at, b(c.id.as_bytes())));
        let page = "(updated_at < $2 OR (updated_at = $2 AND id < $3))";
        let query = match agent {
            Some(agent) => query(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND {page} AND agent_id = $4 \
                 ORDER BY updated_at DESC, id DESC LIMIT $5"
            ))
            .bind(b(tenant.as_bytes()))
            .bind(at)
            .bind(id)
            .bind(b(agent.as_bytes()))
            .bind(i64::from(limit)),
            None => query(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND {page} \
                 ORDER BY updated_at DESC, id DESC LIMIT $4"
            ))
            .bind(b(tenant.as_bytes()))
            .bind(at)
            .bind(id)
            .bind(i64::from(limit)),
        };
        self.store.rows(query).await?.iter().map(session_row).collect()
    }

    /// A page of a session's turns, oldest first: those after the turn `after` (from the
    /// first without it), at most `limit`, each with its events, its usage and its journal
    /// (steps in the order they were written). Three reads, whatever the page's size; none
    /// for a session of another tenant.
    pub async fn turn_records(
        self,
        session: SessionId,
        after: Option<TurnId>,
        limit: u32,
    ) -> Result<Vec<TurnRecord>> {
        let tenant = self.tenant;
        let after = after.map_or_else(|| vec![0u8; 16], |id| b(id.as_bytes()));
        self.store.records_from(tenant, session, ">", after, limit).await
    }

    /// One turn of a session, with its events, usage and journal, as [`crate::Sessions::turn_records`]
    /// gives them; another session's or tenant's turn is not found.
    pub async fn turn_record(self, session: SessionId, turn: TurnId) -> Result<TurnRecord> {
        let tenant = self.tenant;
        let mut records =
            self.store.records_from(tenant, session, ">=", b(turn.as_bytes()), 1).await?;
        match records.pop() {
            Some(record) if record.turn.id == turn => Ok(record),
            _ => Err(Error::TurnNotFound(turn.to_string())),
        }
    }

    /// What people wrote in one turn of `session`, a tenant's (as [`Store::turn_texts`] gives
    /// it, without the turn's journal); none for another session's or tenant's turn.
    pub async fn turn_texts(self, session: SessionId, turn: TurnId) -> Result<Vec<String>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT text FROM events WHERE turn_id = $1 AND session_id = $2 \
                     AND tenant_id = $3 ORDER BY seq",
                )
                .bind(b(turn.as_bytes()))
                .bind(b(session.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        rows.iter().map(|r| r.try_get("text")).collect()
    }

    /// A session's outbox rows after `after` (for resumable streams).
    pub async fn outbox(
        self,
        session: SessionId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>> {
        let (tenant, horizon) = (self.tenant, self.store.outbox_horizon().await?);
        let rows = self.store.rows(query(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE session_id = $1 AND tenant_id = $2 AND id > $3 \
             AND id <= $4 ORDER BY id LIMIT $5"
        ))
        .bind(b(session.as_bytes()))
        .bind(b(tenant.as_bytes()))
        .bind(after)
        .bind(horizon)
        .bind(i64::from(limit))).await?;
        rows.iter().map(outbox_row).collect()
    }

    /// The outbox rows after `after` of every session of one agent (for an agent-wide stream
    /// that fell behind). It walks the outbox from `after` on, so it is meant for the short
    /// gaps a lagging stream leaves.
    pub async fn agent_outbox(
        self,
        agent: AgentId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>> {
        let (tenant, horizon) = (self.tenant, self.store.outbox_horizon().await?);
        let columns = OUTBOX_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>();
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {} FROM outbox o JOIN sessions s ON s.id = o.session_id \
             WHERE o.id > $1 AND o.id <= $2 AND o.tenant_id = $3 AND s.agent_id = $4 \
             ORDER BY o.id LIMIT $5",
                    columns.join(", ")
                ))
                .bind(after)
                .bind(horizon)
                .bind(b(tenant.as_bytes()))
                .bind(b(agent.as_bytes()))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// A tenant's lifecycle events after outbox position `after`, oldest first, filtered as
    /// `filter` says: the history `GET /v1/events` pages through.
    pub async fn event_history(
        self,
        filter: &HistoryFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>> {
        let (tenant, horizon) = (self.tenant, self.store.outbox_horizon().await?);
        let columns = OUTBOX_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>();
        // Conditions are added only when asked for, so a session's history walks its index.
        let mut sql = format!(
            "SELECT {} FROM outbox o WHERE o.tenant_id = $1 AND o.id > $2 AND o.id <= $3 \
             AND o.created_at >= $4",
            columns.join(", ")
        );
        let mut n = 5;
        if filter.session.is_some() {
            sql.push_str(&format!(" AND o.session_id = ${n}"));
            n += 1;
        }
        if !filter.agents.is_empty() {
            let marks: Vec<String> =
                (0..filter.agents.len()).map(|i| format!("${}", n + i)).collect();
            sql.push_str(&format!(
                " AND o.session_id IN (SELECT id FROM sessions WHERE agent_id IN ({}))",
                marks.join(", ")
            ));
            n += filter.agents.len();
        }
        if filter.kind.is_some() {
            sql.push_str(&format!(" AND o.kind = ${n}"));
            n += 1;
        }
        sql.push_str(&format!(" ORDER BY o.id LIMIT ${n}"));
        let mut q = query(sql)
            .bind(b(tenant.as_bytes()))
            .bind(after)
            .bind(horizon)
            .bind(filter.since.map_or(i64::MIN, |t| t.as_millis()));
        if let Some(session) = filter.session {
            q = q.bind(b(session.as_bytes()));
        }
        for agent in &filter.agents {
            q = q.bind(b(agent.as_bytes()));
        }
        if let Some(kind) = filter.kind {
            q = q.bind(kind.as_str());
        }
        let rows = self.store.rows(q.bind(i64::from(limit))).await?;
        rows.iter().map(outbox_row).collect()
    }
}
