//! Agents' scheduled jobs, and the record of each time they fired.
//!
//! When a job fires is `clade-sched`'s to compute, from the schedule's text this keeps. What
//! this owns is that a scheduled time fires once: [`JobWrites::settle`] commits the fires (a
//! record per scheduled time, keyed by it, and the envelope each produced) with the job's new
//! settled time, compared against the settled time its caller computed from; a second
//! scheduler that computed from the same state finds it moved and writes nothing.
//!
//! Every read and write names the tenant; only [`SystemStore::due_jobs`], what the scheduler
//! looks at, reads across tenants.

use clade_core::{AgentId, EventId, TenantId, Timestamp};

use crate::db::{Row, Tx, query};
use crate::error::{Error, Result};
use crate::scoped::SystemStore;
use crate::store::{Store, id_bytes};
use crate::turns::{Accepted, NewEvent};

/// A job to create. Its schedule, zone and misfire policy are text `clade-sched` has read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: clade_core::ExecutionId,
    pub tenant: TenantId,
    pub agent: AgentId,
    pub name: String,
    pub schedule: String,
    pub zone: String,
    pub misfire: String,
    /// What the agent is told when the job fires.
    pub prompt: String,
    /// The time scheduled times are counted from (the job's start), and its first fire.
    pub settled_at: Timestamp,
    pub next_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: clade_core::ExecutionId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub name: String,
    pub schedule: String,
    pub zone: String,
    pub misfire: String,
    pub prompt: String,
    pub enabled: bool,
    /// The last scheduled time settled, fired or skipped.
    pub settled_at: Timestamp,
    pub next_at: Option<Timestamp>,
    /// Scheduled times passed over under the misfire policy.
    pub skipped: u64,
    pub created_at: Timestamp,
}

/// One scheduled time a job fired at, and the envelope it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub scheduled_at: Timestamp,
    pub fired_at: Timestamp,
    pub event_id: EventId,
}

/// What one look at a job settles: the envelopes to fire (each for its scheduled time, oldest
/// first), how many times were skipped, and where the job then stands.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The settled time the caller computed from: if the job's is another, someone settled it
    /// meanwhile, and nothing is written.
    pub from: Timestamp,
    pub fires: Vec<(Timestamp, NewEvent)>,
    pub skipped: u64,
    pub settled_at: Timestamp,
    pub next_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, tenant_id, agent_id, name, schedule, zone, misfire, prompt, enabled, \
                       settled_at, next_at, skipped, created_at";

fn job_row(row: &Row) -> Result<JobRow> {
    let skipped: i64 = row.try_get("skipped")?;
    Ok(JobRow {
        id: clade_core::ExecutionId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        name: row.try_get("name")?,
        schedule: row.try_get("schedule")?,
        zone: row.try_get("zone")?,
        misfire: row.try_get("misfire")?,
        prompt: row.try_get("prompt")?,
        enabled: row.try_get("enabled")?,
        settled_at: Timestamp::from_millis(row.try_get("settled_at")?),
        next_at: row.try_get::<Option<i64>, _>("next_at")?.map(Timestamp::from_millis),
        skipped: u64::try_from(skipped).unwrap_or(0),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

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

    async fn current(&mut self, id: clade_core::ExecutionId) -> Result<JobRow> {
        let row = query(format!("SELECT {COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2"))
            .bind(id.as_bytes().to_vec())
            .bind(self.tenant.as_bytes().to_vec())
            .fetch_optional(&mut *self.conn)
            .await?;
        row.as_ref().map(job_row).transpose()?.ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// Creates a job, enabled, for an agent of this tenant; a name is one job per agent.
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
        let inserted = query(
            "INSERT INTO jobs (id, tenant_id, agent_id, name, schedule, zone, misfire, prompt, \
             enabled, settled_at, next_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11, $11)",
        )
        .bind(new.id.as_bytes().to_vec())
        .bind(new.tenant.as_bytes().to_vec())
        .bind(new.agent.as_bytes().to_vec())
        .bind(new.name.clone())
        .bind(new.schedule)
        .bind(new.zone)
        .bind(new.misfire)
        .bind(new.prompt)
        .bind(new.settled_at.as_millis())
        .bind(new.next_at.map(|t| t.as_millis()))
        .bind(self.now.as_millis())
        .execute(&mut *self.conn)
        .await;
        match inserted {
            Err(err) if err.is_unique_violation() => Err(Error::JobExists(new.name)),
            Err(err) => Err(err),
            Ok(_) => self.current(new.id).await,
        }
    }

    /// Enables or disables a job; a disabled job is never due.
    pub async fn set_enabled(
        &mut self,
        id: clade_core::ExecutionId,
        enabled: bool,
    ) -> Result<JobRow> {
        let changed =
            query("UPDATE jobs SET enabled = $3, updated_at = $4 WHERE id = $1 AND tenant_id = $2")
                .bind(id.as_bytes().to_vec())
                .bind(self.tenant.as_bytes().to_vec())
                .bind(enabled)
                .bind(self.now.as_millis())
                .execute(&mut *self.conn)
                .await?;
        if changed != 1 {
            return Err(Error::JobNotFound(id.to_string()));
        }
        self.current(id).await
    }

    /// Commits one look at a job: for each fire, its envelope (accepted as any event is) and
    /// its record; the skipped count; the new settled and next times. `Ok(None)` when the job's
    /// settled time is no longer `settlement.from` (another look settled it first: nothing is
    /// written), or the job is disabled.
    pub async fn settle(
        &mut self,
        id: clade_core::ExecutionId,
        settlement: Settlement,
    ) -> Result<Option<Vec<(JobRun, Accepted)>>> {
        let job = self.current(id).await?;
        if !job.enabled || job.settled_at != settlement.from {
            return Ok(None);
        }
        if settlement.settled_at < settlement.from
            || settlement.fires.iter().any(|(at, _)| *at <= settlement.from)
        {
            return Err(Error::InvalidInput(format!(
                "job {id}: a settlement moves forward from {}",
                settlement.from
            )));
        }
        let moved = query(
            "UPDATE jobs SET settled_at = $3, next_at = $4, skipped = skipped + $5, \
             updated_at = $6 WHERE id = $1 AND settled_at = $2",
        )
        .bind(id.as_bytes().to_vec())
        .bind(settlement.from.as_millis())
        .bind(settlement.settled_at.as_millis())
        .bind(settlement.next_at.map(|t| t.as_millis()))
        .bind(i64::try_from(settlement.skipped).unwrap_or(i64::MAX))
        .bind(self.now.as_millis())
        .execute(&mut *self.conn)
        .await?;
        if moved != 1 {
            return Ok(None);
        }
        let mut runs = Vec::with_capacity(settlement.fires.len());
        for (scheduled_at, event) in settlement.fires {
            if event.tenant != self.tenant {
                return Err(Error::InvalidInput("a job's envelope goes to its own tenant".into()));
            }
            let (accepted, _) = crate::turns::accept_in(self.conn, self.now, event).await?;
            // Keyed by the scheduled time: the same time cannot fire twice.
            query(
                "INSERT INTO job_runs (job_id, scheduled_at, fired_at, event_id) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id.as_bytes().to_vec())
            .bind(scheduled_at.as_millis())
            .bind(self.now.as_millis())
            .bind(accepted.event_id.as_bytes().to_vec())
            .execute(&mut *self.conn)
            .await?;
            let run = JobRun { scheduled_at, fired_at: self.now, event_id: accepted.event_id };
            runs.push((run, accepted));
        }
        Ok(Some(runs))
    }
}

impl Store {
    /// [`JobWrites::create`] as a unit of work of its own.
    pub async fn create_job(&self, new: NewJob) -> Result<JobRow> {
        let (row, _) = self
            .transact(new.tenant, move |work| {
                let new = new.clone();
                Box::pin(async move { work.jobs().create(new).await })
            })
            .await?;
        Ok(row)
    }

    /// [`JobWrites::settle`] as a unit of work of its own.
    pub async fn settle_job(
        &self,
        tenant: TenantId,
        id: clade_core::ExecutionId,
        settlement: Settlement,
    ) -> Result<Option<Vec<(JobRun, Accepted)>>> {
        let (runs, _) = self
            .transact(tenant, move |work| {
                let settlement = settlement.clone();
                Box::pin(async move { work.jobs().settle(id, settlement).await })
            })
            .await?;
        Ok(runs)
    }

    /// [`JobWrites::set_enabled`] as a unit of work of its own.
    pub async fn set_job_enabled(
        &self,
        tenant: TenantId,
        id: clade_core::ExecutionId,
        enabled: bool,
    ) -> Result<JobRow> {
        let (row, _) = self
            .transact(tenant, move |work| {
                Box::pin(async move { work.jobs().set_enabled(id, enabled).await })
            })
            .await?;
        Ok(row)
    }

    /// A tenant's jobs, by name.
    pub async fn jobs(&self, tenant: TenantId) -> Result<Vec<JobRow>> {
        let rows = self
            .rows(
                query(format!("SELECT {COLUMNS} FROM jobs WHERE tenant_id = $1 ORDER BY name, id"))
                    .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// A job's fires, oldest first.
    pub async fn job_runs(
        &self,
        tenant: TenantId,
        id: clade_core::ExecutionId,
    ) -> Result<Vec<JobRun>> {
        let rows = self
            .rows(
                query(
                    "SELECT r.scheduled_at, r.fired_at, r.event_id FROM job_runs r \
                     JOIN jobs j ON j.id = r.job_id WHERE r.job_id = $1 AND j.tenant_id = $2 \
                     ORDER BY r.scheduled_at",
                )
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(JobRun {
                    scheduled_at: Timestamp::from_millis(row.try_get("scheduled_at")?),
                    fired_at: Timestamp::from_millis(row.try_get("fired_at")?),
                    event_id: EventId::from_bytes(id_bytes(row, "event_id")?),
                })
            })
            .collect()
    }
}

/// The scheduler's read, across tenants (see [`SystemStore`]).
impl SystemStore {
    /// Enabled jobs due by `now`, of every tenant, soonest first.
    pub async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<JobRow>> {
        let rows = self
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM jobs WHERE enabled = 1 AND next_at <= $1 \
                     ORDER BY next_at, id LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(job_row).collect()
    }
}
