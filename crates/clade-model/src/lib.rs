//! Model access for Clade: the provider interface, the OpenAI-compatible and Anthropic
//! adapters, the scripted offline provider, and the router (fallback chains, retries,
//! cooldowns, budgets, cost).
//!
//! Owns every provider wire format: nothing outside this crate builds or parses an OpenAI or
//! Anthropic payload. It must not know about storage, sessions or HTTP serving; budgets and
//! credentials come in through the [`Budget`] and [`CredentialProvider`] traits.
//!
//! Start at [`types`] for the request and stream shapes, then [`router::Router::call`].

pub mod anthropic;
#[cfg(feature = "local-models")]
mod bert;
pub mod embeddings;
pub mod error;
mod http;
#[cfg(feature = "local-models")]
mod llama;
#[cfg(feature = "local-models")]
pub mod local_chat;
#[cfg(feature = "local-models")]
pub mod local_embeddings;
pub mod oauth;
pub mod openai;
pub mod provider;
pub mod router;
pub mod script;
pub mod scripted;
pub mod sse;
pub mod text_calls;
pub mod types;

pub use error::Error;
pub use provider::{CredentialProvider, HttpOptions, Provider, StaticKey};
pub use router::{
    Budget, CallError, CallOutcome, ModelEntry, Price, Reservation, RouteEvent, Router,
    RouterOptions, Spend,
};
pub use scripted::Scripted;
pub use types::{
    EventStream, Message, ModelRequest, ModelResponse, Params, StopReason, StreamEvent, ToolCall,
    ToolSpec, Usage,
};
