//! Group commit: every write goes through one writer (a thread of its own with SQLite, a task
//! with PostgreSQL) that runs whatever has queued up since its last commit in a single
//! transaction.
//!
//! A commit with `durability: full` costs one fsync (about 1 ms on this class of disk), so
//! committing each write alone caps throughput near 1,000 writes per second. While one batch
//! commits, the next one queues; the writer then takes all of it at once. Each write runs in
//! its own savepoint, released as soon as it succeeds, so one failing write (say, a duplicate
//! handle) rolls back alone and the rest of the batch still commits. Results are released only
//! once the commit is durable. With SQLite, WAL checkpoints run on a thread beside the writer.
//!
//! With SQLite and `durability: full`, a commit's visibility is split from its durability: the
//! writer commits without waiting for the disk (`synchronous = NORMAL`) and hands the batch to
//! a syncer thread, which `fdatasync`s the WAL once for every batch committed since its last
//! sync and only then releases their results. The writer meanwhile runs the next batch, so the
//! disk's flush no longer stalls the work queued behind it, and one fsync covers every batch
//! that committed while the previous one ran. Reads through the store wait for the durable
//! point too (see [`Writer::settled`]), so nothing that could vanish in a power cut is shown.
//!
//! With `durability: normal` nothing waits for the disk, but a flush thread still syncs the WAL
//! every few milliseconds while commits come, so its pages reach the disk in small steps
//! rather than in bursts that stall the writer (see `flusher`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{Backend, Durability, classify};
use crate::db::{self, Tx};
use crate::error::{Error, Result};
use crate::paced;

/// The largest number of writes folded into one transaction.
const MAX_BATCH: usize = 512;
/// Queued writes beyond this make callers wait (back-pressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 4096;

/// One write: a function of a connection already inside a transaction. It is `Fn`, so that a
/// transaction PostgreSQL aborted (a serialization failure, a deadlock) runs again: each run
/// builds its statements afresh from what the write captured.
pub(crate) type WriteFn<T> =
    Box<dyn for<'c> Fn(&'c mut Tx) -> BoxFuture<'c, Result<T>> + Send + Sync>;

/// Told a write's value as soon as its transaction has committed, before it is durable: the
/// write is then visible to reads (see [`Writer::write_announced`]). Runs on the writer's thread,
/// so it must only hand the value on.
pub(crate) type Announce<T> = Box<dyn FnOnce(&T) + Send>;

/// The largest number of committed batches waiting for the syncer before the writer waits.
const SYNC_QUEUE_DEPTH: usize = 64;

/// Where the writer gets its connection.
pub(crate) enum Connect {
    /// A connection of the PostgreSQL pool, on a tokio task.
    Postgres(PgPool),
    /// A connection of its own to this SQLite file, on a thread of its own: every statement
    /// is then a function call, not a hop to sqlx's worker thread (see [`crate::db`]).
    Sqlite { path: PathBuf, settings: &'static [&'static str], durability: Durability },
}

impl Connect {
    async fn open(&self, shown: &str) -> Result<Tx> {
        match self {
            Connect::Postgres(pool) => {
                pool.acquire().await.map(Tx::Postgres).map_err(|err| classify(err, shown))
            }
            Connect::Sqlite { path, settings, durability } => {
                let conn = db::sqlite::open(path, settings, paced::Writeback::AtOnce)?;
                // Checkpoints run on their own thread (see `checkpointer`), not inside a commit
                // that callers wait for; a WAL that grew past 256 MiB is cut back after one
                // (above what it reaches between two restarts, so its blocks stay allocated).
                conn.execute_batch(
                    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 268435456",
                )?;
                if *durability == Durability::Full {
                    // The syncer makes each commit durable before its result is released.
                    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
                }
                Ok(Tx::Sqlite(conn))
            }
        }
    }
}

trait Job: Send {
    /// Runs the write; returns whether it succeeded (if not, its savepoint is rolled back).
    fn run<'c>(&'c mut self, conn: &'c mut Tx) -> BoxFuture<'c, bool>;
    /// Whether it failed in a way that leaves nothing behind and may pass if run again: the
    /// database aborted its transaction (see [`Error::is_retryable`]).
    fn retryable(&self) -> bool;
    /// Forgets the outcome of a run whose transaction did not commit, before it runs again.
    fn reset(&mut self);
    /// Records that its transaction did not commit, for `reason`, while an earlier
    /// transaction of its batch did (so the batch's own outcome is success).
    fn abort(&mut self, reason: &str);
    /// Called once the transaction has committed, before it is durable.
    fn announce(&mut self);
    /// Delivers the outcome once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Op<T> {
    write: WriteFn<T>,
    outcome: Option<Result<T>>,
    announce: Option<Announce<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send + 'static> Job for Op<T> {
    fn run<'c>(&'c mut self, conn: &'c mut Tx) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = (self.write)(conn).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn retryable(&self) -> bool {
        matches!(&self.outcome, Some(Err(err)) if err.is_retryable())
    }

    fn reset(&mut self) {
        self.outcome = None;
    }

    fn abort(&mut self, reason: &str) {
        // A write that failed on its own keeps its own error.
        if !matches!(self.outcome, Some(Err(_))) {
            self.outcome = Some(Err(Error::CommitFailed(reason.to_owned())));
        }
    }

    fn announce(&mut self) {
        if let (Some(announce), Some(Ok(value))) = (self.announce.take(), &self.outcome) {
            announce(value);
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let result = match (self.outcome, commit) {
            // A write that failed reports its own error, whatever happened to the batch.
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(reason)) | (None, Err(reason)) => Err(Error::CommitFailed(reason)),
            (None, Ok(())) => Err(Error::WriterGone),
        };
        // The caller may have gone away (e.g. a dropped request); the write still committed.
        let _ = self.reply.send(result);
    }
}

/// The writer's two queues: what goes first ([`Writer::first`]) and the rest.
struct Lanes {
    first: mpsc::Receiver<Box<dyn Job>>,
    rest: mpsc::Receiver<Box<dyn Job>>,
}

impl Lanes {
    /// Waits for a write, then takes up to [`MAX_BATCH`] of what is queued, the first lane's
    /// before the rest; 0 once every handle is gone.
    async fn next_batch(&mut self, batch: &mut Vec<Box<dyn Job>>) -> usize {
        let taken = std::future::poll_fn(|cx| {
            match self.first.poll_recv_many(cx, batch, MAX_BATCH) {
                std::task::Poll::Ready(n) if n > 0 => std::task::Poll::Ready(n),
                // Nothing first (or that lane closed): whatever else is queued.
                _ => self.rest.poll_recv_many(cx, batch, MAX_BATCH),
            }
        })
        .await;
        if taken == 0 {
            // The rest closed, and nothing first was queued: every handle holds both lanes, so
            // both are closed.
            return self.first.recv_many(batch, MAX_BATCH).await;
        }
        // The first lane's writes queued meanwhile still go ahead of the rest.
        while batch.len() < MAX_BATCH {
            match self.first.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match self.rest.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.len()
    }
}

/// Counters of the write path, for benchmarks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (each one fsync with `durability: full`).
    pub commits: u64,
    /// Writes that went into those transactions.
    pub writes: u64,
    /// Time the writer spent running batches (its utilisation, against wall-clock time).
    pub busy_micros: u64,
    /// fsyncs of the WAL by the syncer (SQLite with `durability: full`; otherwise each commit
    /// syncs itself, or nothing is synced).
    pub syncs: u64,
    /// Of those, the ones that took longer than 5 ms: a disk that stalls shows here, and
    /// every write waiting for that fsync waits with it.
    pub slow_syncs: u64,
    /// The longest fsync of the WAL.
    pub slowest_sync_micros: u64,
    /// How long the fsyncs of the WAL took: with `durability: full` every acknowledgement
    /// waits for one, so the disk's tail shows up in the engine's.
    pub sync_times: Durations,
    /// How long the writer's transactions took, from `BEGIN` to `COMMIT` (a stall in the
    /// writer delays every write queued behind it).
    pub commit_times: Durations,
    /// Checkpoints the writer ran itself, between two batches, so that the WAL starts over
    /// (SQLite; see `checkpointer`). Writes wait while one runs.
    pub catch_ups: u64,
    /// The longest of those.
    pub slowest_catch_up_micros: u64,
    /// Background flushes of the WAL with `durability: normal` (SQLite; see `flusher`): no
    /// write waits for them.
    pub flushes: u64,
    /// Transactions PostgreSQL aborted without changing anything (a serialization failure, a
    /// deadlock) whose writes the writer ran again.
    pub retries: u64,
}

/// How long things took (fsyncs, commits): an HDR histogram (`hdrhistogram`) of microseconds,
/// from 1 µs to a minute at three significant digits; a longer one counts as a minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Durations(Histogram<u64>);

// Counts compared count by count: equality is an equivalence.
impl Eq for Durations {}

impl Default for Durations {
    fn default() -> Self {
        match Histogram::new_with_bounds(1, Self::LONGEST_MICROS, 3) {
            Ok(histogram) => Durations(histogram),
            Err(err) => unreachable!("constant bounds are valid: {err:?}"),
        }
    }
}

impl Durations {
    const LONGEST_MICROS: u64 = 60_000_000;

    fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, Self::LONGEST_MICROS));
    }

    /// What was counted here and not in `earlier` (an older reading of the same counter).
    pub fn since(&self, earlier: &Durations) -> Durations {
        let mut since = self.0.clone();
        match since.subtract(&earlier.0) {
            Ok(()) => Durations(since),
            // Not an older reading of this counter: all of this one.
            Err(_) => self.clone(),
        }
    }

    /// The duration that a fraction `q` (0 to 1) of the counted took at most, to three
    /// significant digits; `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<std::time::Duration> {
        if self.0.is_empty() {
            return None;
        }
        let micros = self.0.value_at_quantile(q.clamp(0.0, 1.0));
        Some(std::time::Duration::from_micros(micros))
    }

    /// How many were counted.
    pub fn count(&self) -> u64 {
        self.0.len()
    }
}

/// The live counts behind [`Durations`], added to by the writer's and the syncer's threads.
#[derive(Default)]
struct DurationCounts(std::sync::Mutex<Durations>);

impl DurationCounts {
    fn add(&self, micros: u64) {
        if let Ok(mut durations) = self.0.lock() {
            durations.record(micros);
        }
    }

    fn read(&self) -> Durations {
        self.0.lock().map(|durations| durations.clone()).unwrap_or_default()
    }
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    busy_micros: AtomicU64,
    syncs: AtomicU64,
    slow_syncs: AtomicU64,
    slowest_sync_micros: AtomicU64,
    sync_buckets: DurationCounts,
    commit_buckets: DurationCounts,
    catch_ups: AtomicU64,
    slowest_catch_up_micros: AtomicU64,
    flushes: AtomicU64,
    /// Batches (or parts of one) PostgreSQL aborted and the writer ran again.
    retries: AtomicU64,
    /// Set when an fsync of the WAL failed: what the disk holds is then unknown, so every later
    /// write is refused until the process restarts.
    poisoned: std::sync::Mutex<Option<String>>,
    /// Bytes in the WAL at the checkpointer's last look: past [`WAL_RESTART_BYTES`] the
    /// writer checkpoints once between two batches (see `checkpointer`).
    wal_bytes: AtomicU64,
}

/// How far the writes are on disk (SQLite with `durability: full`). Batches are numbered as
/// they start; `synced` is the newest whose commit the syncer has made durable.
struct DurablePoint {
    started: AtomicU64,
    synced: watch::Sender<u64>,
}

/// A batch the writer committed (or failed to), on its way to the syncer.
struct Committed {
    number: u64,
    jobs: Vec<Box<dyn Job>>,
    commit: Result<(), String>,
}

/// The writer's link to the syncer.
struct SyncLink {
    point: Arc<DurablePoint>,
    to_syncer: std::sync::mpsc::SyncSender<Committed>,
}

/// A cheap-to-clone handle to the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
    /// The lane whose writes go into the next batch ahead of everything queued on `tx` (see
    /// [`Writer::first`]).
    first: mpsc::Sender<Box<dyn Job>>,
    /// Whether this handle's writes take that lane.
    goes_first: bool,
    counters: Arc<Counters>,
    durable: Option<Arc<DurablePoint>>,
    /// Held by each of the store's threads until it has ended (see [`Writer::close`]).
    running: Arc<()>,
}

impl Writer {
    pub(crate) fn spawn(
        connect: Connect,
        backend: Backend,
        shown: String,
        faults: DiskFaults,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (first, rx_first) = mpsc::channel(QUEUE_DEPTH);
        let rx = Lanes { first: rx_first, rest: rx };
        let counters = Arc::new(Counters::default());
        let running = Arc::new(());
        let mut writer = Self {
            tx,
            first,
            goes_first: false,
            counters: counters.clone(),
            durable: None,
            running: running.clone(),
        };
        let start_thread = |role, body| start_thread(role, &running, body);
        match connect {
            Connect::Postgres(_) => {
                tokio::spawn(run(connect, backend, shown, rx, counters, None));
            }
            Connect::Sqlite { ref path, settings, durability } => {
                let link = if durability == Durability::Full {
                    let point = Arc::new(DurablePoint {
                        started: AtomicU64::new(0),
                        synced: watch::channel(0).0,
                    });
                    let (to_syncer, from_writer) = std::sync::mpsc::sync_channel(SYNC_QUEUE_DEPTH);
                    let (wal, syncer_point, syncer_counters) =
                        (wal_path(path), point.clone(), counters.clone());
                    start_thread(
                        "sync",
                        Box::new(move || {
                            syncer(&wal, &from_writer, &syncer_point, &syncer_counters, &faults)
                        }),
                    )?;
                    writer.durable = Some(point.clone());
                    Some(SyncLink { point, to_syncer })
                } else {
                    let (wal, alive) = (wal_path(path), Arc::downgrade(&counters));
                    start_thread("flush", Box::new(move || flusher(&wal, &alive)))?;
                    None
                };
                let (path, alive) = (path.clone(), Arc::downgrade(&counters));
                start_thread(
                    "checkpoint",
                    Box::new(move || checkpointer(&path, settings, &alive)),
                )?;
                // The batch futures never wait on anything but this thread's own connection,
                // so a plain executor drives them; the thread ends when the last handle drops.
                start_thread(
                    "writer",
                    Box::new(move || {
                        futures::executor::block_on(run(
                            connect, backend, shown, rx, counters, link,
                        ))
                    }),
                )?;
            }
        }
        Ok(writer)
    }

    /// Stops taking writes and waits (up to `patience`) until the store's threads have ended
    /// and closed their connections: they end once every handle is gone, so a clone of the
    /// store still held elsewhere keeps them, and this returns after `patience`.
    #[allow(clippy::disallowed_methods)] // Waits for threads to end, not for domain time.
    pub(crate) async fn close(self, patience: std::time::Duration) {
        let Self { tx, first, counters, durable, running, .. } = self;
        drop((tx, first, counters, durable));
        let started = tokio::time::Instant::now();
        while Arc::strong_count(&running) > 1 && started.elapsed() < patience {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A handle whose writes go into the writer's next batch ahead of the writes queued by
    /// every other handle: for work whose lateness is itself a failure (a scheduled fire), not
    /// for work that merely wants to be quick. Its writes still commit in the order they are
    /// queued among themselves.
    pub(crate) fn first(&self) -> Writer {
        Writer { goes_first: true, ..self.clone() }
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            busy_micros: self.counters.busy_micros.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            slow_syncs: self.counters.slow_syncs.load(Ordering::Relaxed),
            slowest_sync_micros: self.counters.slowest_sync_micros.load(Ordering::Relaxed),
            sync_times: self.counters.sync_buckets.read(),
            commit_times: self.counters.commit_buckets.read(),
            catch_ups: self.counters.catch_ups.load(Ordering::Relaxed),
            slowest_catch_up_micros: self.counters.slowest_catch_up_micros.load(Ordering::Relaxed),
            flushes: self.counters.flushes.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
        }
    }

    /// Queues `write` and waits until its transaction is durable. `announce`, if any, is told
    /// the value as soon as the transaction has committed, which can be before it is durable. Work that only becomes visible through a
    /// later write can start then: that write commits after this one, so it cannot be durable
    /// before this one is.
    pub(crate) async fn write_announced<T: Send + 'static>(
        &self,
        write: WriteFn<T>,
        announce: Option<Announce<T>>,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op { write, outcome: None, announce, reply });
        let lane = if self.goes_first { &self.first } else { &self.tx };
        lane.send(job).await.map_err(|_| Error::WriterGone)?;
        rx.await.map_err(|_| Error::WriterGone)?
    }

    /// Waits until every batch that had started to commit is durable. Called after a read, it
    /// keeps the read from showing a write that a power cut could still undo: any commit the
    /// read saw had started before it. Returns at once without a syncer (PostgreSQL, or
    /// `durability: normal`).
    pub(crate) async fn settled(&self) {
        let Some(point) = &self.durable else { return };
        let target = point.started.load(Ordering::SeqCst);
        if *point.synced.borrow() >= target {
            return;
        }
        let mut synced = point.synced.subscribe();
        // An error means the syncer is gone: nothing will become more durable by waiting.
        let _ = synced.wait_for(|synced| *synced >= target).await;
    }
}

async fn run(
    connect: Connect,
    backend: Backend,
    shown: String,
    mut rx: Lanes,
    counters: Arc<Counters>,
    link: Option<SyncLink>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    // The writer keeps one connection for itself, so it never queues behind readers; a batch
    // that fails drops it and the next batch starts on a fresh one.
    let mut held: Option<Tx> = None;
    while rx.next_batch(&mut batch).await > 0 {
        #[allow(clippy::disallowed_methods)] // Utilisation metric, not wall-clock time.
        let started = std::time::Instant::now();
        // Numbered before it can commit, so a read that sees it also waits for it.
        let number =
            link.as_ref().map(|link| link.point.started.fetch_add(1, Ordering::SeqCst) + 1);
        let poisoned = counters.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let conn = match (poisoned, held.take()) {
            (Some(reason), _) => Err(Error::CommitFailed(reason)),
            (None, Some(conn)) => Ok(conn),
            (None, None) => connect.open(&shown).await,
        };
        let commit = match conn {
            Ok(mut conn) => {
                let ((result, sound), took) = timed_async(async {
                    match backend {
                        Backend::Postgres => run_retrying(&mut conn, &mut batch, &counters).await,
                        Backend::Sqlite => {
                            let result = run_batch(&mut conn, backend, &mut batch).await;
                            let sound = result.is_ok();
                            (result, sound)
                        }
                    }
                })
                .await;
                counters.commit_buckets.add(took.as_micros() as u64);
                if sound {
                    held = Some(conn);
                }
                result
            }
            Err(err) => Err(err),
        };
        if commit.is_ok() {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let committed = commit.is_ok();
        let commit = commit.map_err(|err| {
            tracing::error!(error = %err, writes = batch.len(), "group commit failed");
            err.to_string()
        });
        if committed {
            for job in &mut batch {
                job.announce();
            }
        }
        match (&link, number) {
            (Some(link), Some(number)) => {
                let jobs = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                if let Err(unsent) = link.to_syncer.send(Committed { number, jobs, commit }) {
                    // The syncer is gone (it only ends with the writer): nothing is durable.
                    for job in unsent.0.jobs {
                        job.finish(Err("the store's sync thread stopped".into()));
                    }
                }
            }
            _ => {
                for job in batch.drain(..) {
                    job.finish(commit.clone());
                }
            }
        }
        // The catch-up runs after the batch's results are out, so its callers do not wait for
        // it. (Waiting for a moment without queued writes did not lower the open-loop p99, and
        // let the WAL grow further under a writer that is never idle.)
        if committed
            && counters.wal_bytes.load(Ordering::Relaxed) > WAL_RESTART_BYTES
            && let Some(Tx::Sqlite(conn)) = &held
        {
            counters.wal_bytes.store(0, Ordering::Relaxed);
            let (folded, took) =
                timed(|| conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())));
            if let Err(err) = folded {
                tracing::warn!(error = %err, "WAL checkpoint in the writer failed");
            }
            counters.catch_ups.fetch_add(1, Ordering::Relaxed);
            counters.slowest_catch_up_micros.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        }
        counters.busy_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// Starts the store's thread `clade-sqlite-<role>`, which holds `running` until it has ended.
fn start_thread(
    role: &str,
    running: &Arc<()>,
    body: Box<dyn FnOnce() + Send + 'static>,
) -> Result<()> {
    let running = running.clone();
    let body = move || {
        body();
        drop(running);
    };
    std::thread::Builder::new().name(format!("clade-sqlite-{role}")).spawn(body).map(drop).map_err(
        |source| Error::Io {
            action: "start a thread for",
            path: PathBuf::from(format!("the store ({role})")),
            source,
        },
    )
}

/// The WAL beside a SQLite database file.
fn wal_path(database: &std::path::Path) -> PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Faults a test injects into one store's disk, through [`crate::StoreOptions::faults`]: each
/// store has its own, so tests sharing a process do not reach into each other's stores.
/// Without any (the default) they cost an uncontended lock and a load per batch of syncs.
#[derive(Debug, Clone, Default)]
pub struct DiskFaults {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Held, it stops the syncer before its next fsync, as a slow disk would.
    gate: std::sync::Mutex<()>,
    /// Set, every fsync fails, as a failing disk's would.
    fail_syncs: std::sync::atomic::AtomicBool,
}

/// Holds this store's fsyncs back until dropped (see [`DiskFaults::hold_syncs`]).
pub struct SyncHold<'a> {
    _held: std::sync::MutexGuard<'a, ()>,
}

impl DiskFaults {
    /// Stops the store's syncer before its next fsync until the guard is dropped.
    pub fn hold_syncs(&self) -> SyncHold<'_> {
        SyncHold { _held: self.inner.gate.lock().unwrap_or_else(|e| e.into_inner()) }
    }

    /// Makes every fsync fail (`true`) or work again (`false`).
    pub fn fail_syncs(&self, fail: bool) {
        self.inner.fail_syncs.store(fail, Ordering::SeqCst);
    }

    fn before_sync(&self) {
        drop(self.inner.gate.lock());
    }

    fn sync(&self, sync: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        if self.inner.fail_syncs.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected by DiskFaults::fail_syncs"));
        }
        sync()
    }
}

/// Makes committed batches durable: one `fdatasync` of the WAL for every batch that committed
/// since the last, then their results are released. Ends with the writer.
fn syncer(
    wal: &std::path::Path,
    from_writer: &std::sync::mpsc::Receiver<Committed>,
    point: &DurablePoint,
    counters: &Counters,
    faults: &DiskFaults,
) {
    while let Ok(first) = from_writer.recv() {
        let mut ready = vec![first];
        ready.extend(from_writer.try_iter());
        faults.before_sync();
        let wrote = ready.iter().any(|batch| batch.commit.is_ok());
        let poisoned = counters.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let synced = match poisoned {
            Some(reason) => Err(reason),
            None if !wrote => Ok(()),
            None => match timed(|| faults.sync(|| sync_wal(wal))) {
                (Ok(()), took) => {
                    counters.syncs.fetch_add(1, Ordering::Relaxed);
                    let micros = took.as_micros() as u64;
                    if micros > 5_000 {
                        counters.slow_syncs.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.slowest_sync_micros.fetch_max(micros, Ordering::Relaxed);
                    counters.sync_buckets.add(micros);
                    Ok(())
                }
                (Err(err), _) => {
                    let reason = format!(
                        "the disk failed to sync {} ({err}); writes are refused until clade \
                         restarts: check the disk (dmesg, free space), then restart clade",
                        wal.display()
                    );
                    tracing::error!("{reason}");
                    *counters.poisoned.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(reason.clone());
                    Err(reason)
                }
            },
        };
        let newest = ready.last().map_or(0, |batch| batch.number);
        point.synced.send_replace(newest);
        for batch in ready {
            let outcome = batch.commit.and_then(|()| synced.clone());
            for job in batch.jobs {
                job.finish(outcome.clone());
            }
        }
    }
    // The writer is gone: release whoever still waits for a durable point.
    point.synced.send_replace(u64::MAX);
}

/// How often the WAL is flushed in the background with `durability: normal`.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// With `durability: normal` no write waits for the disk, yet the WAL is still flushed in the
/// background every [`FLUSH_EVERY`] while commits come. Left to the kernel, its pages piled up
/// and went out in bursts (the checkpoint's own fsync of the WAL, the kernel's writeback), and
/// commits stalled behind them: at 1,000 turns/s over 100 sessions, turn p99 was 3.9–4.8 ms
/// without and 2.4–3.7 ms with (`clade bench turns --durability normal`, four runs each).
/// Ends when the store is dropped.
fn flusher(wal: &std::path::Path, alive: &std::sync::Weak<Counters>) {
    let (mut commits_seen, mut failing) = (0, false);
    loop {
        #[allow(clippy::disallowed_methods)] // Paces the disk, not domain time.
        std::thread::sleep(FLUSH_EVERY);
        let Some(counters) = alive.upgrade() else { return };
        let commits = counters.commits.load(Ordering::Relaxed);
        if commits == commits_seen {
            continue;
        }
        commits_seen = commits;
        match sync_wal(wal) {
            Ok(()) => {
                counters.flushes.fetch_add(1, Ordering::Relaxed);
                failing = false;
            }
            // Nothing was promised for these writes, so they are not refused; but a disk that
            // fails to flush is worth saying once per spell, not 200 times a second.
            Err(err) if !failing => {
                failing = true;
                tracing::error!(
                    error = %err,
                    wal = %wal.display(),
                    "the disk failed to flush the store's WAL; recent writes may not survive a power cut: \
                     check the disk (dmesg, free space)"
                );
            }
            Err(_) => {}
        }
    }
}

#[allow(clippy::disallowed_methods)] // A disk metric, not wall-clock time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let started = std::time::Instant::now();
    (f(), started.elapsed())
}

#[allow(clippy::disallowed_methods)] // A metric, not wall-clock time.
async fn timed_async<T>(f: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let started = std::time::Instant::now();
    (f.await, started.elapsed())
}

/// `fdatasync` of the WAL. The file is opened each time: SQLite removes and recreates it when
/// its last connection closes, and a descriptor kept open would then sync a removed file.
fn sync_wal(wal: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        // No WAL: every commit was folded into the database file, which the checkpoint synced.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// How often the WAL is folded back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A WAL longer than this is started over from its beginning. Each restart stops the writer
/// for a catch-up checkpoint (1–4 ms on this project's test machine, 10–20 ms when the disk is
/// slow); at 16 MiB they came twice a second at 1,000 turns/s and set about 1% of turns back by
/// over 5 ms, a quarter as many at 48 MiB. Once paced writeback had removed most other stalls,
/// 128 MiB (3 catch-ups per 10,000 turns at 500 turns/s, 100 sessions) gave a turn p99 of
/// 4.2–5.0 ms against 4.8–6.1 ms at 64 MiB (6 catch-ups; three and four runs). The WAL on disk
/// reaches this plus what the writer adds until the checkpointer's next look, and is cut back
/// once the store is idle.
const WAL_RESTART_BYTES: u64 = 128 << 20;

/// Folds the SQLite WAL back into the database file, beside the writer. Done inside a commit
/// (SQLite's default), a checkpoint stalled every write of that batch for its page copies and
/// fsync; here it runs concurrently (`PASSIVE` never blocks the writer or readers). Ends when
/// the store is dropped.
///
/// Under steady writes a concurrent checkpoint never catches up: the writer appends while it
/// copies, so the WAL is never wholly folded back when a write begins, SQLite never starts it
/// over, and it grows without bound (100 MB in a 6,000-turn benchmark), every append growing
/// the file. So once it passes [`WAL_RESTART_BYTES`] the writer checkpoints once itself
/// between two batches: the frames left by then are the last few batches', quick to fold, and
/// the next write starts the WAL over, rewriting blocks the file already has.
///
/// Once no commit has come for [`IDLE_PASSES`] passes, a WAL file longer than
/// [`IDLE_WAL_BYTES`] is folded back whole and cut to nothing, so a quiet deployment does not
/// keep the high-water mark of its last burst on disk.
fn checkpointer(path: &std::path::Path, settings: &[&str], alive: &std::sync::Weak<Counters>) {
    let wal = wal_path(path);
    let mut conn = None;
    let (mut commits_seen, mut idle_passes) = (0, 0);
    loop {
        #[allow(clippy::disallowed_methods)] // Paces the disk, not domain time.
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(counters) = alive.upgrade() else { return };
        if conn.is_none() {
            // No waiting for locks here: a checkpoint that cannot run now runs at the next pass,
            // and one that waited would hold the writer back meanwhile.
            conn = db::sqlite::open(path, settings, paced::Writeback::Paced)
                .and_then(|c| Ok(c.execute_batch("PRAGMA busy_timeout = 0").map(|()| c)?))
                .ok();
        }
        let Some(open) = &conn else { continue };
        // (busy, frames in the WAL, frames folded back); a frame holds one page.
        let frames = fold(open);
        let page = open.query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0));
        match frames.and_then(|frames| Ok((frames, page?))) {
            Ok((frames, page)) => {
                let bytes = u64::try_from(frames.saturating_mul(page)).unwrap_or(0);
                if bytes > WAL_RESTART_BYTES {
                    chase(open, frames);
                }
                counters.wal_bytes.store(bytes, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
                conn = None;
                continue;
            }
        }
        let commits = counters.commits.load(Ordering::Relaxed);
        if commits == commits_seen {
            idle_passes += 1;
        } else {
            (commits_seen, idle_passes) = (commits, 0);
        }
        let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if idle_passes >= IDLE_PASSES && wal_len > IDLE_WAL_BYTES {
            // Busy (a reader still on an older snapshot, or a write just begun) is not an
            // error: the next idle pass tries again.
            if let Err(err) = open.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %err, "cutting the idle WAL back failed; retrying");
            }
        }
    }
}

/// One `PASSIVE` checkpoint: folds every frame committed when it began (as far as readers
/// allow) and returns how many frames the WAL then held.
fn fold(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1))
}

/// Before the writer starts the WAL over, the checkpointer chases it: passes back to back, each
/// folding what the writer appended during the one before, until a pass finds little new (or
/// after [`CHASE_PASSES`]). The writer's catch-up, which stops writes, then has only the last
/// few frames to fold, and its fsync of the database file has as few pages to write. (A live
/// migration's pre-copy, for the same reason.) At 1,000 turns/s over 100 sessions, the
/// catch-ups' median went from 5.2 to 1.4 ms (two runs each way: 11 and 13 catch-ups).
///
/// A pass that found no fewer new frames than the one before is not gaining on the writer
/// (writes faster than this thread folds them, as under a burst on a busy machine): the chase
/// stops there and leaves the rest to the writer's catch-up, so the WAL does not grow through
/// passes that cannot shorten it.
fn chase(conn: &rusqlite::Connection, mut frames: i64) {
    let mut before = i64::MAX;
    for _ in 0..CHASE_PASSES {
        let Ok(now) = fold(conn) else { return };
        let appended = now - frames;
        frames = now;
        if appended < CHASE_ENOUGH_FRAMES || appended >= before {
            return;
        }
        before = appended;
    }
}

/// Most passes one chase runs; each costs an fsync of the database file.
const CHASE_PASSES: u32 = 8;

/// A chase stops once a pass found fewer new frames than this (512 KiB of 2 KiB pages).
const CHASE_ENOUGH_FRAMES: i64 = 256;

/// Checkpointer passes without a commit after which the store counts as idle (2 s).
const IDLE_PASSES: u32 = 8;

/// An idle store's WAL file is cut to nothing past this length.
const IDLE_WAL_BYTES: u64 = 4 << 20;

/// How many times a PostgreSQL write the database aborted runs again before its error stands.
const RETRIES: u32 = 3;

/// Runs a batch on PostgreSQL, and runs again what the database aborted without changing
/// anything (a serialization failure, a deadlock victim; [`Error::is_retryable`]): the whole
/// batch if its transaction was aborted, else only the writes that were (each ran in a
/// savepoint, and the others committed). Each retry is a transaction of its own, started
/// after the aborted one released its locks. The writes run again commit after the rest of their
/// batch, as if queued after them. Also says whether the connection is still fit for the next
/// batch (not after a transaction failed for another reason).
async fn run_retrying(
    conn: &mut Tx,
    batch: &mut [Box<dyn Job>],
    counters: &Counters,
) -> (Result<()>, bool) {
    let mut result = run_batch(conn, Backend::Postgres, batch).await;
    // Jobs before `from` are settled: committed, or failed for good.
    let mut from = 0;
    let mut attempts = 0;
    loop {
        let pending = &mut batch[from..];
        match result {
            Ok(()) => {
                // Committed; the writes that were aborted go last, to run again alone.
                pending.sort_by_key(|job| job.retryable());
                let done = pending.iter().take_while(|job| !job.retryable()).count();
                if done == pending.len() || attempts == RETRIES {
                    return (Ok(()), true);
                }
                from += done;
            }
            Err(err) if err.is_retryable() && attempts < RETRIES => {}
            // Nothing of this transaction committed. If an earlier one did, its writes stand
            // and only these fail.
            Err(err) if from == 0 => return (Err(err), false),
            Err(err) => {
                let reason = err.to_string();
                for job in pending.iter_mut() {
                    job.abort(&reason);
                }
                return (Ok(()), false);
            }
        }
        let pending = &mut batch[from..];
        for job in pending.iter_mut() {
            job.reset();
        }
        attempts += 1;
        counters.retries.fetch_add(1, Ordering::Relaxed);
        result = run_batch(conn, Backend::Postgres, pending).await;
    }
}

async fn run_batch(conn: &mut Tx, backend: Backend, batch: &mut [Box<dyn Job>]) -> Result<()> {
    let begin = match backend {
        // Take the write lock up front so a concurrent reader cannot make us fail to upgrade.
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    // PostgreSQL writers (the nodes of a cluster) commit side by side: what they must not
    // interleave is guarded row by row (fencing, numbering), and outbox readers stay below
    // rows still committing (`crate::horizon`).
    conn.batch(begin).await?;
    let result = async {
        // A write alone in its batch needs no savepoint: if it fails, the whole transaction
        // rolls back. (Under light load nearly every batch is one write.)
        if let [job] = batch {
            return if job.run(conn).await {
                conn.batch("COMMIT").await
            } else {
                conn.batch("ROLLBACK").await
            };
        }
        for job in batch.iter_mut() {
            conn.batch("SAVEPOINT write").await?;
            if !job.run(conn).await {
                conn.batch("ROLLBACK TO SAVEPOINT write").await?;
            }
            // Released at once: PostgreSQL slows down past 64 open subtransactions, and SQLite
            // checks every open savepoint on each page it changes.
            conn.batch("RELEASE SAVEPOINT write").await?;
        }
        conn.batch("COMMIT").await
    }
    .await;
    if let Err(err) = result {
        // Best effort: the connection may be broken, in which case it is dropped.
        let _ = conn.batch("ROLLBACK").await;
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    // The gate is held across awaits on purpose: it stands for a slow disk.
    #![allow(clippy::await_holding_lock)]
    // The writer's threads pace a real disk: their tests wait in real time.
    #![allow(clippy::disallowed_methods)]

    use std::time::Duration;

    use super::DiskFaults;
    use crate::db::query;
    use crate::{Durability, Location, Store, StoreOptions};

    /// A store with durability `full` and its own disk faults.
    async fn open(dir: &tempfile::TempDir) -> (Store, DiskFaults) {
        let faults = DiskFaults::default();
        let location = Location::Sqlite(dir.path().join("clade.db"));
        let options = StoreOptions {
            migrations: crate::Migrations::Apply,
            faults: faults.clone(),
            ..StoreOptions::new(location, Durability::Full)
        };
        (Store::open(options).await.unwrap(), faults)
    }

    /// Sets `key` and tells `announced` once the write is committed.
    fn set(
        store: &Store,
        key: &'static str,
        announced: tokio::sync::oneshot::Sender<()>,
    ) -> tokio::task::JoinHandle<crate::Result<()>> {
        let store = store.clone();
        tokio::spawn(async move {
            let announce: super::Announce<()> = Box::new(move |_| {
                let _ = announced.send(());
            });
            store
                .write_announced(Some(announce), move |conn| {
                    Box::pin(async move {
                        query("INSERT INTO meta (key, value) VALUES ($1, 'v')")
                            .bind(key)
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .await
        })
    }

    const A_WHILE: Duration = Duration::from_millis(300);

    #[test]
    fn sync_times_answer_quantiles_to_three_significant_digits() {
        let mut times = super::Durations::default();
        assert_eq!(times.quantile(0.5), None, "no fsyncs, no median");
        for micros in [10, 120, 130, 140, 4_990, 30_000_000, 90_000_000] {
            times.record(micros);
        }
        let near = |q, micros: u64| {
            let got = times.quantile(q).unwrap().as_micros() as f64;
            assert!((got / micros as f64 - 1.0).abs() < 1e-3, "q {q}: {got} µs, not {micros}");
        };
        near(0.0, 10);
        near(0.5, 140);
        near(0.7, 4_990);
        near(0.8, 30_000_000);
        near(1.0, 60_000_000);
        let earlier = times.clone();
        times.record(700);
        let since = times.since(&earlier);
        assert_eq!(since.count(), 1, "only the new one");
        assert_eq!(since.quantile(0.5).map(|d| d.as_micros()), Some(700));
        assert_eq!(earlier.since(&times).count(), 7, "not an older reading: all of it");
    }

    /// With `durability: normal` the WAL is flushed in the background while writes come, and
    /// left alone while none do; with `full` the syncer's fsyncs are the only ones.
    #[tokio::test]
    async fn with_durability_normal_the_wal_is_flushed_in_the_background() {
        for (durability, flushed) in [(Durability::Normal, true), (Durability::Full, false)] {
            let dir = tempfile::tempdir().unwrap();
            let location = Location::Sqlite(dir.path().join("clade.db"));
            let options = StoreOptions {
                migrations: crate::Migrations::Apply,
                ..StoreOptions::new(location, durability)
            };
            let store = Store::open(options).await.unwrap();
            for n in 0..3 {
                store.tenants().create(&format!("flush-{n}")).await.unwrap();
                tokio::time::sleep(A_WHILE / 10).await;
            }
            tokio::time::sleep(A_WHILE).await;
            let after_writes = store.write_stats().flushes;
            assert_eq!(after_writes > 0, flushed, "{durability:?}: {after_writes} flushes");
            tokio::time::sleep(A_WHILE).await;
            let idle = store.write_stats().flushes;
            assert_eq!(idle, after_writes, "{durability:?}: flushed while no write came");
        }
    }

    #[tokio::test]
    async fn a_write_is_visible_at_once_and_answered_only_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = open(&dir).await;
        let syncs = store.write_stats().syncs;
        let gate = faults.hold_syncs();
        let (announced, visible) = tokio::sync::oneshot::channel();
        let mut write = set(&store, "k", announced);
        tokio::time::timeout(Duration::from_secs(10), visible).await.unwrap().unwrap();
        // Committed: the engine's own reads see it...
        assert_eq!(store.visible_reads().meta().get("k").await.unwrap().as_deref(), Some("v"));
        // ...but neither its writer nor any other reader hears of it before the fsync.
        assert!(tokio::time::timeout(A_WHILE, &mut write).await.is_err(), "answered unsynced");
        assert!(
            tokio::time::timeout(A_WHILE, store.meta().get("k")).await.is_err(),
            "read unsynced"
        );
        assert_eq!(store.write_stats().syncs, syncs);
        drop(gate);
        write.await.unwrap().unwrap();
        assert_eq!(store.meta().get("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(store.write_stats().syncs, syncs + 1);
    }

    #[tokio::test]
    async fn one_fsync_covers_the_batches_committed_while_the_disk_was_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = open(&dir).await;
        let before = store.write_stats();
        let gate = faults.hold_syncs();
        let mut writes = Vec::new();
        // One after another, so each is a batch of its own.
        for key in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let (announced, visible) = tokio::sync::oneshot::channel();
            writes.push(set(&store, key, announced));
            tokio::time::timeout(Duration::from_secs(10), visible).await.unwrap().unwrap();
        }
        drop(gate);
        for write in writes {
            write.await.unwrap().unwrap();
        }
        let after = store.write_stats();
        assert_eq!(after.commits - before.commits, 8);
        // The syncer had taken the first batch when the gate stopped it; the other seven
        // share the next fsync.
        assert!(
            after.syncs - before.syncs <= 2,
            "{} fsyncs for 8 commits",
            after.syncs - before.syncs
        );
    }

    /// A write that changes more than SQLite keeps of a savepoint's journal in memory (64 KiB)
    /// spills it to a temporary file. When such a write fails after writing, none of its changes
    /// remain, whether it ran alone in its batch (no savepoint: the transaction rolls back) or
    /// beside other writes (its savepoint rolls back, and theirs commit).
    #[tokio::test]
    async fn a_large_failing_write_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(&dir).await;
        // Pages for the large write to change once they exist: the savepoint journals each
        // page's content from before it.
        let before = "a".repeat(1000);
        for n in 0..300 {
            store.meta().set(&format!("big-{n}"), &before).await.unwrap();
        }
        let large = |store: Store| {
            tokio::spawn(async move {
                store
                    .write(move |conn| {
                        Box::pin(async move {
                            query("UPDATE meta SET value = $1 WHERE key LIKE 'big-%'")
                                .bind("x".repeat(1000))
                                .execute(&mut *conn)
                                .await?;
                            Err::<(), _>(crate::Error::InvalidInput("fails after writing".into()))
                        })
                    })
                    .await
            })
        };
        let unchanged = |store: Store, before: String| async move {
            for n in [0, 150, 299] {
                let value = store.meta().get(&format!("big-{n}")).await.unwrap();
                assert_eq!(value.as_deref(), Some(before.as_str()), "big-{n} kept a failed change");
            }
        };
        // Alone: nothing else is queued, so it is a batch of one.
        let err = large(store.clone()).await.unwrap().expect_err("the failing write committed");
        assert!(err.to_string().contains("fails after writing"), "{err}");
        unchanged(store.clone(), before.clone()).await;
        // Beside other writes, which commit.
        let failing = large(store.clone());
        let mut small = Vec::new();
        for key in ["s1", "s2", "s3", "s4"] {
            let (announced, _) = tokio::sync::oneshot::channel();
            small.push(set(&store, key, announced));
        }
        failing.await.unwrap().expect_err("the failing write committed");
        for write in small {
            write.await.unwrap().unwrap();
        }
        for key in ["s1", "s2", "s3", "s4"] {
            assert_eq!(store.meta().get(key).await.unwrap().as_deref(), Some("v"), "{key}");
        }
        unchanged(store.clone(), before).await;
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
    }

    /// Disk faults belong to one store: another store in the same process (another test, say)
    /// writes on while this one's fsyncs are held or failing.
    #[tokio::test]
    async fn disk_faults_reach_only_their_own_store() {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ((held, faults), (other, _)) = (open(&ours).await, open(&theirs).await);
        let gate = faults.hold_syncs();
        let (announced, visible) = tokio::sync::oneshot::channel();
        let mut write = set(&held, "k", announced);
        tokio::time::timeout(Duration::from_secs(10), visible).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), other.meta().set("k", "v"))
            .await
            .expect("another store's write waited for this store's held fsync")
            .unwrap();
        assert!(tokio::time::timeout(A_WHILE, &mut write).await.is_err(), "answered unsynced");
        drop(gate);
        write.await.unwrap().unwrap();
        faults.fail_syncs(true);
        other.meta().set("k2", "v").await.expect("another store's fsync failed");
        assert!(held.meta().set("k2", "v").await.is_err(), "this store's fsync did not fail");
    }

    #[tokio::test]
    async fn a_failed_fsync_refuses_that_write_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = open(&dir).await;
        faults.fail_syncs(true);
        let (announced, _) = tokio::sync::oneshot::channel();
        let failed = set(&store, "k", announced).await.unwrap();
        faults.fail_syncs(false);
        let err = failed.expect_err("a write whose fsync failed was acknowledged").to_string();
        assert!(err.contains("failed to sync") && err.contains("restart"), "{err}");
        // The disk may be fine again; what it holds is not known, so writes stay refused.
        let err = store.meta().set("other", "v").await.expect_err("written after a failed fsync");
        assert!(err.to_string().contains("failed to sync"), "{err}");
        // Reads still answer (no wait for a durable point that cannot come).
        assert_eq!(store.meta().get("other").await.unwrap(), None);
    }
}
