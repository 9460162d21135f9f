//! Connecting to SQLite or PostgreSQL, and the few places where their SQL differs.
//!
//! Each backend has its own driver: sqlx's native PostgreSQL pool (typed rows, its own
//! statement cache), and for SQLite rusqlite connections (the writer and readers, see
//! [`crate::db`]) beside a small sqlx SQLite pool for settings and migrations. Every query is
//! still written once, with `$n` placeholders (SQLite accepts them too) and portable types:
//! integers, text and blobs.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgPool, Postgres, Row, Sqlite, SqlitePool};

use crate::error::{Error, Result};

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How hard each commit is pushed to disk before it is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging (SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`).
    #[default]
    Full,
    /// Survives a process crash but may lose the last commits on power loss.
    Normal,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// Parses `--store`: `postgres://…`, `postgresql://…`, `sqlite://<path>` or a bare path.
    pub fn parse(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(Error::BadUrl(url.to_owned()));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if url.contains("://") || url.is_empty() {
            return Err(Error::BadUrl(url.to_owned()));
        }
        Ok(Location::Sqlite(PathBuf::from(url)))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// A URL for sqlx that reaches the store as Clade does: a SQLite file through the VFS that
    /// seals and checks its pages (writes made any other way leave stale checksums behind).
    pub fn connect_url(&self) -> Result<String> {
        match self {
            Location::Sqlite(path) => sqlite_url(path),
            Location::Postgres(url) => Ok(url.clone()),
        }
    }

    /// A printable form with any password removed.
    pub fn redacted(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => redact_url(url),
        }
    }
}

fn redact_url(url: &str) -> String {
    // postgres://user:password@host/db -> postgres://user:***@host/db
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The store's sqlx pool, in its backend's own driver.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A connection of a [`Pool`].
pub(crate) enum PoolConn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// Runs `$body` with `$conn` bound to whichever driver's value `$value` holds: the code is
/// the same for both, compiled once per driver.
macro_rules! either {
    ($kind:ident, $value:expr, $conn:ident => $body:expr) => {
        match $value {
            $kind::Sqlite($conn) => $body,
            $kind::Postgres($conn) => $body,
        }
    };
}

impl Pool {
    pub(crate) async fn acquire(&self) -> std::result::Result<PoolConn, sqlx::Error> {
        match self {
            Pool::Sqlite(pool) => pool.acquire().await.map(PoolConn::Sqlite),
            Pool::Postgres(pool) => pool.acquire().await.map(PoolConn::Postgres),
        }
    }

    pub(crate) async fn close(&self) {
        either!(Pool, self, pool => pool.close().await)
    }

    /// The first column of the first row of `sql`, as text: SQLite answers some pragmas
    /// with numbers, PostgreSQL's `SHOW` with text.
    pub(crate) async fn text(&self, sql: &'static str) -> std::result::Result<String, sqlx::Error> {
        either!(Pool, self, pool => {
            let row = sqlx::query(sql).fetch_one(pool).await?;
            row.try_get::<String, _>(0).or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
        })
    }

    /// The first column of the first row of `sql`, a number.
    pub(crate) async fn number(&self, sql: &'static str) -> std::result::Result<i64, sqlx::Error> {
        either!(Pool, self, pool => sqlx::query(sql).fetch_one(pool).await?.try_get::<i64, _>(0))
    }

    /// Runs `sql`, whatever it answers.
    pub(crate) async fn run(&self, sql: &'static str) -> std::result::Result<(), sqlx::Error> {
        either!(Pool, self, pool => sqlx::query(sql).fetch_all(pool).await.map(drop))
    }
}

impl PoolConn {
    /// Runs `sql`, one statement or several (a migration), without parameters.
    pub(crate) async fn run(&mut self, sql: String) -> std::result::Result<(), sqlx::Error> {
        either!(PoolConn, self, conn => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut **conn).await.map(drop)
        })
    }

    /// The first column of the first row of `sql`, a number.
    pub(crate) async fn number(
        &mut self,
        sql: &'static str,
    ) -> std::result::Result<i64, sqlx::Error> {
        either!(PoolConn, self, conn => {
            sqlx::query(sql).fetch_one(&mut **conn).await?.try_get::<i64, _>(0)
        })
    }

    /// Runs `sql` with one number and two texts bound as `$1`, `$2`, `$3`.
    pub(crate) async fn run_with(
        &mut self,
        sql: &'static str,
        number: i64,
        text: &str,
        at: i64,
    ) -> std::result::Result<(), sqlx::Error> {
        either!(PoolConn, self, conn => {
            sqlx::query(sql).bind(number).bind(text).bind(at).execute(&mut **conn).await.map(drop)
        })
    }
}

/// How many connections each pool keeps: SQLite's serves settings and migrations only (reads
/// and writes have connections of their own), PostgreSQL's every read and the writer.
const SQLITE_POOL: u32 = 2;
const POSTGRES_POOL: u32 = 10;

/// Opens `options` as a pool of `size` with each connection's `settings` applied, after one
/// direct connection: the pool retries failed connects until its timeout and then reports only
/// that it timed out, hiding "connection refused" or "not a database".
macro_rules! open_pool {
    ($db:ty, $conn:ty, $options:expr, $size:expr, $settings:expr, $shown:expr) => {{
        let options = $options;
        let settings: &'static [&'static str] = $settings;
        let mut probe = <$conn>::connect_with(&options)
            .await
            .map_err(|err| classify_connect_error(err, $shown))?;
        for statement in settings {
            probe.execute(*statement).await.map_err(|err| classify_connect_error(err, $shown))?;
        }
        let _ = probe.close().await;
        PoolOptions::<$db>::new()
            .max_connections($size)
            .acquire_timeout(Duration::from_secs(10))
            // A broken connection fails its query and is replaced; pinging before every use
            // would cost a round trip per query.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    for statement in settings {
                        conn.execute(*statement).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|err| classify_connect_error(err, $shown))?
    }};
}

/// Opens the connection pool, applies per-connection settings and checks them.
///
/// A SQLite store gets page checksums if it has none yet and `may_add_checksums` (see
/// [`crate::checksums::prepare`]); every connection goes through the VFS that checks them.
pub(crate) async fn connect(
    location: &Location,
    durability: Durability,
    may_add_checksums: bool,
) -> Result<(Pool, Option<crate::checksums::PageChecksums>)> {
    let shown = location.redacted();
    let unreachable =
        |err: sqlx::Error| Error::Unreachable { location: shown.clone(), detail: err.to_string() };
    let backend = location.backend();
    let settings = session_settings(backend, durability);
    let (pool, checksums) = match location {
        Location::Sqlite(path) => {
            let options = SqliteConnectOptions::from_str(&location.connect_url()?)
                .map_err(unreachable)?
                .disable_statement_logging();
            refuse_empty_file(path)?;
            make_private(path)?;
            let checksums = crate::checksums::prepare(path, may_add_checksums)?;
            let pool =
                open_pool!(Sqlite, sqlx::SqliteConnection, options, SQLITE_POOL, settings, &shown);
            (Pool::Sqlite(pool), Some(checksums))
        }
        Location::Postgres(url) => {
            let options =
                PgConnectOptions::from_str(url).map_err(unreachable)?.disable_statement_logging();
            let pool =
                open_pool!(Postgres, sqlx::PgConnection, options, POSTGRES_POOL, settings, &shown);
            (Pool::Postgres(pool), None)
        }
    };
    check_settings(&pool, backend, durability, &shown).await?;
    if let Location::Sqlite(path) = location {
        // A new file (and its WAL) was created with the process's umask.
        make_private(path)?;
    }
    Ok((pool, checksums))
}

/// A database file that exists but holds nothing was truncated (or its creation cut short):
/// opening it would silently start a new, empty store beside the old workspaces and tokens.
/// SQLite writes its header as soon as the WAL is set up, so Clade never leaves one behind.
fn refuse_empty_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => {
            Err(Error::EmptyDatabase { path: path.to_owned() })
        }
        _ => Ok(()),
    }
}

/// The database, its WAL and shared-memory file are readable by their owner only (0600),
/// whatever the umask and whoever created them: they hold every tenant's messages. SQLite
/// gives a new WAL the database file's mode, so the database goes first.
#[cfg(unix)]
pub(crate) fn make_private(db: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                    |source| Error::Io { action: "make private (chmod 600)", path, source },
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn make_private(_db: &Path) -> Result<()> {
    Ok(())
}

/// The pool's URL: through the VFS that checks page checksums, as every other connection.
fn sqlite_url(path: &Path) -> Result<String> {
    let vfs = crate::paced::vfs(crate::paced::Writeback::AtOnce).map_err(|reason| Error::Io {
        action: "open",
        path: path.to_owned(),
        source: std::io::Error::other(reason),
    })?;
    Ok(format!("sqlite://{}?mode=rwc&vfs={}", path.display(), vfs.to_string_lossy()))
}

pub(crate) fn session_settings(
    backend: Backend,
    durability: Durability,
) -> &'static [&'static str] {
    // A new SQLite file gets 2 KiB pages (an existing one keeps its own): a commit rewrites
    // each page it touches whole into the WAL, and a turn touches some 25 pages to change a
    // few hundred bytes in each, so 4 KiB pages wrote about 125 KB per turn to disk
    // (`clade bench turns --sessions 100 --rate 500`, 10,000 turns: 1.27 GB with 4 KiB pages,
    // 0.76–0.92 GB with 2 KiB, 0.53–0.75 GB with 1 KiB). 1 KiB pages cost more memory per
    // cached page (about 5 KiB more RSS per session at 1,000 sessions), 2 KiB about half that.
    // With `full`, the writer's own connection commits with `synchronous = NORMAL` and a
    // syncer thread makes each commit durable before anyone hears of it (see `writer`).
    match (backend, durability) {
        (Backend::Sqlite, Durability::Full) => &[
            "PRAGMA page_size = 2048",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = ON",
        ],
        (Backend::Sqlite, Durability::Normal) => &[
            "PRAGMA page_size = 2048",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = ON",
        ],
        (Backend::Postgres, Durability::Full) => &["SET synchronous_commit = on"],
        (Backend::Postgres, Durability::Normal) => &["SET synchronous_commit = off"],
    }
}

/// Reads the durability settings back: an acknowledged commit is only as durable as these.
async fn check_settings(
    pool: &Pool,
    backend: Backend,
    durability: Durability,
    shown: &str,
) -> Result<()> {
    let expect = |setting: &'static str, found: String, expected: &str| {
        if found.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(Error::Durability {
                location: shown.to_owned(),
                setting,
                found,
                expected: expected.to_owned(),
            })
        }
    };
    let text = |query: &'static str| async move {
        pool.text(query).await.map_err(|err| classify_connect_error(err, shown))
    };
    match backend {
        Backend::Sqlite => {
            expect("journal_mode", text("PRAGMA journal_mode").await?, "wal")?;
            let wanted = if durability == Durability::Full { "2" } else { "1" };
            expect("synchronous", text("PRAGMA synchronous").await?, wanted)?;
        }
        Backend::Postgres => {
            if durability == Durability::Full {
                expect("fsync", text("SHOW fsync").await?, "on")?;
                expect("synchronous_commit", text("SHOW synchronous_commit").await?, "on")?;
            }
        }
    }
    Ok(())
}

/// Turns a failure to connect into the one-line error the user needs.
pub(crate) fn classify_connect_error(err: sqlx::Error, shown: &str) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            if let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok()) {
                if code == rusqlite::ffi::SQLITE_IOERR_DATA {
                    return checksum_mismatch(shown);
                }
                // SQLITE_CORRUPT = 11, SQLITE_NOTADB = 26 (low byte of the extended code).
                if matches!(code & 0xff, 11 | 26) {
                    return Error::Corrupt { location: shown.to_owned(), detail: db.to_string() };
                }
                // SQLITE_CANTOPEN = 14: a missing directory, no permission, /proc, …
                if code & 0xff == 14 {
                    return Error::CannotOpen { path: shown.into(), detail: db.to_string() };
                }
            }
            Error::Database(err)
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => {
            Error::Unreachable { location: shown.to_owned(), detail: err.to_string() }
        }
        _ => Error::Database(err),
    }
}

/// A page of the SQLite file failed its checksum (see [`crate::checksums`]).
pub(crate) fn checksum_mismatch(shown: &str) -> Error {
    Error::ChecksumMismatch { location: shown.to_owned(), page: crate::paced::last_mismatch(shown) }
}

/// Like [`classify_connect_error`] for errors seen after the store is open.
pub(crate) fn classify(err: sqlx::Error, shown: &str) -> Error {
    classify_connect_error(err, shown)
}

/// Translates the shared schema text into one backend's dialect.
pub(crate) fn dialect_sql(backend: Backend, sql: &str) -> String {
    match backend {
        Backend::Sqlite => sql.replace("SERIAL_PK", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        Backend::Postgres => sql
            .replace("SERIAL_PK", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
            .replace(" BLOB", " BYTEA")
            .replace(" INTEGER", " BIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(Location::parse("postgres://u@h/db").unwrap().backend(), Backend::Postgres);
        assert_eq!(
            Location::parse("sqlite:///tmp/x.db?mode=rwc").unwrap(),
            Location::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(Location::parse("/tmp/y.db").unwrap(), Location::Sqlite("/tmp/y.db".into()));
        assert!(Location::parse("mysql://h/db").is_err());
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn redacts_passwords() {
        let loc = Location::parse("postgres://bob:hunter2@db:5432/x").unwrap();
        assert_eq!(loc.redacted(), "postgres://bob:***@db:5432/x");
    }

    #[test]
    fn postgres_dialect_maps_types() {
        let sql = dialect_sql(Backend::Postgres, "id BLOB, n INTEGER NOT NULL");
        assert_eq!(sql, "id BYTEA, n BIGINT NOT NULL");
    }
}
