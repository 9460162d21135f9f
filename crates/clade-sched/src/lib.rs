//! Schedules: when an agent's job fires.
//!
//! Owns the schedule language (cron expressions with an optional seconds field, `@hourly`-style
//! aliases, `@every 10m` intervals), time zones (the IANA database compiled in, so every machine
//! fires at the same instants), the next fire time across daylight-saving changes, and which
//! scheduled times are due after a pause under a job's misfire policy. Everything here is a pure
//! function of its inputs and the time it is given: no clock, no store, no I/O, so the firing
//! rules are tested with controlled time.
//!
//! Must not depend on the store, the runtime or the gateway: the scheduler that keeps jobs and
//! fires them is built on this, not the other way round.

mod cron;
mod misfire;

pub use cron::{Schedule, ScheduleError, Zone};
pub use misfire::{Due, Misfire};
