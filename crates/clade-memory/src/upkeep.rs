//! The cortex's upkeep of one agent's memory, run in the background (`clade-runtime`'s
//! `cortex`) or by an operator (`clade memory upkeep`):
//!
//! - **merge**: an item written since the last upkeep that repeats another of its scope and
//!   kind (saved side by side by two writers, imported, embedded late) is merged into the
//!   older one, which keeps the newer wording and the links of both;
//! - **decay**: an item's strength halves every half-life it goes unused (recalled or written),
//!   and the half-life grows with its importance; identity never fades;
//! - **prune**: an item whose strength fell under the policy's floor is pruned (soft-deleted:
//!   out of recall and listings, restorable);
//! - **purge**: an item pruned longer ago than the policy keeps them is deleted for good;
//! - **consolidate** (when the policy asks and a [`Consolidator`] is given): once enough passing
//!   items (observations, events) gathered in one scope, they are read together and the
//!   lasting items they add up to are saved (as any save: a repeat merges), each passing item
//!   linked `part_of` to them, so it is read only once.
//!
//! An upkeep also says when the agent is next due (the first time decay will prune one of its
//! items, or a purge falls due): an agent nobody talks to is not looked at before then.

use clade_core::{AgentId, LinkKind, MemoryKind, Timestamp};
use clade_store::{MemoryFilter, MemoryRow, MemoryUpdate, NewMemory, Provenance, TenantStore};

use crate::{Error, Memory};

const DAY_MS: f64 = 86_400_000.0;
/// Items looked at for repeats in one upkeep; the rest wait for the next (due at once).
const MERGE_BATCH: u32 = 1_000;
/// How far before an upkeep's start the next looks for repeats again.
const RESCAN_MS: i64 = 60_000;
/// Items read (and strengths written) at a time.
const PAGE: u32 = 500;
/// A change of strength smaller than this is not written.
const STRENGTH_STEP: f64 = 0.01;
/// Passing items of one scope read for consolidation in one upkeep.
const CONSOLIDATE_READ: u32 = 2_000;
/// Scopes consolidated in one upkeep; the rest wait for the next.
const CONSOLIDATE_SCOPES: u32 = 100;
/// Passing items given to a consolidator at once.
const CONSOLIDATE_BATCH: usize = 50;
/// Lasting items taken from one consolidation.
const MAX_CONSOLIDATED: usize = 10;

/// Writes lasting items out of many passing ones: the cortex's model route in the gateway
/// (`clade-runtime`'s `cortex`), or anything else that can read.
pub trait Consolidator: Send + Sync {
    /// The lasting items (kind and content) that `items`, passing observations and events of
    /// one agent and scope, add up to; none is an answer too.
    fn consolidate<'a>(
        &'a self,
        store: &'a TenantStore,
        agent: AgentId,
        items: &'a [MemoryRow],
    ) -> futures::future::BoxFuture<'a, Result<Vec<(MemoryKind, String)>, crate::BoxError>>;
}

/// The kinds consolidation reads: what happened and was seen, as against what lasts.
pub const PASSING: [MemoryKind; 2] = [MemoryKind::Observation, MemoryKind::Event];

/// A model's answer without the code fence it may have put around it, trimmed.
pub fn unfenced(answer: &str) -> &str {
    let trimmed = answer.trim();
    trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim()
}

/// Reads a consolidator's answer: a JSON array of `{"kind", "content"}` (in a code fence or
/// not), or lines `kind: content`. Unknown kinds become facts; blank and oversized contents are
/// left out.
pub fn parse_consolidated(answer: &str) -> Vec<(MemoryKind, String)> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        kind: String,
        content: String,
    }
    let body = unfenced(answer);
    let items: Vec<(String, String)> = match serde_json::from_str::<Vec<Item>>(body) {
        Ok(items) => items.into_iter().map(|i| (i.kind, i.content)).collect(),
        Err(_) => body
            .lines()
            .map(|line| line.trim().trim_start_matches(['-', '*']).trim())
            .filter_map(|line| line.split_once(':'))
            .map(|(kind, content)| (kind.trim().to_lowercase(), content.trim().to_owned()))
            .filter(|(kind, _)| MemoryKind::parse(kind).is_some())
            .collect(),
    };
    items
        .into_iter()
        .filter(|(_, content)| clade_store::memories::check_content(content).is_ok())
        .map(|(kind, content)| (MemoryKind::parse(&kind).unwrap_or(MemoryKind::Fact), content))
        .take(MAX_CONSOLIDATED)
        .collect()
}

/// How fast items fade and what becomes of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The half-life of an item of importance 0; one of importance 1 lasts five times longer.
    pub half_life_days: f64,
    /// Strength under which an item is pruned (0 prunes nothing).
    pub prune_below: f64,
    /// How long a pruned item can be restored before it is deleted for good.
    pub purge_after_days: f64,
    /// How long after an agent's write its upkeep runs (writes meanwhile wait for the same).
    pub settle: std::time::Duration,
    /// Passing items (observations, events) in one scope that make a consolidation; 0: none.
    pub consolidate_at: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            half_life_days: 30.0,
            prune_below: 0.05,
            purge_after_days: 30.0,
            settle: std::time::Duration::from_secs(60),
            consolidate_at: 0,
        }
    }
}

impl Policy {
    fn half_life_ms(&self, importance: f64) -> f64 {
        self.half_life_days * DAY_MS * (1.0 + 4.0 * importance.clamp(0.0, 1.0))
    }

    /// The strength of an item of `kind` and `importance` last used `idle_ms` ago.
    pub fn strength(&self, kind: MemoryKind, importance: f64, idle_ms: i64) -> f64 {
        if kind == MemoryKind::Identity || self.half_life_days <= 0.0 {
            return 1.0;
        }
        let halvings = idle_ms.max(0) as f64 / self.half_life_ms(importance);
        0.5f64.powf(halvings)
    }

    /// How long after its last use such an item is pruned; `None`: never.
    pub fn fades_after_ms(&self, kind: MemoryKind, importance: f64) -> Option<i64> {
        if kind == MemoryKind::Identity || self.half_life_days <= 0.0 || self.prune_below <= 0.0 {
            return None;
        }
        let halvings = (1.0 / self.prune_below.min(1.0)).log2();
        Some((self.half_life_ms(importance) * halvings).ceil() as i64)
    }

    fn purge_after_ms(&self) -> i64 {
        (self.purge_after_days.max(0.0) * DAY_MS) as i64
    }
}

/// What one upkeep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Repeats merged into the items they repeat.
    pub merged: u64,
    /// Items whose stored strength changed.
    pub faded: u64,
    /// Items pruned for having faded.
    pub pruned: u64,
    /// Pruned items deleted for good.
    pub purged: u64,
    /// Passing items read into lasting ones.
    pub consolidated: u64,
    /// Lasting items that consolidation saved (new or merged into what was there).
    pub lasting: u64,
    /// Live items left.
    pub live: u64,
    /// When the agent is next due for upkeep (`None`: only after its next write).
    pub next_due: Option<Timestamp>,
}

impl Report {
    /// Whether it changed anything.
    pub fn changed(&self) -> bool {
        self.merged + self.faded + self.pruned + self.purged + self.consolidated > 0
    }
}

impl Memory {
    /// Keeps `agent`'s memory (see the module's doc), looking for repeats among the items
    /// written after `since` (the last upkeep's start; `None`: all of them), and consolidating
    /// through `consolidator` when the policy asks.
    pub async fn upkeep(
        &self,
        store: &TenantStore,
        agent: AgentId,
        since: Option<Timestamp>,
        policy: &Policy,
        consolidator: Option<&dyn Consolidator>,
    ) -> Result<Report, Error> {
        let mut report = Report::default();
        let now = store.now();
        if let Some(consolidator) = consolidator.filter(|_| policy.consolidate_at > 0) {
            self.consolidate(store, agent, policy, consolidator, &mut report).await?;
        }

        let written = store.memories().written_since(agent, since, MERGE_BATCH).await?;
        // A full batch: the next upkeep (due at once) goes on from the last item looked at.
        let more_to_merge = written.len() == MERGE_BATCH as usize;
        let seen = match written.last() {
            // A full batch of one millisecond would be read again and again: go past it.
            Some(last) if more_to_merge && Some(last.updated_at) == since => {
                Timestamp::from_millis(last.updated_at.as_millis() + 1)
            }
            Some(last) if more_to_merge => last.updated_at,
            // A write stamped just before this upkeep began may commit after its read: the next
            // looks a little further back (merging is idempotent).
            _ => Timestamp::from_millis(now.as_millis().saturating_sub(RESCAN_MS)),
        };
        let mut merged_away = Vec::new();
        for item in written {
            if merged_away.contains(&item.id) {
                continue;
            }
            let own_scope = MemoryFilter {
                scope: (!item.scope.is_empty()).then(|| item.scope.clone()),
                exclude_global: !item.scope.is_empty(),
                kinds: vec![item.kind],
                ..MemoryFilter::default()
            };
            let embedding = self.embedding_of(store, agent, &item).await?;
            let repeat = crate::Repeat { content: &item.content, embedding: embedding.as_ref() };
            let Some((other, _)) =
                self.duplicate_of(store, agent, repeat, &own_scope, Some(item.id)).await?
            else {
                continue;
            };
            // Linked items were told apart (by the agent, an operator, or a restore): they
            // stay two.
            let links = store.memories().links(agent, &[item.id]).await?;
            if links.iter().any(|l| l.from == other.id || l.to == other.id) {
                continue;
            }
            // The first saved stays (what links and people name); it takes the newest wording.
            let (kept, repeat) =
                if other.created_at <= item.created_at { (other, item) } else { (item, other) };
            let newer = if repeat.updated_at >= kept.updated_at { &repeat } else { &kept };
            let update = MemoryUpdate {
                content: Some(newer.content.clone()),
                importance: Some(kept.importance.max(repeat.importance)),
                confidence: Some(kept.confidence.max(repeat.confidence)),
                embedding: if newer.id == repeat.id {
                    self.embedding_of(store, agent, &repeat).await?
                } else {
                    None
                },
                ..MemoryUpdate::default()
            };
            let vector = update.embedding.clone();
            let item = store.memories().merge(agent, kept.id, repeat.id, update).await?;
            self.wrote(store, &item, vector.as_ref());
            merged_away.push(repeat.id);
            report.merged += 1;
        }

        let mut next_due: Option<i64> = None;
        let mut from = None;
        loop {
            let page = store.memories().vitals(agent, from, PAGE).await?;
            let mut faded = Vec::new();
            let mut pruned = Vec::new();
            for item in &page.items {
                let idle = now.as_millis().saturating_sub(item.accessed_at.as_millis());
                let strength = policy.strength(item.kind, item.importance, idle);
                if policy.prune_below > 0.0 && strength < policy.prune_below {
                    // With the use it was judged by: recalled meanwhile, it stays.
                    pruned.push((item.id, item.accessed_at));
                    continue;
                }
                report.live += 1;
                if (strength - item.strength).abs() >= STRENGTH_STEP {
                    faded.push((item.id, strength));
                }
                if let Some(after) = policy.fades_after_ms(item.kind, item.importance) {
                    let at = item.accessed_at.as_millis().saturating_add(after);
                    next_due = Some(next_due.map_or(at, |due| due.min(at)));
                }
            }
            report.faded += faded.len() as u64;
            store.memories().set_strengths(agent, faded).await?;
            report.pruned += store.memories().prune(agent, pruned, "decayed").await?;
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }

        let purge_before = Timestamp::from_millis(now.as_millis() - policy.purge_after_ms());
        loop {
            let purged = store.memories().purge_pruned(agent, purge_before, PAGE).await?;
            report.purged += purged;
            if purged < u64::from(PAGE) {
                break;
            }
        }
        if let Some(first) = store.memories().earliest_pruned(agent).await? {
            let at = first.as_millis().saturating_add(policy.purge_after_ms());
            next_due = Some(next_due.map_or(at, |due| due.min(at)));
        }
        if more_to_merge {
            next_due = Some(now.as_millis());
        }
        // Never sooner than a second on: a due time in the past would be looked at again and
        // again.
        report.next_due =
            next_due.map(|at| Timestamp::from_millis(at.max(now.as_millis() + 1_000)));
        store.memories().finish_upkeep(agent, now, seen, report.next_due).await?;
        Ok(report)
    }
}

impl Memory {
    /// Reads the passing items of each scope that gathered `policy.consolidate_at` of them
    /// into lasting items (see the module's doc). A consolidator that fails leaves them for the
    /// next upkeep.
    async fn consolidate(
        &self,
        store: &TenantStore,
        agent: AgentId,
        policy: &Policy,
        consolidator: &dyn Consolidator,
        report: &mut Report,
    ) -> Result<(), Error> {
        // Only the scopes with enough to read: however many hold fewer, they hide none.
        let scopes = store
            .memories()
            .scopes_to_consolidate(
                agent,
                &PASSING,
                policy.consolidate_at as u64,
                CONSOLIDATE_SCOPES,
            )
            .await?;
        for scope in scopes {
            let items = store
                .memories()
                .to_consolidate(agent, &PASSING, Some(&scope), CONSOLIDATE_READ)
                .await?;
            for batch in items.chunks(CONSOLIDATE_BATCH) {
                let lasting = match consolidator.consolidate(store, agent, batch).await {
                    Ok(lasting) => lasting,
                    Err(err) => {
                        tracing::warn!(%agent, error = %err, "consolidating memories failed; they wait for the next upkeep");
                        return Ok(());
                    }
                };
                // What nobody vouches for stays so in what it adds up to.
                let untrusted = batch.iter().any(|item| item.untrusted);
                let mut saved = Vec::new();
                for (kind, content) in lasting {
                    let new = NewMemory {
                        agent,
                        scope: scope.clone(),
                        kind,
                        content,
                        importance: 0.7,
                        confidence: 0.7,
                        provenance: Provenance { by: "cortex".to_owned(), ..Provenance::default() },
                        untrusted,
                        embedding: None,
                    };
                    match self.save(store, new).await {
                        Ok(item) => saved.push(item.item.id),
                        // A full memory keeps the passing items as they are.
                        Err(Error::Store(clade_store::Error::MemoryFull { .. })) => return Ok(()),
                        Err(err) => return Err(err),
                    }
                }
                report.lasting += saved.len() as u64;
                // Each passing item is joined to what it became (or, when it added up to
                // nothing, to the first item of its batch), so it is read once.
                let anchor = saved.first().copied().or_else(|| batch.first().map(|i| i.id));
                for item in batch {
                    let targets: Vec<_> = if saved.is_empty() {
                        anchor.into_iter().filter(|a| *a != item.id).collect()
                    } else {
                        saved.clone()
                    };
                    for target in targets {
                        store
                            .memories()
                            .link(agent, item.id, target, LinkKind::PartOf, 1.0)
                            .await?;
                    }
                }
                report.consolidated += batch.len() as u64;
            }
        }
        Ok(())
    }
}
