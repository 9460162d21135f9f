//! Clade's runtime: what ties models, storage and configuration together for an agent.
//!
//! Owns the per-agent model setup (routes, credentials from secrets or the environment),
//! budget enforcement over the store, usage accounting, session actors and the turn executor
//! (a state machine over journal, model and tool seams). It depends on the store, model and
//! config crates through their public handles and traits, never on a storage backend or a
//! provider's wire format.
//!
//! Start at [`engine::Engine`], then [`models::Models`].

pub mod budget;
pub mod bus;
pub mod cortex;
mod disk;
pub mod engine;
pub mod execution;
pub mod failpoints;
pub mod forks;
pub mod hub;
pub mod ingest;
pub mod memory;
pub mod messaging;
pub mod models;
pub mod outbox;
mod routing;
pub mod settings;
pub mod shared;
pub mod signing;
pub mod telemetry;
pub mod tools;

pub use budget::StoreBudget;
pub use bus::{Addressed, Bus, LocalBus, Signal};
pub use engine::{
    Bare, Engine, EngineOptions, Envelope, Finished, Preview, Recall, Settings, StopOrder,
    TurnWatch, UnreadableStep, WeakEngine, step_view,
};
pub use execution::{Durable, DurableError};
pub use failpoints::Failpoints;
pub use hub::{Hub, LiveEvent, Relay, Subscription, Watch};
pub use models::{EnvHints, Models, ProcessKind};
pub use tools::{CallOrigin, CallOutcome, InvalidArguments, ToolRunner, ToolSet, Verdict};
