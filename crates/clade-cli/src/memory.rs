//! The process's memory: its allocator and how it gives memory back to the system. The only
//! `unsafe` outside the store's VFS shim: calls into the allocator this binary links.

#![allow(unsafe_code)]

use std::time::{Duration, Instant};

/// Every turn allocates and frees many short-lived buffers (JSON of requests and replies, rows,
/// events). `clade bench turns --durability full` against the stub, two alternating runs each:
/// 2,954–3,427 turns/s at 100 sessions with mimalloc, 1,844–2,546 with glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` in its header; the test below checks that
/// this is still mimalloc 3 and the option's default still 3.x's purge delay).
const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays committed before the allocator gives it back. mimalloc 3's
/// default, one second, is longer than a burst of turns: `clade bench turns` at 1,000 sessions
/// then counted a whole run's garbage as memory per active session (47.3–47.8 KiB); at 100 ms,
/// 41.0–43.3 KiB, at the same turns/s and CPU per turn (three alternating runs each). An
/// operator's `MIMALLOC_PURGE_DELAY` still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// How often a runtime thread that runs out of work may give back memory freed on it.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// Run first thing in `main`.
///
/// Transparent huge pages are disabled for the whole process, and so for the processes it starts
/// (the flag is inherited and kept across `exec`: the stub of `clade bench turns`, and sandboxed
/// tools, which lose only the huge pages a large heap of theirs might have had):
/// mimalloc asks for them, and a 2 MiB page is resident whole as soon as one byte of it is
/// touched, so memory freed inside it is never given back. `clade bench turns` at 1,000 sessions
/// held 65–79 KiB of RSS per active session with them and 45–55 KiB without, at the same turns/s.
/// Failure only costs memory, so it is ignored.
pub(crate) fn configure() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    if purge_delay_from_environment().is_none() {
        // SAFETY: setting an option is a plain store into mimalloc's option table, allowed at
        // any time; the purge delay is read whenever a purge is scheduled.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS) };
    }
}

/// The purge delay an operator set for mimalloc, which read it itself at start.
#[allow(clippy::disallowed_methods)] // The allocator's own variable, not Clade's configuration.
fn purge_delay_from_environment() -> Option<std::ffi::c_long> {
    std::env::var("MIMALLOC_PURGE_DELAY").ok()?.trim().parse().ok()
}

/// Called when a runtime thread runs out of work: at most every [`GIVE_BACK_EVERY`], memory
/// freed on this thread goes back to the system. mimalloc otherwise keeps a thread's free pages
/// for its reuse until that thread allocates again, which an idle worker does not, so after a
/// burst of sessions had left memory their memory stayed resident (`clade bench turns` at 1,000
/// sessions: 44–49 KiB per session left, 21–23 KiB with this). Under load threads run out of
/// work many times a second; the rate limit keeps this to a small fraction of a millisecond a
/// second.
pub(crate) fn give_back_freed_memory() {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    #[allow(clippy::disallowed_methods)] // A rate limit on housekeeping, not the domain's time.
    let now = Instant::now();
    if LAST.get().is_some_and(|last| now.duration_since(last) < GIVE_BACK_EVERY) {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: `mi_collect` returns this thread's free pages (and the process's pending purges)
    // to the system; it may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set as the purge delay is mimalloc 3's purge delay: its default is 3.x's one
    /// second (mimalloc 2's is 10 ms), unless the environment set it.
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        // SAFETY: reading an option is a plain load from mimalloc's option table.
        let version = unsafe { libmimalloc_sys::mi_version() };
        assert!((30_000..40_000).contains(&version), "mimalloc {version} is not 3.x");
        // Set by `configure` only in `main`; unit tests start from the defaults.
        // SAFETY: as above.
        let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY_OPTION) };
        let expected = purge_delay_from_environment().unwrap_or(1000);
        assert_eq!(delay, expected, "option {PURGE_DELAY_OPTION} is not mimalloc 3's purge delay");
    }
}
