//! Agents' scheduled jobs, and the record of each time they fired.
//!
//! When a job fires is `clade-sched`'s to compute, from the schedule's text this keeps. What
//! this owns is that a scheduled time fires once, to the job's target: [`JobWrites::settle`]
//! commits the fires (a record per scheduled time, keyed by it, and the envelope each produced)
//! with the job's new settled time, compared against the settled time its caller computed
//! from; a second scheduler that computed from the same state finds it moved and writes
//! nothing. A fire the store refuses (its target session gone, too many events waiting there)
//! is settled as a run with its error ([`JobWrites::settle_refused`]): every scheduled time is
//! accounted for.
//!
//! Each fire is also an execution of kind [`ExecutionKind::CronFire`] ([`fire_execution_id`]),
//! recorded ended, with the envelope it delivered as its output, in the transaction that
//! commits that envelope ([`crate::executions::ExecutionWrites::record_ended`]): its one effect
//! and its record commit together, so there is nothing to journal or resume after a crash. It
//! belongs to the session it fired into, whose turn then runs as an execution of its own; a
//! refused fire belongs to the job's agent and ends failed, saying why.
//!
//! Every read and write names the tenant; only [`SystemStore::due_jobs`] and
//! [`SystemStore::next_due`], what the scheduler looks at, read across tenants.

use std::fmt;

use clade_core::{
    AgentId, AuditKind, EventId, ExecutionId, ExecutionKind, ExecutionStatus, SessionId, TenantId,
    Timestamp, TurnId, TurnStatus,
};
use sha2::{Digest, Sha256};

use crate::db::{Row, Tx, query};
use crate::error::{Error, Result};
use crate::executions::{ExecutionOwner, ExecutionWrites, NewExecution};
use crate::scoped::SystemStore;
use crate::store::{Store, id_bytes, opt_id};
use crate::turns::{Accepted, NewEvent, Source};

/// Where a job's envelopes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTarget {
    /// A session of its own for every fire.
    New,
    /// The named session of the job's agent (platform `cron`, channel the name): every fire
    /// continues one conversation.
    Session(String),
    /// The channel this session of the job's agent was last active on: where the user who
    /// asked for the job last spoke.
    Origin(SessionId),
    /// A run of the tenant's stored flow `name` (at `version`, else its newest version when the
    /// job fires), with the job's prompt as the run's inputs (a JSON object).
    Flow { name: String, version: Option<i64> },
}

/// A session name's longest form.
const MAX_SESSION_NAME: usize = 128;

impl JobTarget {
    /// Reads `new`, `session:<name>`, `origin:<session id>` or `flow:<name>[@<version>]`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text == "new" {
            return Ok(Self::New);
        }
        if let Some(name) = text.strip_prefix("session:") {
            if name.is_empty()
                || name.len() > MAX_SESSION_NAME
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "target {text:?}: a session name is 1 to {MAX_SESSION_NAME} characters without spaces"
                ));
            }
            return Ok(Self::Session(name.to_owned()));
        }
        if let Some(id) = text.strip_prefix("origin:") {
            let id = id
                .parse::<SessionId>()
                .map_err(|_| format!("target {text:?}: {id:?} is not a session id"))?;
            return Ok(Self::Origin(id));
        }
        if let Some(flow) = text.strip_prefix("flow:") {
            let (name, version) = match flow.split_once('@') {
                Some((name, version)) => match version.parse::<i64>() {
                    Ok(version) if version > 0 => (name, Some(version)),
                    _ => {
                        return Err(format!(
                            "target {text:?}: {version:?} is not a version (1, 2, …)"
                        ));
                    }
                },
                None => (flow, None),
            };
            let name = clade_core::Handle::parse(name)
                .map_err(|e| format!("target {text:?}: {name:?} is not a flow's name: {e}"))?;
            return Ok(Self::Flow { name: name.as_str().to_owned(), version });
        }
        Err(format!(
            "target {text:?} is not one of `new`, `session:<name>`, `origin:<session id>` or `flow:<name>[@<version>]`"
        ))
    }
}

impl fmt::Display for JobTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::New => f.write_str("new"),
            Self::Session(name) => write!(f, "session:{name}"),
            Self::Origin(id) => write!(f, "origin:{id}"),
            Self::Flow { name, version: None } => write!(f, "flow:{name}"),
            Self::Flow { name, version: Some(version) } => write!(f, "flow:{name}@{version}"),
        }
    }
}

/// A job to create. Its schedule, zone and misfire policy are text `clade-sched` has read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub agent: AgentId,
    pub name: String,
    pub schedule: String,
    pub zone: String,
    pub misfire: String,
    pub target: JobTarget,
    /// Up to this many seconds added to each scheduled time (see `clade-sched`).
    pub jitter_secs: u32,
    /// What the agent is told when the job fires.
    pub prompt: String,
    /// The time scheduled times are counted from (the job's start), and its first fire.
    pub settled_at: Timestamp,
    pub next_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: ExecutionId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    /// The agent's handle.
    pub agent: String,
    pub name: String,
    pub schedule: String,
    pub zone: String,
    pub misfire: String,
    pub target: JobTarget,
    pub jitter_secs: u32,
    pub prompt: String,
    pub enabled: bool,
    /// Why it was disabled, when not by a person.
    pub disabled_reason: Option<String>,
    /// When it was last enabled (or created).
    pub enabled_at: Timestamp,
    /// The last scheduled time settled, fired or skipped.
    pub settled_at: Timestamp,
    pub next_at: Option<Timestamp>,
    /// Scheduled times passed over under the misfire policy.
    pub skipped: u64,
    pub created_at: Timestamp,
}

/// What became of one fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The store refused its envelope (why); nothing was delivered.
    Refused(String),
    /// FireDelivery; no turn has taken it yet.
    Waiting,
    /// FireDelivery, and taken by this turn, as it stands.
    Turn { id: TurnId, status: TurnStatus },
    /// FireDelivery, but its session has since been deleted.
    Gone,
    /// Started this flow run, as it stands (`None`: the run has since been deleted).
    Flow { run: ExecutionId, status: Option<ExecutionStatus> },
}

impl RunOutcome {
    /// Counts towards the failures in a row that disable a job.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Refused(_)
                | Self::Turn { status: TurnStatus::Failed, .. }
                | Self::Flow { status: Some(ExecutionStatus::Failed), .. }
        )
    }

    /// Not yet known: the envelope waits or its turn runs.
    pub fn is_pending(&self) -> bool {
        match self {
            Self::Waiting | Self::Turn { status: TurnStatus::Running, .. } => true,
            Self::Flow { status: Some(status), .. } => !status.is_final(),
            _ => false,
        }
    }
}

/// One scheduled time a job fired at, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub scheduled_at: Timestamp,
    pub fired_at: Timestamp,
    /// The envelope it produced; `None` when it was refused.
    pub event_id: Option<EventId>,
    pub outcome: RunOutcome,
}

/// What one fire delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireDelivery {
    /// An envelope, to the job's agent.
    Envelope(Accepted),
    /// A flow run, started (recorded running, to be driven by the flow runner).
    Flow(ExecutionId),
}

impl FireDelivery {
    /// The envelope it delivered, if it delivered one.
    pub fn envelope(&self) -> Option<&Accepted> {
        match self {
            Self::Envelope(accepted) => Some(accepted),
            Self::Flow(_) => None,
        }
    }
}

/// What settling one job among several ([`crate::Jobs::settle_many`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Its fires committed, each with what it delivered.
    Fired(Vec<(JobRun, FireDelivery)>),
    /// The store refused its envelopes, for `why`: each scheduled time is a run with that error.
    Refused { runs: Vec<JobRun>, why: String },
    /// Another look settled it first, or it is disabled: nothing was written.
    Raced,
}

/// Whether the store refused a job's envelope for what it is (its target, its session's
/// queue, the tenant's quota), not for a failure of its own: such a fire is settled as a run
/// with the error, so the job moves on.
pub fn refuses_envelope(err: &Error) -> bool {
    matches!(
        err,
        Error::SessionBusy { .. }
            | Error::SessionNotFound(_)
            | Error::AgentNotFound(_)
            | Error::IdempotencyConflict(_)
            | Error::QuotaExceeded(_)
            | Error::FlowNotFound(_)
    )
}

/// The execution of `job`'s fire at `scheduled_at`: the same for the same scheduled time, as the
/// fire itself is.
pub fn fire_execution_id(job: ExecutionId, scheduled_at: Timestamp) -> ExecutionId {
    let digest = Sha256::new()
        .chain_update(b"cron_fire")
        .chain_update(job.as_bytes())
        .chain_update(scheduled_at.as_millis().to_be_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    ExecutionId::from_bytes(id)
}

/// The most ids bound to one delete of a job's fire executions.
const FIRES_PER_DELETE: usize = 500;

/// What one look at a job settles: the scheduled times to fire (oldest first), how many were
/// skipped, and where the job then stands.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The settled time the caller computed from: if the job's is another, someone settled it
    /// meanwhile, and nothing is written.
    pub from: Timestamp,
    pub fires: Vec<Timestamp>,
    pub skipped: u64,
    pub settled_at: Timestamp,
    pub next_at: Option<Timestamp>,
    /// Refuse an envelope when its session already has this many events waiting.
    pub max_queued: u64,
}

const COLUMNS: &str = "j.id, j.tenant_id, j.agent_id, a.handle AS agent_handle, j.name, \
                       j.schedule, j.zone, j.misfire, j.target, j.jitter_secs, j.prompt, j.enabled, \
                       j.disabled_reason, j.enabled_at, j.settled_at, j.next_at, j.skipped, \
                       j.created_at";

const FROM: &str = "jobs j JOIN agents a ON a.id = j.agent_id";

fn job_row(row: &Row) -> Result<JobRow> {
    let skipped: i64 = row.try_get("skipped")?;
    let target: String = row.try_get("target")?;
    Ok(JobRow {
        id: ExecutionId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        agent: row.try_get("agent_handle")?,
        name: row.try_get("name")?,
        schedule: row.try_get("schedule")?,
        zone: row.try_get("zone")?,
        misfire: row.try_get("misfire")?,
        target: JobTarget::parse(&target).map_err(Error::BadRow)?,
        jitter_secs: u32::try_from(row.try_get::<i64, _>("jitter_secs")?).unwrap_or(0),
        prompt: row.try_get("prompt")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        enabled_at: Timestamp::from_millis(row.try_get("enabled_at")?),
        settled_at: Timestamp::from_millis(row.try_get("settled_at")?),
        next_at: row.try_get::<Option<i64>, _>("next_at")?.map(Timestamp::from_millis),
        skipped: u64::try_from(skipped).unwrap_or(0),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

/// The session an origin target delivers to: the origin's platform and actor, on the channel
/// it was last active on.
const ORIGIN_SOURCE: &str = "SELECT platform, last_active_channel, actor FROM sessions \
                             WHERE id = $1 AND tenant_id = $2 AND agent_id = $3";

/// Writes to jobs inside a unit of work (`Work::jobs`), within its tenant.
pub struct JobWrites<'w> {
    conn: &'w mut Tx,
    tenant: TenantId,
    now: Timestamp,
}

impl<'w> JobWrites<'w> {
    pub(crate) fn new(conn: &'w mut Tx, tenant: TenantId, now: Timestamp) -> Self {
        Self { conn, tenant, now }
    }

    /// The job `id` of this tenant, as it stands in this transaction.
    pub async fn get(&mut self, id: ExecutionId) -> Result<JobRow> {
        let row =
            query(format!("SELECT {COLUMNS} FROM {FROM} WHERE j.id = $1 AND j.tenant_id = $2"))
                .bind(id.as_bytes().to_vec())
                .bind(self.tenant.as_bytes().to_vec())
                .fetch_optional(&mut *self.conn)
                .await?;
        row.as_ref().map(job_row).transpose()?.ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// Creates a job, enabled, for an agent of this tenant; a name is one job per agent. An
    /// origin target must be a session of the same agent.
    pub async fn create(&mut self, new: NewJob) -> Result<JobRow> {
        if new.tenant != self.tenant {
            return Err(Error::InvalidInput(
                "a job is created in its unit of work's tenant".into(),
            ));
        }
        let agent = query("SELECT 1 AS found FROM agents WHERE id = $1 AND tenant_id = $2")
            .bind(new.agent.as_bytes().to_vec())
            .bind(self.tenant.as_bytes().to_vec())
            .fetch_optional(&mut *self.conn)
            .await?;
        if agent.is_none() {
            return Err(Error::AgentNotFound(new.agent.to_string()));
        }
        match &new.target {
            JobTarget::Origin(session) => drop(self.origin_source(*session, new.agent).await?),
            JobTarget::Flow { name, version } => {
                drop(crate::flows::version_in(self.conn, self.tenant, name, *version).await?);
            }
            JobTarget::New | JobTarget::Session(_) => {}
        }
        let inserted = query(
            "INSERT INTO jobs (id, tenant_id, agent_id, name, schedule, zone, misfire, target, \
             prompt, enabled, enabled_at, settled_at, next_at, created_at, updated_at, \
             jitter_secs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $12, $10, $11, $12, $12, $13)",
        )
        .bind(new.id.as_bytes().to_vec())
        .bind(new.tenant.as_bytes().to_vec())
        .bind(new.agent.as_bytes().to_vec())
        .bind(new.name.clone())
        .bind(new.schedule)
        .bind(new.zone)
        .bind(new.misfire)
        .bind(new.target.to_string())
        .bind(new.prompt)
        .bind(new.settled_at.as_millis())
        .bind(new.next_at.map(|t| t.as_millis()))
        .bind(self.now.as_millis())
        .bind(i64::from(new.jitter_secs))
        .execute(&mut *self.conn)
        .await;
        match inserted {
            Err(err) if err.is_unique_violation() => Err(Error::JobExists(new.name)),
            Err(err) => Err(err),
            Ok(_) => self.get(new.id).await,
        }
    }

    /// Enables or disables a job; a disabled job is never due. `reason` says why a job was
    /// disabled when no person did it; enabling clears it and starts the count of failures in a
    /// row afresh. Scheduled times passed while it was disabled are settled, when it is enabled
    /// again, under its misfire policy.
    pub async fn set_enabled(
        &mut self,
        id: ExecutionId,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<JobRow> {
        let changed = query(
            "UPDATE jobs SET enabled = $3, disabled_reason = $4, \
             enabled_at = CASE WHEN $3 = 1 AND enabled = 0 THEN $5 ELSE enabled_at END, \
             updated_at = $5 WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id.as_bytes().to_vec())
        .bind(self.tenant.as_bytes().to_vec())
        .bind(enabled)
        .bind(if enabled { None } else { reason })
        .bind(self.now.as_millis())
        .execute(&mut *self.conn)
        .await?;
        if changed != 1 {
            return Err(Error::JobNotFound(id.to_string()));
        }
        self.get(id).await
    }

    /// Deletes a job and the record of its fires (not the envelopes and turns they made).
    pub async fn delete(&mut self, id: ExecutionId) -> Result<JobRow> {
        let job = self.get(id).await?;
        self.delete_fire_executions(id).await?;
        query("DELETE FROM job_runs WHERE job_id = $1")
            .bind(id.as_bytes().to_vec())
            .execute(&mut *self.conn)
            .await?;
        query("DELETE FROM jobs WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_bytes().to_vec())
            .bind(self.tenant.as_bytes().to_vec())
            .execute(&mut *self.conn)
            .await?;
        Ok(job)
    }

    /// Deletes the executions of `job`'s fires, found by the scheduled times of its runs.
    async fn delete_fire_executions(&mut self, job: ExecutionId) -> Result<()> {
        let rows = query("SELECT scheduled_at FROM job_runs WHERE job_id = $1")
            .bind(job.as_bytes().to_vec())
            .fetch_all(&mut *self.conn)
            .await?;
        let ids = rows
            .iter()
            .map(|row| {
                let at = Timestamp::from_millis(row.try_get("scheduled_at")?);
                Ok(fire_execution_id(job, at).as_bytes().to_vec())
            })
            .collect::<Result<Vec<_>>>()?;
        // A fire's execution is recorded ended, with no steps: its row is all there is.
        for chunk in ids.chunks(FIRES_PER_DELETE) {
            let list = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>();
            let mut delete = query(format!(
                "DELETE FROM executions WHERE tenant_id = $1 AND kind = $2 AND id IN ({})",
                list.join(", ")
            ))
            .bind(self.tenant.as_bytes().to_vec())
            .bind(ExecutionKind::CronFire.as_str());
            for id in chunk {
                delete = delete.bind(id.clone());
            }
            delete.execute(&mut *self.conn).await?;
        }
        Ok(())
    }

    /// Records the execution of `job`'s fire at `scheduled_at`, in this transaction:
    /// completed with the envelope it delivered (its output), or failed with why the store
    /// refused it. Unfenced: a fire is the scheduler's, on whichever node looked (the job's
    /// settled time is what keeps it once), and its envelope is accepted as any event is.
    async fn record_fire_execution(
        &mut self,
        job: &JobRow,
        scheduled_at: Timestamp,
        delivered: std::result::Result<&Accepted, &str>,
    ) -> Result<()> {
        let (owner, status, output, error) = match delivered {
            Ok(accepted) => {
                let envelope = serde_json::json!({
                    "event": accepted.event_id.to_string(),
                    "session": accepted.session_id.to_string(),
                });
                let owner = ExecutionOwner::Session(accepted.session_id);
                (owner, ExecutionStatus::Completed, Some(envelope.to_string()), None)
            }
            Err(why) => {
                let owner = ExecutionOwner::Agent(job.agent_id);
                (owner, ExecutionStatus::Failed, None, Some(why.to_owned()))
            }
        };
        let input = serde_json::json!({
            "job": job.id.to_string(),
            "name": job.name,
            "scheduled_at": scheduled_at.as_millis(),
        });
        let new = NewExecution {
            id: fire_execution_id(job.id, scheduled_at),
            tenant: self.tenant,
            agent: job.agent_id,
            kind: ExecutionKind::CronFire,
            owner,
            status: ExecutionStatus::Running,
            input: input.to_string(),
        };
        ExecutionWrites::new(self.conn, self.tenant, self.now, crate::leases::Fence::Open)
            .record_ended(new, status, output, error)
            .await
    }

    async fn origin_source(&mut self, session: SessionId, agent: AgentId) -> Result<Source> {
        let row = query(ORIGIN_SOURCE)
            .bind(session.as_bytes().to_vec())
            .bind(self.tenant.as_bytes().to_vec())
            .bind(agent.as_bytes().to_vec())
            .fetch_optional(&mut *self.conn)
            .await?
            .ok_or_else(|| Error::SessionNotFound(session.to_string()))?;
        Ok(Source {
            platform: clade_core::Origin::from(row.try_get::<String, _>("platform")?),
            channel: row.try_get("last_active_channel")?,
            actor: row.try_get("actor")?,
        })
    }

    /// Moves the job from `settlement.from` to where the settlement leaves it; false when
    /// another look moved it first, or it is disabled.
    async fn advance(&mut self, job: &JobRow, settlement: &Settlement) -> Result<bool> {
        if !job.enabled || job.settled_at != settlement.from {
            return Ok(false);
        }
        if settlement.settled_at < settlement.from
            || settlement.fires.iter().any(|at| *at <= settlement.from)
        {
            return Err(Error::InvalidInput(format!(
                "job {}: a settlement moves forward from {}",
                job.id, settlement.from
            )));
        }
        let moved = query(
            "UPDATE jobs SET settled_at = $3, next_at = $4, skipped = skipped + $5, \
             updated_at = $6 WHERE id = $1 AND settled_at = $2",
        )
        .bind(job.id.as_bytes().to_vec())
        .bind(settlement.from.as_millis())
        .bind(settlement.settled_at.as_millis())
        .bind(settlement.next_at.map(|t| t.as_millis()))
        .bind(i64::try_from(settlement.skipped).unwrap_or(i64::MAX))
        .bind(self.now.as_millis())
        .execute(&mut *self.conn)
        .await?;
        Ok(moved == 1)
    }

    async fn record(
        &mut self,
        id: ExecutionId,
        scheduled_at: Timestamp,
        delivered: Option<&FireDelivery>,
        error: Option<&str>,
    ) -> Result<()> {
        let (event, flow_run) = match delivered {
            Some(FireDelivery::Envelope(accepted)) => {
                (Some(accepted.event_id.as_bytes().to_vec()), None)
            }
            Some(FireDelivery::Flow(run)) => (None, Some(run.as_bytes().to_vec())),
            None => (None, None),
        };
        // Keyed by the scheduled time: the same time cannot fire twice.
        query(
            "INSERT INTO job_runs (job_id, scheduled_at, fired_at, event_id, error, flow_run) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_bytes().to_vec())
        .bind(scheduled_at.as_millis())
        .bind(self.now.as_millis())
        .bind(event)
        .bind(error.map(str::to_owned))
        .bind(flow_run)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Commits one look at a job: for each fire, what it delivers to the job's target (an
    /// envelope, accepted as any event is, or a flow run) and its record; the skipped count;
    /// the new settled and next times. `Ok(None)` when the job's settled time is no longer
    /// `settlement.from` (another look settled it first: nothing is written), or the job is
    /// disabled. A delivery the store refuses fails the whole settlement, which its caller then
    /// settles as refused.
    pub async fn settle(
        &mut self,
        id: ExecutionId,
        settlement: Settlement,
    ) -> Result<Option<Vec<(JobRun, FireDelivery)>>> {
        let job = self.get(id).await?;
        if !self.advance(&job, &settlement).await? {
            return Ok(None);
        }
        let mut runs = Vec::with_capacity(settlement.fires.len());
        if let JobTarget::Flow { name, version } = &job.target {
            let flow = crate::flows::version_in(self.conn, self.tenant, name, *version).await?;
            for scheduled_at in settlement.fires {
                let run = self.start_flow_run(&job, scheduled_at, &flow).await?;
                runs.push(self.fired(&job, scheduled_at, FireDelivery::Flow(run)).await?);
            }
            return Ok(Some(runs));
        }
        let origin = match &job.target {
            JobTarget::Origin(session) => Some(self.origin_source(*session, job.agent_id).await?),
            _ => None,
        };
        for scheduled_at in settlement.fires {
            let millis = scheduled_at.as_millis();
            let source = match (&job.target, &origin) {
                (_, Some(source)) => source.clone(),
                (JobTarget::New, _) => Source {
                    platform: clade_core::Origin::Cron,
                    channel: job.name.clone(),
                    actor: format!("fire:{millis}"),
                },
                (JobTarget::Session(name), _) => Source {
                    platform: clade_core::Origin::Cron,
                    channel: name.clone(),
                    actor: "scheduler".into(),
                },
                (JobTarget::Origin(session), None) => {
                    return Err(Error::SessionNotFound(session.to_string()));
                }
                (JobTarget::Flow { .. }, None) => {
                    return Err(Error::InvalidInput("a flow target fires no envelope".into()));
                }
            };
            let event = NewEvent {
                tenant: self.tenant,
                agent: job.agent.clone(),
                source,
                text: job.prompt.clone(),
                // The scheduled time names the fire.
                idempotency_key: Some(format!("cron:{id}:{millis}")),
                payload_hash: format!("cron:{id}"),
                max_open_per_session: settlement.max_queued,
            };
            let (accepted, _) = crate::turns::accept_in(self.conn, self.now, event).await?;
            self.record_fire_execution(&job, scheduled_at, Ok(&accepted)).await?;
            runs.push(self.fired(&job, scheduled_at, FireDelivery::Envelope(accepted)).await?);
        }
        Ok(Some(runs))
    }

    /// Records `job`'s fire at `scheduled_at`, which delivered `delivered`.
    async fn fired(
        &mut self,
        job: &JobRow,
        scheduled_at: Timestamp,
        delivered: FireDelivery,
    ) -> Result<(JobRun, FireDelivery)> {
        self.record(job.id, scheduled_at, Some(&delivered), None).await?;
        let (event_id, outcome) = match &delivered {
            FireDelivery::Envelope(accepted) => (Some(accepted.event_id), RunOutcome::Waiting),
            FireDelivery::Flow(run) => {
                (None, RunOutcome::Flow { run: *run, status: Some(ExecutionStatus::Running) })
            }
        };
        Ok((JobRun { scheduled_at, fired_at: self.now, event_id, outcome }, delivered))
    }

    /// Starts the run of `flow` that `job`'s fire at `scheduled_at` makes: recorded running,
    /// owned by the job's agent, its id the fire's own ([`fire_execution_id`]), so the fire and
    /// its run commit together and a run is never started twice for one scheduled time. Its
    /// input is the flow's text, pinned to this version, and the job's inputs as given: the
    /// flow runner checks them, and resolves the flow's agents, when it first drives the run.
    async fn start_flow_run(
        &mut self,
        job: &JobRow,
        scheduled_at: Timestamp,
        flow: &crate::flows::FlowVersion,
    ) -> Result<ExecutionId> {
        let inputs: serde_json::Value = serde_json::from_str(&job.prompt)
            .map_err(|e| Error::BadRow(format!("job {}: its inputs are not JSON: {e}", job.id)))?;
        // What `clade_flow::run::RunInput` reads; `agents` is filled in by the runner.
        let input = serde_json::json!({
            "flow": flow.name,
            "file": format!("{}.flow.yaml", flow.name),
            "source": flow.source,
            "inputs": inputs,
            "agents": {},
            "version": flow.version,
            "scheduled": {
                "job": job.id.to_string(),
                "name": job.name,
                "scheduled_at": scheduled_at.as_millis(),
            },
        });
        let id = fire_execution_id(job.id, scheduled_at);
        let new = NewExecution {
            id,
            tenant: self.tenant,
            agent: job.agent_id,
            kind: ExecutionKind::Flow,
            owner: ExecutionOwner::Agent(job.agent_id),
            status: ExecutionStatus::Running,
            input: input.to_string(),
        };
        ExecutionWrites::new(self.conn, self.tenant, self.now, crate::leases::Fence::Open)
            .start(new)
            .await?;
        Ok(id)
    }

    /// Settles a look at a job whose envelopes the store refused ([`JobWrites::settle`] failed
    /// with `error`): the job moves on as it would have, and each scheduled time is a run with
    /// the error and no envelope. `Ok(None)` as for `settle`.
    pub async fn settle_refused(
        &mut self,
        id: ExecutionId,
        settlement: Settlement,
        error: &str,
    ) -> Result<Option<Vec<JobRun>>> {
        let job = self.get(id).await?;
        if !self.advance(&job, &settlement).await? {
            return Ok(None);
        }
        let mut runs = Vec::with_capacity(settlement.fires.len());
        for scheduled_at in settlement.fires {
            self.record(id, scheduled_at, None, Some(error)).await?;
            self.record_fire_execution(&job, scheduled_at, Err(error)).await?;
            runs.push(JobRun {
                scheduled_at,
                fired_at: self.now,
                event_id: None,
                outcome: RunOutcome::Refused(error.to_owned()),
            });
        }
        Ok(Some(runs))
    }
}

impl JobWrites<'_> {
    /// [`JobWrites::settle`] in a savepoint of its own, so that the jobs settled beside it in
    /// the same transaction keep their writes whatever becomes of this one: refused envelopes
    /// are settled as refused ([`JobWrites::settle_refused`]), and any other failure rolls back
    /// this job's writes alone and is returned as its outcome. The outer `Err` means the
    /// transaction itself can no longer commit (the database aborted it).
    pub async fn settle_apart(
        &mut self,
        id: ExecutionId,
        settlement: Settlement,
    ) -> Result<Result<Settled>> {
        self.conn.batch("SAVEPOINT job").await?;
        let mut outcome = match self.settle(id, settlement.clone()).await {
            Ok(Some(runs)) => Ok(Settled::Fired(runs)),
            Ok(None) => Ok(Settled::Raced),
            Err(err) => Err(err),
        };
        if let Err(err) = &outcome
            && refuses_envelope(err)
        {
            let why = err.to_string();
            self.conn.batch("ROLLBACK TO SAVEPOINT job").await?;
            outcome = match self.settle_refused(id, settlement, &why).await {
                Ok(Some(runs)) => Ok(Settled::Refused { runs, why }),
                Ok(None) => Ok(Settled::Raced),
                Err(err) => Err(err),
            };
        }
        match outcome {
            // Nothing in this transaction can commit any more: its caller runs it again.
            Err(err) if err.is_retryable() => Err(err),
            Err(err) => {
                self.conn.batch("ROLLBACK TO SAVEPOINT job").await?;
                self.conn.batch("RELEASE SAVEPOINT job").await?;
                Ok(Err(err))
            }
            Ok(settled) => {
                self.conn.batch("RELEASE SAVEPOINT job").await?;
                Ok(Ok(settled))
            }
        }
    }
}

impl Store {
    /// [`JobWrites::create`] as a unit of work of its own, audited.
    pub async fn create_job(&self, new: NewJob) -> Result<JobRow> {
        let audit = self.admin_record(
            new.tenant,
            Some(new.agent),
            AuditKind::JobCreated,
            serde_json::json!({
                "job": new.id.to_string(),
                "name": new.name,
                "schedule": new.schedule,
                "zone": new.zone,
                "misfire": new.misfire,
                "target": new.target.to_string(),
            }),
        );
        let (row, _) = self
            .transact(new.tenant, move |work| {
                let new = new.clone();
                let audit = audit.clone();
                Box::pin(async move {
                    let row = work.jobs().create(new).await?;
                    work.audit(&audit).await?;
                    Ok(row)
                })
            })
            .await?;
        Ok(row)
    }
}

/// An audit record's detail (`by`, from `Store::admin_record`) with the job it is about.
fn job_detail(base: &str, job: &JobRow, reason: Option<&str>) -> String {
    let mut detail: serde_json::Value =
        serde_json::from_str(base).unwrap_or_else(|_| serde_json::json!({}));
    detail["job"] = job.id.to_string().into();
    detail["name"] = job.name.clone().into();
    if let Some(reason) = reason {
        detail["reason"] = reason.into();
    }
    detail.to_string()
}

/// What became of a fire that started `run`.
fn flow_outcome(row: &Row, run: Option<ExecutionId>) -> Result<RunOutcome> {
    let Some(run) = run else { return Ok(RunOutcome::Gone) };
    let status: Option<String> = row.try_get("flow_status")?;
    let status = match status {
        Some(text) => Some(
            ExecutionStatus::parse(&text)
                .ok_or_else(|| Error::BadRow(format!("flow run status {text:?}")))?,
        ),
        None => None,
    };
    Ok(RunOutcome::Flow { run, status })
}

fn run_row(row: &Row) -> Result<JobRun> {
    let error: Option<String> = row.try_get("error")?;
    let turn = opt_id(row, "turn_id")?;
    let status: Option<String> = row.try_get("turn_status")?;
    let flow_run = opt_id(row, "flow_run")?.map(ExecutionId::from_bytes);
    let outcome = match (error, opt_id(row, "delivered")?, turn, status) {
        (Some(error), ..) => RunOutcome::Refused(error),
        (None, _, _, _) if flow_run.is_some() => flow_outcome(row, flow_run)?,
        (None, None, ..) => RunOutcome::Gone,
        (None, Some(_), Some(turn), Some(status)) => {
            let status = clade_core::ExecutionStatus::parse(&status)
                .and_then(TurnStatus::of_execution)
                .ok_or_else(|| Error::BadRow(format!("turn status {status:?}")))?;
            RunOutcome::Turn { id: TurnId::from_bytes(turn), status }
        }
        (None, Some(_), ..) => RunOutcome::Waiting,
    };
    Ok(JobRun {
        scheduled_at: Timestamp::from_millis(row.try_get("scheduled_at")?),
        fired_at: Timestamp::from_millis(row.try_get("fired_at")?),
        event_id: opt_id(row, "event_id")?.map(EventId::from_bytes),
        outcome,
    })
}

/// The scheduler's reads, across tenants (see [`SystemStore`]).
impl SystemStore {
    /// Enabled jobs due by `now`, of every tenant, soonest first.
    pub async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<JobRow>> {
        let rows = self
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE j.enabled = 1 AND j.next_at <= $1 \
                     ORDER BY j.next_at, j.id LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// The newest runs of each of `jobs` since it was last enabled, at most `per_job` of each,
    /// newest first: what the circuit breaker reads, for a whole look in one query per few
    /// hundred jobs. A job without runs is absent.
    pub async fn recent_job_runs(
        &self,
        jobs: &[ExecutionId],
        per_job: u32,
    ) -> Result<std::collections::HashMap<ExecutionId, Vec<JobRun>>> {
        let mut recent = std::collections::HashMap::<ExecutionId, Vec<JobRun>>::new();
        for chunk in jobs.chunks(500) {
            let placeholders =
                (0..chunk.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(",");
            // The primary key (job_id, scheduled_at) finds each job's `per_job`-th newest run;
            // only placeholders are interpolated.
            let mut query = query(format!(
                "SELECT r.job_id, r.scheduled_at, r.fired_at, r.event_id, r.error, r.flow_run, \
                 e.id AS delivered, e.turn_id, x.status AS turn_status, \
                 f.status AS flow_status FROM jobs j \
                 JOIN job_runs r ON r.job_id = j.id AND r.fired_at >= j.enabled_at \
                 LEFT JOIN events e ON e.id = r.event_id AND e.tenant_id = j.tenant_id \
                 LEFT JOIN executions x ON x.id = e.turn_id AND x.tenant_id = j.tenant_id \
                 LEFT JOIN executions f ON f.id = r.flow_run AND f.tenant_id = j.tenant_id \
                 WHERE j.id IN ({placeholders}) AND r.scheduled_at >= COALESCE(( \
                   SELECT n.scheduled_at FROM job_runs n WHERE n.job_id = j.id \
                   AND n.fired_at >= j.enabled_at ORDER BY n.scheduled_at DESC \
                   LIMIT 1 OFFSET $1), $2) \
                 ORDER BY r.job_id, r.scheduled_at DESC"
            ))
            .bind(i64::from(per_job.max(1)) - 1)
            .bind(i64::MIN);
            for id in chunk {
                query = query.bind(id.as_bytes().to_vec());
            }
            for row in self.rows(query).await? {
                let job = ExecutionId::from_bytes(id_bytes(&row, "job_id")?);
                recent.entry(job).or_default().push(run_row(&row)?);
            }
        }
        Ok(recent)
    }

    /// Every tenant's jobs named `name` (the heartbeats `clade.yaml` declares).
    pub async fn jobs_named(&self, name: &str) -> Result<Vec<JobRow>> {
        let rows = self
            .rows(
                query(format!("SELECT {COLUMNS} FROM {FROM} WHERE j.name = $1 ORDER BY j.id"))
                    .bind(name.to_owned()),
            )
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// When the soonest enabled job is due, if any is.
    pub async fn next_due(&self) -> Result<Option<Timestamp>> {
        let row = self
            .maybe_row(query(
                "SELECT next_at FROM jobs WHERE enabled = 1 AND next_at IS NOT NULL \
                 ORDER BY next_at LIMIT 1",
            ))
            .await?;
        row.map(|row| Ok(Timestamp::from_millis(row.try_get("next_at")?))).transpose()
    }
}

/// One tenant's scheduled jobs and their runs; no id handed to it reaches another tenant's.
#[derive(Clone, Copy)]
pub struct Jobs<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s scheduled jobs.
    pub fn jobs(&self, tenant: TenantId) -> Jobs<'_> {
        Jobs { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's scheduled jobs.
    pub fn jobs(&self) -> Jobs<'_> {
        self.store().jobs(self.tenant())
    }
}

impl Jobs<'_> {
    /// Settles several jobs of `tenant` in one transaction (one commit, and one wait in the
    /// writer's queue, for all of them), each apart from the others
    /// ([`JobWrites::settle_apart`]): the outcomes come back in the order given.
    pub async fn settle_many(
        self,
        settlements: Vec<(ExecutionId, Settlement)>,
    ) -> Result<Vec<Result<Settled>>> {
        let tenant = self.tenant;
        let (outcomes, _) = self
            .store
            .transact(tenant, move |work| {
                let settlements = settlements.clone();
                Box::pin(async move {
                    let mut outcomes = Vec::with_capacity(settlements.len());
                    for (id, settlement) in settlements {
                        outcomes.push(work.jobs().settle_apart(id, settlement).await?);
                    }
                    Ok(outcomes)
                })
            })
            .await?;
        Ok(outcomes)
    }

    /// [`JobWrites::delete`] as a unit of work of its own, audited.
    pub async fn delete(self, id: ExecutionId) -> Result<JobRow> {
        let tenant = self.tenant;
        let by =
            self.store.admin_record(tenant, None, AuditKind::JobRemoved, serde_json::json!({}));
        let (row, _) = self
            .store
            .transact(tenant, move |work| {
                let mut audit = by.clone();
                Box::pin(async move {
                    let row = work.jobs().delete(id).await?;
                    audit.agent = Some(row.agent_id);
                    audit.detail = job_detail(&audit.detail, &row, None);
                    work.audit(&audit).await?;
                    Ok(row)
                })
            })
            .await?;
        Ok(row)
    }

    /// [`JobWrites::settle`] as a unit of work of its own.
    pub async fn settle(
        self,
        id: ExecutionId,
        settlement: Settlement,
    ) -> Result<Option<Vec<(JobRun, FireDelivery)>>> {
        let tenant = self.tenant;
        let (runs, _) = self
            .store
            .transact(tenant, move |work| {
                let settlement = settlement.clone();
                Box::pin(async move { work.jobs().settle(id, settlement).await })
            })
            .await?;
        Ok(runs)
    }

    /// [`JobWrites::settle_refused`] as a unit of work of its own.
    pub async fn settle_refused(
        self,
        id: ExecutionId,
        settlement: Settlement,
        error: String,
    ) -> Result<Option<Vec<JobRun>>> {
        let tenant = self.tenant;
        let (runs, _) = self
            .store
            .transact(tenant, move |work| {
                let settlement = settlement.clone();
                let error = error.clone();
                Box::pin(async move { work.jobs().settle_refused(id, settlement, &error).await })
            })
            .await?;
        Ok(runs)
    }

    /// [`JobWrites::set_enabled`] as a unit of work of its own, audited; `reason` says why a
    /// job is disabled when no person disabled it.
    pub async fn set_enabled(
        self,
        id: ExecutionId,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<JobRow> {
        let tenant = self.tenant;
        let kind = if enabled { AuditKind::JobEnabled } else { AuditKind::JobDisabled };
        let by = self.store.admin_record(tenant, None, kind, serde_json::json!({}));
        let (row, _) = self
            .store
            .transact(tenant, move |work| {
                let mut audit = by.clone();
                let reason = reason.clone();
                Box::pin(async move {
                    let row = work.jobs().set_enabled(id, enabled, reason.clone()).await?;
                    audit.agent = Some(row.agent_id);
                    audit.detail = job_detail(&audit.detail, &row, reason.as_deref());
                    work.audit(&audit).await?;
                    // Disabled by the scheduler, not a person: subscribers are told why.
                    if let (false, Some(reason)) = (enabled, reason) {
                        let event =
                            clade_protocol::LifecycleEvent::from(clade_protocol::JobDisabled {
                                job_id: row.id.to_string(),
                                agent_id: row.agent_id.to_string(),
                                name: row.name.clone(),
                                reason,
                            });
                        work.announce(None, &[crate::turns::OutboxEvent::from(&event)]).await?;
                    }
                    Ok(row)
                })
            })
            .await?;
        Ok(row)
    }

    /// A tenant's jobs, of one agent or of all, by agent and name.
    pub async fn list(self, agent: Option<AgentId>) -> Result<Vec<JobRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE j.tenant_id = $1 \
                     AND ($2 = 0 OR j.agent_id = $3) ORDER BY a.handle, j.name, j.id"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(i64::from(agent.is_some()))
                .bind(agent.map(|a| a.as_bytes().to_vec()).unwrap_or_default()),
            )
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// The job of `agent` named `name`.
    pub async fn named(self, agent: AgentId, name: &str) -> Result<JobRow> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE j.tenant_id = $1 AND j.agent_id = $2 \
                     AND j.name = $3"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(name.to_owned()),
            )
            .await?;
        row.as_ref().map(job_row).transpose()?.ok_or_else(|| Error::JobNotFound(name.to_owned()))
    }

    /// A job's fires, newest first: at most `limit`, and only those fired at or after `since`
    /// when given.
    pub async fn runs(
        self,
        id: ExecutionId,
        since: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<JobRun>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT r.scheduled_at, r.fired_at, r.event_id, r.error, r.flow_run, \
                     e.id AS delivered, e.turn_id, x.status AS turn_status, \
                     f.status AS flow_status FROM job_runs r \
                     JOIN jobs j ON j.id = r.job_id \
                     LEFT JOIN events e ON e.id = r.event_id AND e.tenant_id = j.tenant_id \
                     LEFT JOIN executions x ON x.id = e.turn_id AND x.tenant_id = j.tenant_id \
                     LEFT JOIN executions f ON f.id = r.flow_run AND f.tenant_id = j.tenant_id \
                     WHERE r.job_id = $1 AND j.tenant_id = $2 AND r.fired_at >= $3 \
                     ORDER BY r.scheduled_at DESC LIMIT $4",
                )
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .bind(since.map(|t| t.as_millis()).unwrap_or(i64::MIN))
                .bind(i64::from(limit.max(1))),
            )
            .await?;
        rows.iter().map(run_row).collect()
    }
}
