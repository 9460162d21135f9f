//! `clade bench flows`: many concurrent runs of a 10-task flow (a plan, a fan-out of 5 joined,
//! a condition, a loop of 3) on one engine with the offline scripted model, on a fresh SQLite
//! store. Reported: runs and tasks per second, what each task step costs beyond its turn (the
//! runner's journal writes and reads: p50, p99), and the RSS each run waiting at an approval
//! holds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clade_core::{AgentConfig, ExecutionStatus, Handle, Tenant};
use clade_flow::run::{Runner, StartRun};
use clade_store::NewAgent;

use super::bench::{now, percentile_ms, rss_kib};
use crate::context::Ctx;

/// The measured flow: 10 turns per run (plan, 5 searches, a summary, 3 refinements).
const FLOW: &str = r#"
name: bench
agents:
  a: { handle: bench-0 }
  b: { handle: bench-1 }
  c: { handle: bench-2 }
  d: { handle: bench-3 }
  e: { handle: bench-4 }
tasks:
  - { id: plan, agent: a, prompt: "/reply plan" }
  - { id: s1, agent: a, prompt: "/reply one" }
  - { id: s2, agent: b, prompt: "/reply two" }
  - { id: s3, agent: c, prompt: "/reply three" }
  - { id: s4, agent: d, prompt: "/reply four" }
  - { id: s5, agent: e, prompt: "/reply five" }
  - { id: summary, agent: a, prompt: "/reply summary of {{ tasks.s1.output }}" }
  - { id: fallback, agent: a, prompt: "/reply fallback" }
  - { id: refine, agent: b, prompt: "/reply round {{ item }}" }
run:
  - task: plan
  - parallel:
      join: all
      steps: [{ task: s1 }, { task: s2 }, { task: s3 }, { task: s4 }, { task: s5 }]
  - condition:
      if: tasks.s1.status == 'completed'
      then: [{ task: summary }]
      else: [{ task: fallback }]
  - loop:
      for_each: "[1, 2, 3]"
      max_iterations: 3
      steps: [{ task: refine }]
"#;

/// Turns one run of [`FLOW`] runs.
const TURNS_PER_RUN: u64 = 10;

/// A flow that waits for a person before its one task.
const WAITING: &str = "name: waiting\nagents:\n  a: { handle: bench-0 }\ntasks:\n  - { id: after, agent: a, prompt: /reply done }\nrun:\n  - approval: { message: go on? }\n  - task: after\n";

pub(super) async fn run(ctx: &Ctx, runs: usize, waiting: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (dir, data, store) = super::bench::scratch_store(ctx, "bench-flows", runs as u64).await?;
    let result = measure(&data, store, runs, waiting).await;
    super::bench::remove_scratch(&dir);
    result
}

async fn measure(
    data: &clade_store::DataDir,
    store: clade_store::Store,
    runs: usize,
    waiting: usize,
) -> Result<()> {
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await?;
    let specs = (0..5)
        .map(|i| {
            Ok(NewAgent {
                handle: Handle::parse(&format!("bench-{i}"))?,
                display_name: None,
                config: AgentConfig::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let agents: Vec<_> =
        store.agents(tenant.id).create_many(specs).await?.iter().map(|a| a.id).collect();
    let finished = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine = super::bench_sched::start_engine(&store, data, &agents, finished).await?;
    let runner = Runner::measured(engine);

    eprintln!("starting {runs} runs of a {TURNS_PER_RUN}-task flow at once ({})", store.location());
    let started = now();
    let mut ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start =
            StartRun { source: FLOW.into(), file: "bench.flow.yaml".into(), ..StartRun::default() };
        ids.push(runner.start(&tenant, start).await?.id);
    }
    let (mut completed, mut failed) = (0usize, 0usize);
    for id in &ids {
        let row = runner.wait(tenant.id, *id, Duration::from_secs(3600)).await?;
        match row.status {
            ExecutionStatus::Completed => completed += 1,
            _ => {
                failed += 1;
                if failed == 1 {
                    eprintln!("a run ended {}: {}", row.status, row.error.unwrap_or_default());
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let mut overheads = runner.overheads();
    overheads.sort();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "flows: {runs} runs of {TURNS_PER_RUN} tasks (fan-out 5, join, condition, loop of 3), all started at once"
    );
    println!("  completed {completed}, failed {failed}, in {seconds:.1} s");
    println!(
        "  runs/s {:.1}, tasks/s {:.0}",
        completed as f64 / seconds,
        (completed as u64 * TURNS_PER_RUN) as f64 / seconds
    );
    println!(
        "  a task step's cost beyond its turn ({} steps): p50 {:.2} ms, p99 {:.2} ms (goal p99 <= 2 ms)",
        overheads.len(),
        percentile_ms(&overheads, 0.50),
        percentile_ms(&overheads, 0.99)
    );
    if waiting > 0 {
        waiting_rss(&runner, &tenant, &store, waiting).await?;
    }
    Ok(())
}

/// Starts `count` runs that wait at an approval and reports the RSS each holds, then cancels
/// them.
async fn waiting_rss(
    runner: &Runner,
    tenant: &Tenant,
    store: &clade_store::Store,
    count: usize,
) -> Result<()> {
    let before = rss_kib();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let start = StartRun {
            source: WAITING.into(),
            file: "waiting.flow.yaml".into(),
            ..StartRun::default()
        };
        ids.push(runner.start(tenant, start).await?.id);
    }
    let access = store.access(tenant.id);
    let limit = u32::try_from(count + 10).unwrap_or(u32::MAX);
    let started = now();
    loop {
        let pending =
            access.approvals(None, Some(clade_core::ApprovalStatus::Pending), limit).await?;
        if pending.len() >= count {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {} of {count} runs reached their approval within 10 minutes",
                pending.len()
            );
        }
        store.clock().sleep(Duration::from_millis(200)).await;
    }
    let after = rss_kib();
    println!(
        "  {count} runs waiting at an approval: RSS {} MiB -> {} MiB, {:.1} KiB per waiting run (goal <= 20 KiB)",
        before / 1024,
        after / 1024,
        after.saturating_sub(before) as f64 / count as f64
    );
    for id in ids {
        runner.cancel(tenant.id, id).await?;
    }
    Ok(())
}
