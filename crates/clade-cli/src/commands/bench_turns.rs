//! `clade bench turns`: the turn engine against the offline model at 0 ms.
//!
//! Closed loop (the default) measures capacity: each session sends its next message when the
//! previous turn has finished, so latency there is mostly queueing (sessions ÷ throughput).
//! Open loop (`--rate`) measures the latency a turn adds at a given load: messages are sent on
//! a fixed schedule whether or not earlier turns have finished, and each latency counts from
//! the scheduled send time, so a stall shows up in the figures instead of slowing the sender.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clade_core::{AgentConfig, Handle, SystemClock};
use clade_runtime::{Engine, EngineOptions, EnvHints, Envelope, Models};
use clade_store::{
    Agents, DataDir, Durability, Location, NewAgent, Secrets, Source, Store, StoreOptions,
};

use super::bench::{proc_self_number, rss_kib};
use crate::cli::BenchModel;
use crate::context::Ctx;

#[allow(clippy::disallowed_methods)] // Benchmarks measure elapsed time.
pub(super) fn now() -> Instant {
    Instant::now()
}

/// What to measure.
pub(super) struct Plan {
    pub(super) sessions: Vec<usize>,
    pub(super) total: usize,
    pub(super) durability: Vec<String>,
    pub(super) rate: Option<f64>,
    pub(super) keep: bool,
    pub(super) model: BenchModel,
    /// Hot reloads while turns run, this often.
    pub(super) reload_every: Option<Duration>,
    /// Every turn traced over OTLP/HTTP to a receiver in this process.
    pub(super) traces: bool,
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    let Plan { sessions, total, durability: durabilities, rate, keep, model, reload_every, traces } =
        plan;
    let reload_every = *reload_every;
    if reload_every.is_some_and(|every| every.is_zero()) {
        bail!("--reload-every-ms must be at least 1");
    }
    let (total, rate, keep) = (*total, *rate, *keep);
    if total == 0 || sessions.contains(&0) {
        bail!("--turns and every --sessions value must be at least 1");
    }
    if let Some(rate) = rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of turns per second, not {rate}");
    }
    let mode = match rate {
        Some(rate) => format!("open loop at {rate} turns/s offered"),
        None => "closed loop".to_owned(),
    };
    // One stub for every row, in a process of its own as a provider would be: its CPU is
    // reported apart, and its connection buffers stay out of Clade's RSS.
    let stub = match model {
        BenchModel::Stub | BenchModel::StubHttp1 => Some(StubProcess::start().await?),
        BenchModel::Scripted => None,
    };
    let model_config = stub.as_ref().map(|stub| stub.model(*model == BenchModel::Stub));
    let shown = match &stub {
        Some(stub) => format!(
            "clade-stub at {} (process {}; OpenAI protocol over {}, streaming, 0 ms)",
            stub.url,
            stub.pid,
            if *model == BenchModel::Stub { "HTTP/2" } else { "HTTP/1.1" }
        ),
        None => "the scripted model in-process (0 ms, no HTTP)".to_owned(),
    };
    println!("bench turns: {shown}, {total} turns per row, {mode}");
    let traces = match traces {
        true => {
            let sink = TraceSink::start().await?;
            println!(
                "traces: every turn's spans sent over OTLP/HTTP to {} (in this process)",
                sink.url
            );
            Some(sink)
        }
        false => None,
    };
    println!(
        "{:<10} {:>9} {:>10} {:>16} {:>12} {:>12} {:>12} {:>14} {:>14} {:>13} {:>18} {:>18} {:>12} {:>40} {:>14} {:>14}",
        "durability",
        "sessions",
        "turns/s",
        "CPU µs/turn",
        "ack p50/p99",
        "p50 ms",
        "p99 ms",
        "commits/fsyncs",
        "commit p50/p99",
        "fsync p50/p99",
        "fsyncs >5ms (max)",
        "WAL restarts (max)",
        "writer busy",
        "RSS KiB/session active→left, per evicted",
        "actors end→idle",
        "disk KiB/turn"
    );
    for durability in durabilities {
        let level = match durability.as_str() {
            "full" => Durability::Full,
            "normal" => Durability::Normal,
            other => bail!("unknown durability {other:?}: use full or normal"),
        };
        for &n in sessions {
            let dir = ctx
                .data_dir
                .root()
                .join("bench-turns")
                .join(format!("{durability}-{n}-{}", ctx.store.now().as_millis()));
            let load = Load { sessions: n, total, rate, reload_every, traces: traces.clone() };
            let row = measure(&dir, level, &load, model_config.as_ref(), stub.as_ref()).await;
            if keep {
                eprintln!("kept {}", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let row = row?;
            println!(
                "{:<10} {:>9} {:>10.0} {:>16} {:>12} {:>12.3} {:>12.3} {:>14} {:>14} {:>13} {:>18} {:>18} {:>11.0}% {:>40} {:>14} {:>14.1}",
                durability,
                n,
                row.turns_per_sec,
                match row.stub_cpu_micros_per_turn {
                    Some(stub) => format!("{:.0}+{stub:.0}", row.cpu_micros_per_turn),
                    None => format!("{:.0}", row.cpu_micros_per_turn),
                },
                format!("{:.1}/{:.1}", row.ack_p50_ms, row.ack_p99_ms),
                row.p50_ms,
                row.p99_ms,
                format!("{:.2}/{:.2}", row.commits_per_turn, row.syncs_per_turn),
                format!("{:.2}/{:.2}", row.commit_p50_p99_ms.0, row.commit_p50_p99_ms.1),
                format!("{:.2}/{:.2}", row.sync_p50_p99_ms.0, row.sync_p50_p99_ms.1),
                format!("{} ({:.1} ms)", row.slow_syncs, row.slowest_sync_ms),
                format!("{} ({:.1} ms)", row.catch_ups, row.slowest_catch_up_ms),
                row.writer_busy * 100.0,
                format!(
                    "{:.1}→{:.1}, {:+.1}",
                    row.rss_per_session_kib,
                    row.rss_left_per_session_kib,
                    row.rss_per_evicted_session_kib
                ),
                format!("{}→{}", row.active_at_end, row.evicted_left),
                row.disk_kib_per_turn
            );
            if let Some(exported) = row.exported {
                println!(
                    "           {exported} of {} turns' spans taken by the trace receiver 2.5 s after the load",
                    row.finished
                );
            }
            if let Some(every) = reload_every {
                println!(
                    "           {} hot reloads (settings, tools and models swapped every {} ms); slowest turn {:.1} ms, {} of {} turns finished",
                    row.reloads,
                    every.as_millis(),
                    row.max_ms,
                    row.finished,
                    row.offered
                );
            }
        }
    }
    println!(
        "(ack: until the event was durably accepted; p50/p99: until its turn had ended, both from"
    );
    println!(" the send, or in an open loop from the scheduled send;");
    println!(
        " CPU µs/turn: CPU time (user + system) of this process per turn, + the stub's when it runs;"
    );
    println!(
        " RSS/session: growth while all sessions were active, divided by the number of sessions,\n   and what was left of it once their actors had left memory (SQLite's page caches, which\n   grow with the database and stay, connection pools, memory the allocator keeps for reuse:\n   bounded, not held per session); per evicted: what an evicted session itself holds, the\n   growth once as many new sessions again (one turn each) had come and left memory too;"
    );
    println!(
        " commits/fsyncs: per turn; with durability full one fsync of the WAL covers every commit"
    );
    println!(
        " made while the previous fsync ran, and every ack waits for one; with normal a background\n   flush syncs the WAL every 5 ms while commits come, and nothing waits for it (checkpoints'\n   fsyncs of the database file are not counted);"
    );
    println!(" commit p50/p99: how long the writer's transactions took, BEGIN to COMMIT, in ms;");
    println!(" fsync p50/p99: how long one fsync of the WAL took, in ms (to 0.05 ms);");
    println!(" fsyncs >5ms: the disk's stalls, which every write waiting for that fsync shares;");
    println!(
        " WAL restarts: checkpoints the writer ran between two batches so that SQLite's WAL starts\n   over; writes wait while one runs"
    );
    println!(
        " actors: session actors in memory when the load ended, and 2.5 s later with idle_secs = 1;"
    );
    println!(
        " disk KiB/turn: what this process wrote to disk (WAL, checkpoints), to 2.5 s after the load)"
    );
    Ok(())
}

pub(super) struct Row {
    /// Exports the trace receiver took, when traced.
    exported: Option<u64>,
    writer_busy: f64,
    /// CPU time of this process per turn (every thread: engine, writer, readers, HTTP client).
    pub(super) cpu_micros_per_turn: f64,
    /// CPU time of the stub's process per turn, when the model is the stub.
    pub(super) stub_cpu_micros_per_turn: Option<f64>,
    active_at_end: usize,
    evicted_left: usize,
    pub(super) turns_per_sec: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    /// Until the event was durably accepted (the `202` of `POST /v1/events`).
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    commits_per_turn: f64,
    /// fsyncs of the WAL per turn (the syncer's, with `durability: full`).
    syncs_per_turn: f64,
    /// fsyncs of the WAL that took over 5 ms, and the slowest: the disk's own stalls.
    slow_syncs: u64,
    slowest_sync_ms: f64,
    /// How long the fsyncs of the WAL took, median and 99th percentile (to 0.05 ms).
    sync_p50_p99_ms: (f64, f64),
    /// How long the writer's transactions took, median and 99th percentile.
    commit_p50_p99_ms: (f64, f64),
    /// Checkpoints the writer ran itself to start the WAL over, and the slowest: writes wait.
    catch_ups: u64,
    slowest_catch_up_ms: f64,
    rss_per_session_kib: f64,
    /// RSS growth still there once the actors had left memory, per session.
    rss_left_per_session_kib: f64,
    /// RSS growth per session from a second wave of as many new sessions, one turn each, once
    /// those had left memory as well: what an evicted session holds (0 when nothing is kept
    /// per session; the allocator reuses what the first wave freed).
    rss_per_evicted_session_kib: f64,
    /// Bytes written to disk per turn, in KiB: what every fsync and checkpoint scales with.
    disk_kib_per_turn: f64,
    /// Hot reloads during the load.
    reloads: u64,
    /// The slowest turn, in ms.
    max_ms: f64,
    /// Turns that ended, of those offered.
    finished: usize,
    offered: usize,
}

/// One row's load.
pub(super) struct Load {
    pub(super) sessions: usize,
    pub(super) total: usize,
    pub(super) rate: Option<f64>,
    pub(super) reload_every: Option<Duration>,
    /// Where the turns' spans go, when traced.
    pub(super) traces: Option<TraceSink>,
}

/// An OTLP/HTTP receiver in this process: it takes every export (HTTP/1.1, kept alive) with an
/// empty `200` and counts them, so a traced run pays for the exporter and a receiver as cheap
/// as one can be.
#[derive(Clone)]
pub(super) struct TraceSink {
    url: String,
    taken: Arc<AtomicU64>,
}

impl TraceSink {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let taken = Arc::new(AtomicU64::new(0));
        let counted = taken.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(Self::take(socket, counted.clone()));
            }
        });
        Ok(Self { url, taken })
    }

    async fn take(socket: tokio::net::TcpStream, taken: Arc<AtomicU64>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let mut socket = tokio::io::BufReader::new(socket);
        loop {
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                match socket.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if socket.read_exact(&mut body).await.is_err() {
                return;
            }
            taken.fetch_add(1, AtomicOrdering::Relaxed);
            let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if socket.get_mut().write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

pub(super) async fn measure(
    dir: &std::path::Path,
    durability: Durability,
    load: &Load,
    model: Option<&clade_config::ModelConfig>,
    stub: Option<&StubProcess>,
) -> Result<Row> {
    let Load { sessions, total, rate, reload_every, ref traces } = *load;
    let data = DataDir::open(dir)?;
    let location = Location::Sqlite(data.sqlite_path());
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..StoreOptions::new(location, durability)
    };
    let store = Store::open(options).await?;
    let agents = Agents::new(store.clone(), data.clone());
    let tenant = store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await?;
    let agent = agents
        .create(
            tenant.id,
            NewAgent {
                handle: Handle::parse("bench")?,
                display_name: None,
                config: AgentConfig::default(),
            },
        )
        .await?;
    agents.workspace(&agent)?;
    let secrets = Secrets::new(store.clone(), data.master_key_path(), None);
    let mut config = clade_config::Config::default();
    if let Some(model) = model {
        config.models.insert("stub".into(), model.clone());
        config.routing.default = vec!["stub".into()];
    }
    let models = Models::new(
        &config,
        EnvHints::default(),
        store.clone(),
        secrets.clone(),
        Arc::new(SystemClock),
    );
    let options_sessions = options_sessions_for_reload(&config);
    let options = EngineOptions {
        sessions: options_sessions,
        bindings: Vec::new(),
        default_agent: None,
        tools: std::sync::Arc::new(clade_runtime::ToolRunner::new(
            clade_tools::Registry::new(),
            store.clone(),
            agents.clone(),
            None,
            &clade_config::ToolsConfig::default(),
        )),
        tenants: Default::default(),
        failpoints: clade_runtime::Failpoints::none(),
    };
    let engine = Engine::start(store.clone(), agents, models, options).await?;
    // Traced as `clade serve` traces: the exporter is an outbox subscriber.
    let taken_before = traces.as_ref().map(|sink| sink.taken.load(AtomicOrdering::Relaxed));
    let _tracing = match traces {
        Some(sink) => {
            let options = clade_otlp::Options {
                endpoint: sink.url.clone(),
                protocol: clade_otlp::Protocol::Http,
                headers: Vec::new(),
                content: clade_otlp::Content::Omitted,
                service_name: "clade-bench".into(),
                instance: "bench".into(),
                timeout: Duration::from_secs(10),
                max_attempts: 8,
            };
            let exporter = clade_otlp::Exporter::new(store.clone(), options)?;
            Some(clade_runtime::outbox::spawn(
                store.clone(),
                vec![exporter.subscriber()],
                engine.outbox_signal(),
            ))
        }
        None => None,
    };
    // Hot reloads while the load runs: what a new configuration revision swaps in.
    let reloads = Arc::new(AtomicU64::new(0));
    let reloading = reload_every.map(|every| {
        let (engine, reloads) = (engine.clone(), reloads.clone());
        let (sessions, config) = (options_sessions_for_reload(&config), config.clone());
        tokio::spawn(async move {
            loop {
                #[allow(clippy::disallowed_methods)] // A benchmark measures real time.
                tokio::time::sleep(every).await;
                engine.reload(clade_runtime::Settings::new(
                    sessions.clone(),
                    Vec::new(),
                    None,
                    Default::default(),
                ));
                let tools = engine.tools();
                tools.reload(clade_tools::Registry::new(), &config.tools, None);
                engine.reload_models(engine.models().succeed(&config, EnvHints::default()));
                reloads.fetch_add(1, AtomicOrdering::Relaxed);
            }
        })
    });
    let rss_before = rss_kib();
    let per_session = total.div_ceil(sessions);
    let stats_before = store.write_stats();
    let written_before = written_bytes();
    let cpu_before = cpu_micros("self");
    let stub_cpu_before = stub.map(StubProcess::cpu_micros);
    let started = now();
    let peak_rss = Arc::new(AtomicU64::new(rss_before));
    let turn: TurnFn = {
        let (engine, tenant) = (engine.clone(), tenant.clone());
        Arc::new(move |channel, i| {
            let (engine, tenant) = (engine.clone(), tenant.clone());
            Box::pin(async move { one_turn(&engine, &tenant, &channel, i).await })
        })
    };
    let latencies = match rate {
        None => closed_loop(&turn, sessions, per_session, &peak_rss).await?,
        Some(rate) => open_loop(&turn, sessions, per_session, rate, started, &peak_rss).await?,
    };
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(task) = reloading {
        task.abort();
    }
    let cpu = cpu_micros("self").saturating_sub(cpu_before);
    let stub_cpu =
        stub.zip(stub_cpu_before).map(|(stub, before)| stub.cpu_micros().saturating_sub(before));
    let stats = store.write_stats();
    let commits = stats.commits - stats_before.commits;
    let writer_busy = (stats.busy_micros - stats_before.busy_micros) as f64 / 1e6 / elapsed;
    let (mut acks, mut latencies): (Vec<Duration>, Vec<Duration>) = latencies.into_iter().unzip();
    acks.sort();
    latencies.sort();
    let pct = |sorted: &[Duration], p: f64| {
        sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
    };
    let turns = latencies.len();
    let rss_growth = peak_rss.load(AtomicOrdering::Relaxed).saturating_sub(rss_before);
    // Idle actors leave memory after `idle_secs`; check that they did.
    let active_at_end = engine.active_sessions();
    #[allow(clippy::disallowed_methods)] // A benchmark measures real time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let evicted_left = engine.active_sessions();
    let rss_idle = rss_kib();
    let rss_left = rss_idle.saturating_sub(rss_before);
    // Read before the second wave, whose disk writes are not the load's.
    let written = written_bytes().saturating_sub(written_before);
    let exported = traces
        .as_ref()
        .zip(taken_before)
        .map(|(sink, before)| sink.taken.load(AtomicOrdering::Relaxed) - before);
    let rss_evicted = evicted_wave(&engine, &tenant, sessions).await?;
    Ok(Row {
        exported,
        reloads: reloads.load(AtomicOrdering::Relaxed),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        finished: turns,
        offered: per_session * sessions,
        writer_busy,
        cpu_micros_per_turn: cpu as f64 / turns as f64,
        stub_cpu_micros_per_turn: stub_cpu.map(|cpu| cpu as f64 / turns as f64),
        active_at_end,
        evicted_left,
        turns_per_sec: turns as f64 / elapsed,
        p50_ms: pct(&latencies, 0.5),
        p99_ms: pct(&latencies, 0.99),
        ack_p50_ms: pct(&acks, 0.5),
        ack_p99_ms: pct(&acks, 0.99),
        commits_per_turn: commits as f64 / turns as f64,
        // The syncer's (full: every ack waits for one) and the flusher's (normal: none does).
        syncs_per_turn: (stats.syncs + stats.flushes - stats_before.syncs - stats_before.flushes)
            as f64
            / turns as f64,
        slow_syncs: stats.slow_syncs - stats_before.slow_syncs,
        slowest_sync_ms: stats.slowest_sync_micros as f64 / 1e3,
        sync_p50_p99_ms: p50_p99_ms(&stats.sync_times, &stats_before.sync_times),
        commit_p50_p99_ms: p50_p99_ms(&stats.commit_times, &stats_before.commit_times),
        catch_ups: stats.catch_ups - stats_before.catch_ups,
        slowest_catch_up_ms: stats.slowest_catch_up_micros as f64 / 1e3,
        rss_per_session_kib: rss_growth as f64 / sessions as f64,
        rss_left_per_session_kib: rss_left as f64 / sessions as f64,
        rss_per_evicted_session_kib: (rss_evicted as f64 - rss_idle as f64) / sessions as f64,
        disk_kib_per_turn: written as f64 / 1024.0 / turns as f64,
    })
}

/// clade-stub, run as `clade stub` in a child process that exits when this one does (its
/// standard input closes then, even on `kill -9`).
pub(super) struct StubProcess {
    pub(super) url: String,
    pub(super) pid: u32,
    _child: tokio::process::Child,
}

impl StubProcess {
    // This binary itself as the model server, not an agent's tool: the sandbox is for those.
    #[allow(clippy::disallowed_methods)]
    pub(super) async fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find this binary to start the stub")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["stub", "--listen", "127.0.0.1:0", "--exit-with-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the stub model (`clade stub`)")?;
        let pid = child.id().context("the stub model exited as it started")?;
        let (line, _) = first_line(&mut child, "the stub model", Duration::from_secs(10)).await?;
        let url = clade_stub::standalone::parse_ready_line(&line).with_context(|| {
            format!("the stub model did not start; it said {line:?} (see its error above)")
        })?;
        Ok(Self { url, pid, _child: child })
    }

    /// The stub as the model every turn calls, over HTTP/2 or HTTP/1.1.
    pub(super) fn model(&self, http2: bool) -> clade_config::ModelConfig {
        clade_config::ModelConfig {
            provider: clade_config::ProviderKind::Openai,
            model: Some("stub".into()),
            base_url: Some(format!("{}/v1", self.url)),
            api_key_env: None,
            api_key_secret: None,
            oauth: None,
            stream: true,
            headers: Default::default(),
            price: Default::default(),
            max_tokens: None,
            context_window: None,
            tool_tokens: None,
            http2,
            concurrency: None,
        }
    }

    pub(super) fn cpu_micros(&self) -> u64 {
        cpu_micros(&self.pid.to_string())
    }
}

/// `clade serve` on `dir`, in a process of its own that is killed when this is dropped.
pub(super) struct GatewayProcess {
    pub(super) url: String,
    /// The CLI token it wrote to `dir`: the default tenant's operator.
    pub(super) token: String,
    pub(super) pid: u32,
    _child: tokio::process::Child,
}

impl GatewayProcess {
    // This binary itself as the gateway under measurement, not an agent's tool.
    #[allow(clippy::disallowed_methods)]
    pub(super) async fn start(dir: &std::path::Path) -> Result<Self> {
        Self::start_with(dir, &[]).await
    }

    /// [`Self::start`] with `env` set in the gateway's environment besides this one's.
    #[allow(clippy::disallowed_methods)]
    pub(super) async fn start_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find this binary to start a gateway")?;
        let mut command = tokio::process::Command::new(exe);
        for var in
            ["CLADE_STORE", "CLADE_CONFIG", "CLADE_TENANT", "CLADE_AGENT", "CLADE_MASTER_KEY"]
        {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let mut child = command
            .env("RUST_LOG", "warn")
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a gateway (`clade serve`)")?;
        let pid = child.id().context("the gateway exited as it started")?;
        let (line, rest) = first_line(&mut child, "the gateway", Duration::from_secs(60)).await?;
        // Keep reading what it prints, so it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut rest = rest;
            while let Ok(Some(_)) = rest.next_line().await {}
        });
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .with_context(|| format!("the gateway did not start; it said {line:?}"))?
            .to_owned();
        let token = std::fs::read_to_string(dir.join("token"))
            .context("the gateway wrote no CLI token")?
            .trim()
            .to_owned();
        Ok(Self { url, token, pid, _child: child })
    }

    /// An HTTP client keeping up to `connections` connections to this gateway, once it has
    /// made the agent `bench` with its defaults.
    pub(super) async fn client_with_agent(&self, connections: usize) -> Result<reqwest::Client> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections.max(1))
            .build()
            .context("cannot build the HTTP client")?;
        let created = http
            .post(format!("{}/v1/agents", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "handle": "bench" }))
            .send()
            .await
            .context("the gateway did not answer")?;
        if !created.status().is_success() {
            let answer = created.text().await.unwrap_or_default();
            bail!("the gateway did not create the agent: {answer}");
        }
        Ok(http)
    }
}

/// The first line a child benchmark process (`what`) prints on its piped stdout, where it
/// says where it listens, within `within`; and the rest of its output.
pub(super) async fn first_line(
    child: &mut tokio::process::Child,
    what: &str,
    within: Duration,
) -> Result<(String, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>)> {
    use tokio::io::AsyncBufReadExt as _;
    let stdout = child.stdout.take().with_context(|| format!("{what}'s output is not readable"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(within, lines.next_line())
        .await
        .with_context(|| format!("{what} did not say where it listens within {within:?}"))??
        .unwrap_or_default();
    Ok((line, lines))
}

/// CPU time (user + system, every thread) of process `pid` (or `self`), in µs.
pub(super) fn cpu_micros(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the command name, which may itself hold spaces and parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 =
        fields.get(11..13).map_or(0, |f| f.iter().filter_map(|n| n.parse::<u64>().ok()).sum());
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    ticks.saturating_mul(1_000_000) / per_second
}

/// Bytes this process has caused to be written to storage, counted by the kernel when a page
/// is first dirtied (`/proc/self/io`).
fn written_bytes() -> u64 {
    proc_self_number("io", "write_bytes:")
}

/// Median and 99th percentile, in ms, of what was counted between `before` and `after`.
fn p50_p99_ms(after: &clade_store::Durations, before: &clade_store::Durations) -> (f64, f64) {
    let times = after.since(before);
    let ms = |q| times.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    (ms(0.5), ms(0.99))
}

/// Sends message `i` on channel `channel` (a session of its own), waits for its turn to end,
/// and returns when the message was accepted: the engine's [`one_turn`], or a request over
/// HTTP.
pub(super) type TurnFn = Arc<
    dyn Fn(String, usize) -> futures::future::BoxFuture<'static, Result<Instant>> + Send + Sync,
>;

/// Each session sends its next message when its previous turn has ended.
pub(super) async fn closed_loop(
    turn: &TurnFn,
    sessions: usize,
    per_session: usize,
    peak_rss: &Arc<AtomicU64>,
) -> Result<Vec<(Duration, Duration)>> {
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let (turn, peak) = (turn.clone(), peak_rss.clone());
        let fut = async move {
            let mut latencies = Vec::with_capacity(per_session);
            for i in 0..per_session {
                let t = now();
                let acked = turn(format!("c{s}"), i).await?;
                latencies.push((acked.duration_since(t), t.elapsed()));
                if i == per_session / 2 {
                    peak.fetch_max(rss_kib(), AtomicOrdering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        };
        tasks.push(tokio::spawn(fut));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}

/// Messages go out on a fixed schedule, spread evenly: message `i` of session `s` is number
/// `i·sessions + s`. A thread of its own keeps the schedule: tokio's timer rounds each sleep up
/// to the next millisecond, which would add up to 1 ms to every latency counted from the
/// scheduled send, and a sender on the runtime would itself be delayed by a stall it should
/// measure.
pub(super) async fn open_loop(
    turn: &TurnFn,
    sessions: usize,
    per_session: usize,
    rate: f64,
    started: Instant,
    peak_rss: &Arc<AtomicU64>,
) -> Result<Vec<(Duration, Duration)>> {
    let runtime = tokio::runtime::Handle::current();
    let (turn, peak) = (turn.clone(), peak_rss.clone());
    let total = sessions * per_session;
    let sent = tokio::task::spawn_blocking(move || {
        let mut in_flight = Vec::with_capacity(total);
        for k in 0..total {
            let (i, s) = (k / sessions, k % sessions);
            let scheduled = started + Duration::from_secs_f64(k as f64 / rate);
            let wait = scheduled.saturating_duration_since(now());
            if !wait.is_zero() {
                #[allow(clippy::disallowed_methods)] // A benchmark's open-loop schedule.
                std::thread::sleep(wait);
            }
            let turn = turn.clone();
            in_flight.push(runtime.spawn(async move {
                let acked = turn(format!("c{s}"), i).await?;
                Ok::<_, anyhow::Error>((acked.duration_since(scheduled), scheduled.elapsed()))
            }));
            if k == total / 2 {
                peak.fetch_max(rss_kib(), AtomicOrdering::Relaxed);
            }
        }
        in_flight
    })
    .await?;
    let mut latencies = Vec::with_capacity(total);
    for turn in sent {
        latencies.push(turn.await??);
    }
    Ok(latencies)
}

/// `sessions` new sessions, one turn each, all at once; returns the process's RSS (KiB) 2.5 s
/// later, once their actors have left memory.
async fn evicted_wave(
    engine: &Engine,
    tenant: &clade_core::Tenant,
    sessions: usize,
) -> Result<u64> {
    let mut tasks = Vec::with_capacity(sessions);
    for s in 0..sessions {
        let (engine, tenant) = (engine.clone(), tenant.clone());
        tasks.push(tokio::spawn(async move {
            one_turn(&engine, &tenant, &format!("evicted{s}"), 0).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    #[allow(clippy::disallowed_methods)] // A benchmark measures real time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Shown, not fatal: the row's `actors` column already tells whether the load's own
    // sessions left memory.
    let left = engine.active_sessions();
    if left > 0 {
        eprintln!(
            "warning: {left} sessions were still in memory 2.5 s after the second wave's turns"
        );
    }
    Ok(rss_kib())
}

/// Sends message `i` on `channel` (a session of its own) and waits for its turn to end;
/// returns when the event was accepted.
async fn one_turn(
    engine: &Engine,
    tenant: &clade_core::Tenant,
    channel: &str,
    i: usize,
) -> Result<Instant> {
    let envelope = Envelope {
        tenant: tenant.clone(),
        agent: Some("bench".into()),
        text: format!("message {i}"),
        source: Source { platform: "bench".into(), channel: channel.into(), actor: "a".into() },
        idempotency_key: None,
    };
    // As `POST /v1/events` with `wait: true` does.
    let (_, watch) = engine.submit_and_watch(envelope).await?;
    let acked = now();
    watch.ended(Duration::from_secs(60)).await?.context("a turn did not end within 60 s")?;
    Ok(acked)
}

/// The sessions' settings the benchmark's engine runs with (and a reload swaps in again).
fn options_sessions_for_reload(config: &clade_config::Config) -> clade_config::SessionsConfig {
    let mut sessions = config.sessions.clone();
    sessions.max_queued = 1_000_000;
    sessions.idle_secs = 1;
    sessions
}
