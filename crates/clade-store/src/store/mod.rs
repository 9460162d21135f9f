//! The store handle: tenants, agents, API tokens, secrets and metadata over either backend.
//!
//! Reads run on the calling task (SQLite) or the pool (PostgreSQL); every write goes through
//! the group-commit writer ([`crate::writer`]).
//! Every query on tenant-owned data is filtered by tenant id: there is no call that returns
//! another tenant's rows.

use std::sync::Arc;

use clade_core::{AgentId, AuditKind, Clock, Handle, Tenant, TenantId, Timestamp};
use futures::future::BoxFuture;

use crate::backend::{self, Backend, Durability, Location, classify};
use crate::db::{Query, Readers, Row, Tx, query};

use crate::error::{Error, Result};
use crate::migrate::{self, MigrationReport, Migrations};
use crate::writer::{Connect, DiskFaults, WriteStats, Writer};

mod secret_rows;
mod tenancy;
mod tokens;
mod usage;

pub use secret_rows::{SecretInfo, SecretRows};
pub use tenancy::{NewAgent, TenantAgents, Tenants};
pub(crate) use tokens::token_access_from_row;
pub use tokens::{LeasedSession, TOKEN_PREFIX, TokenAccess, TokenInfo, Tokens};
pub(crate) use usage::insert_usage;
#[cfg(test)]
pub(crate) use usage::usage_summary_sql;
pub use usage::{
    BudgetCounter, BudgetSettlement, Budgets, Usage, UsageBy, UsageRecord, UsageSummary,
};

/// How to open a store.
#[derive(Clone)]
pub struct StoreOptions {
    pub location: Location,
    pub durability: Durability,
    pub clock: Arc<dyn Clock>,
    /// Whether opening may upgrade the schema (see [`Migrations`]).
    pub migrations: Migrations,
    /// Faults to inject into this store's disk (tests); none by default.
    pub faults: DiskFaults,
}

impl StoreOptions {
    /// A store at `location` on the system clock that does not upgrade an older schema and
    /// injects no faults; set the other fields with struct update syntax.
    pub fn new(location: Location, durability: Durability) -> Self {
        Self {
            location,
            durability,
            clock: Arc::new(clade_core::SystemClock),
            migrations: Migrations::RequireCurrent,
            faults: DiskFaults::default(),
        }
    }
}

/// A cheap-to-clone handle to Clade's state.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: crate::backend::Pool,
    readers: Readers,
    writer: Writer,
    backend: Backend,
    shown: Arc<str>,
    clock: Arc<dyn Clock>,
    /// Whether a read waits until what it saw is durable (see [`Store::visible_reads`]).
    reads_wait_durable: bool,
    /// Who the admin changes written through this handle are recorded as (see
    /// [`Store::acting_as`]).
    actor: Arc<str>,
    /// What opening did to the schema.
    migrated: MigrationReport,
    /// Whether a SQLite file's pages carry checksums, and whether opening added them.
    page_checksums: Option<crate::checksums::PageChecksums>,
    /// What this store's turn writes are fenced by (see [`crate::ShardLeases`]); shared by
    /// every clone.
    pub(crate) fence: Arc<std::sync::RwLock<crate::leases::Fence>>,
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn id_bytes(row: &Row, column: &str) -> Result<[u8; 16]> {
    let bytes: Vec<u8> = row.try_get(column)?;
    bytes.try_into().map_err(|_| Error::BadRow(format!("{column} is not a 16-byte id")))
}

/// A nullable id column.
pub(crate) fn opt_id(row: &Row, column: &str) -> Result<Option<[u8; 16]>> {
    let bytes: Option<Vec<u8>> = row.try_get(column)?;
    bytes
        .map(|b| b.try_into().map_err(|_| Error::BadRow(format!("{column} is not a 16-byte id"))))
        .transpose()
}

fn handle_column(row: &Row, column: &str) -> Result<Handle> {
    let text: String = row.try_get(column)?;
    Handle::from_stored(&text).map_err(|e| Error::BadRow(e.to_string()))
}

impl Store {
    /// Connects, checks durability settings, runs migrations and makes sure the default
    /// tenant exists.
    pub async fn open(options: StoreOptions) -> Result<Self> {
        let shown: Arc<str> = options.location.redacted().into();
        let backend = options.location.backend();
        let may_add_checksums = options.migrations == Migrations::Apply;
        let (pool, page_checksums) =
            backend::connect(&options.location, options.durability, may_add_checksums).await?;
        let now = options.clock.now().as_millis();
        let report = migrate::run(&pool, backend, &shown, now, options.migrations).await?;
        let settings = backend::session_settings(backend, options.durability);
        let (connect, readers) = match (&options.location, &pool) {
            (Location::Postgres(_), backend::Pool::Postgres(pool)) => {
                (Connect::Postgres(pool.clone()), Readers::Postgres(pool.clone()))
            }
            (Location::Sqlite(path), _) => (
                Connect::Sqlite { path: path.clone(), settings, durability: options.durability },
                Readers::Sqlite(Arc::new(crate::db::sqlite::Readers::new(path.clone(), settings))),
            ),
            (Location::Postgres(_), backend::Pool::Sqlite(_)) => {
                return Err(Error::BadUrl(options.location.redacted()));
            }
        };
        let writer = Writer::spawn(connect, backend, shown.to_string(), options.faults.clone())?;
        let store = Self {
            pool,
            readers,
            writer,
            backend,
            shown,
            clock: options.clock,
            reads_wait_durable: true,
            actor: "operator".into(),
            migrated: report,
            page_checksums,
            fence: Arc::default(),
        };
        store.ensure_tenant(Tenant::DEFAULT_NAME).await?;
        Ok(store)
    }

    /// The schema version this store was at when opened, and is at now.
    pub fn migrated(&self) -> MigrationReport {
        self.migrated
    }

    /// Closes the store: its connections, and (SQLite) its threads, which fold the WAL back
    /// into the database file as the last connection closes. Other clones of this handle keep
    /// what they use open; this then returns after waiting a few seconds for them.
    pub async fn close(self) {
        let patience = std::time::Duration::from_secs(5);
        let Store { pool, readers, writer, .. } = self;
        drop(readers);
        // The writer first: on PostgreSQL it holds a connection of the pool, which the pool's
        // close would wait for without end.
        writer.close(patience).await;
        let _ = tokio::time::timeout(patience, pool.close()).await;
    }

    /// Whether the pages of a SQLite file carry checksums, and whether opening added them
    /// (`None` on PostgreSQL, which checks its own pages if the cluster was made to).
    pub fn page_checksums(&self) -> Option<crate::checksums::PageChecksums> {
        self.page_checksums
    }

    /// Commits and writes through the group-commit writer since this store was opened.
    pub fn write_stats(&self) -> WriteStats {
        self.writer.stats()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The printable location (passwords removed).
    pub fn location(&self) -> &str {
        &self.shown
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The clock the store was opened with: what everything built on it reads and sleeps on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.pool.run("SELECT 1").await.map_err(|e| self.db(e))
    }

    /// Verifies the database file's structure (SQLite); PostgreSQL checks its own pages.
    pub async fn quick_check(&self) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let row = self.row(query("PRAGMA quick_check")).await?;
        let verdict: String = row.try_get(0)?;
        if verdict != "ok" {
            return Err(Error::Corrupt { location: self.shown.to_string(), detail: verdict });
        }
        Ok(())
    }

    /// Bytes the database occupies: the SQLite file after folding the WAL back in, or the
    /// PostgreSQL tables and indexes of this schema. Used by `clade bench`.
    pub async fn disk_bytes(&self) -> Result<i64> {
        let query = match self.backend {
            Backend::Sqlite => {
                self.pool.run("PRAGMA wal_checkpoint(TRUNCATE)").await.map_err(|e| self.db(e))?;
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
            Backend::Postgres => {
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND n.nspname = current_schema()"
            }
        };
        self.pool.number(query).await.map_err(|e| self.db(e))
    }

    /// A handle to the same store whose reads return as soon as they have run, which can be
    /// before the writes they saw are durable (SQLite with `durability: full` commits before
    /// it syncs; see [`crate::writer`]). Only for what stays inside the process until a later
    /// write is durable, such as the turn engine reading the events it is about to run: that
    /// turn's own commit comes after theirs. Everything shown to a client or sent out reads
    /// through the plain handle.
    pub fn visible_reads(&self) -> Store {
        Store { reads_wait_durable: false, ..self.clone() }
    }

    /// A read-only transaction on a connection of its own, every read of which sees one
    /// consistent state of the store; end it with `COMMIT`.
    pub(crate) async fn read_snapshot(&self) -> Result<Tx> {
        self.readers.snapshot().await.map_err(|e| self.classify(e))
    }

    /// Runs a read on the pool; errors are classified for the user.
    pub(crate) async fn rows(&self, query: Query) -> Result<Vec<Row>> {
        let rows = query.fetch_all_read(&self.readers).await.map_err(|e| self.classify(e))?;
        if self.reads_wait_durable {
            self.writer.settled().await;
        }
        Ok(rows)
    }

    pub(crate) async fn maybe_row(&self, query: Query) -> Result<Option<Row>> {
        Ok(self.rows(query).await?.into_iter().next())
    }

    pub(crate) async fn row(&self, query: Query) -> Result<Row> {
        self.maybe_row(query).await?.ok_or(Error::Database(sqlx::Error::RowNotFound))
    }

    pub(crate) fn db(&self, err: sqlx::Error) -> Error {
        classify(err, &self.shown)
    }

    /// Names a damaged database as such, whichever driver noticed.
    fn classify(&self, err: Error) -> Error {
        match err {
            Error::Database(err) => self.db(err),
            Error::Sqlite(rusqlite::Error::SqliteFailure(code, _))
                if code.extended_code == rusqlite::ffi::SQLITE_IOERR_DATA =>
            {
                backend::checksum_mismatch(&self.shown)
            }
            Error::Sqlite(rusqlite::Error::SqliteFailure(code, detail))
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                Error::Corrupt {
                    location: self.shown.to_string(),
                    detail: detail.unwrap_or_else(|| code.to_string()),
                }
            }
            other => other,
        }
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl for<'c> Fn(&'c mut Tx) -> BoxFuture<'c, Result<T>> + Send + Sync + 'static,
    ) -> Result<T> {
        self.write_announced(None, f).await
    }

    /// As [`Store::write`], and `announce` is told the value once it is committed, which can
    /// be before it is durable (see [`crate::writer::Announce`]).
    pub(crate) async fn write_announced<T: Send + 'static>(
        &self,
        announce: Option<crate::writer::Announce<T>>,
        f: impl for<'c> Fn(&'c mut Tx) -> BoxFuture<'c, Result<T>> + Send + Sync + 'static,
    ) -> Result<T> {
        self.writer.write_announced(Box::new(f), announce).await
    }

    // ---- tenants ----

    async fn ensure_tenant(&self, name: &str) -> Result<Tenant> {
        match self.tenants().named(name).await {
            Ok(tenant) => Ok(tenant),
            Err(Error::TenantNotFound(_)) => match self.tenants().create(name).await {
                Err(Error::TenantExists(_)) => self.tenants().named(name).await,
                other => other,
            },
            Err(err) => Err(err),
        }
    }

    /// This handle, recording `actor` (`operator (cli)`, `tenant acme (api)`) as who made the
    /// admin changes it writes: tenants, agents, tokens and secrets created or removed are
    /// appended to the tenant's audit chain in the same transaction as the change.
    /// Who this handle's writes are recorded as (see [`Store::acting_as`]).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn acting_as(&self, actor: impl Into<Arc<str>>) -> Store {
        Store { actor: actor.into(), ..self.clone() }
    }

    /// This store, but its writes go into the writer's next group commit ahead of every other
    /// handle's queued writes: for the scheduler, whose fires are late when they queue behind
    /// the turns they start. Use it for nothing that merely wants to be quick: what goes first
    /// delays everything else.
    pub fn writes_first(&self) -> Store {
        Store { writer: self.writer.first(), ..self.clone() }
    }

    /// An admin change's audit record, naming who made it.
    pub(crate) fn admin_record(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        kind: AuditKind,
        mut detail: serde_json::Value,
    ) -> crate::access::AuditEntry {
        detail["by"] = serde_json::Value::String(self.actor.to_string());
        crate::access::AuditEntry {
            tenant,
            agent,
            kind,
            tool: None,
            decision: None,
            detail: detail.to_string(),
        }
    }
}

/// The store's own key-value metadata (the master key's fingerprint, markers of one-time work).
#[derive(Clone, Copy)]
pub struct Meta<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The store's own key-value metadata.
    pub fn meta(&self) -> Meta<'_> {
        Meta { store: self }
    }
}

impl Meta<'_> {
    // ---- metadata ----

    pub async fn get(self, key: &str) -> Result<Option<String>> {
        let row =
            self.store.maybe_row(query("SELECT value FROM meta WHERE key = $1").bind(key)).await?;
        row.map(|r| r.try_get::<String, _>("value")).transpose()
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub async fn set(self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.store
            .write(move |conn| {
                let key = key.clone();
                let value = value.clone();
                Box::pin(async move {
                    query(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(key)
                    .bind(value)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }
}
