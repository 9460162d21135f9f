//! Scheduled jobs on both backends: a scheduled time fires once, with its envelope in the same
//! transaction, however many schedulers look at the job; nothing of one tenant's is reachable
//! from another.

use clade_core::{ExecutionId, Handle, Timestamp};
use clade_store::{Error, NewAgent, NewEvent, NewJob, Settlement, Source};

use super::harness::{backends, tenant_and_agent};

fn envelope(tenant: clade_core::TenantId, agent: &str, job: &str, at: Timestamp) -> NewEvent {
    NewEvent {
        tenant,
        agent: agent.into(),
        source: Source { platform: "cron".into(), channel: job.into(), actor: "scheduler".into() },
        text: "time for the digest".into(),
        // The scheduled time names the fire: a repeated attempt is the same event.
        idempotency_key: Some(format!("cron:{job}:{}", at.as_millis())),
        payload_hash: "digest".into(),
        max_open_per_session: 1_000,
    }
}

/// A job of `agent`, counted from minute 0, first due at `first`.
fn job(
    tenant: clade_core::TenantId,
    agent: clade_core::AgentId,
    name: &str,
    schedule: &str,
    first: Timestamp,
) -> NewJob {
    NewJob {
        id: ExecutionId::generate(first),
        tenant,
        agent,
        name: name.into(),
        schedule: schedule.into(),
        zone: "UTC".into(),
        misfire: "run_once".into(),
        prompt: name.into(),
        settled_at: minute(0),
        next_at: Some(first),
    }
}

fn minute(n: i64) -> Timestamp {
    Timestamp::from_millis(1_795_000_000_000 + n * 60_000)
}

#[tokio::test]
async fn a_scheduled_time_fires_once_with_its_envelope() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let job = job(tenant.id, agent.id, "digest", "*/10 * * * *", minute(10));
        let created = h.store.create_job(job.clone()).await.unwrap();
        assert!(created.enabled, "{}", h.name);
        let again = h
            .store
            .create_job(NewJob { id: ExecutionId::generate(h.store.now()), ..job.clone() })
            .await;
        assert!(matches!(again, Err(Error::JobExists(_))), "{}: {again:?}", h.name);

        let due = h.store.system().due_jobs(minute(9), 10).await.unwrap();
        assert!(due.is_empty(), "{}: due before its time", h.name);
        let due = h.store.system().due_jobs(minute(35), 10).await.unwrap();
        assert_eq!(due.len(), 1, "{}", h.name);

        // Down from 0 to 35: 10 and 20 missed and skipped, 30 fires (run once).
        let settlement = Settlement {
            from: minute(0),
            fires: vec![(minute(30), envelope(tenant.id, "ada", "digest", minute(30)))],
            skipped: 2,
            settled_at: minute(30),
            next_at: Some(minute(40)),
        };
        // Two schedulers (two handles on the store) settle the same look at once.
        let other = h.reopen().await.unwrap();
        let (first, second) = tokio::join!(
            h.store.settle_job(tenant.id, job.id, settlement.clone()),
            other.settle_job(tenant.id, job.id, settlement.clone()),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(first.is_some() != second.is_some(), "{}: {first:?} {second:?}", h.name);
        let runs = first.or(second).unwrap();
        assert_eq!(runs.len(), 1, "{}", h.name);
        let (run, accepted) = &runs[0];
        assert_eq!(run.scheduled_at, minute(30), "{}", h.name);
        assert!(!accepted.duplicate, "{}", h.name);
        // The envelope is an event like any other, waiting for its turn.
        let pending = h.store.system().pending_events(accepted.session_id).await.unwrap();
        assert_eq!(pending.len(), 1, "{}", h.name);
        assert_eq!(pending[0].id, accepted.event_id, "{}", h.name);

        // A late look from the old state writes nothing.
        let late = h.store.settle_job(tenant.id, job.id, settlement.clone()).await.unwrap();
        assert!(late.is_none(), "{}", h.name);
        assert_eq!(h.store.job_runs(tenant.id, job.id).await.unwrap().len(), 1, "{}", h.name);
        let stored = &h.store.jobs(tenant.id).await.unwrap()[0];
        assert_eq!(
            (stored.settled_at, stored.next_at, stored.skipped),
            (minute(30), Some(minute(40)), 2),
            "{}",
            h.name
        );
        assert_eq!(h.store.system().pending_events(accepted.session_id).await.unwrap().len(), 1);

        // A settlement that fails late leaves the job as it was: the envelope went to another
        // tenant, so nothing of it is kept, not even the moved settled time.
        let rival = h.store.create_tenant("rival").await.unwrap();
        let crossed = Settlement {
            from: minute(30),
            fires: vec![(minute(40), envelope(rival.id, "ada", "digest", minute(40)))],
            skipped: 0,
            settled_at: minute(40),
            next_at: Some(minute(50)),
        };
        let refused = h.store.settle_job(tenant.id, job.id, crossed).await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{}: {refused:?}", h.name);
        let stored = &h.store.jobs(tenant.id).await.unwrap()[0];
        assert_eq!(stored.settled_at, minute(30), "{}: half a settlement was kept", h.name);

        // The rival sees none of it, and cannot settle it.
        assert!(h.store.jobs(rival.id).await.unwrap().is_empty(), "{}", h.name);
        assert!(h.store.job_runs(rival.id, job.id).await.unwrap().is_empty(), "{}", h.name);
        let foreign = Settlement { from: minute(30), ..settlement.clone() };
        let taken = h.store.settle_job(rival.id, job.id, foreign).await;
        assert!(matches!(taken, Err(Error::JobNotFound(_))), "{}: {taken:?}", h.name);
        // Nor create a job for the owner's agent.
        let borrowed =
            NewJob { id: ExecutionId::generate(h.store.now()), tenant: rival.id, ..job.clone() };
        let borrowed = h.store.create_job(borrowed).await;
        assert!(matches!(borrowed, Err(Error::AgentNotFound(_))), "{}: {borrowed:?}", h.name);
    }
}

#[tokio::test]
async fn deleting_a_tenant_or_agent_deletes_its_jobs() {
    for h in backends().await {
        let acme = h.store.create_tenant("acme").await.unwrap();
        let mut ids = Vec::new();
        for handle in ["a1", "a2"] {
            let spec = NewAgent {
                handle: Handle::parse(handle).unwrap(),
                display_name: None,
                config: clade_core::AgentConfig::default(),
            };
            let agent = h.agents.create(acme.id, spec).await.unwrap();
            let job = job(acme.id, agent.id, "tick", "@every 1m", minute(1));
            ids.push(h.store.create_job(job).await.unwrap().id);
        }
        assert_eq!(h.store.system().due_jobs(minute(5), 10).await.unwrap().len(), 2);
        h.store.delete_agent(acme.id, "a1").await.unwrap();
        let due = h.store.system().due_jobs(minute(5), 10).await.unwrap();
        assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[1]], "{}", h.name);
        h.store.delete_tenant("acme").await.unwrap();
        assert!(h.store.system().due_jobs(minute(5), 10).await.unwrap().is_empty(), "{}", h.name);
    }
}
