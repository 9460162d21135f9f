//! Heartbeats: the jobs `clade.yaml`'s `heartbeats` declares, one per agent, each with a prompt
//! of its own (a beat never depends on a file having content). Each start of `clade serve`
//! makes the store's heartbeat jobs what the file says ([`reconcile`]): missing ones created,
//! changed ones replaced, ones no longer declared removed, each audited as any job change is.
//! A heartbeat job is named [`HEARTBEAT_JOB`], a name no person or agent can give a job.

use std::collections::BTreeSet;

use clade_config::{Config, HeartbeatConfig};
use clade_core::{AgentRef, Timestamp};
use clade_store::{JobRow, NewJob, Store};

use crate::jobs::{JobSpec, new_job};

/// The name of every heartbeat job; the API, the CLI and the tools create no job so named.
pub const HEARTBEAT_JOB: &str = "_heartbeat";

/// What [`reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    /// Declared for agents that do not exist (yet): no heartbeat until the next start.
    pub missing: Vec<String>,
}

/// Why heartbeats could not be made what `clade.yaml` says.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("{}{problem}", if agent.is_empty() { String::new() } else { format!("heartbeats.{agent}: ") })]
    Invalid { agent: String, problem: String },
    #[error(transparent)]
    Store(#[from] clade_store::Error),
}

fn spec(beat: &HeartbeatConfig) -> JobSpec {
    JobSpec {
        // Checked as any job's name; the stored one is `HEARTBEAT_JOB`.
        name: "heartbeat".into(),
        schedule: beat.schedule.clone(),
        zone: beat.zone.clone(),
        misfire: Some("skip".into()),
        target: Some(beat.target.clone().unwrap_or_else(|| "session:heartbeat".into())),
        jitter_secs: beat.jitter_secs,
        prompt: beat.prompt.clone(),
    }
}

fn job_of(
    key: &str,
    beat: &HeartbeatConfig,
    tenant: clade_core::TenantId,
    agent: clade_core::AgentId,
    now: Timestamp,
) -> Result<NewJob, HeartbeatError> {
    let mut job = new_job(&spec(beat), tenant, agent, now)
        .map_err(|e| HeartbeatError::Invalid { agent: key.to_owned(), problem: e.to_string() })?;
    if matches!(job.target, clade_store::JobTarget::Origin(_)) {
        return Err(HeartbeatError::Invalid {
            agent: key.to_owned(),
            problem: "a heartbeat's target is `session:<name>` or `new`".into(),
        });
    }
    job.name = HEARTBEAT_JOB.to_owned();
    Ok(job)
}

/// Checks every declared heartbeat as a job (schedule, zone, target, jitter, prompt), without
/// a store: `clade config validate` and the start of `clade serve` refuse a file that fails.
pub fn check(config: &Config, now: Timestamp) -> Result<(), HeartbeatError> {
    let nobody = (clade_core::TenantId::generate(now), clade_core::AgentId::generate(now));
    for (key, beat) in &config.heartbeats {
        job_of(key, beat, nobody.0, nobody.1, now)?;
    }
    Ok(())
}

fn same(stored: &JobRow, wanted: &NewJob) -> bool {
    stored.schedule == wanted.schedule
        && stored.zone == wanted.zone
        && stored.misfire == wanted.misfire
        && stored.target == wanted.target
        && stored.jitter_secs == wanted.jitter_secs
        && stored.prompt == wanted.prompt
}

/// Makes the store's heartbeat jobs what `config` declares (see the module's documentation).
pub async fn reconcile(store: &Store, config: &Config) -> Result<Reconciled, HeartbeatError> {
    check(config, store.now())?;
    let mut done = Reconciled::default();
    let mut declared = BTreeSet::new();
    for (key, beat) in &config.heartbeats {
        let reference = AgentRef::parse(key)
            .map_err(|e| HeartbeatError::Invalid { agent: key.clone(), problem: e.to_string() })?;
        let tenant = match store.tenants().named(reference.tenant.as_str()).await {
            Ok(tenant) => tenant,
            Err(clade_store::Error::TenantNotFound(_)) => {
                done.missing.push(key.clone());
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let agent = match store.agents(tenant.id).get(reference.handle.as_str()).await {
            Ok(agent) => agent,
            Err(clade_store::Error::AgentNotFound(_)) => {
                done.missing.push(key.clone());
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        declared.insert((tenant.id, agent.id));
        let wanted = job_of(key, beat, tenant.id, agent.id, store.now())?;
        match store.jobs(tenant.id).named(agent.id, HEARTBEAT_JOB).await {
            Ok(stored) if same(&stored, &wanted) => done.kept.push(key.clone()),
            Ok(stored) => {
                store.jobs(tenant.id).delete(stored.id).await?;
                store.create_job(wanted).await?;
                done.replaced.push(key.clone());
            }
            Err(clade_store::Error::JobNotFound(_)) => {
                store.create_job(wanted).await?;
                done.created.push(key.clone());
            }
            Err(err) => return Err(err.into()),
        }
    }
    for job in store.system().jobs_named(HEARTBEAT_JOB).await? {
        if !declared.contains(&(job.tenant_id, job.agent_id)) {
            store.jobs(job.tenant_id).delete(job.id).await?;
            done.removed.push(job.agent.clone());
        }
    }
    Ok(done)
}
