//! Waiting in tests for a condition instead of for a guessed time: the one place the suites
//! wait on real time, so a test waits no longer than what it waits for takes, and a failing
//! one says what it saw last.

use std::time::{Duration, Instant};

/// How long a test waits for what it expects: generous, for a machine loaded by the rest of
/// the suite, and only ever spent by a test that is failing anyway.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a waiting test looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// What `probe` answers once it answers `Some`, or `None` once [`PATIENCE`] has passed; it is
/// asked every [`POLL`].
pub async fn eventually<T>(probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    polled(probe, Option::is_some).await
}

/// What `read` answers once `done` holds for it, or its last answer once [`PATIENCE`] has
/// passed (so the assertion after it can show what was seen last); it is asked every [`POLL`].
pub async fn polled<T>(read: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    polled_within(PATIENCE, POLL, read, done).await
}

/// [`polled`] with its own patience (`within`) and pace (`every`): longer for what is slow to
/// come, slower for a `read` that is costly or that acts (sends a message, runs the CLI).
pub async fn polled_within<T>(
    within: Duration,
    every: Duration,
    mut read: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let value = read().await;
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(every).await;
    }
}

/// Asserts that what `read` answers passes `holds` throughout `span` of real time, looking
/// every [`POLL`]: for what must not happen (a process outliving its deadline, a second
/// delivery), which no event announces, so only time can show it.
pub async fn holds_for<T: std::fmt::Debug>(
    span: Duration,
    what: &str,
    mut read: impl AsyncFnMut() -> T,
    holds: impl Fn(&T) -> bool,
) {
    let until = Instant::now() + span;
    let broken = polled_within(
        span,
        POLL,
        async || (read().await, Instant::now()),
        |(value, at)| !holds(value) || *at > until,
    )
    .await;
    assert!(holds(&broken.0), "{what}: {:?}", broken.0);
}

/// [`polled_within`] for a thread with no runtime to yield to: it sleeps between reads.
pub fn polled_blocking<T>(
    within: Duration,
    every: Duration,
    mut read: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let value = read();
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(every);
    }
}
