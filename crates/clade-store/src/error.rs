//! Everything that can go wrong below the store's API, phrased for the person who must fix it.

use std::path::PathBuf;

use clade_core::Handle;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tenant {0:?} not found")]
    TenantNotFound(String),
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    #[error("agent {0:?} not found")]
    AgentNotFound(String),
    #[error("an agent with handle \"{0}\" already exists in this tenant: choose another handle")]
    HandleTaken(Handle),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("token {0} not found or already revoked")]
    TokenNotFound(String),
    #[error("invalid or revoked API token")]
    BadToken,
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    BudgetExceeded(String),
    #[error(
        "idempotency key {0:?} was already used with a different payload: use a new key for a new event"
    )]
    IdempotencyConflict(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error(
        "the agent holds {held} memory items, the most this deployment allows (memory.max_items_per_agent): forget some, or ask the operator to raise the limit"
    )]
    MemoryFull { held: u64 },
    #[error("session has {pending} events waiting: retry later")]
    SessionBusy { pending: u64 },
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("event {0} not found")]
    EventNotFound(String),
    #[error("turn {0} not found")]
    TurnNotFound(String),
    #[error(
        "this node's lease on its sessions was taken by another (epoch {current}, this node \
         held {held}): it writes no more turns"
    )]
    Fenced { held: i64, current: i64 },
    #[error("grant {0} not found")]
    GrantNotFound(String),
    #[error("approval {0} not found")]
    ApprovalNotFound(String),
    #[error("approval {id} was already decided ({status}); nothing changed")]
    ApprovalDecided { id: String, status: String },
    #[error("breakpoint {0} not found")]
    BreakpointNotFound(String),
    #[error("stop {0} not found")]
    StopNotFound(String),
    #[error("stop {id} was already told what to do ({action}); nothing changed")]
    StopDecided { id: String, action: String },
    #[error(
        "stop {0} waits no more: its turn ended (cancelled, timed out, or its agent deleted); nothing changed"
    )]
    StopEnded(String),
    #[error("the default tenant cannot be deleted")]
    DefaultTenant,
    #[error("execution {0} not found")]
    ExecutionNotFound(String),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("configuration revision {0} not found")]
    ConfigRevisionNotFound(i64),
    /// No stored flow of that name (or not at that version).
    #[error("no stored flow {0}")]
    FlowNotFound(String),
    #[error("no peer named {0:?} is paired")]
    PeerNotFound(String),
    /// No paired component of the kind a lease names (`subscriber`, or an operator paired
    /// for leases) may take it for `what` (a tenant's or an agent's events).
    #[error(
        "peer: no {} named {peer:?} may receive {what}",
        if kind == crate::peers::SUBSCRIBER { "paired subscriber" } else { "operator paired for leases" }
    )]
    LeaseeNotFound { kind: String, peer: String, what: String },
    #[error("lease {0} not found")]
    LeaseNotFound(String),
    #[error("invalid lease: {0}")]
    InvalidLease(String),
    #[error("setting {0:?} is not stored for this agent")]
    SettingNotFound(String),
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error("memory {0} does not exist for this agent")]
    MemoryNotFound(String),
    #[error("invalid memory: {0}")]
    InvalidMemory(String),
    #[error("a job named {0:?} already exists for this agent")]
    JobExists(String),
    #[error("execution {id} has ended ({status}); nothing changed")]
    ExecutionEnded { id: String, status: clade_core::ExecutionStatus },
    #[error(
        "execution {id} did not replay as it first ran: its step {seq} is {recorded:?}, now {now:?}"
    )]
    StepDiverged { id: String, seq: u32, recorded: String, now: String },

    #[error(
        "the database at {location} has schema version {found}, newer than this build supports \
         ({supported})"
    )]
    NewerSchema { location: String, found: i64, supported: i64 },
    #[error(
        "the database at {location} has schema version {found}; this build needs {expected} and \
         was not allowed to migrate it"
    )]
    NeedsMigration { location: String, found: i64, expected: i64 },
    #[error(
        "the database at {location} is corrupted or not a Clade database ({detail}): restore it \
         from a backup or move it aside to start fresh"
    )]
    Corrupt { location: String, detail: String },
    #[error(
        "cannot reach the database at {location}: {detail}; check that the server is running \
         and the URL is right"
    )]
    Unreachable { location: String, detail: String },
    #[error(
        "the database at {location} does not have the required durability setting \
         ({setting} = {found}, expected {expected})"
    )]
    Durability { location: String, setting: &'static str, found: String, expected: String },
    #[error(
        "the store at {location} is already served by {holder}: stop that server first, or use \
         another store"
    )]
    InUse { location: String, holder: String },
    #[error(
        "the database file {path} exists but is empty (0 bytes): it was truncated, or its \
         creation was interrupted; restore it from a backup, or delete it to start a new, empty \
         store"
    )]
    EmptyDatabase { path: PathBuf },
    #[error("adding page checksums to {path} was interrupted and is not finished")]
    ChecksumsInterrupted { path: PathBuf },
    #[error(
        "a page of the database at {location}{} does not match its checksum: the file was \
         damaged on disk or changed outside Clade",
        page.map_or(String::new(), |page| format!(" (page {page})"))
    )]
    ChecksumMismatch { location: String, page: Option<u64> },
    #[error(
        "cannot open the SQLite database {path} ({detail}): check that its directory exists and \
         is writable by this user"
    )]
    CannotOpen { path: PathBuf, detail: String },
    #[error("unsupported store URL {0:?}: use sqlite://<path> or postgres://user@host/db")]
    BadUrl(String),

    #[error("data dir {path} is not usable ({source}): fix its permissions or use another")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Import(String),
    /// An archive's header names another format (`clade.memory` is a memory export).
    #[error(
        "this is not an agent archive (format {format:?}, not {:?})",
        crate::agent_archive::FORMAT
    )]
    NotAnAgentArchive { format: String },
    /// The store holds the archive's agent already, under `held`.
    #[error(
        "this store holds the archive's agent already (as {held:?}, id {agent}): an archive \
         brings an agent to a store without it"
    )]
    ArchivedAgentHeld { held: String, agent: String },
    #[error(
        "template {0:?} not found: use the built-in \"default\" template or create \
         <data-dir>/templates/{0}/ with SOUL.md, IDENTITY.md and USER.md"
    )]
    TemplateNotFound(String),

    #[error(
        "master key missing: {secrets} encrypted secret(s) exist but {path} is gone and no key \
         was given; restore the key file"
    )]
    MasterKeyMissing { secrets: i64, path: PathBuf },
    #[error(
        "the master key does not match the one these secrets were encrypted with: restore the \
         original {path}"
    )]
    WrongMasterKey { path: PathBuf },
    #[error("invalid master key: {0}")]
    BadMasterKey(String),
    #[error("secret {0:?} cannot be decrypted: its stored value was altered or the key is wrong")]
    Decrypt(String),

    #[error("commit failed ({0}); nothing was written, retry the operation")]
    CommitFailed(String),
    #[error("the store's writer has stopped; restart the process")]
    WriterGone,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored row is invalid: {0}")]
    BadRow(String),
}

impl clade_core::Fault for Error {
    /// The store's own failures: its database, disk, keys and rows. The rest (not found,
    /// already exists, invalid input, limits, conflicts) are the caller's to act on.
    fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Fenced { .. }
                | Error::StepDiverged { .. }
                | Error::NewerSchema { .. }
                | Error::NeedsMigration { .. }
                | Error::Corrupt { .. }
                | Error::Unreachable { .. }
                | Error::Durability { .. }
                | Error::InUse { .. }
                | Error::EmptyDatabase { .. }
                | Error::ChecksumsInterrupted { .. }
                | Error::ChecksumMismatch { .. }
                | Error::CannotOpen { .. }
                | Error::BadUrl(_)
                | Error::DataDir { .. }
                | Error::Io { .. }
                | Error::MasterKeyMissing { .. }
                | Error::WrongMasterKey { .. }
                | Error::BadMasterKey(_)
                | Error::Decrypt(_)
                | Error::CommitFailed(_)
                | Error::WriterGone
                | Error::Database(_)
                | Error::Sqlite(_)
                | Error::BadRow(_)
        )
    }
}

impl Error {
    /// Whether the database aborted the transaction this came from without changing anything,
    /// so that running it again may succeed: PostgreSQL's serialization failure (`40001`) and
    /// deadlock victim (`40P01`). The store's writer runs such a write again itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }

    /// Whether a unique or primary-key constraint refused the write (on either driver).
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => {
                db.kind() == sqlx::error::ErrorKind::UniqueViolation
            }
            Error::Sqlite(rusqlite::Error::SqliteFailure(err, _)) => matches!(
                err.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }

    /// Whether a foreign-key constraint refused the write (on either driver).
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => {
                db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
            }
            Error::Sqlite(rusqlite::Error::SqliteFailure(err, _)) => {
                err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
            }
            _ => false,
        }
    }

    /// Whether the caller can fix this by changing their request (as opposed to an operator or
    /// infrastructure problem).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::TenantNotFound(_)
                | Error::AgentNotFound(_)
                | Error::SecretNotFound(_)
                | Error::TokenNotFound(_)
                | Error::SessionNotFound(_)
                | Error::EventNotFound(_)
                | Error::TurnNotFound(_)
                | Error::GrantNotFound(_)
                | Error::ApprovalNotFound(_)
                | Error::BreakpointNotFound(_)
                | Error::StopNotFound(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
