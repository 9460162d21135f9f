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
    /// OpenTelemetry traces of every tenant's turns (GenAI conventions), sent to a collector
    /// over OTLP. Off unless set; takes effect at the next start.
    #[serde(default)]
    pub traces: Option<TracesConfig>,
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
            traces: None,
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

/// Where the gateway sends its traces, and what they carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP endpoint: `http://127.0.0.1:4318` for `http` (spans go to
    /// `/v1/traces` under it), `http://127.0.0.1:4317` for `grpc` (`https://` for TLS).
    #[schemars(regex(pattern = r"^https?://[^\s/]+"))]
    pub endpoint: String,
    /// `http` (OTLP's `http/protobuf`, the default) or `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Headers sent with every export, each read from an environment variable (a vendor's API
    /// key, say): `{"x-api-key": "TRACES_API_KEY"}`.
    #[serde(default)]
    pub headers_env: std::collections::BTreeMap<String, String>,
    /// Put what was said on spans: models' answers, tool arguments and results. Off by default:
    /// spans carry names, ids, token counts, costs and times only.
    #[serde(default)]
    pub content: bool,
    /// The resource's `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Seconds one export may take.
    #[serde(default = "default_traces_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_secs: u64,
    /// Tries for one turn's spans before they are given up (dead-lettered as subscriber
    /// `otlp`), with the outbox's back-off between tries.
    #[serde(default = "default_traces_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
}

/// How traces reach the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    #[default]
    Http,
    Grpc,
}

fn default_service_name() -> String {
    "clade".into()
}

fn default_traces_timeout() -> u64 {
    10
}

fn default_traces_attempts() -> u32 {
    8
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

/// The terminal UI (`clade tui`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuiConfig {
    /// `dark` (default: light text on the terminal's dark background), `light` (dark text,
    /// for a light background) or `mono` (no colours, for screen readers and old terminals).
    #[serde(default)]
    pub theme: TuiTheme,
}

/// The terminal UI's colours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TuiTheme {
    #[default]
    Dark,
    Light,
    Mono,
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
        if let Some(traces) = &self.server.traces {
            self.check_traces(traces)?;
        }
        Ok(())
    }

    fn check_traces(&self, traces: &TracesConfig) -> Result<(), Invalid> {
        let endpoint = traces.endpoint.trim();
        let host = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .map(|rest| rest.split('/').next().unwrap_or_default());
        if host.is_none_or(|host| host.is_empty() || host.contains(char::is_whitespace)) {
            return fail(format!(
                "server.traces.endpoint: {:?} is not an http:// or https:// URL, such as http://127.0.0.1:4318",
                traces.endpoint
            ));
        }
        if !(1..=300).contains(&traces.timeout_secs) {
            return fail(format!(
                "server.traces.timeout_secs: {} is not 1 to 300",
                traces.timeout_secs
            ));
        }
        if !(1..=100).contains(&traces.max_attempts) {
            return fail(format!(
                "server.traces.max_attempts: {} is not 1 to 100",
                traces.max_attempts
            ));
        }
        if traces.service_name.trim().is_empty() {
            return fail("server.traces.service_name: name the service, such as clade".into());
        }
        for (name, variable) in &traces.headers_env {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return fail(format!("server.traces.headers_env: {name:?} is not a header name"));
            }
            if variable.trim().is_empty() {
                return fail(format!(
                    "server.traces.headers_env.{name}: name the environment variable holding its value"
                ));
            }
        }
        Ok(())
    }
}
