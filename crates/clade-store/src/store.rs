//! The store handle: tenants, agents, API tokens, secrets and metadata over either backend.
//!
//! Reads run on the calling task (SQLite) or the pool (PostgreSQL); every write goes through
//! the group-commit writer ([`crate::writer`]).
//! Every query on tenant-owned data is filtered by tenant id: there is no call that returns
//! another tenant's rows.

use std::sync::Arc;

use clade_core::{
    Agent, AgentConfig, AgentId, AuditKind, Clock, Handle, SecretName, TemplateName, Tenant,
    TenantId, Timestamp, TokenId,
};
use futures::future::BoxFuture;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{Query, Readers, Row, Tx, query};

use crate::backend::{self, Backend, Durability, Location, classify};
use crate::crypto::Sealed;
use crate::error::{Error, Result};
use crate::migrate::{self, MigrationReport, Migrations};
use crate::writer::{Connect, DiskFaults, WriteStats, Writer};

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

/// What is needed to create an agent.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub handle: Handle,
    pub display_name: Option<String>,
    pub config: AgentConfig,
}

/// An API token as listed (its secret is never stored, only a hash of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub tenant_id: TenantId,
    pub name: String,
    /// What it may do (see [`clade_core::Scope`]).
    pub scopes: Vec<clade_core::Scope>,
    /// The agents it may reach; `None` for every agent of its tenant.
    pub agents: Option<Vec<AgentId>>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// When it stops working; `None`: never.
    pub expires_at: Option<Timestamp>,
}

/// What a live token may do: its scopes, and the agents it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAccess {
    pub scopes: Vec<clade_core::Scope>,
    /// `None`: every agent of the tenant (and the tenant itself: its agents, tokens, grants).
    pub agents: Option<Vec<AgentId>>,
    /// Sessions reached beyond `agents`: those a leased operator's live session leases name.
    pub sessions: Vec<LeasedSession>,
    /// The operator's name, when what it reaches comes from leases (an operator paired
    /// `leased`): such a caller may not grant leases, or it could extend its own.
    pub leased: Option<String>,
}

/// A session a leased operator reaches, with what routes an event into it: its agent and
/// source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedSession {
    pub id: clade_core::SessionId,
    pub agent_id: AgentId,
    pub source: crate::Source,
}

impl TokenAccess {
    /// Whether the token may reach `agent` (of its own tenant: tenants are checked apart).
    pub fn reaches(&self, agent: AgentId) -> bool {
        self.agents.as_ref().is_none_or(|agents| agents.contains(&agent))
    }

    /// Whether the token speaks for its whole tenant rather than some of its agents.
    pub fn whole_tenant(&self) -> bool {
        self.agents.is_none()
    }
}

/// The stored form of a token's agents: comma-separated ids.
fn agents_text(agents: &[AgentId]) -> String {
    agents.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn agents_from_text(text: Option<String>) -> Result<Option<Vec<AgentId>>> {
    let Some(text) = text else { return Ok(None) };
    text.split(',')
        .map(|id| {
            id.parse::<AgentId>().map_err(|_| {
                Error::BadRow(format!("api_tokens.agents holds {id:?}, not an agent id"))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A secret as listed: name and dates, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: SecretName,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One model call's usage, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub tenant: TenantId,
    pub agent: Option<AgentId>,
    /// The turn the call belonged to, if any.
    pub turn: Option<clade_core::TurnId>,
    /// The configured model name.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

impl UsageRecord {
    /// What the call adds to its turn's totals: input tokens (cached and cache writes
    /// included), output tokens and cost.
    pub(crate) fn turn_totals(&self) -> (i64, i64, i64) {
        (
            to_i64(self.input_tokens + self.cached_tokens + self.cache_write_tokens),
            to_i64(self.output_tokens),
            to_i64(self.cost_micros),
        )
    }
}

/// Usage summed per agent and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummary {
    /// The agent's handle; `None` for calls made for the tenant, not an agent.
    pub agent: Option<String>,
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

/// One counter a reservation must fit under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounter {
    pub scope: String,
    pub period: String,
    pub unit: String,
    pub amount: u64,
    pub limit: u64,
    /// What to tell the user when this counter refuses, e.g. "tenant acme: 5.00 USD per day".
    pub label: String,
}

/// Returning a reservation and booking the real spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSettlement {
    pub scope: String,
    pub period: String,
    pub unit: String,
    pub reserved: u64,
    pub spent: u64,
}

/// Inserts a usage row inside the caller's transaction.
/// Records a model call. With `add_to_turn`, its turn's totals grow by it (a turn inserted in
/// the same write carries them from the start instead: see [`UsageRecord::turn_totals`]).
pub(crate) async fn insert_usage(
    conn: &mut Tx,
    usage: &UsageRecord,
    now: Timestamp,
    add_to_turn: bool,
) -> Result<()> {
    query(
        "INSERT INTO model_usage (id, tenant_id, agent_id, turn_id, model, input_tokens, output_tokens, \
         cached_tokens, cache_write_tokens, cost_micros, created_at) \
         VALUES ($1, $2, $3, $11, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(clade_core::TokenId::generate(now).as_bytes().to_vec())
    .bind(usage.tenant.as_bytes().to_vec())
    .bind(usage.agent.map(|a| a.as_bytes().to_vec()))
    .bind(usage.model.clone())
    .bind(to_i64(usage.input_tokens))
    .bind(to_i64(usage.output_tokens))
    .bind(to_i64(usage.cached_tokens))
    .bind(to_i64(usage.cache_write_tokens))
    .bind(to_i64(usage.cost_micros))
    .bind(now.as_millis())
    .bind(usage.turn.map(|t| t.as_bytes().to_vec()))
    .execute(&mut *conn)
    .await?;
    // A turn carries its own totals, so listing a session's turns needs no index of usage by
    // turn (one page fewer in every commit that records a model call).
    if let Some(turn) = usage.turn.filter(|_| add_to_turn) {
        let (input, output, cost) = usage.turn_totals();
        query(
            "UPDATE executions SET model_calls = model_calls + 1, input_tokens = input_tokens + $2, \
             output_tokens = output_tokens + $3, cost_micros = cost_micros + $4 \
             WHERE id = $1 AND tenant_id = $5 AND kind = 'turn'",
        )
        .bind(turn.as_bytes().to_vec())
        .bind(input)
        .bind(output)
        .bind(cost)
        .bind(usage.tenant.as_bytes().to_vec())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The prefix of every API token, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "clade_";

/// Agent config as stored in the `config` column: versioned so old rows keep loading.
#[derive(Serialize, Deserialize)]
struct StoredAgentConfig {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
}

fn encode_config(config: &AgentConfig) -> String {
    let stored = StoredAgentConfig {
        v: 1,
        template: (config.template != TemplateName::builtin_default())
            .then(|| config.template.to_string()),
    };
    serde_json::to_string(&stored).unwrap_or_else(|_| "{\"v\":1}".into())
}

fn decode_config(text: &str) -> Result<AgentConfig> {
    let stored: StoredAgentConfig =
        serde_json::from_str(text).map_err(|e| Error::BadRow(format!("agent config: {e}")))?;
    let template = match stored.template {
        Some(name) => TemplateName::parse(&name).map_err(|e| Error::BadRow(e.to_string()))?,
        None => TemplateName::builtin_default(),
    };
    Ok(AgentConfig { template })
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

/// A token's tenant and access from a row of `t.id, t.name, t.created_at, k.scopes, k.agents`.
pub(crate) fn token_access_from_row(row: &Row) -> Result<(Tenant, TokenAccess)> {
    let scopes =
        clade_core::Scope::split(&row.try_get::<String, _>("scopes")?).map_err(Error::BadRow)?;
    let agents = agents_from_text(row.try_get("agents")?)?;
    Ok((tenant_from_row(row)?, TokenAccess { scopes, agents, sessions: Vec::new(), leased: None }))
}

fn tenant_from_row(row: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_bytes(id_bytes(row, "id")?),
        name: handle_column(row, "name")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn agent_from_row(row: &Row) -> Result<Agent> {
    let handle = handle_column(row, "handle")?;
    let display_name: Option<String> = row.try_get("display_name")?;
    Ok(Agent {
        id: AgentId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        display_name: display_name.unwrap_or_else(|| handle.to_string()),
        handle,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        config: decode_config(&row.try_get::<String, _>("config")?)?,
    })
}

fn token_from_row(row: &Row) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: TokenId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        name: row.try_get("name")?,
        scopes: clade_core::Scope::split(&row.try_get::<String, _>("scopes")?)
            .map_err(Error::BadRow)?,
        agents: agents_from_text(row.try_get("agents")?)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp::from_millis),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp::from_millis),
    })
}

/// The audit record of a change to an agent's secret (its name, never its value), in the
/// chain of the agent's tenant.
async fn secret_audit(
    conn: &mut Tx,
    actor: &str,
    agent: AgentId,
    kind: AuditKind,
    name: &str,
    now: Timestamp,
) -> Result<()> {
    let row = query("SELECT tenant_id FROM agents WHERE id = $1")
        .bind(agent.as_bytes().to_vec())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Err(Error::AgentNotFound(agent.to_string())) };
    let entry = crate::access::AuditEntry {
        tenant: TenantId::from_bytes(id_bytes(&row, "tenant_id")?),
        agent: Some(agent),
        kind,
        tool: None,
        decision: None,
        detail: serde_json::json!({ "secret": name, "by": actor }).to_string(),
    };
    crate::access::append_audit(conn, &entry, now).await
}

fn hash_token(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

const AGENT_COLUMNS: &str = "id, tenant_id, handle, display_name, created_at, config";
/// Rows per multi-row INSERT; 6 columns each stays far below SQLite's 32,766 parameters.
const INSERT_CHUNK: usize = 500;

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

    /// The tenant a bearer token belongs to; [`Error::BadToken`] if it is unknown, revoked or
    /// expired.
    pub async fn authenticate(&self, secret: &str) -> Result<Tenant> {
        self.authenticate_scoped(secret).await.map(|(tenant, _)| tenant)
    }

    /// The tenant a live token belongs to, and what the token may do.
    pub async fn authenticate_scoped(&self, secret: &str) -> Result<(Tenant, TokenAccess)> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(Error::BadToken);
        }
        let row = self.maybe_row(query(
            "SELECT t.id, t.name, t.created_at, k.scopes, k.agents FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)",
        )
        .bind(hash_token(secret))
        .bind(self.now().as_millis())).await?;
        let Some(row) = row else { return Err(Error::BadToken) };
        token_access_from_row(&row)
    }

    // ---- secrets (already encrypted by the caller; see `crate::secrets`) ----

    pub(crate) async fn put_sealed(
        &self,
        agent: AgentId,
        name: &SecretName,
        sealed: Sealed,
    ) -> Result<()> {
        let at = self.now();
        let now = at.as_millis();
        let name = name.to_string();
        let actor = self.actor.clone();
        self.write(move |conn| {
            let actor = actor.clone();
            let name = name.clone();
            let sealed = sealed.clone();
            Box::pin(async move {
                secret_audit(conn, &actor, agent, AuditKind::SecretSet, &name, at).await?;
                let agent = agent.as_bytes().to_vec();
                let updated = query(
                    "UPDATE secrets SET nonce = $1, ciphertext = $2, updated_at = $3 \
                     WHERE agent_id = $4 AND name = $5",
                )
                .bind(sealed.nonce.clone())
                .bind(sealed.ciphertext.clone())
                .bind(now)
                .bind(agent.clone())
                .bind(name.clone())
                .execute(&mut *conn)
                .await?;
                if updated == 0 {
                    query(
                        "INSERT INTO secrets (agent_id, name, nonce, ciphertext, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(agent)
                    .bind(name)
                    .bind(sealed.nonce)
                    .bind(sealed.ciphertext)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn sealed(&self, agent: AgentId, name: &SecretName) -> Result<Sealed> {
        let row = self
            .maybe_row(
                query("SELECT nonce, ciphertext FROM secrets WHERE agent_id = $1 AND name = $2")
                    .bind(agent.as_bytes().to_vec())
                    .bind(name.to_string()),
            )
            .await?
            .ok_or_else(|| Error::SecretNotFound(name.to_string()))?;
        Ok(Sealed { nonce: row.try_get("nonce")?, ciphertext: row.try_get("ciphertext")? })
    }

    // ---- model usage and budgets ----

    /// Records one model call's usage.
    pub async fn record_usage(&self, usage: UsageRecord) -> Result<()> {
        let now = self.now();
        self.write(move |conn| {
            let usage = usage.clone();
            Box::pin(async move { insert_usage(conn, &usage, now, true).await })
        })
        .await
    }
}

async fn insert_agents(conn: &mut Tx, agents: &[Agent]) -> Result<()> {
    let mut sql = format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES ");
    for i in 0..agents.len() {
        let b = i * 6;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6
        ));
    }
    // Only placeholders are interpolated; every value is bound.
    let mut query = query(sql);
    for agent in agents {
        // Store no display name when it equals the handle: the common case costs no bytes.
        let display =
            (agent.display_name != agent.handle.as_str()).then(|| agent.display_name.clone());
        query = query
            .bind(agent.id.as_bytes().to_vec())
            .bind(agent.tenant_id.as_bytes().to_vec())
            .bind(agent.handle.to_string())
            .bind(display)
            .bind(agent.created_at.as_millis())
            .bind(encode_config(&agent.config));
    }
    query.execute(&mut *conn).await.map_err(|e| {
        if e.is_unique_violation() {
            // Name the handle when there is only one; in a bulk insert, say which could clash.
            match agents {
                [one] => Error::HandleTaken(one.handle.clone()),
                _ => Error::InvalidInput(format!(
                    "one of {} handles already exists in this tenant; nothing was created",
                    agents.len()
                )),
            }
        } else if e.is_foreign_key_violation() {
            Error::TenantNotFound("(deleted while creating the agent)".into())
        } else {
            e
        }
    })?;
    Ok(())
}

/// The payload bytes of one tenant's conversations (see [`crate::Usage::stored_bytes`]).
const STORED_BYTES: &str = "SELECT CAST(\
    (SELECT COALESCE(SUM(OCTET_LENGTH(text)), 0) FROM events WHERE tenant_id = $1) \
  + (SELECT COALESCE(SUM(OCTET_LENGTH(data)), 0) FROM outbox WHERE tenant_id = $1) \
  + (SELECT COALESCE(SUM(COALESCE(OCTET_LENGTH(input), 0) + COALESCE(OCTET_LENGTH(output), 0) \
       + COALESCE(OCTET_LENGTH(error), 0)), 0) FROM executions WHERE tenant_id = $1) \
  + (SELECT COALESCE(SUM(OCTET_LENGTH(s.data)), 0) FROM execution_steps s \
       JOIN executions e ON e.id = s.execution_id WHERE e.tenant_id = $1) \
  AS BIGINT)";

/// A tenant's usage since a time, per agent and model: one range of `model_usage`'s primary key
/// (tenant, time), whatever other tenants used.
pub(crate) const USAGE_SUMMARY: &str = "SELECT a.handle AS handle, u.model AS model, COUNT(*) AS calls, CAST(SUM(u.input_tokens) AS BIGINT) AS input, \
             CAST(SUM(u.output_tokens) AS BIGINT) AS output, CAST(SUM(u.cached_tokens) AS BIGINT) AS cached, \
             CAST(SUM(u.cache_write_tokens) AS BIGINT) AS cache_write, CAST(SUM(u.cost_micros) AS BIGINT) AS cost \
             FROM model_usage u LEFT JOIN agents a ON a.id = u.agent_id \
             WHERE u.tenant_id = $1 AND u.created_at >= $2 AND ($3 IS NULL OR u.agent_id = $3) \
             GROUP BY a.handle, u.model ORDER BY a.handle, u.model";

/// One tenant's API tokens: created (the secret shown once), listed and revoked, each audited.
#[derive(Clone, Copy)]
pub struct Tokens<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s API tokens.
    pub fn tokens(&self, tenant: TenantId) -> Tokens<'_> {
        Tokens { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's API tokens.
    pub fn tokens(&self) -> Tokens<'_> {
        self.store().tokens(self.tenant())
    }
}

impl Tokens<'_> {
    // ---- tokens ----

    /// Creates a token for `tenant`, limited to `agents` if given (each must be the tenant's)
    /// and working until `expires_at` if given; the returned secret is shown once and never
    /// stored.
    pub async fn create(
        self,
        name: &str,
        scopes: &[clade_core::Scope],
        agents: Option<&[AgentId]>,
        expires_at: Option<Timestamp>,
    ) -> Result<(TokenInfo, String)> {
        let tenant = self.tenant;
        if expires_at.is_some_and(|at| at <= self.store.now()) {
            return Err(Error::InvalidInput("a token's expiry must be in the future".into()));
        }
        if scopes.is_empty() {
            return Err(Error::InvalidInput(
                "a token needs at least one scope: admin, operate, send, read or approve".into(),
            ));
        }
        if let Some(agents) = agents {
            if agents.is_empty() {
                return Err(Error::InvalidInput(
                    "a token limited to agents needs at least one agent".into(),
                ));
            }
            if scopes.contains(&clade_core::Scope::Admin) {
                return Err(Error::InvalidInput(
                    "a token limited to some agents cannot have the admin scope, which covers the whole tenant (its agents, tokens, grants and audit log)".into(),
                ));
            }
        }
        if name.is_empty() || name.len() > 100 || name.chars().any(clade_core::is_spoofing_char) {
            return Err(Error::InvalidInput(
                "token name must be 1-100 characters without control, bidirectional-override or zero-width characters".into(),
            ));
        }
        let mut raw = [0u8; 32];
        #[allow(clippy::disallowed_methods)] // A secret: the OS's generator, never a seed.
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
        let now = self.store.now();
        let info = TokenInfo {
            id: TokenId::generate(now),
            tenant_id: tenant,
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            agents: agents.map(|a| {
                let mut agents = a.to_vec();
                agents.sort();
                agents.dedup();
                agents
            }),
            created_at: now,
            revoked_at: None,
            expires_at,
        };
        let row = info.clone();
        let hash = hash_token(&secret);
        let audit = self.store.admin_record(
            tenant,
            None,
            AuditKind::TokenCreated,
            serde_json::json!({
                "token": info.id.to_string(),
                "name": info.name,
                "scopes": clade_core::Scope::join(&info.scopes),
                "agents": info.agents.as_deref().map(agents_text),
                "expires_at": info.expires_at.map(|at| at.as_millis()),
            }),
        );
        self.store.write(move |conn| {
            let audit = audit.clone();
            let hash = hash.clone();
            let row = row.clone();
            Box::pin(async move {
                // The agents are the tenant's, checked in the same transaction.
                for agent in row.agents.iter().flatten() {
                    let found = query("SELECT 1 FROM agents WHERE id = $1 AND tenant_id = $2")
                        .bind(agent.as_bytes().to_vec())
                        .bind(row.tenant_id.as_bytes().to_vec())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if found.is_none() {
                        return Err(Error::AgentNotFound(agent.to_string()));
                    }
                }
                query(
                    "INSERT INTO api_tokens (id, tenant_id, name, secret_hash, created_at, scopes, agents, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(row.id.as_bytes().to_vec())
                .bind(row.tenant_id.as_bytes().to_vec())
                .bind(row.name)
                .bind(hash)
                .bind(row.created_at.as_millis())
                .bind(clade_core::Scope::join(&row.scopes))
                .bind(row.agents.as_deref().map(agents_text))
                .bind(row.expires_at.map(|at| at.as_millis()))
                .execute(&mut *conn)
                .await?;
                crate::access::append_audit(conn, &audit, now).await?;
                Ok(())
            })
        })
        .await?;
        Ok((info, secret))
    }

    pub async fn list(self) -> Result<Vec<TokenInfo>> {
        let tenant = self.tenant;
        let rows = self.store
            .rows(
                query(
                    "SELECT id, tenant_id, name, scopes, agents, created_at, revoked_at, expires_at FROM api_tokens \
             WHERE tenant_id = $1 ORDER BY created_at, id",
                )
                .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn revoke(self, id: TokenId) -> Result<()> {
        let tenant = self.tenant;
        let at = self.store.now();
        let now = at.as_millis();
        let audit = self.store.admin_record(
            tenant,
            None,
            AuditKind::TokenRevoked,
            serde_json::json!({ "token": id.to_string() }),
        );
        self.store
            .write(move |conn| {
                let audit = audit.clone();
                Box::pin(async move {
                    let done = query(
                        "UPDATE api_tokens SET revoked_at = $1 \
                     WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(id.as_bytes().to_vec())
                    .bind(tenant.as_bytes().to_vec())
                    .execute(&mut *conn)
                    .await?;
                    if done == 0 {
                        return Err(Error::TokenNotFound(id.to_string()));
                    }
                    crate::access::append_audit(conn, &audit, at).await?;
                    Ok(())
                })
            })
            .await
    }
}

/// One tenant's agents' rows (their workspaces are [`crate::Agents`]'): created, read, counted
/// and deleted, each change audited.
#[derive(Clone, Copy)]
pub struct TenantAgents<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s agents.
    pub fn agents(&self, tenant: TenantId) -> TenantAgents<'_> {
        TenantAgents { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's agents.
    pub fn agents(&self) -> TenantAgents<'_> {
        self.store().agents(self.tenant())
    }
}

impl TenantAgents<'_> {
    // ---- agents ----

    pub async fn create(self, agent: NewAgent) -> Result<Agent> {
        let tenant = self.tenant;
        let mut created = self.store.agents(tenant).create_many(vec![agent]).await?;
        created.pop().ok_or_else(|| Error::BadRow("no agent created".into()))
    }

    /// Creates all of `agents` in one transaction, or none of them.
    pub async fn create_many(self, agents: Vec<NewAgent>) -> Result<Vec<Agent>> {
        let tenant = self.tenant;
        self.store.agents(tenant).create_many_within(agents, None).await
    }

    /// Like [`crate::TenantAgents::create_many`], but the tenant may have at most `limit.0` agents
    /// afterwards (counted in the transaction); `limit.1` names where the quota is set.
    pub async fn create_many_within(
        self,
        agents: Vec<NewAgent>,
        limit: Option<(u64, String)>,
    ) -> Result<Vec<Agent>> {
        let tenant = self.tenant;
        for agent in &agents {
            if let Some(name) = &agent.display_name {
                clade_core::agent::validate_display_name(name).map_err(Error::InvalidInput)?;
            }
        }
        let now = self.store.now();
        let agents: Vec<Agent> = agents
            .into_iter()
            .map(|new| Agent {
                id: AgentId::generate(now),
                tenant_id: tenant,
                display_name: new.display_name.unwrap_or_else(|| new.handle.to_string()),
                handle: new.handle,
                created_at: now,
                config: new.config,
            })
            .collect();
        let rows = agents.clone();
        // One record per call: a bulk creation (`clade bench agents`) names its first handles.
        let handles: Vec<&str> = agents.iter().take(20).map(|a| a.handle.as_str()).collect();
        let audit = self.store.admin_record(
            tenant,
            (agents.len() == 1).then(|| agents[0].id),
            AuditKind::AgentCreated,
            serde_json::json!({ "handles": handles, "count": agents.len() }),
        );
        self.store.write(move |conn| {
            let audit = audit.clone();
            let limit = limit.clone();
            let rows = rows.clone();
            Box::pin(async move {
                if let Some((max, key)) = &limit {
                    let row = query("SELECT COUNT(*) AS n FROM agents WHERE tenant_id = $1")
                        .bind(tenant.as_bytes().to_vec())
                        .fetch_one(&mut *conn)
                        .await?;
                    let have = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                    if have + rows.len() as u64 > *max {
                        return Err(Error::QuotaExceeded(format!(
                            "the tenant has {have} agents and may have {max} ({key}): delete some, or ask the operator to raise the quota"
                        )));
                    }
                }
                for chunk in rows.chunks(INSERT_CHUNK) {
                    insert_agents(conn, chunk).await?;
                }
                crate::access::append_audit(conn, &audit, now).await?;
                Ok(())
            })
        })
        .await?;
        Ok(agents)
    }

    pub async fn get(self, handle: &str) -> Result<Agent> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND handle = $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(handle),
            )
            .await?;
        row.as_ref()
            .map(agent_from_row)
            .transpose()?
            .ok_or_else(|| Error::AgentNotFound(handle.into()))
    }

    pub async fn by_id(self, id: AgentId) -> Result<Agent> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(id.as_bytes().to_vec()),
            )
            .await?;
        row.as_ref()
            .map(agent_from_row)
            .transpose()?
            .ok_or_else(|| Error::AgentNotFound(id.to_string()))
    }

    /// Agents of a tenant ordered by handle, `limit` at a time, starting after `after`.
    pub async fn list(self, after: Option<&str>, limit: u32) -> Result<Vec<Agent>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND handle > $2 \
             ORDER BY handle LIMIT $3"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    pub async fn count(self) -> Result<i64> {
        let tenant = self.tenant;
        let row = self
            .store
            .row(
                query("SELECT COUNT(*) FROM agents WHERE tenant_id = $1")
                    .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        row.try_get(0)
    }

    /// Deletes an agent's row and everything stored under it; returns what was deleted.
    pub async fn delete(self, handle: &str) -> Result<Agent> {
        let tenant = self.tenant;
        let agent = self.store.agents(tenant).get(handle).await?;
        let id = agent.id;
        let handle = handle.to_owned();
        let now = self.store.now().as_millis();
        let audit = self.store.admin_record(
            tenant,
            Some(id),
            AuditKind::AgentDeleted,
            serde_json::json!({ "handle": handle }),
        );
        let at = self.store.now();
        self.store.write(move |conn| {
            let audit = audit.clone();
            let handle = handle.clone();
            Box::pin(async move {
                crate::access::append_audit(conn, &audit, at).await?;
                let id = id.as_bytes().to_vec();
                // Its grants and pending approvals stay on record (the audit chain names them)
                // but are dead: a new agent with the same handle inherits nothing, and a grant
                // delegated from one of them dies with it.
                query(
                    "UPDATE grants SET revoked_at = $2 WHERE tenant_id = $3 AND agent_id = $1 \
                     AND revoked_at IS NULL",
                )
                .bind(id.clone())
                .bind(now)
                .bind(tenant.as_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
                query(
                    "UPDATE approvals SET status = 'cancelled', decided_at = $2, \
                     decided_by = 'agent deleted', note = 'its agent was deleted' \
                     WHERE tenant_id = $3 AND agent_id = $1 AND status = 'pending'",
                )
                .bind(id.clone())
                .bind(now)
                .bind(tenant.as_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
                // Leases of the agent, or of one of its sessions, end with it.
                query(
                    "UPDATE peer_leases SET ended_at = $2, ended_why = 'agent deleted' \
                     WHERE ended_at IS NULL AND (agent_id = $1 OR session_id IN \
                     (SELECT id FROM sessions WHERE agent_id = $1))",
                )
                .bind(id.clone())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                query(crate::turns::REMEMBER_OUTBOX_IDS).execute(&mut *conn).await?;
                for table in [
                    "DELETE FROM secrets WHERE agent_id = $1",
                    "DELETE FROM model_usage WHERE agent_id = $1",
                    "DELETE FROM job_runs WHERE job_id IN (SELECT id FROM jobs WHERE agent_id = $1)",
                    "DELETE FROM jobs WHERE agent_id = $1",
                    "DELETE FROM agent_settings WHERE agent_id = $1",
                    "DELETE FROM memory_links WHERE agent_id = $1",
                    "DELETE FROM memories WHERE agent_id = $1",
                    "DELETE FROM memory_upkeep WHERE agent_id = $1",
                    "DELETE FROM session_summaries WHERE agent_id = $1",
                    "DELETE FROM working_memory WHERE agent_id = $1",
                    "DELETE FROM agent_messages WHERE from_agent = $1 OR to_agent = $1",
                    "DELETE FROM pauses WHERE agent_id = $1",
                    "DELETE FROM topic_subscriptions WHERE agent_id = $1",
                    "DELETE FROM agent_lineage WHERE child_id = $1 OR parent_id = $1",
                    "DELETE FROM forks WHERE agent_id = $1",
                    "DELETE FROM execution_steps WHERE execution_id IN (SELECT id FROM executions WHERE agent_id = $1)",
                    "DELETE FROM executions WHERE agent_id = $1",
                    "DELETE FROM outbox WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = $1)",
                    "DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = $1)",
                    "DELETE FROM sessions WHERE agent_id = $1",
                ] {
                    query(table).bind(id.clone()).execute(&mut *conn).await?;
                }
                let deleted = query("DELETE FROM agents WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                if deleted == 0 {
                    return Err(Error::AgentNotFound(handle));
                }
                Ok(())
            })
        })
        .await?;
        Ok(agent)
    }
}

/// The gateway's tenants: created, read and deleted with everything they own.
#[derive(Clone, Copy)]
pub struct Tenants<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The tenants.
    pub fn tenants(&self) -> Tenants<'_> {
        Tenants { store: self }
    }
}

impl Tenants<'_> {
    pub async fn create(self, name: &str) -> Result<Tenant> {
        let name = Handle::parse(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let now = self.store.now();
        let tenant = Tenant { id: TenantId::generate(now), name, created_at: now };
        let row = tenant.clone();
        let audit = self.store.admin_record(
            tenant.id,
            None,
            AuditKind::TenantCreated,
            serde_json::json!({ "tenant": tenant.name.as_str() }),
        );
        self.store
            .write(move |conn| {
                let audit = audit.clone();
                let row = row.clone();
                Box::pin(async move {
                    query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                        .bind(row.id.as_bytes().to_vec())
                        .bind(row.name.to_string())
                        .bind(row.created_at.as_millis())
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| {
                            if e.is_unique_violation() {
                                Error::TenantExists(row.name.to_string())
                            } else {
                                e
                            }
                        })?;
                    crate::access::append_audit(conn, &audit, now).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(tenant)
    }

    pub async fn named(self, name: &str) -> Result<Tenant> {
        let row = self
            .store
            .maybe_row(query("SELECT id, name, created_at FROM tenants WHERE name = $1").bind(name))
            .await?;
        row.as_ref()
            .map(tenant_from_row)
            .transpose()?
            .ok_or_else(|| Error::TenantNotFound(name.into()))
    }

    pub async fn by_id(self, id: TenantId) -> Result<Tenant> {
        let row = self
            .store
            .maybe_row(
                query("SELECT id, name, created_at FROM tenants WHERE id = $1")
                    .bind(id.as_bytes().to_vec()),
            )
            .await?;
        row.as_ref()
            .map(tenant_from_row)
            .transpose()?
            .ok_or_else(|| Error::TenantNotFound(id.to_string()))
    }

    pub async fn list(self) -> Result<Vec<Tenant>> {
        let rows = self
            .store
            .rows(query("SELECT id, name, created_at FROM tenants ORDER BY name"))
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Deletes a tenant with all its agents, tokens and secrets; returns the ids of the deleted
    /// agents so their workspaces can be removed.
    pub async fn delete(self, name: &str) -> Result<Vec<AgentId>> {
        if name == Tenant::DEFAULT_NAME {
            return Err(Error::DefaultTenant);
        }
        let tenant = self.store.tenants().named(name).await?;
        // The tenant's own chain goes with it: the operator's (the default tenant's) keeps it.
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let audit = self.store.admin_record(
            operator.id,
            None,
            AuditKind::TenantDeleted,
            serde_json::json!({ "tenant": tenant.name.as_str(), "id": tenant.id.to_string() }),
        );
        let now = self.store.now();
        self.store.write(move |conn| {
            let audit = audit.clone();
            Box::pin(async move {
                crate::access::append_audit(conn, &audit, now).await?;
                let id = tenant.id.as_bytes().to_vec();
                let rows = query("SELECT id FROM agents WHERE tenant_id = $1")
                    .bind(id.clone())
                    .fetch_all(&mut *conn)
                    .await?;
                let agents = rows
                    .iter()
                    .map(|r| id_bytes(r, "id").map(AgentId::from_bytes))
                    .collect::<Result<Vec<_>>>()?;
                // Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite only
                // honours when foreign keys are enabled on that connection.
                query(crate::turns::REMEMBER_OUTBOX_IDS).execute(&mut *conn).await?;
                for table in [
                    "DELETE FROM model_usage WHERE tenant_id = $1",
                    "DELETE FROM job_runs WHERE job_id IN (SELECT id FROM jobs WHERE tenant_id = $1)",
                    "DELETE FROM jobs WHERE tenant_id = $1",
                    "DELETE FROM agent_settings WHERE tenant_id = $1",
                    "DELETE FROM memory_links WHERE tenant_id = $1",
                    "DELETE FROM memories WHERE tenant_id = $1",
                    "DELETE FROM memory_upkeep WHERE tenant_id = $1",
                    "DELETE FROM session_summaries WHERE tenant_id = $1",
                    "DELETE FROM working_memory WHERE tenant_id = $1",
                    "DELETE FROM agent_messages WHERE tenant_id = $1",
                    "DELETE FROM pauses WHERE tenant_id = $1",
                    "DELETE FROM topic_subscriptions WHERE tenant_id = $1",
                    "DELETE FROM agent_lineage WHERE tenant_id = $1",
                    "DELETE FROM forks WHERE tenant_id = $1",
                    "DELETE FROM peer_leases WHERE tenant_id = $1",
                    "DELETE FROM execution_steps WHERE execution_id IN (SELECT id FROM executions WHERE tenant_id = $1)",
                    "DELETE FROM executions WHERE tenant_id = $1",
                    "DELETE FROM outbox WHERE tenant_id = $1",
                    "DELETE FROM events WHERE tenant_id = $1",
                    "DELETE FROM sessions WHERE tenant_id = $1",
                    "DELETE FROM secrets WHERE agent_id IN (SELECT id FROM agents WHERE tenant_id = $1)",
                    "DELETE FROM agents WHERE tenant_id = $1",
                    "DELETE FROM api_tokens WHERE tenant_id = $1",
                    "DELETE FROM tenants WHERE id = $1",
                ] {
                    query(table).bind(id.clone()).execute(&mut *conn).await?;
                }
                Ok(agents)
            })
        })
        .await
    }
}

/// Budget counters, one per (scope, period, unit): reserved all-or-nothing, then settled.
#[derive(Clone, Copy)]
pub struct Budgets<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The budget counters.
    pub fn budgets(&self) -> Budgets<'_> {
        Budgets { store: self }
    }
}

impl Budgets<'_> {
    /// Reserves `amount` on every counter, all or none: a counter that would go over its limit
    /// refuses the whole reservation with [`Error::BudgetExceeded`] naming it.
    pub async fn reserve(self, counters: Vec<BudgetCounter>) -> Result<()> {
        self.store.write(move |conn| {
            let counters = counters.clone();
            Box::pin(async move {
                for c in &counters {
                    query(
                        "INSERT INTO budget_counters (scope, period, unit, spent, reserved) VALUES ($1, $2, $3, 0, 0) \
                         ON CONFLICT (scope, period, unit) DO NOTHING",
                    )
                    .bind(c.scope.clone())
                    .bind(c.period.clone())
                    .bind(c.unit.clone())
                    .execute(&mut *conn)
                    .await?;
                    let done = query(
                        "UPDATE budget_counters SET reserved = reserved + $4 \
                         WHERE scope = $1 AND period = $2 AND unit = $3 AND spent + reserved + $4 <= $5",
                    )
                    .bind(c.scope.clone())
                    .bind(c.period.clone())
                    .bind(c.unit.clone())
                    .bind(to_i64(c.amount))
                    .bind(to_i64(c.limit))
                    .execute(&mut *conn)
                    .await?;
                    if done == 0 {
                        // The savepoint of this write rolls back the counters already raised.
                        return Err(Error::BudgetExceeded(c.label.clone()));
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// Releases reservations and adds what was really spent.
    pub async fn settle(self, settlements: Vec<BudgetSettlement>) -> Result<()> {
        self.store.write(move |conn| {
            let settlements = settlements.clone();
            Box::pin(async move {
                for s in &settlements {
                    query(
                        "UPDATE budget_counters SET reserved = CASE WHEN reserved >= $4 THEN reserved - $4 ELSE 0 END, \
                         spent = spent + $5 WHERE scope = $1 AND period = $2 AND unit = $3",
                    )
                    .bind(s.scope.clone())
                    .bind(s.period.clone())
                    .bind(s.unit.clone())
                    .bind(to_i64(s.reserved))
                    .bind(to_i64(s.spent))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// `(spent, reserved)` of one counter.
    pub async fn counter(self, scope: &str, period: &str, unit: &str) -> Result<(u64, u64)> {
        let row = self.store.maybe_row(query("SELECT spent, reserved FROM budget_counters WHERE scope = $1 AND period = $2 AND unit = $3")
            .bind(scope)
            .bind(period)
            .bind(unit)).await?;
        Ok(match row {
            Some(row) => (
                u64::try_from(row.try_get::<i64, _>("spent")?).unwrap_or(0),
                u64::try_from(row.try_get::<i64, _>("reserved")?).unwrap_or(0),
            ),
            None => (0, 0),
        })
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

/// Agents' stored secrets as rows, already encrypted: listed by name, removed and counted.
/// [`crate::Secrets`] seals and opens their values.
#[derive(Clone, Copy)]
pub struct SecretRows<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The stored secrets' rows, already encrypted ([`crate::Secrets`] encrypts and opens them).
    pub(crate) fn secret_rows(&self) -> SecretRows<'_> {
        SecretRows { store: self }
    }
}

impl SecretRows<'_> {
    pub async fn of_agent(self, agent: AgentId) -> Result<Vec<SecretInfo>> {
        let rows = self.store.rows(query(
            "SELECT name, created_at, updated_at FROM secrets WHERE agent_id = $1 ORDER BY name",
        )
        .bind(agent.as_bytes().to_vec())).await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                Ok(SecretInfo {
                    name: SecretName::parse(&name).map_err(|e| Error::BadRow(e.to_string()))?,
                    created_at: Timestamp::from_millis(row.try_get("created_at")?),
                    updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }

    pub async fn delete(self, agent: AgentId, name: &SecretName) -> Result<()> {
        let name = name.to_string();
        let (actor, at) = (self.store.actor.clone(), self.store.now());
        self.store
            .write(move |conn| {
                let actor = actor.clone();
                let name = name.clone();
                Box::pin(async move {
                    secret_audit(conn, &actor, agent, AuditKind::SecretRemoved, &name, at).await?;
                    let done = query("DELETE FROM secrets WHERE agent_id = $1 AND name = $2")
                        .bind(agent.as_bytes().to_vec())
                        .bind(name.clone())
                        .execute(&mut *conn)
                        .await?;
                    if done == 0 {
                        return Err(Error::SecretNotFound(name));
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Number of stored secrets across all tenants (to detect a lost master key).
    pub async fn count(self) -> Result<i64> {
        let row = self.store.row(query("SELECT COUNT(*) FROM secrets")).await?;
        row.try_get(0)
    }
}

/// One tenant's model usage, summed, and the bytes its rows hold.
#[derive(Clone, Copy)]
pub struct Usage<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s model usage and stored bytes.
    pub fn usage(&self, tenant: TenantId) -> Usage<'_> {
        Usage { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's model usage and stored bytes.
    pub fn usage(&self) -> Usage<'_> {
        self.store().usage(self.tenant())
    }
}

impl Usage<'_> {
    /// Bytes of conversation the store holds for `tenant`: event texts, lifecycle events, and
    /// executions (turns among them) with their inputs, outputs, errors and steps (the
    /// payloads, not the indexes or row overhead). Reads every such row of the tenant: meant for a quota
    /// check every few seconds, not for every request.
    pub async fn stored_bytes(self) -> Result<u64> {
        let tenant = self.tenant;
        let rows = self.store.rows(query(STORED_BYTES).bind(tenant.as_bytes().to_vec())).await?;
        let bytes = match rows.first() {
            Some(row) => row.try_get::<i64, _>(0)?,
            None => 0,
        };
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Usage of a tenant since `since`, summed per agent and model ([`USAGE_SUMMARY`]).
    pub async fn summary(
        self,
        agent: Option<AgentId>,
        since: Timestamp,
    ) -> Result<Vec<UsageSummary>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(USAGE_SUMMARY)
                    .bind(tenant.as_bytes().to_vec())
                    .bind(since.as_millis())
                    .bind(agent.map(|a| a.as_bytes().to_vec())),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let sum =
                    |col: &str| row.try_get::<i64, _>(col).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(UsageSummary {
                    agent: row.try_get::<Option<String>, _>("handle")?,
                    model: row.try_get("model")?,
                    calls: sum("calls")?,
                    input_tokens: sum("input")?,
                    output_tokens: sum("output")?,
                    cached_tokens: sum("cached")?,
                    cache_write_tokens: sum("cache_write")?,
                    cost_micros: sum("cost")?,
                })
            })
            .collect()
    }
}
