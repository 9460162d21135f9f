//! Clade's domain vocabulary: ids, handles, tenants, agents, secret names, time, and the turn
//! protocol's statuses, event kinds and journal step keys.
//!
//! Owns the types every other crate speaks in. It performs no I/O, knows no storage or wire
//! format (its types are deliberately not `Serialize`), and depends on no async runtime.
//! Start at [`agent`], then [`name`] for the validation rules every user-chosen name follows.

pub mod agent;
pub mod id;
pub mod lifecycle;
pub mod name;
pub mod scope;
pub mod time;

pub use agent::{Agent, AgentConfig, AgentRef, Tenant};
pub use id::{AgentId, ApprovalId, EventId, GrantId, SessionId, TenantId, TokenId, TurnId};
pub use lifecycle::{
    ApprovalStatus, AuditKind, EventKind, EventStatus, ProcessKind, StepKey, StepKind, TurnStatus,
};
pub use name::{Handle, SecretName, TemplateName, is_spoofing_char};
pub use scope::Scope;
pub use time::{Clock, SystemClock, Timestamp};
