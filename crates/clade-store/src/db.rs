//! Statements written once for both backends: built with [`query`], run on PostgreSQL through
//! sqlx's native driver (the pool for reads, the writer's pooled connection for writes), or on
//! SQLite's rusqlite connections (the writer's own, and readers used on the calling thread).
//!
//! Why a second driver for SQLite writes: sqlx's SQLite driver runs every statement on a
//! worker thread and hands the result back, about 70 µs per statement here, mostly two context
//! switches. The group-commit writer runs a turn's ~14 statements one after another, so those
//! hops capped the whole engine near 1,000 turns/s however many sessions shared a commit. The
//! SQLite writer therefore owns a rusqlite connection on its own thread and runs a batch there
//! with plain function calls and cached prepared statements. rusqlite links the same
//! `libsqlite3-sys` as sqlx (Cargo would refuse two), so the binary holds one SQLite.

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Executor, PgPool, Postgres, Row as _};

use crate::error::{Error, Result};

/// A bound parameter. Nulls carry their type, which PostgreSQL needs to plan the statement.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

macro_rules! value_from {
    ($variant:ident: $($ty:ty => $conv:expr),* $(,)?) => {$(
        impl From<$ty> for Value {
            fn from(v: $ty) -> Self {
                Value::$variant(Some($conv(v)))
            }
        }
        impl From<Option<$ty>> for Value {
            fn from(v: Option<$ty>) -> Self {
                Value::$variant(v.map($conv))
            }
        }
    )*};
}
value_from!(Int: i64 => |v| v, i32 => i64::from, u32 => i64::from, bool => i64::from);
value_from!(Real: f64 => |v| v);
value_from!(Text: String => |v| v, &str => str::to_owned, &String => String::clone);
value_from!(Blob: Vec<u8> => |v| v, &[u8] => <[u8]>::to_vec);

/// A statement with its parameters, not yet run. `$1`, `$2`, … name the parameters on both
/// backends.
#[must_use = "a query does nothing until it is run"]
pub(crate) struct Query {
    sql: Cow<'static, str>,
    args: Vec<Value>,
}

/// Starts a statement; bind its parameters in `$n` order.
pub(crate) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query { sql: sql.into(), args: Vec::new() }
}

/// The connection a write runs on, inside the writer's transaction.
pub(crate) enum Tx {
    Postgres(sqlx::pool::PoolConnection<Postgres>),
    Sqlite(rusqlite::Connection),
}

impl Tx {
    /// Runs one statement without parameters (transaction control).
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Tx::Postgres(conn) => {
                conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await?;
            }
            // Prepared once and cached like any other statement: the writer runs these
            // around every write.
            Tx::Sqlite(conn) => {
                conn.prepare_cached(sql)?.raw_execute()?;
            }
        }
        Ok(())
    }
}

impl Tx {
    /// Makes writes about `what` (a key such as `session <id>`) take turns across processes
    /// until this transaction ends: a transaction-scoped advisory lock on PostgreSQL, keyed
    /// within the schema. Nothing on SQLite, whose writer holds the one write lock. For the
    /// read-then-write steps that a row lock cannot guard: numbering, find-or-create.
    pub(crate) async fn serialize(&mut self, what: &str) -> Result<()> {
        if let Tx::Postgres(_) = self {
            query(
                "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ' ' || $1, 0))",
            )
            .bind(what.to_owned())
            .execute(self)
            .await?;
        }
        Ok(())
    }
}

impl Query {
    pub(crate) fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    fn into_sqlx(self) -> sqlx::query::Query<'static, Postgres, PgArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.sql.into_owned()));
        for arg in self.args {
            q = match arg {
                Value::Int(v) => q.bind(v),
                Value::Real(v) => q.bind(v),
                Value::Text(v) => q.bind(v),
                Value::Blob(v) => q.bind(v),
            };
        }
        q
    }

    /// Runs a statement that returns no rows; the number of rows it changed.
    pub(crate) async fn execute(self, tx: &mut Tx) -> Result<u64> {
        match tx {
            Tx::Postgres(conn) => Ok(self.into_sqlx().execute(&mut **conn).await?.rows_affected()),
            Tx::Sqlite(conn) => sqlite::execute(conn, &self.sql, &self.args),
        }
    }

    pub(crate) async fn fetch_all(self, tx: &mut Tx) -> Result<Vec<Row>> {
        match tx {
            Tx::Postgres(conn) => {
                let rows = self.into_sqlx().fetch_all(&mut **conn).await?;
                Ok(rows.into_iter().map(Row::Postgres).collect())
            }
            Tx::Sqlite(conn) => sqlite::rows(conn, &self.sql, &self.args),
        }
    }

    pub(crate) async fn fetch_optional(self, tx: &mut Tx) -> Result<Option<Row>> {
        match tx {
            Tx::Postgres(conn) => {
                Ok(self.into_sqlx().fetch_optional(&mut **conn).await?.map(Row::Postgres))
            }
            // Every row is stepped through, so an `INSERT … RETURNING` always runs to the end.
            Tx::Sqlite(conn) => Ok(sqlite::rows(conn, &self.sql, &self.args)?.into_iter().next()),
        }
    }

    pub(crate) async fn fetch_one(self, tx: &mut Tx) -> Result<Row> {
        self.fetch_optional(tx).await?.ok_or(Error::Database(sqlx::Error::RowNotFound))
    }

    /// Runs a read on the SQLite readers (inline) or else on the pool.
    pub(crate) async fn fetch_all_read(self, readers: &Readers) -> Result<Vec<Row>> {
        match readers {
            Readers::Sqlite(readers) => {
                // A read that never waits would never give the worker back: a loop of reads
                // (say, verifying a long audit chain page by page) would hold it throughout.
                // This yields once the task has used its scheduling budget.
                tokio::task::consume_budget().await;
                readers.rows(&self.sql, &self.args)
            }
            Readers::Postgres(pool) => {
                let rows = self.into_sqlx().fetch_all(pool).await?;
                Ok(rows.into_iter().map(Row::Postgres).collect())
            }
        }
    }
}

/// Where reads run.
#[derive(Clone)]
pub(crate) enum Readers {
    /// The PostgreSQL pool: a read is a round trip anyway.
    Postgres(PgPool),
    /// SQLite connections used on the calling thread. A point read on cached pages takes a
    /// few microseconds, far less than handing it to a worker thread and back.
    Sqlite(Arc<sqlite::Readers>),
}

impl Readers {
    /// A read-only transaction on a connection of its own: every query run on it sees the
    /// store as it was at its first read, whatever commits meanwhile. End it with `COMMIT`.
    pub(crate) async fn snapshot(&self) -> Result<Tx> {
        match self {
            Readers::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
                Ok(Tx::Postgres(conn))
            }
            Readers::Sqlite(readers) => {
                let conn = readers.open_reader()?;
                conn.execute_batch("BEGIN")?;
                Ok(Tx::Sqlite(conn))
            }
        }
    }
}

/// A result row from either driver.
pub(crate) enum Row {
    Postgres(PgRow),
    Sqlite { columns: Arc<[String]>, values: Vec<rusqlite::types::Value> },
}

impl Row {
    /// The value of a column, by name or position.
    pub(crate) fn try_get<T: Column, I: Index>(&self, index: I) -> Result<T> {
        match self {
            Row::Postgres(row) => T::from_postgres(row, index),
            Row::Sqlite { columns, values } => {
                let value = index
                    .position(columns)
                    .and_then(|i| values.get(i))
                    .ok_or_else(|| Error::BadRow(format!("no column {index}")))?;
                T::from_sqlite(value).ok_or_else(|| {
                    Error::BadRow(format!(
                        "column {index} holds {:?}, not a {}",
                        value.data_type(),
                        std::any::type_name::<T>()
                    ))
                })
            }
        }
    }

    /// A text column holding one word of a vocabulary (a status, a kind), read with `parse`:
    /// a word this build does not know is a bad row, named, not a panic or a guess.
    pub(crate) fn word<T>(&self, column: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
        let text: String = self.try_get(column)?;
        parse(&text).ok_or_else(|| {
            Error::BadRow(format!("{column} holds {text:?}, not a word Clade writes there"))
        })
    }
}

/// A column index: a name or a position.
pub(crate) trait Index: sqlx::ColumnIndex<PgRow> + std::fmt::Display + Copy {
    fn position(self, columns: &[String]) -> Option<usize>;
}

impl Index for &str {
    fn position(self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
}

impl Index for usize {
    fn position(self, _: &[String]) -> Option<usize> {
        Some(self)
    }
}

/// A Rust type a column can be read as.
///
/// Read as SQLite stores it: integers of any width are one type there, and the schema's
/// `INTEGER` is PostgreSQL's `BIGINT`. A PostgreSQL expression may still answer a narrower
/// integer (`SELECT 1` is an `int4`), which reads as the wider one.
pub(crate) trait Column: Sized {
    fn from_sqlite(value: &rusqlite::types::Value) -> Option<Self>;
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self>;
}

use rusqlite::types::Value as Lite;

/// A PostgreSQL integer of any width, widened.
fn pg_integer<I: Index>(row: &PgRow, index: I) -> Result<Option<i64>> {
    let wide = row.try_get::<Option<i64>, I>(index);
    let Err(sqlx::Error::ColumnDecode { .. }) = wide else { return Ok(wide?) };
    if let Ok(n) = row.try_get::<Option<i32>, I>(index) {
        return Ok(n.map(i64::from));
    }
    Ok(row.try_get::<Option<i16>, I>(index)?.map(i64::from))
}

/// A non-null value where one is required, or the error sqlx would have given.
fn present<T, I: Index>(value: Option<T>, index: I) -> Result<T> {
    value.ok_or_else(|| {
        Error::Database(sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: "unexpected null".into(),
        })
    })
}

impl Column for i64 {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        match value {
            Lite::Integer(n) => Some(*n),
            _ => None,
        }
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        present(pg_integer(row, index)?, index)
    }
}

impl Column for i32 {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        i64::from_sqlite(value).and_then(|n| i32::try_from(n).ok())
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        let n = i64::from_postgres(row, index)?;
        i32::try_from(n).map_err(|_| Error::BadRow(format!("column {index} holds {n}")))
    }
}

impl Column for bool {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        i64::from_sqlite(value).map(|n| n != 0)
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        match row.try_get::<bool, I>(index) {
            Err(sqlx::Error::ColumnDecode { .. }) => Ok(i64::from_postgres(row, index)? != 0),
            other => Ok(other?),
        }
    }
}

impl Column for f64 {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        match value {
            Lite::Real(x) => Some(*x),
            Lite::Integer(n) => Some(*n as f64),
            _ => None,
        }
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        match row.try_get::<f64, I>(index) {
            Err(sqlx::Error::ColumnDecode { .. }) => Ok(i64::from_postgres(row, index)? as f64),
            other => Ok(other?),
        }
    }
}

impl Column for String {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        match value {
            Lite::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        Ok(row.try_get(index)?)
    }
}

impl Column for Vec<u8> {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        match value {
            Lite::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        Ok(row.try_get(index)?)
    }
}

impl<T: Column> Column for Option<T> {
    fn from_sqlite(value: &Lite) -> Option<Self> {
        match value {
            Lite::Null => Some(None),
            other => T::from_sqlite(other).map(Some),
        }
    }
    fn from_postgres<I: Index>(row: &PgRow, index: I) -> Result<Self> {
        use sqlx::ValueRef as _;
        if row.try_get_raw(index)?.is_null() {
            return Ok(None);
        }
        T::from_postgres(row, index).map(Some)
    }
}

/// The SQLite writer's side: synchronous calls on its own connection.
pub(crate) mod sqlite {
    use std::path::Path;
    use std::sync::Arc;

    use rusqlite::types::Value as Lite;
    use rusqlite::{Connection, OpenFlags, Statement};

    use super::{Row, Value};
    use crate::error::{Error, Result};

    /// Opens the writer's connection with the same settings as the pool's.
    pub(crate) fn open(
        path: &Path,
        settings: &[&str],
        writeback: crate::paced::Writeback,
    ) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // How a checkpoint's sync writes the database file back (see `paced`).
        let vfs = crate::paced::vfs(writeback).map_err(|reason| Error::Io {
            action: "open",
            path: path.to_owned(),
            source: std::io::Error::other(reason),
        })?;
        let conn = Connection::open_with_flags_and_vfs(path, flags, vfs)?;
        // Enough for every statement the store runs, so none is prepared twice.
        conn.set_prepared_statement_cache_capacity(256);
        // Plans must not depend on bound values: otherwise binding a `LIMIT $n` (or any value
        // the planner looked at) discards the cached plan and re-prepares it on every run.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // Each write of a batch runs in a savepoint whose journal SQLite keeps in memory up to
        // 64 KiB (past that, a write spills it to a temporary file). `temp_store = MEMORY` would
        // keep it in 1 KiB pieces instead, allocated and freed for every write: 12% of the
        // writer's instructions (callgrind, `clade bench turns --model scripted`).
        // 4 MiB of cache holds the B-trees' hot pages: `clade bench turns` at 1,000 sessions ran as fast
        // as with 16 MiB, which held 12–15 KiB more RSS per session (64 MiB was no faster).
        let writer_settings = ["PRAGMA cache_size = -4096"];
        for statement in settings.iter().chain(&writer_settings) {
            // Some pragmas answer with a row; their value is checked on the pool.
            conn.query_row(statement, [], |_| Ok(())).or_else(|err| match err {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                err => Err(err),
            })?;
        }
        Ok(conn)
    }

    /// Idle read connections to one SQLite file, opened on demand.
    pub(crate) struct Readers {
        path: std::path::PathBuf,
        settings: &'static [&'static str],
        idle: std::sync::Mutex<Vec<Connection>>,
    }

    /// Idle connections kept beyond this are closed.
    const MAX_IDLE_READERS: usize = 8;

    impl Readers {
        pub(crate) fn new(path: std::path::PathBuf, settings: &'static [&'static str]) -> Self {
            Self { path, settings, idle: std::sync::Mutex::new(Vec::new()) }
        }

        /// A new read-only connection.
        pub(crate) fn open_reader(&self) -> Result<Connection> {
            let conn = open(&self.path, self.settings, crate::paced::Writeback::AtOnce)?;
            // Reads only: a write that strays here fails instead of bypassing the writer.
            // A small cache: any commit since a reader's last read empties it anyway.
            conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -512")?;
            Ok(conn)
        }

        pub(crate) fn rows(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
            let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match taken {
                Some(conn) => conn,
                None => self.open_reader()?,
            };
            let result = rows(&conn, sql, args);
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        }
    }

    /// Binds `$n` parameters by their number, like sqlx does, whatever order they appear in.
    fn bind(stmt: &mut Statement<'_>, args: &[Value]) -> Result<()> {
        for index in 1..=stmt.parameter_count() {
            let name = stmt.parameter_name(index).unwrap_or_default();
            let arg = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| args.get(n.checked_sub(1)?))
                .ok_or_else(|| {
                    Error::InvalidInput(format!("statement parameter {name:?} has no bound value"))
                })?;
            match arg {
                Value::Int(v) => stmt.raw_bind_parameter(index, v)?,
                Value::Real(v) => stmt.raw_bind_parameter(index, v)?,
                Value::Text(v) => stmt.raw_bind_parameter(index, v)?,
                Value::Blob(v) => stmt.raw_bind_parameter(index, v)?,
            }
        }
        Ok(())
    }

    pub(crate) fn execute(conn: &Connection, sql: &str, args: &[Value]) -> Result<u64> {
        let mut stmt = conn.prepare_cached(sql)?;
        bind(&mut stmt, args)?;
        Ok(stmt.raw_execute()? as u64)
    }

    pub(crate) fn rows(conn: &Connection, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = conn.prepare_cached(sql)?;
        bind(&mut stmt, args)?;
        let columns: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let width = columns.len();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..width).map(|i| row.get::<_, Lite>(i)).collect::<Result<_, _>>()?;
            out.push(Row::Sqlite { columns: columns.clone(), values });
        }
        Ok(out)
    }
}
