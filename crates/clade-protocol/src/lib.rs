//! Clade's wire protocol: every body the HTTP API, its WebSocket and SSE streams and its
//! webhooks send or take, with their JSON Schemas (snake_case fields, timestamps as integer
//! milliseconds).
//!
//! Owns the contract with clients, apart from `clade-core`'s domain types on purpose: the wire
//! changes only deliberately, and the committed OpenAPI document (checked by a test) makes every
//! change visible in review. It depends on serde, schemars and `clade-core`'s vocabulary only
//! (no async runtime, no HTTP stack), so an out-of-process client (a channel listener, an SDK,
//! the dashboard) can take it alone. Words of the vocabulary travel as [`Spelled`], with
//! `clade-core`'s one spelling.
//!
//! Start at [`lifecycle`] for what streams and webhooks carry, then [`resources`].

pub mod admin;
pub mod console;
pub mod debugging;
pub mod journal;
pub mod lifecycle;
pub mod mcp;
pub mod openai;
pub mod remote_tools;
pub mod resources;
mod spelled;

pub use debugging::*;
pub use journal::{ModelToolCall, TurnStep, TurnStepPage};
pub use lifecycle::{
    AgentMessage, ApprovalDecided, ApprovalRequested, CancelResponse, ChannelReadiness,
    ClientFrame, ConfigApplied, ExecutionChanged, HealthResponse, JobDisabled, LifecycleEvent,
    PauseChanged, ReadinessResponse, ReplyFile, ResumeResponse, SandboxReport, ServerFrame,
    TextDelta, ToolCalled, ToolProgress, ToolReturned, TurnEnded, TurnResumed, TurnStarted,
    WebhookEvent,
};
pub use resources::*;
pub use spelled::Spelled;
