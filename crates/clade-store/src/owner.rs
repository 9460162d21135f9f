//! One serving process per store: `clade serve` holds an [`OwnerLock`] for its whole life, so a
//! second server on the same store refuses to start instead of running the same turns twice.
//!
//! On SQLite the lock is an exclusive `flock` on `<db>.lock` beside the database file (the kernel
//! releases it when the process dies, however it dies). On PostgreSQL it is a session-level
//! advisory lock keyed by the schema, held on a connection of its own. Commands other than
//! `serve` take no lock: they may run beside a server.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::PathBuf;

use sqlx::{Connection as _, Row as _};

use crate::backend::Location;
use crate::error::{Error, Result};

/// Held while this process serves the store; dropping it lets another server start.
#[derive(Debug)]
pub struct OwnerLock {
    _held: Held,
}

/// Never read: held for what dropping it releases.
#[derive(Debug)]
#[allow(dead_code)]
enum Held {
    File(std::fs::File),
    Postgres(Box<sqlx::PgConnection>),
}

impl OwnerLock {
    /// Takes the store for this process, or says who holds it.
    pub async fn acquire(location: &Location) -> Result<Self> {
        let held = match location {
            Location::Sqlite(path) => Held::File(lock_file(path)?),
            Location::Postgres(url) => {
                Held::Postgres(Box::new(advisory_lock(location, url).await?))
            }
        };
        Ok(Self { _held: held })
    }
}

/// The lock file of a SQLite database: `<db>.lock`.
pub fn lock_path(db: &std::path::Path) -> PathBuf {
    beside(db, ".lock")
}

/// A file beside a SQLite database, named after it: `<db><suffix>`.
pub(crate) fn beside(db: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    db.with_file_name(name)
}

pub(crate) fn lock_file(db: &std::path::Path) -> Result<std::fs::File> {
    use rustix::fs::{FlockOperation, flock};
    let path = lock_path(db);
    let io = |action, source| Error::Io { action, path: path.clone(), source };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(|e| io("open", e))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::InUse {
                location: db.display().to_string(),
                holder: describe_holder(holder.trim()),
            });
        }
        Err(err) => return Err(io("lock", err.into())),
    }
    // Ours now: say who holds it, for the next one's message.
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{pid}"))
        .map_err(|e| io("write", e))?;
    Ok(file)
}

fn describe_holder(pid: &str) -> String {
    match pid.parse::<u32>() {
        Ok(pid) => format!("process {pid}"),
        Err(_) => "another process".to_owned(),
    }
}

/// A session-level advisory lock keyed by the store's schema, on a connection kept open.
async fn advisory_lock(location: &Location, url: &str) -> Result<sqlx::PgConnection> {
    let shown = location.redacted();
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| crate::backend::classify_connect_error(e, &shown))?;
    let row = sqlx::query(
        "SELECT pg_try_advisory_lock(hashtextextended('clade serve ' || current_schema(), 0)), \
                CAST(current_schema() AS TEXT)",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| crate::backend::classify_connect_error(e, &shown))?;
    let got: bool = row.try_get(0)?;
    let schema: String = row.try_get(1)?;
    if !got {
        return Err(Error::InUse {
            location: format!("{shown} (schema {schema})"),
            holder: "another clade serve process".to_owned(),
        });
    }
    Ok(conn)
}
