//! Sessions, inbound events, turns, the turn journal and the outbox.
//!
//! The write path keeps Clade's guarantees: an event is acknowledged only after the
//! transaction that stores it commits; an idempotency key maps to exactly one event; a turn's
//! steps are journaled so a restart resumes instead of repeating; lifecycle events enter the
//! outbox in the same transaction as the state change that causes them.

use crate::db::Row;

use clade_core::{
    AgentId, EventId, EventKind, EventStatus, ExecutionStatus, Origin, SessionId, StepKey,
    TenantId, Timestamp, TurnId, TurnStatus,
};

use crate::error::Result;

use crate::store::{id_bytes, opt_id};

mod deliveries;
mod reads;
mod sessions;
mod write;

pub use deliveries::Deliveries;
pub use sessions::Sessions;
pub use write::{TurnWrites, Turns};
pub(crate) use write::{accept_in, insert_outbox};

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

/// What nodes accepting events for one session take turns under (`Tx::serialize`), keyed by
/// what finds the session: it is made once, and its positions are handed out once each.
pub(crate) fn session_lock(
    tenant: TenantId,
    agent: AgentId,
    platform: &str,
    channel: &str,
    actor: &str,
) -> String {
    format!("session {tenant} {agent} {platform:?} {channel:?} {actor:?}")
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

/// A turn with everything said about it: its events, its usage and its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRecord {
    pub turn: TurnRow,
    /// In the order they were accepted.
    pub events: Vec<EventRow>,
    pub usage: TurnUsage,
    /// In the order they were written.
    pub steps: Vec<JournalEntry>,
    /// When each of `steps` was written, in the same order.
    pub step_times: Vec<Timestamp>,
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
                crate::store::usage_summary_sql(crate::UsageBy::Day),
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
