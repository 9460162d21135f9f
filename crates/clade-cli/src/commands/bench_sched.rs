//! `clade bench sched`: many jobs in one gateway's scheduler, on a fresh SQLite store.
//!
//! Every job fires once every `every` minutes (once a minute by default), at a second of the
//! minute within the first `spread` seconds; the rest of each minute nothing is due. So 100,000
//! jobs every 2 minutes in the first 50 seconds are 1,000 fires (and, with `--turns`, turns) a
//! second. The scheduler runs as `clade serve` runs it (its
//! own loop on the system clock, settling due jobs side by side through the group-commit
//! writer). Reported: each fire's lateness (from its scheduled time to its commit's start, as
//! its run records it), CPU while fires are due and while none is (the scheduler then only
//! sleeps until the next), and RSS. Without `--turns` no engine runs: the envelopes wait in
//! their sessions. With it, the engine runs each fire's turn (the offline scripted model) in
//! the same process, as `clade serve` does, and the turns finished are counted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clade_core::{AgentConfig, Handle, Tenant};
use clade_sched::scheduler::{Look, LookOptions, Scheduler};
use clade_store::{DataDir, NewAgent, Store};
use tokio::task::JoinSet;

use crate::context::Ctx;

pub(super) struct Plan {
    pub jobs: u64,
    pub seconds: u64,
    pub spread: u64,
    /// Minutes between a job's fires.
    pub every: u64,
    /// Run the fired turns too.
    pub turns: bool,
}

#[allow(clippy::disallowed_methods)] // Benchmarks measure elapsed time.
fn now() -> Instant {
    Instant::now()
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if plan.jobs == 0 || plan.seconds == 0 || !(1..=59).contains(&plan.spread) {
        bail!("--jobs and --seconds must be at least 1, and --spread between 1 and 59");
    }
    if !(1..=30).contains(&plan.every) {
        bail!("--every must be between 1 and 30 minutes");
    }
    let (dir, data, store) = super::bench::scratch_store(ctx, "bench-sched", plan.jobs).await?;
    let result = measure(&data, store, plan).await;
    super::bench::remove_scratch(&dir);
    result
}

async fn measure(data: &DataDir, store: Store, plan: &Plan) -> Result<()> {
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await?;
    // A thousand jobs per agent, as a busy deployment might have.
    let agents_count = plan.jobs.div_ceil(1_000);
    let specs = (0..agents_count)
        .map(|i| {
            Ok(NewAgent {
                handle: Handle::parse(&format!("agent-{i}"))?,
                display_name: None,
                config: AgentConfig::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let agent_ids: Vec<_> =
        store.agents(tenant.id).create_many(specs).await?.iter().map(|a| a.id).collect();

    eprintln!("creating {} jobs for {agents_count} agents ({})", plan.jobs, store.location());
    let started = now();
    let mut tasks = JoinSet::new();
    let (mut next, mut done) = (0u64, 0u64);
    let mut last_report = now();
    while done < plan.jobs {
        while tasks.len() < 64 && next < plan.jobs {
            // Job after job: the next second of the spread, then the next minute of `every`.
            let minute = match plan.every {
                1 => "*".to_owned(),
                every => format!("{}/{every}", (next / plan.spread) % every),
            };
            let spec = clade_sched::JobSpec {
                name: format!("job-{next}"),
                schedule: format!("{} {minute} * * * *", next % plan.spread),
                prompt: "tick".into(),
                ..Default::default()
            };
            let agent = agent_ids[(next % agents_count) as usize];
            let new = clade_sched::new_job(&spec, tenant.id, agent, store.now())?;
            let store = store.clone();
            tasks.spawn(async move { store.create_job(new).await });
            next += 1;
        }
        if let Some(created) = tasks.join_next().await {
            created??;
            done += 1;
        }
        if last_report.elapsed() >= Duration::from_secs(2) || done == plan.jobs {
            let rate = done as f64 / started.elapsed().as_secs_f64();
            crate::output::progress(&format!("  {done}/{} created ({rate:.0}/s)", plan.jobs));
            last_report = now();
        }
    }
    crate::output::progress_end();

    let finished = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine = if plan.turns {
        Some(start_engine(&store, data, &agent_ids, finished.clone()).await?)
    } else {
        None
    };
    let lateness = Arc::new(Mutex::new(Vec::<Duration>::new()));
    // The fires after the first round (`every` minutes): every session then exists, and every
    // job has fired once (the first round also creates a session per job).
    let steady = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let first_minute_ends = now() + Duration::from_secs(60 * plan.every);
    let on_look = {
        let (lateness, steady, engine) = (lateness.clone(), steady.clone(), engine.clone());
        Arc::new(move |look: &Look| {
            if let Ok(mut all) = lateness.lock() {
                all.extend_from_slice(&look.lateness);
            }
            if now() > first_minute_ends
                && let Ok(mut later) = steady.lock()
            {
                later.extend_from_slice(&look.lateness);
            }
            if let Some(engine) = &engine {
                for (tenant, session) in &look.sessions {
                    engine.wake(*tenant, *session);
                }
            }
        })
    };
    // The store's own limit on waiting events is beside the point here: turns that fall behind
    // wait, and every fire is taken.
    let options = LookOptions { max_queued: u64::MAX, ..LookOptions::default() };
    let scheduler = Scheduler::new(store.acting_as("scheduler"), options, on_look);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(async {
        let _ = stopped.await;
    }));

    eprintln!(
        "running the scheduler for {} s: every job fires once every {} minute(s), in the first {} s of a minute",
        plan.seconds, plan.every, plan.spread
    );
    // CPU per wall-clock second, sorted by whether a job was due in it.
    let (mut busy, mut idle) = ((0u64, 0u64), (0u64, 0u64));
    let mut cpu = super::bench_turns::cpu_micros("self");
    let mut rss_max = 0;
    let end = now() + Duration::from_secs(plan.seconds);
    while now() < end {
        super::bench::wall_sleep(Duration::from_secs(1)).await;
        let second = (store.now().as_millis() / 1_000).rem_euclid(60) as u64;
        let used = super::bench_turns::cpu_micros("self");
        let delta = used.saturating_sub(cpu);
        cpu = used;
        // The second just ended held fires if it (or the one before, for a late look) was
        // one of the due ones.
        let due = second <= plan.spread + 1;
        let slot = if due { &mut busy } else { &mut idle };
        slot.0 += delta;
        slot.1 += 1;
        rss_max = rss_max.max(super::bench::rss_kib());
        let fired = lateness.lock().map(|l| l.len()).unwrap_or(0);
        let turns = finished.load(std::sync::atomic::Ordering::Relaxed);
        if plan.turns {
            crate::output::progress(&format!("  {fired} fires, {turns} turns finished"));
        } else {
            crate::output::progress(&format!("  {fired} fires"));
        }
    }
    crate::output::progress_end();
    let _ = stop.send(());
    let _ = task.await;

    let mut lateness = lateness.lock().map(|l| l.clone()).unwrap_or_default();
    lateness.sort();
    let pct = |p: f64| super::bench::percentile_ms(&lateness, p);
    let expected = plan.jobs * plan.seconds / 60 / plan.every;
    let share = |(micros, seconds): (u64, u64)| micros as f64 / 1e4 / seconds.max(1) as f64;
    println!(
        "bench sched: {} jobs ({} agents), {} s, each firing every {} minute(s) in the first {} s of a minute ({} fires a second while due)",
        plan.jobs,
        agents_count,
        plan.seconds,
        plan.every,
        plan.spread,
        plan.jobs / plan.every / plan.spread
    );
    println!("  fires:     {} (about {expected} scheduled in the run)", lateness.len());
    println!(
        "  lateness:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50),
        pct(0.99),
        lateness.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
    );
    let mut steady = steady.lock().map(|l| l.clone()).unwrap_or_default();
    steady.sort();
    if !steady.is_empty() {
        let pct = |p: f64| super::bench::percentile_ms(&steady, p);
        println!(
            "             after the first round ({} fires): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            steady.len(),
            pct(0.50),
            pct(0.99),
            steady.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
        );
    }
    println!(
        "  cpu:       {:.1} % of a core while fires are due ({} s), {:.2} % while none is ({} s)",
        share(busy),
        busy.1,
        share(idle),
        idle.1
    );
    println!("  rss:       {} KiB at most", rss_max);
    if plan.turns {
        println!(
            "  turns:     {} finished by the engine in the run, at least (scripted model; a lagging count misses some)",
            finished.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    store.close().await;
    Ok(())
}

/// An engine on `store` with the offline scripted model and no tools, as `clade serve` runs
/// with no model configured; `finished` counts the turns it ends, of every agent.
pub(super) async fn start_engine(
    store: &Store,
    data: &DataDir,
    agents: &[clade_core::AgentId],
    finished: Arc<std::sync::atomic::AtomicU64>,
) -> Result<clade_runtime::Engine> {
    let engine = clade_runtime::Bare::new(store, data)
        .model_clock(Arc::new(clade_core::SystemClock))
        .start()
        .await?;
    for agent in agents {
        let mut live = engine.hub().subscribe_agent(*agent);
        let finished = finished.clone();
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(event) if event.kind() == clade_core::EventKind::TurnFinished => {
                        finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    Ok(engine)
}
