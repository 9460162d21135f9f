//! The [`Clock`]: "now" and sleeping, on the system's clock or a manual one tests move. Behind
//! the `clock` feature, the crate's one use of tokio.

use std::pin::Pin;
use std::time::Duration;

use crate::Timestamp;

/// What [`Clock::sleep`] returns: completes once the time has passed on that clock.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The source of time: "now", and waiting for a duration to pass. Production uses
/// [`SystemClock`]; tests inject a [`ManualClock`] and move it themselves, so expiry, cooldowns,
/// back-off and budget periods are tested without waiting for them. Reading the system's
/// clocks or sleeping anywhere else is a clippy error (`clippy.toml`).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;

    /// Completes once this clock reads `at` or later (at once if it already does). Unlike
    /// `sleep(at - now)`, a clock that moves between reading "now" and sleeping does not push
    /// the wake-up later.
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = at.as_millis().saturating_sub(self.now().as_millis()).max(0);
        self.sleep(Duration::from_millis(wait.unsigned_abs()))
    }
}

/// The operating system's wall clock; sleeping is the async runtime's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one sanctioned reader of the system clock.
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_millis(millis)
    }

    #[allow(clippy::disallowed_methods)] // The one sanctioned timer.
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]); its sleepers wake as soon as
/// it passes their time.
#[derive(Debug)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<i64>,
    /// The times its sleepers wait for (a count per time), so a simulator can move it to the
    /// next one ([`ManualClock::next_wake`]).
    sleepers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<i64, usize>>>,
}

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        Self { now: tokio::sync::watch::Sender::new(at.as_millis()), sleepers: Default::default() }
    }

    /// The earliest time a sleeper still waits for, if any: where a simulator moves the clock
    /// when nothing else is left to do.
    pub fn next_wake(&self) -> Option<Timestamp> {
        let sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        sleepers.keys().next().map(|at| Timestamp::from_millis(*at))
    }

    /// Moves the clock forward to `at` (never back) and wakes whoever slept until then.
    pub fn advance_to(&self, at: Timestamp) {
        self.now.send_modify(|now| *now = (*now).max(at.as_millis()));
    }

    /// Moves the clock `by` forward and wakes whoever slept until then.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.send_modify(|now| *now = now.saturating_add(by));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(*self.now.borrow())
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let from = self.now();
        self.sleep_until(from.plus(duration))
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut now = self.now.subscribe();
        let until = at.as_millis();
        let waiting = Waiting::new(self.sleepers.clone(), until);
        Box::pin(async move {
            let _waiting = waiting;
            while *now.borrow_and_update() < until {
                if now.changed().await.is_err() {
                    // The clock is gone: it will never get there.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// A sleeper's time in [`ManualClock`]'s list for as long as it sleeps.
struct Waiting {
    sleepers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<i64, usize>>>,
    until: i64,
}

impl Waiting {
    fn new(
        sleepers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<i64, usize>>>,
        until: i64,
    ) -> Self {
        *sleepers.lock().unwrap_or_else(|e| e.into_inner()).entry(until).or_insert(0) += 1;
        Self { sleepers, until }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = sleepers.get_mut(&self.until) {
            *count -= 1;
            if *count == 0 {
                sleepers.remove(&self.until);
            }
        }
    }
}

/// Ticks every `period` on `clock`, the first tick after one period. A tick that comes late
/// (the caller was busy, or a manual clock jumped) is not made up for: the next is one period
/// after it.
pub struct Interval {
    clock: std::sync::Arc<dyn Clock>,
    period: Duration,
    next: Timestamp,
}

impl Interval {
    pub fn new(clock: std::sync::Arc<dyn Clock>, period: Duration) -> Self {
        let next = clock.now().plus(period);
        Self { clock, period, next }
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        self.clock.sleep_until(self.next).await;
        self.next = self.clock.now().plus(self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_sleepers_only_when_moved_past_their_time() {
        let clock = std::sync::Arc::new(ManualClock::new(Timestamp::from_millis(1_000)));
        let sleeper = tokio::spawn(clock.sleep(Duration::from_secs(60)));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke a second early");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
        assert_eq!(clock.now(), Timestamp::from_millis(61_000));
    }

    #[tokio::test]
    async fn a_manual_clock_knows_the_next_time_a_sleeper_waits_for() {
        let clock = std::sync::Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        assert_eq!(clock.next_wake(), None);
        let late = clock.sleep(Duration::from_secs(90));
        let early = tokio::spawn(clock.sleep(Duration::from_secs(30)));
        assert_eq!(clock.next_wake(), Some(Timestamp::from_millis(30_000)));
        clock.advance_to(Timestamp::from_millis(30_000));
        tokio::time::timeout(Duration::from_secs(5), early).await.unwrap().unwrap();
        assert_eq!(clock.next_wake(), Some(Timestamp::from_millis(90_000)));
        drop(late);
        assert_eq!(clock.next_wake(), None, "a dropped sleeper waits for nothing");
        clock.advance_to(Timestamp::from_millis(10));
        assert_eq!(clock.now(), Timestamp::from_millis(30_000), "never moves back");
    }

    #[tokio::test]
    async fn an_interval_ticks_once_per_period_of_its_clock() {
        let clock = std::sync::Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let mut interval = Interval::new(clock.clone(), Duration::from_secs(10));
        let ticking = tokio::spawn(async move {
            interval.tick().await;
            interval.tick().await;
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(10));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!ticking.is_finished(), "two ticks in one period");
        clock.advance(Duration::from_secs(10));
        tokio::time::timeout(Duration::from_secs(5), ticking).await.unwrap().unwrap();
    }
}
