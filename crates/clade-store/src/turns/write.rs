//! The turn's write path: an event accepted once per idempotency key, a turn begun, its steps
//! journaled and its end recorded, with the outbox rows each change causes, in one transaction.

use std::borrow::Cow;

use crate::db::{Tx, query};
use clade_core::{
    AgentId, EventId, EventStatus, ExecutionKind, ExecutionStatus, SessionId, TenantId, Timestamp,
    TurnId, TurnStatus,
};

use crate::error::{Error, Result};
use crate::store::{Store, UsageRecord, id_bytes, insert_usage};

use super::*;

/// Inserts outbox rows inside the caller's transaction.
pub(crate) async fn insert_outbox(
    conn: &mut Tx,
    now: Timestamp,
    tenant: TenantId,
    session: Option<SessionId>,
    turn: Option<TurnId>,
    events: &[OutboxEvent],
) -> Result<Vec<OutboxRow>> {
    let mut rows = Vec::with_capacity(events.len());
    // Writes run on the writer's connection: its own rusqlite one on SQLite, a pooled one only
    // on PostgreSQL (see `writer::Connect`).
    let mut next_sqlite_id = match conn {
        Tx::Sqlite(_) if !events.is_empty() => Some(
            query(NEXT_OUTBOX_ID_SQLITE).fetch_one(&mut *conn).await?.try_get::<i64, _>("next")?,
        ),
        Tx::Postgres(_) if !events.is_empty() => {
            crate::horizon::register(conn).await?;
            None
        }
        _ => None,
    };
    for event in events {
        let event_id = EventId::generate(now);
        let insert =
            query(if next_sqlite_id.is_some() { OUTBOX_INSERT_SQLITE } else { OUTBOX_INSERT })
                .bind(b(event_id.as_bytes()))
                .bind(b(tenant.as_bytes()))
                .bind(session.map(|s| b(s.as_bytes())))
                .bind(turn.map(|t| b(t.as_bytes())))
                .bind(event.kind.as_str())
                .bind(event.data.clone())
                .bind(now.as_millis());
        let id = match &mut next_sqlite_id {
            Some(next) => {
                let id = *next;
                *next += 1;
                insert.bind(id).execute(&mut *conn).await?;
                id
            }
            None => insert.fetch_one(&mut *conn).await?.try_get("id")?,
        };
        rows.push(OutboxRow {
            id,
            event_id: event_id.to_string(),
            tenant_id: tenant,
            session_id: session,
            turn_id: turn,
            kind: event.kind,
            data: event.data.clone(),
            created_at: now,
        });
    }
    Ok(rows)
}

/// Writes a turn as what it is, an execution of kind `turn` owned by its session, inside the
/// caller's transaction. Its events are its input, so it has none of its own.
async fn insert_turn(
    conn: &mut Tx,
    turn: &TurnRow,
    finished_at: Option<i64>,
    usage: TurnUsage,
) -> Result<()> {
    query(
        "INSERT INTO executions (id, tenant_id, agent_id, kind, owner_kind, owner_id, status, \
         output, error, model, config_revision, model_calls, input_tokens, output_tokens, \
         cost_micros, created_at, updated_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(b(turn.id.as_bytes()))
    .bind(b(turn.tenant_id.as_bytes()))
    .bind(b(turn.agent_id.as_bytes()))
    .bind(ExecutionKind::Turn.as_str())
    .bind(crate::executions::ExecutionOwner::Session(turn.session_id).kind())
    .bind(b(turn.session_id.as_bytes()))
    .bind(turn.status.execution_status().as_str())
    .bind(turn.reply.clone())
    .bind(turn.error.clone())
    .bind(turn.model.clone())
    .bind(turn.config_revision)
    .bind(crate::store::to_i64(usage.model_calls))
    .bind(crate::store::to_i64(usage.input_tokens))
    .bind(crate::store::to_i64(usage.output_tokens))
    .bind(crate::store::to_i64(usage.cost_micros))
    .bind(turn.started_at.as_millis())
    .bind(finished_at.unwrap_or(turn.started_at.as_millis()))
    .bind(finished_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Accepts an event inside the caller's transaction: its agent by handle, deduplication by key,
/// its session found or made, the session's back-pressure checked, the event stored at the
/// session's next position. The new event's row comes back too (`None` for a duplicate).
pub(crate) async fn accept_in(
    conn: &mut Tx,
    now: Timestamp,
    event: NewEvent,
) -> Result<(Accepted, Option<EventRow>)> {
    let agent = query(AGENT_BY_HANDLE)
        .bind(b(event.tenant.as_bytes()))
        .bind(event.agent.clone())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::AgentNotFound(event.agent.clone()))?;
    let agent = AgentId::from_bytes(id_bytes(&agent, "id")?);
    let event_id = EventId::generate(now);
    let key = event.idempotency_key.clone().unwrap_or_else(|| event_id.to_string());
    // A key of our own (the new event's id) cannot have been seen before. One given by the
    // caller may come to two nodes at once (a retried webhook): they take turns.
    if event.idempotency_key.is_some() {
        conn.serialize(&format!("event key {} {key}", event.tenant)).await?;
        if let Some(existing) = find_by_key(conn, event.tenant, &key).await? {
            return Ok((check_duplicate(existing, &event.payload_hash, &key)?, None));
        }
    }
    let (session_id, seq, open) =
        session_for(conn, event.tenant, agent, &event.source, now).await?;
    if open as u64 >= event.max_open_per_session {
        return Err(Error::SessionBusy { pending: open as u64 });
    }
    let inserted = query(
        "INSERT INTO events (id, tenant_id, session_id, seq, idempotency_key, payload_hash, text, \
         status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
    )
    .bind(b(event_id.as_bytes()))
    .bind(b(event.tenant.as_bytes()))
    .bind(b(session_id.as_bytes()))
    .bind(seq)
    .bind(key.clone())
    .bind(event.payload_hash.clone())
    .bind(event.text.clone())
    .bind(now.as_millis())
    .execute(&mut *conn)
    .await;
    if let Err(err) = inserted {
        // Another node took the key first.
        if err.is_unique_violation()
            && let Some(existing) = find_by_key(conn, event.tenant, &key).await?
        {
            return Ok((check_duplicate(existing, &event.payload_hash, &key)?, None));
        }
        return Err(err);
    }
    query(
        "UPDATE sessions SET next_seq = next_seq + 1, last_active_channel = $2, updated_at = $3 \
         WHERE id = $1",
    )
    .bind(b(session_id.as_bytes()))
    .bind(event.source.channel.clone())
    .bind(now.as_millis())
    .execute(&mut *conn)
    .await?;
    let row = EventRow {
        id: event_id,
        tenant_id: event.tenant,
        session_id,
        seq,
        idempotency_key: key,
        text: event.text,
        status: EventStatus::Pending,
        turn_id: None,
        // As stored, to the millisecond.
        created_at: Timestamp::from_millis(now.as_millis()),
    };
    Ok((Accepted { event_id, session_id, duplicate: false }, Some(row)))
}

/// The session an event from `s` to `agent` goes to, made if it is new: its id, the position
/// its next event takes and how many of its events wait. Nodes accepting for one session take
/// turns ([`session_lock`]), so it is made once and its positions are handed out once each.
async fn session_for(
    conn: &mut Tx,
    tenant: TenantId,
    agent: AgentId,
    s: &Source,
    now: Timestamp,
) -> Result<(SessionId, i64, i64)> {
    conn.serialize(&session_lock(tenant, agent, s.platform.as_str(), &s.channel, &s.actor)).await?;
    // One round trip: the session, its next position and how many events wait. On PostgreSQL
    // its row is locked too, as a retention sweep locks it before deleting it: an accept and a
    // sweep of one session take turns (`retention::sweep_sessions`).
    let sql = match conn {
        Tx::Postgres(_) => Cow::Owned(format!("{SESSION_FOR_EVENT} FOR UPDATE OF s")),
        Tx::Sqlite(_) => Cow::Borrowed(SESSION_FOR_EVENT),
    };
    let session = query(sql)
        .bind(b(tenant.as_bytes()))
        .bind(b(agent.as_bytes()))
        .bind(s.platform.as_str().to_owned())
        .bind(s.channel.clone())
        .bind(s.actor.clone())
        .fetch_optional(&mut *conn)
        .await?;
    match session {
        Some(row) => Ok((
            SessionId::from_bytes(id_bytes(&row, "id")?),
            row.try_get::<i64, _>("next_seq")?,
            row.try_get::<i64, _>("open")?,
        )),
        None => {
            let id = SessionId::generate(now);
            query(
                "INSERT INTO sessions (id, tenant_id, agent_id, platform, channel, actor, \
                 last_active_channel, next_seq, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $5, 0, $7, $7)",
            )
            .bind(b(id.as_bytes()))
            .bind(b(tenant.as_bytes()))
            .bind(b(agent.as_bytes()))
            .bind(s.platform.as_str().to_owned())
            .bind(s.channel.clone())
            .bind(s.actor.clone())
            .bind(now.as_millis())
            .execute(&mut *conn)
            .await?;
            Ok((id, 0, 0))
        }
    }
}

/// Appends a step to a turn's execution inside the caller's transaction, numbered after the
/// last; `false` (and nothing written) if a step of that key is already there. The check reads
/// the turn's steps (its iteration limit bounds how many), on pages the append touches anyway.
/// A turn that is not this tenant's is not found.
pub(super) async fn journal_in(
    conn: &mut Tx,
    tenant: TenantId,
    turn: TurnId,
    entry: JournalEntry,
    now: Timestamp,
) -> Result<bool> {
    let inserted = query(JOURNAL_IN)
        .bind(b(turn.as_bytes()))
        .bind(entry.step.to_string())
        .bind(entry.data)
        .bind(now.as_millis())
        .bind(b(tenant.as_bytes()))
        .execute(&mut *conn)
        .await?;
    if inserted > 0 {
        return Ok(true);
    }
    // Already there (a retried step), or no such turn of this tenant's.
    let found = query(TURN_OF_TENANT)
        .bind(b(turn.as_bytes()))
        .bind(b(tenant.as_bytes()))
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        Some(_) => Ok(false),
        None => Err(Error::TurnNotFound(turn.to_string())),
    }
}

/// Records a turn's outcome, its events' status and its outbox events inside the caller's
/// transaction.
async fn finish_in(
    conn: &mut Tx,
    turn: &TurnRow,
    outcome: &TurnOutcome,
    outbox: &[OutboxEvent],
    now: Timestamp,
) -> Result<Vec<OutboxRow>> {
    let ended = query(
        "UPDATE executions SET status = $2, output = $3, error = $4, model = $5, \
         updated_at = $6, finished_at = $6 WHERE id = $1 AND tenant_id = $7 AND kind = 'turn'",
    )
    .bind(b(turn.id.as_bytes()))
    .bind(outcome.status.execution_status().as_str())
    .bind(outcome.reply.clone())
    .bind(outcome.error.clone())
    .bind(outcome.model.clone())
    .bind(now.as_millis())
    .bind(b(turn.tenant_id.as_bytes()))
    .execute(&mut *conn)
    .await?;
    if ended != 1 {
        return Err(Error::TurnNotFound(turn.id.to_string()));
    }
    query(TURN_EVENTS_STATUS)
        .bind(b(turn.id.as_bytes()))
        .bind(outcome.status.event_status().as_str())
        .execute(&mut *conn)
        .await?;
    // A completed turn saw each of its calls return, and each `agent.spawn` end its run: only
    // a failed one (cancelled, timed out, broken off) can leave a run open, so the turns of the
    // common path pay nothing for this.
    if outcome.status == TurnStatus::Failed {
        end_subagent_runs(conn, turn, now).await?;
    }
    insert_outbox(conn, now, turn.tenant_id, Some(turn.session_id), Some(turn.id), outbox).await
}

/// A sub-agent run lives inside the tool call of its session's turn (`agent.spawn`): one still
/// open when that turn fails (cancelled, timed out, broken off while it waited) has no one left
/// to finish it, and is cancelled with it. A session runs one turn at a time, so its open runs
/// are this turn's. A turn that only stopped (yielded) keeps them for its resumption, as a
/// crash does.
async fn end_subagent_runs(conn: &mut Tx, turn: &TurnRow, now: Timestamp) -> Result<()> {
    query(
        "UPDATE executions SET status = $1, error = $2, updated_at = $3, finished_at = $3          WHERE tenant_id = $4 AND owner_kind = 'session' AND owner_id = $5 AND kind = $6          AND finished_at IS NULL",
    )
    .bind(ExecutionStatus::Cancelled.as_str())
    .bind("the turn that started it ended first")
    .bind(now.as_millis())
    .bind(b(turn.tenant_id.as_bytes()))
    .bind(b(turn.session_id.as_bytes()))
    .bind(ExecutionKind::SubAgent.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn find_by_key(
    conn: &mut Tx,
    tenant: TenantId,
    key: &str,
) -> Result<Option<(EventId, SessionId, String)>> {
    let row = query("SELECT id, session_id, payload_hash FROM events WHERE tenant_id = $1 AND idempotency_key = $2")
        .bind(b(tenant.as_bytes()))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| {
        Ok((
            EventId::from_bytes(id_bytes(&r, "id")?),
            SessionId::from_bytes(id_bytes(&r, "session_id")?),
            r.try_get::<String, _>("payload_hash")?,
        ))
    })
    .transpose()
}

fn check_duplicate(
    existing: (EventId, SessionId, String),
    hash: &str,
    key: &str,
) -> Result<Accepted> {
    let (event_id, session_id, stored) = existing;
    if stored != hash {
        return Err(Error::IdempotencyConflict(key.to_owned()));
    }
    Ok(Accepted { event_id, session_id, duplicate: true })
}

/// A turn's writes, as a repository: of a unit of work (`Work::turns`, so a new atomic
/// combination with a turn in it is a closure over repositories), and of the `Store` methods
/// of the same names (`begin_turn`, `append_journal`, `finish_turn`), each a transaction of its
/// own. Bound to one tenant: a turn of another is refused. The outbox rows it writes are added
/// to its caller's list, to publish once committed.
pub struct TurnWrites<'c> {
    conn: &'c mut Tx,
    tenant: TenantId,
    now: Timestamp,
    announced: &'c mut Vec<OutboxRow>,
    /// What the writes are fenced by (`crate::leases`).
    fence: crate::leases::Fence,
}

impl<'c> TurnWrites<'c> {
    pub(crate) fn new(
        conn: &'c mut Tx,
        tenant: TenantId,
        now: Timestamp,
        announced: &'c mut Vec<OutboxRow>,
        fence: crate::leases::Fence,
    ) -> Self {
        Self { conn, tenant, now, announced, fence }
    }

    /// The turn is of this tenant, and this node still holds the lease it writes under.
    async fn check(&mut self, turn: &TurnRow) -> Result<()> {
        if turn.tenant_id != self.tenant {
            return Err(Error::InvalidInput(format!(
                "turn {} is not of this unit of work's tenant",
                turn.id
            )));
        }
        crate::leases::check(self.conn, self.fence.of(turn.session_id.as_bytes())).await
    }

    /// Writes a new turn, takes its events (each must still be pending), journals its first
    /// step with that call's usage, and, for a turn that ends at that step, its outcome: the
    /// row is written in its final state directly.
    pub async fn begin(
        &mut self,
        turn: &TurnRow,
        events: &[EventId],
        outbox: Vec<OutboxEvent>,
        first_step: Option<(JournalEntry, Option<UsageRecord>)>,
        finish: Option<(TurnOutcome, Vec<OutboxEvent>)>,
    ) -> Result<()> {
        self.check(turn).await?;
        let (conn, now) = (&mut *self.conn, self.now);
        // A turn that ends here is written in its final state directly.
        let (status, reply, error, model, finished_at) = match &finish {
            Some((o, _)) => {
                (o.status, o.reply.clone(), o.error.clone(), o.model.clone(), Some(now.as_millis()))
            }
            None => (TurnStatus::Running, None, None, None, None),
        };
        // The first model call's usage is in the turn's totals from the start: no update
        // of the row just inserted.
        let counted = first_step
            .as_ref()
            .and_then(|(_, usage)| usage.as_ref())
            .filter(|usage| usage.turn == Some(turn.id));
        let totals = counted.map_or_else(TurnUsage::default, |usage| {
            let (input, output, cost) = usage.turn_totals();
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            TurnUsage {
                model_calls: 1,
                input_tokens: n(input),
                output_tokens: n(output),
                cost_micros: n(cost),
            }
        });
        let written = TurnRow { status, reply, error, model, ..turn.clone() };
        insert_turn(conn, &written, finished_at, totals).await?;
        let usage_counted = counted.is_some();
        for event in events {
            let taken = query(
                "UPDATE events SET status = $3, turn_id = $1 WHERE id = $2 AND status = 'pending'",
            )
            .bind(b(turn.id.as_bytes()))
            .bind(b(event.as_bytes()))
            .bind(status.event_status().as_str())
            .execute(&mut *conn)
            .await?;
            if taken != 1 {
                return Err(Error::InvalidInput(format!("event {event} is no longer pending")));
            }
        }
        if let Some((entry, usage)) = first_step {
            // The turn was inserted just now, so this is its first step: no number to look up.
            query(FIRST_STEP)
                .bind(b(turn.id.as_bytes()))
                .bind(entry.step.to_string())
                .bind(entry.data)
                .bind(now.as_millis())
                .execute(&mut *conn)
                .await?;
            if let Some(usage) = &usage {
                insert_usage(conn, usage, now, !usage_counted).await?;
            }
        }
        let mut all = outbox;
        if let Some((_, events)) = finish {
            all.extend(events);
        }
        let rows =
            insert_outbox(conn, now, turn.tenant_id, Some(turn.session_id), Some(turn.id), &all)
                .await?;
        self.announced.extend(rows);
        Ok(())
    }

    /// Journals one step with its outbox events, usage and audit record. A step already
    /// journaled is left as it was, and nothing else is written (a retried step).
    pub async fn append(
        &mut self,
        turn: &TurnRow,
        entry: JournalEntry,
        outbox: &[OutboxEvent],
        usage: Option<&UsageRecord>,
        audit: Option<&crate::access::AuditEntry>,
    ) -> Result<()> {
        self.check(turn).await?;
        if audit.is_some_and(|audit| audit.tenant != self.tenant) {
            return Err(Error::InvalidInput(
                "a step's audit record goes to its turn's tenant's chain".into(),
            ));
        }
        let (conn, now) = (&mut *self.conn, self.now);
        if !journal_in(conn, self.tenant, turn.id, entry, now).await? {
            return Ok(());
        }
        // The step's audit record commits with it, or neither does.
        if let Some(audit) = audit {
            crate::access::append_audit(conn, audit, now).await?;
        }
        if let Some(usage) = usage {
            insert_usage(conn, usage, now, true).await?;
        }
        let rows =
            insert_outbox(conn, now, turn.tenant_id, Some(turn.session_id), Some(turn.id), outbox)
                .await?;
        self.announced.extend(rows);
        Ok(())
    }

    /// Ends a turn: its status, reply or error, its events' status, and its outbox events.
    pub async fn finish(
        &mut self,
        turn: &TurnRow,
        outcome: &TurnOutcome,
        outbox: &[OutboxEvent],
    ) -> Result<()> {
        self.check(turn).await?;
        let rows = finish_in(self.conn, turn, outcome, outbox, self.now).await?;
        self.announced.extend(rows);
        Ok(())
    }
}

/// The engine's turn path, each call a unit of work of its own: events accepted, turns
/// started, begun, joined, journaled and finished (a unit of work composes the same writes
/// through [`crate::Work::turns`]).
#[derive(Clone, Copy)]
pub struct Turns<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The turn path: events accepted, turns begun, journaled and finished.
    pub fn turns(&self) -> Turns<'_> {
        Turns { store: self }
    }
}

impl Turns<'_> {
    /// Stores an inbound event (or finds the original for a repeated idempotency key). When
    /// this returns, the event is durable.
    pub async fn accept(self, event: NewEvent) -> Result<Accepted> {
        self.accept_announced(event, |_, _| {}).await
    }

    /// As [`crate::Turns::accept`], and `on_visible` is told as soon as the event is committed,
    /// which can be before it is durable: its turn can start then (see
    /// [`Store::visible_reads`]). It gets the new event's row as stored (`None` for a
    /// duplicate), so whoever runs it need not read it back. Runs on the writer's thread, in
    /// commit order, so it must only hand the values on.
    pub async fn accept_announced(
        self,
        event: NewEvent,
        on_visible: impl FnOnce(&Accepted, Option<&EventRow>) + Send + 'static,
    ) -> Result<Accepted> {
        let now = self.store.now();
        let announce: crate::writer::Announce<(Accepted, Option<EventRow>)> =
            Box::new(move |(accepted, row)| on_visible(accepted, row.as_ref()));
        let (accepted, _) = self
            .store
            .write_announced(Some(announce), move |conn| {
                let event = event.clone();
                Box::pin(async move { accept_in(conn, now, event).await })
            })
            .await?;
        Ok(accepted)
    }

    /// Starts a turn for `events` (or returns the turn they already belong to), writing
    /// `outbox` in the same transaction.
    pub async fn start(
        self,
        session: &SessionRow,
        events: Vec<EventId>,
        config_revision: i64,
        outbox: Vec<OutboxEvent>,
    ) -> Result<(TurnRow, Vec<OutboxRow>)> {
        let now = self.store.now();
        let fence = self.store.shard_leases().fencing().of(session.id.as_bytes());
        let session = session.clone();
        self.store.write(move |conn| {
            let events = events.clone();
            let outbox = outbox.clone();
            let session = session.clone();
            Box::pin(async move {
                crate::leases::check(conn, fence).await?;
                let first = events.first().ok_or_else(|| Error::InvalidInput("a turn needs an event".into()))?;
                let existing: Option<Vec<u8>> = query("SELECT turn_id FROM events WHERE id = $1")
                    .bind(b(first.as_bytes()))
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get("turn_id")?;
                if let Some(turn) = existing {
                    let row = query(format!("SELECT {TURN_COLUMNS} FROM executions WHERE id = $1"))
                        .bind(turn)
                        .fetch_one(&mut *conn)
                        .await?;
                    return Ok((turn_row(&row)?, Vec::new()));
                }
                let turn = TurnRow::starting(&session, config_revision, now);
                insert_turn(conn, &turn, None, TurnUsage::default()).await?;
                for event in &events {
                    query("UPDATE events SET status = 'running', turn_id = $1 WHERE id = $2 AND status = 'pending'")
                        .bind(b(turn.id.as_bytes()))
                        .bind(b(event.as_bytes()))
                        .execute(&mut *conn)
                        .await?;
                }
                let rows = insert_outbox(conn, now, session.tenant_id, Some(session.id), Some(turn.id), &outbox).await?;
                Ok((turn, rows))
            })
        })
        .await
    }

    /// Starts a turn whose id the caller chose, for pending `events`, together with its first
    /// journal entry (and that call's usage) and, for a turn that ended at its first step, its
    /// outcome: one transaction instead of three. Fails if an event is no longer pending.
    pub async fn begin(
        self,
        turn: &TurnRow,
        events: Vec<EventId>,
        outbox: Vec<OutboxEvent>,
        first_step: Option<(JournalEntry, Option<UsageRecord>)>,
        finish: Option<(TurnOutcome, Vec<OutboxEvent>)>,
    ) -> Result<Vec<OutboxRow>> {
        let (now, fence) = (self.store.now(), self.store.shard_leases().fencing());
        let turn = turn.clone();
        self.store
            .write(move |conn| {
                let events = events.clone();
                let finish = finish.clone();
                let first_step = first_step.clone();
                let outbox = outbox.clone();
                let turn = turn.clone();
                let fence = fence.clone();
                Box::pin(async move {
                    let mut rows = Vec::new();
                    TurnWrites::new(conn, turn.tenant_id, now, &mut rows, fence)
                        .begin(&turn, &events, outbox, first_step, finish)
                        .await?;
                    Ok(rows)
                })
            })
            .await
    }

    /// Adds events to a running turn (steering): they become part of it.
    pub async fn join(self, turn: TurnId, events: Vec<EventId>) -> Result<()> {
        let fence = self.store.shard_leases().fencing();
        self.store.write(move |conn| {
            let (events, fence) = (events.clone(), fence.clone());
            Box::pin(async move {
                if !fence.is_open() {
                    let owner: Vec<u8> = query("SELECT owner_id FROM executions WHERE id = $1")
                        .bind(b(turn.as_bytes()))
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get("owner_id")?;
                    let owner = <[u8; 16]>::try_from(owner.as_slice())
                        .map_err(|_| Error::BadRow(format!("turn {turn} has no session")))?;
                    crate::leases::check(conn, fence.of(&owner)).await?;
                }
                for event in &events {
                    query("UPDATE events SET status = 'running', turn_id = $1 WHERE id = $2 AND status = 'pending'")
                        .bind(b(turn.as_bytes()))
                        .bind(b(event.as_bytes()))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Journals one step (with its outbox events, usage and audit record) in one transaction.
    /// A step already journaled is left as it was.
    pub async fn append_journal(
        self,
        turn: &TurnRow,
        entry: JournalEntry,
        outbox: Vec<OutboxEvent>,
        usage: Option<UsageRecord>,
        audit: Option<crate::access::AuditEntry>,
    ) -> Result<Vec<OutboxRow>> {
        let (now, fence) = (self.store.now(), self.store.shard_leases().fencing());
        let turn = turn.clone();
        self.store
            .write(move |conn| {
                let audit = audit.clone();
                let entry = entry.clone();
                let outbox = outbox.clone();
                let turn = turn.clone();
                let usage = usage.clone();
                let fence = fence.clone();
                Box::pin(async move {
                    let mut rows = Vec::new();
                    TurnWrites::new(conn, turn.tenant_id, now, &mut rows, fence)
                        .append(&turn, entry, &outbox, usage.as_ref(), audit.as_ref())
                        .await?;
                    Ok(rows)
                })
            })
            .await
    }

    /// Ends a turn: its status, reply or error, its events' status, and its outbox events, in
    /// one transaction.
    pub async fn finish(
        self,
        turn: &TurnRow,
        outcome: TurnOutcome,
        outbox: Vec<OutboxEvent>,
    ) -> Result<Vec<OutboxRow>> {
        let (now, fence) = (self.store.now(), self.store.shard_leases().fencing());
        let turn = turn.clone();
        self.store
            .write(move |conn| {
                let outbox = outbox.clone();
                let outcome = outcome.clone();
                let turn = turn.clone();
                let fence = fence.clone();
                Box::pin(async move {
                    let mut rows = Vec::new();
                    TurnWrites::new(conn, turn.tenant_id, now, &mut rows, fence)
                        .finish(&turn, &outcome, &outbox)
                        .await?;
                    Ok(rows)
                })
            })
            .await
    }
}
