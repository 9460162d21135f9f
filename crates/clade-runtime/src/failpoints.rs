//! Failpoints: named places where a run can be made to stop on purpose, for the crash tests.
//!
//! Each engine has its own [`Failpoints`] ([`crate::EngineOptions::failpoints`]): the
//! simulator arms an engine's to stop that engine alone (its node "crashes" and is started
//! again in the same process); `clade serve` passes [`Failpoints::process`], armed by
//! `CLADE_FAILPOINTS=name=N[,name=N…]` in builds with the `failpoints` feature, which aborts
//! the process the N-th time `name` is reached (no unwinding, no flushing: as abrupt as
//! `kill -9`). What runs beside the engine (the outbox, the chat channels, the ingest service)
//! reaches the process's through [`hit`].
//!
//! Names: `after_commit_before_ack`, `after_journal_intent`, `after_tool_effect_before_result`,
//! `mid_outbox_publish`, `mid_compaction` (memories saved, summary not yet written),
//! `before_fork_settled` (a branch's or worker's last turn ended, its outcome not yet delivered),
//! `before_update_confirmed` (a chat platform's update taken, not yet confirmed to it),
//! `mid_ingest` (`clade memory ingest-service`: a turn's items saved, the cursor not yet moved).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The failpoints of one engine (or of the process): none armed, cheaply.
#[derive(Clone, Default)]
pub struct Failpoints(Option<Arc<Armed>>);

struct Armed {
    /// Reaches left before each armed name stops the run.
    remaining: Mutex<HashMap<String, u64>>,
    /// What stopping the run is: the process aborts; the simulator halts the node.
    on_hit: Box<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Failpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let armed = self.0.as_ref().map(|armed| match armed.remaining.lock() {
            Ok(remaining) => format!("{remaining:?}"),
            Err(_) => "?".to_owned(),
        });
        f.debug_tuple("Failpoints").field(&armed).finish()
    }
}

impl Failpoints {
    /// None armed.
    pub fn none() -> Self {
        Self(None)
    }

    /// `points` (name, N) armed: the N-th time a name is reached, `on_hit` is called with it,
    /// on the task that reached it. It should not return (abort, or halt the task): the point
    /// is a place to stop.
    pub fn armed(
        points: impl IntoIterator<Item = (String, u64)>,
        on_hit: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        let remaining = Mutex::new(points.into_iter().collect());
        Self(Some(Arc::new(Armed { remaining, on_hit: Box::new(on_hit) })))
    }

    /// Arms `name` to stop the run the `n`-th time from now it is reached; a no-op on
    /// [`Failpoints::none`] (there is nothing to stop with).
    pub fn arm(&self, name: &str, n: u64) {
        if let Some(armed) = &self.0
            && let Ok(mut remaining) = armed.remaining.lock()
        {
            remaining.insert(name.to_owned(), n);
        }
    }

    /// The process's: armed by `CLADE_FAILPOINTS` in builds with the `failpoints` feature,
    /// aborting the process; none otherwise. Read once.
    pub fn process() -> Self {
        process().clone()
    }

    /// Reaches `name`: stops the run if it is armed and this is its N-th time.
    #[inline]
    pub fn hit(&self, name: &str) {
        let Some(armed) = &self.0 else { return };
        let due = {
            let Ok(mut remaining) = armed.remaining.lock() else { return };
            match remaining.get_mut(name) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    *left == 0
                }
                _ => false,
            }
        };
        if due {
            (armed.on_hit)(name);
        }
    }
}

fn process() -> &'static Failpoints {
    static PROCESS: OnceLock<Failpoints> = OnceLock::new();
    PROCESS.get_or_init(from_env)
}

#[cfg(feature = "failpoints")]
fn from_env() -> Failpoints {
    #[allow(clippy::disallowed_methods)] // Test-only configuration, read once.
    let spec = std::env::var("CLADE_FAILPOINTS").unwrap_or_default();
    let points: Vec<(String, u64)> = spec
        .split(',')
        .filter_map(|item| item.split_once('='))
        .filter_map(|(name, n)| n.trim().parse().ok().map(|n| (name.trim().to_owned(), n)))
        .collect();
    if points.is_empty() {
        return Failpoints::none();
    }
    Failpoints::armed(points, |name| {
        #[allow(clippy::print_stderr)] // The crash tests read it: the process is about to die.
        {
            eprintln!("failpoint {name} reached: aborting");
        }
        std::process::abort();
    })
}

#[cfg(not(feature = "failpoints"))]
fn from_env() -> Failpoints {
    Failpoints::none()
}

/// Reaches the process's failpoint `name` (see [`Failpoints::process`]).
#[inline]
pub fn hit(name: &str) {
    process().hit(name);
}

/// Whether this build can abort on purpose at `CLADE_FAILPOINTS`.
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_stops_the_run_the_nth_time_it_is_reached_and_only_then() {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        let points = Failpoints::armed([("a".to_owned(), 2)], move |name| {
            seen.lock().unwrap().push(name.to_owned());
        });
        let other = points.clone();
        points.hit("a");
        points.hit("b");
        assert!(hits.lock().unwrap().is_empty(), "stopped before its second reach");
        other.hit("a");
        points.hit("a");
        assert_eq!(*hits.lock().unwrap(), ["a"], "clones share one count; it stops once");
        Failpoints::none().hit("a");
    }
}
