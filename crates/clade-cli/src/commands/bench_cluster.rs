//! `clade bench cluster`: 1, 2 and 3 `clade serve` nodes of one cluster on this machine, on a
//! schema of their own in the PostgreSQL database given and the NATS server given, with the
//! offline model. For each size: turns per second from many sessions over HTTP (each event
//! waiting for its turn, sent to the nodes in turn), CPU per turn on each node, and the
//! database's commits, rows and WAL per turn. With two nodes or more: the time from killing a
//! node (SIGKILL) to each of its sessions answering again through the others, and how much
//! later a stream on another node sees a session's events than a stream on the node running it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt as _;
use serde_json::json;

use super::bench::{now, percentile_ms, wall_sleep};
use super::bench_neighbours::clade;
use super::bench_turns::{GatewayProcess, cpu_micros};
use crate::context::Ctx;

/// What to run.
pub(crate) type Plan = crate::cli::BenchClusterArgs;

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if !plan.database.starts_with("postgres://") && !plan.database.starts_with("postgresql://") {
        bail!("--database: a cluster's nodes share a PostgreSQL database; give postgres://…");
    }
    if plan.nodes.is_empty() || plan.nodes.iter().any(|n| !(1..=8).contains(n)) {
        bail!("--nodes: sizes of 1 to 8 nodes, such as 1,2,3");
    }
    if plan.sessions == 0 || plan.seconds == 0 || plan.concurrency == 0 {
        bail!("--sessions, --seconds and --concurrency must each be above 0");
    }
    println!(
        "bench cluster: {} sessions, {} events waiting at once (sent to {}), {} s per size, {} shards, leases of {} s; the offline model; PostgreSQL {}; NATS {}",
        plan.sessions,
        plan.concurrency,
        if plan.to_holder { "the node running the session" } else { "the nodes in turn" },
        plan.seconds,
        plan.shards,
        plan.lease_ttl_secs,
        redacted(&plan.database),
        plan.nats
    );
    println!(
        "{:>5} | {:>9} {:>9} | {:>17} | {:>22} | {:>17} | {:>9} {:>8} {:>9} | {:>17} | {:>17}",
        "nodes",
        "turns",
        "turns/s",
        "answer p50/p99",
        "CPU µs/turn per node",
        "PG, NATS, client",
        "commits",
        "rows",
        "WAL B",
        "takeover p50/p99",
        "cross-node p50/p99"
    );
    let mut rates = Vec::new();
    for &nodes in &plan.nodes {
        let scratch =
            ctx.data_dir.root().join(format!("bench-cluster-{}-{nodes}", std::process::id()));
        let name = format!("clade_bench_{}_{nodes}", std::process::id());
        let schema = Schema::create(&plan.database, &name).await?;
        let outcome = one_size(&scratch, &schema, plan, nodes).await;
        schema.drop_it().await;
        let _ = std::fs::remove_dir_all(&scratch);
        let size = outcome?;
        size.print(nodes);
        rates.push((nodes, size.turns_per_second));
    }
    if let (Some((1, one)), Some((most, many))) = (rates.first(), rates.last())
        && *most > 1
    {
        println!(
            "{most} nodes deliver {:.2}x one node's turns/s (goal on one 2-core machine: at least 0.8x)",
            many / one.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "(answer: from sending an event to its turn's answer, under load; CPU per turn of each node, then of PostgreSQL's processes, the NATS server and this load generator; per turn: database commits, rows written and WAL bytes per turn, from pg_stat_database and pg_stat_wal, the whole database's; takeover: from SIGKILL of the last node to each of its sessions answering through another, goal p99 within the lease's time + 2 s; cross-node: a stream on another node sees each event this much after a stream on the node running it, goal p99 under 10 ms)"
    );
    Ok(())
}

/// The store's URL without its password.
pub(super) fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((left, right)) if left.matches(':').count() > 1 => {
            let user = left.rsplit_once(':').map_or(left, |(user, _)| user);
            format!("{user}:***@{right}")
        }
        _ => url.to_owned(),
    }
}

/// What one cluster size measured.
struct Size {
    turns: usize,
    turns_per_second: f64,
    /// From sending an event to its turn's answer, p50 and p99 in ms.
    answer: (f64, f64),
    cpu_per_turn: Vec<u64>,
    /// CPU µs per turn of PostgreSQL's processes, the NATS server's and the load generator's.
    others_per_turn: [u64; 3],
    commits: f64,
    rows: f64,
    wal_bytes: f64,
    takeover: Option<(f64, f64)>,
    cross_node: Option<(f64, f64)>,
}

impl Size {
    fn print(&self, nodes: usize) {
        let cpu: Vec<String> = self.cpu_per_turn.iter().map(u64::to_string).collect();
        let pair = |p: Option<(f64, f64)>| {
            p.map_or_else(|| "-".to_owned(), |(p50, p99)| format!("{p50:.1}/{p99:.1} ms"))
        };
        println!(
            "{nodes:>5} | {:>9} {:>9.0} | {:>17} | {:>22} | {:>17} | {:>9.2} {:>8.1} {:>9.0} | {:>17} | {:>17}",
            self.turns,
            self.turns_per_second,
            pair(Some(self.answer)),
            cpu.join(" "),
            self.others_per_turn.map(|n| n.to_string()).join(" "),
            self.commits,
            self.rows,
            self.wal_bytes,
            pair(self.takeover),
            pair(self.cross_node)
        );
    }
}

/// A schema of the bench's (or the demo's) own in the given database.
pub(super) struct Schema {
    admin: String,
    name: String,
    pub(super) url: String,
}

impl Schema {
    pub(super) async fn create(admin: &str, name: &str) -> Result<Self> {
        let name = name.to_owned();
        let pool = sqlx::PgPool::connect(admin)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {}", redacted(admin)))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&pool)
            .await
            .with_context(|| format!("cannot create the bench's schema {name}"))?;
        pool.close().await;
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-c%20search_path%3D{name}");
        Ok(Self { admin: admin.to_owned(), name, url })
    }

    pub(super) async fn drop_it(&self) {
        if let Ok(pool) = sqlx::PgPool::connect(&self.admin).await {
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }

    /// The database's counters now: commits, rows written, WAL bytes.
    async fn counters(&self) -> Result<(i64, i64, i64)> {
        let pool = sqlx::PgPool::connect(&self.admin).await?;
        let row: (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .context("cannot read pg_stat_database")?;
        let wal: (i64,) = sqlx::query_as("SELECT wal_bytes::bigint FROM pg_stat_wal")
            .fetch_one(&pool)
            .await
            .context("cannot read pg_stat_wal (PostgreSQL 14 or later)")?;
        pool.close().await;
        Ok((row.0, row.1, wal.0))
    }
}

/// The data dirs of a cluster's nodes on this machine, each with a clade.yaml joining it.
pub(super) struct NodeDirs<'a> {
    pub(super) cluster: &'a str,
    pub(super) store: &'a str,
    pub(super) nats: &'a str,
    pub(super) shards: u32,
    pub(super) lease_ttl_secs: u64,
}

impl NodeDirs<'_> {
    /// `n0`, `n1`, … under `scratch`, one per node.
    pub(super) fn make(&self, scratch: &Path, nodes: usize) -> Result<Vec<std::path::PathBuf>> {
        let mut dirs = Vec::new();
        for i in 0..nodes {
            let dir = scratch.join(format!("n{i}"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let config = format!(
                "store:\n  url: \"{}\"\ncluster:\n  name: {}\n  node: n{i}\n  nats_url: {}\n  shards: {}\n  lease_ttl_secs: {}\n",
                self.store, self.cluster, self.nats, self.shards, self.lease_ttl_secs
            );
            std::fs::write(dir.join("clade.yaml"), config)
                .context("cannot write a node's clade.yaml")?;
            dirs.push(dir);
        }
        Ok(dirs)
    }
}

/// One node: its process and where it answers.
struct Node {
    name: String,
    process: GatewayProcess,
}

async fn one_size(scratch: &Path, schema: &Schema, plan: &Plan, nodes: usize) -> Result<Size> {
    let exe = std::env::current_exe().context("cannot find this binary to start the nodes")?;
    let cluster = NodeDirs {
        cluster: &format!("bench-{}-{nodes}", std::process::id()),
        store: &schema.url,
        nats: &plan.nats,
        shards: plan.shards,
        lease_ttl_secs: plan.lease_ttl_secs,
    };
    let dirs = cluster.make(scratch, nodes)?;
    eprintln!("{nodes} node(s): creating the agent, starting the nodes");
    clade(&exe, &dirs[0], &["agents", "create", "bench"]).await?;
    let mut running = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let process = GatewayProcess::start(dir).await?;
        running.push(Node { name: format!("n{i}"), process });
    }
    let held = until_spread(&exe, &dirs[0], nodes, plan.shards).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(plan.concurrency).build()?;
    eprintln!("{nodes} node(s): a first event on each of {} sessions", plan.sessions);
    let sessions = warm_up(&client, &running, plan).await?;
    let cpu_before: Vec<u64> =
        running.iter().map(|n| cpu_micros(&n.process.pid.to_string())).collect();
    let counters_before = schema.counters().await?;
    let others_before = others_cpu_micros();
    eprintln!("{nodes} node(s): {} s of load", plan.seconds);
    let route = routes(&running, &sessions, &held, plan);
    let (answers, elapsed) = load(&client, &running, &route, plan).await;
    let turns = answers.len();
    let others_after = others_cpu_micros();
    let others_per_turn = std::array::from_fn(|i| {
        others_after[i].saturating_sub(others_before[i]) / turns.max(1) as u64
    });
    // Backends report their statistics within a second of their last transaction.
    wall_sleep(Duration::from_millis(1500)).await;
    let counters_after = schema.counters().await?;
    let cpu_per_turn = running
        .iter()
        .zip(&cpu_before)
        .map(|(n, before)| {
            cpu_micros(&n.process.pid.to_string()).saturating_sub(*before) / turns.max(1) as u64
        })
        .collect();
    let per_turn = |after: i64, before: i64| (after - before) as f64 / turns.max(1) as f64;
    let cross_node = if nodes > 1 {
        Some(cross_node(&client, &running, &sessions, &held, plan.shards).await?)
    } else {
        None
    };
    let takeover = if nodes > 1 {
        Some(takeover(&client, running, &sessions, &held, plan).await?)
    } else {
        None
    };
    Ok(Size {
        turns,
        turns_per_second: turns as f64 / elapsed.as_secs_f64().max(1e-9),
        answer: (percentile_ms(&answers, 0.5), percentile_ms(&answers, 0.99)),
        cpu_per_turn,
        others_per_turn,
        commits: per_turn(counters_after.0, counters_before.0),
        rows: per_turn(counters_after.1, counters_before.1),
        wal_bytes: per_turn(counters_after.2, counters_before.2),
        takeover,
        cross_node,
    })
}

/// CPU µs so far of PostgreSQL's processes, of the NATS server and of this process: what
/// else on the machine works for the nodes' turns.
fn others_cpu_micros() -> [u64; 3] {
    let (mut postgres, mut nats) = (0, 0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim() {
            "postgres" => postgres += cpu_micros(&pid),
            "nats-server" => nats += cpu_micros(&pid),
            _ => {}
        }
    }
    [postgres, nats, cpu_micros("self")]
}

/// Waits until `nodes` nodes hold every shard between them; the shards each holds, by name.
pub(super) async fn until_spread(
    exe: &Path,
    dir: &Path,
    nodes: usize,
    shards: u32,
) -> Result<HashMap<String, Vec<u32>>> {
    let started = now();
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&clade(exe, dir, &["node", "list", "--json"]).await?)?;
        // A node heard but holding nothing yet is not one of them.
        let held: HashMap<String, Vec<u32>> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|node| {
                let shards = node["shards"].as_array().into_iter().flatten();
                let shards = shards.filter_map(|s| s.as_u64().and_then(|s| u32::try_from(s).ok()));
                (node["node"].as_str().unwrap_or_default().to_owned(), shards.collect::<Vec<_>>())
            })
            .filter(|(_, shards)| !shards.is_empty())
            .collect();
        let total: usize = held.values().map(Vec::len).sum();
        if held.len() == nodes && total == shards as usize {
            return Ok(held);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{nodes} nodes did not spread the shards between them within 120 s: {held:?}");
        }
        wall_sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `text` on session `k` through `node` and waits for its turn: the session's id, once
/// the turn completed.
async fn ask(client: &reqwest::Client, node: &Node, k: usize, text: &str) -> Result<String> {
    let channel = format!("s{k}");
    let answer = ask_as(client, &node.process, "bench", &channel, text).await;
    let answer = answer.with_context(|| format!("node {}", node.name))?;
    Ok(answer["session_id"].as_str().unwrap_or_default().to_owned())
}

/// Sends `text` to `agent` from `channel` through `gateway` and waits for the turn: the
/// answer, once the turn completed.
pub(super) async fn ask_as(
    client: &reqwest::Client,
    gateway: &GatewayProcess,
    agent: &str,
    channel: &str,
    text: &str,
) -> Result<serde_json::Value> {
    let body = json!({ "agent": agent, "text": text, "wait": true,
        "source": { "platform": "bench", "channel": channel, "actor": "u" } });
    let response = client
        .post(format!("{}/v1/events", gateway.url))
        .bearer_auth(&gateway.token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if status != reqwest::StatusCode::OK
        || answer["status"] != clade_core::TurnStatus::Completed.as_str()
    {
        bail!("answered {status}: {answer}");
    }
    Ok(answer)
}

/// One event on each session, `concurrency` at a time: the sessions' ids, by number.
async fn warm_up(client: &reqwest::Client, nodes: &[Node], plan: &Plan) -> Result<Vec<String>> {
    let asks = (0..plan.sessions).map(|k| async move {
        ask(client, &nodes[k % nodes.len()], k, "hello").await.map(|id| (k, id))
    });
    let mut ids = vec![String::new(); plan.sessions];
    let mut answers = futures::stream::iter(asks).buffer_unordered(plan.concurrency);
    while let Some(answer) = answers.next().await {
        let (k, id) = answer?;
        ids[k] = id;
    }
    Ok(ids)
}

/// `concurrency` workers, each sending its next event (to the next session, through the next
/// node) as soon as its last one's turn ended, for `seconds`: how long each completed turn
/// took to answer (sorted), and the time.
/// Which node each session's events go to: the nodes in turn, or (`--to-holder`) the one
/// running the session, as a load balancer aware of the shards would send them.
fn routes(
    nodes: &[Node],
    sessions: &[String],
    held: &HashMap<String, Vec<u32>>,
    plan: &Plan,
) -> Vec<usize> {
    (0..sessions.len())
        .map(|k| {
            let holder = nodes.iter().position(|node| {
                let shards = held.get(&node.name).map_or(&[][..], Vec::as_slice);
                in_shards(&sessions[k], shards, plan.shards)
            });
            match holder {
                Some(holder) if plan.to_holder => holder,
                _ => k % nodes.len(),
            }
        })
        .collect()
}

async fn load(
    client: &reqwest::Client,
    nodes: &[Node],
    route: &[usize],
    plan: &Plan,
) -> (Vec<Duration>, Duration) {
    let next = AtomicUsize::new(0);
    let answers = std::sync::Mutex::new(Vec::new());
    let started = now();
    let until = started + Duration::from_secs(plan.seconds);
    let worker = async || {
        while now() < until {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let session = k % plan.sessions;
            let node = &nodes[route.get(session).copied().unwrap_or(0) % nodes.len()];
            let sent = now();
            if ask(client, node, session, "go on").await.is_ok() {
                answers.lock().unwrap_or_else(|e| e.into_inner()).push(sent.elapsed());
            }
        }
    };
    futures::future::join_all((0..plan.concurrency).map(|_| worker())).await;
    let elapsed = started.elapsed();
    let mut answers = answers.into_inner().unwrap_or_else(|e| e.into_inner());
    answers.sort();
    (answers, elapsed)
}

/// Whether session `id` lies in one of `shards` of `count`.
pub(super) fn in_shards(id: &str, shards: &[u32], count: u32) -> bool {
    clade_core::SessionId::parse(id)
        .is_ok_and(|id| shards.contains(&clade_core::shard::shard_of(id.as_bytes(), count)))
}

/// A stream of a session's events on `node`: each event's name and when it arrived, in order.
async fn follow(
    client: reqwest::Client,
    node: &Node,
    session: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>> {
    let response = client
        .get(format!("{}/v1/sessions/{session}/events", node.process.url))
        .bearer_auth(&node.process.token)
        .send()
        .await?
        .error_for_status()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut pending = String::new();
        // The stream closes as soon as no one reads it: a node counts its open streams
        // against the token's quota.
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = tx.closed() => return,
            };
            let Some(Ok(chunk)) = chunk else { return };
            let at = now();
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let frame: String = pending.drain(..end + 2).collect();
                let name = frame.lines().find_map(|l| l.strip_prefix("event:"));
                if let Some(name) = name
                    && tx.send((name.trim().to_owned(), at)).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Events of sessions the first node runs, followed from it and from the second: how much
/// later each reaches the second's stream, p50 and p99 in ms.
async fn cross_node(
    client: &reqwest::Client,
    nodes: &[Node],
    sessions: &[String],
    held: &HashMap<String, Vec<u32>>,
    shards: u32,
) -> Result<(f64, f64)> {
    let (runner, other) = (&nodes[0], &nodes[1]);
    let mine = held.get(&runner.name).cloned().unwrap_or_default();
    let picked: Vec<(usize, &String)> = sessions
        .iter()
        .enumerate()
        .filter(|(_, id)| in_shards(id, &mine, shards))
        .take(20)
        .collect();
    let mut gaps = Vec::new();
    for (k, session) in picked {
        let mut here = follow(client.clone(), runner, session).await?;
        let mut there = follow(client.clone(), other, session).await?;
        // The other node's watch reaches the runner within a round trip through NATS.
        wall_sleep(Duration::from_millis(50)).await;
        for _ in 0..3 {
            ask(client, runner, k, "followed").await?;
        }
        wall_sleep(Duration::from_millis(100)).await;
        let (mut near, mut far) = (Vec::new(), Vec::new());
        while let Ok(event) = here.try_recv() {
            near.push(event);
        }
        while let Ok(event) = there.try_recv() {
            far.push(event);
        }
        // The same events in the same order on both: match each by its name's occurrence.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut at_far: HashMap<(&str, usize), Instant> = HashMap::new();
        for (name, at) in &far {
            let n = seen.entry(name.as_str()).or_default();
            at_far.insert((name.as_str(), *n), *at);
            *n += 1;
        }
        seen.clear();
        for (name, at) in &near {
            let n = seen.entry(name.as_str()).or_default();
            if let Some(far_at) = at_far.get(&(name.as_str(), *n)) {
                gaps.push(far_at.saturating_duration_since(*at));
            }
            *n += 1;
        }
    }
    if gaps.is_empty() {
        bail!("no event of a session of {} reached a stream on {}", runner.name, other.name);
    }
    gaps.sort();
    Ok((percentile_ms(&gaps, 0.5), percentile_ms(&gaps, 0.99)))
}

/// Kills the last node and sends an event to each of its sessions (200 at most) through the
/// others at once: from the kill to each answer, p50 and p99 in ms.
async fn takeover(
    client: &reqwest::Client,
    mut nodes: Vec<Node>,
    sessions: &[String],
    held: &HashMap<String, Vec<u32>>,
    plan: &Plan,
) -> Result<(f64, f64)> {
    let Some(victim) = nodes.pop() else { bail!("no node to kill") };
    // The orphans ask the survivors in turn, whatever `--to-holder` says: none holds them yet.
    let theirs = held.get(&victim.name).cloned().unwrap_or_default();
    let orphans: Vec<usize> = (0..sessions.len())
        .filter(|k| in_shards(&sessions[*k], &theirs, plan.shards))
        .take(200)
        .collect();
    eprintln!("killing {} (SIGKILL): {} of its sessions ask again", victim.name, orphans.len());
    drop(victim);
    let killed = now();
    let survivors = Arc::new(nodes);
    let asks = orphans.iter().enumerate().map(|(i, k)| {
        let survivors = survivors.clone();
        async move {
            ask(client, &survivors[i % survivors.len()], *k, "still there?").await?;
            Ok::<Duration, anyhow::Error>(killed.elapsed())
        }
    });
    let mut times: Vec<Duration> = futures::stream::iter(asks)
        .buffer_unordered(plan.concurrency.max(orphans.len()))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    times.sort();
    Ok((percentile_ms(&times, 0.5), percentile_ms(&times, 0.99)))
}
