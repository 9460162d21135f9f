//! The scheduler's looks over a real store (SQLite, and PostgreSQL when reachable), in
//! simulated time: across daylight-saving changes, outages, restarts and two schedulers
//! looking at once, every scheduled time of every job is settled once, fired or skipped, and
//! each fire's envelope is stored once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // Test code.

use std::time::Duration;

use clade_core::{AgentConfig, ExecutionId, Handle, Tenant, Timestamp};
use clade_sched::scheduler::{LookOptions, look};
use clade_sched::{Schedule, Zone};
use clade_store::{
    Agents, DataDir, Durability, JobTarget, Location, NewAgent, NewJob, RunOutcome, Store,
    StoreOptions,
};
use clade_test_support::wait::{holds_for, polled_within};

async fn open(location: &Location) -> Store {
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..StoreOptions::new(location.clone(), Durability::Normal)
    };
    Store::open(options).await.unwrap()
}

/// A fresh SQLite store with `handles` as agents of the default tenant; the directory lives as
/// long as the returned guard.
async fn with_agents(
    handles: &[&str],
) -> (tempfile::TempDir, Location, Store, Tenant, Vec<clade_core::AgentId>) {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
    let location = Location::Sqlite(data_dir.sqlite_path());
    let store = open(&location).await;
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
    let agents = Agents::new(store.clone(), data_dir);
    let mut ids = Vec::new();
    for handle in handles {
        let spec = NewAgent {
            handle: Handle::parse(handle).unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        ids.push(agents.create(tenant.id, spec).await.unwrap().id);
    }
    (tmp, location, store, tenant, ids)
}

const JOBS: [(&str, &str, &str); 8] = [
    ("*/7 * * * *", "UTC", "skip"),
    ("0 9 * * MON-FRI", "Europe/Berlin", "run_once"),
    ("30 2 * * *", "Europe/Berlin", "catch_up:3"),
    ("@every 13m", "UTC", "catch_up:2"),
    ("15 */3 * * *", "America/New_York", "skip"),
    ("*/5 * * * *", "Europe/Berlin", "run_once"),
    ("0 0 29 2 *", "UTC", "run_once"),
    ("20 */2 * * * *", "UTC", "catch_up:1"),
];

/// A small deterministic generator: the test replays the same history every run.
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test]
async fn every_scheduled_time_fires_or_is_skipped_once_across_restarts_and_races() {
    let schema = clade_test_support::PgSchema::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
    let mut locations = vec![("sqlite", Location::Sqlite(data_dir.sqlite_path()))];
    if let Some(schema) = &schema {
        locations.push(("postgres", Location::Postgres(schema.url().to_owned())));
    }
    for (name, location) in locations {
        let mut store = open(&location).await;
        let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let agents = Agents::new(store.clone(), data_dir.clone());
        let spec = NewAgent {
            handle: Handle::parse(&format!("ada-{name}")).unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let agent = agents.create(tenant.id, spec).await.unwrap();
        // Closing the store waits for its other handles.
        drop(agents);
        // Friday 2026-03-27: Europe changes its clocks on Sunday, America has already.
        let start = Timestamp::from_millis(1_774_569_600_000);
        let mut ids = Vec::new();
        for (i, (schedule, zone, misfire)) in JOBS.iter().enumerate() {
            let parsed = Schedule::parse(schedule).unwrap();
            let next = parsed.next_after(start, &Zone::parse(zone).unwrap());
            let job = NewJob {
                id: ExecutionId::generate(start),
                tenant: tenant.id,
                agent: agent.id,
                name: format!("job-{i}"),
                schedule: (*schedule).into(),
                zone: (*zone).into(),
                misfire: (*misfire).into(),
                target: JobTarget::Session(format!("job-{i}")),
                jitter_secs: 0,
                prompt: format!("job {i}"),
                settled_at: start,
                next_at: next,
            };
            ids.push(store.create_job(job).await.unwrap().id);
        }
        // A job whose stored schedule cannot be read is disabled by the first look at it.
        let broken = NewJob {
            id: ExecutionId::generate(start),
            tenant: tenant.id,
            agent: agent.id,
            name: "broken".into(),
            schedule: "61 * * * *".into(),
            zone: "UTC".into(),
            misfire: "skip".into(),
            target: JobTarget::New,
            jitter_secs: 0,
            prompt: "never".into(),
            settled_at: start,
            next_at: Some(start),
        };
        let broken = store.create_job(broken).await.unwrap().id;

        // Nothing runs the envelopes here: let them pile up.
        let options = LookOptions {
            grace: Duration::from_secs(60),
            limit: 100,
            max_queued: 100_000,
            max_failures: 5,
            batch: 16,
            concurrency: 8,
        };
        let mut steps = Steps(0x9e37_79b9_7f4a_7c15);
        let mut now = start.as_millis();
        let end = start.as_millis() + 3 * 86_400_000;
        let (mut restarts, mut races, mut disabled) = (0, 0, Vec::new());
        while now < end {
            // Mostly a look every few minutes; now and then an outage of hours.
            now += if steps.next(20) == 0 {
                (3_600 + steps.next(11 * 3_600)) as i64 * 1000
            } else {
                (1 + steps.next(20 * 60)) as i64 * 1000
            };
            let at = Timestamp::from_millis(now);
            match steps.next(10) {
                0 => {
                    // A restart: the process goes, another opens the store.
                    store.close().await;
                    store = open(&location).await;
                    restarts += 1;
                }
                1 => {
                    // Two schedulers (two nodes) look at once.
                    let other = open(&location).await;
                    let (a, b) = tokio::join!(look(&store, at, options), look(&other, at, options));
                    let (a, b) = (a.unwrap(), b.unwrap());
                    races += a.raced + b.raced;
                    disabled.extend(a.disabled.into_iter().chain(b.disabled).map(|(id, _)| id));
                    other.close().await;
                    continue;
                }
                _ => {}
            }
            let looked = look(&store, at, options).await.unwrap();
            disabled.extend(looked.disabled.into_iter().map(|(id, _)| id));
        }
        assert!(restarts > 5, "{name}: the history had {restarts} restarts");
        assert!(races > 0, "{name}: no two looks ever raced");
        assert_eq!(disabled, [broken], "{name}");

        let jobs = store.jobs(tenant.id).list(None).await.unwrap();
        let mut envelopes = 0;
        for (i, id) in ids.iter().enumerate() {
            let (schedule, zone, _) = JOBS[i];
            let job = jobs.iter().find(|j| j.id == *id).unwrap();
            let schedule = Schedule::parse(schedule).unwrap();
            let all =
                schedule.fires_between(start, job.settled_at, &Zone::parse(zone).unwrap(), 100_000);
            let runs = store.jobs(tenant.id).runs(*id, None, 100_000).await.unwrap();
            assert!(
                runs.windows(2).all(|w| w[0].scheduled_at > w[1].scheduled_at),
                "{name}: job {i} fired a time twice"
            );
            assert!(
                runs.iter().all(|r| all.contains(&r.scheduled_at)),
                "{name}: job {i} fired off its schedule"
            );
            assert_eq!(
                runs.len() as u64 + job.skipped,
                all.len() as u64,
                "{name}: job {i} ({}) left times unaccounted",
                job.schedule
            );
            envelopes += runs.len();
        }
        // Each fire's envelope is stored once: nothing ran them, so all are still pending.
        let sessions = store.sessions(tenant.id).list(Some(agent.id), 100).await.unwrap();
        let mut pending = 0;
        for session in sessions {
            pending += store.system().pending_events(session.id).await.unwrap().len();
        }
        assert_eq!(pending, envelopes, "{name}");
        assert!(envelopes > 100, "{name}: only {envelopes} fires");
        store.close().await;
    }
}

/// A tenant that takes the key its own job's next envelope will use (so that envelope is
/// refused as a conflicting duplicate) makes only that fire fail, recorded as a refused run:
/// the look goes on, and another tenant's job fires.
#[tokio::test]
async fn one_jobs_failure_holds_up_no_other_tenants_job() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
    let store = open(&Location::Sqlite(data_dir.sqlite_path())).await;
    let agents = Agents::new(store.clone(), data_dir.clone());
    let start = Timestamp::from_millis(1_774_569_600_000);
    let first = Timestamp::from_millis(start.as_millis() + 60_000);
    let mut jobs = Vec::new();
    for tenant_name in ["mallory", "default"] {
        let tenant = match store.tenants().named(tenant_name).await {
            Ok(tenant) => tenant,
            Err(_) => store.tenants().create(tenant_name).await.unwrap(),
        };
        let spec = NewAgent {
            handle: Handle::parse("ada").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let agent = agents.create(tenant.id, spec).await.unwrap();
        let job = NewJob {
            id: ExecutionId::generate(start),
            tenant: tenant.id,
            agent: agent.id,
            name: "tick".into(),
            schedule: "* * * * *".into(),
            zone: "UTC".into(),
            misfire: "skip".into(),
            target: JobTarget::Session("tick".into()),
            jitter_secs: 0,
            prompt: "tick".into(),
            settled_at: start,
            next_at: Some(first),
        };
        jobs.push((tenant, store.create_job(job).await.unwrap().id));
    }
    drop(agents);
    let (mallory, stalled) = &jobs[0];
    store
        .turns()
        .accept(clade_store::NewEvent {
            tenant: mallory.id,
            agent: "ada".into(),
            source: clade_store::Source {
                platform: "api".into(),
                channel: "c".into(),
                actor: "m".into(),
            },
            text: "taken".into(),
            idempotency_key: Some(format!("cron:{stalled}:{}", first.as_millis())),
            payload_hash: "something else".into(),
            max_open_per_session: 100,
        })
        .await
        .unwrap();

    let at = Timestamp::from_millis(first.as_millis() + 10_000);
    let looked = look(&store, at, LookOptions::default()).await.unwrap();
    assert!(looked.failed.is_empty(), "{looked:?}");
    assert_eq!((looked.fired, looked.refused, looked.settled), (1, 1, 2), "{looked:?}");
    let (default, fired) = &jobs[1];
    assert_eq!(store.jobs(default.id).runs(*fired, None, 10).await.unwrap().len(), 1);
    let runs = store.jobs(mallory.id).runs(*stalled, None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(
        matches!(&runs[0].outcome, RunOutcome::Refused(why) if why.contains("idempotency")),
        "{runs:?}"
    );
    store.close().await;
}

/// Waits (in real time, up to ten seconds) until `done` holds.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (within, every) = (Duration::from_secs(10), Duration::from_millis(10));
    let happened = polled_within(within, every, async || done().await, |&held| held).await;
    assert!(happened, "{what} never happened");
}

/// The scheduler as a service, on a manual clock: it fires a job when the clock reaches its
/// time and not before, and wakes the session it delivered to. A job whose envelopes keep being
/// refused (its session has too many waiting) is disabled after three failed runs in a row,
/// with an audit record saying why; enabled again, its count starts afresh.
#[tokio::test]
async fn the_scheduler_fires_on_its_clock_and_disables_a_job_that_keeps_failing() {
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
    let start = Timestamp::from_millis(1_774_569_600_000);
    let clock = Arc::new(clade_core::ManualClock::new(start));
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        clock: clock.clone(),
        ..StoreOptions::new(Location::Sqlite(data_dir.sqlite_path()), Durability::Normal)
    };
    let store = Store::open(options).await.unwrap();
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
    let agents = Agents::new(store.clone(), data_dir.clone());
    let spec = NewAgent {
        handle: Handle::parse("ada").unwrap(),
        display_name: None,
        config: AgentConfig::default(),
    };
    let agent = agents.create(tenant.id, spec).await.unwrap();
    drop(agents);
    let spec = clade_sched::JobSpec {
        name: "tick".into(),
        schedule: "* * * * *".into(),
        prompt: "tick".into(),
        ..Default::default()
    };
    let job = store.create_job(clade_sched::new_job(&spec, tenant.id, agent.id, start).unwrap());
    let job = job.await.unwrap();
    assert_eq!(job.next_at, Some(Timestamp::from_millis(start.as_millis() + 60_000)));

    let woken = Arc::new(Mutex::new(Vec::new()));
    let wake = {
        let woken = woken.clone();
        Arc::new(move |look: &clade_sched::scheduler::Look| {
            woken.lock().unwrap().extend_from_slice(&look.sessions);
        })
    };
    let look = LookOptions {
        grace: Duration::from_secs(60),
        limit: 100,
        max_queued: 1,
        max_failures: 3,
        batch: 4,
        concurrency: 4,
    };
    // A poll of a day: only the job's own time wakes it.
    let scheduler = clade_sched::scheduler::Scheduler::new(store.clone(), look, wake)
        .with_poll(Duration::from_secs(86_400));
    let poke = scheduler.poke();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(async {
        let _ = stopped.await;
    }));
    let runs = || async { store.jobs(tenant.id).runs(job.id, None, 100).await.unwrap() };

    clock.advance(Duration::from_secs(59));
    let early = Duration::from_millis(200);
    holds_for(early, "fired before its time", async || runs().await, |r| r.is_empty()).await;
    clock.advance(Duration::from_secs(1));
    eventually("the first fire", || async { runs().await.len() == 1 }).await;
    let first = runs().await;
    assert_eq!(first[0].outcome, RunOutcome::Waiting);
    let session =
        store.sessions(tenant.id).event(first[0].event_id.unwrap()).await.unwrap().session_id;
    let addressed = (tenant.id, session);
    eventually("the wake-up", || async { woken.lock().unwrap().contains(&addressed) }).await;

    // Nothing runs the first envelope: every later one finds the session full.
    for n in 2..=4 {
        clock.advance(Duration::from_secs(60));
        eventually("a refused fire", || async { runs().await.len() == n }).await;
    }
    let refused = runs().await;
    assert!(refused[..3].iter().all(|r| r.outcome.is_failure()), "{refused:?}");
    clock.advance(Duration::from_secs(60));
    let enabled = || async { store.jobs(tenant.id).list(None).await.unwrap()[0].enabled };
    eventually("the breaker", || async { !enabled().await }).await;
    let disabled = store.jobs(tenant.id).list(None).await.unwrap().remove(0);
    let reason = disabled.disabled_reason.unwrap();
    assert!(reason.contains("last 3 runs failed"), "{reason}");
    assert_eq!(runs().await.len(), 4, "a tripped job fired again");
    let filter = clade_store::AuditFilter { limit: 100, ..Default::default() };
    let audit = store.access(tenant.id).audit_records(&filter).await.unwrap();
    let record = audit.iter().find(|r| r.kind == "job.disabled").expect("no audit record");
    assert!(record.detail.contains("last 3 runs failed"), "{}", record.detail);
    // Subscribers are told, in the same transaction: a lifecycle event of no session.
    let outbox = store.system().outbox_after(0, 1_000).await.unwrap();
    let event = outbox.iter().find(|r| r.kind == clade_core::EventKind::JobDisabled);
    let event = event.expect("no job.disabled lifecycle event");
    assert!(event.session_id.is_none() && event.data.contains("last 3 runs failed"), "{event:?}");
    assert!(event.data.contains(&job.id.to_string()), "{}", event.data);

    // Enabled again, the minute that passed fires (run once) and is refused: one failure, not
    // three in a row, so the job stays enabled.
    store.jobs(tenant.id).set_enabled(job.id, true, None).await.unwrap();
    poke.notify_one();
    eventually("the fire after enabling", || async { runs().await.len() == 5 }).await;
    clock.advance(Duration::from_secs(60));
    eventually("the next fire", || async { runs().await.len() == 6 }).await;
    assert!(enabled().await, "the count of failures did not start afresh");

    stop.send(()).unwrap();
    task.await.unwrap();
    store.close().await;
}

/// Each start makes the heartbeat jobs what `clade.yaml` declares: created, kept when
/// unchanged (with their history), replaced when changed, removed when no longer declared;
/// declared for a missing agent, reported; a bad one refused naming it, changing nothing.
#[tokio::test]
async fn heartbeats_are_kept_as_the_configuration_declares() {
    use clade_sched::heartbeats::{HEARTBEAT_JOB, reconcile};
    let (_tmp, _, store, tenant, ids) = with_agents(&["ada", "bo"]).await;
    let config = |yaml: &str| {
        let config = clade_config::Config::parse(yaml, std::path::Path::new("clade.yaml")).unwrap();
        config.check(std::path::Path::new("clade.yaml")).unwrap();
        config
    };
    let both = config(
        "heartbeats:\n  ada: { prompt: \"check the inbox\" }\n  \
         bo: { schedule: \"0 9 * * *\", zone: Europe/Berlin, prompt: \"plan the day\" }\n  \
         ghost: { prompt: \"boo\" }\n",
    );
    let first = reconcile(&store, &both).await.unwrap();
    assert_eq!(first.created, ["ada", "bo"]);
    assert_eq!(first.missing, ["ghost"]);
    let ada = store.jobs(tenant.id).named(ids[0], HEARTBEAT_JOB).await.unwrap();
    assert_eq!((ada.schedule.as_str(), ada.prompt.as_str()), ("@every 30m", "check the inbox"));
    assert_eq!(ada.target, JobTarget::Session("heartbeat".into()));

    let again = reconcile(&store, &both).await.unwrap();
    assert_eq!(again.kept, ["ada", "bo"]);
    assert_eq!(store.jobs(tenant.id).named(ids[0], HEARTBEAT_JOB).await.unwrap().id, ada.id);

    let changed =
        config("heartbeats:\n  ada: { schedule: \"@hourly\", prompt: \"check the inbox\" }\n");
    let third = reconcile(&store, &changed).await.unwrap();
    assert_eq!((third.replaced, third.removed), (vec!["ada".to_owned()], vec!["bo".to_owned()]));
    let ada = store.jobs(tenant.id).named(ids[0], HEARTBEAT_JOB).await.unwrap();
    assert_eq!(ada.schedule, "@hourly");
    assert!(store.jobs(tenant.id).named(ids[1], HEARTBEAT_JOB).await.is_err());

    for (yaml, says) in [
        (
            "heartbeats:\n  ada: { schedule: \"61 * * * *\", prompt: \"x\" }\n",
            "heartbeats.ada: minute field",
        ),
        (
            "heartbeats:\n  ada: { zone: Mars/Base, prompt: \"x\" }\n",
            "heartbeats.ada: unknown time zone",
        ),
        (
            "heartbeats:\n  ada: { target: \"origin:nope\", prompt: \"x\" }\n",
            "heartbeats.ada: target",
        ),
    ] {
        let err = reconcile(&store, &config(yaml)).await.unwrap_err().to_string();
        assert!(err.contains(says), "{yaml}: {err}");
    }
    // The refused files changed nothing.
    let kept = store.jobs(tenant.id).named(ids[0], HEARTBEAT_JOB).await.unwrap();
    assert_eq!(kept.id, ada.id);
    // An empty prompt is the configuration's own check.
    let empty = clade_config::Config::parse(
        "heartbeats:\n  ada: { prompt: \"  \" }\n",
        std::path::Path::new("clade.yaml"),
    )
    .unwrap();
    let err = empty.check(std::path::Path::new("clade.yaml")).unwrap_err().to_string();
    assert!(err.contains("heartbeats.ada.prompt is empty"), "{err}");
    store.close().await;
}

/// The figure, at its size: 10,000 jobs (four kinds of schedule, three zones, every
/// misfire policy) over 30 simulated days, looked at irregularly with outages of hours, 100
/// restarts and now and then two schedulers at once. Every scheduled time of every job is
/// fired or skipped exactly once: no time fires twice or off its schedule, none is unaccounted.
/// A soak test (about a minute): `cargo nextest run --profile soak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_fire_once_over_thirty_days_and_a_hundred_restarts() {
    // It once hung after its work was done, beside the rest of the suite: say where, next time
    // (before CI's six minutes). Never disarmed, so the runtime's teardown is covered too: the
    // test's process ends with it.
    let watchdog =
        clade_test_support::Watchdog::arm("the 10,000-jobs soak", Duration::from_secs(330));
    std::mem::forget(watchdog);
    const JOBS: usize = 10_000;
    let handles: Vec<String> = (0..10).map(|i| format!("agent-{i}")).collect();
    let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
    let (_tmp, location, mut store, tenant, agent_ids) = with_agents(&handles).await;
    // Friday 2026-03-27: both daylight-saving changes of the month ahead are in the run.
    let start = Timestamp::from_millis(1_774_569_600_000);
    let zones = ["UTC", "Europe/Berlin", "America/New_York"];
    let policies = ["skip", "run_once", "catch_up:2", "catch_up:5"];
    let mut steps = Steps(0x2545_f491_4f6c_dd1d);
    let mut specs = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let (m, h, d) = (steps.next(60), steps.next(24), steps.next(7));
        let schedule = match i % 4 {
            0 => "@every 12h".to_owned(),
            1 => format!("{m} {h} * * *"),
            2 => format!("{m} {h} * * {d}"),
            _ => format!("{m} {} */2 * *", h % 12),
        };
        specs.push((schedule, zones[i % 3], policies[(i / 4) % 4]));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::with_capacity(JOBS);
    for (i, (schedule, zone, misfire)) in specs.iter().enumerate() {
        let next =
            Schedule::parse(schedule).unwrap().next_after(start, &Zone::parse(zone).unwrap());
        let job = NewJob {
            id: ExecutionId::generate(start),
            tenant: tenant.id,
            agent: agent_ids[i % agent_ids.len()],
            name: format!("job-{i}"),
            schedule: schedule.clone(),
            zone: (*zone).into(),
            misfire: (*misfire).into(),
            target: JobTarget::Session(format!("job-{i}")),
            jitter_secs: 0,
            prompt: "tick".into(),
            settled_at: start,
            next_at: next,
        };
        let store = store.clone();
        tasks.spawn(async move { (i, store.create_job(job).await.unwrap().id) });
        if tasks.len() >= 128 {
            ids.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(done) = tasks.join_next().await {
        ids.push(done.unwrap());
    }
    ids.sort();

    let options = LookOptions {
        grace: Duration::from_secs(60),
        limit: 1_000,
        max_queued: u64::MAX,
        max_failures: 5,
        batch: 64,
        concurrency: 16,
    };
    // Looks until nothing more is due at `at`.
    async fn drain(store: &Store, at: Timestamp, options: LookOptions) -> usize {
        let mut fired = 0;
        loop {
            let look = look(store, at, options).await.unwrap();
            assert!(look.failed.is_empty(), "{:?}", look.failed);
            fired += look.fired;
            if look.seen < options.limit as usize {
                return fired;
            }
        }
    }
    let end = start.as_millis() + 30 * 86_400_000;
    let mut now = start.as_millis();
    let (mut restarts, mut races, mut fired) = (0, 0, 0);
    let mut looks = 0u64;
    while now < end {
        now += if steps.next(25) == 0 {
            (3_600 + steps.next(10 * 3_600)) as i64 * 1000
        } else {
            (60 + steps.next(3 * 3_600)) as i64 * 1000
        };
        let at = Timestamp::from_millis(now.min(end));
        looks += 1;
        // About a hundred restarts over the month.
        if looks.is_multiple_of(3) && restarts < 100 {
            store.close().await;
            store = open(&location).await;
            restarts += 1;
        }
        if steps.next(8) == 0 {
            let other = open(&location).await;
            let (a, b) = tokio::join!(look(&store, at, options), look(&other, at, options));
            let (a, b) = (a.unwrap(), b.unwrap());
            races += a.raced + b.raced;
            fired += a.fired + b.fired;
            other.close().await;
        }
        fired += drain(&store, at, options).await;
    }
    assert_eq!(restarts, 100, "the month had {restarts} restarts");
    assert!(races > 0, "no two looks ever raced");

    let jobs = store.jobs(tenant.id).list(None).await.unwrap();
    assert_eq!(jobs.len(), JOBS);
    let (mut runs_total, mut skipped_total) = (0u64, 0u64);
    for job in &jobs {
        let schedule = Schedule::parse(&job.schedule).unwrap();
        let zone = Zone::parse(&job.zone).unwrap();
        let all = schedule.fires_between(start, job.settled_at, &zone, 100_000);
        let runs = store.jobs(tenant.id).runs(job.id, None, 100_000).await.unwrap();
        // Newest first, each time once.
        assert!(
            runs.windows(2).all(|w| w[0].scheduled_at > w[1].scheduled_at),
            "{} fired a time twice",
            job.name
        );
        assert!(
            runs.iter().all(|r| all.contains(&r.scheduled_at)),
            "{} fired off its schedule",
            job.name
        );
        assert_eq!(
            runs.len() as u64 + job.skipped,
            all.len() as u64,
            "{} ({}, {}) left times unaccounted",
            job.name,
            job.schedule,
            job.misfire
        );
        // Nothing stayed behind the month's last look.
        assert!(job.next_at.is_none_or(|next| next.as_millis() > end), "{} is still due", job.name);
        runs_total += runs.len() as u64;
        skipped_total += job.skipped;
    }
    assert_eq!(runs_total, fired as u64, "looks reported another number of fires than were stored");
    assert!(
        runs_total > 100_000 && skipped_total > 1_000,
        "{runs_total} fires, {skipped_total} skipped"
    );
    eprintln!(
        "10,000 jobs over 30 days: {runs_total} fires and {skipped_total} skips, each time once; \
         {restarts} restarts, {races} raced looks, 0 double fires, 0 unaccounted"
    );
    store.close().await;
}

/// A job whose origin session is gone (swept by retention) fires into nothing: each fire is
/// recorded as refused, naming the session, and the job moves on.
#[tokio::test]
async fn a_job_whose_target_session_is_deleted_records_refused_fires() {
    let (_tmp, _, store, tenant, ids) = with_agents(&["ada"]).await;
    let agent_id = ids[0];
    let origin = store
        .turns()
        .accept(clade_store::NewEvent {
            tenant: tenant.id,
            agent: "ada".into(),
            source: clade_store::Source {
                platform: "http".into(),
                channel: "dm".into(),
                actor: "grace".into(),
            },
            text: "remind me".into(),
            idempotency_key: None,
            payload_hash: "h".into(),
            max_open_per_session: 100,
        })
        .await
        .unwrap();
    let now = store.now();
    let spec = clade_sched::JobSpec {
        name: "remind".into(),
        schedule: "* * * * *".into(),
        target: Some(format!("origin:{}", origin.session_id)),
        prompt: "stretch".into(),
        ..Default::default()
    };
    let job = store.create_job(clade_sched::new_job(&spec, tenant.id, agent_id, now).unwrap());
    let job = job.await.unwrap();
    // The conversation ends, and retention sweeps it away.
    let pending = store.system().pending_events(origin.session_id).await.unwrap();
    assert_eq!(pending.len(), 1);
    let later = Timestamp::from_millis(now.as_millis() + 86_400_000);
    let cutoffs = clade_store::retention::Cutoffs { sessions: Some(later), ..Default::default() };
    // Its event is still pending, so the sweep keeps it until it is answered.
    assert_eq!(store.sweep(tenant.id, cutoffs).await.unwrap().sessions, 0);
    // Its turn answers it.
    let turn = clade_store::TurnRow {
        id: clade_core::TurnId::generate(now),
        session_id: origin.session_id,
        tenant_id: tenant.id,
        agent_id,
        status: clade_core::TurnStatus::Running,
        reply: None,
        error: None,
        model: None,
        config_revision: 1,
        started_at: now,
        finished_at: None,
    };
    store.turns().begin(&turn, vec![origin.event_id], Vec::new(), None, None).await.unwrap();
    let outcome = clade_store::TurnOutcome {
        status: clade_core::TurnStatus::Completed,
        reply: Some("sure".into()),
        error: None,
        model: None,
    };
    store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
    assert_eq!(store.sweep(tenant.id, cutoffs).await.unwrap().sessions, 1);

    let at = Timestamp::from_millis(job.next_at.unwrap().as_millis() + 1_000);
    let looked = look(&store, at, LookOptions::default()).await.unwrap();
    assert_eq!((looked.fired, looked.refused), (0, 1), "{looked:?}");
    let runs = store.jobs(tenant.id).runs(job.id, None, 10).await.unwrap();
    let refused = match &runs[0].outcome {
        RunOutcome::Refused(why) => why.clone(),
        other => panic!("{other:?}"),
    };
    assert!(refused.contains(&origin.session_id.to_string()), "{refused}");
    let job = store.jobs(tenant.id).named(agent_id, "remind").await.unwrap();
    assert!(
        job.settled_at >= Timestamp::from_millis(at.as_millis() - 60_000),
        "the job did not move on"
    );
    store.close().await;
}

/// A gate admitting one fire at a time (a tenant's event rate, as the gateway's
/// `quotas::FireRate` is).
struct OneAtATime(std::sync::atomic::AtomicUsize);

impl clade_sched::scheduler::FireGate for OneAtATime {
    fn admit(
        &self,
        _tenant: clade_core::TenantId,
        fires: usize,
    ) -> futures::future::BoxFuture<'_, bool> {
        let left = self.0.load(std::sync::atomic::Ordering::SeqCst);
        let admitted = fires <= left;
        if admitted {
            self.0.fetch_sub(fires, std::sync::atomic::Ordering::SeqCst);
        }
        Box::pin(std::future::ready(admitted))
    }
}

/// Fires go out only as their tenant's rate admits them: a job the gate refuses stays due,
/// nothing of it written, and fires at a later look once admitted; the ones admitted fire
/// once.
#[tokio::test]
async fn fires_wait_for_their_tenants_rate_and_go_out_later() {
    let (_tmp, _, store, tenant, ids) = with_agents(&["ada"]).await;
    let now = store.now();
    let mut jobs = Vec::new();
    for name in ["one", "two", "three"] {
        let spec = clade_sched::JobSpec {
            name: name.into(),
            schedule: "* * * * *".into(),
            prompt: "tick".into(),
            ..Default::default()
        };
        let job = clade_sched::new_job(&spec, tenant.id, ids[0], now).unwrap();
        jobs.push(store.create_job(job).await.unwrap());
    }
    let at = Timestamp::from_millis(
        jobs.iter().map(|j| j.next_at.unwrap().as_millis()).max().unwrap() + 1_000,
    );
    let gate = OneAtATime(std::sync::atomic::AtomicUsize::new(1));
    let looked =
        clade_sched::scheduler::look_gated(&store, at, LookOptions::default(), Some(&gate))
            .await
            .unwrap();
    assert_eq!((looked.fired, looked.deferred), (1, 2), "{looked:?}");
    let fired = |runs: &[clade_store::JobRun]| runs.len();
    let mut counts = Vec::new();
    for job in &jobs {
        counts.push(fired(&store.jobs(tenant.id).runs(job.id, None, 10).await.unwrap()));
    }
    counts.sort();
    assert_eq!(counts, [0, 0, 1], "a deferred job wrote a run");
    // The rate refills: the two that waited fire now, and the first does not fire again.
    gate.0.store(2, std::sync::atomic::Ordering::SeqCst);
    let later = Timestamp::from_millis(at.as_millis() + 1_000);
    let looked =
        clade_sched::scheduler::look_gated(&store, later, LookOptions::default(), Some(&gate))
            .await
            .unwrap();
    assert_eq!((looked.fired, looked.deferred), (2, 0), "{looked:?}");
    for job in &jobs {
        assert_eq!(fired(&store.jobs(tenant.id).runs(job.id, None, 10).await.unwrap()), 1);
    }
}
