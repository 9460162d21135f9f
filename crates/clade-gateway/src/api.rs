//! The public wire types of the HTTP API (snake_case JSON, timestamps as integer milliseconds).
//!
//! These are separate from `clade-core`'s domain types on purpose: the wire format is a
//! contract with clients and changes only deliberately, and the committed OpenAPI document
//! (checked by a test) makes every change visible in review.

use clade_core::Agent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct AgentResponse {
    /// Time-ordered UUIDv7.
    pub id: String,
    /// Unique per tenant: 1-64 lowercase letters, digits, `-` or `_`.
    pub handle: String,
    /// Shown to people; defaults to the handle.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The persona template the workspace is seeded from.
    pub template: String,
}

impl From<&Agent> for AgentResponse {
    fn from(agent: &Agent) -> Self {
        Self {
            id: agent.id.to_string(),
            handle: agent.handle.to_string(),
            name: agent.display_name.clone(),
            created_at: agent.created_at.as_millis(),
            template: agent.config.template.to_string(),
        }
    }
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentParams {
    pub handle: String,
    /// Display name; defaults to the handle.
    #[serde(default)]
    pub name: Option<String>,
    /// Persona template; defaults to `default`.
    #[serde(default)]
    pub template: Option<String>,
}

/// One page of agents.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct AgentListResponse {
    pub items: Vec<AgentResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/agents`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAgentsQuery {
    /// Page size, 1-1000 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Every error body.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code; see docs/errors.md.
    pub code: String,
    /// What is wrong and what to do, for people.
    pub message: String,
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this agent's calls (by handle).
    #[serde(default)]
    pub agent: Option<String>,
    /// Unix milliseconds; default 30 days ago.
    #[serde(default)]
    pub since: Option<i64>,
}

/// Model usage summed per agent and model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UsageResponse {
    pub since: i64,
    pub items: Vec<UsageItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UsageItem {
    /// Agent handle; absent for calls made for the tenant itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The configured model name.
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    /// Cost in millionths of a US dollar, from the configured prices.
    pub cost_micros: u64,
}

/// Where an event came from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceParams {
    /// e.g. `telegram`, `slack`, `http`, `cli`.
    pub platform: String,
    /// A chat, room or thread id within the platform.
    pub channel: String,
    /// Who sent it.
    pub actor: String,
}

/// Body of `POST /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Agent handle; when absent, the bindings in clade.yaml pick one from the source.
    #[serde(default)]
    pub agent: Option<String>,
    pub text: String,
    pub source: SourceParams,
    /// Repeating a key returns the original answer and never starts a second turn. The
    /// `Idempotency-Key` header works too.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Answer only when the turn has finished (up to 120 s), with its reply.
    #[serde(default)]
    pub wait: bool,
}

/// Answer to `POST /v1/events`: 202 when stored, 200 with the reply when `wait` was set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventResponse {
    pub event_id: String,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// `completed`, `failed` or `yielded` (with `wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReplyBody {
    pub text: String,
    /// The model that answered (`scripted` means the offline provider, not a language model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionResponse {
    pub id: String,
    pub agent_id: String,
    pub platform: String,
    pub channel: String,
    pub actor: String,
    /// Where output without an explicit target goes.
    pub last_active_channel: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionListResponse {
    pub items: Vec<SessionResponse>,
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    #[serde(default)]
    pub agent: Option<String>,
    /// 1-1000, default 100.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One turn, with the events it answered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnResponse {
    pub id: String,
    /// `running`, `completed`, `failed` or `yielded`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    pub events: Vec<TurnEvent>,
    pub usage: TurnUsageBody,
}

/// What a turn's model calls consumed (tokens as reported by the provider, cost from the
/// configured prices).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnUsageBody {
    pub model_calls: u64,
    /// Including cached and cache-write tokens.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnEvent {
    pub id: String,
    pub seq: i64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TurnListResponse {
    pub items: Vec<TurnResponse>,
}
