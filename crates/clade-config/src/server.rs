//! The gateway's own process: its HTTP and gRPC listeners (`server`), store (`store`), log (`log`) and test harness (`testing`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// Test-harness settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestingConfig {
    /// Enables the `ledger.append` and `ledger.append_idempotent` tools, which append to this
    /// file, so crash tests can count side effects independently of Clade's records.
    #[serde(default)]
    pub ledger_file: Option<PathBuf>,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Loopback by default; bind a public address only behind TLS.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Open connections at most; at the limit, the oldest connection that has not sent a
    /// request yet makes room for a new one. Default: the descriptor limit less 512.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Seconds a connection may take to send a request's headers, and stay idle between
    /// requests.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// The admin socket's path (pairing, reload, wake-ups, status; the operator's user only,
    /// never over HTTP). Default: `admin.sock` in the data dir.
    #[serde(default)]
    pub admin_socket: Option<String>,
    /// The AgentHub over gRPC (`proto/clade/hub/v1/hub.proto`: Spawn, SendMessage, Trace),
    /// on a port of its own. Off unless set.
    #[serde(default)]
    pub grpc: Option<GrpcConfig>,
    /// Prometheus metrics (`GET /metrics`, the text format) on a listener of their own, for the
    /// operator's scraper only: never on the public port. On by default at `127.0.0.1:9464`
    /// (a gateway that finds that port taken, by another gateway on the machine, runs without
    /// and says so); `enabled: false` turns them off.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_connections: None,
            header_timeout_secs: default_header_timeout(),
            admin_socket: None,
            grpc: None,
            metrics: None,
        }
    }
}

/// The AgentHub's gRPC server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:7421`. Bind a public address only with
    /// `tls`.
    pub listen: String,
    /// Serve TLS with this certificate and key; without it the server speaks plain HTTP/2.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// Where the gateway's metrics are scraped, and how many tenants they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether metrics are served at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address and port to listen on. Loopback, or a network only the scraper reaches: the
    /// figures name tenants.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    /// The most tenants named in labels; the rest are counted as `other`, and
    /// `clade_metric_labels_capped_total` says how often (a million tenants cannot blow up a
    /// scrape).
    #[serde(default = "default_metric_tenants")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_tenants: u32,
}

fn default_metric_tenants() -> u32 {
    1_000
}

fn default_true() -> bool {
    true
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_metrics_listen(),
            max_tenants: default_metric_tenants(),
        }
    }
}

/// The metrics listener a gateway starts ([`ServerConfig::metrics_listener`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsListener {
    pub config: MetricsConfig,
    /// Configured: a port that cannot be had stops the gateway. By default: it runs without.
    pub required: bool,
}

impl ServerConfig {
    /// The metrics listener in force: as configured, or the default one; none when turned off.
    pub fn metrics_listener(&self) -> Option<MetricsListener> {
        match &self.metrics {
            Some(config) if !config.enabled => None,
            Some(config) => Some(MetricsListener { config: config.clone(), required: true }),
            None => Some(MetricsListener { config: MetricsConfig::default(), required: false }),
        }
    }
}

/// A TLS identity: PEM files, relative to the configuration file's folder unless absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

fn default_header_timeout() -> u64 {
    10
}

fn default_listen() -> String {
    "127.0.0.1:7420".into()
}

fn default_max_body() -> u64 {
    1024 * 1024
}

/// Where state is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host/db` for PostgreSQL; absent means SQLite in the data dir
    /// (`<data-dir>/clade.db`). `--store` and `CLADE_STORE` override it.
    #[serde(default)]
    pub url: Option<String>,
    /// `full` (the default) syncs every commit to disk before acknowledging it; `normal` may lose
    /// the last commits on power loss (never on a process crash) in exchange for speed.
    #[serde(default)]
    pub durability: Durability,
}

/// How hard a commit is pushed to disk before it is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

/// Log output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`. `--log-format` overrides it.
    #[serde(default)]
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter such as `info,clade_store=debug`. `RUST_LOG` overrides it.
    #[serde(default)]
    pub filter: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl Config {
    /// The gRPC listener's address and files.
    pub(crate) fn check_server(&self) -> Result<(), Invalid> {
        if let Some(grpc) = &self.server.grpc {
            if grpc.listen.trim().is_empty() || !grpc.listen.contains(':') {
                return fail(format!(
                    "server.grpc.listen: {:?} is not an address and port, such as 127.0.0.1:7421",
                    grpc.listen
                ));
            }
            if grpc.listen == self.server.listen {
                return fail(format!(
                    "server.grpc.listen: {} is server.listen too; give gRPC a port of its own",
                    grpc.listen
                ));
            }
            if let Some(tls) = &grpc.tls
                && (tls.cert.trim().is_empty() || tls.key.trim().is_empty())
            {
                return fail("server.grpc.tls: name both files, cert and key".into());
            }
        }
        if let Some(metrics) = self.server.metrics.as_ref().filter(|m| m.enabled) {
            if metrics.listen.parse::<std::net::SocketAddr>().is_err() {
                return fail(format!(
                    "server.metrics.listen: {:?} is not an address and port, such as 127.0.0.1:9464",
                    metrics.listen
                ));
            }
            let taken = [Some(&self.server.listen), self.server.grpc.as_ref().map(|g| &g.listen)];
            if taken.into_iter().flatten().any(|listen| *listen == metrics.listen) {
                return fail(format!(
                    "server.metrics.listen: {} is another server's listener too; give metrics a port of its own",
                    metrics.listen
                ));
            }
            if !(1..=100_000).contains(&metrics.max_tenants) {
                return fail(format!(
                    "server.metrics.max_tenants: {} is not 1 to 100000",
                    metrics.max_tenants
                ));
            }
        }
        Ok(())
    }
}
