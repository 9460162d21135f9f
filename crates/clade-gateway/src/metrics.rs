//! `GET /metrics` in the Prometheus text format, on a listener of its own (`server.metrics`),
//! never on the public port: the figures name tenants, so only the operator's scraper should
//! reach it.
//!
//! What the runtime counts as it runs (`clade_runtime::telemetry`: turns, their time, queue
//! waits, model calls, tokens and cost, by tenant within a cap) is recorded through the
//! `metrics` facade into the process's one recorder, installed here. At each scrape the
//! engine's and the store's own figures are read as well: sessions active, turns running,
//! executions open by kind, the store's commits, writes and fsyncs (and the quantiles of their
//! times), the async runtime's live tasks, and resident memory. Latency histograms besides the
//! turn's: a model's time to first token, a tool's run, memory recall, outbox delivery lag and
//! schedule lateness.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

/// Latency buckets, in seconds: from a fast tool to a long model answer.
const BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Open executions read at most, at each scrape.
const OPEN_READ: u32 = 10_000;

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("server.metrics.listen: {listen:?} cannot be listened on ({source}); pick a free port")]
    Bind { listen: String, source: std::io::Error },
    #[error("the metrics recorder could not be installed: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
}

/// The metrics listener, serving until dropped.
pub struct MetricsServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Where it is scraped.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.address)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    engine: clade_runtime::Engine,
}

/// Installs the process's recorder and serves `/metrics` on `listen`, naming at most
/// `max_tenants` tenants in labels.
pub async fn serve(
    listen: &str,
    max_tenants: u32,
    engine: clade_runtime::Engine,
) -> Result<MetricsServer, MetricsError> {
    let bind = |source| MetricsError::Bind { listen: listen.to_owned(), source };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind)?;
    let address = listener.local_addr().map_err(bind)?;
    let handle = install(max_tenants)?;
    let app = Router::new().route("/metrics", get(scrape)).with_state(Scrape { handle, engine });
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the metrics listener stopped");
        }
    });
    Ok(MetricsServer { address, task })
}

/// Installs the process's recorder, naming at most `max_tenants` tenants in labels: from here
/// on what the runtime counts is kept (`clade bench turns --metrics` measures what that costs).
pub fn install(max_tenants: u32) -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new().set_buckets(&BUCKETS)?.install_recorder()?;
    clade_runtime::telemetry::start_recording(usize::try_from(max_tenants).unwrap_or(usize::MAX));
    Ok(handle)
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    read_now(&scrape).await;
    scrape.handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], scrape.handle.render())
}

/// Sets the figures read at the scrape rather than counted as they happen.
async fn read_now(scrape: &Scrape) {
    let engine = &scrape.engine;
    metrics::gauge!("clade_sessions_active").set(engine.active_sessions() as f64);
    metrics::gauge!("clade_turns_running").set(engine.running_turns() as f64);
    let stats = engine.store().write_stats();
    metrics::counter!("clade_store_commits_total").absolute(stats.commits);
    metrics::counter!("clade_store_writes_total").absolute(stats.writes);
    metrics::counter!("clade_store_fsyncs_total").absolute(stats.syncs);
    metrics::counter!("clade_store_slow_fsyncs_total").absolute(stats.slow_syncs);
    // The store keeps its fsync and commit times as histograms of its own (since its start):
    // their quantiles, as a summary would give them.
    for (name, times) in [
        ("clade_store_fsync_seconds", &stats.sync_times),
        ("clade_store_commit_seconds", &stats.commit_times),
    ] {
        for q in ["0.5", "0.99"] {
            let at = times.quantile(q.parse().unwrap_or(0.5));
            let seconds = at.map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!(name, "quantile" => q).set(seconds);
        }
    }
    let runtime = tokio::runtime::Handle::current().metrics();
    metrics::gauge!("clade_runtime_tasks_alive").set(runtime.num_alive_tasks() as f64);
    match engine.open_executions(OPEN_READ).await {
        Ok(open) => {
            for (kind, count) in open {
                metrics::gauge!("clade_executions_open", "kind" => kind.as_str()).set(count as f64);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "the open executions could not be read for a scrape")
        }
    }
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("clade_process_resident_bytes").set(rss as f64);
    }
}

/// This process's resident memory, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
