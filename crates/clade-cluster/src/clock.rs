//! Whether a node's clock agrees with the database's. Leases are timed by the database, but
//! schedules fire, budgets roll over and turns are stamped by the clock of the node that runs
//! them: nodes whose clocks disagree would fire a job early on one and late on another. A node
//! is refused at its start when its clock is off, and its keeper measures again every lease
//! period while it runs, so a clock that drifts later shows as a degraded node.

use std::fmt;

use clade_store::Store;

/// How far a node's clock may be from the database's.
pub const MAX_CLOCK_SKEW_MS: i64 = 2_000;

/// How far this node's clock is from the database's: positive when it is ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSkew {
    pub ms: i64,
}

impl ClockSkew {
    /// Measures it: the database read its clock somewhere between two reads of this node's.
    pub async fn measure(store: &Store) -> Result<Self, clade_store::Error> {
        let before = store.now().as_millis();
        let database = store.shard_leases().database_time().await?.as_millis();
        let after = store.now().as_millis();
        Ok(Self { ms: (before + after) / 2 - database })
    }

    /// Whether it is past [`MAX_CLOCK_SKEW_MS`].
    pub fn too_far(self) -> bool {
        self.ms.abs() > MAX_CLOCK_SKEW_MS
    }
}

impl fmt::Display for ClockSkew {
    /// `this node's clock is 300.0 s ahead of the database's (at most 2 s is allowed)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let way = if self.ms > 0 { "ahead of" } else { "behind" };
        write!(
            f,
            "this node's clock is {:.1} s {way} the database's (at most {} s is allowed)",
            self.ms.abs() as f64 / 1000.0,
            MAX_CLOCK_SKEW_MS / 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_says_how_far_and_which_way() {
        let ahead = ClockSkew { ms: 300_040 };
        assert!(ahead.too_far());
        assert_eq!(
            ahead.to_string(),
            "this node's clock is 300.0 s ahead of the database's (at most 2 s is allowed)"
        );
        let behind = ClockSkew { ms: -2_001 };
        assert!(behind.too_far() && behind.to_string().contains("2.0 s behind"));
        assert!(!ClockSkew { ms: 2_000 }.too_far() && !ClockSkew { ms: -15 }.too_far());
    }
}
