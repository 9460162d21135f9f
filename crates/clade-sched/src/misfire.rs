//! Which scheduled times fire after a pause (a crash, a restart, a stalled node).
//!
//! The scheduler remembers the last scheduled time it settled for a job, fired or skipped,
//! and commits the next one together with whatever it fires: so each scheduled time is settled
//! once, and [`Misfire::due`] decides, from that time and now, what becomes of the times in
//! between.

use std::time::Duration;

use std::fmt;

use clade_core::Timestamp;

use crate::{Schedule, Zone};

/// What happens to scheduled times that passed while nothing could fire them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfire {
    /// They are skipped; the job next fires at its next time.
    Skip,
    /// The latest of them fires once, the others are skipped.
    RunOnce,
    /// The latest `n` of them fire, oldest first; the ones before are skipped.
    CatchUp(u32),
}

/// The scheduled times settled by one look at a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// To fire now, oldest first.
    pub fire: Vec<Timestamp>,
    /// Passed and not fired, under the misfire policy.
    pub skipped: u64,
    /// The last scheduled time settled (fired or skipped): what to remember for the next look.
    /// Unchanged when nothing was due.
    pub settled: Timestamp,
    /// When the job fires next, if ever.
    pub next: Option<Timestamp>,
}

impl Misfire {
    /// Reads the policy as [`fmt::Display`] writes it: `skip`, `run_once` or `catch_up:<n>`.
    pub fn parse(text: &str) -> Result<Self, crate::ScheduleError> {
        let refuse = || crate::ScheduleError::Misfire(text.to_owned());
        match text {
            "skip" => Ok(Misfire::Skip),
            "run_once" => Ok(Misfire::RunOnce),
            _ => {
                let n = text.strip_prefix("catch_up:").ok_or_else(refuse)?;
                n.parse().ok().filter(|n| *n > 0).map(Misfire::CatchUp).ok_or_else(refuse)
            }
        }
    }

    /// The times of `schedule` after `settled` and up to `now`. Those within `grace` of `now`
    /// are on time and fire; older ones missed their time and follow the policy. Every missed
    /// time is counted, fired or skipped, however many there were.
    pub fn due(
        self,
        schedule: &Schedule,
        zone: &Zone,
        settled: Timestamp,
        now: Timestamp,
        grace: Duration,
    ) -> Due {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let on_time_from = Timestamp::from_millis(now.as_millis().saturating_sub(grace));
        let keep = match self {
            Misfire::Skip => 0,
            Misfire::RunOnce => 1,
            Misfire::CatchUp(n) => n as usize,
        };
        // The missed times, counted; only the last `keep` of them are kept.
        let mut kept = std::collections::VecDeque::with_capacity(keep.min(1024));
        let mut missed: u64 = 0;
        let mut at = settled;
        while let Some(next) =
            schedule.next_after(at, zone).filter(|t| *t < on_time_from && *t <= now)
        {
            missed += 1;
            if keep > 0 {
                if kept.len() == keep {
                    kept.pop_front();
                }
                kept.push_back(next);
            }
            at = next;
        }
        let mut fire: Vec<Timestamp> = kept.into_iter().collect();
        let skipped = missed - fire.len() as u64;
        // On time: bounded by the grace window.
        let on_time = schedule.fires_between(at, now, zone, usize::MAX);
        if let Some(&last) = on_time.last() {
            at = last;
        }
        fire.extend(on_time);
        Due { fire, skipped, settled: at, next: schedule.next_after(at, zone) }
    }
}

impl fmt::Display for Misfire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfire::Skip => f.write_str("skip"),
            Misfire::RunOnce => f.write_str("run_once"),
            Misfire::CatchUp(n) => write!(f, "catch_up:{n}"),
        }
    }
}
