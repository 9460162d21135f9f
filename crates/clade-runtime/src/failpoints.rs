//! Failpoints for crash tests: named places where the process can be made to die on purpose.
//!
//! Compiled only with the `failpoints` feature. `CLADE_FAILPOINTS=name=N[,name=N…]` aborts the
//! process (no unwinding, no flushing: as abrupt as `kill -9`) the N-th time `name` is reached.
//! Names: `after_commit_before_ack`, `after_journal_intent`, `after_tool_effect_before_result`,
//! `mid_outbox_publish`, `mid_compaction` (memories saved, summary not yet written),
//! `before_fork_settled` (a branch's or worker's last turn ended, its outcome not yet delivered),
//! `before_update_confirmed` (a chat platform's update taken, not yet confirmed to it),
//! `mid_ingest` (`clade memory ingest-service`: a turn's items saved, the cursor not yet moved).

#[cfg(feature = "failpoints")]
mod imp {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    fn armed() -> &'static Mutex<HashMap<String, u64>> {
        static ARMED: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
        ARMED.get_or_init(|| {
            #[allow(clippy::disallowed_methods)] // Test-only configuration, read once.
            let spec = std::env::var("CLADE_FAILPOINTS").unwrap_or_default();
            let map = spec
                .split(',')
                .filter_map(|item| item.split_once('='))
                .filter_map(|(name, n)| n.trim().parse().ok().map(|n| (name.trim().to_owned(), n)))
                .collect();
            Mutex::new(map)
        })
    }

    pub(super) fn hit(name: &str) {
        let Ok(mut armed) = armed().lock() else { return };
        if let Some(remaining) = armed.get_mut(name) {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                eprintln!("failpoint {name} reached: aborting");
                std::process::abort();
            }
        }
    }
}

/// Reaches the failpoint `name` (a no-op without the `failpoints` feature).
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    imp::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether this build can fail on purpose.
pub const ENABLED: bool = cfg!(feature = "failpoints");
