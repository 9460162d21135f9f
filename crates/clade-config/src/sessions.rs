//! How sessions run their turns (`sessions`): queue modes, limits, compaction, branches and workers, messaging.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// How sessions run their turns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// What happens to messages that arrive while a turn runs.
    #[serde(default)]
    pub queue_mode: QueueMode,
    /// Model calls per turn before it yields (resumable).
    #[serde(default = "default_iterations")]
    pub max_iterations: u32,
    /// A turn running longer than this fails.
    #[serde(default = "default_turn_timeout")]
    pub turn_timeout_secs: u64,
    /// Events waiting per session before new ones are refused with 429.
    #[serde(default = "default_max_queued")]
    pub max_queued: u64,
    /// Seconds an idle session stays in memory.
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    /// Earlier turns shown word for word in the model's context, at most. With compaction on,
    /// older ones are folded into the session's summary rather than dropped.
    #[serde(default = "default_history")]
    pub history_turns: u32,
    /// How a session whose context grows toward its model's context window is compacted.
    #[serde(default)]
    pub compaction: CompactionConfig,
    /// How agents message each other (`agent.send`, `agent.ask`).
    #[serde(default)]
    pub messaging: MessagingConfig,
    /// Branches: forks of a session's context that think about one task in parallel
    /// (`agent.branch`). Unset limits take their defaults: 3 at once per session, 8 model calls
    /// a turn, 300 s.
    #[serde(default)]
    pub branches: ForkLimits,
    /// Workers: fresh contexts with a task and tools of their own (`agent.spawn_worker`).
    /// Unset limits take their defaults: 4 at once per session, 30 model calls a turn, 1800 s.
    #[serde(default)]
    pub workers: ForkLimits,
    /// Per-agent settings that override the ones above for that agent's sessions, keyed by
    /// agent reference (`tenant/handle`, or a bare handle in the default tenant).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSessionsConfig>,
}

/// What one agent's sessions do differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSessionsConfig {
    /// This agent's sessions' queue mode.
    #[serde(default)]
    pub queue_mode: Option<QueueMode>,
}

impl SessionsConfig {
    /// The queue mode of the sessions of the agent `handle` of the tenant named `tenant`.
    pub fn queue_mode_for(&self, tenant: &str, handle: &str) -> QueueMode {
        for_agent(&self.agents, tenant, handle)
            .and_then(|a| a.queue_mode)
            .unwrap_or(self.queue_mode)
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            queue_mode: QueueMode::default(),
            max_iterations: default_iterations(),
            turn_timeout_secs: default_turn_timeout(),
            max_queued: default_max_queued(),
            idle_secs: default_idle(),
            history_turns: default_history(),
            compaction: CompactionConfig::default(),
            messaging: MessagingConfig::default(),
            branches: ForkLimits::default(),
            workers: ForkLimits::default(),
            agents: BTreeMap::new(),
        }
    }
}

/// Compaction: when a turn's context passes `at_percent` of the channel model's context window
/// (or more turns than `sessions.history_turns` wait to be shown), the oldest turns are
/// summarised in the background through the `compactor` route and mined for memories, keeping
/// the newest turns (about `keep_percent` of the window) word for word. Past
/// `emergency_percent` a turn drops its oldest turns from its context without a model call.
/// The turns themselves are never deleted by compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactionConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Percent of the context window past which a compaction starts (in the background).
    #[serde(default = "default_compact_at")]
    pub at_percent: u8,
    /// Percent of the context window past which a turn's oldest history is left out at once.
    #[serde(default = "default_emergency_at")]
    pub emergency_percent: u8,
    /// Percent of the context window the turns kept word for word may fill after a compaction.
    #[serde(default = "default_keep")]
    pub keep_percent: u8,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            at_percent: default_compact_at(),
            emergency_percent: default_emergency_at(),
            keep_percent: default_keep(),
        }
    }
}

/// The limits of one kind of fork (branches or workers); unset ones take the kind's defaults
/// ([`SessionsConfig::branch_limits`], [`SessionsConfig::worker_limits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkLimits {
    /// How many may run at once for one session (1-16).
    #[serde(default)]
    pub max_per_session: Option<u32>,
    /// Model calls per turn before it yields (1-100).
    #[serde(default)]
    pub max_iterations: Option<u32>,
    /// A turn running longer than this fails (1-86400).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Its share of the agent's spending: the most tokens (input and output) one of its turns
    /// spends; past it, the turn yields until resumed (each resume grants as many again).
    /// 1,000 to 100,000,000.
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

/// [`ForkLimits`] with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkLimitsResolved {
    pub max_per_session: u32,
    pub max_iterations: u32,
    pub timeout_secs: u64,
    pub max_tokens: u64,
}

impl ForkLimits {
    fn resolve(self, defaults: ForkLimitsResolved) -> ForkLimitsResolved {
        ForkLimitsResolved {
            max_per_session: self.max_per_session.unwrap_or(defaults.max_per_session),
            max_iterations: self.max_iterations.unwrap_or(defaults.max_iterations),
            timeout_secs: self.timeout_secs.unwrap_or(defaults.timeout_secs),
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
        }
    }

    fn check(self, field: &str) -> Result<(), Invalid> {
        let within = |name: &str, value: Option<u64>, most: u64| match value {
            Some(v) if !(1..=most).contains(&v) => {
                Err(Invalid(format!("sessions.{field}.{name}: must be 1 to {most}, not {v}")))
            }
            _ => Ok(()),
        };
        within("max_per_session", self.max_per_session.map(u64::from), 16)?;
        within("max_iterations", self.max_iterations.map(u64::from), 100)?;
        within("timeout_secs", self.timeout_secs, 86_400)?;
        match self.max_tokens {
            Some(v) if !(1_000..=100_000_000).contains(&v) => Err(Invalid(format!(
                "sessions.{field}.max_tokens: must be 1,000 to 100,000,000, not {v}"
            ))),
            _ => Ok(()),
        }
    }
}

impl SessionsConfig {
    /// Branches' limits, defaults filled in.
    pub fn branch_limits(&self) -> ForkLimitsResolved {
        self.branches.resolve(ForkLimitsResolved {
            max_per_session: 3,
            max_iterations: 8,
            timeout_secs: 300,
            max_tokens: 200_000,
        })
    }

    /// Workers' limits, defaults filled in.
    pub fn worker_limits(&self) -> ForkLimitsResolved {
        self.workers.resolve(ForkLimitsResolved {
            max_per_session: 4,
            max_iterations: 30,
            timeout_secs: 1800,
            max_tokens: 2_000_000,
        })
    }
}

/// Messages between agents: each arrives as an event of the receiver, in its session with the
/// sender, and an `ask` waits for the receiver's turn, whose reply is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// The longest chain of messages one person's message may set off (agents messaging
    /// agents that message agents): a message past it is refused, which cuts loops (1-16).
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// How long an `ask` waits for the answer, at most (the turn's own time limit too);
    /// 1-3600.
    #[serde(default = "default_ask_timeout")]
    pub ask_timeout_secs: u64,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self { max_depth: default_max_depth(), ask_timeout_secs: default_ask_timeout() }
    }
}

fn default_max_depth() -> u32 {
    4
}
fn default_ask_timeout() -> u64 {
    120
}

fn default_compact_at() -> u8 {
    80
}
fn default_emergency_at() -> u8 {
    95
}
fn default_keep() -> u8 {
    40
}

fn default_iterations() -> u32 {
    8
}
fn default_turn_timeout() -> u64 {
    300
}
fn default_max_queued() -> u64 {
    64
}
fn default_idle() -> u64 {
    60
}
fn default_history() -> u32 {
    20
}

/// Messages arriving during a turn: `queue` runs them as the next turns, `coalesce` runs a
/// burst as one turn, `steer` injects them into the running turn between tool calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    #[default]
    Queue,
    Coalesce,
    Steer,
}

impl QueueMode {
    /// Its name in clade.yaml and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Queue => "queue",
            QueueMode::Coalesce => "coalesce",
            QueueMode::Steer => "steer",
        }
    }

    /// The mode of that name, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [QueueMode::Queue, QueueMode::Coalesce, QueueMode::Steer]
            .into_iter()
            .find(|mode| mode.as_str() == name)
    }
}

impl Config {
    /// Compaction, messaging and fork limits.
    pub(crate) fn check_sessions(&self) -> Result<(), Invalid> {
        let c = self.sessions.compaction;
        if !(c.keep_percent >= 1
            && c.keep_percent < c.at_percent
            && c.at_percent < c.emergency_percent
            && c.emergency_percent <= 100)
        {
            return fail(format!(
                "sessions.compaction: needs 1 <= keep_percent < at_percent < emergency_percent <= 100, not {} < {} < {}",
                c.keep_percent, c.at_percent, c.emergency_percent
            ));
        }
        let m = self.sessions.messaging;
        if !(1..=16).contains(&m.max_depth) {
            return fail(format!(
                "sessions.messaging.max_depth: must be 1 to 16, not {}",
                m.max_depth
            ));
        }
        if !(1..=3600).contains(&m.ask_timeout_secs) {
            return fail(format!(
                "sessions.messaging.ask_timeout_secs: must be 1 to 3600, not {}",
                m.ask_timeout_secs
            ));
        }
        for (field, limits) in
            [("branches", self.sessions.branches), ("workers", self.sessions.workers)]
        {
            limits.check(field)?;
        }
        Ok(())
    }
}
