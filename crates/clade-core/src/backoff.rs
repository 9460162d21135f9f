//! Exponential back-off: how long to wait before trying again after failures in a row. One
//! schedule for every retry loop (model calls, deliveries, chat platforms, background
//! services), from `backon`'s exponential builder; the caller sleeps on its own clock, so a
//! test's manual clock drives the waits.

use std::time::Duration;

use backon::BackoffBuilder as _;

/// Waits doubling from `first` after one failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Doubling from `first` to at most `max` (`first` when `max` is smaller).
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The wait after `failures` failures in a row: `first` after one (or none), twice that
    /// after two, and so on up to `max`.
    pub fn after(&self, failures: u32) -> Duration {
        // Past 64 doublings every schedule is at its cap: the walk stays short.
        let steps = failures.clamp(1, 64) as usize - 1;
        backon::ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.max.max(self.first))
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(steps)
            .unwrap_or(self.max)
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max.max(self.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let waits: Vec<u64> = (0..8).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(waits, [1, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(30), "no overflow");
        let tight = Backoff::new(Duration::from_millis(100), Duration::from_millis(10));
        assert_eq!(tight.after(5), Duration::from_millis(100), "the first wait is the floor");
        assert_eq!(tight.max(), Duration::from_millis(100));
    }
}
