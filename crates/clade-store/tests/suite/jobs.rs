//! Scheduled jobs on both backends: a scheduled time fires once, with its envelope in the same
//! transaction, however many schedulers look at the job; nothing of one tenant's is reachable
//! from another.

use clade_core::{ExecutionId, ExecutionKind, ExecutionStatus, Handle, Timestamp};
use clade_store::{
    Error, ExecutionOwner, JobTarget, NewAgent, NewJob, RunOutcome, Settlement, fire_execution_id,
};

use super::harness::{backends, tenant_and_agent};

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
        target: JobTarget::Session(name.into()),
        jitter_secs: 0,
        prompt: name.into(),
        settled_at: minute(0),
        next_at: Some(first),
    }
}

/// Tenant `rival`, with an agent `ada` of its own.
async fn rival_ada(h: &super::harness::Harness) -> (clade_core::Tenant, clade_core::Agent) {
    let rival = h.store.tenants().create("rival").await.unwrap();
    let spec = NewAgent {
        handle: Handle::parse("ada").unwrap(),
        display_name: None,
        config: clade_core::AgentConfig::default(),
    };
    let agent = h.agents.create(rival.id, spec).await.unwrap();
    (rival, agent)
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
            fires: vec![minute(30)],
            skipped: 2,
            settled_at: minute(30),
            next_at: Some(minute(40)),
            max_queued: 1_000,
        };
        // Two schedulers (two handles on the store) settle the same look at once.
        let other = h.reopen().await.unwrap();
        let (first, second) = tokio::join!(
            h.store.jobs(tenant.id).settle(job.id, settlement.clone()),
            other.jobs(tenant.id).settle(job.id, settlement.clone()),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(first.is_some() != second.is_some(), "{}: {first:?} {second:?}", h.name);
        let runs = first.or(second).unwrap();
        assert_eq!(runs.len(), 1, "{}", h.name);
        let (run, delivered) = &runs[0];
        let accepted = delivered.envelope().unwrap();
        assert_eq!(run.scheduled_at, minute(30), "{}", h.name);
        assert!(!accepted.duplicate, "{}", h.name);
        // The envelope is an event like any other, waiting for its turn.
        let pending = h.store.system().pending_events(accepted.session_id).await.unwrap();
        assert_eq!(pending.len(), 1, "{}", h.name);
        assert_eq!(pending[0].id, accepted.event_id, "{}", h.name);

        // A late look from the old state writes nothing.
        let late = h.store.jobs(tenant.id).settle(job.id, settlement.clone()).await.unwrap();
        assert!(late.is_none(), "{}", h.name);
        assert_eq!(
            h.store.jobs(tenant.id).runs(job.id, None, 100).await.unwrap().len(),
            1,
            "{}",
            h.name
        );
        let stored = &h.store.jobs(tenant.id).list(None).await.unwrap()[0];
        assert_eq!(
            (stored.settled_at, stored.next_at, stored.skipped),
            (minute(30), Some(minute(40)), 2),
            "{}",
            h.name
        );
        assert_eq!(h.store.system().pending_events(accepted.session_id).await.unwrap().len(), 1);

        let rival = h.store.tenants().create("rival").await.unwrap();
        // The rival sees none of it, and cannot settle it.
        assert!(h.store.jobs(rival.id).list(None).await.unwrap().is_empty(), "{}", h.name);
        assert!(
            h.store.jobs(rival.id).runs(job.id, None, 100).await.unwrap().is_empty(),
            "{}",
            h.name
        );
        let foreign =
            Settlement { from: minute(30), fires: vec![minute(40)], ..settlement.clone() };
        let taken = h.store.jobs(rival.id).settle(job.id, foreign).await;
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
        let acme = h.store.tenants().create("acme").await.unwrap();
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
        h.store.agents(acme.id).delete("a1").await.unwrap();
        let due = h.store.system().due_jobs(minute(5), 10).await.unwrap();
        assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[1]], "{}", h.name);
        h.store.tenants().delete("acme").await.unwrap();
        assert!(h.store.system().due_jobs(minute(5), 10).await.unwrap().is_empty(), "{}", h.name);
    }
}

fn look(from: i64, fires: &[i64], max_queued: u64) -> Settlement {
    let last = *fires.last().unwrap_or(&from);
    Settlement {
        from: minute(from),
        fires: fires.iter().map(|m| minute(*m)).collect(),
        skipped: 0,
        settled_at: minute(last),
        next_at: Some(minute(last + 10)),
        max_queued,
    }
}

/// Each target delivers where it says: a session per fire, one named session, or the channel
/// the origin session was last active on. A fire the store refuses (too many events waiting)
/// leaves the job as it was, and is then settled as runs with the error: no scheduled time is
/// lost without a record.
#[tokio::test]
async fn fires_go_to_their_targets_and_refused_fires_are_runs() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let origin = super::harness::accept(&h.store, &tenant, &agent, "dm").await;
        let make = |name: &str, target: JobTarget| NewJob {
            target,
            ..job(tenant.id, agent.id, name, "*/10 * * * *", minute(10))
        };
        let each = h.store.create_job(make("each", JobTarget::New)).await.unwrap();
        let shared =
            h.store.create_job(make("shared", JobTarget::Session("standup".into()))).await.unwrap();
        let reply =
            h.store.create_job(make("reply", JobTarget::Origin(origin.session_id))).await.unwrap();
        assert_eq!(reply.target, JobTarget::Origin(origin.session_id), "{}", h.name);
        assert_eq!(reply.agent, "ada", "{}", h.name);

        let sessions = |runs: Vec<(clade_store::JobRun, clade_store::FireDelivery)>| {
            runs.iter().map(|(_, a)| a.envelope().unwrap().session_id).collect::<Vec<_>>()
        };
        let fired = h.store.jobs(tenant.id).settle(each.id, look(0, &[10, 20], 100)).await;
        let fired = sessions(fired.unwrap().unwrap());
        assert_ne!(fired[0], fired[1], "{}: `new` reused a session", h.name);
        let fired = h.store.jobs(tenant.id).settle(shared.id, look(0, &[10, 20], 100)).await;
        let fired = sessions(fired.unwrap().unwrap());
        assert_eq!(fired[0], fired[1], "{}", h.name);
        let standup = fired[0];
        let session = h.store.sessions(tenant.id).get(standup).await.unwrap();
        assert_eq!(
            (session.source.platform.as_str(), session.source.channel.as_str()),
            ("cron", "standup"),
            "{}",
            h.name
        );
        let fired = h.store.jobs(tenant.id).settle(reply.id, look(0, &[10], 100)).await;
        assert_eq!(sessions(fired.unwrap().unwrap()), [origin.session_id], "{}", h.name);
        let runs = h.store.jobs(tenant.id).runs(shared.id, None, 10).await.unwrap();
        assert_eq!(runs.len(), 2, "{}", h.name);
        assert_eq!(runs[0].scheduled_at, minute(20), "{}: newest first", h.name);
        assert!(runs.iter().all(|r| r.outcome == RunOutcome::Waiting), "{}: {runs:?}", h.name);

        // Back-pressure: the named session takes one waiting event at most, and it has two.
        let refused = h.store.jobs(tenant.id).settle(shared.id, look(20, &[30], 1)).await;
        assert!(matches!(refused, Err(Error::SessionBusy { .. })), "{}: {refused:?}", h.name);
        let stored = h.store.jobs(tenant.id).named(agent.id, "shared").await.unwrap();
        assert_eq!(stored.settled_at, minute(20), "{}: half a settlement was kept", h.name);
        let why = refused.unwrap_err().to_string();
        let runs = h
            .store
            .jobs(tenant.id)
            .settle_refused(shared.id, look(20, &[30], 1), why.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.len(), 1, "{}", h.name);
        let again =
            h.store.jobs(tenant.id).settle_refused(shared.id, look(20, &[30], 1), why.clone());
        assert!(again.await.unwrap().is_none(), "{}: a refused time settled twice", h.name);
        let runs = h.store.jobs(tenant.id).runs(shared.id, None, 10).await.unwrap();
        assert_eq!(runs.len(), 3, "{}", h.name);
        assert_eq!(runs[0].outcome, RunOutcome::Refused(why.clone()), "{}", h.name);
        assert!(runs[0].outcome.is_failure() && runs[0].event_id.is_none(), "{}", h.name);
        let stored = h.store.jobs(tenant.id).named(agent.id, "shared").await.unwrap();
        assert_eq!(stored.settled_at, minute(30), "{}", h.name);

        // Each fire is an execution, ended with the fire: a delivered one in the session it
        // went to, with its envelope as its output; a refused one failed, saying why.
        let executions = h.store.executions(tenant.id);
        let delivered = fire_execution_id(shared.id, minute(20));
        let run = executions.get(delivered).await.unwrap();
        assert_eq!(
            (run.kind, run.status, run.owner),
            (ExecutionKind::CronFire, ExecutionStatus::Completed, ExecutionOwner::Session(standup)),
            "{}",
            h.name
        );
        let event = runs[1].event_id.unwrap().to_string();
        assert!(run.output.unwrap().contains(&event), "{}", h.name);
        assert!(run.finished_at.is_some(), "{}", h.name);
        assert!(run.input.unwrap().contains("\"scheduled_at\""), "{}", h.name);
        let refused = fire_execution_id(shared.id, minute(30));
        let run = h.store.executions(tenant.id).get(refused).await.unwrap();
        assert_eq!(
            (run.status, run.owner, run.error.as_deref()),
            (ExecutionStatus::Failed, ExecutionOwner::Agent(agent.id), Some(why.as_str())),
            "{}",
            h.name
        );
        let listed = h.store.executions(tenant.id).list(100).await.unwrap();
        let fires = listed.iter().filter(|run| run.kind == ExecutionKind::CronFire).count();
        assert_eq!(fires, 6, "{}: each's two, shared's two and one refused, reply's one", h.name);

        // An origin must be a session of the job's own agent, in its own tenant.
        let (_, other) = tenant_and_agent(&h.store, &h.agents, "bob").await;
        let theirs =
            NewJob { agent: other.id, ..make("theirs", JobTarget::Origin(origin.session_id)) };
        let theirs = h.store.create_job(theirs).await;
        assert!(matches!(theirs, Err(Error::SessionNotFound(_))), "{}: {theirs:?}", h.name);
        let (rival, rivals) = rival_ada(&h).await;
        let stolen = NewJob {
            tenant: rival.id,
            agent: rivals.id,
            ..make("stolen", JobTarget::Origin(origin.session_id))
        };
        let stolen = h.store.create_job(stolen).await;
        assert!(matches!(stolen, Err(Error::SessionNotFound(_))), "{}: {stolen:?}", h.name);

        // Deleting a job deletes its runs, in its tenant only.
        let gone = h.store.jobs(rival.id).delete(shared.id).await;
        assert!(matches!(gone, Err(Error::JobNotFound(_))), "{}", h.name);
        let deleted = h.store.jobs(tenant.id).delete(shared.id).await.unwrap();
        assert_eq!(deleted.name, "shared", "{}", h.name);
        let runs = h.store.jobs(tenant.id).runs(shared.id, None, 10).await.unwrap();
        assert!(runs.is_empty(), "{}", h.name);
        // With their executions; another tenant's look for them finds nothing either way.
        for id in [delivered, refused] {
            let gone = h.store.executions(tenant.id).get(id).await;
            assert!(matches!(gone, Err(Error::ExecutionNotFound(_))), "{}: {gone:?}", h.name);
        }
        let kept = fire_execution_id(each.id, minute(10));
        assert!(h.store.executions(tenant.id).get(kept).await.is_ok(), "{}", h.name);
        let hidden = h.store.executions(rival.id).get(kept).await;
        assert!(matches!(hidden, Err(Error::ExecutionNotFound(_))), "{}: {hidden:?}", h.name);
    }
}

#[test]
fn targets_read_back_as_written_and_bad_ones_are_named() {
    let session = clade_core::SessionId::generate(minute(0));
    for target in [
        JobTarget::New,
        JobTarget::Session("standup".into()),
        JobTarget::Origin(session),
        JobTarget::Flow { name: "nightly".into(), version: None },
        JobTarget::Flow { name: "nightly".into(), version: Some(3) },
    ] {
        assert_eq!(JobTarget::parse(&target.to_string()), Ok(target));
    }
    for (bad, says) in [
        ("", "is not one of"),
        ("old", "is not one of"),
        ("session:", "1 to 128"),
        ("session:a b", "without spaces"),
        ("origin:nope", "is not a session id"),
        ("flow:", "is not a flow's name"),
        ("flow:Night Ly", "is not a flow's name"),
        ("flow:nightly@0", "is not a version"),
        ("flow:nightly@latest", "is not a version"),
    ] {
        let err = JobTarget::parse(bad).unwrap_err();
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

/// Several jobs settled in one transaction keep apart: one job's refused envelope settles it as
/// refused, one that another look moved is left alone, one of another tenant is not found, and
/// the rest still fire and commit. The circuit breaker's read then sees each job's newest runs
/// since it was last enabled, and no more of them than asked.
#[tokio::test]
async fn jobs_settled_together_keep_apart_and_their_newest_runs_read_back() {
    use clade_store::Settled;
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let make = |name: &str| job(tenant.id, agent.id, name, "*/10 * * * *", minute(10));
        let fires = h.store.create_job(make("fires")).await.unwrap();
        let busy = h.store.create_job(make("busy")).await.unwrap();
        let moved = h.store.create_job(make("moved")).await.unwrap();
        let (rival, rivals) = rival_ada(&h).await;
        let foreign = NewJob {
            tenant: rival.id,
            agent: rivals.id,
            ..job(rival.id, rivals.id, "foreign", "*/10 * * * *", minute(10))
        };
        let foreign = h.store.create_job(foreign).await.unwrap();
        // `busy` fills its session's queue first, so its next fire is refused.
        h.store.jobs(tenant.id).settle(busy.id, look(0, &[10], 100)).await.unwrap().unwrap();
        h.store.jobs(tenant.id).settle(moved.id, look(0, &[10], 100)).await.unwrap().unwrap();

        let outcomes = h
            .store
            .jobs(tenant.id)
            .settle_many(vec![
                (fires.id, look(0, &[10, 20], 100)),
                (busy.id, look(10, &[20], 1)),
                (moved.id, look(0, &[10], 100)),
                (foreign.id, look(0, &[10], 100)),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 4, "{}", h.name);
        assert!(
            matches!(&outcomes[0], Ok(Settled::Fired(runs)) if runs.len() == 2),
            "{}: {:?}",
            h.name,
            outcomes[0]
        );
        assert!(
            matches!(&outcomes[1], Ok(Settled::Refused { runs, why }) if runs.len() == 1 && why.contains("waiting")),
            "{}: {:?}",
            h.name,
            outcomes[1]
        );
        assert_eq!(outcomes[2].as_ref().ok(), Some(&Settled::Raced), "{}", h.name);
        assert!(matches!(outcomes[3], Err(Error::JobNotFound(_))), "{}: {:?}", h.name, outcomes[3]);

        let stored = h.store.jobs(tenant.id).named(agent.id, "fires").await.unwrap();
        assert_eq!(stored.settled_at, minute(20), "{}: the fires did not commit", h.name);
        let stored = h.store.jobs(tenant.id).named(agent.id, "busy").await.unwrap();
        assert_eq!(stored.settled_at, minute(20), "{}: the refusal did not settle", h.name);
        let stored = h.store.jobs(rival.id).named(rivals.id, "foreign").await.unwrap();
        assert_eq!(stored.settled_at, minute(0), "{}: another tenant's job moved", h.name);

        // The newest runs, at most two of each, newest first; a job without runs is absent.
        let recent = h
            .store
            .system()
            .recent_job_runs(&[fires.id, busy.id, moved.id, foreign.id], 2)
            .await
            .unwrap();
        let scheduled = |id: ExecutionId| {
            recent.get(&id).map(|runs| runs.iter().map(|r| r.scheduled_at).collect::<Vec<_>>())
        };
        assert_eq!(scheduled(fires.id), Some(vec![minute(20), minute(10)]), "{}", h.name);
        assert_eq!(scheduled(busy.id), Some(vec![minute(20), minute(10)]), "{}", h.name);
        assert_eq!(scheduled(moved.id), Some(vec![minute(10)]), "{}", h.name);
        assert_eq!(scheduled(foreign.id), None, "{}", h.name);
        assert!(recent[&busy.id][0].outcome.is_failure(), "{}", h.name);
        let one = h.store.system().recent_job_runs(&[fires.id], 1).await.unwrap();
        assert_eq!(one[&fires.id].len(), 1, "{}", h.name);

        // Runs from before the job was last enabled no longer count.
        // Enabled again only once the store's clock has moved past those runs.
        let ran = h.store.now();
        clade_test_support::wait::polled(async || h.store.now(), |now| *now > ran).await;
        h.store.jobs(tenant.id).set_enabled(busy.id, false, None).await.unwrap();
        h.store.jobs(tenant.id).set_enabled(busy.id, true, None).await.unwrap();
        let recent = h.store.system().recent_job_runs(&[busy.id], 5).await.unwrap();
        assert!(!recent.contains_key(&busy.id), "{}: {recent:?}", h.name);
    }
}
