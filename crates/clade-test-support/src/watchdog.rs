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
                eprintln!("{}", thread_stacks(std::process::id()));
                std::process::abort();
            }
        });
        Self { _disarm: disarm }
    }
}

/// Where each thread of process `pid` is: gdb's backtraces where gdb is installed, and the
/// kernel's view of each thread (its name, what it waits in, its kernel stack where readable).
pub fn thread_stacks(pid: u32) -> String {
    let mut report = String::new();
    match std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 30"])
        .output()
    {
        Ok(out) => report.push_str(&String::from_utf8_lossy(&out.stdout)),
        Err(err) => report.push_str(&format!("(no backtraces: gdb could not run: {err})\n")),
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    for task in tasks {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        report.push_str(&format!(
            "task {:?} {} wchan={}\n{}",
            task.file_name(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
        ));
    }
    report
}
