//! Durable executions: a chat turn, a sub-agent run, a flow step, a cron fire or upkeep, each
//! with an id, a kind, an owner and densely numbered steps, so it journals and resumes after a
//! crash without pretending to be a chat turn.
//!
//! A turn is the execution of kind [`ExecutionKind::Turn`] owned by its session, under the
//! turn's own id; its steps are its journal. It is written through its own repository
//! (`crate::turns::TurnWrites`), which also takes its events and announces it, so the writes
//! here refuse a turn.
//!
//! Every read and write names the tenant and finds nothing of another tenant's; only
//! [`Store::open_executions`], what a node resumes at start, reads across tenants.

use clade_core::{
    AgentId, ExecutionId, ExecutionKind, ExecutionStatus, SessionId, TenantId, Timestamp,
};

use crate::db::{Row, Tx, query};
use crate::error::{Error, Result};
use crate::scoped::SystemStore;
use crate::store::{Store, id_bytes};

/// What an execution belongs to: its session, its agent alone, or the execution that started
/// it (a sub-agent run's parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionOwner {
    Session(SessionId),
    Agent(AgentId),
    Execution(ExecutionId),
}

impl ExecutionOwner {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Session(_) => "session",
            Self::Agent(_) => "agent",
            Self::Execution(_) => "execution",
        }
    }

    fn id(self) -> [u8; 16] {
        match self {
            Self::Session(id) => *id.as_bytes(),
            Self::Agent(id) => *id.as_bytes(),
            Self::Execution(id) => *id.as_bytes(),
        }
    }

    fn read(row: &Row) -> Result<Self> {
        let id = id_bytes(row, "owner_id")?;
        let kind: String = row.try_get("owner_kind")?;
        match kind.as_str() {
            "session" => Ok(Self::Session(SessionId::from_bytes(id))),
            "agent" => Ok(Self::Agent(AgentId::from_bytes(id))),
            "execution" => Ok(Self::Execution(ExecutionId::from_bytes(id))),
            other => Err(Error::BadRow(format!(
                "owner_kind holds {other:?}, not a word Clade writes there"
            ))),
        }
    }
}

/// An execution to start.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Chosen by the caller, so that a retried start finds the execution it already made.
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub agent: AgentId,
    pub kind: ExecutionKind,
    pub owner: ExecutionOwner,
    /// `Pending` (queued) or `Running`.
    pub status: ExecutionStatus,
    /// What it was asked to do, as JSON text.
    pub input: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRow {
    pub id: ExecutionId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub kind: ExecutionKind,
    pub owner: ExecutionOwner,
    pub status: ExecutionStatus,
    /// What it was asked to do; `None` for a turn, whose events are its input.
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// One step of an execution: its number (from 1, dense), a key naming what it did (a replay
/// must reach the same key at the same number), and what it produced, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionStep {
    pub seq: u32,
    pub key: String,
    pub data: String,
}

pub(crate) const COLUMNS: &str = "id, tenant_id, agent_id, kind, owner_kind, owner_id, status, input, output, \
                       error, created_at, updated_at, finished_at";

pub(crate) fn execution_row(row: &Row) -> Result<ExecutionRow> {
    Ok(ExecutionRow {
        id: ExecutionId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        kind: row.word("kind", ExecutionKind::parse)?,
        owner: ExecutionOwner::read(row)?,
        status: row.word("status", ExecutionStatus::parse)?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(Timestamp::from_millis),
    })
}

fn step_row(row: &Row) -> Result<ExecutionStep> {
    let seq: i64 = row.try_get("seq")?;
    Ok(ExecutionStep {
        seq: u32::try_from(seq).map_err(|_| Error::BadRow(format!("seq holds {seq}")))?,
        key: row.try_get("step_key")?,
        data: row.try_get("data")?,
    })
}

fn select_one(tenant: TenantId, id: ExecutionId) -> crate::db::Query {
    query(format!("SELECT {COLUMNS} FROM executions WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant.as_bytes().to_vec())
        .bind(id.as_bytes().to_vec())
}

/// Writes to executions inside a unit of work ([`Work::executions`]), within its tenant.
pub struct ExecutionWrites<'w> {
    conn: &'w mut Tx,
    tenant: TenantId,
    now: Timestamp,
    /// What its writes are fenced by (`crate::leases`): an execution falls under the shard of
    /// the session it belongs to, whose turn runs it ([`Self::fence_key`]).
    fence: crate::leases::Fence,
    /// The session the writes are made for, when it is not the owner's ([`Self::acting_for`]).
    acting_for: Option<SessionId>,
}

impl<'w> ExecutionWrites<'w> {
    pub(crate) fn new(
        conn: &'w mut Tx,
        tenant: TenantId,
        now: Timestamp,
        fence: crate::leases::Fence,
    ) -> Self {
        Self { conn, tenant, now, fence, acting_for: None }
    }

    /// Writes made by `session`'s turn rather than its owner's: a fork's own session settles
    /// the fork, on the node holding that session.
    pub fn acting_for(mut self, session: SessionId) -> Self {
        self.acting_for = Some(session);
        self
    }

    /// What an execution owned by `owner` is fenced by: the session whose turn runs it (a
    /// branch, a worker or a sub-agent run belongs to the session that started it, written by
    /// the node holding that session), not the shard its own id would fall in, which another
    /// node may hold. An execution started by an execution falls under its starter's session;
    /// one owned by an agent alone, under the agent.
    async fn fence_key(&mut self, owner: ExecutionOwner) -> Result<[u8; 16]> {
        if let Some(session) = self.acting_for {
            return Ok(*session.as_bytes());
        }
        let mut owner = owner;
        // A chain of executions is short; a cycle cannot be stored, but is cut all the same.
        for _ in 0..8 {
            match owner {
                ExecutionOwner::Execution(parent) => owner = self.current(parent).await?.owner,
                other => return Ok(other.id()),
            }
        }
        Ok(owner.id())
    }

    /// Refuses a write for an execution owned by `owner` unless this node holds its session.
    async fn check_fence(&mut self, owner: ExecutionOwner) -> Result<()> {
        if self.fence.is_open() {
            return Ok(());
        }
        let key = self.fence_key(owner).await?;
        crate::leases::check(self.conn, self.fence.of(&key)).await
    }

    async fn current(&mut self, id: ExecutionId) -> Result<ExecutionRow> {
        let row = select_one(self.tenant, id).fetch_optional(&mut *self.conn).await?;
        row.as_ref()
            .map(execution_row)
            .transpose()?
            .ok_or_else(|| Error::ExecutionNotFound(id.to_string()))
    }

    /// The execution `id`, unless it is a turn: a turn's steps and status are written with its
    /// events and lifecycle events, by its own repository.
    async fn not_a_turn(&mut self, id: ExecutionId) -> Result<ExecutionRow> {
        let row = self.current(id).await?;
        if row.kind == ExecutionKind::Turn {
            return Err(Error::InvalidInput(format!(
                "execution {id} is a turn: it is written through its session (work.turns())"
            )));
        }
        Ok(row)
    }

    /// Starts an execution, or returns the one already stored under its id (a retried start).
    /// An id taken by another tenant's execution is not found, never shown.
    pub async fn start(&mut self, new: NewExecution) -> Result<ExecutionRow> {
        if new.tenant != self.tenant {
            return Err(Error::InvalidInput(
                "an execution starts in its unit of work's tenant".into(),
            ));
        }
        if new.kind == ExecutionKind::Turn {
            return Err(Error::InvalidInput(
                "a turn starts with its events (work.turns().begin), not as a bare execution"
                    .into(),
            ));
        }
        if !matches!(new.status, ExecutionStatus::Pending | ExecutionStatus::Running) {
            return Err(Error::InvalidInput(format!(
                "an execution starts pending or running, not {}",
                new.status
            )));
        }
        self.check_fence(new.owner).await?;
        let inserted = self.insert(&new, new.status, None, None).await?;
        match self.current(new.id).await {
            Err(Error::ExecutionNotFound(_)) if inserted > 0 => {
                Err(Error::BadRow("an execution just stored cannot be read".into()))
            }
            // A retried start finds what it made; an id taken by something else is refused.
            Ok(row) if row.kind != new.kind || row.owner != new.owner => Err(Error::InvalidInput(
                format!("execution {} is already a {} of another owner or kind", new.id, row.kind),
            )),
            other => other,
        }
    }

    /// Inserts `new` as `status` (ended, with its outcome, when that is final), unless its id
    /// is taken: how many rows it wrote.
    async fn insert(
        &mut self,
        new: &NewExecution,
        status: ExecutionStatus,
        output: Option<String>,
        error: Option<String>,
    ) -> Result<u64> {
        let finished = status.is_final().then_some(self.now.as_millis());
        query(
            "INSERT INTO executions (id, tenant_id, agent_id, kind, owner_kind, owner_id, \
             status, input, output, error, created_at, updated_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(new.id.as_bytes().to_vec())
        .bind(new.tenant.as_bytes().to_vec())
        .bind(new.agent.as_bytes().to_vec())
        .bind(new.kind.as_str())
        .bind(new.owner.kind())
        .bind(new.owner.id().to_vec())
        .bind(status.as_str())
        .bind(new.input.clone())
        .bind(output)
        .bind(error)
        .bind(self.now.as_millis())
        .bind(finished)
        .execute(&mut *self.conn)
        .await
    }

    /// Stores an execution that started and ended within this unit of work, in one write: a
    /// cron fire, whose one effect commits with it, so there is nothing to journal or resume.
    /// Its outcome is its `output` (or `error`); `status` is where it ended. A retried write
    /// leaves the one stored.
    pub async fn record_ended(
        &mut self,
        new: NewExecution,
        status: ExecutionStatus,
        output: Option<String>,
        error: Option<String>,
    ) -> Result<()> {
        if new.tenant != self.tenant || new.kind == ExecutionKind::Turn || !status.is_final() {
            return Err(Error::InvalidInput(format!(
                "execution {}: only an ended {} of this unit's tenant is recorded whole",
                new.id, new.kind
            )));
        }
        self.check_fence(new.owner).await?;
        self.insert(&new, status, output, error).await?;
        Ok(())
    }

    /// Records step `step.seq` of an execution. Steps are numbered densely from 1, so a gap is
    /// refused; a step already recorded under that number with the same key is left as it was
    /// (`false`: a retried write), and one with another key is refused (the execution did not
    /// replay the way it first ran). An ended execution takes no more steps.
    pub async fn append_step(&mut self, id: ExecutionId, step: ExecutionStep) -> Result<bool> {
        let execution = self.not_a_turn(id).await?;
        self.check_fence(execution.owner).await?;
        if execution.status.is_final() {
            return Err(Error::ExecutionEnded { id: id.to_string(), status: execution.status });
        }
        let last = query(
            "SELECT COALESCE(MAX(seq), 0) AS last FROM execution_steps WHERE execution_id = $1",
        )
        .bind(id.as_bytes().to_vec())
        .fetch_one(&mut *self.conn)
        .await?
        .try_get::<i64, _>("last")?;
        let seq = i64::from(step.seq);
        if seq <= last {
            let recorded =
                query("SELECT step_key FROM execution_steps WHERE execution_id = $1 AND seq = $2")
                    .bind(id.as_bytes().to_vec())
                    .bind(seq)
                    .fetch_one(&mut *self.conn)
                    .await?
                    .try_get::<String, _>("step_key")?;
            return if recorded == step.key {
                Ok(false)
            } else {
                Err(Error::StepDiverged {
                    id: id.to_string(),
                    seq: step.seq,
                    recorded,
                    now: step.key,
                })
            };
        }
        if seq != last + 1 {
            return Err(Error::InvalidInput(format!(
                "execution {id} has {last} steps: the next is {}, not {seq}",
                last + 1
            )));
        }
        query(
            "INSERT INTO execution_steps (execution_id, seq, step_key, data, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_bytes().to_vec())
        .bind(seq)
        .bind(step.key)
        .bind(step.data)
        .bind(self.now.as_millis())
        .execute(&mut *self.conn)
        .await?;
        query("UPDATE executions SET updated_at = $1 WHERE id = $2")
            .bind(self.now.as_millis())
            .bind(id.as_bytes().to_vec())
            .execute(&mut *self.conn)
            .await?;
        Ok(true)
    }

    /// Moves an execution to `status`, with its output or error once it ends. Moves that
    /// [`ExecutionStatus::can_become`] forbids are refused (an ended execution never changes);
    /// moving to where it already is changes nothing.
    pub async fn set_status(
        &mut self,
        id: ExecutionId,
        status: ExecutionStatus,
        output: Option<String>,
        error: Option<String>,
    ) -> Result<ExecutionRow> {
        // A cancel from any node and the settling of its holder decide one after the other.
        self.conn.serialize(&format!("execution {id}")).await?;
        let current = self.not_a_turn(id).await?;
        // A cancel is asked of whichever node took the request: it only ends the execution,
        // and its holder then finds it ended. Everything else is its session's holder's.
        if status != ExecutionStatus::Cancelled {
            self.check_fence(current.owner).await?;
        }
        if !current.status.can_become(status) {
            return Err(Error::ExecutionEnded { id: id.to_string(), status: current.status });
        }
        if current.status == status {
            return Ok(current);
        }
        let finished = status.is_final().then_some(self.now.as_millis());
        query(
            "UPDATE executions SET status = $1, output = COALESCE($2, output), \
             error = COALESCE($3, error), updated_at = $4, finished_at = $5 \
             WHERE tenant_id = $6 AND id = $7",
        )
        .bind(status.as_str())
        .bind(output)
        .bind(error)
        .bind(self.now.as_millis())
        .bind(finished)
        .bind(self.tenant.as_bytes().to_vec())
        .bind(id.as_bytes().to_vec())
        .execute(&mut *self.conn)
        .await?;
        self.current(id).await
    }
}

impl Store {
    /// [`ExecutionWrites::start`] as a unit of work of its own.
    pub async fn start_execution(&self, new: NewExecution) -> Result<ExecutionRow> {
        let (row, _) = self
            .transact(new.tenant, move |work| {
                let new = new.clone();
                Box::pin(async move { work.executions().start(new).await })
            })
            .await?;
        Ok(row)
    }
}

/// Reads across tenants, for the engine's recovery (see [`SystemStore`]).
impl SystemStore {
    /// Every execution that has not ended, of every tenant, oldest first: what a node resumes
    /// at start. Turns are not among them: a turn resumes through its session's open events.
    /// The recovery path's read; nothing a tenant asks for goes through it.
    pub async fn open_executions(&self, limit: u32) -> Result<Vec<ExecutionRow>> {
        let rows = self
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM executions WHERE finished_at IS NULL AND kind <> 'turn' \
                     ORDER BY created_at, id LIMIT $1"
                ))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(execution_row).collect()
    }
}

/// One tenant's durable executions and their steps, read and changed one at a time (a
/// unit of work's [`ExecutionWrites`] writes them together with other rows).
#[derive(Clone, Copy)]
pub struct Executions<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s durable executions.
    pub fn executions(&self, tenant: TenantId) -> Executions<'_> {
        Executions { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's durable executions.
    pub fn executions(&self) -> Executions<'_> {
        self.store().executions(self.tenant())
    }
}

impl Executions<'_> {
    pub async fn get(self, id: ExecutionId) -> Result<ExecutionRow> {
        let tenant = self.tenant;
        let row = self.store.maybe_row(select_one(tenant, id)).await?;
        row.as_ref()
            .map(execution_row)
            .transpose()?
            .ok_or_else(|| Error::ExecutionNotFound(id.to_string()))
    }

    /// An execution's steps, in order.
    pub async fn steps(self, id: ExecutionId) -> Result<Vec<ExecutionStep>> {
        let tenant = self.tenant;
        self.store.executions(tenant).get(id).await?;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT seq, step_key, data FROM execution_steps WHERE execution_id = $1 \
                     ORDER BY seq",
                )
                .bind(id.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(step_row).collect()
    }

    /// [`ExecutionWrites::append_step`] as a unit of work of its own.
    pub async fn append_step(self, id: ExecutionId, step: ExecutionStep) -> Result<bool> {
        let tenant = self.tenant;
        let (appended, _) = self
            .store
            .transact(tenant, move |work| {
                let step = step.clone();
                Box::pin(async move { work.executions().append_step(id, step).await })
            })
            .await?;
        Ok(appended)
    }

    /// [`ExecutionWrites::set_status`] as a unit of work of its own.
    pub async fn set_status(
        self,
        id: ExecutionId,
        status: ExecutionStatus,
        output: Option<String>,
        error: Option<String>,
    ) -> Result<ExecutionRow> {
        let tenant = self.tenant;
        let (row, _) = self
            .store
            .transact(tenant, move |work| {
                let (output, error) = (output.clone(), error.clone());
                Box::pin(
                    async move { work.executions().set_status(id, status, output, error).await },
                )
            })
            .await?;
        Ok(row)
    }

    /// A tenant's executions of one kind, newest first.
    pub async fn list_of(self, kind: ExecutionKind, limit: u32) -> Result<Vec<ExecutionRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM executions WHERE tenant_id = $1 AND kind = $2 \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(kind.as_str().to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(execution_row).collect()
    }

    /// A tenant's executions other than turns (a session lists its own), newest first.
    pub async fn list(self, limit: u32) -> Result<Vec<ExecutionRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM executions WHERE tenant_id = $1 AND kind <> 'turn' \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(execution_row).collect()
    }
}
