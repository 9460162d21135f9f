//! Agents' long-term memory as stored: typed items with provenance, scoped to an agent and an
//! isolation key, their links, and the two searches the store can run itself (full text, and
//! every vector of a scope for the caller to rank). Fusing, deduplicating and embedding are
//! `clade-memory`'s.
//!
//! Every statement filters by tenant and agent, and a scope is named explicitly: an item of
//! another scope is never read, whatever id a caller hands in.

use clade_core::{
    AgentId, AuditKind, LinkKind, MemoryId, MemoryKind, SessionId, TenantId, Timestamp, TurnId,
};
use sha2::Digest as _;

use crate::backend::Backend;
use crate::db::{Query, Row, query};
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes};

/// The longest item, in bytes of UTF-8.
pub const MAX_MEMORY_BYTES: usize = 4 * 1024;
/// The longest isolation key, in characters.
pub const MAX_SCOPE_CHARS: usize = 256;
/// The most links one item keeps.
pub const MAX_LINKS_PER_MEMORY: i64 = 100;

/// Who or what wrote an item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    pub session: Option<SessionId>,
    pub turn: Option<TurnId>,
    /// The tool whose output it came from, if any.
    pub tool: Option<String>,
    /// Who stored it: the store's actor (an operator, the agent's tools, ingestion).
    pub by: String,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct StoredProvenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    turn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    #[serde(default)]
    by: String,
}

impl Provenance {
    pub(crate) fn encode(&self) -> String {
        let stored = StoredProvenance {
            session: self.session.map(|s| s.to_string()),
            turn: self.turn.map(|t| t.to_string()),
            tool: self.tool.clone(),
            by: self.by.clone(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    fn decode(text: &str) -> Result<Self> {
        let stored: StoredProvenance = serde_json::from_str(text)
            .map_err(|e| Error::BadRow(format!("memory provenance is not JSON: {e}")))?;
        let session = stored.session.as_deref().map(str::parse).transpose();
        let turn = stored.turn.as_deref().map(str::parse).transpose();
        Ok(Self {
            session: session
                .map_err(|_| Error::BadRow("memory provenance: bad session id".into()))?,
            turn: turn.map_err(|_| Error::BadRow("memory provenance: bad turn id".into()))?,
            tool: stored.tool,
            by: stored.by,
        })
    }
}

/// One stored item (its embedding is read only by [`crate::Memories::vectors`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRow {
    pub id: MemoryId,
    pub agent_id: AgentId,
    /// The isolation key; empty for the agent's global memory.
    pub scope: String,
    pub kind: MemoryKind,
    pub content: String,
    pub importance: f64,
    pub confidence: f64,
    pub provenance: Provenance,
    /// Whether it came from content nobody vouches for (a tool's output, a web page).
    pub untrusted: bool,
    /// Decay: 1 when written or used, falling as it goes unused.
    pub strength: f64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub accessed_at: Timestamp,
    /// The model its embedding was made with, if it has one.
    pub embedding_model: Option<String>,
    /// Set when upkeep pruned it: it is then out of every search, listing and count until it
    /// is restored or purged.
    pub pruned: Option<crate::memory_upkeep::Pruned>,
}

/// An item to store.
#[derive(Debug, Clone)]
pub struct NewMemory {
    pub agent: AgentId,
    pub scope: String,
    pub kind: MemoryKind,
    pub content: String,
    pub importance: f64,
    pub confidence: f64,
    pub provenance: Provenance,
    pub untrusted: bool,
    /// The embedding and the model that made it.
    pub embedding: Option<(Vec<f32>, String)>,
}

/// What a change to an item replaces (a near-duplicate written again, an edit).
#[derive(Debug, Clone, Default)]
pub struct MemoryUpdate {
    pub kind: Option<MemoryKind>,
    pub content: Option<String>,
    pub importance: Option<f64>,
    pub confidence: Option<f64>,
    pub embedding: Option<(Vec<f32>, String)>,
}

/// An item's embedding, with what a search filters it by.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRow {
    pub id: MemoryId,
    pub kind: MemoryKind,
    pub updated_at: Timestamp,
    pub vector: Vec<f32>,
}

/// A link between two items of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    pub from: MemoryId,
    pub to: MemoryId,
    pub kind: LinkKind,
    pub weight: f64,
    pub created_at: Timestamp,
}

/// Which items a search or listing may return: one agent's, in its global scope and at most
/// one isolation key, optionally of some kinds only and updated since a time.
#[derive(Debug, Clone, Default)]
pub struct MemoryFilter {
    /// The isolation key searched beside the global scope; `None` for the global scope alone.
    pub scope: Option<String>,
    /// Whether the global scope is searched too (an operator listing one key's items says no).
    pub exclude_global: bool,
    /// Only these kinds; empty for all.
    pub kinds: Vec<MemoryKind>,
    /// Only items updated at or after this time.
    pub since: Option<Timestamp>,
}

impl MemoryFilter {
    /// `(first scope, second scope, kinds as ",a,b,", since millis)` as the statements bind
    /// them.
    fn binds(&self) -> (String, String, String, i64) {
        let global = String::new();
        let (first, second) = match (&self.scope, self.exclude_global) {
            (Some(key), true) => (key.clone(), key.clone()),
            (Some(key), false) => (global, key.clone()),
            (None, _) => (global.clone(), global),
        };
        let kinds = if self.kinds.is_empty() {
            String::new()
        } else {
            let words: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            format!(",{},", words.join(","))
        };
        (first, second, kinds, self.since.map_or(i64::MIN, Timestamp::as_millis))
    }
}

/// The filter's clauses over `m`, binding `$2`…`$7` (tenant, agent, two scopes, kinds, since).
const FILTERED: &str = "m.tenant_id = $2 AND m.agent_id = $3 AND (m.scope = $4 OR m.scope = $5) \
     AND ($6 = '' OR $6 LIKE '%,' || m.kind || ',%') AND m.updated_at >= $7 AND m.pruned_at IS NULL";

/// Which items a full-text search matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Those holding every word of the text.
    All,
    /// Those holding any word, of which the caller needs the best `needed`.
    Any { needed: u32 },
}

/// Items of one owner a word must match to count as common in its memory (see
/// `match_memory_text`).
const COMMON_WORD_ITEMS: i64 = 1000;

/// The token naming an agent and scope inside the full-text index: digits only, so no
/// stemmer changes it, and unique per (agent, scope) up to a 64-bit hash of the scope.
/// The owner a tenant's shared memory pool `name` keeps its items under (`shared.remember`):
/// a digest of the two as a UUID of version 8, which no agent's id (version 7) ever is. Its
/// rows carry the tenant like any item's, so the pool is that tenant's alone.
pub fn pool_owner(tenant: TenantId, name: &str) -> AgentId {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"clade shared memory pool\0")
        .chain_update(tenant.as_bytes())
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = 0x80 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    AgentId::from_bytes(bytes)
}

/// Whether `id` is a shared pool's owner ([`pool_owner`]), not an agent's.
pub fn is_pool_owner(id: AgentId) -> bool {
    id.as_bytes()[6] >> 4 == 8
}

pub(crate) fn owner_token(agent: AgentId, scope: &str) -> String {
    let digest = sha2::Sha256::digest(scope.as_bytes());
    let mut hash = [0u8; 8];
    hash.copy_from_slice(&digest[..8]);
    format!("m{}{:020}", u128::from_be_bytes(*agent.as_bytes()), u64::from_be_bytes(hash))
}

/// English words too common to tell texts apart: a query leaves them out (unless it has no
/// other word), as PostgreSQL's `english` configuration does, since each matches nearly every
/// item and ranking all of them is most of a search's cost.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but",
    "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of",
    "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "to", "up", "us", "was", "we", "were", "what", "when", "where",
    "which", "who", "why", "will", "with", "would", "you", "your",
];

/// The words of a query the full-text index is asked for: letters and digits only (so no
/// query syntax of either backend reaches it), lowercased, each once, at most 32, without
/// [`STOPWORDS`] unless nothing else is left.
pub fn query_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        if word.is_empty() || word.len() > 64 || words.contains(&word) {
            continue;
        }
        words.push(word);
        if words.len() == 32 {
            break;
        }
    }
    if words.iter().any(|w| !STOPWORDS.contains(&w.as_str())) {
        words.retain(|w| !STOPWORDS.contains(&w.as_str()));
    }
    words
}

/// Checks an isolation key: at most 256 characters, none of them a control character.
pub fn check_scope(scope: &str) -> Result<()> {
    if scope.chars().count() > MAX_SCOPE_CHARS || scope.chars().any(char::is_control) {
        return Err(Error::InvalidMemory(format!(
            "isolation key {scope:?}: at most {MAX_SCOPE_CHARS} characters, none of them a control character"
        )));
    }
    Ok(())
}

/// Checks an item's content: not blank, at most 4 KiB, no NUL or other control characters
/// but line breaks and tabs.
pub fn check_content(content: &str) -> Result<()> {
    if content.trim().is_empty() {
        return Err(Error::InvalidMemory("the content is empty".into()));
    }
    if content.len() > MAX_MEMORY_BYTES {
        return Err(Error::InvalidMemory(format!(
            "the content is {} bytes, over {MAX_MEMORY_BYTES}: save the essential part, or split it into several items",
            content.len()
        )));
    }
    if content.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(Error::InvalidMemory(
            "the content holds control characters: it must be text".into(),
        ));
    }
    Ok(())
}

/// Checks an item before anything is stored or embedded: its scope, its content, and its
/// importance and confidence between 0 and 1.
pub fn check_new(new: &NewMemory) -> Result<()> {
    check_scope(&new.scope)?;
    check_content(&new.content)?;
    check_unit("importance", new.importance)?;
    check_unit("confidence", new.confidence)
}

fn check_unit(name: &str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidMemory(format!("{name} {value}: it must be between 0 and 1")))
    }
}

pub(crate) fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored embedding read back; a length that is not whole floats is a bad row.
pub fn vector_of(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Error::BadRow(format!(
            "an embedding of {} bytes is not whole floats",
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

pub(crate) const COLUMNS: &str = "m.id, m.agent_id, m.scope, m.kind, m.content, m.importance, \
     m.confidence, m.provenance, m.untrusted, m.strength, m.created_at, m.updated_at, \
     m.accessed_at, m.embedding_model, m.pruned_at, m.pruned_why";

pub(crate) fn memory_row(row: &Row) -> Result<MemoryRow> {
    Ok(MemoryRow {
        id: MemoryId::from_bytes(id_bytes(row, "id")?),
        agent_id: AgentId::from_bytes(id_bytes(row, "agent_id")?),
        scope: row.try_get("scope")?,
        kind: row.word("kind", MemoryKind::parse)?,
        content: row.try_get("content")?,
        importance: row.try_get("importance")?,
        confidence: row.try_get("confidence")?,
        provenance: Provenance::decode(&row.try_get::<String, _>("provenance")?)?,
        untrusted: row.try_get("untrusted")?,
        strength: row.try_get("strength")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
        accessed_at: Timestamp::from_millis(row.try_get("accessed_at")?),
        embedding_model: row.try_get("embedding_model")?,
        pruned: match row.try_get::<Option<i64>, _>("pruned_at")? {
            Some(at) => Some(crate::memory_upkeep::Pruned {
                at: Timestamp::from_millis(at),
                why: row.try_get::<Option<String>, _>("pruned_why")?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

pub(crate) fn link_row(row: &Row) -> Result<LinkRow> {
    Ok(LinkRow {
        from: MemoryId::from_bytes(id_bytes(row, "from_id")?),
        to: MemoryId::from_bytes(id_bytes(row, "to_id")?),
        kind: row.word("kind", LinkKind::parse)?,
        weight: row.try_get("weight")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn bytes<const N: usize>(id: &[u8; N]) -> Vec<u8> {
    id.to_vec()
}

/// Deletes an item of the agent and its links inside a transaction; 1 if it did, 0 if there
/// was no such item.
pub(crate) async fn delete_in(
    conn: &mut crate::db::Tx,
    tenant: TenantId,
    agent: AgentId,
    id: MemoryId,
) -> Result<u64> {
    let key = bytes(id.as_bytes());
    let deleted = query("DELETE FROM memories WHERE id = $1 AND tenant_id = $2 AND agent_id = $3")
        .bind(key.clone())
        .bind(tenant.as_bytes().to_vec())
        .bind(agent.as_bytes().to_vec())
        .execute(&mut *conn)
        .await?;
    if deleted > 0 {
        query("DELETE FROM memory_links WHERE agent_id = $2 AND (from_id = $1 OR to_id = $1)")
            .bind(key)
            .bind(agent.as_bytes().to_vec())
            .execute(conn)
            .await?;
    }
    Ok(deleted)
}

/// Applies `update` to an item of the agent inside a transaction (`extra`: more conditions on
/// the row, as SQL); renews its strength. How many rows changed (0: no such item).
pub(crate) async fn update_in(
    conn: &mut crate::db::Tx,
    tenant: TenantId,
    agent: AgentId,
    id: MemoryId,
    update: &MemoryUpdate,
    now: Timestamp,
    extra: &'static str,
) -> Result<u64> {
    let (embedding, model) = match &update.embedding {
        Some((vector, model)) => (Some(vector_bytes(vector)), Some(model.clone())),
        None => (None, None),
    };
    query(format!(
        "UPDATE memories SET kind = COALESCE($4, kind), content = COALESCE($5, content), \
         importance = COALESCE($6, importance), confidence = COALESCE($7, confidence), \
         embedding = CASE WHEN $8 IS NULL THEN embedding ELSE $8 END, \
         embedding_model = COALESCE($9, embedding_model), \
         strength = 1.0, updated_at = $10, accessed_at = $10 \
         WHERE id = $1 AND tenant_id = $2 AND agent_id = $3 {extra}"
    ))
    .bind(bytes(id.as_bytes()))
    .bind(tenant.as_bytes().to_vec())
    .bind(agent.as_bytes().to_vec())
    .bind(update.kind.map(MemoryKind::as_str))
    .bind(update.content.clone())
    .bind(update.importance)
    .bind(update.confidence)
    .bind(embedding)
    .bind(model)
    .bind(now.as_millis())
    .execute(conn)
    .await
}

impl Store {
    async fn match_memory_text(
        &self,
        tenant: TenantId,
        agent: AgentId,
        filter: &MemoryFilter,
        text: &str,
        limit: u32,
        how: Match,
    ) -> Result<Vec<(MemoryId, f64)>> {
        let all = how == Match::All;
        let words = query_words(text);
        let (and, or) = (" AND ", " OR ");
        if words.is_empty() {
            return Ok(Vec::new());
        }
        if self.backend() == Backend::Postgres {
            let q = query(format!(
                "SELECT m.id, CAST(ts_rank(m.content_tsv, to_tsquery('english', $1)) AS DOUBLE PRECISION) AS score \
                 FROM memories m WHERE m.content_tsv @@ to_tsquery('english', $1) AND {FILTERED} \
                 ORDER BY score DESC LIMIT $8"
            ))
            .bind(words.join(if all { " & " } else { " | " }));
            return self.scored(q, tenant, agent, filter, limit).await;
        }
        let (first, second, ..) = filter.binds();
        // One phrase when both scopes are one: a repeated owner phrase is intersected and
        // scored twice.
        let scopes: &[&String] = if first == second { &[&first] } else { &[&first, &second] };
        let owners: Vec<String> =
            scopes.iter().map(|scope| format!("owner : {}", owner_token(agent, scope))).collect();
        let owned = format!("({})", owners.join(or));
        let terms: Vec<String> = words.iter().map(|w| format!("content : \"{w}\"")).collect();
        if all {
            let expression = format!("{owned} AND ({})", terms.join(and));
            return self.fts_ranked(tenant, agent, filter, &expression, limit).await;
        }
        // Words the agent's memory holds often (a name in 8,000 of 100,000 items) cost a score
        // for every item they match, yet an item with nothing else of the query rarely ranks
        // among the best. When the query has rarer words, the match asks for one of those and
        // lets the common ones only score: `R AND (C OR R)` matches what `R` does and scores
        // the common words too (the rare ones twice, which keeps their order among
        // themselves; closing the group with the owner phrase instead cost a second pass over
        // the owner's whole list for its weight). If that finds fewer than the caller needs,
        // the whole match runs as before. Elasticsearch's "common terms" query does the same.
        if let Match::Any { needed } = how
            && terms.len() > 1
        {
            let counts = self.fts_counts(&owned, &terms).await?;
            let (mut rare, mut common) = (Vec::new(), Vec::new());
            for (term, count) in terms.iter().zip(counts) {
                match count {
                    0 => {}
                    n if n < COMMON_WORD_ITEMS => rare.push(term.as_str()),
                    _ => common.push(term.as_str()),
                }
            }
            if !rare.is_empty() && !common.is_empty() {
                let rare = rare.join(or);
                let expression =
                    format!("{owned} AND ({rare}) AND ({}{or}{rare})", common.join(or));
                let hits = self.fts_ranked(tenant, agent, filter, &expression, limit).await?;
                if hits.len() >= needed.min(limit) as usize {
                    return Ok(hits);
                }
            }
        }
        let expression = format!("{owned} AND ({})", terms.join(or));
        self.fts_ranked(tenant, agent, filter, &expression, limit).await
    }

    /// How many of the owner's items each term matches, counted up to [`COMMON_WORD_ITEMS`]
    /// (so a very common word costs no more than that), in one statement.
    async fn fts_counts(&self, owned: &str, terms: &[String]) -> Result<Vec<i64>> {
        let counts: Vec<String> = (1..=terms.len())
            .map(|i| {
                format!(
                    "(SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ${i} \
                     LIMIT {COMMON_WORD_ITEMS})) AS c{i}"
                )
            })
            .collect();
        let mut q = query(format!("SELECT {}", counts.join(", ")));
        for term in terms {
            q = q.bind(format!("{owned} AND {term}"));
        }
        let rows = self.rows(q).await?;
        let Some(row) = rows.first() else { return Ok(vec![0; terms.len()]) };
        (0..terms.len()).map(|i| row.try_get(i)).collect()
    }

    /// The items an FTS5 `expression` matches, best first by BM25, through the filter.
    async fn fts_ranked(
        &self,
        tenant: TenantId,
        agent: AgentId,
        filter: &MemoryFilter,
        expression: &str,
        limit: u32,
    ) -> Result<Vec<(MemoryId, f64)>> {
        // The match runs once, materialized, and ranks inside the index: the owner token
        // already confines it to the agent and scopes, so only the best rows are read, not
        // every row a common word matches. `CROSS JOIN` keeps that order: left to choose, the
        // planner walks the agent's whole index and probes the hits (200 ms at 100,000 items,
        // against 30). A filter by kind or time reads more of them, since it is applied to
        // the rows.
        let ranked = if filter.kinds.is_empty() && filter.since.is_none() {
            i64::from(limit)
        } else {
            i64::from(limit).saturating_mul(20).max(1000)
        };
        let q = query(format!(
            "WITH hits AS MATERIALIZED (SELECT rowid AS n, -bm25(memories_fts, 0.0, 1.0) AS score \
             FROM memories_fts WHERE memories_fts MATCH $1 ORDER BY score DESC LIMIT {ranked}) \
             SELECT m.id, hits.score FROM hits CROSS JOIN memories m ON m.n = hits.n \
             WHERE {FILTERED} ORDER BY hits.score DESC LIMIT $8"
        ))
        .bind(expression.to_owned());
        self.scored(q, tenant, agent, filter, limit).await
    }

    /// Runs a full-text statement that takes its search as `$1` and [`FILTERED`]'s values
    /// and the limit after it, and reads its `(id, score)` rows.
    async fn scored(
        &self,
        q: Query,
        tenant: TenantId,
        agent: AgentId,
        filter: &MemoryFilter,
        limit: u32,
    ) -> Result<Vec<(MemoryId, f64)>> {
        let (first, second, kinds, since) = filter.binds();
        let rows = self
            .rows(
                q.bind(tenant.as_bytes().to_vec())
                    .bind(agent.as_bytes().to_vec())
                    .bind(first)
                    .bind(second)
                    .bind(kinds)
                    .bind(since)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((MemoryId::from_bytes(id_bytes(r, "id")?), r.try_get("score")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tokens_are_digits_after_one_letter_and_differ_per_scope() {
        let agent = AgentId::from_bytes([7; 16]);
        let global = owner_token(agent, "");
        assert!(global.starts_with('m') && global[1..].chars().all(|c| c.is_ascii_digit()));
        assert_ne!(global, owner_token(agent, "telegram:42"));
        assert_ne!(global, owner_token(AgentId::from_bytes([8; 16]), ""));
    }

    #[test]
    fn query_words_carry_no_syntax() {
        assert_eq!(query_words("NEAR(\"a\" b) OR c* -- 'x'"), ["near", "b", "c", "x"]);
        assert_eq!(query_words("what did Ada do with the bike?"), ["ada", "bike"]);
        assert_eq!(query_words("to be or not to be"), ["to", "be", "or", "not"]);
        assert!(query_words("\"*():^-").is_empty());
        assert_eq!(query_words("Zoë zoë"), ["zoë"]);
    }

    #[test]
    fn content_checks_name_the_problem() {
        assert!(check_content(" \n").unwrap_err().to_string().contains("empty"));
        assert!(check_content(&"x".repeat(5000)).unwrap_err().to_string().contains("over 4096"));
        assert!(check_content("a\0b").unwrap_err().to_string().contains("control"));
        assert!(check_content("two\nlines\tok").is_ok());
        assert_eq!(vector_of(&vector_bytes(&[1.5, -2.0])).unwrap(), [1.5, -2.0]);
        assert!(vector_of(&[0, 1, 2]).is_err());
    }
}

/// One tenant's memory items, with their links, upkeep and transfer. Whatever ids it is
/// handed, it reads and writes only the rows of the tenant it was made for.
#[derive(Clone, Copy)]
pub struct Memories<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s memory items.
    pub fn memories(&self, tenant: TenantId) -> Memories<'_> {
        Memories { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's memory items.
    pub fn memories(&self) -> Memories<'_> {
        self.store().memories(self.tenant())
    }
}

impl Memories<'_> {
    /// Stores an item, audited (`memory.changed`, its id and never its content).
    pub async fn save(self, new: NewMemory) -> Result<MemoryRow> {
        let tenant = self.tenant;
        self.store.memories(tenant).save_within(new, u64::MAX).await
    }

    /// [`crate::Memories::save`], refused with [`Error::MemoryFull`] when the agent holds
    /// `max_items` items already (counted in the same transaction, so concurrent saves cannot
    /// pass the limit together).
    pub async fn save_within(self, new: NewMemory, max_items: u64) -> Result<MemoryRow> {
        let tenant = self.tenant;
        check_new(&new)?;
        let id = MemoryId::generate(self.store.now());
        let audit = self.store.admin_record(
            tenant,
            Some(new.agent),
            AuditKind::MemoryChanged,
            serde_json::json!({ "memory": id.to_string(), "change": "saved" }),
        );
        let (row, _) = self.store
            .transact(tenant, move |work| {
                let (audit, new) = (audit.clone(), new.clone());
                Box::pin(async move {
                    let now = work.now();
                    let agent = new.agent.as_bytes().to_vec();
                    // An id from anywhere but this tenant's agents stores nothing.
                    let owned = query("SELECT 1 AS one FROM agents WHERE id = $1 AND tenant_id = $2")
                        .bind(agent.clone())
                        .bind(tenant.as_bytes().to_vec())
                        .fetch_optional(work.conn())
                        .await?;
                    if owned.is_none() && !is_pool_owner(new.agent) {
                        return Err(Error::AgentNotFound(new.agent.to_string()));
                    }
                    if max_items < u64::MAX {
                        let held: i64 = query(
                            "SELECT COUNT(*) AS n FROM memories WHERE tenant_id = $1 AND agent_id = $2 \
                             AND pruned_at IS NULL",
                        )
                        .bind(tenant.as_bytes().to_vec())
                        .bind(agent.clone())
                        .fetch_one(work.conn())
                        .await?
                        .try_get("n")?;
                        let held = u64::try_from(held).unwrap_or(0);
                        if held >= max_items {
                            return Err(Error::MemoryFull { held });
                        }
                    }
                    let (embedding, model) = match &new.embedding {
                        Some((vector, model)) => (Some(vector_bytes(vector)), Some(model.clone())),
                        None => (None, None),
                    };
                    query(
                        "INSERT INTO memories (id, tenant_id, agent_id, scope, owner, kind, content, \
                         importance, confidence, provenance, untrusted, strength, created_at, \
                         updated_at, accessed_at, embedding, embedding_model) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1.0, $12, $12, $12, $13, $14)",
                    )
                    .bind(bytes(id.as_bytes()))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent)
                    .bind(new.scope.clone())
                    .bind(owner_token(new.agent, &new.scope))
                    .bind(new.kind.as_str())
                    .bind(new.content.clone())
                    .bind(new.importance)
                    .bind(new.confidence)
                    .bind(new.provenance.encode())
                    .bind(new.untrusted)
                    .bind(now.as_millis())
                    .bind(embedding)
                    .bind(model.clone())
                    .execute(work.conn())
                    .await?;
                    crate::memory_upkeep::wrote_memory(work.conn(), tenant, new.agent, now).await?;
                    work.audit(&audit).await?;
                    Ok(MemoryRow {
                        id,
                        agent_id: new.agent,
                        scope: new.scope,
                        kind: new.kind,
                        content: new.content,
                        importance: new.importance,
                        confidence: new.confidence,
                        provenance: new.provenance,
                        untrusted: new.untrusted,
                        strength: 1.0,
                        created_at: now,
                        updated_at: now,
                        accessed_at: now,
                        embedding_model: model,
                        pruned: None,
                    })
                })
            })
            .await?;
        Ok(row)
    }

    /// Changes an item of the agent's, audited; its strength is renewed.
    pub async fn update(
        self,
        agent: AgentId,
        id: MemoryId,
        update: MemoryUpdate,
    ) -> Result<MemoryRow> {
        let tenant = self.tenant;
        if let Some(content) = &update.content {
            check_content(content)?;
        }
        if let Some(importance) = update.importance {
            check_unit("importance", importance)?;
        }
        if let Some(confidence) = update.confidence {
            check_unit("confidence", confidence)?;
        }
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({ "memory": id.to_string(), "change": "updated" }),
        );
        self.store
            .transact(tenant, move |work| {
                let (audit, update) = (audit.clone(), update.clone());
                Box::pin(async move {
                    let now = work.now();
                    let live = "AND pruned_at IS NULL";
                    if update_in(work.conn(), tenant, agent, id, &update, now, live).await? == 0 {
                        return Err(Error::MemoryNotFound(id.to_string()));
                    }
                    if update.content.is_some() {
                        crate::memory_upkeep::wrote_memory(work.conn(), tenant, agent, now).await?;
                    }
                    work.audit(&audit).await?;
                    Ok(())
                })
            })
            .await?;
        self.store.memories(tenant).get(agent, id).await
    }

    /// Removes an item and its links, audited.
    pub async fn forget(self, agent: AgentId, id: MemoryId) -> Result<()> {
        let tenant = self.tenant;
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({ "memory": id.to_string(), "change": "forgotten" }),
        );
        self.store
            .transact(tenant, move |work| {
                let audit = audit.clone();
                Box::pin(async move {
                    if delete_in(work.conn(), tenant, agent, id).await? == 0 {
                        return Err(Error::MemoryNotFound(id.to_string()));
                    }
                    work.audit(&audit).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    /// Links two items of one agent (replacing the weight of the same link), audited. Both
    /// must be the agent's; they may be in different scopes only if one of them is global.
    pub async fn link(
        self,
        agent: AgentId,
        from: MemoryId,
        to: MemoryId,
        kind: LinkKind,
        weight: f64,
    ) -> Result<LinkRow> {
        let tenant = self.tenant;
        check_unit("weight", weight)?;
        if from == to {
            return Err(Error::InvalidMemory("an item cannot be linked to itself".into()));
        }
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({
                "memory": from.to_string(), "change": "linked", "to": to.to_string(), "link": kind.as_str()
            }),
        );
        let (row, _) = self.store
            .transact(tenant, move |work| {
                let audit = audit.clone();
                Box::pin(async move {
                    let now = work.now();
                    let ends = query(
                        "SELECT id, scope FROM memories WHERE tenant_id = $1 AND agent_id = $2 \
                         AND (id = $3 OR id = $4)",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent.as_bytes().to_vec())
                    .bind(bytes(from.as_bytes()))
                    .bind(bytes(to.as_bytes()))
                    .fetch_all(work.conn())
                    .await?;
                    for end in [from, to] {
                        if !ends.iter().any(|r| id_bytes(r, "id").is_ok_and(|b| b == *end.as_bytes())) {
                            return Err(Error::MemoryNotFound(end.to_string()));
                        }
                    }
                    let scopes: Vec<String> =
                        ends.iter().map(|r| r.try_get("scope")).collect::<Result<_>>()?;
                    if scopes.iter().all(|s| !s.is_empty()) && scopes.windows(2).any(|w| w[0] != w[1]) {
                        return Err(Error::InvalidMemory(
                            "the two items are in different isolation scopes: a link would carry one into the other".into(),
                        ));
                    }
                    let links = query(
                        "SELECT COUNT(*) AS n FROM memory_links WHERE agent_id = $1 AND from_id = $2",
                    )
                    .bind(agent.as_bytes().to_vec())
                    .bind(bytes(from.as_bytes()))
                    .fetch_one(work.conn())
                    .await?;
                    if links.try_get::<i64, _>("n")? >= MAX_LINKS_PER_MEMORY {
                        return Err(Error::InvalidMemory(format!(
                            "an item keeps at most {MAX_LINKS_PER_MEMORY} links"
                        )));
                    }
                    query(
                        "INSERT INTO memory_links (tenant_id, agent_id, from_id, to_id, kind, weight, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (from_id, to_id, kind) \
                         DO UPDATE SET weight = excluded.weight",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent.as_bytes().to_vec())
                    .bind(bytes(from.as_bytes()))
                    .bind(bytes(to.as_bytes()))
                    .bind(kind.as_str())
                    .bind(weight)
                    .bind(now.as_millis())
                    .execute(work.conn())
                    .await?;
                    work.audit(&audit).await?;
                    Ok(LinkRow { from, to, kind, weight, created_at: now })
                })
            })
            .await?;
        Ok(row)
    }

    /// One item of the agent's, in any of its scopes.
    pub async fn get(self, agent: AgentId, id: MemoryId) -> Result<MemoryRow> {
        let tenant = self.tenant;
        let rows = self.store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM memories m WHERE m.id = $1 AND m.tenant_id = $2 AND m.agent_id = $3"
                ))
                .bind(bytes(id.as_bytes()))
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec()),
            )
            .await?;
        rows.first()
            .map(memory_row)
            .transpose()?
            .ok_or_else(|| Error::MemoryNotFound(id.to_string()))
    }

    /// Several items of the agent's by id, in the filter's scopes; missing ones are left out.
    pub async fn by_id(
        self,
        agent: AgentId,
        filter: &MemoryFilter,
        ids: &[MemoryId],
    ) -> Result<Vec<MemoryRow>> {
        let tenant = self.tenant;
        let mut found = Vec::with_capacity(ids.len());
        // A statement per hundred ids keeps the parameter count portable.
        for chunk in ids.chunks(100) {
            let (first, second, kinds, since) = filter.binds();
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 8)).collect();
            // The ids are looked up first, by their own index: with the filter beside them, the
            // planner would rather walk the agent's index and test every row against the list.
            // SQLite's `CROSS JOIN` fixes that order, which PostgreSQL's planner keeps anyway.
            let join = match self.store.backend() {
                Backend::Sqlite => "CROSS JOIN",
                Backend::Postgres => "JOIN",
            };
            let mut q = query(format!(
                "WITH wanted AS MATERIALIZED (SELECT n FROM memories WHERE id IN ({})) \
                 SELECT {COLUMNS} FROM wanted {join} memories m ON m.n = wanted.n \
                 WHERE $1 = $1 AND {FILTERED}",
                marks.join(", ")
            ))
            .bind(0i64)
            .bind(tenant.as_bytes().to_vec())
            .bind(agent.as_bytes().to_vec())
            .bind(first)
            .bind(second)
            .bind(kinds)
            .bind(since);
            for id in chunk {
                q = q.bind(bytes(id.as_bytes()));
            }
            for row in self.store.rows(q).await? {
                found.push(memory_row(&row)?);
            }
        }
        Ok(found)
    }

    /// The agent's items in the filter's scopes, most recently updated first, after `before`
    /// (an item's `(updated_at, id)`, as the last page ended).
    pub async fn list(
        self,
        agent: AgentId,
        filter: &MemoryFilter,
        before: Option<(Timestamp, MemoryId)>,
        limit: u32,
    ) -> Result<Vec<MemoryRow>> {
        let tenant = self.tenant;
        let (first, second, kinds, since) = filter.binds();
        let (at, id) = before.map_or((i64::MAX, vec![0xff; 16]), |(at, id)| {
            (at.as_millis(), id.as_bytes().to_vec())
        });
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM memories m WHERE {FILTERED} \
                     AND (m.updated_at < $8 OR (m.updated_at = $8 AND m.id < $9)) \
                     AND $1 = $1 ORDER BY m.updated_at DESC, m.id DESC LIMIT $10"
                ))
                .bind(0i64)
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(first)
                .bind(second)
                .bind(kinds)
                .bind(since)
                .bind(at)
                .bind(id)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(memory_row).collect()
    }

    /// The number of live (not pruned) items the agent keeps, over all its scopes.
    pub async fn count(self, agent: AgentId) -> Result<i64> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT COUNT(*) AS n FROM memories WHERE tenant_id = $1 AND agent_id = $2 \
                     AND pruned_at IS NULL",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec()),
            )
            .await?;
        rows.first().map_or(Ok(0), |r| r.try_get("n"))
    }

    /// The agent's items matching any word of `text` by full text, best first, at most
    /// `limit`: ids with the backend's score (higher is better). A text with no word finds
    /// nothing. The caller needs only the best `needed` (at most `limit`): when the query's
    /// rarer words find that many, items holding nothing but its common words (which would
    /// rank below them) are not searched for; `needed == limit` asks for all of them.
    pub async fn search_text(
        self,
        agent: AgentId,
        filter: &MemoryFilter,
        text: &str,
        limit: u32,
        needed: u32,
    ) -> Result<Vec<(MemoryId, f64)>> {
        let tenant = self.tenant;
        self.store
            .match_memory_text(tenant, agent, filter, text, limit, Match::Any { needed })
            .await
    }

    /// The agent's items holding every word of `text` (repeats of it, worded alike), best
    /// first, at most `limit`. Cheap however large the memory: the index intersects.
    pub async fn with_words_of(
        self,
        agent: AgentId,
        filter: &MemoryFilter,
        text: &str,
        limit: u32,
    ) -> Result<Vec<(MemoryId, f64)>> {
        let tenant = self.tenant;
        self.store.match_memory_text(tenant, agent, filter, text, limit, Match::All).await
    }

    /// Every embedding made by `model` of the agent's items in the filter's scopes, with each
    /// item's kind and update time, for the caller to rank (and keep).
    pub async fn vectors(
        self,
        agent: AgentId,
        filter: &MemoryFilter,
        model: &str,
    ) -> Result<Vec<VectorRow>> {
        let tenant = self.tenant;
        let (first, second, kinds, since) = filter.binds();
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT m.id, m.kind, m.updated_at, m.embedding FROM memories m \
                     WHERE m.embedding_model = $1 AND {FILTERED}"
                ))
                .bind(model.to_owned())
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(first)
                .bind(second)
                .bind(kinds)
                .bind(since),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VectorRow {
                    id: MemoryId::from_bytes(id_bytes(r, "id")?),
                    kind: r.word("kind", MemoryKind::parse)?,
                    updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
                    vector: vector_of(&r.try_get::<Vec<u8>, _>("embedding")?)?,
                })
            })
            .collect()
    }

    /// The stored embedding of one of the agent's items by `model`, if it has one.
    pub async fn embedding(
        self,
        agent: AgentId,
        id: MemoryId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT embedding FROM memories WHERE id = $1 AND tenant_id = $2 \
                     AND agent_id = $3 AND embedding_model = $4",
                )
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(model.to_owned()),
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(vector_of(&row.try_get::<Vec<u8>, _>("embedding")?)?)),
            None => Ok(None),
        }
    }

    /// When an item of the agent's `scope` was last written (`None` when it has none): a
    /// cache of the scope's vectors is current while this is unchanged. One index seek.
    pub async fn scope_version(self, agent: AgentId, scope: &str) -> Result<Option<Timestamp>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT MAX(updated_at) AS u FROM memories \
                     WHERE tenant_id = $1 AND agent_id = $2 AND scope = $3",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(scope.to_owned()),
            )
            .await?;
        let latest: Option<i64> = match rows.first() {
            Some(row) => row.try_get("u")?,
            None => None,
        };
        Ok(latest.map(Timestamp::from_millis))
    }

    /// The agent's items without an embedding by `model` (made before it, or while it could
    /// not be reached), oldest first, at most `limit`.
    pub async fn to_embed(self, agent: AgentId, model: &str, limit: u32) -> Result<Vec<MemoryRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM memories m WHERE m.tenant_id = $1 AND m.agent_id = $2 \
                     AND (m.embedding_model IS NULL OR m.embedding_model <> $3) \
                     AND m.pruned_at IS NULL ORDER BY m.n LIMIT $4"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(model.to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(memory_row).collect()
    }

    /// The links from or to any of `ids` among the agent's items.
    pub async fn links(self, agent: AgentId, ids: &[MemoryId]) -> Result<Vec<LinkRow>> {
        let tenant = self.tenant;
        let mut links = Vec::new();
        for chunk in ids.chunks(100) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let marks = marks.join(", ");
            let mut q = query(format!(
                "SELECT from_id, to_id, kind, weight, created_at FROM memory_links \
                 WHERE tenant_id = $1 AND agent_id = $2 AND (from_id IN ({marks}) OR to_id IN ({marks}))"
            ))
            .bind(tenant.as_bytes().to_vec())
            .bind(agent.as_bytes().to_vec());
            for id in chunk {
                q = q.bind(bytes(id.as_bytes()));
            }
            for row in self.store.rows(q).await? {
                let link = link_row(&row)?;
                if !links.contains(&link) {
                    links.push(link);
                }
            }
        }
        Ok(links)
    }

    /// Marks items as used now (their strength renewed), unaudited: reading is not a change.
    pub async fn touch(self, agent: AgentId, ids: Vec<MemoryId>) -> Result<()> {
        let tenant = self.tenant;
        if ids.is_empty() {
            return Ok(());
        }
        self.store
            .transact(tenant, move |work| {
                let ids = ids.clone();
                Box::pin(async move {
                    let now = work.now();
                    for id in &ids {
                        query(
                            "UPDATE memories SET accessed_at = $4, strength = 1.0 \
                         WHERE id = $1 AND tenant_id = $2 AND agent_id = $3",
                        )
                        .bind(bytes(id.as_bytes()))
                        .bind(tenant.as_bytes().to_vec())
                        .bind(agent.as_bytes().to_vec())
                        .bind(now.as_millis())
                        .execute(work.conn())
                        .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }
}

impl crate::MemoryUpkeep<'_> {
    /// Agents, of any tenant, holding items with no vector by `model` (at most `limit`): what
    /// a change of embeddings model leaves to embed again. One pass over the items.
    pub async fn agents_to_embed(
        self,
        model: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, AgentId)>> {
        let rows = self
            .store
            .rows(
                query(
                    "SELECT DISTINCT tenant_id, agent_id FROM memories \
                     WHERE (embedding_model IS NULL OR embedding_model <> $1) \
                     AND pruned_at IS NULL LIMIT $2",
                )
                .bind(model.to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_bytes(id_bytes(r, "tenant_id")?),
                    AgentId::from_bytes(id_bytes(r, "agent_id")?),
                ))
            })
            .collect()
    }
}
