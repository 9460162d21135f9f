//! Agents' scheduled jobs (`scheduler`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// How the gateway fires agents' scheduled jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Whether this gateway fires jobs (one per store should; jobs stay due while none does).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A scheduled time missed by less than this still fires on time; older ones follow the
    /// job's misfire policy (skip, run_once, catch_up:N).
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    /// A job whose last this many runs failed (refused, or its turn failed) is disabled, with
    /// an audit record, until enabled again; 0 never disables one.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// When the retention sweep (`tenants.<name>.retention`) runs, as a cron expression in UTC.
    #[serde(default = "default_retention_schedule")]
    pub retention_schedule: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_secs: default_grace(),
            max_failures: default_max_failures(),
            retention_schedule: default_retention_schedule(),
        }
    }
}

fn default_grace() -> u64 {
    60
}
fn default_max_failures() -> u32 {
    5
}
fn default_retention_schedule() -> String {
    "0 3 * * *".into()
}
