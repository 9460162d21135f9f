//! Sessions, inbound events, turns, the turn journal and the outbox.
//!
//! The write path keeps Clade's guarantees: an event is acknowledged only after the
//! transaction that stores it commits; an idempotency key maps to exactly one event; a turn's
//! steps are journaled so a restart resumes instead of repeating; lifecycle events enter the
//! outbox in the same transaction as the state change that causes them.

use crate::db::{Query, Row, Tx, query};
use clade_core::{
    AgentId, EventId, EventKind, EventStatus, ExecutionKind, ExecutionStatus, Origin, SessionId,
    StepKey, TenantId, Timestamp, TurnId, TurnStatus,
};

use crate::error::{Error, Result};
use crate::scoped::SystemStore;
use crate::store::{Store, UsageRecord, id_bytes, insert_usage, opt_id};

/// Where an event came from; with tenant and agent it keys the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub platform: Origin,
    pub channel: String,
    pub actor: String,
}

/// An inbound event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant: TenantId,
    /// The agent's handle. The store looks it up in the same transaction that stores the
    /// event, on the writer's warm pages, so accepting an event costs no read of its own.
    pub agent: String,
    pub source: Source,
    pub text: String,
    /// Defaults to the event id (no deduplication).
    pub idempotency_key: Option<String>,
    /// A hash of what the event says; the same key with another hash is a conflict.
    pub payload_hash: String,
    /// Refuse the event when its session already has this many open events.
    pub max_open_per_session: u64,
}

/// The answer to an accepted (or deduplicated) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: EventId,
    pub session_id: SessionId,
    /// The key was seen before: this is the original event.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub seq: i64,
    pub idempotency_key: String,
    pub text: String,
    pub status: EventStatus,
    pub turn_id: Option<TurnId>,
    pub created_at: Timestamp,
}

/// Where a page of sessions ends: its last session's activity time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCursor {
    pub updated_at: i64,
    pub id: SessionId,
}

impl SessionCursor {
    /// The cursor after `session`.
    pub fn after(session: &SessionRow) -> Self {
        Self { updated_at: session.updated_at.as_millis(), id: session.id }
    }

    /// `<millis>.<32 hex digits>`, as [`SessionCursor::parse`] reads it.
    pub fn encode(&self) -> String {
        encode_cursor(self.updated_at, self.id.as_bytes())
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (updated_at, bytes) = parse_cursor(text)?;
        Some(Self { updated_at, id: SessionId::from_bytes(bytes) })
    }
}

/// A page's cursor as the API shows it: the last row's update time (milliseconds) and id,
/// `<millis>.<32 hex digits>`. Sessions and memory items page by it.
pub fn encode_cursor(updated_at: i64, id: &[u8; 16]) -> String {
    format!("{updated_at}.{}", hex::encode(id))
}

/// The time and id of a cursor [`encode_cursor`] wrote; `None` for any other text.
pub fn parse_cursor(text: &str) -> Option<(i64, [u8; 16])> {
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, hex::decode(id).ok()?.try_into().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub source: Source,
    pub last_active_channel: String,
    /// The session's own queue mode, if one was set (see [`crate::Sessions::set_queue_mode`]).
    pub queue_mode: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRow {
    pub id: TurnId,
    pub session_id: SessionId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub status: TurnStatus,
    pub reply: Option<String>,
    pub error: Option<String>,
    pub model: Option<String>,
    pub config_revision: i64,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl TurnRow {
    /// A new running turn of `session`, not yet stored.
    pub fn starting(session: &SessionRow, config_revision: i64, now: Timestamp) -> Self {
        Self {
            id: TurnId::generate(now),
            session_id: session.id,
            tenant_id: session.tenant_id,
            agent_id: session.agent_id,
            status: TurnStatus::Running,
            reply: None,
            error: None,
            model: None,
            config_revision,
            started_at: now,
            finished_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Also says what kind of step it is ([`StepKey::kind`]).
    pub step: StepKey,
    /// JSON text, the runtime's own encoding of the step.
    pub data: String,
}

/// An outbox row a subscriber gave up on, to dead-letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenUp {
    pub outbox_id: i64,
    /// Why the last attempt failed.
    pub reason: String,
    /// Deliveries attempted.
    pub attempts: i64,
}

/// A lifecycle event to put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub kind: EventKind,
    /// JSON text.
    pub data: String,
}

impl From<&clade_protocol::LifecycleEvent> for OutboxEvent {
    fn from(event: &clade_protocol::LifecycleEvent) -> Self {
        Self { kind: event.kind(), data: event.data_text() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Position in the outbox: strictly increasing in commit order, whatever the number of
    /// writers (on PostgreSQL, writers take a lock first and commit one at a time).
    pub id: i64,
    /// Stable id of the event, sent to subscribers as its idempotency key.
    pub event_id: String,
    pub tenant_id: TenantId,
    pub session_id: Option<SessionId>,
    pub turn_id: Option<TurnId>,
    pub kind: EventKind,
    pub data: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub subscriber: String,
    pub outbox_id: i64,
    pub reason: String,
    pub attempts: i64,
    pub created_at: Timestamp,
}

const EVENT_COLUMNS: &str =
    "id, tenant_id, session_id, seq, idempotency_key, text, status, turn_id, created_at";
const SESSION_COLUMNS: &str = "id, tenant_id, agent_id, platform, channel, actor, last_active_channel, queue_mode, created_at, updated_at";
/// A turn is the execution of kind `turn` owned by its session (`crate::executions`): its
/// reply is the execution's output, its start the execution's.
const TURN_COLUMNS: &str = "id, owner_id AS session_id, tenant_id, agent_id, status, output AS reply, error, model, config_revision, created_at AS started_at, finished_at";
const OUTBOX_COLUMNS: &str = "id, event_id, tenant_id, session_id, turn_id, kind, data, created_at";

/// An outbox row, numbered by the database (PostgreSQL's identity column).
const OUTBOX_INSERT: &str = "INSERT INTO outbox (event_id, tenant_id, session_id, turn_id, kind, data, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

/// An outbox row on SQLite, numbered by the store from [`NEXT_OUTBOX_ID_SQLITE`].
const OUTBOX_INSERT_SQLITE: &str = "INSERT INTO outbox (event_id, tenant_id, session_id, turn_id, kind, data, created_at, id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The next outbox id on SQLite: past both the highest id left and the highest ever issued
/// ([`REMEMBER_OUTBOX_IDS`]). SQLite would number a row after the highest left, and reuse the
/// id of a deleted row that subscribers' cursors may already have passed. (`AUTOINCREMENT` did
/// this by rewriting a page of `sqlite_sequence` in every commit that wrote to the outbox.)
/// Read once per batch of rows, inside the writer's transaction, which holds the write lock.
pub(crate) const NEXT_OUTBOX_ID_SQLITE: &str = "SELECT MAX(COALESCE((SELECT MAX(id) FROM outbox), 0), \
     COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'outbox_ids_issued'), 0)) + 1 AS next";

/// Run before outbox rows are deleted: keeps the highest outbox id issued so far in `meta`,
/// where [`OUTBOX_INSERT_SQLITE`] numbers past it. Harmless on PostgreSQL, whose identity
/// never goes back.
pub(crate) const REMEMBER_OUTBOX_IDS: &str = "INSERT INTO meta (key, value) \
     SELECT 'outbox_ids_issued', CAST(m.top AS TEXT) FROM (SELECT MAX(id) AS top FROM outbox) AS m \
     WHERE m.top IS NOT NULL \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value \
     WHERE CAST(excluded.value AS BIGINT) > CAST(meta.value AS BIGINT)";

fn event_row(row: &Row) -> Result<EventRow> {
    Ok(EventRow {
        id: EventId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        session_id: SessionId::from_bytes(id_bytes(row, "session_id")?),
        seq: row.try_get("seq")?,
        idempotency_key: row.try_get("idempotency_key")?,
        text: row.try_get("text")?,
        status: row.word("status", EventStatus::parse)?,
        turn_id: opt_id(row, "turn_id")?.map(TurnId::from_bytes),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn session_row(row: &Row) -> Result<SessionRow> {
    Ok(SessionRow {
        id: SessionId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        source: Source {
            platform: Origin::from(row.try_get::<String, _>("platform")?),
            channel: row.try_get("channel")?,
            actor: row.try_get("actor")?,
        },
        last_active_channel: row.try_get("last_active_channel")?,
        queue_mode: row.try_get("queue_mode")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

fn turn_row(row: &Row) -> Result<TurnRow> {
    Ok(TurnRow {
        id: TurnId::from_bytes(id_bytes(row, "id")?),
        session_id: SessionId::from_bytes(id_bytes(row, "session_id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        status: row
            .word("status", |s| ExecutionStatus::parse(s).and_then(TurnStatus::of_execution))?,
        reply: row.try_get("reply")?,
        error: row.try_get("error")?,
        model: row.try_get("model")?,
        config_revision: row.try_get("config_revision")?,
        started_at: Timestamp::from_millis(row.try_get("started_at")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(Timestamp::from_millis),
    })
}

fn outbox_row(row: &Row) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        event_id: EventId::from_bytes(id_bytes(row, "event_id")?).to_string(),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        session_id: opt_id(row, "session_id")?.map(SessionId::from_bytes),
        turn_id: opt_id(row, "turn_id")?.map(TurnId::from_bytes),
        kind: row.word("kind", EventKind::parse)?,
        data: row.try_get("data")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn b(id: &[u8; 16]) -> Vec<u8> {
    id.to_vec()
}

/// Which lifecycle events [`crate::Sessions::event_history`] returns.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only the events of these agents' sessions; every agent's when empty.
    pub agents: Vec<AgentId>,
    pub session: Option<SessionId>,
    pub kind: Option<EventKind>,
    /// Those created at or after it.
    pub since: Option<Timestamp>,
}

/// What [`Store::open_events`] found.
#[derive(Debug, Clone, Default)]
pub struct OpenEvents {
    /// The events of the session's next (or running) turn, oldest first.
    pub events: Vec<EventRow>,
    /// Whether further open events wait behind them.
    pub more: bool,
}

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

// The statements every turn runs. Each must cost the same whatever the session's age (a
// personal assistant's session holds thousands of turns): `plans_do_not_grow_with_a_session`
// checks that none of them walks a session's whole history.

/// The turn that ended an event, once it has (every `wait: true` reads it).
const ENDED_TURN_OF_EVENT: &str = "SELECT t.id, t.owner_id AS session_id, t.tenant_id, t.agent_id, \
     t.status, t.output AS reply, t.error, t.model, t.config_revision, t.created_at AS started_at, \
     t.finished_at FROM events e JOIN executions t ON t.id = e.turn_id \
     WHERE e.id = $1 AND e.tenant_id = $2 AND e.status IN ('done', 'failed', 'yielded')";

/// The agent an event names.
const AGENT_BY_HANDLE: &str = "SELECT id FROM agents WHERE tenant_id = $1 AND handle = $2";

/// The session an event belongs to, its next position and how many of its events wait.
const SESSION_FOR_EVENT: &str = "SELECT s.id AS id, s.next_seq AS next_seq, (SELECT COUNT(*) FROM events e \
     WHERE e.session_id = s.id AND e.status IN ('pending', 'running')) AS open \
     FROM sessions s WHERE s.tenant_id = $1 AND s.agent_id = $2 AND s.platform = $3 \
     AND s.channel = $4 AND s.actor = $5";

fn open_events_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 \
         AND status IN ('pending', 'running') ORDER BY seq"
    )
}

fn pending_events_sql() -> String {
    // The `IN` term, implied by the other, lets the partial index of open events serve it.
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 \
         AND status IN ('pending', 'running') AND status = 'pending' ORDER BY seq"
    )
}

/// The last completed turns before one, with their events' texts.
const HISTORY: &str = "SELECT t.id AS id, t.output AS reply, e.text AS text FROM executions t \
     JOIN events e ON e.turn_id = t.id WHERE t.id IN (SELECT id FROM executions \
     WHERE owner_id = $1 AND kind = 'turn' AND status = 'completed' AND id < $2 AND id > $4 \
     ORDER BY id DESC LIMIT $3) ORDER BY t.id, e.seq";

/// The same from the other end: the first completed turns after one.
const HISTORY_OLDEST: &str = "SELECT t.id AS id, t.output AS reply, e.text AS text FROM executions t \
     JOIN events e ON e.turn_id = t.id WHERE t.id IN (SELECT id FROM executions \
     WHERE owner_id = $1 AND kind = 'turn' AND status = 'completed' AND id < $2 AND id > $4 \
     ORDER BY id LIMIT $3) ORDER BY t.id, e.seq";

/// Sets the status of a turn's events (through the partial index `events_by_turn`).
const TURN_EVENTS_STATUS: &str = "UPDATE events SET status = $2 WHERE turn_id = $1";

impl Store {
    /// The session's turns from the id `from` on (`op`: `>` after it, `>=` from it).
    async fn records_from(
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
                "SELECT s.execution_id AS turn_id, s.step_key AS step, s.data AS data \
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

/// A turn with everything said about it: its events, its usage and its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRecord {
    pub turn: TurnRow,
    /// In the order they were accepted.
    pub events: Vec<EventRow>,
    pub usage: TurnUsage,
    /// In the order they were written.
    pub steps: Vec<JournalEntry>,
}

/// What a turn's model calls consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnUsage {
    pub model_calls: u64,
    /// Including cached and cache-write tokens.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnOutcome {
    /// Not `Running`.
    pub status: TurnStatus,
    pub reply: Option<String>,
    pub error: Option<String>,
    pub model: Option<String>,
}

fn journal_entry(row: &Row) -> Result<JournalEntry> {
    Ok(JournalEntry { step: row.word("step", StepKey::parse)?, data: row.try_get("data")? })
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
    let s = &event.source;
    // Nodes accepting for one session take turns, so it is made once and its positions are
    // handed out once each.
    let sides = (s.platform.as_str(), &s.channel, &s.actor);
    conn.serialize(&format!("session {} {agent} {sides:?}", event.tenant)).await?;
    // One round trip: the session, its next position and how many events wait.
    let session = query(SESSION_FOR_EVENT)
        .bind(b(event.tenant.as_bytes()))
        .bind(b(agent.as_bytes()))
        .bind(s.platform.as_str().to_owned())
        .bind(s.channel.clone())
        .bind(s.actor.clone())
        .fetch_optional(&mut *conn)
        .await?;
    let (session_id, seq, open) = match session {
        Some(row) => (
            SessionId::from_bytes(id_bytes(&row, "id")?),
            row.try_get::<i64, _>("next_seq")?,
            row.try_get::<i64, _>("open")?,
        ),
        None => {
            let id = SessionId::generate(now);
            query(
                "INSERT INTO sessions (id, tenant_id, agent_id, platform, channel, actor, \
                 last_active_channel, next_seq, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $5, 0, $7, $7)",
            )
            .bind(b(id.as_bytes()))
            .bind(b(event.tenant.as_bytes()))
            .bind(b(agent.as_bytes()))
            .bind(s.platform.as_str().to_owned())
            .bind(s.channel.clone())
            .bind(s.actor.clone())
            .bind(now.as_millis())
            .execute(&mut *conn)
            .await?;
            (id, 0, 0)
        }
    };
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
    .bind(s.channel.clone())
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

/// A turn's next step, numbered after its last, unless a step of its key is there already.
/// Only a turn of the writer's tenant takes a step this way: any other execution, or another
/// tenant's, has its own rules (`crate::executions`).
const JOURNAL_IN: &str = "INSERT INTO execution_steps (execution_id, seq, step_key, data, created_at) \
     SELECT $1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM execution_steps WHERE execution_id = $1), \
     $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM execution_steps WHERE execution_id = $1 \
     AND step_key = $2) AND EXISTS (SELECT 1 FROM executions WHERE id = $1 AND tenant_id = $5 \
     AND kind = 'turn')";

/// Whether a turn of this tenant is stored under an id.
const TURN_OF_TENANT: &str =
    "SELECT 1 AS found FROM executions WHERE id = $1 AND tenant_id = $2 AND kind = 'turn'";

/// A new turn's first step.
const FIRST_STEP: &str = "INSERT INTO execution_steps (execution_id, seq, step_key, data, created_at) \
     VALUES ($1, 1, $2, $3, $4)";

/// Appends a step to a turn's execution inside the caller's transaction, numbered after the
/// last; `false` (and nothing written) if a step of that key is already there. The check reads
/// the turn's steps (its iteration limit bounds how many), on pages the append touches anyway.
/// A turn that is not this tenant's is not found.
async fn journal_in(
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
    insert_outbox(conn, now, turn.tenant_id, Some(turn.session_id), Some(turn.id), outbox).await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plans SQLite picks, on the schema the migrations build (no statistics, as in a
    /// fresh database): no per-turn statement may scan a session's events or turns, and the
    /// usage report reads one tenant's rows only.
    #[test]
    fn plans_do_not_grow_with_a_session() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(&crate::migrate::sqlite_schema()).unwrap();
        let plan = |sql: &str| -> String {
            let sql = format!("EXPLAIN QUERY PLAN {}", sql.replace('$', "?"));
            let mut statement = conn.prepare(&sql).unwrap();
            let count = statement.parameter_count();
            let args = vec![rusqlite::types::Value::Null; count];
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), |row| row.get::<_, String>(3))
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
        };
        for (name, sql, index) in [
            ("open events", open_events_sql(), "events_open_by_session"),
            ("pending events", pending_events_sql(), "events_open_by_session"),
            ("waiting events at ingest", SESSION_FOR_EVENT.to_owned(), "events_open_by_session"),
            (
                "history",
                HISTORY.to_owned(),
                "executions_by_owner (owner_id=? AND kind=? AND id>? AND id<?)",
            ),
            (
                "oldest turns",
                HISTORY_OLDEST.to_owned(),
                "executions_by_owner (owner_id=? AND kind=? AND id>? AND id<?)",
            ),
            ("a step's number and key", JOURNAL_IN.to_owned(), "PRIMARY KEY (execution_id=?)"),
            ("history's events", HISTORY.to_owned(), "events_by_turn (turn_id=?)"),
            ("a turn's end", TURN_EVENTS_STATUS.to_owned(), "events_by_turn (turn_id=?)"),
            ("a waiter's answer", ENDED_TURN_OF_EVENT.to_owned(), "SEARCH t USING PRIMARY KEY"),
            ("next outbox id", NEXT_OUTBOX_ID_SQLITE.to_owned(), "SEARCH outbox"),
            ("outbox ids issued", NEXT_OUTBOX_ID_SQLITE.to_owned(), "SEARCH meta"),
            (
                "usage report",
                crate::store::USAGE_SUMMARY.to_owned(),
                "PRIMARY KEY (tenant_id=? AND created_at>?)",
            ),
        ] {
            let plan = plan(&sql);
            assert!(plan.contains(index), "{name} does not use {index}:\n{plan}");
            // A SELECT without FROM "scans" its one constant row.
            let scans = plan.lines().any(|l| l.contains("SCAN") && !l.contains("CONSTANT ROW"));
            assert!(!scans, "{name} scans a table:\n{plan}");
        }
    }
}

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

/// Where each outbox subscriber (a webhook) has got to, and the dead letters it gave up on.
#[derive(Clone, Copy)]
pub struct Deliveries<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The webhook subscribers' delivery cursors and dead letters.
    pub fn deliveries(&self) -> Deliveries<'_> {
        Deliveries { store: self }
    }
}

impl Deliveries<'_> {
    /// `(last delivered outbox id, attempts on the next one)` of a subscriber.
    pub async fn cursor(self, subscriber: &str) -> Result<(i64, i64)> {
        let row = self
            .store
            .maybe_row(
                query("SELECT last_id, attempts FROM subscriber_cursors WHERE subscriber = $1")
                    .bind(subscriber),
            )
            .await?;
        Ok(match row {
            Some(row) => (row.try_get("last_id")?, row.try_get("attempts")?),
            None => (0, 0),
        })
    }

    /// Gives a subscriber seen for the first time a cursor at the outbox's head, in one
    /// statement, so it is sent only what comes after; one that has a cursor keeps it.
    pub async fn start_at_head(self, subscriber: &str) -> Result<()> {
        let subscriber = subscriber.to_owned();
        let horizon = self.store.outbox_horizon().await?;
        self.store
            .write(move |conn| {
                let subscriber = subscriber.clone();
                Box::pin(async move {
                    // The `WHERE` also keeps SQLite from reading ON CONFLICT as part of the
                    // SELECT.
                    query(
                        "INSERT INTO subscriber_cursors (subscriber, last_id, attempts) \
                     SELECT $1, COALESCE(MAX(id), 0), 0 FROM outbox WHERE id <= $2 \
                     ON CONFLICT (subscriber) DO NOTHING",
                    )
                    .bind(subscriber)
                    .bind(horizon)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Moves a subscriber's cursor (`attempts`: failed deliveries of the row after it); with
    /// `dead` a row given up on is dead-lettered in the same transaction.
    pub async fn set_cursor(
        self,
        subscriber: &str,
        last_id: i64,
        attempts: i64,
        dead: Option<GivenUp>,
    ) -> Result<()> {
        let now = self.store.now();
        let subscriber = subscriber.to_owned();
        self.store.write(move |conn| {
            let dead = dead.clone();
            let subscriber = subscriber.clone();
            Box::pin(async move {
                query(
                    "INSERT INTO subscriber_cursors (subscriber, last_id, attempts) VALUES ($1, $2, $3) \
                     ON CONFLICT (subscriber) DO UPDATE SET last_id = excluded.last_id, attempts = excluded.attempts \
                     WHERE subscriber_cursors.last_id <= excluded.last_id",
                )
                .bind(subscriber.clone())
                .bind(last_id)
                .bind(attempts)
                .execute(&mut *conn)
                .await?;
                if let Some(GivenUp { outbox_id, reason, attempts }) = dead {
                    query(
                        "INSERT INTO dead_letters (subscriber, outbox_id, reason, attempts, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscriber, outbox_id) DO NOTHING",
                    )
                    .bind(subscriber)
                    .bind(outbox_id)
                    .bind(reason)
                    .bind(attempts)
                    .bind(now.as_millis())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn delete_dead_letter(self, subscriber: &str, outbox_id: i64) -> Result<()> {
        let subscriber = subscriber.to_owned();
        self.store
            .write(move |conn| {
                let subscriber = subscriber.clone();
                Box::pin(async move {
                    query("DELETE FROM dead_letters WHERE subscriber = $1 AND outbox_id = $2")
                        .bind(subscriber)
                        .bind(outbox_id)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await
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
