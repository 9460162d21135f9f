//! Clade's domain vocabulary: ids, handles, tenants, agents, secret names, time, and the turn
//! protocol's statuses, event kinds and journal step keys.
//!
//! Owns the types every other crate speaks in. It performs no I/O, knows no storage or wire
//! format (its types are deliberately not `Serialize`). Its one use of the async runtime is the
//! [`Clock`]: the system clock sleeps on tokio's timer, and a [`ManualClock`] wakes its sleepers
//! through a tokio watch channel.
//! Start at [`agent`], then [`name`] for the validation rules every user-chosen name follows.

pub mod agent;
pub mod id;
pub mod lifecycle;
pub mod name;
pub mod random;
pub mod scope;
pub mod time;

pub use agent::{Agent, AgentConfig, AgentRef, Tenant};
pub use id::{
    AgentId, ApprovalId, EventId, ExecutionId, GrantId, SessionId, TenantId, TokenId, TurnId,
};
pub use lifecycle::{
    ApprovalStatus, AuditKind, EventKind, EventStatus, ExecutionKind, ExecutionStatus, ProcessKind,
    StepKey, StepKind, TurnStatus,
};
pub use name::{
    DISPLAY_NAME_PATTERN, HANDLE_PATTERN, Handle, LABEL_PATTERN, NOT_BLANK_PATTERN, SecretName,
    TemplateName, is_spoofing_char,
};
pub use random::Jitter;
pub use scope::Scope;
pub use time::{Clock, Interval, ManualClock, Sleep, SystemClock, Timestamp};
