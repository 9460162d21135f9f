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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use clade_core::{Agent, AgentId, AuditKind, Handle, SecretName, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agents::Agents;
use crate::crypto::{MasterKey, Sealed};
use crate::db::{Row, Tx, Value, query};
use crate::error::{Error, Result};
use crate::secrets::Secrets;
use crate::store::Store;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Real,
    Text,
    Blob,
}

/// What a column naming another row may name.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The archive's agent.
    Agent,
    /// A row of that table the archive brings (the first column of its key).
    Table(&'static str),
}

/// One table an agent has rows in.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Selects the agent's rows: `$1` is its id, `$2` its tenant's.
    filter: &'static str,
    /// The order rows are read in, unique per row.
    key: &'static [&'static str],
    /// Columns that must hold the agent's id.
    agent: &'static [&'static str],
    /// Columns that, when not null, must name one of their targets.
    refs: &'static [(&'static str, &'static [Target])],
}

use Kind::{Blob, Int, Real, Text};

const SESSION: &[Target] = &[Target::Table("sessions")];
const EXECUTION: &[Target] = &[Target::Table("executions")];

/// The agent's tables, parents before the rows that name them.
const TABLES: &[Table] = &[
    Table {
        name: "agents",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("handle", Text),
            ("display_name", Text),
            ("created_at", Int),
            ("config", Text),
        ],
        filter: "id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["id"],
        refs: &[],
    },
    Table {
        name: "agent_settings",
        columns: &[
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("key", Text),
            ("value", Text),
            ("updated_at", Int),
            ("updated_by", Text),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["key"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "grants",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("effect", Text),
            ("tool", Text),
            ("resource", Text),
            ("constraints", Text),
            ("parent_id", Blob),
            ("granted_by", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "sessions",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("platform", Text),
            ("channel", Text),
            ("actor", Text),
            ("last_active_channel", Text),
            ("next_seq", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("queue_mode", Text),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "executions",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("kind", Text),
            ("owner_kind", Text),
            ("owner_id", Blob),
            ("status", Text),
            ("input", Text),
            ("output", Text),
            ("error", Text),
            ("model", Text),
            ("config_revision", Int),
            ("model_calls", Int),
            ("input_tokens", Int),
            ("output_tokens", Int),
            ("cost_micros", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("finished_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["agent_id"],
        refs: &[(
            "owner_id",
            &[Target::Agent, Target::Table("sessions"), Target::Table("executions")],
        )],
    },
    Table {
        name: "execution_steps",
        columns: &[
            ("execution_id", Blob),
            ("seq", Int),
            ("step_key", Text),
            ("data", Text),
            ("created_at", Int),
        ],
        filter: "execution_id IN (SELECT id FROM executions WHERE agent_id = $1 AND tenant_id = $2)",
        key: &["execution_id", "seq"],
        agent: &[],
        refs: &[("execution_id", EXECUTION)],
    },
    Table {
        name: "events",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("session_id", Blob),
            ("seq", Int),
            ("idempotency_key", Text),
            ("payload_hash", Text),
            ("text", Text),
            ("status", Text),
            ("turn_id", Blob),
            ("created_at", Int),
        ],
        filter: "session_id IN (SELECT id FROM sessions WHERE agent_id = $1 AND tenant_id = $2)",
        key: &["id"],
        agent: &[],
        refs: &[("session_id", SESSION), ("turn_id", EXECUTION)],
    },
    Table {
        name: "forks",
        columns: &[
            ("session_id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("kind", Text),
            ("parent_session", Blob),
            ("parent_turn", Blob),
            ("forked_seq", Int),
            ("task", Text),
            ("tools", Text),
            ("execution_id", Blob),
            ("progress", Text),
            ("progress_at", Int),
            ("created_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["session_id"],
        agent: &["agent_id"],
        refs: &[
            ("session_id", SESSION),
            ("parent_session", SESSION),
            ("parent_turn", EXECUTION),
            ("execution_id", EXECUTION),
        ],
    },
    Table {
        name: "session_summaries",
        columns: &[
            ("session_id", Blob),
            ("through_turn", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("text", Text),
            ("turns", Int),
            ("model", Text),
            ("memories", Int),
            ("created_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["session_id", "through_turn"],
        agent: &["agent_id"],
        refs: &[("session_id", SESSION)],
    },
    Table {
        name: "working_memory",
        columns: &[
            ("session_id", Blob),
            ("name", Text),
            ("version", Int),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("value", Text),
            ("turn_id", Blob),
            ("created_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["session_id", "name", "version"],
        agent: &["agent_id"],
        refs: &[("session_id", SESSION)],
    },
    Table {
        name: "approvals",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("call_key", Text),
            ("tool", Text),
            ("resource", Text),
            ("arguments", Text),
            ("arguments_hash", Text),
            ("reason", Text),
            ("status", Text),
            ("session_id", Blob),
            ("turn_id", Blob),
            ("created_at", Int),
            ("expires_at", Int),
            ("decided_at", Int),
            ("decided_by", Text),
            ("note", Text),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["agent_id"],
        refs: &[("session_id", SESSION), ("turn_id", EXECUTION)],
    },
    Table {
        name: "pauses",
        columns: &[
            ("target", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("session_id", Blob),
            ("reason", Text),
            ("created_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["target"],
        agent: &["agent_id"],
        refs: &[("target", &[Target::Agent, Target::Table("sessions")]), ("session_id", SESSION)],
    },
    Table {
        name: "memories",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("scope", Text),
            ("owner", Text),
            ("kind", Text),
            ("content", Text),
            ("importance", Real),
            ("confidence", Real),
            ("provenance", Text),
            ("untrusted", Int),
            ("strength", Real),
            ("created_at", Int),
            ("updated_at", Int),
            ("accessed_at", Int),
            ("embedding", Blob),
            ("embedding_model", Text),
            ("pruned_at", Int),
            ("pruned_why", Text),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "memory_links",
        columns: &[
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("from_id", Blob),
            ("to_id", Blob),
            ("kind", Text),
            ("weight", Real),
            ("created_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["from_id", "to_id", "kind"],
        agent: &["agent_id"],
        refs: &[("from_id", &[Target::Table("memories")]), ("to_id", &[Target::Table("memories")])],
    },
    Table {
        name: "memory_upkeep",
        columns: &[
            ("agent_id", Blob),
            ("tenant_id", Blob),
            ("due_at", Int),
            ("written_at", Int),
            ("last_write_at", Int),
            ("ran_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["agent_id"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "jobs",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("name", Text),
            ("schedule", Text),
            ("zone", Text),
            ("misfire", Text),
            ("prompt", Text),
            ("enabled", Int),
            ("settled_at", Int),
            ("next_at", Int),
            ("skipped", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("target", Text),
            ("disabled_reason", Text),
            ("jitter_secs", Int),
            ("enabled_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["id"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "job_runs",
        columns: &[
            ("job_id", Blob),
            ("scheduled_at", Int),
            ("fired_at", Int),
            ("event_id", Blob),
            ("error", Text),
        ],
        filter: "job_id IN (SELECT id FROM jobs WHERE agent_id = $1 AND tenant_id = $2)",
        key: &["job_id", "scheduled_at"],
        agent: &[],
        refs: &[("job_id", &[Target::Table("jobs")])],
    },
    Table {
        name: "topic_subscriptions",
        columns: &[("agent_id", Blob), ("topic", Text), ("tenant_id", Blob), ("created_at", Int)],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["topic"],
        agent: &["agent_id"],
        refs: &[],
    },
    Table {
        name: "model_usage",
        columns: &[
            ("id", Blob),
            ("tenant_id", Blob),
            ("agent_id", Blob),
            ("turn_id", Blob),
            ("model", Text),
            ("input_tokens", Int),
            ("output_tokens", Int),
            ("cached_tokens", Int),
            ("cache_write_tokens", Int),
            ("cost_micros", Int),
            ("created_at", Int),
        ],
        filter: "agent_id = $1 AND tenant_id = $2",
        key: &["created_at", "id"],
        agent: &["agent_id"],
        refs: &[],
    },
];

fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

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

/// Writes `agent` of `agents`' store, with its workspace and secrets, to `out`. The rows are
/// read in one read-only transaction, so they are consistent with each other even while a
/// gateway runs the agent.
pub async fn export(
    agents: &Agents,
    secrets: &Secrets,
    agent: &Agent,
    out: &mut dyn Write,
    sign: Option<&(dyn Fn(&str) -> ArchiveSignature + Sync)>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportReport> {
    let store = agents.store();
    let mut report = ExportReport { agent: agent.handle.to_string(), ..ExportReport::default() };
    let tenant_name = store.tenants().by_id(agent.tenant_id).await?.name.to_string();
    let mut w = Hashing { out, digest: Sha256::new() };
    w.line(&Line::Header {
        format: FORMAT.into(),
        version: VERSION,
        agent: agent.id.to_string(),
        handle: agent.handle.to_string(),
        tenant: tenant_name,
        exported_at: store.now().as_millis(),
        tables: TABLES
            .iter()
            .map(|t| (t.name.to_owned(), t.columns.iter().map(|(c, _)| (*c).to_owned()).collect()))
            .collect(),
    })?;

    // The workspace, as it is on disk (a running agent may be writing it).
    let workspace = agents.workspace_path(agent.id);
    if workspace.is_dir() {
        let mut files = Vec::new();
        walk(&workspace, Path::new(""), &mut files, &mut report.skipped_links)?;
        for (rel, path) in files {
            let file = std::fs::File::open(&path).map_err(|source| Error::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let meta = file.metadata().map_err(|source| Error::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            #[cfg(unix)]
            let executable =
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
            #[cfg(not(unix))]
            let executable = false;
            // The size announced is the size read: a file growing meanwhile is cut at it.
            let size = meta.len();
            w.line(&Line::File { path: rel, size, executable })?;
            let mut reader = file.take(size);
            let mut buf = vec![0u8; CHUNK];
            let mut sent = 0u64;
            while sent < size {
                let n = read_full(&mut reader, &mut buf).map_err(|source| Error::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                })?;
                if n == 0 {
                    return Err(Error::Import(format!(
                        "{} shrank while it was exported: export again once it is left alone",
                        path.display()
                    )));
                }
                w.line(&Line::Chunk { data: b64().encode(&buf[..n]) })?;
                sent += n as u64;
            }
            report.files += 1;
            report.file_bytes += size;
            progress(Progress::Files { files: report.files, bytes: report.file_bytes });
        }
    }

    // The rows, from one snapshot of the store.
    let mut rows_per_table: BTreeMap<String, u64> = BTreeMap::new();
    let mut tx = store.read_snapshot().await?;
    let read = async {
        for table in TABLES {
            let mut count = 0u64;
            let mut after: Option<Vec<Value>> = None;
            loop {
                let page = read_page(&mut tx, table, agent, after.as_deref()).await?;
                let last = page.last().map(|row| key_of(table, row)).transpose()?;
                for row in &page {
                    let values = table
                        .columns
                        .iter()
                        .map(|(column, kind)| cell_to_json(table, row, column, *kind))
                        .collect::<Result<Vec<_>>>()?;
                    w.line(&Line::Row { table: table.name.to_owned(), values })?;
                    count += 1;
                }
                if (page.len() as i64) < PAGE {
                    break;
                }
                after = last;
            }
            progress(Progress::Table { table: table.name, rows: count });
            rows_per_table.insert(table.name.to_owned(), count);
            report.rows.push((table.name.to_owned(), count));
        }
        Ok::<_, Error>(())
    };
    let read = read.await;
    let _ = tx.batch("COMMIT").await;
    read?;

    // The secrets, sealed anew under a key made for this archive.
    let names = secrets.list(agent).await?;
    if !names.is_empty() {
        let key = MasterKey::generate();
        for info in &names {
            let value = secrets.get(agent, &info.name).await?;
            let sealed = key.seal(secret_context(info.name.as_str()).as_bytes(), &value)?;
            w.line(&Line::Secret {
                name: info.name.to_string(),
                nonce: b64().encode(&sealed.nonce),
                ciphertext: b64().encode(&sealed.ciphertext),
            })?;
        }
        report.secrets = names.len() as u64;
        report.secrets_key = Some(key.to_hex());
        progress(Progress::Secrets { secrets: report.secrets });
    }

    let sha256 = hex::encode(w.digest.clone().finalize());
    let signature = sign.map(|sign| sign(&sha256));
    w.line(&Line::End {
        files: report.files,
        rows: rows_per_table,
        secrets: report.secrets,
        sha256,
        signature,
    })?;
    w.out.flush().map_err(|e| Error::Import(format!("cannot write the archive: {e}")))?;
    Ok(report)
}

fn secret_context(name: &str) -> String {
    format!("{SECRET_CONTEXT}{name}")
}

/// Fills `buf` as far as the reader allows; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The workspace's regular files, as (path relative to it with `/` separators, path), in name
/// order; links are listed in `links` and left out.
fn walk(
    dir: &Path,
    rel: &Path,
    files: &mut Vec<(String, PathBuf)>,
    links: &mut Vec<String>,
) -> Result<()> {
    let io = |source| Error::Io { action: "read", path: dir.to_owned(), source };
    let mut entries =
        std::fs::read_dir(dir).map_err(io)?.collect::<std::io::Result<Vec<_>>>().map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name_text) = name.to_str() else {
            links.push(format!("{} (not UTF-8)", rel.join(&name).display()));
            continue;
        };
        let rel = rel.join(name_text);
        let kind = entry.file_type().map_err(io)?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, files, links)?;
        } else if kind.is_file() {
            let text =
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>();
            files.push((text.join("/"), entry.path()));
        } else {
            links.push(rel.display().to_string());
        }
    }
    Ok(())
}

async fn read_page(
    tx: &mut Tx,
    table: &Table,
    agent: &Agent,
    after: Option<&[Value]>,
) -> Result<Vec<Row>> {
    let columns = table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    let key = table.key.join(", ");
    let mut sql = format!("SELECT {columns} FROM {} WHERE ({})", table.name, table.filter);
    let mut q_args: Vec<Value> = Vec::new();
    if let Some(after) = after {
        let params = (0..after.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>();
        sql.push_str(&format!(" AND ({key}) > ({})", params.join(", ")));
        q_args.extend(after.iter().cloned());
    }
    sql.push_str(&format!(" ORDER BY {key} LIMIT {PAGE}"));
    let mut q =
        query(sql).bind(agent.id.as_bytes().to_vec()).bind(agent.tenant_id.as_bytes().to_vec());
    for arg in q_args {
        q = q.bind(arg);
    }
    q.fetch_all(tx).await
}

fn kind_of(table: &Table, column: &str) -> Kind {
    table.columns.iter().find(|(c, _)| *c == column).map_or(Text, |(_, k)| *k)
}

fn key_of(table: &Table, row: &Row) -> Result<Vec<Value>> {
    table
        .key
        .iter()
        .map(|column| {
            Ok(match kind_of(table, column) {
                Int => Value::Int(row.try_get::<Option<i64>, _>(*column)?),
                Real => Value::Real(row.try_get::<Option<f64>, _>(*column)?),
                Text => Value::Text(row.try_get::<Option<String>, _>(*column)?),
                Blob => Value::Blob(row.try_get::<Option<Vec<u8>>, _>(*column)?),
            })
        })
        .collect()
}

fn cell_to_json(table: &Table, row: &Row, column: &str, kind: Kind) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match kind {
        Int => row.try_get::<Option<i64>, _>(column)?.map_or(J::Null, J::from),
        Real => match row.try_get::<Option<f64>, _>(column)? {
            None => J::Null,
            Some(x) => serde_json::Number::from_f64(x).map(J::Number).ok_or_else(|| {
                Error::BadRow(format!(
                    "{}.{column} holds {x}, which an archive cannot carry",
                    table.name
                ))
            })?,
        },
        Text => row.try_get::<Option<String>, _>(column)?.map_or(J::Null, J::String),
        Blob => row
            .try_get::<Option<Vec<u8>>, _>(column)?
            .map_or(J::Null, |b| J::String(b64().encode(b))),
    })
}

/// A value of an archive's row, as its column's kind.
fn json_to_value(
    table: &Table,
    column: &str,
    kind: Kind,
    value: &serde_json::Value,
) -> Result<Value> {
    use serde_json::Value as J;
    let bad = |what: &str| {
        Error::Import(format!(
            "the archive's {} row has {column} = {value}, not {what}",
            table.name
        ))
    };
    Ok(match (kind, value) {
        (Int, J::Null) => Value::Int(None),
        (Real, J::Null) => Value::Real(None),
        (Text, J::Null) => Value::Text(None),
        (Blob, J::Null) => Value::Blob(None),
        (Int, J::Number(n)) => Value::Int(Some(n.as_i64().ok_or_else(|| bad("an integer"))?)),
        (Real, J::Number(n)) => Value::Real(Some(n.as_f64().ok_or_else(|| bad("a number"))?)),
        (Text, J::String(s)) => Value::Text(Some(s.clone())),
        (Blob, J::String(s)) => {
            Value::Blob(Some(b64().decode(s).map_err(|_| bad("base64 bytes"))?))
        }
        (Int, _) => return Err(bad("an integer")),
        (Real, _) => return Err(bad("a number")),
        (Text, _) => return Err(bad("a text")),
        (Blob, _) => return Err(bad("base64 bytes")),
    })
}

/// An archive read and checked, ready to write.
struct Checked {
    agent: AgentId,
    handle: String,
    /// Rows per table, values in the table's column order.
    rows: Vec<(&'static Table, Vec<Vec<Value>>)>,
    secrets: Vec<(SecretName, Sealed)>,
    files: u64,
    file_bytes: u64,
}

/// Reads an archive from `input` into `tenant` of `agents`' store, checking all of it before
/// anything is written (see the module's doc).
pub async fn import(
    agents: &Agents,
    secrets: &Secrets,
    tenant: TenantId,
    input: &mut dyn BufRead,
    options: ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let store = agents.store().clone();
    let staging = agents.workspaces_dir().join(format!(".archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let checked = read_archive(input, &staging, options.verify.as_ref(), progress);
    let checked = match checked {
        Ok(checked) => checked,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    let result = write_checked(&store, secrets, tenant, checked, &options).await;
    let (agent_id, report) = match result {
        Ok(written) => written,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    let workspace = agents.workspace_path(agent_id);
    if staging.is_dir()
        && let Err(source) = std::fs::rename(&staging, &workspace)
    {
        let _ = std::fs::remove_dir_all(&staging);
        let agent = report.agent.handle.to_string();
        let _ = store.agents(tenant).delete(&agent).await;
        return Err(Error::Io { action: "create workspace", path: workspace, source });
    }
    Ok(report)
}

fn read_archive(
    input: &mut dyn BufRead,
    staging: &Path,
    verify: Option<&VerifyArchive>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Checked> {
    let bad = |msg: String| Error::Import(msg);
    let mut digest = Sha256::new();
    let mut line_no = 0u64;
    let mut header: Option<(AgentId, String)> = None;
    let mut rows: HashMap<&'static str, Vec<Vec<Value>>> = HashMap::new();
    let mut sealed: Vec<(SecretName, Sealed)> = Vec::new();
    let mut file: Option<(std::fs::File, PathBuf, u64, u64)> = None;
    let (mut files, mut file_bytes) = (0u64, 0u64);
    let mut ended = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = input
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| bad(format!("cannot read the archive: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            return Err(bad(if n as u64 > MAX_LINE {
                format!("line {line_no} of the archive is longer than {MAX_LINE} bytes")
            } else {
                format!("the archive is cut short at line {line_no}: export it again")
            }));
        }
        if ended {
            return Err(bad(format!("line {line_no} follows the archive's end line")));
        }
        if line_no == 1 {
            check_format(&buf)?;
        }
        let line: Line = serde_json::from_slice(&buf).map_err(|e| {
            bad(format!("line {line_no} of the archive is not an archive line: {e}"))
        })?;
        let in_file = file.as_ref().is_some_and(|(_, _, size, got)| got < size);
        if in_file && !matches!(line, Line::Chunk { .. }) {
            let (_, path, size, got) =
                file.as_ref().map(|(_, p, s, g)| (0, p.clone(), *s, *g)).unwrap_or_default();
            return Err(bad(format!(
                "line {line_no}: {} ends after {got} of its {size} bytes",
                path.display()
            )));
        }
        match line {
            Line::Header { agent, handle, tables, .. } => {
                if line_no != 1 {
                    return Err(bad(format!("line {line_no} is a second header")));
                }
                for t in TABLES {
                    let ours: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
                    let theirs = tables
                        .get(t.name)
                        .map(|c| c.iter().map(String::as_str).collect::<Vec<_>>());
                    if theirs.as_deref() != Some(ours.as_slice()) {
                        return Err(bad(format!(
                            "the archive's {} table has columns {theirs:?}, not the {ours:?} this Clade writes: export it again with this version",
                            t.name
                        )));
                    }
                }
                let id = AgentId::parse(&agent)
                    .map_err(|_| bad(format!("the header's agent {agent:?} is not an agent id")))?;
                header = Some((id, handle));
            }
            _ if header.is_none() => {
                return Err(bad(
                    "the file does not start with an agent archive's header: is it one?".into(),
                ));
            }
            Line::File { path, size, executable } => {
                let rel = safe_path(&path).ok_or_else(|| {
                    bad(format!("line {line_no} names the file {path:?}, which is not a plain path inside the workspace"))
                })?;
                file_bytes = file_bytes.saturating_add(size);
                if file_bytes > MAX_FILES_BYTES {
                    return Err(bad(format!(
                        "the archive's files add up to more than {MAX_FILES_BYTES} bytes"
                    )));
                }
                let dest = staging.join(&rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                        action: "create",
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                let out =
                    std::fs::OpenOptions::new().write(true).create_new(true).open(&dest).map_err(
                        |source| match source.kind() {
                            std::io::ErrorKind::AlreadyExists => {
                                bad(format!("line {line_no} names {path:?} a second time"))
                            }
                            _ => Error::Io { action: "create", path: dest.clone(), source },
                        },
                    )?;
                #[cfg(unix)]
                if executable {
                    use std::os::unix::fs::PermissionsExt as _;
                    let _ = out.set_permissions(std::fs::Permissions::from_mode(0o755));
                }
                #[cfg(not(unix))]
                let _ = executable;
                files += 1;
                file = Some((out, dest, size, 0));
                progress(Progress::Files { files, bytes: file_bytes });
            }
            Line::Chunk { data } => {
                let Some((out, path, size, got)) = file.as_mut() else {
                    return Err(bad(format!("line {line_no}: a chunk outside any file")));
                };
                let bytes = b64()
                    .decode(&data)
                    .map_err(|_| bad(format!("line {line_no}: a chunk that is not base64")))?;
                *got += bytes.len() as u64;
                if *got > *size {
                    return Err(bad(format!(
                        "line {line_no}: {} is longer than its {size} bytes",
                        path.display()
                    )));
                }
                out.write_all(&bytes).map_err(|source| Error::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                })?;
            }
            Line::Row { table: name, values } => {
                let table = table(&name).ok_or_else(|| {
                    bad(format!("line {line_no}: no table {name:?} in an agent archive"))
                })?;
                if values.len() != table.columns.len() {
                    return Err(bad(format!(
                        "line {line_no}: a {name} row has {} values, not {}",
                        values.len(),
                        table.columns.len()
                    )));
                }
                let values = table
                    .columns
                    .iter()
                    .zip(&values)
                    .map(|((column, kind), v)| json_to_value(table, column, *kind, v))
                    .collect::<Result<Vec<_>>>()?;
                rows.entry(table.name).or_default().push(values);
            }
            Line::Secret { name, nonce, ciphertext } => {
                let name = SecretName::parse(&name)
                    .map_err(|e| bad(format!("line {line_no}: secret name {name:?}: {e}")))?;
                let decode = |s: &str| {
                    b64()
                        .decode(s)
                        .map_err(|_| bad(format!("line {line_no}: secret {name} is not base64")))
                };
                sealed.push((
                    name.clone(),
                    Sealed { nonce: decode(&nonce)?, ciphertext: decode(&ciphertext)? },
                ));
            }
            Line::End {
                files: want_files,
                rows: want_rows,
                secrets: want_secrets,
                sha256,
                signature,
            } => {
                let got = hex::encode(digest.clone().finalize());
                if got != sha256 {
                    return Err(bad("the archive does not match its checksum: it was changed or damaged after it was written".into()));
                }
                if let Some(verify) = verify {
                    verify(&sha256, signature.as_ref()).map_err(|Untrusted(why)| bad(why))?;
                }
                let have: BTreeMap<String, u64> = TABLES
                    .iter()
                    .map(|t| (t.name.to_owned(), rows.get(t.name).map_or(0, |r| r.len() as u64)))
                    .collect();
                let want: BTreeMap<String, u64> = TABLES
                    .iter()
                    .map(|t| (t.name.to_owned(), want_rows.get(t.name).copied().unwrap_or(0)))
                    .collect();
                if want_files != files || want != have || want_secrets != sealed.len() as u64 {
                    return Err(bad(
                        "the archive's end line does not count what it holds: it is damaged".into(),
                    ));
                }
                ended = true;
            }
        }
        digest.update(&buf);
    }
    if !ended {
        return Err(bad("the archive is cut short (no end line): export it again".into()));
    }
    let Some((agent, handle)) = header else {
        return Err(bad("the archive is empty".into()));
    };
    let rows: Vec<(&'static Table, Vec<Vec<Value>>)> =
        TABLES.iter().map(|t| (t, rows.remove(t.name).unwrap_or_default())).collect();
    check_ownership(agent, &rows)?;
    for (table, rows) in &rows {
        progress(Progress::Table { table: table.name, rows: rows.len() as u64 });
    }
    Ok(Checked { agent, handle, rows, secrets: sealed, files, file_bytes })
}

/// Refuses a first line that is not an agent archive's header of this version, naming what
/// it is instead, before its fields are read.
fn check_format(line: &[u8]) -> Result<()> {
    let bad = |msg: String| Error::Import(msg);
    let header: serde_json::Value = serde_json::from_slice(line).map_err(|_| {
        bad("the file does not start with an agent archive's header: is it one?".into())
    })?;
    let format = header["format"].as_str().unwrap_or_default();
    if header["type"] != "header" || format != FORMAT {
        let hint =
            if format == "clade.memory" { ": read it with `clade memory import`" } else { "" };
        return Err(bad(format!(
            "this is not an agent archive (format {format:?}, not {FORMAT:?}){hint}"
        )));
    }
    let version = header["version"].as_u64().unwrap_or_default();
    if version != u64::from(VERSION) {
        return Err(bad(format!(
            "the archive is version {version}; this Clade reads version {VERSION}: import it \
             with the version that wrote it, or export it again with this one"
        )));
    }
    Ok(())
}

/// A path of the archive as a relative path of normal components, or none.
fn safe_path(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let rel = PathBuf::from(path);
    rel.components().all(|c| matches!(c, Component::Normal(_))).then_some(rel)
}

fn column_index(table: &Table, column: &str) -> Result<usize> {
    table
        .columns
        .iter()
        .position(|(c, _)| *c == column)
        .ok_or_else(|| Error::BadRow(format!("{} has no column {column}", table.name)))
}

fn blob(value: &Value) -> Option<&[u8]> {
    match value {
        Value::Blob(Some(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Every row belongs to the archive's agent: exactly one agent row, of its id; each agent
/// column holds that id; each reference names the agent or a row the archive brings.
fn check_ownership(agent: AgentId, rows: &[(&'static Table, Vec<Vec<Value>>)]) -> Result<()> {
    let bad = |msg: String| Error::Import(msg);
    let id = agent.as_bytes().as_slice();
    let mut present: HashMap<&str, HashSet<Vec<u8>>> = HashMap::new();
    for (table, rows) in rows {
        if table.name == "agents" && rows.len() != 1 {
            return Err(bad(format!("the archive holds {} agent rows, not one", rows.len())));
        }
        let agent_columns =
            table.agent.iter().map(|c| column_index(table, c)).collect::<Result<Vec<_>>>()?;
        let refs = table
            .refs
            .iter()
            .map(|(c, targets)| Ok((*c, column_index(table, c)?, *targets)))
            .collect::<Result<Vec<_>>>()?;
        let first_key = column_index(table, table.key[0])?;
        let mut keys = HashSet::new();
        for row in rows {
            for &i in &agent_columns {
                if blob(&row[i]) != Some(id) {
                    return Err(bad(format!(
                        "the archive has a {} row of another agent ({} is not {agent}): it was altered",
                        table.name, table.columns[i].0
                    )));
                }
            }
            for (column, i, targets) in &refs {
                let Some(value) = blob(&row[*i]) else { continue };
                let found = targets.iter().any(|target| match target {
                    Target::Agent => value == id,
                    Target::Table(t) => present.get(t).is_some_and(|set| set.contains(value)),
                });
                if !found {
                    return Err(bad(format!(
                        "the archive has a {} row whose {column} names something the archive does not bring: it was altered",
                        table.name
                    )));
                }
            }
            if let Some(key) = blob(&row[first_key]) {
                keys.insert(key.to_vec());
            }
        }
        present.insert(table.name, keys);
    }
    Ok(())
}

async fn write_checked(
    store: &Store,
    secrets: &Secrets,
    tenant: TenantId,
    checked: Checked,
    options: &ImportOptions,
) -> Result<(AgentId, ImportReport)> {
    let Checked { agent, handle, mut rows, secrets: sealed, files, file_bytes } = checked;
    let handle = match &options.handle {
        Some(handle) => handle.clone(),
        None => Handle::parse(&handle)
            .map_err(|e| Error::Import(format!("the archive's handle {handle:?}: {e}")))?,
    };
    // The secrets are opened before anything is written: a wrong key writes nothing.
    let mut resealed = Vec::new();
    if !sealed.is_empty() && !options.without_secrets {
        let Some(hex) = options.secrets_key.as_deref() else {
            return Err(Error::Import(format!(
                "the archive holds {} secrets, sealed with the key its export printed: pass it \
                 (CLADE_ARCHIVE_KEY or --secrets-key), or import --without-secrets and set them again",
                sealed.len()
            )));
        };
        let key = MasterKey::from_hex(hex).map_err(|_| {
            Error::Import(
                "the secrets key is not 64 hexadecimal characters: pass the key the export printed"
                    .into(),
            )
        })?;
        for (name, sealed) in &sealed {
            let value = key
                .open(secret_context(name.as_str()).as_bytes(), sealed, name.as_str())
                .map_err(|_| {
                    Error::Import(format!(
                        "the secrets key does not open the archive's secret {name}: pass the key printed by the export that wrote this file"
                    ))
                })?;
            resealed.push((name.clone(), secrets.seal(agent, name, &value).await?));
        }
    }

    let tenant_bytes = tenant.as_bytes().to_vec();
    for (table, rows) in &mut rows {
        let tenant_column = table.columns.iter().position(|(c, _)| *c == "tenant_id");
        let handle_column =
            (table.name == "agents").then(|| column_index(table, "handle")).transpose()?;
        let owner = (table.name == "memories")
            .then(|| Ok::<_, Error>((column_index(table, "owner")?, column_index(table, "scope")?)))
            .transpose()?;
        for row in rows.iter_mut() {
            if let Some(i) = tenant_column {
                row[i] = Value::Blob(Some(tenant_bytes.clone()));
            }
            if let Some(i) = handle_column {
                row[i] = Value::Text(Some(handle.to_string()));
            }
            if let Some((owner, scope)) = owner {
                let Value::Text(Some(scope)) = &row[scope] else {
                    return Err(Error::Import(
                        "the archive has a memory item without a scope".into(),
                    ));
                };
                row[owner] = Value::Text(Some(crate::memories::owner_token(agent, scope)));
            }
        }
    }

    let Dropped { grants: dropped_grants, jobs: dropped_jobs, settings: dropped_settings } =
        admit_rows(&mut rows, &handle, options.admit.as_ref())?;
    let mut grants = Vec::new();
    let mut delegated = 0u64;
    let mut unfinished = 0u64;
    let mut waiting = Vec::new();
    for (table, rows) in &rows {
        match table.name {
            "grants" => {
                let [effect, tool, resource, parent, revoked] =
                    ["effect", "tool", "resource", "parent_id", "revoked_at"]
                        .map(|c| column_index(table, c));
                let (effect, tool, resource, parent, revoked) =
                    (effect?, tool?, resource?, parent?, revoked?);
                for row in rows {
                    if !matches!(row[revoked], Value::Int(None)) {
                        continue;
                    }
                    let text = |v: &Value| match v {
                        Value::Text(Some(s)) => s.clone(),
                        _ => String::new(),
                    };
                    grants.push(format!(
                        "{} {} {}",
                        text(&row[effect]),
                        text(&row[tool]),
                        text(&row[resource])
                    ));
                    if blob(&row[parent]).is_some() {
                        delegated += 1;
                    }
                }
            }
            "events" => {
                let (session, status) =
                    (column_index(table, "session_id")?, column_index(table, "status")?);
                for row in rows {
                    let open = matches!(&row[status], Value::Text(Some(s))
                        if clade_core::EventStatus::parse(s).is_some_and(|s| s.is_open()));
                    if let (true, Some(bytes)) = (open, blob(&row[session]))
                        && let Ok(bytes) = <[u8; 16]>::try_from(bytes)
                    {
                        let id = clade_core::SessionId::from_bytes(bytes);
                        if !waiting.contains(&id) {
                            waiting.push(id);
                        }
                    }
                }
            }
            "executions" => {
                let finished = column_index(table, "finished_at")?;
                unfinished +=
                    rows.iter().filter(|r| matches!(r[finished], Value::Int(None))).count() as u64;
            }
            _ => {}
        }
    }

    let counts: Vec<(String, u64)> =
        rows.iter().map(|(t, r)| (t.name.to_owned(), r.len() as u64)).collect();
    let audit = store.admin_record(
        tenant,
        Some(agent),
        AuditKind::AgentCreated,
        serde_json::json!({
            "handles": [handle.as_str()],
            "count": 1,
            "imported": { "files": files, "rows": counts.iter().map(|(t, n)| (t.clone(), *n)).collect::<BTreeMap<_, _>>(), "secrets": resealed.len() },
        }),
    );
    let rows = std::sync::Arc::new(rows);
    let resealed = std::sync::Arc::new(resealed);
    let handle_text = handle.to_string();
    store
        .transact(tenant, move |work| {
            let (rows, resealed, audit, handle) =
                (rows.clone(), resealed.clone(), audit.clone(), handle_text.clone());
            Box::pin(async move {
                let now = work.now().as_millis();
                let conn = work.conn();
                let held = query("SELECT handle FROM agents WHERE id = $1")
                    .bind(agent.as_bytes().to_vec())
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(row) = held {
                    let held: String = row.try_get("handle")?;
                    return Err(Error::Import(format!(
                        "this store holds the archive's agent already (as {held:?}, id {agent}): an archive brings an agent to a store without it; delete that one first (clade agents delete) to bring it back"
                    )));
                }
                let taken = query("SELECT 1 AS one FROM agents WHERE tenant_id = $1 AND handle = $2")
                    .bind(tenant.as_bytes().to_vec())
                    .bind(handle.clone())
                    .fetch_optional(&mut *conn)
                    .await?;
                if taken.is_some() {
                    return Err(Error::Import(format!(
                        "the tenant has an agent {handle:?} already: import with --handle <another>"
                    )));
                }
                // A deleted agent's grants stay on record, revoked, under their ids: the same
                // grants coming back with it take their place.
                if let Some((table, grants)) = rows.iter().find(|(t, _)| t.name == "grants") {
                    let id = column_index(table, "id")?;
                    for grant in grants {
                        query("DELETE FROM grants WHERE id = $1 AND agent_id = $2 AND revoked_at IS NOT NULL")
                            .bind(grant[id].clone())
                            .bind(agent.as_bytes().to_vec())
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                for (table, rows) in rows.iter() {
                    let width = table.columns.len();
                    let columns = table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
                    // Many rows a statement: a statement each was a round trip each on
                    // PostgreSQL. At most `MAX_PARAMS` values keep it within both backends'
                    // limits.
                    for chunk in rows.chunks((MAX_PARAMS / width.max(1)).max(1)) {
                        let tuples: Vec<String> = (0..chunk.len())
                            .map(|r| {
                                let marks: Vec<String> =
                                    (1..=width).map(|c| format!("${}", r * width + c)).collect();
                                format!("({})", marks.join(", "))
                            })
                            .collect();
                        let sql =
                            format!("INSERT INTO {} ({columns}) VALUES {}", table.name, tuples.join(", "));
                        let mut q = query(sql);
                        for value in chunk.iter().flatten() {
                            q = q.bind(value.clone());
                        }
                        q.execute(&mut *conn).await.map_err(|e| match e {
                            Error::Database(_) | Error::Sqlite(_) => Error::Import(format!(
                                "the archive's {} rows do not fit this store ({e}): nothing was imported",
                                table.name
                            )),
                            other => other,
                        })?;
                    }
                }
                for (name, sealed) in resealed.iter() {
                    query(
                        "INSERT INTO secrets (agent_id, name, nonce, ciphertext, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(agent.as_bytes().to_vec())
                    .bind(name.as_str())
                    .bind(sealed.nonce.clone())
                    .bind(sealed.ciphertext.clone())
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                work.audit(&audit).await?;
                Ok(())
            })
        })
        .await?;
    let imported = store.agents(tenant).by_id(agent).await?;
    let report = ImportReport {
        agent: imported,
        files,
        file_bytes,
        rows: counts,
        secrets: resealed_len(&sealed, options),
        unfinished,
        grants,
        orphaned_grants: delegated,
        dropped_grants,
        dropped_jobs,
        dropped_settings,
        waiting_sessions: waiting,
    };
    Ok((agent, report))
}

/// What [`admit_rows`] left out, each as `what: why`.
#[derive(Default)]
struct Dropped {
    grants: Vec<String>,
    jobs: Vec<String>,
    settings: Vec<String>,
}

/// Takes out of `rows` the live grants, jobs and settings `admit` refuses, and the run history
/// of the jobs left out.
fn admit_rows(
    rows: &mut [(&'static Table, Vec<Vec<Value>>)],
    handle: &Handle,
    admit: Option<&Admit>,
) -> Result<Dropped> {
    let Some(admit) = admit else { return Ok(Dropped::default()) };
    let text = |v: &Value| match v {
        Value::Text(Some(s)) => s.clone(),
        _ => String::new(),
    };
    let mut dropped = Dropped::default();
    let mut dropped_job_ids = Vec::new();
    for (table, rows) in rows.iter_mut() {
        match table.name {
            "grants" => {
                let [effect, tool, resource, constraints, revoked] =
                    ["effect", "tool", "resource", "constraints", "revoked_at"]
                        .map(|c| column_index(table, c));
                let (effect, tool, resource, constraints, revoked) =
                    (effect?, tool?, resource?, constraints?, revoked?);
                rows.retain(|row| {
                    if !matches!(row[revoked], Value::Int(None)) {
                        return true;
                    }
                    let grant = ArchivedGrant {
                        effect: text(&row[effect]),
                        tool: text(&row[tool]),
                        resource: text(&row[resource]),
                        constraints: text(&row[constraints]),
                    };
                    let Some(why) = admit(&Archived::Grant(&grant)) else { return true };
                    let (effect, tool, resource) = (grant.effect, grant.tool, grant.resource);
                    dropped.grants.push(format!("{effect} {tool} {resource}: {why}"));
                    false
                });
            }
            "jobs" => {
                let [id, name, schedule, zone] =
                    ["id", "name", "schedule", "zone"].map(|c| column_index(table, c));
                let (id, name, schedule, zone) = (id?, name?, schedule?, zone?);
                let mut admitted = 0;
                rows.retain(|row| {
                    let (job, schedule, zone) =
                        (text(&row[name]), text(&row[schedule]), text(&row[zone]));
                    let asked = Archived::Job {
                        handle: handle.as_str(),
                        name: &job,
                        schedule: &schedule,
                        zone: &zone,
                        admitted,
                    };
                    match admit(&asked) {
                        None => {
                            admitted += 1;
                            true
                        }
                        Some(why) => {
                            dropped.jobs.push(format!("{job}: {why}"));
                            dropped_job_ids.extend(blob(&row[id]).map(<[u8]>::to_vec));
                            false
                        }
                    }
                });
            }
            "agent_settings" => {
                let key = column_index(table, "key")?;
                rows.retain(|row| {
                    let key = text(&row[key]);
                    let Some(why) = admit(&Archived::Setting { key: &key }) else { return true };
                    dropped.settings.push(format!("{key}: {why}"));
                    false
                });
            }
            _ => {}
        }
    }
    if !dropped_job_ids.is_empty() {
        for (table, rows) in rows.iter_mut().filter(|(t, _)| t.name == "job_runs") {
            let job = column_index(table, "job_id")?;
            rows.retain(|row| {
                blob(&row[job]).is_none_or(|id| !dropped_job_ids.iter().any(|d| d == id))
            });
        }
    }
    Ok(dropped)
}

/// The most values bound to one insert of an import (SQLite allows 32,766, PostgreSQL 65,535).
const MAX_PARAMS: usize = 2_000;

fn resealed_len(sealed: &[(SecretName, Sealed)], options: &ImportOptions) -> u64 {
    if options.without_secrets { 0 } else { sealed.len() as u64 }
}
