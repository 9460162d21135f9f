//! One look at the jobs that are due: what each fires, committed through the store.
//!
//! A look reads the due jobs of every tenant, decides each one's fires from its stored text
//! ([`plan`]), and commits them with the job's new settled time ([`clade_store::JobWrites::settle`]):
//! a look that raced another (two nodes, or a restart that looked again) finds the job settled
//! and writes nothing. Waking the sessions that received envelopes is its caller's.

use std::time::Duration;

use clade_core::{ExecutionId, SessionId, Timestamp};
use clade_store::{JobRow, NewEvent, Settlement, Source, Store};

use crate::{Misfire, Schedule, ScheduleError, Zone};

/// What one look did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    /// Jobs it settled.
    pub settled: usize,
    /// Envelopes it fired.
    pub fired: usize,
    /// Scheduled times it skipped under their jobs' policies.
    pub skipped: u64,
    /// Jobs another look had settled first.
    pub raced: usize,
    /// Sessions that received envelopes, to wake.
    pub sessions: Vec<SessionId>,
    /// Jobs whose stored schedule could not be read, disabled, with why.
    pub disabled: Vec<(ExecutionId, String)>,
    /// Jobs whose settlement failed (their envelope refused, say), with why: they stay due,
    /// and one job's failure never holds up another's, least of all another tenant's.
    pub failed: Vec<(ExecutionId, String)>,
}

/// The settlement of one due job at `now`, from its stored schedule, zone and policy; the
/// envelopes go to `agent` (its handle), from platform `cron`, channel the job's name.
pub fn plan(
    job: &JobRow,
    agent: &str,
    now: Timestamp,
    grace: Duration,
) -> Result<Settlement, ScheduleError> {
    let schedule = Schedule::parse(&job.schedule)?;
    let zone = Zone::parse(&job.zone)?;
    let misfire = Misfire::parse(&job.misfire)?;
    let due = misfire.due(&schedule, &zone, job.settled_at, now, grace);
    let fires = due
        .fire
        .iter()
        .map(|at| {
            let event = NewEvent {
                tenant: job.tenant_id,
                agent: agent.to_owned(),
                source: Source {
                    platform: "cron".into(),
                    channel: job.name.clone(),
                    actor: "scheduler".into(),
                },
                text: job.prompt.clone(),
                // The scheduled time names the fire.
                idempotency_key: Some(format!("cron:{}:{}", job.id, at.as_millis())),
                payload_hash: format!("cron:{}", job.id),
                max_open_per_session: u64::MAX,
            };
            (*at, event)
        })
        .collect();
    Ok(Settlement {
        from: job.settled_at,
        fires,
        skipped: due.skipped,
        settled_at: due.settled,
        next_at: due.next,
    })
}

/// Looks at up to `limit` jobs due at `now`, and commits what each fires.
pub async fn look(
    store: &Store,
    now: Timestamp,
    grace: Duration,
    limit: u32,
) -> Result<Look, clade_store::Error> {
    let mut look = Look::default();
    for job in store.system().due_jobs(now, limit).await? {
        let agent = match store.agent_by_id(job.tenant_id, job.agent_id).await {
            Ok(agent) => agent,
            Err(err) => {
                look.failed.push((job.id, err.to_string()));
                continue;
            }
        };
        let settlement = match plan(&job, agent.handle.as_str(), now, grace) {
            Ok(settlement) => settlement,
            Err(err) => {
                // It would be due at every look, and never fire.
                store.set_job_enabled(job.tenant_id, job.id, false).await?;
                look.disabled.push((job.id, err.to_string()));
                continue;
            }
        };
        let skipped = settlement.skipped;
        let settled = match store.settle_job(job.tenant_id, job.id, settlement).await {
            Ok(settled) => settled,
            Err(err) => {
                look.failed.push((job.id, err.to_string()));
                continue;
            }
        };
        match settled {
            Some(runs) => {
                look.settled += 1;
                look.fired += runs.len();
                look.skipped += skipped;
                look.sessions.extend(runs.iter().map(|(_, accepted)| accepted.session_id));
            }
            None => look.raced += 1,
        }
    }
    look.sessions.sort();
    look.sessions.dedup();
    Ok(look)
}
