//! Schedules: when an agent's job fires.
//!
//! Owns the schedule language (cron expressions with an optional seconds field, `@hourly`-style
//! aliases, `@every 10m` intervals), time zones (the IANA database compiled in, so every machine
//! fires at the same instants), the next fire time across daylight-saving changes, and which
//! scheduled times are due after a pause under a job's misfire policy. The rules are pure
//! functions of their inputs and the time they are given (no clock, no I/O), so they are tested
//! with controlled time.
//!
//! `scheduler` is the one part that touches the store: looks at the due jobs, committing what
//! each fires through `clade-store`'s jobs, run as a service on the store's clock; `jobs`
//! checks a job as it is asked for, for every edge that creates one; `tools` are the
//! agents' own `cron.*` tools; `heartbeats` keeps the jobs `clade.yaml` declares; `retention` is the
//! scheduled sweep of old records. Must not depend on the
//! runtime or the gateway: waking the engine for the envelopes a look fired is its caller's.

mod cron;
pub mod heartbeats;
pub mod jobs;
mod misfire;
pub mod retention;
pub mod scheduler;
pub mod tools;

pub use cron::{Schedule, ScheduleError, Zone, parse_interval};
pub use jobs::{JobError, JobLimits, JobSpec, new_job};

/// Checks what of a configuration is this crate's to read: every heartbeat as a job, and the
/// retention sweep's schedule. Errors name the field.
pub fn check_config(
    config: &clade_config::Config,
    now: clade_core::Timestamp,
) -> Result<(), heartbeats::HeartbeatError> {
    heartbeats::check(config, now)?;
    Schedule::parse(&config.scheduler.retention_schedule).map_err(|e| {
        heartbeats::HeartbeatError::Invalid {
            agent: String::new(),
            problem: format!("scheduler.retention_schedule: {e}"),
        }
    })?;
    Ok(())
}
pub use misfire::{Due, Misfire};
