//! `clade bench agents`: creation rate, bytes on disk per agent, handle lookup latency, RSS.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clade_core::{AgentConfig, Handle};
use clade_store::NewAgent;
use rand::Rng;
use tokio::task::JoinSet;

use crate::cli::BenchCommand;
use crate::context::Ctx;

pub(super) async fn run(ctx: &Ctx, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Agents { messages: Some(messages), pairs, rate, .. } => {
            let plan = super::bench_messages::Plan { messages, pairs, rate };
            super::bench_messages::run(ctx, &plan).await
        }
        BenchCommand::Agents { count, batch, concurrency, lookups, messages: None, .. } => {
            agents(ctx, count, batch, concurrency, lookups).await
        }
        BenchCommand::Turns {
            sessions,
            turns: total,
            durability,
            rate,
            keep,
            model,
            metrics,
            traces,
            reload_every_ms,
        } => {
            if metrics {
                // Installed for the process's life: every row below records.
                clade_gateway::metrics::install(1_000)?;
                println!("metrics: recorded, as by clade serve (Prometheus recorder installed)");
            }
            let plan = super::bench_turns::Plan {
                sessions,
                total,
                durability,
                rate,
                keep,
                model,
                reload_every: reload_every_ms.map(Duration::from_millis),
                traces,
            };
            super::bench_turns::run(ctx, &plan).await
        }
        BenchCommand::Openai { sessions, turns: total, durability, rate } => {
            let plan = super::bench_openai::Plan { sessions, total, durability, rate };
            super::bench_openai::run(ctx, &plan).await
        }
        BenchCommand::Gateway { sessions, turns, sequential, settle } => {
            let plan = super::bench_gateway::Plan { sessions, turns, sequential, settle };
            super::bench_gateway::run(ctx, &plan).await
        }
        BenchCommand::Sched { jobs, seconds, spread, every, turns } => {
            let plan = super::bench_sched::Plan { jobs, seconds, spread, every, turns };
            super::bench_sched::run(ctx, &plan).await
        }
        BenchCommand::Memory { items, queries, saves, embeddings, eval, distractors, unmerged } => {
            let plan = super::bench_memory::Plan {
                items,
                queries,
                saves,
                embeddings,
                eval,
                distractors,
                unmerged,
            };
            super::bench_memory::run(ctx, &plan).await
        }
        BenchCommand::Local { answers, tokens, concurrency, model_file } => {
            let file = model_file.unwrap_or_else(|| {
                ctx.data_dir
                    .models_dir()
                    .join(clade_runtime::models::DEFAULT_LOCAL_CHAT)
                    .join("model.gguf")
            });
            local(&file, answers, tokens, concurrency).await
        }
        BenchCommand::Neighbours { quota, quiet_tenants, quiet_rate, seconds, rounds } => {
            let plan =
                super::bench_neighbours::Plan { quota, quiet_tenants, quiet_rate, seconds, rounds };
            super::bench_neighbours::run(ctx, &plan).await
        }
        BenchCommand::Cluster(args) => super::bench_cluster::run(ctx, &args).await,
        BenchCommand::Flows { runs, waiting } => super::bench_flows::run(ctx, runs, waiting).await,
        BenchCommand::Siege {
            strangers,
            max_connections,
            rate,
            seconds,
            trickle,
            stranger_address,
        } => {
            let plan = super::bench_siege::Plan {
                strangers,
                max_connections,
                rate,
                seconds,
                trickle,
                stranger_address,
            };
            super::bench_siege::run(ctx, &plan).await
        }
    }
}

#[allow(clippy::disallowed_methods)] // Benchmarks measure elapsed time.
pub(super) fn now() -> Instant {
    Instant::now()
}

/// Waits `duration` of wall-clock time: a benchmark samples and paces real load in real time,
/// not on the engine's clock.
#[allow(clippy::disallowed_methods)]
pub(super) async fn wall_sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// `clade bench local`: time to first token and tokens per second of the local chat model,
/// over `answers` prompts of a few lengths, each writing up to `tokens`, `concurrent` at once.
#[cfg(feature = "local-models")]
async fn local(file: &std::path::Path, answers: u32, tokens: u32, concurrent: u32) -> Result<()> {
    use clade_model::Provider as _;
    use futures::StreamExt as _;
    if answers == 0 || tokens == 0 || concurrent == 0 {
        bail!("--answers, --tokens and --concurrency must be at least 1");
    }
    let started = now();
    let model =
        clade_model::local_chat::LocalChat::load(file)?.with_concurrency(concurrent as usize);
    eprintln!("loaded {} in {:.2} s", file.display(), started.elapsed().as_secs_f64());
    let prompts = [
        "Say hello.",
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        "Explain in a few sentences why the sky is blue, for a ten-year-old.",
    ];
    // One answer: its time to first token, tokens written, and whole time.
    let one = |n: u32| {
        let model = model.clone();
        async move {
            let prompt = prompts[n as usize % prompts.len()];
            let request = clade_model::ModelRequest {
                messages: vec![
                    clade_model::types::Message::system("You are a helpful assistant."),
                    clade_model::types::Message::user(prompt),
                ],
                tools: Vec::new().into(),
                params: clade_model::types::Params { max_tokens: tokens, temperature: Some(0.7) },
                // Every answer reads its whole prompt: the figures are of a first turn.
                cache_scope: None,
            };
            let asked = now();
            let mut stream = model.stream("local", &request).await?;
            let mut first: Option<Duration> = None;
            let mut written = 0;
            while let Some(event) = stream.next().await {
                match event? {
                    clade_model::types::StreamEvent::TextDelta(_) if first.is_none() => {
                        first = Some(asked.elapsed())
                    }
                    clade_model::types::StreamEvent::Usage(usage) => written = usage.output_tokens,
                    _ => {}
                }
            }
            let total = asked.elapsed();
            Ok::<_, anyhow::Error>((first.unwrap_or(total), written, total))
        }
    };
    let all = now();
    let mut answered =
        futures::stream::iter(0..answers).map(one).buffer_unordered(concurrent as usize);
    let (mut first_tokens, mut rates, mut written_all) = (Vec::new(), Vec::new(), 0u64);
    let mut done = 0;
    while let Some(answer) = answered.next().await {
        let (first, written, total) = answer?;
        // Tokens after the first, over the time after it: the writing speed.
        if written > 1 && total > first {
            rates.push((written - 1) as f64 / (total - first).as_secs_f64());
        }
        first_tokens.push(first);
        written_all += written;
        done += 1;
        crate::output::progress(&format!("{done}/{answers} answers"));
    }
    let elapsed = all.elapsed();
    crate::output::progress_end();
    first_tokens.sort();
    rates.sort_by(f64::total_cmp);
    let pick = |q: f64| first_tokens[((first_tokens.len() - 1) as f64 * q).round() as usize];
    let median_rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    println!(
        "local model: time to first token p50 {:.0} ms, p99 {:.0} ms; writing p50 {median_rate:.1} tokens/s an answer, {:.1} tokens/s in all ({answers} answers of up to {tokens} tokens, {concurrent} at once)",
        pick(0.5).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        written_all as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
    );
    Ok(())
}

#[cfg(not(feature = "local-models"))]
async fn local(
    _file: &std::path::Path,
    _answers: u32,
    _tokens: u32,
    _concurrent: u32,
) -> Result<()> {
    bail!("this build has no local models: build clade with the cargo feature `local-models`")
}

async fn agents(
    ctx: &Ctx,
    count: u64,
    batch: usize,
    concurrency: usize,
    lookups: u64,
) -> Result<()> {
    if count == 0 || batch == 0 || concurrency == 0 {
        bail!("--count, --batch and --concurrency must be at least 1");
    }
    let tenant = ctx.tenant().await?;
    // A prefix unique to this run, so the benchmark can be repeated on the same data dir.
    let run = format!("b{:x}", ctx.store.now().as_millis());
    let handle = move |i: u64| format!("{run}-{i}");
    let disk_before = ctx.store.disk_bytes().await?;
    let stats_before = ctx.store.write_stats();
    let rss_start = rss_kib();
    eprintln!("creating {count} agents in tenant {} ({})", tenant.name, ctx.store.location());

    let started = now();
    let mut tasks = JoinSet::new();
    let mut next = 0u64;
    let mut done = 0u64;
    let mut last_report = now();
    let mut rss_mid = rss_start;
    while done < count {
        while tasks.len() < concurrency && next < count {
            let end = (next + batch as u64).min(count);
            let agents: Vec<NewAgent> = (next..end)
                .map(|i| {
                    Ok(NewAgent {
                        handle: Handle::parse(&handle(i))?,
                        display_name: None,
                        config: AgentConfig::default(),
                    })
                })
                .collect::<Result<_>>()?;
            let store = ctx.store.clone();
            let tenant_id = tenant.id;
            tasks.spawn(async move {
                store.agents(tenant_id).create_many(agents).await.map(|a| a.len() as u64)
            });
            next = end;
        }
        if let Some(result) = tasks.join_next().await {
            done += result??;
        }
        if last_report.elapsed() >= Duration::from_secs(2) || done == count {
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let share = done as f64 * 100.0 / count as f64;
            crate::output::progress(&format!(
                "  {done}/{count} created ({share:.0}%, {rate:.0}/s)"
            ));
            last_report = now();
            if done >= count / 2 && rss_mid == rss_start {
                rss_mid = rss_kib();
            }
        }
    }
    crate::output::progress_end();
    let create_secs = started.elapsed().as_secs_f64();
    let stats = ctx.store.write_stats();
    let commits = stats.commits - stats_before.commits;
    let rss_end = rss_kib();
    let disk_after = ctx.store.disk_bytes().await?;

    eprintln!("timing {lookups} random handle lookups");
    #[allow(clippy::disallowed_methods)] // A benchmark's sample of handles.
    let mut rng = rand::rng();
    let mut latencies = Vec::with_capacity(lookups as usize);
    for _ in 0..lookups {
        let h = handle(rng.random_range(0..count));
        let t = now();
        ctx.store.agents(tenant.id).get(&h).await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let pages = list_pages(ctx, &tenant, count, &handle).await?;
    let pct = |p: f64| percentile_ms(&latencies, p);
    let per_agent = (disk_after - disk_before) as f64 / count as f64;
    println!("bench agents: {count} agents, store {}", ctx.store.location());
    println!(
        "  create:      {:.1} s, {:.0} agents/s ({} per call, {} calls in flight)",
        create_secs,
        count as f64 / create_secs,
        batch,
        concurrency
    );
    println!(
        "  commits:     {commits} ({:.1} create calls and {:.0} agents per commit)",
        (stats.writes - stats_before.writes) as f64 / commits.max(1) as f64,
        count as f64 / commits.max(1) as f64
    );
    println!(
        "  disk:        {:.0} bytes per agent ({} bytes total growth)",
        per_agent,
        disk_after - disk_before
    );
    println!(
        "  lookup:      p50 {:.3} ms, p99 {:.3} ms ({} lookups)",
        pct(0.50),
        pct(0.99),
        latencies.len()
    );
    println!(
        "  list page:   p50 {:.3} ms, p99 {:.3} ms ({} pages of {LIST_PAGE}, as GET /v1/agents and the console read them)",
        percentile_ms(&pages, 0.50),
        percentile_ms(&pages, 0.99),
        pages.len()
    );
    println!(
        "  rss:         start {} KiB, half-way {} KiB, end {} KiB, peak {} KiB",
        rss_start,
        rss_mid,
        rss_end,
        peak_rss_kib()
    );
    Ok(())
}

/// Agents a page of the list holds (the console's page).
const LIST_PAGE: u32 = 50;

/// Times pages of the tenant's agent list as `GET /v1/agents` reads them (one more row than
/// the page, to know whether another follows): the first page, then pages after random
/// handles; sorted.
async fn list_pages(
    ctx: &Ctx,
    tenant: &clade_core::Tenant,
    count: u64,
    handle: &dyn Fn(u64) -> String,
) -> Result<Vec<Duration>> {
    const PAGES: usize = 1000;
    eprintln!("timing {PAGES} pages of the agent list");
    #[allow(clippy::disallowed_methods)] // A benchmark's sample of cursors.
    let mut rng = rand::rng();
    let agents = ctx.store.tenant_scope(tenant.id);
    let mut pages = Vec::with_capacity(PAGES);
    for i in 0..PAGES {
        let cursor = (i > 0).then(|| handle(rng.random_range(0..count)));
        let t = now();
        let page = agents.agents().list(cursor.as_deref(), LIST_PAGE + 1).await?;
        pages.push(t.elapsed());
        anyhow::ensure!(i > 0 || !page.is_empty(), "the agent list is empty");
    }
    pages.sort();
    Ok(pages)
}

/// The `p` quantile (0 to 1) of `sorted`, in milliseconds; 0 for none.
pub(super) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// A number from one of this process's `/proc/self` files (`status`, `io`): the first word
/// after `field`, or 0 where the kernel does not provide it.
pub(super) fn proc_self_number(file: &str, field: &str) -> u64 {
    proc_number("self", file, field)
}

/// [`proc_self_number`] of process `pid` (or `self`).
pub(super) fn proc_number(pid: &str, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

pub(super) fn rss_kib() -> u64 {
    proc_self_number("status", "VmRSS:")
}

pub(super) fn peak_rss_kib() -> u64 {
    proc_self_number("status", "VmHWM:")
}

/// A fresh SQLite store with `durability: full` in `<data-dir>/<name>/<tag>-<now>`, which
/// [`remove_scratch`] deletes after the run.
pub(super) async fn scratch_store(
    ctx: &Ctx,
    name: &str,
    tag: u64,
) -> Result<(std::path::PathBuf, clade_store::DataDir, clade_store::Store)> {
    use clade_store::{DataDir, Durability, Location, Store, StoreOptions};
    let dir = ctx.data_dir.root().join(name).join(format!("{tag}-{}", ctx.store.now().as_millis()));
    let data = DataDir::open(&dir)?;
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..StoreOptions::new(Location::Sqlite(data.sqlite_path()), Durability::Full)
    };
    match Store::open(options).await {
        Ok(store) => Ok((dir, data, store)),
        Err(err) => {
            remove_scratch(&dir);
            Err(err.into())
        }
    }
}

/// Deletes what [`scratch_store`] made.
pub(super) fn remove_scratch(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
}
