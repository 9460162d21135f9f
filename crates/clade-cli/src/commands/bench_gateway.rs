//! `clade bench gateway`: what a default agent's turn costs a real gateway, through
//! `POST /v1/events` (`wait`), as a user's first agent runs.
//!
//! `clade serve` runs in a process of its own on a fresh data dir with its defaults (SQLite,
//! `durability: full`), its model clade-stub (the OpenAI protocol over HTTP/2, streaming,
//! 0 ms). The agent is made as `clade agents create` makes one: every built-in tool, memory,
//! the cortex. The gateway's CPU and RSS are read from its own process, so this process (the
//! HTTP client) is not counted.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::bench::{percentile_ms, proc_number, wall_sleep};
use super::bench_turns::{GatewayProcess, StubProcess, TurnFn, closed_loop, cpu_micros, now};
use crate::context::Ctx;

/// What to measure.
pub(super) struct Plan {
    /// Sessions at once in the concurrent row.
    pub(super) sessions: usize,
    /// Turns each of those sessions sends, each when its previous one ended.
    pub(super) turns: usize,
    /// Turns of the sequential row: one session.
    pub(super) sequential: usize,
    /// How long the gateway idles after it answers before its RSS is read.
    pub(super) settle: Duration,
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if plan.sessions == 0 || plan.turns == 0 || plan.sequential == 0 {
        bail!("--sessions, --turns and --sequential must each be at least 1");
    }
    let stub = StubProcess::start().await?;
    let root = ctx.data_dir.root().join("bench-gateway");
    let dir = root.join(format!("gateway-{}", ctx.store.now().as_millis()));
    let result = measure(&dir, &stub, plan).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir(&root);
    let report = result?;
    println!(
        "bench gateway: clade serve (SQLite, durability full, one default agent), clade-stub at {} (OpenAI protocol over HTTP/2, streaming, 0 ms), POST /v1/events with wait",
        stub.url
    );
    println!(
        "idle RSS: {:.1} MiB, {} after the gateway answered",
        report.idle_rss_kib as f64 / 1024.0,
        humantime::format_duration(plan.settle)
    );
    println!(
        "{:>14} | {:>9} {:>9} {:>9} | {:>19} {:>16}",
        "sessions×turns", "turns/s", "p50 ms", "p99 ms", "gateway CPU µs/turn", "stub CPU µs/turn"
    );
    for row in &report.rows {
        println!(
            "{:>14} | {:>9.0} {:>9.3} {:>9.3} | {:>19.0} {:>16.0}",
            format!("{}×{}", row.sessions, row.turns),
            row.turns_per_sec,
            row.p50_ms,
            row.p99_ms,
            row.gateway_cpu_micros,
            row.stub_cpu_micros,
        );
    }
    println!("RSS after the rows: {:.1} MiB", report.final_rss_kib as f64 / 1024.0);
    println!(
        "(closed loop: each session sends its next message when its previous turn ended; latency from the send until the answer was read; CPU read from each process, this client's not counted)"
    );
    Ok(())
}

struct Report {
    idle_rss_kib: u64,
    rows: Vec<Row>,
    final_rss_kib: u64,
}

struct Row {
    sessions: usize,
    turns: usize,
    turns_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    gateway_cpu_micros: f64,
    stub_cpu_micros: f64,
}

async fn measure(dir: &std::path::Path, stub: &StubProcess, plan: &Plan) -> Result<Report> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = format!(
        "models:\n  stub:\n    provider: openai\n    model: stub\n    base_url: {}/v1\n    stream: true\n    http2: true\nrouting:\n  default: [stub]\n",
        stub.url
    );
    std::fs::write(dir.join("clade.yaml"), config)
        .context("cannot write the gateway's clade.yaml")?;
    let gateway = GatewayProcess::start(dir).await?;
    let pid = gateway.pid.to_string();
    wall_sleep(plan.settle).await;
    let idle_rss_kib = proc_number(&pid, "status", "VmRSS:");

    let http = gateway.client_with_agent(plan.sessions).await?;
    let turn = event_turn(http, gateway.url.clone(), gateway.token.clone());
    // One turn first, not counted: the agent's first load and the model's first connection.
    turn("warm-up".to_owned(), 0).await.context("the first turn failed")?;

    let mut rows = Vec::new();
    for (sessions, turns) in [(plan.sessions, plan.turns), (1, plan.sequential)] {
        let (gateway_before, stub_before) = (cpu_micros(&pid), stub.cpu_micros());
        let started = now();
        let mut latencies: Vec<Duration> =
            closed_loop(&turn, sessions, turns, &Arc::new(AtomicU64::new(0)))
                .await?
                .into_iter()
                .map(|(_, ended)| ended)
                .collect();
        let elapsed = started.elapsed().as_secs_f64();
        let count = latencies.len().max(1) as f64;
        latencies.sort();
        rows.push(Row {
            sessions,
            turns,
            turns_per_sec: count / elapsed,
            p50_ms: percentile_ms(&latencies, 0.5),
            p99_ms: percentile_ms(&latencies, 0.99),
            gateway_cpu_micros: cpu_micros(&pid).saturating_sub(gateway_before) as f64 / count,
            stub_cpu_micros: stub.cpu_micros().saturating_sub(stub_before) as f64 / count,
        });
    }
    let final_rss_kib = proc_number(&pid, "status", "VmRSS:");
    Ok(Report { idle_rss_kib, rows, final_rss_kib })
}

/// A turn: message `i` on `channel` (a session of its own, from the `http` platform), sent
/// with `wait`, done when the answer is read and says the turn completed.
fn event_turn(http: reqwest::Client, url: String, token: String) -> TurnFn {
    Arc::new(move |channel, i| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        Box::pin(async move {
            let response = http
                .post(format!("{url}/v1/events"))
                .bearer_auth(&token)
                .json(&json!({
                    "agent": "bench",
                    "text": format!("message {i}"),
                    "source": { "platform": "http", "channel": channel, "actor": "bench" },
                    "wait": true,
                }))
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            if status != reqwest::StatusCode::OK
                || body["status"] != clade_core::TurnStatus::Completed.as_str()
            {
                bail!("a turn did not complete ({status}): {body}");
            }
            Ok(now())
        })
    })
}
