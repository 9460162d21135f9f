//! `clade bench neighbours`: what one tenant flooding the gateway at ten times its event quota
//! costs the other tenants. A fresh `clade serve` (SQLite, the offline model) in a scratch data
//! dir; quiet tenants send events at a steady rate while the noisy tenant sends at its quota,
//! then at ten times it, alternately for a few rounds; the quiet tenants' p99 latency of
//! `POST /v1/events` is compared between the two. The goal: at most 10 % higher.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::context::Ctx;

/// What to run.
pub(crate) struct Plan {
    /// The noisy tenant's quota, in events per second.
    pub(crate) quota: f64,
    pub(crate) quiet_tenants: usize,
    /// Events per second the quiet tenants send in all.
    pub(crate) quiet_rate: f64,
    pub(crate) seconds: u64,
    pub(crate) rounds: usize,
}

#[allow(clippy::disallowed_methods)] // Benchmarks measure elapsed time.
fn now() -> Instant {
    Instant::now()
}

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if plan.quota <= 0.0 || plan.quiet_rate <= 0.0 || plan.quiet_tenants == 0 || plan.rounds == 0 {
        bail!("--quota, --quiet-rate, --quiet-tenants and --rounds must be above 0");
    }
    let config = format!(
        "tenants:\n  noisy:\n    quotas: {{ events_per_second: {q}, burst: {b} }}\n",
        q = plan.quota,
        b = plan.quota.ceil().max(1.0)
    );
    in_scratch_dir(ctx, "bench-neighbours", &config, |dir| async move { measure(&dir, plan).await })
        .await
}

/// Runs `measure` on a fresh data dir `<data-dir>/<name>-<pid>` whose clade.yaml is `config`,
/// removed afterwards however `measure` ends.
pub(super) async fn in_scratch_dir<F, Fut>(
    ctx: &Ctx,
    name: &str,
    config: &str,
    measure: F,
) -> Result<()>
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let dir = ctx.data_dir.root().join(format!("{name}-{}", std::process::id()));
    let prepared = std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .and_then(|()| {
            std::fs::write(dir.join("clade.yaml"), config)
                .context("cannot write the gateway's clade.yaml")
        });
    let outcome = match prepared {
        Ok(()) => measure(dir.clone()).await,
        Err(err) => Err(err),
    };
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(dir: &Path, plan: &Plan) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary to start the gateway")?;
    eprintln!(
        "setting up {} quiet tenants and a noisy one in {}",
        plan.quiet_tenants,
        dir.display()
    );
    let names: Vec<String> = std::iter::once("noisy".to_owned())
        .chain((0..plan.quiet_tenants).map(|n| format!("quiet{n}")))
        .collect();
    let mut tokens = Vec::new();
    for name in &names {
        clade(&exe, dir, &["tenants", "create", name]).await?;
        clade(&exe, dir, &["--tenant", name, "agents", "create", "ada"]).await?;
        tokens.push(clade(&exe, dir, &["--tenant", name, "tokens", "create"]).await?);
    }
    let server = super::bench_turns::GatewayProcess::start(dir).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let target = Target { client, url: server.url.clone() };
    println!(
        "noisy tenant: quota {} events/s; {} quiet tenants: {} events/s in all; {} s per phase",
        plan.quota, plan.quiet_tenants, plan.quiet_rate, plan.seconds
    );
    println!("round  noisy at  noisy sent  noisy 429  quiet p50 ms  quiet p99 ms  quiet errors");
    let (mut at_quota, mut flooding) = (Vec::new(), Vec::new());
    for round in 1..=plan.rounds {
        for multiple in [1.0, 10.0] {
            let phase = phase(&target, &tokens, plan, multiple).await;
            println!(
                "{round:>5}  {:>7}x  {:>10}  {:>9}  {:>12.2}  {:>12.2}  {:>12}",
                multiple as u32,
                phase.noisy_sent,
                phase.noisy_limited,
                phase.quiet_p50_ms,
                phase.quiet_p99_ms,
                phase.quiet_errors
            );
            if multiple > 1.0 { &mut flooding } else { &mut at_quota }.push(phase.quiet_p99_ms);
        }
    }
    let (base, flood) = (median(&mut at_quota), median(&mut flooding));
    println!(
        "quiet tenants' p99: {base:.2} ms with the noisy tenant at its quota, {flood:.2} ms at 10x it: {:.2}x (goal: at most 1.10x)",
        flood / base.max(f64::EPSILON)
    );
    drop(server);
    Ok(())
}

struct Target {
    client: reqwest::Client,
    url: String,
}

struct Phase {
    noisy_sent: u64,
    noisy_limited: u64,
    quiet_p50_ms: f64,
    quiet_p99_ms: f64,
    quiet_errors: u64,
}

/// One phase: the noisy tenant at `multiple` times its quota beside the quiet tenants.
async fn phase(target: &Target, tokens: &[String], plan: &Plan, multiple: f64) -> Phase {
    let duration = Duration::from_secs(plan.seconds);
    let noisy = send_at(target, &tokens[0], plan.quota * multiple, duration);
    let per_quiet = plan.quiet_rate / plan.quiet_tenants as f64;
    let quiet = futures::future::join_all(
        tokens[1..].iter().map(|token| send_at(target, token, per_quiet, duration)),
    );
    let (noisy, quiet) = tokio::join!(noisy, quiet);
    let mut latencies: Vec<f64> =
        quiet.iter().flat_map(|s| s.accepted_ms.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
    };
    Phase {
        noisy_sent: noisy.sent,
        noisy_limited: noisy.limited,
        quiet_p50_ms: at(0.5).copied().unwrap_or(0.0),
        quiet_p99_ms: at(0.99).copied().unwrap_or(0.0),
        quiet_errors: quiet.iter().map(|s| s.sent - s.accepted_ms.len() as u64).sum(),
    }
}

#[derive(Default)]
struct Sent {
    sent: u64,
    limited: u64,
    /// Latency of each accepted event, in ms.
    accepted_ms: Vec<f64>,
}

/// Sends events to `ada` at `rate` per second for `duration`, open loop (each on time, whether
/// or not the ones before it were answered), over 64 sessions.
async fn send_at(target: &Target, token: &str, rate: f64, duration: Duration) -> Sent {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let started = now();
    let mut pending = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    let url: Arc<str> = format!("{}/v1/events", target.url).into();
    let token: Arc<str> = token.into();
    loop {
        let due = started + gap.mul_f64(n as f64);
        if due.duration_since(started) >= duration {
            break;
        }
        let wait = due.saturating_duration_since(now());
        #[allow(clippy::disallowed_methods)] // The benchmark paces real load in real time.
        tokio::time::sleep(wait).await;
        let (client, url, token) = (target.client.clone(), url.clone(), token.clone());
        let body = serde_json::json!({
            "agent": "ada",
            "text": format!("event {n}"),
            "source": { "platform": "bench", "channel": format!("c{}", n % 64), "actor": "me" },
        });
        pending.spawn(async move {
            let sent = now();
            let status = client
                .post(&*url)
                .bearer_auth(&*token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, sent.elapsed().as_secs_f64() * 1000.0)
        });
        n += 1;
    }
    let mut out = Sent { sent: n, ..Default::default() };
    while let Some(done) = pending.join_next().await {
        match done {
            Ok((202, ms)) => out.accepted_ms.push(ms),
            Ok((429, _)) => out.limited += 1,
            _ => {}
        }
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `clade --data-dir dir args…` and returns what it printed (trimmed).
#[allow(clippy::disallowed_methods)] // This binary, to set up the benchmark's own data dir.
pub(super) async fn clade(exe: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(exe)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CLADE_STORE")
        .env_remove("CLADE_TENANT")
        .output()
        .await
        .with_context(|| format!("cannot run clade {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("clade {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
