//! A limit on how long a test's own process may run, with a report of where it hung.

use std::sync::mpsc;
use std::time::Duration;

/// Armed for a test: if it is still running when `limit` has passed, every thread's stack
/// (gdb's backtraces, where gdb is installed) goes to stderr and the process aborts, so a rare
/// hang in CI says where it was instead of ending as a bare timeout. Dropping it disarms it.
pub struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Arms a watchdog for `what`, firing after `limit`.
    pub fn arm(what: &str, limit: Duration) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let what = what.to_owned();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                eprintln!("{what} ran over {limit:?}; its threads:");
                let pid = std::process::id().to_string();
                let stacks = std::process::Command::new("gdb")
                    .args(["-p", &pid, "-batch", "-ex", "thread apply all bt 30"])
                    .output();
                match stacks {
                    Ok(out) => eprintln!("{}", String::from_utf8_lossy(&out.stdout)),
                    Err(err) => eprintln!("(no stacks: gdb could not run: {err})"),
                }
                std::process::abort();
            }
        });
        Self { _disarm: disarm }
    }
}
