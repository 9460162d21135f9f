//! What agents are given by the file: declared settings (`settings`) and heartbeats (`heartbeats`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// A declared agent setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingConfig {
    /// What the setting is for, as agents and operators see it.
    #[serde(default)]
    pub description: String,
    /// The value read when none is stored (any JSON value).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// An environment variable whose value, when set, every agent reads instead (JSON if it
    /// parses as JSON, else text).
    #[serde(default)]
    pub env: Option<String>,
    /// Whether agents may change their value with `settings.set` and `settings.unset`, and
    /// tenants' tokens through the API; when false only the operator may.
    #[serde(default = "default_true")]
    pub agent_writable: bool,
}

/// One agent's heartbeat. Its prompt is its own: it never depends on a file having content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// When it beats: a cron expression, an alias (`@hourly`) or `@every 30m`.
    #[serde(default = "default_heartbeat_schedule")]
    pub schedule: String,
    /// What the agent is told at every beat.
    pub prompt: String,
    /// The IANA time zone the schedule is read in; UTC when absent.
    #[serde(default)]
    pub zone: Option<String>,
    /// Where beats go: `session:<name>` (default `session:heartbeat`) or `new`.
    #[serde(default)]
    pub target: Option<String>,
    /// Up to this many seconds added to each beat.
    #[serde(default)]
    pub jitter_secs: Option<u32>,
}

fn default_heartbeat_schedule() -> String {
    "@every 30m".into()
}
