//! The vectors recall compares a query with, kept in process per agent and scope while they
//! are used: reading 100,000 embeddings back for every recall would cost far more than ranking
//! them. An entry is current while its scope's newest write is the one it was loaded (or
//! patched) with, which one index seek tells, so writes by other processes are seen; it leaves
//! memory when unused for [`IDLE`], and the least recently used go first past [`MAX_FLOATS`],
//! so an idle agent costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use clade_core::{AgentId, TenantId};
use clade_store::memories::VectorRow;
use clade_store::{MemoryFilter, TenantStore};

use crate::Error;

/// How long an unused scope's vectors stay in memory.
pub(crate) const IDLE: std::time::Duration = std::time::Duration::from_secs(120);
/// The most floats kept over all scopes (256 MiB).
pub(crate) const MAX_FLOATS: usize = 64 * 1024 * 1024;

type Key = (TenantId, AgentId, String);

struct Entry {
    model: String,
    /// The scope's newest write when loaded (or last patched), in milliseconds.
    version: Option<i64>,
    /// When it was loaded, on the store's clock: a write in that same millisecond may have
    /// been missed, so only a version older than this counts as current.
    loaded_at: i64,
    used_at: i64,
    /// Read while a search ranks them, written in place when this process writes an item.
    rows: Shared,
    /// Floats held, kept as rows come (summing them under every lookup would cost a pass).
    floats: usize,
}

impl Entry {
    /// Rows written since it was read: each replaces the kept row of its id, or joins them.
    fn take_in(&mut self, written: impl IntoIterator<Item = VectorRow>) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        for row in written {
            match rows.iter_mut().find(|r| r.id == row.id) {
                Some(kept) => *kept = row,
                None => {
                    self.floats += row.vector.len();
                    rows.push(row);
                }
            }
        }
    }
}

/// A scope's vectors, shared by the searches that rank them.
pub(crate) type Shared = Arc<RwLock<Vec<VectorRow>>>;

#[derive(Default)]
pub(crate) struct VectorCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl VectorCache {
    /// The scope's vectors by `model`, from memory while current, else read and kept.
    pub(crate) async fn scope(
        &self,
        store: &TenantStore,
        agent: AgentId,
        scope: &str,
        model: &str,
    ) -> Result<Shared, Error> {
        let key = (store.tenant(), agent, scope.to_owned());
        let now = store.now().as_millis();
        let version = store.memory_scope_version(agent, scope).await?.map(|t| t.as_millis());
        let filter = MemoryFilter {
            scope: (!scope.is_empty()).then(|| scope.to_owned()),
            exclude_global: !scope.is_empty(),
            ..MemoryFilter::default()
        };
        // What was written since the kept rows' newest write, when there are kept rows.
        let behind = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let idle = IDLE.as_millis() as i64;
            entries.retain(|_, e| now.saturating_sub(e.used_at) < idle);
            match entries.get_mut(&key) {
                Some(entry)
                    if entry.model == model
                        && entry.version == version
                        && version.is_none_or(|v| v < entry.loaded_at) =>
                {
                    entry.used_at = now;
                    return Ok(entry.rows.clone());
                }
                Some(entry) if entry.model == model => entry.version,
                _ => None,
            }
        };
        // Behind by some writes (another save's, not yet patched in, or another process's):
        // only the rows written since are read, not the whole scope. A row deleted elsewhere
        // may stay kept; recall reads its hits back from the store, which leaves it out.
        if let Some(since) = behind {
            let since = MemoryFilter {
                since: Some(clade_core::Timestamp::from_millis(since)),
                ..filter.clone()
            };
            let fresh = store.memory_vectors(agent, &since, model).await?;
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get_mut(&key).filter(|e| e.model == model) {
                entry.take_in(fresh);
                entry.version = match (entry.version, version) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                entry.loaded_at = now;
                entry.used_at = now;
                return Ok(entry.rows.clone());
            }
        }
        let loaded = store.memory_vectors(agent, &filter, model).await?;
        let floats = loaded.iter().map(|r| r.vector.len()).sum();
        let rows: Shared = Arc::new(RwLock::new(loaded));
        let entry = Entry {
            model: model.to_owned(),
            version,
            loaded_at: now,
            used_at: now,
            rows: rows.clone(),
            floats,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, entry);
        let mut total: usize = entries.values().map(|e| e.floats).sum();
        while total > MAX_FLOATS {
            let Some(oldest) =
                entries.iter().min_by_key(|(_, e)| e.used_at).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = entries.remove(&oldest) {
                total -= gone.floats;
            }
        }
        Ok(rows)
    }

    /// This process wrote `row` (new, or changed) in `scope` by `model`: the kept vectors take
    /// it in place, so a run of saves does not read the scope back after each.
    pub(crate) fn wrote(
        &self,
        tenant: TenantId,
        agent: AgentId,
        scope: &str,
        model: &str,
        row: VectorRow,
    ) {
        let key = (tenant, agent, scope.to_owned());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get_mut(&key) else { return };
        if entry.model != model {
            entries.remove(&key);
            return;
        }
        // Saves run concurrently, so their writes may come out of order: the entry stands
        // for the newest of them.
        let at = row.updated_at.as_millis();
        entry.take_in([row]);
        entry.version = Some(entry.version.map_or(at, |v| v.max(at)));
        entry.loaded_at = entry.loaded_at.max(at + 1);
    }

    /// How many floats are kept now (for benchmarks and tests).
    pub(crate) fn floats(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).values().map(|e| e.floats).sum()
    }
}
