//! What the cortex's upkeep of agents' memories needs from the store: which agents wait for
//! it (a row per agent in `memory_upkeep`, so an idle agent costs nothing until its own due
//! time), each live item's vitals for decay, and the changes upkeep makes: strengths renewed,
//! items pruned (soft-deleted: out of every search, listing and count, restorable until
//! purged), a repeat merged into the item it repeats, the long-pruned purged for good.
//! The policy (how fast items fade, what is pruned) is `clade-memory`'s.

use clade_core::{AgentId, AuditKind, MemoryId, MemoryKind, TenantId, Timestamp};

use crate::db::{Tx, query};
use crate::error::{Error, Result};
use crate::memories::{MemoryRow, MemoryUpdate, memory_row};
use crate::store::{Store, id_bytes};

/// How `Pruned::why` starts for a repeat merged into another item (its id follows).
pub const MERGED_INTO: &str = "merged into ";

/// Why an item was pruned, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    pub at: Timestamp,
    /// `decayed`, or `merged into <id>`.
    pub why: String,
}

/// What decay reads of a live item.
#[derive(Debug, Clone, PartialEq)]
pub struct Vitals {
    pub id: MemoryId,
    pub kind: MemoryKind,
    pub importance: f64,
    pub strength: f64,
    pub accessed_at: Timestamp,
}

/// A page of vitals and where the next one starts.
#[derive(Debug, Clone, Default)]
pub struct VitalsPage {
    pub items: Vec<Vitals>,
    /// Pass to the next call; `None` when this page was the last.
    pub next: Option<i64>,
}

/// An agent waiting for upkeep, and when its last one began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpkeepDue {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub last_ran: Option<Timestamp>,
}

/// Notes, inside a writing transaction, that `agent` wrote to its memory at `now`: its upkeep
/// is asked for (see [`crate::MemoryUpkeep::due`]).
pub(crate) async fn wrote_memory(
    conn: &mut Tx,
    tenant: TenantId,
    agent: AgentId,
    now: Timestamp,
) -> Result<()> {
    query(
        "INSERT INTO memory_upkeep (agent_id, tenant_id, written_at, last_write_at) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (agent_id) DO UPDATE SET \
         written_at = COALESCE(memory_upkeep.written_at, excluded.written_at), \
         last_write_at = excluded.last_write_at",
    )
    .bind(agent.as_bytes().to_vec())
    .bind(tenant.as_bytes().to_vec())
    .bind(now.as_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes the agent's next upkeep look at every item for repeats, not only those written since
/// the last one (items written with times of their own, as an import keeps them).
pub(crate) async fn look_at_everything(conn: &mut Tx, agent: AgentId) -> Result<()> {
    query("UPDATE memory_upkeep SET ran_at = NULL WHERE agent_id = $1")
        .bind(agent_key(agent))
        .execute(conn)
        .await?;
    Ok(())
}

fn agent_key(agent: AgentId) -> Vec<u8> {
    agent.as_bytes().to_vec()
}

/// Prunes one live item inside a transaction; 1 if it did, 0 if there was none such. The
/// write time moves, so every process's kept vectors of its scope are read again.
/// Prunes one live item; with `used`, only if it was not used after that time.
async fn prune_in(
    conn: &mut Tx,
    tenant: TenantId,
    agent: AgentId,
    id: MemoryId,
    used: Option<Timestamp>,
    why: &str,
    now: Timestamp,
) -> Result<u64> {
    query(
        "UPDATE memories SET pruned_at = $4, pruned_why = $5, updated_at = $4 \
         WHERE id = $1 AND tenant_id = $2 AND agent_id = $3 AND pruned_at IS NULL \
         AND ($6 IS NULL OR accessed_at <= $6)",
    )
    .bind(id.as_bytes().to_vec())
    .bind(tenant.as_bytes().to_vec())
    .bind(agent_key(agent))
    .bind(now.as_millis())
    .bind(why.to_owned())
    .bind(used.map(|t| t.as_millis()))
    .execute(conn)
    .await
}

impl crate::Memories<'_> {
    /// When the agent's last upkeep began (`None`: never, or it holds no items).
    pub async fn upkeep_ran(self, agent: AgentId) -> Result<Option<Timestamp>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query("SELECT ran_at FROM memory_upkeep WHERE agent_id = $1 AND tenant_id = $2")
                    .bind(agent_key(agent))
                    .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        let ran: Option<i64> = match rows.first() {
            Some(row) => row.try_get("ran_at")?,
            None => None,
        };
        Ok(ran.map(Timestamp::from_millis))
    }

    /// Records an upkeep of the agent that began at `began` and looked at the items written
    /// up to `seen` (the next looks from there): it is next due at `next_due` (`None`: only
    /// after its next write), and writes made since it began still ask for another.
    pub async fn finish_upkeep(
        self,
        agent: AgentId,
        began: Timestamp,
        seen: Timestamp,
        next_due: Option<Timestamp>,
    ) -> Result<()> {
        let tenant = self.tenant;
        self.store
            .transact(tenant, move |work| {
                Box::pin(async move {
                    query(
                        "INSERT INTO memory_upkeep (agent_id, tenant_id, due_at, ran_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (agent_id) DO UPDATE SET \
                     due_at = excluded.due_at, ran_at = excluded.ran_at, \
                     written_at = CASE WHEN memory_upkeep.last_write_at >= $5 \
                     THEN memory_upkeep.last_write_at ELSE NULL END",
                    )
                    .bind(agent_key(agent))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(next_due.map(Timestamp::as_millis))
                    .bind(seen.as_millis())
                    .bind(began.as_millis())
                    .execute(work.conn())
                    .await?;
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    /// A page of the vitals of the agent's live items, in storage order from `from` (`None`:
    /// the first page).
    pub async fn vitals(self, agent: AgentId, from: Option<i64>, limit: u32) -> Result<VitalsPage> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT n, id, kind, importance, strength, accessed_at FROM memories \
                     WHERE tenant_id = $1 AND agent_id = $2 AND pruned_at IS NULL AND n >= $3 \
                     ORDER BY n LIMIT $4",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent))
                .bind(from.unwrap_or(i64::MIN))
                .bind(i64::from(limit) + 1),
            )
            .await?;
        let mut page = VitalsPage::default();
        for (i, row) in rows.iter().enumerate() {
            if i == limit as usize {
                page.next = Some(row.try_get("n")?);
                break;
            }
            page.items.push(Vitals {
                id: MemoryId::from_bytes(id_bytes(row, "id")?),
                kind: row.word("kind", MemoryKind::parse)?,
                importance: row.try_get("importance")?,
                strength: row.try_get("strength")?,
                accessed_at: Timestamp::from_millis(row.try_get("accessed_at")?),
            });
        }
        Ok(page)
    }

    /// The agent's live items written at or after `since` (all of them for `None`), oldest
    /// write first, at most `limit`: what an upkeep looks for repeats among.
    pub async fn written_since(
        self,
        agent: AgentId,
        since: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<MemoryRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {} FROM memories m WHERE m.tenant_id = $1 AND m.agent_id = $2 \
                     AND m.pruned_at IS NULL AND m.updated_at >= $3 \
                     ORDER BY m.updated_at, m.n LIMIT $4",
                    crate::memories::COLUMNS
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent))
                .bind(since.map_or(i64::MIN, Timestamp::as_millis))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(memory_row).collect()
    }

    /// The agent's passing items (of `kinds`) not yet read into a lasting one, oldest first,
    /// at most `limit`: of one scope when `scope` names it, else of all.
    pub async fn to_consolidate(
        self,
        agent: AgentId,
        kinds: &[MemoryKind],
        scope: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MemoryRow>> {
        let tenant = self.tenant;
        let words: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let in_scope = if scope.is_some() { "AND m.scope = $5 " } else { "" };
        let mut q = query(format!(
            "SELECT {} FROM memories m WHERE m.tenant_id = $1 AND m.agent_id = $2 \
             AND m.pruned_at IS NULL AND $3 LIKE '%,' || m.kind || ',%' {in_scope}\
             AND NOT EXISTS (SELECT 1 FROM memory_links l WHERE l.from_id = m.id \
             AND l.kind = 'part_of') ORDER BY m.n LIMIT $4",
            crate::memories::COLUMNS
        ))
        .bind(tenant.as_bytes().to_vec())
        .bind(agent_key(agent))
        .bind(format!(",{},", words.join(",")))
        .bind(i64::from(limit));
        if let Some(scope) = scope {
            q = q.bind(scope);
        }
        let rows = self.store.rows(q).await?;
        rows.iter().map(memory_row).collect()
    }

    /// The agent's scopes holding at least `at_least` passing items (of `kinds`) not yet read
    /// into a lasting one, in scope order, at most `limit`: what consolidation has to read,
    /// however many scopes hold fewer.
    pub async fn scopes_to_consolidate(
        self,
        agent: AgentId,
        kinds: &[MemoryKind],
        at_least: u64,
        limit: u32,
    ) -> Result<Vec<String>> {
        let tenant = self.tenant;
        let words: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let rows = self
            .store
            .rows(
                query(
                    "SELECT m.scope FROM memories m WHERE m.tenant_id = $1 AND m.agent_id = $2 \
                     AND m.pruned_at IS NULL AND $3 LIKE '%,' || m.kind || ',%' \
                     AND NOT EXISTS (SELECT 1 FROM memory_links l WHERE l.from_id = m.id \
                     AND l.kind = 'part_of') GROUP BY m.scope HAVING COUNT(*) >= $4 \
                     ORDER BY m.scope LIMIT $5",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent))
                .bind(format!(",{},", words.join(",")))
                .bind(i64::try_from(at_least).unwrap_or(i64::MAX))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(|r| r.try_get::<String, _>("scope")).collect()
    }

    /// Sets decayed strengths of the agent's items, unaudited (fading is not a change of what
    /// an item says).
    pub async fn set_strengths(
        self,
        agent: AgentId,
        strengths: Vec<(MemoryId, f64)>,
    ) -> Result<()> {
        let tenant = self.tenant;
        if strengths.is_empty() {
            return Ok(());
        }
        self.store
            .transact(tenant, move |work| {
                let strengths = strengths.clone();
                Box::pin(async move {
                    for (id, strength) in &strengths {
                        query(
                            "UPDATE memories SET strength = $4 \
                         WHERE id = $1 AND tenant_id = $2 AND agent_id = $3",
                        )
                        .bind(id.as_bytes().to_vec())
                        .bind(tenant.as_bytes().to_vec())
                        .bind(agent_key(agent))
                        .bind(strength.clamp(0.0, 1.0))
                        .execute(work.conn())
                        .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    /// Prunes live items of the agent (`why` says why: `decayed`), each given with the last
    /// use its caller judged it by: an item used since (recalled, or repeated by a save) is
    /// left, as the judgement no longer holds. Audited once with the ids; how many were pruned
    /// (an id already pruned, used since, or not the agent's counts none).
    pub async fn prune(
        self,
        agent: AgentId,
        items: Vec<(MemoryId, Timestamp)>,
        why: &str,
    ) -> Result<u64> {
        let tenant = self.tenant;
        let ids: Vec<MemoryId> = items.iter().map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({
                "change": "pruned",
                "why": why,
                "memories": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        );
        let why = why.to_owned();
        let (pruned, _) = self
            .store
            .transact(tenant, move |work| {
                let (items, audit, why) = (items.clone(), audit.clone(), why.clone());
                Box::pin(async move {
                    let now = work.now();
                    let mut pruned = 0;
                    for (id, used) in &items {
                        pruned += prune_in(work.conn(), tenant, agent, *id, Some(*used), &why, now)
                            .await?;
                    }
                    if pruned > 0 {
                        work.audit(&audit).await?;
                    }
                    Ok(pruned)
                })
            })
            .await?;
        Ok(pruned)
    }

    /// Merges `repeat` into `kept`, two live items of the agent saying the same: `kept` takes
    /// `update` (the newer wording, the higher importance and confidence), the links of
    /// `repeat` (as links of `kept`), and `repeat` is pruned as merged into it. Audited.
    pub async fn merge(
        self,
        agent: AgentId,
        kept: MemoryId,
        repeat: MemoryId,
        update: MemoryUpdate,
    ) -> Result<MemoryRow> {
        let tenant = self.tenant;
        if kept == repeat {
            return Err(Error::InvalidMemory("an item cannot be merged into itself".into()));
        }
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({
                "memory": kept.to_string(), "change": "merged", "from": repeat.to_string(),
            }),
        );
        self.store.transact(tenant, move |work| {
            let (audit, update) = (audit.clone(), update.clone());
            Box::pin(async move {
                let now = work.now();
                let why = format!("{MERGED_INTO}{kept}");
                if prune_in(work.conn(), tenant, agent, repeat, None, &why, now).await? == 0 {
                    return Err(Error::MemoryNotFound(repeat.to_string()));
                }
                let changed = crate::memories::update_in(
                    work.conn(),
                    tenant,
                    agent,
                    kept,
                    &update,
                    now,
                    "AND pruned_at IS NULL",
                )
                .await?;
                if changed == 0 {
                    return Err(Error::MemoryNotFound(kept.to_string()));
                }
                // The repeat's links become the kept item's, but for those joining the two.
                for (from_column, to_column) in [("from_id", "to_id"), ("to_id", "from_id")] {
                    let (new_from, new_to) = if from_column == "from_id" {
                        ("$3", "l.to_id")
                    } else {
                        ("l.from_id", "$3")
                    };
                    query(format!(
                        "INSERT INTO memory_links (tenant_id, agent_id, from_id, to_id, kind, weight, created_at) \
                         SELECT l.tenant_id, l.agent_id, {new_from}, {new_to}, l.kind, l.weight, l.created_at \
                         FROM memory_links l WHERE l.tenant_id = $1 AND l.agent_id = $2 \
                         AND l.{from_column} = $4 AND l.{to_column} <> $3 \
                         ON CONFLICT (from_id, to_id, kind) DO NOTHING"
                    ))
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent_key(agent))
                    .bind(kept.as_bytes().to_vec())
                    .bind(repeat.as_bytes().to_vec())
                    .execute(work.conn())
                    .await?;
                }
                work.audit(&audit).await?;
                Ok(())
            })
        })
        .await?;
        self.store.memories(tenant).get(agent, kept).await
    }

    /// Brings a pruned item of the agent back, as if just used (strength 1), audited. A repeat
    /// that was merged comes back linked (`related_to`) to the item it was merged into, which
    /// keeps upkeep from merging the two again.
    pub async fn restore(self, agent: AgentId, id: MemoryId) -> Result<MemoryRow> {
        let tenant = self.tenant;
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({ "memory": id.to_string(), "change": "restored" }),
        );
        self.store.transact(tenant, move |work| {
            let audit = audit.clone();
            Box::pin(async move {
                let now = work.now();
                let pruned = query(
                    "SELECT pruned_why FROM memories WHERE id = $1 AND tenant_id = $2 \
                     AND agent_id = $3 AND pruned_at IS NOT NULL",
                )
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent))
                .fetch_optional(work.conn())
                .await?;
                let Some(pruned) = pruned else {
                    return Err(Error::MemoryNotFound(format!("{id} (no pruned item has this id)")));
                };
                query(
                    "UPDATE memories SET pruned_at = NULL, pruned_why = NULL, strength = 1.0, \
                     accessed_at = $4, updated_at = $4 \
                     WHERE id = $1 AND tenant_id = $2 AND agent_id = $3",
                )
                .bind(id.as_bytes().to_vec())
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent))
                .bind(now.as_millis())
                .execute(work.conn())
                .await?;
                let why: Option<String> = pruned.try_get("pruned_why")?;
                let merged_into = why
                    .as_deref()
                    .and_then(|why| why.strip_prefix(MERGED_INTO))
                    .and_then(|kept| kept.parse::<MemoryId>().ok());
                if let Some(kept) = merged_into {
                    // Only if the kept item is still the agent's (it may have been forgotten).
                    query(
                        "INSERT INTO memory_links (tenant_id, agent_id, from_id, to_id, kind, weight, created_at) \
                         SELECT m.tenant_id, m.agent_id, $3, m.id, 'related_to', 1.0, $4 FROM memories m \
                         WHERE m.id = $5 AND m.tenant_id = $1 AND m.agent_id = $2 \
                         ON CONFLICT (from_id, to_id, kind) DO NOTHING",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent_key(agent))
                    .bind(id.as_bytes().to_vec())
                    .bind(now.as_millis())
                    .bind(kept.as_bytes().to_vec())
                    .execute(work.conn())
                    .await?;
                }
                work.audit(&audit).await?;
                Ok(())
            })
        })
        .await?;
        self.store.memories(tenant).get(agent, id).await
    }

    /// Deletes for good, with their links, the agent's items pruned before `before`, at most
    /// `limit` of them; how many. Audited when it deletes any.
    pub async fn purge_pruned(self, agent: AgentId, before: Timestamp, limit: u32) -> Result<u64> {
        let tenant = self.tenant;
        let audit = self.store.admin_record(
            tenant,
            Some(agent),
            AuditKind::MemoryChanged,
            serde_json::json!({ "change": "purged" }),
        );
        let (purged, _) = self
            .store
            .transact(tenant, move |work| {
                let mut audit = audit.clone();
                Box::pin(async move {
                    let rows = query(
                        "SELECT id FROM memories WHERE tenant_id = $1 AND agent_id = $2 \
                         AND pruned_at IS NOT NULL AND pruned_at < $3 ORDER BY pruned_at LIMIT $4",
                    )
                    .bind(tenant.as_bytes().to_vec())
                    .bind(agent_key(agent))
                    .bind(before.as_millis())
                    .bind(i64::from(limit))
                    .fetch_all(work.conn())
                    .await?;
                    let mut purged = 0u64;
                    for row in &rows {
                        let id = MemoryId::from_bytes(id_bytes(row, "id")?);
                        purged +=
                            crate::memories::delete_in(work.conn(), tenant, agent, id).await?;
                    }
                    if purged > 0 {
                        audit.detail =
                            serde_json::json!({ "change": "purged", "items": purged }).to_string();
                        work.audit(&audit).await?;
                    }
                    Ok(purged)
                })
            })
            .await?;
        Ok(purged)
    }

    /// The agent's pruned items, the latest pruned first, at most `limit`.
    pub async fn pruned(self, agent: AgentId, limit: u32) -> Result<Vec<MemoryRow>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(format!(
                    "SELECT {} FROM memories m WHERE m.tenant_id = $1 AND m.agent_id = $2 \
                     AND m.pruned_at IS NOT NULL ORDER BY m.pruned_at DESC, m.id DESC LIMIT $3",
                    crate::memories::COLUMNS
                ))
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(memory_row).collect()
    }

    /// When the agent's earliest pruned item was pruned (`None`: it has none).
    pub async fn earliest_pruned(self, agent: AgentId) -> Result<Option<Timestamp>> {
        let tenant = self.tenant;
        let rows = self
            .store
            .rows(
                query(
                    "SELECT MIN(pruned_at) AS at FROM memories WHERE tenant_id = $1 \
                     AND agent_id = $2 AND pruned_at IS NOT NULL",
                )
                .bind(tenant.as_bytes().to_vec())
                .bind(agent_key(agent)),
            )
            .await?;
        let at: Option<i64> = match rows.first() {
            Some(row) => row.try_get("at")?,
            None => None,
        };
        Ok(at.map(Timestamp::from_millis))
    }
}

/// What the cortex's upkeep reads across agents and tenants: who is due, who has items to
/// embed, and the full-text index's merging.
#[derive(Clone, Copy)]
pub struct MemoryUpkeep<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The memory upkeep's reads across agents.
    pub fn memory_upkeep(&self) -> MemoryUpkeep<'_> {
        MemoryUpkeep { store: self }
    }
}

impl MemoryUpkeep<'_> {
    /// How many segments the memories' full-text index is in (SQLite; PostgreSQL's index is
    /// one structure, and 1 is said). A search reads every segment, so a recall slows as they
    /// add up between merges (see [`crate::MemoryUpkeep::merge_index`]).
    pub async fn index_segments(self) -> Result<i64> {
        if self.store.backend() != crate::Backend::Sqlite {
            return Ok(1);
        }
        let rows = self
            .store
            .rows(query("SELECT COUNT(DISTINCT segid) AS n FROM memories_fts_idx"))
            .await?;
        rows.first().map_or(Ok(0), |r| r.try_get("n"))
    }

    /// One step of merging the memories' full-text index into a single segment, writing
    /// about `pages` pages. With `gather`, the step first gathers every segment into one merge
    /// (FTS5's `merge` with a negative count, as `optimize` does); without, it goes on with
    /// the merge begun (a positive count), which a segment written since does not start over.
    /// Bounded steps, so other writes go between them. Whether there is more to merge. A
    /// no-op on PostgreSQL.
    pub async fn merge_index(self, pages: u32, gather: bool) -> Result<bool> {
        if self.store.backend() != crate::Backend::Sqlite {
            return Ok(false);
        }
        let pages = i64::from(pages.max(1)) * if gather { -1 } else { 1 };
        self.store
            .write(move |conn| {
                Box::pin(async move {
                    let changes = "SELECT total_changes() AS n";
                    let before: i64 = query(changes).fetch_one(&mut *conn).await?.try_get("n")?;
                    query(format!(
                        "INSERT INTO memories_fts (memories_fts, rank) VALUES ('merge', {pages})"
                    ))
                    .execute(&mut *conn)
                    .await?;
                    let after: i64 = query(changes).fetch_one(&mut *conn).await?.try_get("n")?;
                    // FTS5 counts a step that merged nothing as fewer than two changes.
                    Ok(after - before >= 2)
                })
            })
            .await
    }

    /// Agents of any tenant whose upkeep is due at `now`: decay prunes or purges one of their
    /// items by then, or they wrote at least `settle_ms` ago and have not been kept since. At
    /// most `limit`, the longest waiting first. Two index range reads, whatever the number of
    /// idle agents.
    pub async fn due(self, now: Timestamp, settle_ms: i64, limit: u32) -> Result<Vec<UpkeepDue>> {
        let mut due: Vec<UpkeepDue> = Vec::new();
        for (column, until) in
            [("due_at", now.as_millis()), ("written_at", now.as_millis().saturating_sub(settle_ms))]
        {
            let rows = self
                .store
                .rows(
                    query(format!(
                        "SELECT agent_id, tenant_id, ran_at FROM memory_upkeep \
                         WHERE {column} IS NOT NULL AND {column} <= $1 ORDER BY {column} LIMIT $2"
                    ))
                    .bind(until)
                    .bind(i64::from(limit)),
                )
                .await?;
            for row in rows {
                let agent = AgentId::from_bytes(id_bytes(&row, "agent_id")?);
                if due.iter().any(|d| d.agent == agent) || due.len() >= limit as usize {
                    continue;
                }
                let ran: Option<i64> = row.try_get("ran_at")?;
                due.push(UpkeepDue {
                    tenant: TenantId::from_bytes(id_bytes(&row, "tenant_id")?),
                    agent,
                    last_ran: ran.map(Timestamp::from_millis),
                });
            }
        }
        Ok(due)
    }
}
