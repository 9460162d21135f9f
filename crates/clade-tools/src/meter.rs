//! What a run adds to its workspace, counted while it runs.
//!
//! `RLIMIT_FSIZE` bounds each file a run writes, by what the quota left when the run started;
//! a run writing many files could still pass the quota by a multiple of that. The meter
//! watches the workspace with inotify from before the run starts, keeps the bytes each entry
//! takes, and reports the moment the total passes the quota, so the run is stopped within
//! milliseconds of it instead of at its deadline.
//!
//! Two modes:
//! - **Exact**: inotify watches on every directory. A write, truncate, create, delete or rename
//!   of a file re-measures that file; anything done to a directory, and a lost event queue,
//!   measures the whole tree again. Files written since the run started are also re-measured
//!   every [`RESTAT`], which catches growth that raises no event after the first (pages of a
//!   mapping written in place).
//! - **Sampled**, when inotify is unavailable (no instance or watch left for this user) or the
//!   tree is too large to keep a size per entry: the whole tree is measured every [`SAMPLE`].
//!
//! What it cannot see until the run ends (when the workspace is measured again anyway): pages
//! written through a shared mapping of a file the run never wrote to or truncated, which can
//! only fill holes of sparse files made earlier, each at most the file-size limit.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use crate::WorkspaceRoom;

/// How often files written during the run are measured again, events or not.
const RESTAT: Duration = Duration::from_millis(250);
/// How often a sampled meter measures the whole tree.
const SAMPLE: Duration = Duration::from_millis(500);
/// The most entries an exact meter keeps a size for; a larger tree is sampled.
const MAX_EXACT_ENTRIES: usize = 200_000;
/// How long one wait for events lasts, so a stop is seen promptly.
const TICK: Duration = Duration::from_millis(50);

const WATCHED: WatchFlags = WatchFlags::MODIFY
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::CREATE)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DONT_FOLLOW)
    .union(WatchFlags::ONLYDIR);

/// A workspace's use in bytes (allocated blocks, as [`crate::workspace::usage`] counts), kept
/// up to date while a run writes to it.
pub(crate) struct Meter {
    root: PathBuf,
    used: u64,
    exact: Option<Exact>,
}

struct Exact {
    inotify: OwnedFd,
    /// Watched directories, by watch descriptor.
    dirs: HashMap<i32, PathBuf>,
    /// Bytes each entry takes, for entries that take any.
    sizes: HashMap<PathBuf, u64>,
    /// Files written since the run started, measured again every [`RESTAT`].
    written: HashSet<PathBuf>,
}

impl Meter {
    /// Starts counting `root`, before anything runs in it: its use now is [`Meter::used`].
    pub(crate) fn start(root: &Path) -> Self {
        let mut meter = Self { root: root.to_owned(), used: 0, exact: None };
        if let Ok(inotify) = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            meter.exact = Some(Exact {
                inotify,
                dirs: HashMap::new(),
                sizes: HashMap::new(),
                written: HashSet::new(),
            });
        }
        meter.measure_all();
        meter
    }

    /// Bytes the workspace takes, as last counted.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Whether it follows each change (inotify) rather than sampling the tree.
    #[cfg(test)]
    fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// Counts until `stop` is set, or the use passes the workspace's own quota (`own`) or the
    /// room its tenant's total leaves it (or grows at all, when it starts past them): then
    /// returns it. Each change of the use is recorded
    /// in `room`, for the tenant's other runs.
    // Paced by the wall clock: it watches a real process writing to a real disk.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn watch(
        mut self,
        own: u64,
        room: Option<&WorkspaceRoom>,
        stop: &AtomicBool,
    ) -> Option<u64> {
        let mut last_full = Instant::now();
        let mut recorded = self.used;
        // A workspace already past its quota may shrink, and may not grow.
        let start = self.used;
        while !stop.load(Ordering::Relaxed) {
            if let Some(room) = room.filter(|_| self.used != recorded) {
                room.record(self.used);
                recorded = self.used;
            }
            let quota = room.map_or(own, |room| room.bytes().min(own)).max(start);
            if self.used > quota {
                return Some(self.used);
            }
            match &self.exact {
                Some(exact) => {
                    let mut fds =
                        [rustix::event::PollFd::new(&exact.inotify, rustix::event::PollFlags::IN)];
                    let tick =
                        rustix::event::Timespec { tv_sec: 0, tv_nsec: TICK.as_nanos() as i64 };
                    let _ = rustix::event::poll(&mut fds, Some(&tick));
                    self.take_events();
                    if last_full.elapsed() >= RESTAT {
                        self.measure_written();
                        last_full = Instant::now();
                    }
                }
                None => {
                    std::thread::sleep(TICK);
                    if last_full.elapsed() >= SAMPLE {
                        self.measure_all();
                        last_full = Instant::now();
                    }
                }
            }
        }
        None
    }

    /// Reads every pending event and counts what each changed.
    fn take_events(&mut self) {
        let Some(exact) = &mut self.exact else { return };
        let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut changed: Vec<(PathBuf, bool)> = Vec::new();
        let mut whole_tree = false;
        let mut reader = inotify::Reader::new(&exact.inotify, &mut buffer);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            let flags = event.events();
            if flags.contains(ReadFlags::IGNORED) {
                exact.dirs.remove(&event.wd());
                continue;
            }
            if flags.intersects(ReadFlags::QUEUE_OVERFLOW | ReadFlags::ISDIR) {
                whole_tree = true;
                continue;
            }
            let (Some(dir), Some(name)) = (exact.dirs.get(&event.wd()), event.file_name()) else {
                continue;
            };
            let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            let gone = flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM);
            changed.push((path, gone));
        }
        if whole_tree {
            self.measure_all();
            return;
        }
        for (path, gone) in changed {
            self.measure(&path, gone);
        }
    }

    /// Measures one entry again after an event about it.
    fn measure(&mut self, path: &Path, gone: bool) {
        let now = match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {
                // A directory where a file was: its contents need watches and sizes.
                self.measure_all();
                return;
            }
            Ok(meta) => meta.blocks().saturating_mul(512),
            Err(_) => 0,
        };
        let Some(exact) = &mut self.exact else { return };
        let before = if now == 0 {
            exact.sizes.remove(path).unwrap_or(0)
        } else {
            exact.sizes.insert(path.to_owned(), now).unwrap_or(0)
        };
        if gone && now == 0 {
            exact.written.remove(path);
        } else {
            exact.written.insert(path.to_owned());
        }
        self.used = self.used.saturating_sub(before).saturating_add(now);
    }

    /// Measures again the files written since the run started.
    fn measure_written(&mut self) {
        let Some(exact) = &self.exact else { return };
        let written: Vec<PathBuf> = exact.written.iter().cloned().collect();
        for path in written {
            self.measure(&path, false);
        }
    }

    /// Measures the whole tree, and (when exact) watches every directory in it. A tree too
    /// large, or out of watches, turns the meter to sampling.
    fn measure_all(&mut self) {
        let Some(exact) = &mut self.exact else {
            self.used = crate::workspace::usage(&self.root);
            return;
        };
        let mut total = 0u64;
        let mut sizes = HashMap::new();
        let mut watching = true;
        let inotify = &exact.inotify;
        let mut dirs = HashMap::new();
        match inotify::add_watch(inotify, &self.root, WATCHED) {
            Ok(wd) => {
                dirs.insert(wd, self.root.clone());
            }
            Err(_) => watching = false,
        }
        let complete = crate::workspace::visit_tree(&self.root, |path, meta| {
            let bytes = meta.blocks().saturating_mul(512);
            total = total.saturating_add(bytes);
            if !watching {
                return;
            }
            if bytes > 0 {
                sizes.insert(path.to_owned(), bytes);
            }
            if meta.is_dir() {
                match inotify::add_watch(inotify, path, WATCHED) {
                    Ok(wd) => {
                        dirs.insert(wd, path.to_owned());
                    }
                    Err(_) => watching = false,
                }
            }
            if sizes.len() > MAX_EXACT_ENTRIES {
                watching = false;
            }
        });
        self.used = if complete { total } else { u64::MAX };
        if watching && complete {
            exact.sizes = sizes;
            exact.dirs = dirs;
            exact.written.retain(|path| exact.sizes.contains_key(path));
        } else {
            // Closing the descriptor drops its watches.
            self.exact = None;
        }
    }
}

/// A meter counting on its own thread while a run lasts.
pub(crate) struct Watching {
    stop: Arc<AtomicBool>,
}

impl Watching {
    /// Counts `meter` on a blocking thread until dropped (see [`Meter::watch`]); the receiver
    /// resolves with the use when it passes the quota.
    pub(crate) fn spawn(
        meter: Meter,
        own: u64,
        room: Option<WorkspaceRoom>,
    ) -> (Self, tokio::sync::oneshot::Receiver<u64>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (tell, over) = tokio::sync::oneshot::channel();
        let flag = stop.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(used) = meter.watch(own, room.as_ref(), &flag) {
                let _ = tell.send(used);
            }
        });
        (Self { stop }, over)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(meter: &mut Meter) -> u64 {
        meter.take_events();
        meter.used()
    }

    #[test]
    fn a_meter_follows_writes_deletes_and_renames_as_they_happen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("before"), vec![1u8; 64 * 1024]).unwrap();
        let mut meter = Meter::start(dir.path());
        assert!(meter.is_exact());
        let start = meter.used();
        assert_eq!(start, crate::workspace::usage(dir.path()));
        assert!(start >= 64 * 1024);

        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/new"), vec![2u8; 256 * 1024]).unwrap();
        // The directories are new: the tree is measured again, and watched from then on.
        assert_eq!(counted(&mut meter), crate::workspace::usage(dir.path()));
        std::fs::write(dir.path().join("a/b/second"), vec![3u8; 128 * 1024]).unwrap();
        assert_eq!(counted(&mut meter), crate::workspace::usage(dir.path()));
        std::fs::rename(dir.path().join("a/b/second"), dir.path().join("moved")).unwrap();
        assert_eq!(counted(&mut meter), crate::workspace::usage(dir.path()));
        std::fs::remove_file(dir.path().join("before")).unwrap();
        std::fs::remove_file(dir.path().join("a/b/new")).unwrap();
        let after = counted(&mut meter);
        assert_eq!(after, crate::workspace::usage(dir.path()));
        assert!(after < start + 256 * 1024, "deletes are counted: {after}");
    }

    #[test]
    fn a_watching_meter_says_when_the_quota_is_passed() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let meter = Meter::start(dir.path());
            let (_watching, mut over) = Watching::spawn(meter, 1024 * 1024, None);
            for n in 0..8 {
                std::fs::write(dir.path().join(format!("f{n}")), vec![0u8; 200 * 1024]).unwrap();
            }
            let used = tokio::time::timeout(Duration::from_secs(10), &mut over)
                .await
                .expect("the meter reports the quota passed")
                .unwrap();
            assert!(used > 1024 * 1024, "{used}");
        });
    }

    /// Two agents of one tenant, each writing under the tenant's total alone: the second passes
    /// it because the first's writes are seen while both run.
    #[test]
    fn a_tenants_runs_share_its_total_while_they_write() {
        use std::sync::Mutex;
        struct Ledger {
            total: u64,
            used: Mutex<[u64; 2]>,
        }
        struct Agent(Arc<Ledger>, usize);
        impl crate::TenantDisk for Agent {
            fn room(&self) -> u64 {
                let used = self.0.used.lock().unwrap();
                self.0.total.saturating_sub(used[1 - self.1])
            }
            fn record(&self, used: u64) {
                self.0.used.lock().unwrap()[self.1] = used;
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let ledger = Arc::new(Ledger { total: 1024 * 1024, used: Mutex::new([0; 2]) });
            let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
            let room = |n| WorkspaceRoom::new(Arc::new(Agent(ledger.clone(), n)));
            let own = 64 * 1024 * 1024;
            let (_a, _) = Watching::spawn(Meter::start(dirs[0].path()), own, Some(room(0)));
            let (_b, mut b_over) =
                Watching::spawn(Meter::start(dirs[1].path()), own, Some(room(1)));
            std::fs::write(dirs[0].path().join("a"), vec![1u8; 640 * 1024]).unwrap();
            let seen = || ledger.used.lock().unwrap()[0] >= 640 * 1024;
            let recorded = async {
                while !seen() {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), recorded)
                .await
                .expect("the first run's writes are recorded as they happen");
            std::fs::write(dirs[1].path().join("b"), vec![2u8; 640 * 1024]).unwrap();
            let used = tokio::time::timeout(Duration::from_secs(10), &mut b_over)
                .await
                .expect("the second run passes what the first left")
                .unwrap();
            // Stopped as soon as the two together pass the total, which may be mid-write:
            // b's own share then need only pass what a left.
            assert!(used > 1024 * 1024 - 640 * 1024, "{used}");
        });
    }
}
