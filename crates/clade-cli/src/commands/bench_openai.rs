//! `clade bench openai`: the turns of `clade bench turns`, sent through a real gateway's
//! `POST /v1/chat/completions` instead of straight to the engine, and what the HTTP API adds.
//!
//! For each row the same load runs twice against the same stub model: once in this process
//! (as `clade bench turns` runs it), once through `clade serve` in a process of its own, on a
//! fresh data dir, with this process as the OpenAI client (HTTP/1.1, a connection per
//! session, kept alive). The gateway's CPU is read from its own process, so the client's is
//! not counted.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clade_store::Durability;
use serde_json::json;

use super::bench_turns::{
    GatewayProcess, Load, StubProcess, TurnFn, closed_loop, cpu_micros, measure, now, open_loop,
};
use crate::context::Ctx;

/// What to measure.
pub(super) struct Plan {
    pub(super) sessions: Vec<usize>,
    pub(super) total: usize,
    pub(super) durability: String,
    pub(super) rate: Option<f64>,
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    let Plan { sessions, total, durability, rate } = plan;
    let (total, rate) = (*total, *rate);
    if total == 0 || sessions.contains(&0) {
        bail!("--turns and every --sessions value must be at least 1");
    }
    if let Some(rate) = rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of turns per second, not {rate}");
    }
    let level = match durability.as_str() {
        "full" => Durability::Full,
        "normal" => Durability::Normal,
        other => bail!("unknown durability {other:?}: use full or normal"),
    };
    let stub = StubProcess::start().await?;
    let model = stub.model(true);
    let mode = match rate {
        Some(rate) => format!("open loop at {rate} turns/s offered"),
        None => "closed loop".to_owned(),
    };
    println!(
        "bench openai: clade-stub at {} (OpenAI protocol over HTTP/2, streaming, 0 ms), durability {durability}, {total} turns per row, {mode}",
        stub.url
    );
    println!(
        "{:>9} | {:>9} {:>9} {:>9} {:>12} | {:>9} {:>9} {:>9} {:>12} | {:>16} {:>9}",
        "sessions",
        "turns/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/turn",
        "turns/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/turn",
        "added p50/p99 ms",
        "CPU ×"
    );
    println!("{:>9} | {:^42} | {:^42} |", "", "in process (engine)", "over /v1/chat/completions");
    for &n in sessions {
        let stamp = ctx.store.now().as_millis();
        let root = ctx.data_dir.root().join("bench-openai");
        let load = Load { sessions: n, total, rate, reload_every: None, traces: None };
        let dir = root.join(format!("engine-{n}-{stamp}"));
        eprintln!("{n} sessions: in process…");
        let inside = measure(&dir, level, &load, Some(&model), Some(&stub)).await;
        let _ = std::fs::remove_dir_all(&dir);
        let inside = inside?;
        let dir = root.join(format!("gateway-{n}-{stamp}"));
        eprintln!("{n} sessions: through the gateway…");
        let over = over_http(&dir, durability, &load, &stub).await;
        let _ = std::fs::remove_dir_all(&dir);
        let over = over?;
        let inside_cpu =
            inside.cpu_micros_per_turn + inside.stub_cpu_micros_per_turn.unwrap_or(0.0);
        println!(
            "{:>9} | {:>9.0} {:>9.3} {:>9.3} {:>12.0} | {:>9.0} {:>9.3} {:>9.3} {:>12.0} | {:>16} {:>9.2}",
            n,
            inside.turns_per_sec,
            inside.p50_ms,
            inside.p99_ms,
            inside_cpu,
            over.turns_per_sec,
            over.p50_ms,
            over.p99_ms,
            over.cpu_micros_per_turn,
            format!("{:+.3}/{:+.3}", over.p50_ms - inside.p50_ms, over.p99_ms - inside.p99_ms),
            over.cpu_micros_per_turn / inside_cpu.max(1.0),
        );
    }
    println!(
        "(p50/p99: from the send (in an open loop, the scheduled send) until the turn had ended: in"
    );
    println!(" process until `TurnWatch::ended`, over HTTP until the whole completion was read;");
    println!(
        " CPU µs/turn: the engine's process (in process) or the gateway's (over HTTP), + the stub's;"
    );
    println!(" the HTTP client's own CPU, this process's, is not counted)");
    Ok(())
}

/// One row through the gateway.
struct HttpRow {
    turns_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The gateway's and the stub's.
    cpu_micros_per_turn: f64,
}

async fn over_http(
    dir: &std::path::Path,
    durability: &str,
    load: &Load,
    stub: &StubProcess,
) -> Result<HttpRow> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = format!(
        "store:\n  durability: {durability}\nmodels:\n  stub:\n    provider: openai\n    model: stub\n    base_url: {}/v1\n    stream: true\n    http2: true\nrouting:\n  default: [stub]\nsessions:\n  max_queued: 1000000\n  idle_secs: 1\n",
        stub.url
    );
    std::fs::write(dir.join("clade.yaml"), config)
        .context("cannot write the gateway's clade.yaml")?;
    let gateway = GatewayProcess::start(dir).await?;
    let http = gateway.client_with_agent(load.sessions).await?;
    let turn: TurnFn = {
        let (http, url, token) = (http.clone(), gateway.url.clone(), gateway.token.clone());
        Arc::new(move |channel, i| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            Box::pin(async move {
                let response = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .header("x-session-id", channel)
                    .json(&json!({
                        "model": "bench",
                        "messages": [{ "role": "user", "content": format!("message {i}") }],
                    }))
                    .send()
                    .await?;
                let status = response.status();
                let body = response.bytes().await?;
                if !status.is_success() {
                    bail!("a completion failed ({status}): {}", String::from_utf8_lossy(&body));
                }
                // The answer is whole once read: that is when the turn had ended.
                Ok(now())
            })
        })
    };
    let per_session = load.total.div_ceil(load.sessions);
    let peak = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_micros(&gateway.pid.to_string()) + stub.cpu_micros();
    let started = now();
    let latencies = match load.rate {
        None => closed_loop(&turn, load.sessions, per_session, &peak).await?,
        Some(rate) => open_loop(&turn, load.sessions, per_session, rate, started, &peak).await?,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_micros(&gateway.pid.to_string()) + stub.cpu_micros()).saturating_sub(cpu_before);
    let mut latencies: Vec<Duration> = latencies.into_iter().map(|(_, ended)| ended).collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    Ok(HttpRow {
        turns_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        cpu_micros_per_turn: cpu as f64 / latencies.len() as f64,
    })
}
