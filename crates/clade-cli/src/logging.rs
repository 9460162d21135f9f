//! Structured logs through `tracing`: human-readable or JSON, filtered `RUST_LOG`-style.

use std::io::IsTerminal;

use clade_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG` wins over the config's filter, which wins over `default`.
pub(crate) fn init(format: LogFormat, config_filter: Option<&str>, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config_filter.unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}
