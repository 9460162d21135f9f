//! A job as a person or an agent asks for it ([`JobSpec`]), checked and turned into what the
//! store keeps ([`new_job`]). The API, the CLI and the agents' `cron.*` tools all create jobs
//! through this, so a job is checked the same way whoever asks.

use std::collections::BTreeMap;

use clade_config::{Quotas, TenantConfig};
use clade_core::{AgentId, ExecutionId, TenantId, Timestamp};
use clade_store::{JobTarget, NewJob};

use crate::{Misfire, Schedule, ScheduleError, Zone};

/// The longest prompt a job may carry: it is sent with every fire.
pub const MAX_PROMPT_BYTES: usize = 16 * 1024;

/// The most jitter a job may have: an hour.
pub const MAX_JITTER_SECS: u32 = 3_600;

/// How far after `scheduled` a job with `jitter_secs` of jitter fires: the same for the same
/// job and time on every node and every look (a hash of both, not a random draw), so a
/// restart does not move a fire, and many jobs of one schedule spread over the window.
pub fn jitter_of(
    job: clade_core::ExecutionId,
    scheduled: Timestamp,
    jitter_secs: u32,
) -> Timestamp {
    if jitter_secs == 0 {
        return scheduled;
    }
    // SplitMix64 over the job's id and the scheduled time.
    let id = job.as_bytes();
    let mut x = u64::from_le_bytes([id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]])
        ^ scheduled.as_millis().unsigned_abs();
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let window = u64::from(jitter_secs) * 1_000 + 1;
    let offset = i64::try_from(x % window).unwrap_or(0);
    Timestamp::from_millis(scheduled.as_millis().saturating_add(offset))
}

/// A job as asked for: everything but its name and schedule has a default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// One job per name per agent: `[a-z0-9]` then `[a-z0-9_.-]`, at most 64.
    pub name: String,
    pub schedule: String,
    /// An IANA time zone; UTC when not given.
    pub zone: Option<String>,
    /// `skip`, `run_once` (the default) or `catch_up:<n>`.
    pub misfire: Option<String>,
    /// `new`, `session:<name>`, `origin:<session id>` or `flow:<name>[@<version>]`;
    /// `session:<job name>` when not given.
    pub target: Option<String>,
    /// Up to this many seconds (at most [`MAX_JITTER_SECS`]) added to each scheduled time.
    pub jitter_secs: Option<u32>,
    /// What the agent is told at every fire; for a flow target, the run's inputs as a JSON
    /// object (`{}` for none).
    pub prompt: String,
}

/// What is wrong with a [`JobSpec`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error(
        "job name {0:?}: use 1 to 64 of a-z, 0-9, `_`, `.` and `-`, starting with a letter or digit"
    )]
    Name(String),
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    #[error("{0}")]
    Target(String),
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("jitter of {0} s: at most {MAX_JITTER_SECS} s (an hour)")]
    Jitter(u32),
    #[error(
        "schedule {schedule:?} fires {gap} s apart at its closest; this agent's jobs fire at least {min} s apart ({key}): choose a sparser schedule"
    )]
    TooFrequent { schedule: String, gap: u64, min: u64, key: String },
    #[error(
        "the agent has {have} jobs and may have {most} ({key}): remove one first, or ask the operator for more"
    )]
    TooMany { have: usize, most: u64, key: String },
}

/// Every job error is the caller's to act on: a schedule, name or limit it can change.
impl clade_core::Fault for JobError {
    fn is_internal(&self) -> bool {
        false
    }
}

/// The shortest interval a tenant's job may fire at when its quotas say nothing: an agent is
/// not to wake itself every second.
pub const DEFAULT_MIN_INTERVAL_SECS: u64 = 60;

/// The most jobs an agent may have when its tenant's quotas say nothing.
pub const DEFAULT_JOBS_PER_AGENT: u64 = 100;

/// What the operator lets a tenant's jobs ask of the scheduler (`tenants.<name>.quotas`:
/// `cron_min_interval_secs`, `cron_jobs_per_agent`; `"*"` for every tenant without its own;
/// `tenants.<name>.agents.<handle>.quotas` for one agent apart).
/// They bind jobs the tenant's tokens and agents make; the operator's own are not bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLimits {
    pub min_interval_secs: u64,
    pub jobs_per_agent: u64,
    /// The clade.yaml key each limit comes from, for the refusal.
    interval_key: String,
    count_key: String,
}

impl JobLimits {
    /// The limits of the agent `handle` of the tenant named `tenant` under `tenants`
    /// (clade.yaml's `tenants`): the agent's own (`tenants.<name>.agents.<handle>.quotas`),
    /// else its tenant's, else `"*"`'s, else the defaults.
    pub fn of(tenants: &BTreeMap<String, TenantConfig>, tenant: &str, handle: &str) -> Self {
        let own = tenants.get(tenant).and_then(|t| t.agents.get(handle)).map(|a| a.quotas);
        let find = |pick: fn(&Quotas) -> Option<u64>, field: &str, default: u64| {
            for name in [tenant, "*"] {
                if let Some(value) =
                    tenants.get(name).and_then(|t| t.quotas.as_ref()).and_then(pick)
                {
                    let shown = if name == "*" { "\"*\"".to_owned() } else { name.to_owned() };
                    return (value, format!("tenants.{shown}.quotas.{field}"));
                }
            }
            (default, format!("the default; set tenants.{tenant}.quotas.{field} to change it"))
        };
        let agents = |field: &str| format!("tenants.{tenant}.agents.{handle}.quotas.{field}");
        let (min_interval_secs, interval_key) = match own.and_then(|q| q.cron_min_interval_secs) {
            Some(secs) => (secs, agents("cron_min_interval_secs")),
            None => find(
                |q| q.cron_min_interval_secs,
                "cron_min_interval_secs",
                DEFAULT_MIN_INTERVAL_SECS,
            ),
        };
        let (jobs_per_agent, count_key) = match own.and_then(|q| q.cron_jobs) {
            Some(jobs) => (jobs, agents("cron_jobs")),
            None => find(|q| q.cron_jobs_per_agent, "cron_jobs_per_agent", DEFAULT_JOBS_PER_AGENT),
        };
        Self { min_interval_secs, jobs_per_agent, interval_key, count_key }
    }

    /// Refuses `job` when it would fire more often than the tenant allows, or when its agent
    /// already has `owned` jobs, as many as the tenant allows.
    pub fn check(&self, job: &NewJob, owned: usize) -> Result<(), JobError> {
        self.check_count(owned)?;
        self.check_schedule(&job.schedule, &job.zone, job.settled_at)
    }

    /// Refuses a schedule that, in `zone`, would fire more often than the tenant allows (its
    /// shortest gap counted from `from`), or that cannot be read.
    pub fn check_schedule(
        &self,
        schedule: &str,
        zone: &str,
        from: Timestamp,
    ) -> Result<(), JobError> {
        let (parsed, zone) = (Schedule::parse(schedule)?, Zone::parse(zone)?);
        if let Some(gap) = parsed.shortest_gap(from, &zone)
            && gap.as_secs() < self.min_interval_secs
        {
            return Err(JobError::TooFrequent {
                schedule: schedule.to_owned(),
                gap: gap.as_secs(),
                min: self.min_interval_secs,
                key: self.interval_key.clone(),
            });
        }
        Ok(())
    }

    /// Refuses one more job for an agent that has `owned`, as many as the tenant allows.
    pub fn check_count(&self, owned: usize) -> Result<(), JobError> {
        if u64::try_from(owned).unwrap_or(u64::MAX) >= self.jobs_per_agent {
            return Err(JobError::TooMany {
                have: owned,
                most: self.jobs_per_agent,
                key: self.count_key.clone(),
            });
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// Checks `spec` and makes the job of `agent` it describes, counted from `now`: its first fire
/// is the first scheduled time after `now`. Refuses a schedule that never fires again.
pub fn new_job(
    spec: &JobSpec,
    tenant: TenantId,
    agent: AgentId,
    now: Timestamp,
) -> Result<NewJob, JobError> {
    if !valid_name(&spec.name) {
        return Err(JobError::Name(spec.name.clone()));
    }
    let schedule = Schedule::parse(&spec.schedule)?;
    let zone = Zone::parse(spec.zone.as_deref().unwrap_or("UTC"))?;
    let misfire = Misfire::parse(spec.misfire.as_deref().unwrap_or("run_once"))?;
    let target = match &spec.target {
        Some(text) => JobTarget::parse(text).map_err(JobError::Target)?,
        None => JobTarget::Session(spec.name.clone()),
    };
    if let JobTarget::Flow { .. } = target {
        let inputs = serde_json::from_str::<serde_json::Value>(&spec.prompt);
        if !inputs.as_ref().is_ok_and(serde_json::Value::is_object) {
            return Err(JobError::Prompt(
                "a job whose target is a flow carries the run's inputs as a JSON object, such as {\"topic\": \"rust\"} (or {} for none)".into(),
            ));
        }
    } else if spec.prompt.trim().is_empty() {
        return Err(JobError::Prompt("say what the agent is to do when the job fires".into()));
    }
    if spec.prompt.len() > MAX_PROMPT_BYTES {
        return Err(JobError::Prompt(format!(
            "{} bytes is more than the {MAX_PROMPT_BYTES} a job may carry",
            spec.prompt.len()
        )));
    }
    let jitter_secs = spec.jitter_secs.unwrap_or(0);
    if jitter_secs > MAX_JITTER_SECS {
        return Err(JobError::Jitter(jitter_secs));
    }
    let first = schedule.next_after(now, &zone).ok_or_else(|| ScheduleError::NeverFires {
        text: spec.schedule.clone(),
        reason: "no scheduled time is left after now".into(),
    })?;
    let id = ExecutionId::generate(now);
    Ok(NewJob {
        id,
        tenant,
        agent,
        name: spec.name.clone(),
        schedule: spec.schedule.trim().to_owned(),
        zone: zone.name().to_owned(),
        misfire: misfire.to_string(),
        target,
        jitter_secs,
        prompt: spec.prompt.clone(),
        settled_at: now,
        next_at: Some(jitter_of(id, first, jitter_secs)),
    })
}
