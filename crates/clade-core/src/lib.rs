//! Clade's domain vocabulary: ids, handles, tenants, agents, secret names, time, and the turn
//! protocol's statuses, event kinds and journal step keys.
//!
//! Owns the types every other crate speaks in. It performs no I/O, knows no storage or wire
//! format (its types are deliberately not `Serialize`). Its one use of the async runtime is the
//! `Clock` (`clock` feature, on by default): the system clock sleeps on tokio's timer, and a
//! `ManualClock` wakes its sleepers through a tokio watch channel. Without that feature it
//! depends on no runtime, which is how `clade-protocol` takes it.
//! Start at [`agent`], then [`name`] for the validation rules every user-chosen name follows.

pub mod agent;
pub mod backoff;
#[cfg(feature = "clock")]
pub mod clock;
pub mod fault;
pub mod id;
pub mod lifecycle;
pub mod name;
pub mod origin;
pub mod random;
pub mod scope;
pub mod shard;
pub mod time;

pub use agent::{Agent, AgentConfig, AgentRef, Tenant};
pub use backoff::Backoff;
#[cfg(feature = "clock")]
pub use clock::{Clock, Interval, ManualClock, Sleep, SystemClock};
pub use fault::Fault;
pub use id::{
    AgentId, ApprovalId, BreakpointId, EventId, ExecutionId, GrantId, LeaseId, MemoryId, MessageId,
    SessionId, StopId, TenantId, TokenId, TurnId,
};
pub use lifecycle::{
    ApprovalStatus, AuditKind, BreakAt, EventKind, EventStatus, ExecutionKind, ExecutionStatus,
    FlowTaskStatus, LinkKind, MemoryKind, MessageKind, ProcessKind, StepKey, StepKind, StopAction,
    TurnStatus, Word,
};
pub use name::{
    DISPLAY_NAME_PATTERN, HANDLE_PATTERN, Handle, LABEL_PATTERN, NOT_BLANK_PATTERN,
    SETTING_KEY_PATTERN, SecretName, TemplateName, is_setting_key, is_spoofing_char,
};
pub use origin::{ChatPlatform, Origin};
pub use random::Jitter;
pub use scope::Scope;
pub use time::Timestamp;
