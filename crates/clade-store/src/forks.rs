//! Branches and workers (migration 28, `forks`): a session's parallel lines of work. Each is a
//! session of its own, on platform `branch` or `worker`, whose turns run like any other (durable,
//! resumed after a crash, paused with their agent) under their process kind's model route and
//! limits, and each run of it is an execution of kind `branch` or `worker` owned by the session
//! that started it (the parent).
//!
//! Starting one commits its task (an event of its own session), its execution and its row in one
//! transaction, keyed by the starting tool call's key, so a call run again finds what it started.
//! When its session has nothing left to run, [`crate::Forks::settle`] ends the execution and
//! delivers its conclusion (or failure) into the parent session as an event, in one transaction
//! keyed by the execution: it arrives once, however often settling is tried.

use clade_core::{
    AgentId, EventStatus, ExecutionId, ExecutionKind, ExecutionStatus, Origin, SessionId, TenantId,
    Timestamp, TurnId,
};
use clade_protocol::{ExecutionChanged, LifecycleEvent, Spelled};

use crate::db::{Row, Tx, query};
use crate::error::{Error, Result};
use crate::executions::{ExecutionOwner, ExecutionRow, NewExecution};
use crate::scoped::SystemStore;
use crate::store::{Store, id_bytes, opt_id};
use crate::turns::{Accepted, NewEvent, OutboxEvent, OutboxRow, Source};
use crate::work::Work;

/// Events a fork's machinery writes carry keys under this prefix (never a caller's).
const KEY_PREFIX: &str = "fork:";
/// The longest task or follow-up, in bytes.
pub const MAX_TASK_BYTES: usize = 32 * 1024;
/// The longest status line, in bytes.
pub const MAX_PROGRESS_BYTES: usize = 512;

/// The execution kind a session's platform runs as: a branch, a worker, or neither.
pub fn fork_kind_of(origin: &Origin) -> Option<ExecutionKind> {
    match origin {
        Origin::Branch => Some(ExecutionKind::Branch),
        Origin::Worker => Some(ExecutionKind::Worker),
        _ => None,
    }
}

fn origin_of(kind: ExecutionKind) -> Result<Origin> {
    match kind {
        ExecutionKind::Branch => Ok(Origin::Branch),
        ExecutionKind::Worker => Ok(Origin::Worker),
        other => Err(Error::InvalidInput(format!("a fork is a branch or a worker, not a {other}"))),
    }
}

/// A branch or worker to start.
#[derive(Debug, Clone)]
pub struct NewFork {
    pub tenant: TenantId,
    pub agent: AgentId,
    /// [`ExecutionKind::Branch`] or [`ExecutionKind::Worker`].
    pub kind: ExecutionKind,
    pub parent_session: SessionId,
    /// The parent's turn that starts it: a branch's context forks from there.
    pub parent_turn: Option<TurnId>,
    pub task: String,
    /// The tools a worker may use; empty: every tool of its agent.
    pub tools: Vec<String>,
    /// The starting call's idempotency key.
    pub key: String,
    /// How many of this kind may run at once for one parent session.
    pub max_running: u32,
}

/// A branch or worker as stored, with its current execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRow {
    /// Its own session: the fork's id.
    pub session: SessionId,
    pub tenant: TenantId,
    pub agent: AgentId,
    pub kind: ExecutionKind,
    pub parent_session: SessionId,
    pub parent_turn: Option<TurnId>,
    pub forked_seq: i64,
    pub task: String,
    pub tools: Vec<String>,
    /// The current (latest) run.
    pub execution: ExecutionId,
    pub status: ExecutionStatus,
    pub output: Option<String>,
    pub error: Option<String>,
    pub progress: Option<String>,
    pub progress_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// When its current run last changed.
    pub updated_at: Timestamp,
}

impl ForkRow {
    /// Its lifecycle event's data, with `detail`.
    pub fn data(&self, detail: Option<String>, messages_since: Option<u64>) -> ExecutionChanged {
        ExecutionChanged {
            execution: self.execution.to_string(),
            kind: Spelled(self.kind),
            fork: self.session.to_string(),
            status: Spelled(self.status),
            detail,
            messages_since,
        }
    }
}

/// A started (or continued) fork: the event its session runs, and whether a call run again
/// found it.
#[derive(Debug, Clone)]
pub struct Forked {
    pub fork: ForkRow,
    pub accepted: Accepted,
    pub announced: Vec<OutboxRow>,
}

/// A fork that ended: its row as it is now, and the parent's event carrying its outcome (none
/// when the parent session is gone: the outcome is dropped, and kept in the execution).
#[derive(Debug, Clone)]
pub struct ForkSettled {
    pub fork: ForkRow,
    pub delivered: Option<Accepted>,
    pub announced: Vec<OutboxRow>,
}

const COLUMNS: &str = "f.session_id, f.tenant_id, f.agent_id, f.kind, f.parent_session, \
     f.parent_turn, f.forked_seq, f.task, f.tools, f.execution_id, f.progress, f.progress_at, \
     f.created_at, e.status, e.output, e.error, e.updated_at";
const JOIN: &str = "FROM forks f JOIN executions e ON e.id = f.execution_id";

fn fork_row(row: &Row) -> Result<ForkRow> {
    let tools: String = row.try_get("tools")?;
    Ok(ForkRow {
        session: SessionId::from_bytes(id_bytes(row, "session_id")?),
        tenant: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        kind: row.word("kind", ExecutionKind::parse)?,
        parent_session: SessionId::from_bytes(id_bytes(row, "parent_session")?),
        parent_turn: opt_id(row, "parent_turn")?.map(TurnId::from_bytes),
        forked_seq: row.try_get("forked_seq")?,
        task: row.try_get("task")?,
        tools: tools.split_whitespace().map(str::to_owned).collect(),
        execution: ExecutionId::from_bytes(id_bytes(row, "execution_id")?),
        status: row.word("status", ExecutionStatus::parse)?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        progress: row.try_get("progress")?,
        progress_at: row.try_get::<Option<i64>, _>("progress_at")?.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

fn b(bytes: &[u8; 16]) -> Vec<u8> {
    bytes.to_vec()
}

async fn fork_in(conn: &mut Tx, tenant: TenantId, session: SessionId) -> Result<Option<ForkRow>> {
    let row =
        query(format!("SELECT {COLUMNS} {JOIN} WHERE f.session_id = $1 AND f.tenant_id = $2"))
            .bind(b(session.as_bytes()))
            .bind(b(tenant.as_bytes()))
            .fetch_optional(&mut *conn)
            .await?;
    row.as_ref().map(fork_row).transpose()
}

/// The fork whose machinery already wrote the event of `key` (a call run again).
async fn fork_of_key(conn: &mut Tx, tenant: TenantId, key: &str) -> Result<Option<ForkRow>> {
    let row = query(format!(
        "SELECT {COLUMNS} {JOIN} WHERE f.tenant_id = $1 AND f.session_id = \
         (SELECT session_id FROM events WHERE tenant_id = $1 AND idempotency_key = $2)"
    ))
    .bind(b(tenant.as_bytes()))
    .bind(key.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(fork_row).transpose()
}

/// A session's source and next event number, in `tenant`; `None` when it is gone.
async fn session_in(
    conn: &mut Tx,
    tenant: TenantId,
    session: SessionId,
) -> Result<Option<(AgentId, Source, i64)>> {
    let row = query(
        "SELECT agent_id, platform, channel, actor, next_seq FROM sessions \
         WHERE id = $1 AND tenant_id = $2",
    )
    .bind(b(session.as_bytes()))
    .bind(b(tenant.as_bytes()))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok((
            AgentId::from_bytes(id_bytes(&row, "agent_id")?),
            Source {
                platform: Origin::from(row.try_get::<String, _>("platform")?),
                channel: row.try_get("channel")?,
                actor: row.try_get("actor")?,
            },
            row.try_get::<i64, _>("next_seq")?,
        ))
    })
    .transpose()
}

async fn handle_of(conn: &mut Tx, tenant: TenantId, agent: AgentId) -> Result<String> {
    let row = query("SELECT handle FROM agents WHERE id = $1 AND tenant_id = $2")
        .bind(b(agent.as_bytes()))
        .bind(b(tenant.as_bytes()))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::AgentNotFound(agent.to_string()))?;
    row.try_get("handle")
}

fn check_text(what: &str, text: &str, most: usize) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::InvalidInput(format!("{what}: empty; say what is to be done")));
    }
    if text.len() > most {
        return Err(Error::InvalidInput(format!(
            "{what}: {} bytes, over the {most} it may hold; say it shorter, or put it in a file",
            text.len()
        )));
    }
    Ok(())
}

/// A fork's event in its own session: `text`, from the parent session.
async fn accept_into_fork(
    work: &mut Work<'_>,
    handle: String,
    fork: SessionId,
    source: Source,
    text: String,
    key: String,
) -> Result<Accepted> {
    let accepted = work
        .accept(NewEvent {
            tenant: work.tenant(),
            agent: handle,
            source,
            payload_hash: key.clone(),
            text,
            idempotency_key: Some(key),
            max_open_per_session: u64::MAX,
        })
        .await?;
    if accepted.session_id != fork {
        return Err(Error::BadRow(format!(
            "the event for fork {fork} landed in session {}",
            accepted.session_id
        )));
    }
    Ok(accepted)
}

impl Store {
    /// Starts a branch or a worker: its session with its task as the first event, its
    /// execution (running) and its row, and `execution.started` in the parent session, in one
    /// transaction. A key seen before returns what it started. Refused: a parent that is itself
    /// a branch or worker (they do not nest), one of another agent, and one with
    /// `max_running` of this kind running already.
    pub async fn start_fork(&self, new: NewFork) -> Result<Forked> {
        check_text("task", &new.task, MAX_TASK_BYTES)?;
        let origin = origin_of(new.kind)?;
        let tenant = new.tenant;
        let (forked, announced) = self
            .transact(tenant, move |work| {
                let (new, origin) = (new.clone(), origin.clone());
                Box::pin(async move {
                    let key = format!("{KEY_PREFIX}{}", new.key);
                    if let Some(fork) = fork_of_key(work.conn(), tenant, &key).await? {
                        let accepted = Accepted {
                            event_id: event_of_key(work.conn(), tenant, &key).await?,
                            session_id: fork.session,
                            duplicate: true,
                        };
                        return Ok(Forked { fork, accepted, announced: Vec::new() });
                    }
                    let (owner, parent, next_seq) =
                        session_in(work.conn(), tenant, new.parent_session)
                            .await?
                            .ok_or_else(|| Error::SessionNotFound(new.parent_session.to_string()))?;
                    if owner != new.agent {
                        return Err(Error::InvalidInput(
                            "a fork starts from a session of its own agent".into(),
                        ));
                    }
                    if fork_kind_of(&parent.platform).is_some() {
                        return Err(Error::InvalidInput(format!(
                            "this is a {} already, and branches and workers do not start their own: put what you found in your reply",
                            parent.platform
                        )));
                    }
                    let running: i64 = query(format!(
                        "SELECT COUNT(*) AS n {JOIN} WHERE f.parent_session = $1 AND f.kind = $2 \
                         AND e.finished_at IS NULL"
                    ))
                    .bind(b(new.parent_session.as_bytes()))
                    .bind(new.kind.as_str())
                    .fetch_one(work.conn())
                    .await?
                    .try_get("n")?;
                    if running >= i64::from(new.max_running) {
                        return Err(Error::InvalidInput(format!(
                            "{running} {}es of this conversation run already, the most it may have at once: wait for one to end, or cancel one with agent.cancel",
                            new.kind
                        )));
                    }
                    let handle = handle_of(work.conn(), tenant, new.agent).await?;
                    let execution = ExecutionId::generate(work.now());
                    let source = Source {
                        platform: origin,
                        channel: execution.to_string(),
                        actor: new.parent_session.to_string(),
                    };
                    let accepted = work
                        .accept(NewEvent {
                            tenant,
                            agent: handle,
                            source,
                            payload_hash: key.clone(),
                            text: new.task.clone(),
                            idempotency_key: Some(key),
                            max_open_per_session: u64::MAX,
                        })
                        .await?;
                    work.executions()
                        .start(NewExecution {
                            id: execution,
                            tenant,
                            agent: new.agent,
                            kind: new.kind,
                            owner: ExecutionOwner::Session(new.parent_session),
                            status: ExecutionStatus::Running,
                            input: new.task.clone(),
                        })
                        .await?;
                    let now = work.now().as_millis();
                    query(
                        "INSERT INTO forks (session_id, tenant_id, agent_id, kind, parent_session, \
                         parent_turn, forked_seq, task, tools, execution_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(b(accepted.session_id.as_bytes()))
                    .bind(b(tenant.as_bytes()))
                    .bind(b(new.agent.as_bytes()))
                    .bind(new.kind.as_str())
                    .bind(b(new.parent_session.as_bytes()))
                    .bind(new.parent_turn.map(|t| b(t.as_bytes())))
                    .bind(next_seq - 1)
                    .bind(new.task.clone())
                    .bind(new.tools.join(" "))
                    .bind(b(execution.as_bytes()))
                    .bind(now)
                    .execute(work.conn())
                    .await?;
                    let fork = fork_in(work.conn(), tenant, accepted.session_id)
                        .await?
                        .ok_or_else(|| Error::BadRow("a fork just stored cannot be read".into()))?;
                    let started = LifecycleEvent::ExecutionStarted(
                        fork.data(Some(new.task.clone()), None),
                    );
                    work.announce(Some(new.parent_session), &[OutboxEvent::from(&started)]).await?;
                    Ok(Forked { fork, accepted, announced: Vec::new() })
                })
            })
            .await?;
        Ok(Forked { announced, ..forked })
    }
}

/// Which runs [`crate::Forks::runs`] lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub agent: Option<AgentId>,
    /// One kind (turns included only this way); every kind but turns when `None`.
    pub kind: Option<ExecutionKind>,
    pub open_only: bool,
    pub limit: u32,
}

async fn event_of_key(conn: &mut Tx, tenant: TenantId, key: &str) -> Result<clade_core::EventId> {
    let row = query("SELECT id FROM events WHERE tenant_id = $1 AND idempotency_key = $2")
        .bind(b(tenant.as_bytes()))
        .bind(key.to_owned())
        .fetch_one(&mut *conn)
        .await?;
    Ok(clade_core::EventId::from_bytes(id_bytes(&row, "id")?))
}

/// The first `most` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The message a fork's outcome is in its parent session: who it is from, its task, what it
/// concluded or why it failed, and whether the conversation moved on meanwhile.
/// Tells the parent of `fork`, whose turn `turn` (an execution id) yielded, that its run waits,
/// once per such turn (keyed by it), with `execution.progress`.
async fn paused(
    work: &mut Work<'_>,
    tenant: TenantId,
    fork: &ForkRow,
    turn: &[u8],
) -> Result<Option<ForkSettled>> {
    let Some((_, parent_source, _)) = session_in(work.conn(), tenant, fork.parent_session).await?
    else {
        return Ok(None);
    };
    let (who, task) = who_and_task(fork);
    let text = format!(
        "[{who} paused: its turn used all its iterations without finishing]\nIts task was: {task}\n\nIt waits: an operator can resume session {}, or stop it with agent.cancel.",
        fork.session
    );
    let key = format!("{KEY_PREFIX}{}:paused:{}", fork.execution, hex::encode(turn));
    let delivered = tell_parent(work, tenant, fork, parent_source, key, text).await?;
    if !delivered.duplicate {
        let detail = Some("paused: its turn yielded; resume its session to go on".to_owned());
        let progress = LifecycleEvent::ExecutionProgress(fork.data(detail, None));
        work.announce(Some(fork.parent_session), &[OutboxEvent::from(&progress)]).await?;
    }
    Ok(Some(ForkSettled { fork: fork.clone(), delivered: Some(delivered), announced: Vec::new() }))
}

/// Delivers `text` into `fork`'s parent session (from `source`, the parent's), from its agent,
/// once per `key`.
async fn tell_parent(
    work: &mut Work<'_>,
    tenant: TenantId,
    fork: &ForkRow,
    source: Source,
    key: String,
    text: String,
) -> Result<Accepted> {
    let agent = handle_of(work.conn(), tenant, fork.agent).await?;
    let new = NewEvent {
        tenant,
        agent,
        source,
        payload_hash: key.clone(),
        text,
        idempotency_key: Some(key),
        max_open_per_session: u64::MAX,
    };
    work.accept(new).await
}

/// How a report names `fork` ("Branch …", "Worker …"), and its task on one line: it only
/// reminds the conversation what was asked.
fn who_and_task(fork: &ForkRow) -> (String, String) {
    let who = match fork.kind {
        ExecutionKind::Branch => format!("Branch {}", fork.session),
        _ => format!("Worker {}", fork.session),
    };
    (who, clip(&fork.task.split_whitespace().collect::<Vec<_>>().join(" "), 200))
}

fn report(fork: &ForkRow, output: Option<&str>, error: Option<&str>, since: u64) -> String {
    let (who, task) = who_and_task(fork);
    let mut text = match error {
        Some(error) => format!("[{who} failed: {error}]\nIts task was: {task}"),
        None => format!(
            "[{who} {}]\nIts task was: {task}\n\n{}",
            if fork.kind == ExecutionKind::Branch { "concluded" } else { "reports" },
            output.unwrap_or_default()
        ),
    };
    // A branch thought about the conversation as it was; a worker's task stands on its own.
    if since > 0 && fork.kind == ExecutionKind::Branch {
        text.push_str(&format!(
            "\n\n(Stale: {since} message{} arrived in this conversation after it started, which it did not see; weigh it accordingly.)",
            if since == 1 { "" } else { "s" }
        ));
    }
    text
}

/// Reads across tenants, for the engine's recovery (see [`SystemStore`]).
impl SystemStore {
    /// Forks whose current run has not ended, oldest first, `(tenant, session)`: after a
    /// restart, each whose session has nothing left to run is settled.
    pub async fn unsettled_forks(&self, limit: u32) -> Result<Vec<(TenantId, SessionId)>> {
        let rows = self
            .rows(
                query(format!(
                    "SELECT f.tenant_id, f.session_id {JOIN} WHERE e.finished_at IS NULL \
                     ORDER BY f.created_at LIMIT $1"
                ))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    TenantId::from_bytes(id_bytes(row, "tenant_id")?),
                    SessionId::from_bytes(id_bytes(row, "session_id")?),
                ))
            })
            .collect()
    }
}

/// One tenant's forks: branches, workers and sub-agent runs, and the runs listed with them.
#[derive(Clone, Copy)]
pub struct Forks<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s forks (branches, workers and sub-agent runs).
    pub fn forks(&self, tenant: TenantId) -> Forks<'_> {
        Forks { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's forks (branches, workers and sub-agent runs).
    pub fn forks(&self) -> Forks<'_> {
        self.store().forks(self.tenant())
    }
}

impl Forks<'_> {
    /// Tells the worker `fork` (started from `parent_session`) more: a follow-up it takes in the
    /// same context. A worker whose run ended runs anew (a new execution, `execution.started`);
    /// one still running takes the message after what it is doing. A key seen before returns
    /// what it sent.
    pub async fn continue_worker(
        self,
        fork: SessionId,
        parent_session: SessionId,
        message: String,
        key: String,
    ) -> Result<Forked> {
        let tenant = self.tenant;
        check_text("message", &message, MAX_TASK_BYTES)?;
        let (forked, announced) = self.store
            .transact(tenant, move |work| {
                let (message, key) = (message.clone(), format!("{KEY_PREFIX}{key}"));
                Box::pin(async move {
                    if let Some(found) = fork_of_key(work.conn(), tenant, &key).await? {
                        let accepted = Accepted {
                            event_id: event_of_key(work.conn(), tenant, &key).await?,
                            session_id: found.session,
                            duplicate: true,
                        };
                        return Ok(Forked { fork: found, accepted, announced: Vec::new() });
                    }
                    let current = fork_in(work.conn(), tenant, fork)
                        .await?
                        .filter(|f| {
                            f.kind == ExecutionKind::Worker && f.parent_session == parent_session
                        })
                        .ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "this conversation started no worker {fork}: start one with agent.spawn_worker, without `worker`"
                            ))
                        })?;
                    let (_, source, _) = session_in(work.conn(), tenant, fork)
                        .await?
                        .ok_or_else(|| Error::SessionNotFound(fork.to_string()))?;
                    let (_, _, parent_next) = session_in(work.conn(), tenant, parent_session)
                        .await?
                        .ok_or_else(|| Error::SessionNotFound(parent_session.to_string()))?;
                    let handle = handle_of(work.conn(), tenant, current.agent).await?;
                    let accepted =
                        accept_into_fork(work, handle, fork, source, message.clone(), key).await?;
                    if current.status.is_final() {
                        let execution = ExecutionId::generate(work.now());
                        work.executions()
                            .start(NewExecution {
                                id: execution,
                                tenant,
                                agent: current.agent,
                                kind: ExecutionKind::Worker,
                                owner: ExecutionOwner::Session(parent_session),
                                status: ExecutionStatus::Running,
                                input: message.clone(),
                            })
                            .await?;
                        query(
                            "UPDATE forks SET execution_id = $1, forked_seq = $2, progress = NULL, \
                             progress_at = NULL WHERE session_id = $3 AND tenant_id = $4",
                        )
                        .bind(b(execution.as_bytes()))
                        .bind(parent_next - 1)
                        .bind(b(fork.as_bytes()))
                        .bind(b(tenant.as_bytes()))
                        .execute(work.conn())
                        .await?;
                        let fork = fork_in(work.conn(), tenant, fork).await?.ok_or_else(|| {
                            Error::BadRow("a fork just updated cannot be read".into())
                        })?;
                        let started =
                            LifecycleEvent::ExecutionStarted(fork.data(Some(message), None));
                        work.announce(Some(parent_session), &[OutboxEvent::from(&started)])
                            .await?;
                        return Ok(Forked { fork, accepted, announced: Vec::new() });
                    }
                    Ok(Forked { fork: current, accepted, announced: Vec::new() })
                })
            })
            .await?;
        Ok(Forked { announced, ..forked })
    }

    /// Ends the current run of the fork whose session is `session` once that session has
    /// nothing left to run: its execution completes with the last turn's reply (or fails with
    /// its error), and the outcome arrives in the parent session as an event, with
    /// `execution.ended`, in one transaction. `None` when there is nothing to settle: no such
    /// fork, a run already ended (settled, or cancelled), events still open, or a last turn
    /// that waits to be resumed.
    pub async fn settle(self, session: SessionId) -> Result<Option<ForkSettled>> {
        let tenant = self.tenant;
        let (settled, announced) = self.store
            .transact(tenant, move |work| {
                Box::pin(async move {
                    let Some(fork) = fork_in(work.conn(), tenant, session).await? else {
                        return Ok(None);
                    };
                    if fork.status.is_final() {
                        return Ok(None);
                    }
                    let open: i64 = query(
                        "SELECT COUNT(*) AS n FROM events WHERE session_id = $1 \
                         AND status IN ($2, $3)",
                    )
                    .bind(b(session.as_bytes()))
                    .bind(EventStatus::Pending.as_str())
                    .bind(EventStatus::Running.as_str())
                    .fetch_one(work.conn())
                    .await?
                    .try_get("n")?;
                    if open > 0 {
                        return Ok(None);
                    }
                    let last = query(
                        "SELECT id, status, output, error FROM executions WHERE owner_id = $1 \
                         AND kind = $2 AND tenant_id = $3 ORDER BY created_at DESC, id DESC LIMIT 1",
                    )
                    .bind(b(session.as_bytes()))
                    .bind(ExecutionKind::Turn.as_str())
                    .bind(b(tenant.as_bytes()))
                    .fetch_optional(work.conn())
                    .await?;
                    let Some(last) = last else { return Ok(None) };
                    let (status, output, error) = match last.word("status", ExecutionStatus::parse)? {
                        ExecutionStatus::Completed => (
                            ExecutionStatus::Completed,
                            Some(last.try_get::<Option<String>, _>("output")?.unwrap_or_default()),
                            None,
                        ),
                        ExecutionStatus::Failed | ExecutionStatus::Cancelled => (
                            ExecutionStatus::Failed,
                            None,
                            Some(
                                last.try_get::<Option<String>, _>("error")?
                                    .unwrap_or_else(|| "its turn failed".to_owned()),
                            ),
                        ),
                        // Its turn yielded: the run waits to be resumed. The parent is told once
                        // per such turn; the run stays open, and reports when it ends.
                        ExecutionStatus::Paused => {
                            let turn: Vec<u8> = last.try_get("id")?;
                            return paused(work, tenant, &fork, &turn).await;
                        }
                        // Still running elsewhere.
                        _ => return Ok(None),
                    };
                    // Settled by the fork's own session's turn, on the node holding it.
                    work.executions()
                        .acting_for(session)
                        .set_status(fork.execution, status, output.clone(), error.clone())
                        .await?;
                    let fork = fork_in(work.conn(), tenant, session)
                        .await?
                        .ok_or_else(|| Error::BadRow("a fork just settled cannot be read".into()))?;
                    let parent = session_in(work.conn(), tenant, fork.parent_session).await?;
                    let Some((_, parent_source, _)) = parent else {
                        return Ok(Some(ForkSettled { fork, delivered: None, announced: Vec::new() }));
                    };
                    let since: i64 = query(format!(
                        "SELECT COUNT(*) AS n FROM events WHERE session_id = $1 AND seq > $2 \
                         AND idempotency_key NOT LIKE '{KEY_PREFIX}%'"
                    ))
                    .bind(b(fork.parent_session.as_bytes()))
                    .bind(fork.forked_seq)
                    .fetch_one(work.conn())
                    .await?
                    .try_get("n")?;
                    // The message that started it came before the fork was made.
                    let since = u64::try_from(since).unwrap_or(0);
                    let text = report(&fork, output.as_deref(), error.as_deref(), since);
                    let key = format!("{KEY_PREFIX}{}:ended", fork.execution);
                    let delivered =
                        tell_parent(work, tenant, &fork, parent_source, key, text).await?;
                    let detail = error.clone().or_else(|| output.clone().map(|o| clip(&o, 500)));
                    let ended = LifecycleEvent::ExecutionEnded(fork.data(detail, Some(since)));
                    work.announce(Some(fork.parent_session), &[OutboxEvent::from(&ended)]).await?;
                    Ok(Some(ForkSettled { fork, delivered: Some(delivered), announced: Vec::new() }))
                })
            })
            .await?;
        Ok(settled.map(|s| ForkSettled { announced, ..s }))
    }

    /// Cancels the run `id` names (an execution, or a fork by its session's id): its execution
    /// ends `cancelled`, with `execution.ended` in the parent session, and nothing it concludes
    /// afterwards is delivered. Returns the fork, whether this call ended it (`false`: it had
    /// ended already), and the lifecycle events to publish.
    pub async fn cancel(self, id: [u8; 16]) -> Result<(ForkRow, bool, Vec<OutboxRow>)> {
        let tenant = self.tenant;
        let ((fork, changed), announced) = self
            .store
            .transact(tenant, move |work| {
                Box::pin(async move {
                    let row = query(format!(
                        "SELECT {COLUMNS} {JOIN} WHERE f.tenant_id = $1 \
                         AND (f.session_id = $2 OR f.execution_id = $2)"
                    ))
                    .bind(b(tenant.as_bytes()))
                    .bind(id.to_vec())
                    .fetch_optional(work.conn())
                    .await?;
                    let fork = row.as_ref().map(fork_row).transpose()?.ok_or_else(|| {
                        Error::ExecutionNotFound(ExecutionId::from_bytes(id).to_string())
                    })?;
                    if fork.status.is_final() {
                        return Ok((fork, false));
                    }
                    work.executions()
                        .set_status(
                            fork.execution,
                            ExecutionStatus::Cancelled,
                            None,
                            Some("cancelled by request".into()),
                        )
                        .await?;
                    let fork =
                        fork_in(work.conn(), tenant, fork.session).await?.ok_or_else(|| {
                            Error::BadRow("a fork just cancelled cannot be read".into())
                        })?;
                    let ended = LifecycleEvent::ExecutionEnded(fork.data(None, None));
                    work.announce(Some(fork.parent_session), &[OutboxEvent::from(&ended)]).await?;
                    Ok((fork, true))
                })
            })
            .await?;
        Ok((fork, changed, announced))
    }

    /// Sets a running worker's status line (what its parent's context shows), with
    /// `execution.progress` in the parent session.
    pub async fn set_progress(
        self,
        session: SessionId,
        text: String,
    ) -> Result<(ForkRow, Vec<OutboxRow>)> {
        let tenant = self.tenant;
        check_text("status", &text, MAX_PROGRESS_BYTES)?;
        self.store
            .transact(tenant, move |work| {
                let text = text.clone();
                Box::pin(async move {
                    let fork = fork_in(work.conn(), tenant, session)
                        .await?
                        .filter(|f| f.kind == ExecutionKind::Worker)
                        .ok_or_else(|| {
                            Error::InvalidInput(
                                "only a worker sets a status line, and this conversation is none"
                                    .into(),
                            )
                        })?;
                    if fork.status.is_final() {
                        return Err(Error::ExecutionEnded {
                            id: fork.execution.to_string(),
                            status: fork.status,
                        });
                    }
                    query(
                        "UPDATE forks SET progress = $1, progress_at = $2 \
                     WHERE session_id = $3 AND tenant_id = $4",
                    )
                    .bind(text.clone())
                    .bind(work.now().as_millis())
                    .bind(b(session.as_bytes()))
                    .bind(b(tenant.as_bytes()))
                    .execute(work.conn())
                    .await?;
                    let fork = fork_in(work.conn(), tenant, session).await?.ok_or_else(|| {
                        Error::BadRow("a fork just updated cannot be read".into())
                    })?;
                    let progress = LifecycleEvent::ExecutionProgress(fork.data(Some(text), None));
                    work.announce(Some(fork.parent_session), &[OutboxEvent::from(&progress)])
                        .await?;
                    Ok(fork)
                })
            })
            .await
    }

    /// The fork whose session is `session`, if it is one.
    pub async fn get(self, session: SessionId) -> Result<Option<ForkRow>> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {COLUMNS} {JOIN} WHERE f.session_id = $1 AND f.tenant_id = $2"
                ))
                .bind(b(session.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref().map(fork_row).transpose()
    }

    /// The fork an execution is a run of, if it is one.
    pub async fn of_execution(self, execution: ExecutionId) -> Result<Option<ForkRow>> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {COLUMNS} {JOIN} WHERE f.execution_id = $1 AND f.tenant_id = $2"
                ))
                .bind(b(execution.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref().map(fork_row).transpose()
    }

    /// The branches and workers `parent` started, oldest first: only those running when
    /// `running_only`.
    pub async fn of_parent(self, parent: SessionId, running_only: bool) -> Result<Vec<ForkRow>> {
        let tenant = self.tenant;
        let open = if running_only { " AND e.finished_at IS NULL" } else { "" };
        let rows = self.store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} {JOIN} WHERE f.parent_session = $1 AND f.tenant_id = $2{open} \
                     ORDER BY f.created_at, f.session_id LIMIT 100"
                ))
                .bind(b(parent.as_bytes()))
                .bind(b(tenant.as_bytes())),
            )
            .await?;
        rows.iter().map(fork_row).collect()
    }

    /// A tenant's runs (executions), newest first: of one agent, one kind, or only those that
    /// have not ended, as `filter` says. Turns are runs only when asked for by kind.
    pub async fn runs(self, filter: &RunFilter) -> Result<Vec<ExecutionRow>> {
        let tenant = self.tenant;
        let mut sql =
            format!("SELECT {} FROM executions WHERE tenant_id = $1", crate::executions::COLUMNS);
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        let agent = filter.agent.map(|_| next());
        let kind = next();
        if let Some(i) = agent {
            sql.push_str(&format!(" AND agent_id = ${i}"));
        }
        match filter.kind {
            Some(_) => sql.push_str(&format!(" AND kind = ${kind}")),
            None => sql.push_str(&format!(" AND kind <> ${kind}")),
        }
        if filter.open_only {
            sql.push_str(" AND finished_at IS NULL");
        }
        let limit = next();
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${limit}"));
        let mut q = query(sql).bind(b(tenant.as_bytes()));
        if let Some(agent) = filter.agent {
            q = q.bind(b(agent.as_bytes()));
        }
        q = q.bind(filter.kind.unwrap_or(ExecutionKind::Turn).as_str());
        q = q.bind(i64::from(filter.limit.clamp(1, 1000)));
        let rows = self.store.rows(q).await?;
        rows.iter().map(crate::executions::execution_row).collect()
    }
}
