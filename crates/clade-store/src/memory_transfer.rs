//! An agent's memory read out whole and written back exactly: every stored field of its items
//! (ids, times, strength, provenance, embeddings) and its links, a page at a time, for
//! `clade memory export|import` and agents' snapshots. The file format is `clade-memory`'s.

use clade_core::{AgentId, AuditKind, MemoryId, TenantId};

use crate::db::query;
use crate::error::{Error, Result};
use crate::memories::{
    LinkRow, MAX_LINKS_PER_MEMORY, MemoryRow, check_content, check_scope, link_row, memory_row,
    owner_token, vector_bytes, vector_of,
};
use crate::store::id_bytes;

/// An item as an export holds it: the row and its embedding (made by the row's
/// `embedding_model`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRecord {
    pub row: MemoryRow,
    pub embedding: Option<Vec<f32>>,
}

/// What [`crate::Memories::import`] did with a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imported {
    /// Items written under their own ids.
    pub written: u64,
    /// Items the agent holds already (the same id): left as they are.
    pub present: u64,
    /// Items whose id another agent holds (an export imported beside its origin), as `(old,
    /// new)`: each is kept under a new id derived from its own and the agent's, the same at
    /// every import; the links that name them must be given the new one.
    pub renamed: Vec<(MemoryId, MemoryId)>,
}

/// The most dimensions an imported embedding may have.
pub const MAX_DIMENSIONS: usize = 16 * 1024;

const COLUMNS: &str = "m.id, m.agent_id, m.scope, m.kind, m.content, m.importance, m.confidence, \
     m.provenance, m.untrusted, m.strength, m.created_at, m.updated_at, m.accessed_at, \
     m.embedding_model, m.pruned_at, m.pruned_why, m.embedding";

/// Checks a record before anything of its batch is written: what [`crate::memories::check_new`]
/// checks, and strength, times and embedding as stored.
pub fn check_record(record: &MemoryRecord) -> Result<()> {
    let row = &record.row;
    check_scope(&row.scope)?;
    check_content(&row.content)?;
    for (name, value) in
        [("importance", row.importance), ("confidence", row.confidence), ("strength", row.strength)]
    {
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::InvalidMemory(format!(
                "item {}: {name} {value} is not between 0 and 1",
                row.id
            )));
        }
    }
    if row.updated_at < row.created_at {
        return Err(Error::InvalidMemory(format!(
            "item {}: updated before it was created",
            row.id
        )));
    }
    match (&record.embedding, &row.embedding_model) {
        (None, None) => {}
        (Some(vector), Some(model)) => {
            if vector.is_empty() || vector.len() > MAX_DIMENSIONS {
                return Err(Error::InvalidMemory(format!(
                    "item {}: an embedding has 1 to {MAX_DIMENSIONS} dimensions, not {}",
                    row.id,
                    vector.len()
                )));
            }
            if vector.iter().any(|x| !x.is_finite()) {
                return Err(Error::InvalidMemory(format!(
                    "item {}: the embedding holds a value that is not a finite number",
                    row.id
                )));
            }
            if model.trim().is_empty() {
                return Err(Error::InvalidMemory(format!(
                    "item {}: the embedding names no model",
                    row.id
                )));
            }
        }
        _ => {
            return Err(Error::InvalidMemory(format!(
                "item {}: an embedding and its model come together",
                row.id
            )));
        }
    }
    Ok(())
}

fn held_by(row: &crate::db::Row, tenant: TenantId, agent: AgentId) -> Result<bool> {
    Ok(id_bytes(row, "agent_id")? == *agent.as_bytes()
        && id_bytes(row, "tenant_id")? == *tenant.as_bytes())
}

/// The id an item keeps in `agent`'s memory when another agent holds its own: the same time
/// (the leading 48 bits), the rest from a digest of the id and the agent, as a version 7 UUID.
pub fn renamed_id(id: MemoryId, tenant: TenantId, agent: AgentId) -> MemoryId {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(id.as_bytes())
        .chain_update(tenant.as_bytes())
        .chain_update(agent.as_bytes())
        .finalize();
    let mut bytes = *id.as_bytes();
    bytes[6..].copy_from_slice(&digest[..10]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    MemoryId::from_bytes(bytes)
}

impl crate::Memories<'_> {
    /// A page of the agent's items in id order after `after`, each with its embedding.
    pub async fn records(
        self,
        agent: AgentId,
        after: Option<MemoryId>,
        limit: u32,
    ) -> Result<Vec<MemoryRecord>> {
        let tenant = self.tenant;
        let after = after.map_or_else(|| vec![0u8; 16], |id| id.as_bytes().to_vec());
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {COLUMNS} FROM memories m WHERE m.tenant_id = $1 AND m.agent_id = $2 \
                     AND m.id > $3 ORDER BY m.id LIMIT $4"
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(after)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let embedding: Option<Vec<u8>> = r.try_get("embedding")?;
                Ok(MemoryRecord {
                    row: memory_row(r)?,
                    embedding: embedding.as_deref().map(vector_of).transpose()?,
                })
            })
            .collect()
    }

    /// A page of the agent's links in `(from, to, kind)` order after `after`.
    pub async fn link_page(
        self,
        agent: AgentId,
        after: Option<&LinkRow>,
        limit: u32,
    ) -> Result<Vec<LinkRow>> {
        let tenant = self.tenant;
        let (from, to, kind) = after.map_or_else(
            || (vec![0u8; 16], vec![0u8; 16], String::new()),
            |l| (l.from.as_bytes().to_vec(), l.to.as_bytes().to_vec(), l.kind.as_str().to_owned()),
        );
        let rows = self
            .store
            .rows(
                query(
                    "SELECT from_id, to_id, kind, weight, created_at FROM memory_links \
                     WHERE tenant_id = $1 AND agent_id = $2 AND (from_id > $3 \
                     OR (from_id = $3 AND (to_id > $4 OR (to_id = $4 AND kind > $5)))) \
                     ORDER BY from_id, to_id, kind LIMIT $6",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent.as_bytes().to_vec())
                .bind(from)
                .bind(to)
                .bind(kind)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(link_row).collect()
    }

    /// Writes items read from an export into `agent`'s memory exactly as they were (ids, times,
    /// strength, provenance, embeddings), in one transaction, audited once. An item the agent
    /// holds already is left as it is; one whose id another agent holds gets a new id (see
    /// [`Imported::renamed`]). A record that fails [`check_record`] writes nothing of the batch.
    pub async fn import(self, agent: AgentId, records: Vec<MemoryRecord>) -> Result<Imported> {
        let tenant = self.tenant;
        for record in &records {
            check_record(record)?;
        }
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({ "change": "imported", "items": records.len() }),
        );
        let (imported, _) = self.store
            .transact(tenant, move |work| {
                let (audit, records) = (audit.clone(), records.clone());
                Box::pin(async move {
                    let agent_bytes = agent.as_bytes().to_vec();
                    let owned = query("SELECT 1 AS one FROM agents WHERE id = $1 AND tenant_id = $2")
                        .bind(agent_bytes.clone())
                        .bind(tenant.as_bytes().to_vec())
                        .fetch_optional(work.conn())
                        .await?;
                    if owned.is_none() {
                        return Err(Error::AgentNotFound(agent.to_string()));
                    }
                    let mut imported = Imported::default();
                    for record in &records {
                        let row = &record.row;
                        let holder =
                            query("SELECT tenant_id, agent_id FROM memories WHERE id = $1")
                                .bind(row.id.as_bytes().to_vec())
                                .fetch_optional(work.conn())
                                .await?;
                        let id = match holder {
                            None => row.id,
                            Some(holder) if held_by(&holder, tenant, agent)? => {
                                imported.present += 1;
                                continue;
                            }
                            Some(_) => {
                                // The same new id every time, so importing twice changes nothing.
                                let id = renamed_id(row.id, tenant, agent);
                                imported.renamed.push((row.id, id));
                                let holder = query("SELECT tenant_id, agent_id FROM memories WHERE id = $1")
                                    .bind(id.as_bytes().to_vec())
                                    .fetch_optional(work.conn())
                                    .await?;
                                match holder {
                                    None => id,
                                    Some(holder) if held_by(&holder, tenant, agent)? => {
                                        imported.present += 1;
                                        continue;
                                    }
                                    Some(_) => {
                                        return Err(Error::InvalidMemory(format!(
                                            "item {}: its id and the id it would be given here are both taken",
                                            row.id
                                        )));
                                    }
                                }
                            }
                        };
                        query(
                            "INSERT INTO memories (id, tenant_id, agent_id, scope, owner, kind, \
                             content, importance, confidence, provenance, untrusted, strength, \
                             created_at, updated_at, accessed_at, embedding, embedding_model, \
                             pruned_at, pruned_why) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                             $15, $16, $17, $18, $19)",
                        )
                        .bind(id.as_bytes().to_vec())
                        .bind(tenant.as_bytes().to_vec())
                        .bind(agent_bytes.clone())
                        .bind(row.scope.clone())
                        .bind(owner_token(agent, &row.scope))
                        .bind(row.kind.as_str())
                        .bind(row.content.clone())
                        .bind(row.importance)
                        .bind(row.confidence)
                        .bind(row.provenance.encode())
                        .bind(row.untrusted)
                        .bind(row.strength)
                        .bind(row.created_at.as_millis())
                        .bind(row.updated_at.as_millis())
                        .bind(row.accessed_at.as_millis())
                        .bind(record.embedding.as_deref().map(vector_bytes))
                        .bind(row.embedding_model.clone())
                        .bind(row.pruned.as_ref().map(|p| p.at.as_millis()))
                        .bind(row.pruned.as_ref().map(|p| p.why.clone()))
                        .execute(work.conn())
                        .await?;
                        imported.written += 1;
                    }
                    if imported.written > 0 {
                        let now = work.now();
                        crate::memory_upkeep::wrote_memory(work.conn(), tenant, agent, now).await?;
                        // Imported items keep their own write times, older than any upkeep:
                        // the next one looks at every item for repeats.
                        crate::memory_upkeep::look_at_everything(work.conn(), agent).await?;
                    }
                    work.audit(&audit).await?;
                    Ok(imported)
                })
            })
            .await?;
        Ok(imported)
    }

    /// Writes links read from an export between items of `agent`'s, as they were. A link whose
    /// ends are not both the agent's items is refused and nothing of the batch is written; one
    /// the agent has already is left as it is. Returns how many were written.
    pub async fn import_links(self, agent: AgentId, links: Vec<LinkRow>) -> Result<u64> {
        let tenant = self.tenant;
        for link in &links {
            if !(0.0..=1.0).contains(&link.weight) {
                return Err(Error::InvalidMemory(format!(
                    "link {} -> {}: weight {} is not between 0 and 1",
                    link.from, link.to, link.weight
                )));
            }
            if link.from == link.to {
                return Err(Error::InvalidMemory(format!("link {} -> itself", link.from)));
            }
        }
        let (written, _) = self
            .store
            .transact(tenant, move |work| {
                let links = links.clone();
                Box::pin(async move {
                    let mut written = 0;
                    for link in &links {
                        for end in [link.from, link.to] {
                            let mine = query(
                                "SELECT 1 AS one FROM memories WHERE id = $1 AND tenant_id = $2 \
                                 AND agent_id = $3",
                            )
                            .bind(end.as_bytes().to_vec())
                            .bind(tenant.as_bytes().to_vec())
                            .bind(agent.as_bytes().to_vec())
                            .fetch_optional(work.conn())
                            .await?;
                            if mine.is_none() {
                                return Err(Error::InvalidMemory(format!(
                                    "link {} -> {}: item {end} is not this agent's",
                                    link.from, link.to
                                )));
                            }
                        }
                        let there = query(
                            "SELECT 1 AS one FROM memory_links WHERE from_id = $1 AND to_id = $2 \
                             AND kind = $3",
                        )
                        .bind(link.from.as_bytes().to_vec())
                        .bind(link.to.as_bytes().to_vec())
                        .bind(link.kind.as_str())
                        .fetch_optional(work.conn())
                        .await?;
                        if there.is_some() {
                            continue;
                        }
                        let count =
                            query("SELECT COUNT(*) AS n FROM memory_links WHERE from_id = $1")
                                .bind(link.from.as_bytes().to_vec())
                                .fetch_one(work.conn())
                                .await?;
                        if count.try_get::<i64, _>("n")? >= MAX_LINKS_PER_MEMORY {
                            return Err(Error::InvalidMemory(format!(
                                "item {} has {MAX_LINKS_PER_MEMORY} links already",
                                link.from
                            )));
                        }
                        let done = query(
                            "INSERT INTO memory_links (tenant_id, agent_id, from_id, to_id, kind, \
                             weight, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                             ON CONFLICT (from_id, to_id, kind) DO NOTHING",
                        )
                        .bind(tenant.as_bytes().to_vec())
                        .bind(agent.as_bytes().to_vec())
                        .bind(link.from.as_bytes().to_vec())
                        .bind(link.to.as_bytes().to_vec())
                        .bind(link.kind.as_str())
                        .bind(link.weight)
                        .bind(link.created_at.as_millis())
                        .execute(work.conn())
                        .await?;
                        written += done;
                    }
                    Ok(written)
                })
            })
            .await?;
        Ok(written)
    }
}
