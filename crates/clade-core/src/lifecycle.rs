//! The turn protocol's vocabulary: statuses, lifecycle event kinds, journal step keys, process
//! kinds and approval statuses.
//!
//! Crates pass these types to each other; text exists only where a value is stored or sent
//! (`as_str`) and read back (`parse`). `xtask/tests/tidy.rs` fails when one of these words is
//! written as a string literal anywhere else.

use std::fmt;

/// Declares a fieldless enum with its one spelling per variant, `as_str`, `parse` and `ALL`.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The spelling stored and sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value spelled `text`, if it is one.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Word for $name {
            const ALL: &'static [Self] = $name::ALL;
            const NAME: &'static str = stringify!($name);

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn parse(text: &str) -> Option<Self> {
                $name::parse(text)
            }
        }
    };
}

/// A word of the vocabulary, generically: what the storage and wire edges need to write one
/// and read it back (`clade-protocol`'s `Spelled` serialises any of them through it).
pub trait Word: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The type's name, for error messages and schemas.
    const NAME: &'static str;
    /// The spelling stored and sent.
    fn as_str(self) -> &'static str;
    /// The value spelled `text`, if it is one.
    fn parse(text: &str) -> Option<Self>;
}

vocabulary! {
    /// Where a turn stands. A turn is written `Running` and ends in one of the others;
    /// a yielded turn runs again when resumed.
    TurnStatus {
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        /// Stopped at its model-call budget, waiting to be resumed.
        Yielded = "yielded",
    }
}

impl TurnStatus {
    /// The status a turn's execution holds: a turn is one kind of execution, and a yielded
    /// turn is a paused one, waiting to be resumed.
    pub const fn execution_status(self) -> ExecutionStatus {
        match self {
            TurnStatus::Running => ExecutionStatus::Running,
            TurnStatus::Completed => ExecutionStatus::Completed,
            TurnStatus::Failed => ExecutionStatus::Failed,
            TurnStatus::Yielded => ExecutionStatus::Paused,
        }
    }

    /// The turn status an execution's status stands for; `None` for those a turn never has
    /// (pending, cancelled).
    pub const fn of_execution(status: ExecutionStatus) -> Option<Self> {
        match status {
            ExecutionStatus::Running => Some(TurnStatus::Running),
            ExecutionStatus::Completed => Some(TurnStatus::Completed),
            ExecutionStatus::Failed => Some(TurnStatus::Failed),
            ExecutionStatus::Paused => Some(TurnStatus::Yielded),
            ExecutionStatus::Pending | ExecutionStatus::Cancelled => None,
        }
    }

    /// The status its events take when a turn reaches this one.
    pub const fn event_status(self) -> EventStatus {
        match self {
            TurnStatus::Running => EventStatus::Running,
            TurnStatus::Completed => EventStatus::Done,
            TurnStatus::Failed => EventStatus::Failed,
            TurnStatus::Yielded => EventStatus::Yielded,
        }
    }

    /// The lifecycle event that announces a turn ending so; `None` for a running one.
    pub const fn end_event(self) -> Option<EventKind> {
        match self {
            TurnStatus::Running => None,
            TurnStatus::Completed => Some(EventKind::TurnFinished),
            TurnStatus::Failed => Some(EventKind::TurnFailed),
            TurnStatus::Yielded => Some(EventKind::TurnYielded),
        }
    }
}

vocabulary! {
    /// Where an inbound event stands: waiting, taken by a turn, or ended with it.
    EventStatus {
        Pending = "pending",
        Running = "running",
        Done = "done",
        Failed = "failed",
        Yielded = "yielded",
    }
}

impl EventStatus {
    /// Waiting for a turn or in one: the session still has work.
    pub const fn is_open(self) -> bool {
        matches!(self, EventStatus::Pending | EventStatus::Running)
    }
}

vocabulary! {
    /// A lifecycle event's kind: the outbox's `kind`, SSE's `event:`, a webhook's type.
    EventKind {
        TurnStarted = "turn.started",
        TurnFinished = "turn.finished",
        TurnFailed = "turn.failed",
        TurnYielded = "turn.yielded",
        TurnResumed = "turn.resumed",
        /// Live only: part of a model's answer as it streams.
        TextDelta = "text.delta",
        ToolCalled = "tool.called",
        /// Live only: how a running tool call is getting on (a remote host's progress).
        ToolProgress = "tool.progress",
        ToolResult = "tool.result",
        ApprovalRequested = "approval.requested",
        ApprovalDecided = "approval.decided",
        /// The scheduler disabled a job (its runs kept failing, its schedule could not be
        /// read); of no session.
        JobDisabled = "job.disabled",
        /// A new configuration was applied to the deployment; of no session.
        ConfigApplied = "config.applied",
        /// An agent sent another agent a message (in the sender's session, when it has one).
        AgentMessageSent = "agent.message.sent",
        /// An agent's message arrived (in the receiver's session), stored as its event.
        AgentMessageReceived = "agent.message.received",
        /// An operator paused an agent (of no session) or a session (in it).
        ExecutionsPaused = "executions.paused",
        /// An operator lifted a pause.
        ExecutionsResumed = "executions.resumed",
        /// A branch or a worker started (in the session that started it).
        ExecutionStarted = "execution.started",
        /// A worker reported how it is getting on (`worker.set_status`).
        ExecutionProgress = "execution.progress",
        /// A branch or a worker ended: completed, failed or cancelled.
        ExecutionEnded = "execution.ended",
        /// A turn paused at a breakpoint, waiting for a person (in its session).
        DebugStopped = "debug.stopped",
        /// A person let a paused turn go on: continue, step, skip or edit.
        DebugResumed = "debug.resumed",
    }
}

impl EventKind {
    /// Passed to live subscribers only, never stored in the outbox nor sent to webhooks.
    pub const fn is_live_only(self) -> bool {
        matches!(self, EventKind::TextDelta | EventKind::ToolProgress)
    }

    /// One of the events that end a turn.
    pub const fn ends_turn(self) -> bool {
        matches!(self, EventKind::TurnFinished | EventKind::TurnFailed | EventKind::TurnYielded)
    }
}

vocabulary! {
    /// What an audit record records. Some share a lifecycle event's spelling, since the same
    /// change is both audited and announced.
    AuditKind {
        /// Policy's decision on a tool call, committed with the call's start.
        ToolDecision = "tool.decision",
        /// An operator's tool call and what it returned.
        ToolResult = "tool.result",
        SandboxViolation = "sandbox.violation",
        SandboxLimit = "sandbox.limit",
        SandboxDenied = "sandbox.denied",
        ApprovalRequested = "approval.requested",
        ApprovalDecided = "approval.decided",
        GrantAdded = "grant.added",
        GrantRevoked = "grant.revoked",
        TenantCreated = "tenant.created",
        TenantDeleted = "tenant.deleted",
        AgentCreated = "agent.created",
        AgentDeleted = "agent.deleted",
        TokenCreated = "token.created",
        TokenRevoked = "token.revoked",
        SecretSet = "secret.set",
        SecretRemoved = "secret.removed",
        JobCreated = "job.created",
        JobRemoved = "job.removed",
        JobEnabled = "job.enabled",
        /// By a person, or by the scheduler (a schedule it cannot read, too many failures in
        /// a row), which says why.
        JobDisabled = "job.disabled",
        ConfigApplied = "config.applied",
        /// A retention sweep deleted a tenant's old records (its counts in the detail).
        RetentionSwept = "retention.swept",
        /// An agent's setting was stored or removed (its key in the detail, not its value).
        SettingChanged = "setting.changed",
        /// A component was paired with the gateway (its kind, name, endpoint and key).
        PeerPaired = "peer.paired",
        PeerRemoved = "peer.removed",
        /// A paired component did not prove it holds the key it was paired with.
        PeerRefused = "peer.refused",
        /// A tenant leased its events (or an agent's, or a session's) to a paired component.
        LeaseGranted = "lease.granted",
        /// A lease ended before its expiry (revoked, or its component stopped answering), or
        /// was found expired; why is in the detail.
        LeaseEnded = "lease.ended",
        /// An item of an agent's memory was saved, changed, linked or forgotten by an
        /// operator or the agent (its id and the change in the detail, never its content).
        MemoryChanged = "memory.changed",
        /// An operator paused an agent or one of its sessions: no new turn starts there.
        ExecutionsPaused = "executions.paused",
        /// An operator lifted a pause: the waiting events run.
        ExecutionsResumed = "executions.resumed",
        /// A new version of a stored flow was saved (its name, version and hash).
        FlowSaved = "flow.saved",
        /// A stored flow was deleted, every version (runs keep the text they started with).
        FlowDeleted = "flow.deleted",
        /// A breakpoint was set on an agent or one of its sessions.
        BreakpointSet = "breakpoint.set",
        /// A breakpoint was removed.
        BreakpointRemoved = "breakpoint.removed",
        /// A person let a turn paused at a breakpoint go on; an edit's arguments before and
        /// after, or a skip's given result, are in the detail.
        DebugResumed = "debug.resumed",
    }
}

vocabulary! {
    /// Where a breakpoint pauses a turn.
    BreakAt {
        /// Before each model call, with the context composed.
        Model = "model",
        /// Before a tool call (every tool, or the one named), with its arguments.
        Tool = "tool",
        /// When a model call fails or a tool call returns an error, before the turn goes on.
        Error = "error",
    }
}

vocabulary! {
    /// What a person tells a turn paused at a breakpoint.
    StopAction {
        /// Go on until the next breakpoint.
        Continue = "continue",
        /// Run this step and pause again before the next one.
        Step = "step",
        /// Do not make the call: the given result stands for it.
        Skip = "skip",
        /// Make the tool call with other arguments (audited).
        Edit = "edit",
    }
}

vocabulary! {
    /// What an item of an agent's long-term memory is.
    MemoryKind {
        /// Something true about the world or the user.
        Fact = "fact",
        /// What someone likes or wants done a certain way.
        Preference = "preference",
        /// A choice that was made, and stands until another replaces it.
        Decision = "decision",
        /// Who someone is: names, roles, relationships.
        Identity = "identity",
        /// Something that happened at a time.
        Event = "event",
        /// Something noticed, not yet confirmed.
        Observation = "observation",
        /// What someone is working towards.
        Goal = "goal",
        /// Something still to do.
        Todo = "todo",
    }
}

vocabulary! {
    /// How one memory item relates to another.
    LinkKind {
        /// The first replaces or refines the second.
        Updates = "updates",
        /// The two cannot both be true.
        Contradicts = "contradicts",
        /// The first happened because of the second.
        CausedBy = "caused_by",
        /// The two are about the same thing.
        RelatedTo = "related_to",
        /// The first is a part of the second.
        PartOf = "part_of",
    }
}

vocabulary! {
    /// How one agent messages another.
    MessageKind {
        /// Delivered; the sender goes on without waiting for the receiver's turn.
        Send = "send",
        /// Delivered, and the sender waits for the receiver's turn: its reply is the answer.
        Ask = "ask",
        /// Published on a topic: delivered to each agent subscribed to it; no one waits.
        Publish = "publish",
    }
}

vocabulary! {
    /// What kind of process runs a model call: each has its own model route and limits.
    ProcessKind {
        /// The conversation with the user.
        Channel = "channel",
        /// A fork of a session's context that thinks in parallel.
        Branch = "branch",
        /// A fresh context with a task of its own.
        Worker = "worker",
        /// Summarises history.
        Compactor = "compactor",
        /// Background reflection over an agent's memory.
        Cortex = "cortex",
    }
}

vocabulary! {
    /// What a durable execution is: each journals numbered steps and resumes from them after a
    /// crash, whether or not it is a chat turn.
    ExecutionKind {
        /// A channel's turn.
        Turn = "turn",
        Branch = "branch",
        Worker = "worker",
        /// A child agent's run for its parent.
        SubAgent = "subagent",
        /// A declared workflow's run.
        Flow = "flow",
        /// One step of a declared workflow's run.
        FlowStep = "flow_step",
        /// A scheduled job's firing.
        CronFire = "cron_fire",
        /// The runtime's own upkeep (retention sweeps, compaction).
        Maintenance = "maintenance",
    }
}

vocabulary! {
    /// Where an execution stands. It starts `Pending` or `Running` and ends in `Completed`,
    /// `Failed` or `Cancelled`; `Paused` stops it between steps until it is resumed.
    ExecutionStatus {
        Pending = "pending",
        Running = "running",
        Paused = "paused",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

vocabulary! {
    /// Where one task of a flow run stands.
    FlowTaskStatus {
        Pending = "pending",
        /// Its agent is being asked now (shown while a run is under way, never recorded).
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        /// Not run: its branch of a condition was not taken, a `goto` passed it, or its
        /// parallel block was done without it.
        Skipped = "skipped",
    }
}

impl FlowTaskStatus {
    /// Whether the task has ended in the run: completed, failed or skipped.
    pub const fn has_ended(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Skipped)
    }
}

impl ExecutionStatus {
    /// Whether it has ended: an ended execution never changes again.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether an execution here may move to `next`: nothing leaves an end, nothing goes back
    /// to `Pending`, and moving to where it already is changes nothing (allowed, so a retried
    /// write is harmless).
    pub const fn can_become(self, next: Self) -> bool {
        if self.is_final() {
            return (self as u8) == (next as u8);
        }
        !matches!(next, Self::Pending) || matches!(self, Self::Pending)
    }
}

vocabulary! {
    /// Where an approval stands.
    ApprovalStatus {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        /// Not decided within its timeout: a denial.
        Expired = "expired",
        /// The call it was for will never run (its agent was deleted): nothing to decide.
        Cancelled = "cancelled",
    }
}

vocabulary! {
    /// What a journal step records.
    StepKind {
        ModelResponse = "model_response",
        ToolStarted = "tool_started",
        ToolResult = "tool_result",
        Resumed = "resumed",
    }
}

/// One step of a turn's journal, keyed by its explicit numbers: the model call `iteration`, the
/// tool call `index` within it, or the `n`th resume. A step is written once; a resumed turn
/// finds its steps by key and does not repeat them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKey {
    Model { iteration: u32 },
    ToolStart { iteration: u32, index: u32 },
    ToolResult { iteration: u32, index: u32 },
    Resume { n: u32 },
}

impl StepKey {
    pub const fn kind(self) -> StepKind {
        match self {
            StepKey::Model { .. } => StepKind::ModelResponse,
            StepKey::ToolStart { .. } => StepKind::ToolStarted,
            StepKey::ToolResult { .. } => StepKind::ToolResult,
            StepKey::Resume { .. } => StepKind::Resumed,
        }
    }

    /// The order the engine writes an iteration's steps in: a model call, then its tool calls'
    /// starts and results in call order. Steps are numbered as they are written; journals
    /// written before that knew only each step's millisecond, and the store's migration 13
    /// numbered steps of one millisecond in this order. A resume is written alone, in a
    /// transaction of its own, so it never shares a millisecond with the steps around it.
    pub const fn order(self) -> (u32, u64, u8) {
        match self {
            StepKey::Model { iteration } => (iteration, 0, 0),
            StepKey::ToolStart { iteration, index } => (iteration, 1 + index as u64, 0),
            StepKey::ToolResult { iteration, index } => (iteration, 1 + index as u64, 1),
            StepKey::Resume { n } => (n, 0, 0),
        }
    }

    /// The key spelled `text` (as [`fmt::Display`] writes it), if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        let number = |i: usize| parts.get(i).and_then(|p| p.parse::<u32>().ok());
        let key = match (parts.first()?, parts.len()) {
            (&"model", 2) => StepKey::Model { iteration: number(1)? },
            (&"resume", 2) => StepKey::Resume { n: number(1)? },
            (&"tool", 4) => {
                let (iteration, index) = (number(1)?, number(2)?);
                match parts[3] {
                    "start" => StepKey::ToolStart { iteration, index },
                    "result" => StepKey::ToolResult { iteration, index },
                    _ => return None,
                }
            }
            _ => return None,
        };
        // Only the one spelling of each key: no trailing parts, no leading zeros.
        (key.to_string() == text).then_some(key)
    }

    /// The key of the tool call this step belongs to, shared by its start and result: what
    /// names the call's effect across restarts.
    pub fn call(self) -> Option<String> {
        match self {
            StepKey::ToolStart { iteration, index } | StepKey::ToolResult { iteration, index } => {
                Some(format!("tool/{iteration}/{index}"))
            }
            _ => None,
        }
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKey::Model { iteration } => write!(f, "model/{iteration}"),
            StepKey::ToolStart { iteration, index } => write!(f, "tool/{iteration}/{index}/start"),
            StepKey::ToolResult { iteration, index } => {
                write!(f, "tool/{iteration}/{index}/result")
            }
            StepKey::Resume { n } => write!(f, "resume/{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_back_as_itself() {
        for status in TurnStatus::ALL {
            assert_eq!(TurnStatus::parse(status.as_str()), Some(*status));
        }
        for status in EventStatus::ALL {
            assert_eq!(EventStatus::parse(status.as_str()), Some(*status));
        }
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
        }
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(*kind));
        }
        for kind in ExecutionKind::ALL {
            assert_eq!(ExecutionKind::parse(kind.as_str()), Some(*kind));
        }
        for status in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(*status));
        }
        for kind in ProcessKind::ALL {
            assert_eq!(ProcessKind::parse(kind.as_str()), Some(*kind));
        }
        for status in TurnStatus::ALL {
            assert_eq!(TurnStatus::of_execution(status.execution_status()), Some(*status));
        }
        assert_eq!(TurnStatus::parse("Completed"), None);
        assert_eq!(EventKind::parse("turn"), None);
    }

    #[test]
    fn step_keys_read_back_and_refuse_other_spellings() {
        for key in [
            StepKey::Model { iteration: 0 },
            StepKey::Model { iteration: 12 },
            StepKey::ToolStart { iteration: 3, index: 1 },
            StepKey::ToolResult { iteration: 0, index: 10 },
            StepKey::Resume { n: 2 },
        ] {
            assert_eq!(StepKey::parse(&key.to_string()), Some(key), "{key}");
        }
        for bad in [
            "",
            "model",
            "model/",
            "model/x",
            "model/01",
            "model/1/2",
            "tool/1/2",
            "tool/1/2/end",
            "tool/1/2/start/3",
            "resume/-1",
            "other/1",
            "model/4294967296",
        ] {
            assert_eq!(StepKey::parse(bad), None, "{bad:?}");
        }
    }

    /// Steps of one millisecond sort as the engine writes them, not as their names would.
    #[test]
    fn steps_of_one_millisecond_keep_the_engines_order() {
        let mut steps: Vec<StepKey> = [
            "tool/0/1/result",
            "tool/0/0/result",
            "model/1",
            "tool/0/1/start",
            "model/0",
            "tool/0/0/start",
            "model/10",
            "model/2",
        ]
        .iter()
        .map(|s| StepKey::parse(s).unwrap())
        .collect();
        steps.sort_by_key(|s| s.order());
        let names: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "model/0",
                "tool/0/0/start",
                "tool/0/0/result",
                "tool/0/1/start",
                "tool/0/1/result",
                "model/1",
                "model/2",
                "model/10"
            ]
        );
    }

    #[test]
    fn a_turns_end_names_its_events_status_and_announcement() {
        assert_eq!(TurnStatus::Completed.event_status(), EventStatus::Done);
        assert_eq!(TurnStatus::Completed.end_event(), Some(EventKind::TurnFinished));
        assert_eq!(TurnStatus::Running.end_event(), None);
        for status in TurnStatus::ALL {
            assert_eq!(
                status.end_event().is_some_and(EventKind::ends_turn),
                *status != TurnStatus::Running
            );
        }
    }

    #[test]
    fn an_ended_execution_never_changes_and_nothing_returns_to_pending() {
        use ExecutionStatus::*;
        for from in ExecutionStatus::ALL {
            for to in ExecutionStatus::ALL {
                let allowed = from.can_become(*to);
                let expected =
                    if from.is_final() { from == to } else { *to != Pending || *from == Pending };
                assert_eq!(allowed, expected, "{from} -> {to}");
            }
        }
        assert!(Running.can_become(Paused) && Paused.can_become(Running));
        assert!(!Completed.can_become(Running) && !Cancelled.can_become(Failed));
    }
}
