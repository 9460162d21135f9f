//! Step-through debugging on the wire: breakpoints on an agent or a session, the stops where
//! turns wait for a person, and what the person tells a stop.

use clade_core::{BreakAt, StopAction};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Spelled;

/// `POST /v1/breakpoints`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// A tool is named only where a tool call is: before one, or on its error.
#[schemars(extend(
    "if" = { "properties": { "at": { "const": "model" } }, "required": ["at"] },
    "then" = { "not": { "required": ["tool"] } }
))]
pub struct CreateBreakpointParams {
    /// The agent's handle.
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: String,
    /// Only this session of the agent; absent for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Before each model call, before a tool call, or on an error.
    pub at: Spelled<BreakAt>,
    /// With `at: tool`, the one tool it pauses before; with `at: error`, the one tool whose
    /// errors it pauses at (a model call's failure then does not); absent for every tool.
    /// Not with `at: model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(TOOL_NAME_PATTERN))]
    pub tool: Option<String>,
}

/// A tool's name, as a breakpoint names it: no control characters.
pub const TOOL_NAME_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$";

/// A breakpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BreakpointResponse {
    pub id: String,
    /// The agent's handle.
    pub agent: String,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub at: Spelled<BreakAt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BreakpointListResponse {
    pub items: Vec<BreakpointResponse>,
}

/// Query of `GET /v1/breakpoints`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakpointsQuery {
    /// Only this agent's (a handle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: Option<String>,
}

/// Which stops a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopFilter {
    /// Those whose turns wait for a person now.
    #[default]
    Waiting,
    /// Told ones and those whose turns ended, too.
    All,
}

/// Query of `GET /v1/debug/stops`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopsQuery {
    /// Only this agent's (a handle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub agent: Option<String>,
    /// `waiting` (the default) or `all`.
    #[serde(default)]
    pub status: StopFilter,
    /// At most this many, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::MAX_PAGE), extend("default" = crate::DEFAULT_PAGE))]
    pub limit: Option<u32>,
}

/// A turn paused at a breakpoint: where, what it holds there, and what it was told.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StopResponse {
    pub id: String,
    /// The agent's handle.
    pub agent: String,
    pub agent_id: String,
    pub session_id: String,
    pub turn_id: String,
    /// Where in the turn: `model/<iteration>`, `tool/<iteration>/<index>`, or either after
    /// `error/`.
    pub place: String,
    pub at: Spelled<BreakAt>,
    /// Whether the turn still waits for a person.
    pub waiting: bool,
    /// What the turn holds there: before a model call, the composed context (`messages`, the
    /// `tools` offered); before a tool call, the `call` (`id`, `name`, `arguments`); on an error,
    /// the `error` and what failed.
    pub detail: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Spelled<StopAction>>,
    /// An edit's `arguments`, or a skip's `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StopListResponse {
    pub items: Vec<StopResponse>,
}

/// `POST /v1/debug/stops/{id}`: what the paused turn does next.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeStopParams {
    /// `continue` (to the next breakpoint), `step` (pause again before the next step),
    /// `skip` (the call is not made; `result` stands for it) or `edit` (the tool call runs with
    /// `arguments`, audited).
    pub action: Spelled<StopAction>,
    /// With `edit`: the tool call's new arguments, a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// With `skip`: what the model is told the call returned (for a model call, its answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub result: Option<String>,
}

/// `debug.stopped` and `debug.resumed`: a turn paused at a breakpoint, or was let go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DebugStopChanged {
    pub stop: String,
    pub turn: String,
    pub agent_id: String,
    pub place: String,
    pub at: Spelled<BreakAt>,
    /// What the person said (`debug.resumed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Spelled<StopAction>>,
}
