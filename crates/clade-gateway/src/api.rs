//! The public wire types of the HTTP API (camelCase JSON, timestamps as integer milliseconds).
//!
//! These are separate from `clade-core`'s domain types on purpose: the wire format is a
//! contract with clients and changes only deliberately, and the committed OpenAPI document
//! (checked by a test) makes every change visible in review.

use clade_core::Agent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase")]
pub struct AgentListResponse {
    pub items: Vec<AgentResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/agents`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAgentsQuery {
    /// Page size, 1-1000 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase")]
pub struct UsageResponse {
    pub since: i64,
    pub items: Vec<UsageItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
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
