//! `clade bench agents --messages N`: agents asking agents through the durable path, on a
//! fresh SQLite store with `durability: full`.
//!
//! `pairs` askers each ask their own answerer, in an open loop at `rate` messages a second in
//! all: each ask is stored as the answerer's event with its message row (`Engine::deliver`,
//! one commit, fsynced), the answerer's session runs its turn with the offline scripted model,
//! and the ask ends when that turn's end is seen (`Engine::wait`), as `agent.ask` waits.
//! Reported: the round trip's p50, p99 and maximum, the rate achieved, RSS while running, and
//! how many sessions (and how much RSS) are left in memory once the agents have been idle.
//! Then spawn latency: askers make a child each, one after another, as `agent.spawn` does (the
//! agent and its workspace, its lineage row) and ask it a first question; reported are the
//! making's p50/p99 and the whole spawn-to-answer's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clade_core::{AgentConfig, Handle, MessageKind, Tenant, TurnStatus};
use clade_store::{DataDir, NewAgent, NewMessage, Store};
use tokio::task::JoinSet;

use crate::context::Ctx;

pub(super) struct Plan {
    pub messages: u64,
    pub pairs: u64,
    pub rate: f64,
}

#[allow(clippy::disallowed_methods)] // Benchmarks measure elapsed time.
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)] // An open loop paces its sends on the wall clock.
async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if plan.messages == 0 || plan.pairs == 0 || !plan.rate.is_finite() || plan.rate <= 0.0 {
        bail!("--messages, --pairs and --rate must be above 0");
    }
    let (dir, data, store) =
        super::bench::scratch_store(ctx, "bench-messages", plan.messages).await?;
    let result = measure(&data, store, plan).await;
    super::bench::remove_scratch(&dir);
    result
}

async fn measure(data: &DataDir, store: Store, plan: &Plan) -> Result<()> {
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await?;
    eprintln!("creating {} agents ({})", plan.pairs * 2, store.location());
    let mut askers = Vec::new();
    for start in (0..plan.pairs).step_by(500) {
        let end = (start + 500).min(plan.pairs);
        let mut specs = Vec::new();
        for i in start..end {
            for role in ["asker", "answerer"] {
                specs.push(NewAgent {
                    handle: Handle::parse(&format!("{role}-{i}"))?,
                    display_name: None,
                    config: AgentConfig::default(),
                });
            }
        }
        let made = store.agents(tenant.id).create_many(specs).await?;
        askers.extend(made.chunks(2).map(|pair| (pair[0].id, pair[1].handle.to_string())));
    }
    let finished = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine = super::bench_sched::start_engine(&store, data, &[], finished).await?;
    let askers = Arc::new(askers);
    // Sessions leave memory after 1 s idle, so the end shows what idle agents cost.
    let mut settings = (*engine.settings()).clone();
    settings.sessions.idle_secs = 1;
    engine.reload(settings);

    eprintln!(
        "asking {} questions across {} pairs at {} a second",
        plan.messages, plan.pairs, plan.rate
    );
    let started = now();
    let gap = Duration::from_secs_f64(1.0 / plan.rate);
    let mut tasks = JoinSet::new();
    let mut rss_max = 0;
    for n in 0..plan.messages {
        sleep_until(started + gap.mul_f64(n as f64)).await;
        if n % 1000 == 0 {
            rss_max = rss_max.max(super::bench::rss_kib());
        }
        let (engine, askers) = (engine.clone(), askers.clone());
        let tenant = tenant.id;
        tasks.spawn(async move {
            let (from, to) = &askers[(n % askers.len() as u64) as usize];
            let t0 = now();
            let message = NewMessage {
                tenant,
                kind: MessageKind::Ask,
                from: *from,
                from_session: None,
                from_turn: None,
                to: to.clone(),
                topic: None,
                text: format!("question {n}"),
                idempotency_key: format!("bench:{n}"),
                payload_hash: format!("bench:{n}"),
                depth: 1,
                chain: Vec::new(),
                max_open_per_session: 1_000,
            };
            let delivered = engine.deliver(message).await.ok()?;
            let row = delivered.message;
            let ended = engine
                .wait(tenant, row.event, row.to_session, Duration::from_secs(60))
                .await
                .ok()??;
            (ended.status == TurnStatus::Completed).then(|| t0.elapsed())
        });
    }
    let mut trips = Vec::with_capacity(plan.messages as usize);
    let mut failed = 0u64;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Some(trip)) => trips.push(trip),
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed();
    rss_max = rss_max.max(super::bench::rss_kib());
    trips.sort();
    let pct = |p: f64| {
        trips
            .get(((trips.len() as f64 * p) as usize).min(trips.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "bench agents --messages: {} asks over {} pairs ({} agents), durability full",
        plan.messages,
        plan.pairs,
        plan.pairs * 2
    );
    println!(
        "  offered:    {:.0}/s; answered {} ({:.0}/s), failed or late {failed}",
        plan.rate,
        trips.len(),
        trips.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  round trip: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (ask stored and fsynced, the answerer's turn, its end seen)",
        pct(0.50),
        pct(0.99),
        trips.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    println!("  rss:        {rss_max} KiB at most while asking");
    // Idle agents leave memory: watch the sessions go.
    let active = engine.active_sessions();
    let deadline = now() + Duration::from_secs(10);
    while engine.active_sessions() > 0 && now() < deadline {
        sleep_until(now() + Duration::from_millis(100)).await;
    }
    println!(
        "  idle:       {} sessions in memory after 1 s idle (of {active}), RSS {} KiB",
        engine.active_sessions(),
        super::bench::rss_kib()
    );
    spawns(data, &store, &engine, tenant.id, &askers).await?;
    store.close().await;
    Ok(())
}

/// Spawns measured one at a time (at most 200): making the child, then its first answer.
async fn spawns(
    data: &DataDir,
    store: &Store,
    engine: &clade_runtime::Engine,
    tenant: clade_core::TenantId,
    askers: &[(clade_core::AgentId, String)],
) -> Result<()> {
    let agents = clade_store::Agents::new(store.clone(), data.clone());
    let count = askers.len().min(200);
    let (mut made, mut answered) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for (n, (parent, _)) in askers.iter().take(count).enumerate() {
        let t0 = now();
        let spec = NewAgent {
            handle: Handle::parse(&format!("child-{n}"))?,
            display_name: None,
            config: AgentConfig::default(),
        };
        let child = agents.create(tenant, spec).await?;
        store.lineage(tenant).record_child(*parent, child.id, 1).await?;
        made.push(t0.elapsed());
        let message = NewMessage {
            tenant,
            kind: MessageKind::Ask,
            from: *parent,
            from_session: None,
            from_turn: None,
            to: child.handle.to_string(),
            topic: None,
            text: format!("first task {n}"),
            idempotency_key: format!("spawn:{n}"),
            payload_hash: format!("spawn:{n}"),
            depth: 1,
            chain: Vec::new(),
            max_open_per_session: 1_000,
        };
        let row = engine.deliver(message).await?.message;
        let ended = engine.wait(tenant, row.event, row.to_session, Duration::from_secs(60)).await?;
        if ended.is_some_and(|turn| turn.status == TurnStatus::Completed) {
            answered.push(t0.elapsed());
        }
    }
    let ms = |all: &mut Vec<Duration>, p: f64| {
        all.sort();
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "  spawn:      {count} children one after another: made p50 {:.2} ms, p99 {:.2} ms; first answer p50 {:.2} ms, p99 {:.2} ms ({} answered)",
        ms(&mut made, 0.50),
        ms(&mut made, 0.99),
        ms(&mut answered, 0.50),
        ms(&mut answered, 0.99),
        answered.len()
    );
    Ok(())
}
