//! A whole agent as one file, to move it between data dirs and backends: its workspace (persona
//! files and whatever it wrote there), its settings and grants, its sessions with their events,
//! executions and journals, working memory and summaries, its long-term memory, jobs, pauses,
//! approvals and spending records, and its secrets sealed under a key of the archive's own.
//!
//! The format is JSON Lines: a header naming the agent and the columns of every table as this
//! build reads them, then files (in chunks), rows and secrets, and an end line with the counts
//! and a SHA-256 of everything before it, so a cut or altered file is refused. Rows keep their
//! ids, so an execution that was in flight when the archive was written resumes where its
//! journal stopped once a gateway serves the store it was imported into; only the tenant
//! changes, to the one imported into.
//!
//! An archive is untrusted input. An import reads and checks all of it before it writes: every
//! row must belong to the archive's agent (its id, or a session, execution, job or memory item
//! the archive itself brings), tenant ids are replaced rather than believed, and values the
//! store derives (the memory index's owner token) are derived again. Everything is written in
//! one transaction; the workspace is staged out of sight and published once the rows commit.
//!
//! What stays behind: the tenant's audit chain (the import is recorded in the target's), the
//! event stream already delivered (outbox), the records linking it to other agents (its
//! parent, its children, replies owed between agents), and budgets' running counters.

use std::collections::BTreeMap;
use std::io::Write;

use clade_core::{Agent, Handle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod export;
mod import;
mod tables;

pub use export::export;
pub use import::import;
use tables::*;

/// What the header names the format.
pub const FORMAT: &str = "clade.agent";

/// The format's version this build writes and reads.
pub const VERSION: u32 = 1;

/// Rows read per query while exporting.
const PAGE: i64 = 1000;

/// Bytes of a file per chunk line.
const CHUNK: usize = 768 * 1024;

/// The longest line read: a chunk in base64, or a row with a 4 KiB text and a large embedding.
const MAX_LINE: u64 = 4 * 1024 * 1024;

/// The most a workspace may hold, in bytes.
const MAX_FILES_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Associated data of a secret sealed into an archive.
const SECRET_CONTEXT: &str = "clade.agent archive secret/";

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header {
        format: String,
        version: u32,
        /// The agent's id and handle, and the tenant it was exported from (names only).
        agent: String,
        handle: String,
        tenant: String,
        exported_at: i64,
        /// Every table's columns, in the order its rows list their values.
        tables: BTreeMap<String, Vec<String>>,
    },
    /// A file of the workspace; its bytes follow in `chunk` lines.
    File {
        path: String,
        size: u64,
        #[serde(default)]
        executable: bool,
    },
    Chunk {
        data: String,
    },
    Row {
        table: String,
        values: Vec<serde_json::Value>,
    },
    /// A secret sealed with the archive's own key (AES-256-GCM).
    Secret {
        name: String,
        nonce: String,
        ciphertext: String,
    },
    End {
        files: u64,
        rows: BTreeMap<String, u64>,
        secrets: u64,
        /// SHA-256 of every line before this one, newlines included.
        sha256: String,
        /// Who vouches for the archive: a signature of `sha256` (so of everything before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<ArchiveSignature>,
    },
}

/// A signature of an archive's checksum, by the key that made it (the exporting gateway's
/// identity key). What the keys are and how a signature is checked is the caller's: the store
/// only carries it and asks [`ImportOptions::verify`] before it writes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSignature {
    /// The public key, as its owner spells it.
    pub key: String,
    pub value: String,
}

/// Why an import does not trust an archive, as the user is to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted(pub String);

/// Checks an archive's checksum and signature (none when unsigned) before an import writes
/// anything; an `Err` refuses the import with its reason.
pub type VerifyArchive = std::sync::Arc<
    dyn Fn(&str, Option<&ArchiveSignature>) -> std::result::Result<(), Untrusted> + Send + Sync,
>;

/// One grant an archive brings, as an import's [`ImportOptions::admit`] sees it.
#[derive(Debug, Clone)]
pub struct ArchivedGrant {
    pub effect: String,
    pub tool: String,
    pub resource: String,
    /// Its constraints, as stored (JSON).
    pub constraints: String,
}

/// A row an archive brings that the importing side polices, as [`ImportOptions::admit`] asks
/// of it: what an agent holds there that its tenant's limits bound.
#[derive(Debug, Clone)]
pub enum Archived<'a> {
    /// A live grant (revoked ones come in as they are).
    Grant(&'a ArchivedGrant),
    /// A job of the agent imported as `handle`, and how many of the archive's jobs were
    /// admitted before it.
    Job { handle: &'a str, name: &'a str, schedule: &'a str, zone: &'a str, admitted: usize },
    /// A stored setting.
    Setting { key: &'a str },
}

/// Why a row an archive brings is not imported; `None` admits it.
pub type Admit = std::sync::Arc<dyn Fn(&Archived<'_>) -> Option<String> + Send + Sync>;

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub agent: String,
    pub files: u64,
    pub file_bytes: u64,
    /// Rows per table, in the archive's order.
    pub rows: Vec<(String, u64)>,
    pub secrets: u64,
    /// The key the secrets are sealed with (64 hexadecimal characters), to give to the import;
    /// none when the archive holds no secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_key: Option<String>,
    /// Links in the workspace, left out (an archive carries files, not what links point at).
    pub skipped_links: Vec<String>,
}

/// How to import.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// The handle to give it instead of the archive's.
    pub handle: Option<Handle>,
    /// The key the export printed, to open its secrets.
    pub secrets_key: Option<String>,
    /// Import without the secrets (they must then be set again).
    pub without_secrets: bool,
    /// Asked, once the archive is read and its checksum holds, whether its signature does.
    pub verify: Option<VerifyArchive>,
    /// Asked of each live grant, job and setting the archive brings; one it refuses stays out
    /// (a job with its run history), and the report says why.
    pub admit: Option<Admit>,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("handle", &self.handle)
            .field("secrets_key", &self.secrets_key.as_ref().map(|_| ".."))
            .field("without_secrets", &self.without_secrets)
            .field("verify", &self.verify.is_some())
            .field("admit", &self.admit.is_some())
            .finish()
    }
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub agent: Agent,
    pub files: u64,
    pub file_bytes: u64,
    pub rows: Vec<(String, u64)>,
    pub secrets: u64,
    /// Executions that had not ended: a gateway serving this store resumes them.
    pub unfinished: u64,
    /// The grants it brings, as `effect tool resource`.
    pub grants: Vec<String>,
    /// Grants it holds through another agent's (delegated), not in force here until granted
    /// again, since that agent did not come along.
    pub orphaned_grants: u64,
    /// Grants left out ([`ImportOptions::admit`]), as `effect tool resource: why`.
    pub dropped_grants: Vec<String>,
    /// Jobs left out, as `name: why`.
    pub dropped_jobs: Vec<String>,
    /// Stored settings left out, as `key: why`.
    pub dropped_settings: Vec<String>,
    /// Sessions with messages waiting or a turn under way: a gateway serving this store runs
    /// them once woken (at its start, or told).
    pub waiting_sessions: Vec<clade_core::SessionId>,
}

/// Something to tell the user while a long export or import runs.
#[derive(Debug, Clone)]
pub enum Progress {
    Files { files: u64, bytes: u64 },
    Table { table: &'static str, rows: u64 },
    Secrets { secrets: u64 },
}

/// A writer that hashes what it writes.
struct Hashing<'w> {
    out: &'w mut dyn Write,
    digest: Sha256,
}

impl Hashing<'_> {
    fn line(&mut self, line: &Line) -> Result<()> {
        let mut bytes = serde_json::to_vec(line)
            .map_err(|e| Error::Import(format!("cannot encode the archive: {e}")))?;
        bytes.push(b'\n');
        self.digest.update(&bytes);
        self.out
            .write_all(&bytes)
            .map_err(|e| Error::Import(format!("cannot write the archive: {e}")))
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn secret_context(name: &str) -> String {
    format!("{SECRET_CONTEXT}{name}")
}
