//! `clade bench siege`: strangers try to starve the gateway's connection slots, as a slowloris
//! does. A fresh `clade serve` (SQLite, the offline model) in a scratch data dir, with
//! `server.max_connections` set and a tenant's inbound webhook declared. Many sockets without a
//! token, from an address of their own (`--stranger-address`, on loopback), each send that
//! hook's headers, a `Content-Length` under the body limit and one byte,
//! then one more byte now and then, and reconnect as soon as the gateway drops them; meanwhile
//! a client with the tenant's token asks `GET /v1/agents` at a steady rate, each time on a new
//! connection (which must win a slot while every slot is held). Its latency is reported with
//! the siege and without it. The goal: p99 under 100 ms while the siege runs, no request lost.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::bench::{now, percentile_ms, proc_number, wall_sleep};
use super::bench_neighbours::{clade, in_scratch_dir};
use super::bench_turns::{GatewayProcess, cpu_micros};
use crate::context::Ctx;

/// What to run.
pub(crate) struct Plan {
    /// Sockets the strangers hold open at once.
    pub(crate) strangers: usize,
    /// The gateway's `server.max_connections`.
    pub(crate) max_connections: u64,
    /// Requests per second the authenticated client sends, each on a new connection.
    pub(crate) rate: f64,
    /// Seconds per phase (calm, then under siege).
    pub(crate) seconds: u64,
    /// How often each stranger sends one more byte of its body.
    pub(crate) trickle: Duration,
    /// The address the strangers connect from (the client's is 127.0.0.1).
    pub(crate) stranger_address: std::net::IpAddr,
}

/// The secret of the hook the strangers post to; they never sign, so it only has to exist.
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(super) async fn run(ctx: &Ctx, plan: &Plan) -> Result<()> {
    if plan.strangers == 0 || plan.max_connections == 0 || plan.rate <= 0.0 || plan.seconds == 0 {
        bail!("--strangers, --max-connections, --rate and --seconds must each be above 0");
    }
    let config = format!(
        "server:\n  max_connections: {}\ntenants:\n  acme:\n    hooks:\n      gh: {{ agent: ada, secret_env: CLADE_BENCH_HOOK_SECRET }}\n",
        plan.max_connections
    );
    in_scratch_dir(ctx, "bench-siege", &config, |dir| async move { measure(&dir, plan).await })
        .await
}

async fn measure(dir: &Path, plan: &Plan) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary to start the gateway")?;
    eprintln!("setting up the tenant acme and its agent ada in {}", dir.display());
    clade(&exe, dir, &["tenants", "create", "acme"]).await?;
    clade(&exe, dir, &["--tenant", "acme", "agents", "create", "ada"]).await?;
    let token = clade(&exe, dir, &["--tenant", "acme", "tokens", "create"]).await?;
    let gateway =
        GatewayProcess::start_with(dir, &[("CLADE_BENCH_HOOK_SECRET", HOOK_SECRET)]).await?;
    let address: std::net::SocketAddr = gateway
        .url
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("the gateway's address is not IP:port: {}", gateway.url))?;
    let client = Client { url: gateway.url.clone(), token };
    let pid = gateway.pid.to_string();
    println!(
        "bench siege: clade serve (SQLite, max_connections {}); {} strangers from {} trickle a byte of a hook's body every {} ms; the tenant's client asks GET /v1/agents {}/s, a new connection each",
        plan.max_connections,
        plan.strangers,
        plan.stranger_address,
        plan.trickle.as_millis(),
        plan.rate
    );
    println!(
        "{:>7} | {:>8} {:>8} {:>8} {:>8} {:>7} | {:>15} {:>10} | {:>9} {:>11}",
        "phase",
        "asked",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "strangers held",
        "dropped",
        "CPU ms/s",
        "RSS MiB"
    );
    let calm = phase(&client, plan, &pid, None).await?;
    calm.print("calm");

    let siege = Siege::start(address, plan);
    siege.wait_until_held(plan.strangers, Duration::from_secs(30)).await;
    let dropped_before = siege.counts.dropped.load(Ordering::Relaxed);
    let besieged = phase(&client, plan, &pid, Some(&siege)).await?;
    let dropped = siege.counts.dropped.load(Ordering::Relaxed) - dropped_before;
    besieged.print_besieged(siege.counts.held.load(Ordering::Relaxed), dropped);
    siege.stop();

    println!(
        "p99 under siege: {:.2} ms against {:.2} ms calm (goal: under 100 ms, none failed); {} of {} requests failed",
        besieged.p99_ms, calm.p99_ms, besieged.failed, besieged.asked
    );
    println!(
        "(open loop: the client sends on schedule whatever the answers; a request fails if it is refused or gets no answer within 5 s; `dropped` counts strangers the gateway cut off during the phase)"
    );
    Ok(())
}

/// The tenant's client: a new connection for every request, as a client arriving fresh.
struct Client {
    url: String,
    token: String,
}

impl Client {
    /// One `GET /v1/agents`: its latency, or `None` if it failed.
    async fn ask(&self) -> Option<Duration> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let started = now();
        let response = http
            .get(format!("{}/v1/agents", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        let ok = response.status().is_success();
        response.bytes().await.ok()?;
        ok.then(|| started.elapsed())
    }
}

struct Phase {
    asked: usize,
    failed: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_ms_per_sec: f64,
    rss_mib: f64,
}

impl Phase {
    fn print(&self, name: &str) {
        self.print_row(name, "-", "-");
    }

    fn print_besieged(&self, held: u64, dropped: u64) {
        self.print_row("siege", &held.to_string(), &dropped.to_string());
    }

    fn print_row(&self, name: &str, held: &str, dropped: &str) {
        println!(
            "{:>7} | {:>8} {:>8.2} {:>8.2} {:>8.2} {:>7} | {:>15} {:>10} | {:>9.1} {:>11.1}",
            name,
            self.asked,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.failed,
            held,
            dropped,
            self.cpu_ms_per_sec,
            self.rss_mib
        );
    }
}

/// The client asking at `plan.rate` for `plan.seconds`, open loop; `siege`, if any, is kept at
/// full strength throughout (it only reconnects on its own).
async fn phase(client: &Client, plan: &Plan, pid: &str, siege: Option<&Siege>) -> Result<Phase> {
    let client = Arc::new(Client { url: client.url.clone(), token: client.token.clone() });
    let total = (plan.rate * plan.seconds as f64).ceil().max(1.0) as usize;
    let gap = Duration::from_secs_f64(1.0 / plan.rate);
    let cpu_before = cpu_micros(pid);
    let started = now();
    let mut asks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = gap.mul_f64(n as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            wall_sleep(wait).await;
        }
        let client = client.clone();
        asks.spawn(async move { client.ask().await });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    while let Some(answer) = asks.join_next().await {
        match answer.context("a request's task failed")? {
            Some(latency) => latencies.push(latency),
            None => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
    let cpu_ms_per_sec = cpu_micros(pid).saturating_sub(cpu_before) as f64 / 1e3 / elapsed;
    if let Some(siege) = siege
        && siege.counts.held.load(Ordering::Relaxed) == 0
    {
        bail!("the strangers hold no connection: the siege did not take place");
    }
    latencies.sort();
    Ok(Phase {
        asked: total,
        failed,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        cpu_ms_per_sec,
        rss_mib: proc_number(pid, "status", "VmRSS:") as f64 / 1024.0,
    })
}

/// What the strangers have done so far.
#[derive(Default)]
struct Counts {
    /// Sockets open now, headers sent.
    held: AtomicU64,
    /// Sockets the gateway answered or closed.
    dropped: AtomicU64,
}

/// The strangers: each a task holding one socket open with a trickled body, reconnecting when
/// the gateway drops it.
struct Siege {
    tasks: tokio::task::JoinSet<()>,
    counts: Arc<Counts>,
}

impl Siege {
    fn start(address: std::net::SocketAddr, plan: &Plan) -> Self {
        let counts = Arc::new(Counts::default());
        let mut tasks = tokio::task::JoinSet::new();
        let from = std::net::SocketAddr::new(plan.stranger_address, 0);
        for _ in 0..plan.strangers {
            tasks.spawn(stranger(from, address, plan.trickle, counts.clone()));
        }
        Self { tasks, counts }
    }

    /// Waits until `strangers` sockets are held, or `within` has passed.
    async fn wait_until_held(&self, strangers: usize, within: Duration) {
        let started = now();
        while self.counts.held.load(Ordering::Relaxed) < strangers as u64
            && started.elapsed() < within
        {
            wall_sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// A connection from `from` to `to`.
async fn connect(
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if from.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(from)?;
    socket.connect(to).await
}

/// One stranger: connects, sends a hook's headers declaring a 100,000-byte body and its first
/// byte, then a byte every `trickle`, until the gateway answers or closes; then again.
async fn stranger(
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    trickle: Duration,
    counts: Arc<Counts>,
) {
    let head = "POST /hooks/acme/gh HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
    loop {
        let Ok(mut socket) = connect(from, to).await else {
            wall_sleep(Duration::from_millis(100)).await;
            continue;
        };
        if socket.write_all(head.as_bytes()).await.is_err() {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counts.held.fetch_add(1, Ordering::Relaxed);
        let mut answer = [0u8; 512];
        loop {
            tokio::select! {
                // Any answer (408, 413, 503) or a close ends this socket.
                _ = socket.read(&mut answer) => break,
                () = wall_sleep(trickle) => {
                    if socket.write_all(b" ").await.is_err() {
                        break;
                    }
                }
            }
        }
        counts.held.fetch_sub(1, Ordering::Relaxed);
        counts.dropped.fetch_add(1, Ordering::Relaxed);
    }
}
