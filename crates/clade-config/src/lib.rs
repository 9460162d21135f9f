//! The typed `clade.yaml`: the operator's source of truth.
//!
//! Owns the configuration types, their parsing (unknown keys are errors, every error names the
//! file, line and field) and the JSON Schema generated from the same types. It does no I/O
//! besides reading the one file it is asked to load, and knows nothing of stores or servers.
//! Start at [`Config`].

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The file name looked up in the data dir when `--config` is not given.
pub const FILE_NAME: &str = "clade.yaml";

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: PathBuf, line: u64, column: u64, message: String },
    #[error("{path}: {message}")]
    InvalidNoLocation { path: PathBuf, message: String },
}

/// Everything `clade.yaml` can say. Every section is optional; defaults are documented per field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "clade.yaml", description = "Configuration of a Clade gateway.")]
pub struct Config {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: default_listen(), max_body_bytes: default_max_body() }
    }
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
    /// Parses YAML text; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        // An empty file is a valid, all-defaults configuration.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str::<Config>(text).map_err(|err| yaml_error(&err, path))
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Reads `path` if it exists, else returns the defaults.
    pub fn load_or_default(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::Read { path: path.to_owned(), source }),
        }
    }

    /// The JSON Schema of `clade.yaml`, generated from these types.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
    }
}

fn yaml_error(err: &serde_saphyr::Error, path: &Path) -> Error {
    // The rendered message carries a source snippet over several lines; keep the first line,
    // which names the problem, and put the position in front in the `file:line:col` form that
    // editors and terminals make clickable.
    let rendered = err.to_string();
    let message = rendered.lines().next().unwrap_or("invalid YAML").trim().to_owned();
    match err.location() {
        Some(loc) if loc.line() > 0 => Error::Invalid {
            path: path.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message,
        },
        _ => Error::InvalidNoLocation { path: path.to_owned(), message },
    }
}
