//! The vectors recall compares a query with, kept in process per agent and scope while they
//! are used: reading 100,000 embeddings back for every recall would cost far more than ranking
//! them. An entry is current while its scope's newest write is the one it was loaded (or
//! patched) with, which one index seek tells, so writes by other processes are seen; it leaves
//! memory when unused for [`IDLE`], and the least recently used go first past [`MAX_BYTES`],
//! so an idle agent costs nothing.
//!
//! Kept vectors are scaled to unit length and quantized to one byte a dimension, in one
//! block per scope: a scan then reads a quarter of the bytes of `f32`s, in order, and a cosine
//! is an integer dot product. The error is a few thousandths of a cosine, well inside the
//! margins recall and deduplication decide by; the stored embeddings stay exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use clade_core::{AgentId, MemoryId, MemoryKind, TenantId};
use clade_store::memories::VectorRow;
use clade_store::{MemoryFilter, TenantStore};

use crate::Error;

/// How long an unused scope's vectors stay in memory.
pub(crate) const IDLE: std::time::Duration = std::time::Duration::from_secs(120);
/// The most bytes of vectors kept over all scopes (256 MiB: a million MiniLM vectors).
pub(crate) const MAX_BYTES: usize = 256 * 1024 * 1024;

type Key = (TenantId, AgentId, String);

/// A vector scaled to unit length and quantized: `codes[i] * scale` is its `i`th component.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Quantized {
    scale: f32,
    codes: Vec<i8>,
}

impl Quantized {
    /// A zero (or non-finite) vector becomes one that is alike to nothing.
    pub(crate) fn new(vector: &[f32]) -> Self {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        let peak = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
        if !(norm.is_finite() && norm > 0.0 && peak.is_finite()) {
            return Self { scale: 0.0, codes: vec![0; vector.len()] };
        }
        let step = peak / 127.0;
        // `as` saturates (and takes NaN to 0); the largest component is exactly ±127.
        let codes = vector.iter().map(|x| (x / step).round() as i8).collect();
        Self { scale: step / norm, codes }
    }

    pub(crate) fn dims(&self) -> usize {
        self.codes.len()
    }

    /// The cosine of the two vectors these were made of, to within a few thousandths.
    #[cfg(test)]
    fn cosine(&self, other: &Quantized) -> f32 {
        if self.codes.len() != other.codes.len() {
            return 0.0;
        }
        similarity(self.scale, &self.codes, other)
    }
}

fn similarity(scale: f32, codes: &[i8], query: &Quantized) -> f32 {
    scale * query.scale * dot(codes, &query.codes) as f32
}

/// An integer dot product in sixteen lanes, which the compiler keeps in vector registers.
/// No overflow: 384 dimensions of at most 127 × 127 sum to under 2^23.
fn dot(a: &[i8], b: &[i8]) -> i32 {
    let (chunks_a, chunks_b) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: i32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    let mut lanes = [0i32; 16];
    for (x, y) in chunks_a.zip(chunks_b) {
        for lane in 0..16 {
            lanes[lane] += i32::from(x[lane]) * i32::from(y[lane]);
        }
    }
    lanes.iter().sum::<i32>() + rest
}

/// The best `limit` hits offered, most alike first.
pub(crate) struct Best {
    limit: usize,
    hits: Vec<(MemoryId, f32)>,
}

impl Best {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, hits: Vec::with_capacity(limit + 1) }
    }

    fn offer(&mut self, id: MemoryId, similarity: f32) {
        if self.hits.len() == self.limit
            && self.hits.last().is_none_or(|(_, worst)| *worst >= similarity)
        {
            return;
        }
        let at = self.hits.partition_point(|(_, s)| *s >= similarity);
        self.hits.insert(at, (id, similarity));
        self.hits.truncate(self.limit);
    }

    pub(crate) fn into_hits(self) -> Vec<(MemoryId, f32)> {
        self.hits
    }
}

/// One scope's vectors by one model, in one block.
#[derive(Default)]
pub(crate) struct Kept {
    dims: usize,
    ids: Vec<MemoryId>,
    kinds: Vec<MemoryKind>,
    updated_at: Vec<i64>,
    scales: Vec<f32>,
    codes: Vec<i8>,
    slots: HashMap<MemoryId, usize>,
}

impl Kept {
    fn new(rows: Vec<VectorRow>) -> Self {
        // The length most rows have: a corrupt row read first must not make the rest
        // unreadable.
        let mut lengths: HashMap<usize, usize> = HashMap::new();
        for row in &rows {
            *lengths.entry(row.vector.len()).or_default() += 1;
        }
        let dims = lengths.into_iter().max_by_key(|(len, n)| (*n, *len)).map_or(0, |(len, _)| len);
        let mut kept = Self { dims, ..Self::default() };
        kept.take_in(rows);
        kept
    }

    /// Rows written since it was read: each replaces the kept row of its id, or joins them. A
    /// vector of other dimensions than the rest (a corrupt row) is alike to nothing.
    fn take_in(&mut self, written: impl IntoIterator<Item = VectorRow>) {
        for row in written {
            if self.dims == 0 {
                self.dims = row.vector.len();
            }
            let vector = if row.vector.len() == self.dims {
                Quantized::new(&row.vector)
            } else {
                Quantized { scale: 0.0, codes: vec![0; self.dims] }
            };
            let slot = match self.slots.get(&row.id) {
                Some(slot) => *slot,
                None => {
                    let slot = self.ids.len();
                    self.slots.insert(row.id, slot);
                    self.ids.push(row.id);
                    self.kinds.push(row.kind);
                    self.updated_at.push(0);
                    self.scales.push(0.0);
                    self.codes.resize(self.codes.len() + self.dims, 0);
                    slot
                }
            };
            self.kinds[slot] = row.kind;
            self.updated_at[slot] = row.updated_at.as_millis();
            self.scales[slot] = vector.scale;
            self.codes[slot * self.dims..(slot + 1) * self.dims].copy_from_slice(&vector.codes);
        }
    }

    /// Offers every kept item `keep` lets through, of similarity at least `floor`, to `best`.
    pub(crate) fn scan(
        &self,
        query: &Quantized,
        floor: f32,
        keep: impl Fn(MemoryKind, i64) -> bool,
        best: &mut Best,
    ) {
        if query.dims() != self.dims || self.dims == 0 {
            return;
        }
        for (slot, codes) in self.codes.chunks_exact(self.dims).enumerate() {
            if !keep(self.kinds[slot], self.updated_at[slot]) {
                continue;
            }
            let similarity = similarity(self.scales[slot], codes, query);
            if similarity >= floor {
                best.offer(self.ids[slot], similarity);
            }
        }
    }

    /// How many vectors it keeps.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The bytes it holds (ids, codes and the rest).
    fn bytes(&self) -> usize {
        self.codes.len() + self.ids.len() * (16 + 8 + 4 + 1 + 24)
    }
}

struct Entry {
    model: String,
    /// The scope's newest write when loaded (or last patched), in milliseconds.
    version: Option<i64>,
    /// When it was loaded, on the store's clock: a write in that same millisecond may have
    /// been missed, so only a version older than this counts as current.
    loaded_at: i64,
    used_at: i64,
    /// Read while a search ranks them, written in place when this process writes an item.
    kept: Shared,
    /// Bytes held, kept as rows come (summing them under every lookup would cost a pass).
    bytes: usize,
}

impl Entry {
    fn take_in(&mut self, written: impl IntoIterator<Item = VectorRow>) {
        let mut kept = self.kept.write().unwrap_or_else(|e| e.into_inner());
        kept.take_in(written);
        self.bytes = kept.bytes();
    }
}

/// A scope's vectors, shared by the searches that rank them.
pub(crate) type Shared = Arc<RwLock<Kept>>;

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
        let version = store.memories().scope_version(agent, scope).await?.map(|t| t.as_millis());
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
                    return Ok(entry.kept.clone());
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
            let fresh = store.memories().vectors(agent, &since, model).await?;
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get_mut(&key).filter(|e| e.model == model) {
                entry.take_in(fresh);
                entry.version = match (entry.version, version) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                entry.loaded_at = now;
                entry.used_at = now;
                return Ok(entry.kept.clone());
            }
        }
        let kept = Kept::new(store.memories().vectors(agent, &filter, model).await?);
        let bytes = kept.bytes();
        let kept: Shared = Arc::new(RwLock::new(kept));
        let entry = Entry {
            model: model.to_owned(),
            version,
            loaded_at: now,
            used_at: now,
            kept: kept.clone(),
            bytes,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, entry);
        let mut total: usize = entries.values().map(|e| e.bytes).sum();
        while total > MAX_BYTES {
            let Some(oldest) =
                entries.iter().min_by_key(|(_, e)| e.used_at).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = entries.remove(&oldest) {
                total -= gone.bytes;
            }
        }
        Ok(kept)
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

    /// How many bytes of vectors are kept now (for benchmarks and tests).
    pub(crate) fn bytes(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).values().map(|e| e.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::cosine;

    /// A spread of vectors, without a random number generator: a linear congruence.
    fn vectors(count: usize, dims: usize) -> Vec<Vec<f32>> {
        let mut state = 0x2545_f491_u64;
        (0..count)
            .map(|_| {
                (0..dims)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn quantized_cosines_are_within_a_hundredth_of_exact_ones() {
        let all = vectors(200, 384);
        let query = Quantized::new(&all[0]);
        for other in &all {
            let exact = cosine(&all[0], other);
            let near = query.cosine(&Quantized::new(other));
            assert!((exact - near).abs() < 0.01, "{exact} against {near}");
        }
        assert!((query.cosine(&query) - 1.0).abs() < 0.01);
        // Scale does not matter, a zero or broken vector is alike to nothing, and vectors of
        // other lengths are not compared.
        let doubled: Vec<f32> = all[0].iter().map(|x| x * 2.0).collect();
        assert!((query.cosine(&Quantized::new(&doubled)) - 1.0).abs() < 0.01);
        assert_eq!(query.cosine(&Quantized::new(&[0.0; 384])), 0.0);
        let mut broken = all[1].clone();
        broken[3] = f32::NAN;
        assert_eq!(query.cosine(&Quantized::new(&broken)), 0.0);
        assert_eq!(query.cosine(&Quantized::new(&all[1][..100])), 0.0);
    }

    #[test]
    fn a_scan_finds_the_exact_best_and_takes_rows_in_place() {
        let all = vectors(500, 40);
        let at = clade_core::Timestamp::from_millis(1);
        let ids: Vec<MemoryId> = (0..all.len()).map(|_| MemoryId::generate(at)).collect();
        let row = |i: usize, vector: Vec<f32>| VectorRow {
            id: ids[i],
            kind: if i.is_multiple_of(2) { MemoryKind::Fact } else { MemoryKind::Goal },
            updated_at: clade_core::Timestamp::from_millis(i as i64),
            vector,
        };
        let mut kept = Kept::new(all.iter().cloned().enumerate().map(|(i, v)| row(i, v)).collect());
        let query = Quantized::new(&all[7]);
        let mut best = Best::new(5);
        kept.scan(&query, -1.0, |_, _| true, &mut best);
        let hits = best.into_hits();
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].0, ids[7], "the vector itself first: {hits:?}");
        let mut exact: Vec<(usize, f32)> =
            all.iter().enumerate().map(|(i, v)| (i, cosine(&all[7], v))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(hits[1].0, ids[exact[1].0], "{hits:?} against {:?}", &exact[..5]);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));

        // The filter and the floor apply; a row written again replaces its slot.
        let mut best = Best::new(50);
        kept.scan(&query, 0.2, |kind, at| kind == MemoryKind::Goal && at > 100, &mut best);
        let hits = best.into_hits();
        assert!(hits.iter().all(|(id, s)| {
            let i = ids.iter().position(|x| x == id).unwrap_or(0);
            i % 2 == 1 && i > 100 && *s >= 0.2
        }));
        kept.take_in([row(7, all[8].clone())]);
        assert_eq!(kept.ids.len(), all.len());
        let mut best = Best::new(1);
        kept.scan(&Quantized::new(&all[8]), -1.0, |_, _| true, &mut best);
        let top = best.into_hits()[0];
        assert!(top.0 == ids[7] || top.0 == ids[8], "{top:?}");
        // A corrupt row read first does not set the length for the rest.
        let mut rows: Vec<VectorRow> = vec![row(0, vec![1.0; 3])];
        rows.extend((1..all.len()).map(|i| row(i, all[i].clone())));
        let mixed = Kept::new(rows);
        let mut best = Best::new(1);
        mixed.scan(&query, -1.0, |_, _| true, &mut best);
        assert_eq!(best.into_hits()[0].0, ids[7]);
        // A corrupt row of other dimensions is kept but alike to nothing.
        kept.take_in([row(9, vec![1.0; 3])]);
        let mut best = Best::new(500);
        kept.scan(&query, -1.0, |_, _| true, &mut best);
        assert!(best.into_hits().iter().any(|(id, s)| *id == ids[9] && *s == 0.0));
    }
}
