//! Clade's state: storage over SQLite (embedded default) or PostgreSQL, and the data dir.
//!
//! Owns the schema and its migrations, the group-commit write path, tenants, agents, API
//! tokens, encrypted secrets, and the on-disk layout of the data dir (workspaces, key and
//! token files). It knows nothing of HTTP, the CLI or models; the runtime reaches it only
//! through [`Store`] and [`Agents`], never through a backend type. Reads that cross tenants
//! need a [`SystemStore`]; the API edge holds a [`TenantStore`], bound to one tenant.
//!
//! Start at [`store::Store`], then [`writer`] for how concurrent writes share a commit, and
//! `db` for the one statement API over both drivers (sqlx for PostgreSQL, rusqlite for
//! SQLite, which runs without a thread hop per statement).

pub mod access;
pub mod agent_archive;
pub mod agents;
pub mod backend;
pub mod channel_chats;
pub mod checksums;
pub mod config_revisions;
mod crypto;
pub mod datadir;
mod db;
pub mod debugging;
pub mod error;
pub mod executions;
pub mod flows;
pub mod forks;
mod horizon;
pub mod host_calls;
pub mod jobs;
pub mod leases;
pub mod lineage;
pub mod memories;
pub mod memory_transfer;
pub mod memory_upkeep;
pub mod messages;
mod migrate;
pub mod owner;
mod paced;
pub mod pauses;
pub mod peer_leases;
pub mod peers;
pub mod retention;
pub mod scoped;
pub mod secrets;
pub mod settings;
pub mod store;
pub mod summaries;
pub mod turns;
pub mod work;
pub mod working;
pub mod writer;

pub use access::Access;
pub use access::{
    ApprovalDecision, ApprovalRow, ApprovalStatus, AuditEntry, AuditFilter, AuditRow,
    AuditVerification, GrantRow, NewApproval, NewGrant,
};
pub use agents::{Agents, Workspaces};
pub use backend::{Backend, Durability, Location};
pub use channel_chats::ChatSeen;
pub use checksums::{PageChecksums, Rewritten};
pub use config_revisions::ConfigRevisions;
pub use config_revisions::{ConfigRevision, NewConfigRevision};
pub use crypto::MasterKey;
pub use datadir::DataDir;
pub use debugging::Debugging;
pub use debugging::{BreakpointRow, NewBreakpoint, NewStop, StopDecision, StopRow};
pub use error::{Error, Result};
pub use executions::Executions;
pub use executions::{ExecutionOwner, ExecutionRow, ExecutionStep, ExecutionWrites, NewExecution};
pub use flows::{FlowVersion, Saved as SavedFlow, StoredFlows};
pub use forks::Forks;
pub use forks::{ForkRow, ForkSettled, Forked, NewFork, RunFilter, fork_kind_of};
pub use host_calls::HostCalls;
pub use jobs::Jobs;
pub use jobs::{
    FireDelivery, JobRow, JobRun, JobTarget, JobWrites, NewJob, RunOutcome, Settled, Settlement,
    fire_execution_id, refuses_envelope,
};
pub use leases::{Lease, LeaseRow, ShardLeases};
pub use lineage::Lineage;
pub use memories::{
    LinkRow, Memories, MemoryFilter, MemoryRow, MemoryUpdate, NewMemory, Provenance,
};
pub use memory_transfer::{Imported, MemoryRecord};
pub use memory_upkeep::MemoryUpkeep;
pub use memory_upkeep::{Pruned, UpkeepDue, Vitals, VitalsPage};
pub use messages::Messages;
pub use messages::{Delivered, MessageRow, NewMessage};
pub use migrate::{MigrationReport, Migrations, SCHEMA_VERSION};
pub use owner::OwnerLock;
pub use pauses::Pauses;
pub use pauses::{PauseRow, SessionActivity};
pub use peer_leases::PeerLeases;
pub use peers::Peers;
pub use peers::{NewPeer, PeerRow};
pub use scoped::{SystemStore, TenantStore};
pub use secrets::Secrets;
pub use settings::AgentSettings;
pub use settings::SettingRow;
pub use store::{
    BudgetCounter, BudgetSettlement, LeasedSession, NewAgent, SecretInfo, Store, StoreOptions,
    TOKEN_PREFIX, TokenAccess, TokenInfo, UsageBy, UsageRecord, UsageSummary,
};
pub use store::{Budgets, Meta, SecretRows, TenantAgents, Tenants, Tokens, Usage};
pub use summaries::{NewSummary, PastTurn, SessionSummary};
pub use turns::{
    Accepted, DeadLetter, EventRow, GivenUp, HistoryFilter, JournalEntry, NewEvent, OpenEvents,
    OutboxEvent, OutboxRow, SessionCursor, SessionRow, Source, TurnOutcome, TurnRecord, TurnRow,
    TurnUsage, TurnWrites,
};
pub use turns::{Deliveries, Sessions, Turns};
pub use work::Work;
pub use working::Working;
pub use working::WorkingEntry;
pub use writer::{DiskFaults, Durations, SyncHold, WriteStats};
