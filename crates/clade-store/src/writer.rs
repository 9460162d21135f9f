//! Group commit: every write goes through one writer (a thread of its own with SQLite, a task
//! with PostgreSQL) that runs whatever has queued up since its last commit in a single
//! transaction.
//!
//! A commit with `durability: full` costs one fsync (about 1 ms on this class of disk), so
//! committing each write alone caps throughput near 1,000 writes per second. While one batch
//! commits, the next one queues; the writer then takes all of it at once. Each write runs in
//! its own savepoint, released as soon as it succeeds, so one failing write (say, a duplicate
//! handle) rolls back alone and the rest of the batch still commits. Results are released only
//! after the commit returns. With SQLite, WAL checkpoints run on a thread beside the writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, classify};
use crate::db::{self, Tx};
use crate::error::{Error, Result};

/// The largest number of writes folded into one transaction.
const MAX_BATCH: usize = 512;
/// Queued writes beyond this make callers wait (back-pressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 4096;

/// One write: a function of a connection already inside a transaction.
pub(crate) type WriteFn<T> = Box<dyn for<'c> FnOnce(&'c mut Tx) -> BoxFuture<'c, Result<T>> + Send>;

/// Where the writer gets its connection.
pub(crate) enum Connect {
    /// A connection of the pool (PostgreSQL), on a tokio task.
    Pool(AnyPool),
    /// A connection of its own to this SQLite file, on a thread of its own: every statement
    /// is then a function call, not a hop to sqlx's worker thread (see [`crate::db`]).
    Sqlite { path: PathBuf, settings: &'static [&'static str] },
}

impl Connect {
    async fn open(&self, shown: &str) -> Result<Tx> {
        match self {
            Connect::Pool(pool) => {
                pool.acquire().await.map(Tx::Sqlx).map_err(|err| classify(err, shown))
            }
            Connect::Sqlite { path, settings } => {
                let conn = db::sqlite::open(path, settings)?;
                // Checkpoints run on their own thread (see `checkpointer`), not inside a commit
                // that callers wait for; a WAL that grew past 64 MiB is cut back after one.
                conn.execute_batch(
                    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864",
                )?;
                Ok(Tx::Sqlite(conn))
            }
        }
    }
}

trait Job: Send {
    /// Runs the write; returns whether it succeeded (if not, its savepoint is rolled back).
    fn run<'c>(&'c mut self, conn: &'c mut Tx) -> BoxFuture<'c, bool>;
    /// Delivers the outcome once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Op<T> {
    write: Option<WriteFn<T>>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send + 'static> Job for Op<T> {
    fn run<'c>(&'c mut self, conn: &'c mut Tx) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let Some(write) = self.write.take() else { return false };
            let outcome = write(conn).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
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

/// Counters of the write path, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (each one fsync with `durability: full`).
    pub commits: u64,
    /// Writes that went into those transactions.
    pub writes: u64,
    /// Time the writer spent running batches (its utilisation, against wall-clock time).
    pub busy_micros: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    busy_micros: AtomicU64,
    /// Frames in the WAL at the checkpointer's last look: past [`WAL_RESTART_FRAMES`] the
    /// writer checkpoints once between two batches (see `checkpointer`).
    wal_frames: AtomicU64,
}

/// A cheap-to-clone handle to the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn spawn(connect: Connect, backend: Backend, shown: String) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let counters = Arc::new(Counters::default());
        let writer = Self { tx, counters: counters.clone() };
        match connect {
            Connect::Pool(_) => {
                tokio::spawn(run(connect, backend, shown, rx, counters));
            }
            Connect::Sqlite { ref path, settings } => {
                let (path, alive) = (path.clone(), Arc::downgrade(&counters));
                std::thread::Builder::new()
                    .name("clade-sqlite-checkpoint".into())
                    .spawn(move || checkpointer(&path, settings, &alive))
                    .map_err(|source| Error::Io {
                        action: "start the checkpoint thread for",
                        path: PathBuf::from("the store"),
                        source,
                    })?;
                // The batch futures never wait on anything but this thread's own connection,
                // so a plain executor drives them; the thread ends when the last handle drops.
                std::thread::Builder::new()
                    .name("clade-sqlite-writer".into())
                    .spawn(move || {
                        futures::executor::block_on(run(connect, backend, shown, rx, counters))
                    })
                    .map_err(|source| Error::Io {
                        action: "start the writer thread for",
                        path: PathBuf::from("the store"),
                        source,
                    })?;
            }
        }
        Ok(writer)
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            busy_micros: self.counters.busy_micros.load(Ordering::Relaxed),
        }
    }

    /// Queues `write` and waits until its transaction has committed.
    pub(crate) async fn write<T: Send + 'static>(&self, write: WriteFn<T>) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op { write: Some(write), outcome: None, reply });
        self.tx.send(job).await.map_err(|_| Error::WriterGone)?;
        rx.await.map_err(|_| Error::WriterGone)?
    }
}

async fn run(
    connect: Connect,
    backend: Backend,
    shown: String,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    counters: Arc<Counters>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    // The writer keeps one connection for itself, so it never queues behind readers; a batch
    // that fails drops it and the next batch starts on a fresh one.
    let mut held: Option<Tx> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        #[allow(clippy::disallowed_methods)] // Utilisation metric, not wall-clock time.
        let started = std::time::Instant::now();
        let conn = match held.take() {
            Some(conn) => Ok(conn),
            None => connect.open(&shown).await,
        };
        let commit = match conn {
            Ok(mut conn) => {
                let result = run_batch(&mut conn, backend, &mut batch).await;
                if result.is_ok() {
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
        for job in batch.drain(..) {
            job.finish(commit.clone());
        }
        // The catch-up runs after the batch's results are out, so its callers do not wait for
        // it. (Waiting for a moment without queued writes did not lower the open-loop p99, and
        // let the WAL grow further under a writer that is never idle.)
        if committed
            && counters.wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES
            && let Some(Tx::Sqlite(conn)) = &held
        {
            counters.wal_frames.store(0, Ordering::Relaxed);
            if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %err, "WAL checkpoint in the writer failed");
            }
        }
        counters.busy_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// How often the WAL is folded back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A WAL longer than this (16 MiB of 4 KiB pages) is started over from its beginning.
const WAL_RESTART_FRAMES: u64 = 4096;

/// Folds the SQLite WAL back into the database file, beside the writer. Done inside a commit
/// (SQLite's default), a checkpoint stalled every write of that batch for its page copies and
/// fsync; here it runs concurrently (`PASSIVE` never blocks the writer or readers). Ends when
/// the store is dropped.
///
/// Under steady writes a concurrent checkpoint never catches up: the writer appends while it
/// copies, so the WAL is never wholly folded back when a write begins, SQLite never starts it
/// over, and it grows without bound (100 MB in a 6,000-turn benchmark), every append growing
/// the file. So once it passes [`WAL_RESTART_FRAMES`] the writer checkpoints once itself
/// between two batches: the frames left by then are the last few batches', quick to fold, and
/// the next write starts the WAL over, rewriting blocks the file already has.
fn checkpointer(path: &std::path::Path, settings: &[&str], alive: &std::sync::Weak<Counters>) {
    let mut conn = None;
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(counters) = alive.upgrade() else { return };
        if conn.is_none() {
            conn = db::sqlite::open(path, settings).ok();
        }
        let Some(open) = &conn else { continue };
        // (busy, frames in the WAL, frames folded back)
        match open.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
            Ok(frames) => {
                let frames = u64::try_from(frames).unwrap_or(0);
                counters.wal_frames.store(frames, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
                conn = None;
            }
        }
    }
}

async fn run_batch(conn: &mut Tx, backend: Backend, batch: &mut [Box<dyn Job>]) -> Result<()> {
    let begin = match backend {
        // Take the write lock up front so a concurrent reader cannot make us fail to upgrade.
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    conn.batch(begin).await?;
    let result = async {
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
