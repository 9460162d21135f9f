//! Agents' long-term memory (`memory`): recall, ingestion, upkeep, isolation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// How `memory.embeddings` names a model run in process rather than a `models` entry.
pub const LOCAL_PREFIX: &str = "local:";

/// Agents' long-term memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Whether agents have memory: the `memory.*` tools and recall in each turn's context.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What makes the vectors recall compares meaning with: `local:<name>`, a model run in
    /// process from the data dir's `models/<name>` (installed by `clade models fetch`), or a
    /// `models` entry with provider `openai` (its `/embeddings` endpoint). Unset: the local
    /// `all-minilm-l6-v2` when its files are there, else recall uses full text alone.
    #[serde(default)]
    pub embeddings: Option<String>,
    /// Which memory a conversation reads and writes besides the agent's global memory: none
    /// (`global`, the default), one per person (`actor`: platform and actor) or one per
    /// conversation (`channel`: platform and channel). With `actor`, what one user tells the
    /// agent is never recalled for another.
    #[serde(default)]
    pub isolation: MemoryIsolation,
    /// Items recalled into each turn's context (0: none, the tools still work).
    #[serde(default = "default_recall_items")]
    pub recall_items: u32,
    /// About how many tokens the recalled items may take in a turn's context.
    #[serde(default = "default_recall_tokens")]
    pub recall_tokens: u32,
    /// The most items one agent may hold (1 to 10,000,000): past it, saving a new item is
    /// refused (`memory_full`) until some are forgotten, so no tenant fills the store. A repeat
    /// of an item still updates it.
    #[serde(default = "default_max_items")]
    pub max_items_per_agent: u64,
    /// Whether completed turns are mined for memories in the background: `heuristic` (the
    /// default) keeps the sentences people state about themselves, their plans and decisions,
    /// numbers and dates; `model` asks the `cortex` model route what is worth remembering in
    /// each turn (a model call per turn, charged to the agent; a failed call falls back to the
    /// heuristic for that turn); `off` leaves memory to the agents' tools and to compaction.
    #[serde(default)]
    pub ingest: MemoryIngest,
    /// How the cortex keeps each agent's memory in the background: repeats merged, items
    /// fading with disuse, the faded pruned (restorable until purged).
    #[serde(default)]
    pub upkeep: MemoryUpkeepConfig,
}

/// See [`MemoryConfig::upkeep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryUpkeepConfig {
    /// Whether the cortex keeps memories at all (`clade memory upkeep` still runs by hand).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Days an unused item of importance 0 takes to lose half its strength; one of
    /// importance 1 takes five times as long, and identity never fades. 0: nothing fades.
    #[serde(default = "default_half_life_days")]
    pub half_life_days: f64,
    /// Strength (0 to 1) under which a faded item is pruned; 0 prunes nothing.
    #[serde(default = "default_prune_below")]
    pub prune_below: f64,
    /// Days a pruned item can be restored before it is deleted for good.
    #[serde(default = "default_purge_after_days")]
    pub purge_after_days: f64,
    /// Seconds after an agent's write before its upkeep runs (later writes join it).
    #[serde(default = "default_upkeep_settle_secs")]
    pub settle_secs: u64,
    /// Passing items (observations, events) of one isolation key that the `cortex` model
    /// route reads into the lasting items they add up to (facts, preferences, decisions...),
    /// each passing item then linked `part_of` them. 0 (the default): never, since each
    /// consolidation is a model call charged to the agent; 20 is a fair start.
    #[serde(default)]
    pub consolidate_at: u32,
}

impl Default for MemoryUpkeepConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            half_life_days: default_half_life_days(),
            prune_below: default_prune_below(),
            purge_after_days: default_purge_after_days(),
            settle_secs: default_upkeep_settle_secs(),
            consolidate_at: 0,
        }
    }
}

fn default_half_life_days() -> f64 {
    30.0
}

fn default_prune_below() -> f64 {
    0.05
}

fn default_purge_after_days() -> f64 {
    30.0
}

fn default_upkeep_settle_secs() -> u64 {
    60
}

/// How completed turns are mined for memories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryIngest {
    #[default]
    Heuristic,
    Model,
    Off,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            embeddings: None,
            isolation: MemoryIsolation::default(),
            recall_items: default_recall_items(),
            recall_tokens: default_recall_tokens(),
            max_items_per_agent: default_max_items(),
            ingest: MemoryIngest::default(),
            upkeep: MemoryUpkeepConfig::default(),
        }
    }
}

fn default_recall_items() -> u32 {
    5
}

fn default_recall_tokens() -> u32 {
    400
}

fn default_max_items() -> u64 {
    100_000
}

/// See [`MemoryConfig::isolation`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryIsolation {
    #[default]
    Global,
    Actor,
    Channel,
}

impl Config {
    /// Memory's sizes and its upkeep's rates.
    pub(crate) fn check_memory(&self) -> Result<(), Invalid> {
        if !(1..=10_000_000).contains(&self.memory.max_items_per_agent) {
            return fail(format!(
                "memory.max_items_per_agent: {} is out of range; 1 to 10,000,000",
                self.memory.max_items_per_agent
            ));
        }
        if self.memory.recall_items > 50 {
            return fail("memory.recall_items: at most 50".into());
        }
        let upkeep = &self.memory.upkeep;
        if !(0.0..=36_500.0).contains(&upkeep.half_life_days) {
            return fail(format!(
                "memory.upkeep.half_life_days: {} is out of range; 0 (nothing fades) to 36,500",
                upkeep.half_life_days
            ));
        }
        if !(0.0..1.0).contains(&upkeep.prune_below) {
            return fail(format!(
                "memory.upkeep.prune_below: {} is out of range; 0 (prune nothing) up to, not including, 1",
                upkeep.prune_below
            ));
        }
        if !(0.0..=36_500.0).contains(&upkeep.purge_after_days) {
            return fail(format!(
                "memory.upkeep.purge_after_days: {} is out of range; 0 to 36,500",
                upkeep.purge_after_days
            ));
        }
        if upkeep.consolidate_at > 10_000 {
            return fail(format!(
                "memory.upkeep.consolidate_at: {} is out of range; 0 (never) to 10,000",
                upkeep.consolidate_at
            ));
        }
        if upkeep.settle_secs > 86_400 {
            return fail(format!(
                "memory.upkeep.settle_secs: {} is out of range; 0 to 86,400 (a day)",
                upkeep.settle_secs
            ));
        }
        Ok(())
    }
}
