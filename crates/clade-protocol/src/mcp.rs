//! The Model Context Protocol surface: each agent as an MCP tool (ask it, in a session) and its
//! sessions as resources, over MCP's streamable HTTP transport (`POST /v1/mcp`, or
//! `/v1/agents/{handle}/mcp` for one agent) and, through `clade mcp serve`, over stdio.
//!
//! The messages are JSON-RPC 2.0 as MCP's handshake-era revisions (2024-11-05 to 2025-11-25)
//! define them, with MCP's field names (camelCase). The gateway keeps no MCP session: every
//! request carries its tenant token, so any gateway of a cluster can answer it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The revisions the gateway speaks, newest first: a client that asks for one of them gets it,
/// any other client the newest.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The header a client names its revision with after the handshake.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// JSON-RPC's own error codes, and MCP's.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP's: the resource does not exist (or the token does not reach it).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// The token's scopes do not allow the method (Clade's, in the server-error range).
    pub const FORBIDDEN: i64 = -32003;
}

/// A request's id: a string or an integer (JSON-RPC allows both; MCP never null). An integer
/// is kept as it was written.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RequestId {
    Number(#[schemars(with = "i64")] serde_json::Number),
    Text(String),
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Within i64, as the schema says, however it was written (`7`, `7.0`); a number read as
        // a float only where a float is exact (2^53), so an integer just outside i64 is refused.
        let integral = |n: &serde_json::Number| {
            n.is_i64()
                || (!n.is_u64()
                    && n.as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0))
        };
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Number(n) if integral(&n) => Ok(Self::Number(n)),
            _ => Err(serde::de::Error::custom("an id must be a string or an integer")),
        }
    }
}

/// `"2.0"`, the only JSON-RPC version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum JsonRpcVersion {
    #[default]
    #[serde(rename = "2.0")]
    V2,
}

/// What a client posts: one request (with an `id`) or notification (without). Batches, which
/// MCP dropped in 2025-06-18, are refused.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct McpMessage {
    pub jsonrpc: JsonRpcVersion,
    /// A request's; a notification has none (and never `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "RequestId")]
    pub id: Option<RequestId>,
    #[schemars(length(min = 1, max = 128))]
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Map<String, Value>")]
    pub params: Option<Map<String, Value>>,
}

/// The answer to a request: its `result`, or an `error`. An `id` of `null` answers a message
/// whose id could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct McpResponse {
    pub jsonrpc: JsonRpcVersion,
    pub id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<McpError>,
}

impl McpResponse {
    pub fn result(id: Option<RequestId>, result: Value) -> Self {
        Self { jsonrpc: JsonRpcVersion::V2, id, result: Some(result), error: None }
    }

    pub fn error(id: Option<RequestId>, code: i64, message: impl Into<String>) -> Self {
        let error = McpError { code, message: message.into(), data: None };
        Self { jsonrpc: JsonRpcVersion::V2, id, result: None, error: Some(error) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct McpError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A notification the server sends (in a streamed answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McpNotification {
    pub jsonrpc: JsonRpcVersion,
    pub method: String,
    pub params: Value,
}

/// `initialize`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    pub protocol_version: String,
    pub capabilities: ServerCapabilities,
    pub server_info: Implementation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerCapabilities {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<ListChanged>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesCapability>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListChanged {
    pub list_changed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesCapability {
    pub subscribe: bool,
    pub list_changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Implementation {
    pub name: String,
    pub title: String,
    pub version: String,
}

/// One tool: an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub name: String,
    pub title: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListToolsResult {
    pub tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What an agent's tool takes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskArguments {
    /// What to say to the agent.
    #[schemars(length(min = 1, max = 65536))]
    pub message: String,
    /// The conversation to continue: the same name continues it, a new one starts one. Without
    /// it, the conversation is `default`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub session: Option<String>,
}

/// What an agent's tool answers, besides its text.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AskAnswer {
    /// The agent's answer.
    pub reply: String,
    /// The session the conversation is kept in (its transcript is the resource
    /// `clade://sessions/<session_id>`).
    pub session_id: String,
    /// The turn that answered.
    pub turn_id: String,
}

/// `tools/call`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallToolResult {
    pub content: Vec<TextContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Value>,
    pub is_error: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextContent {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

impl TextContent {
    pub fn new(text: impl Into<String>) -> Self {
        Self { kind: "text".into(), text: text.into() }
    }
}

/// One resource: a session's transcript.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub uri: String,
    pub name: String,
    pub title: String,
    pub description: String,
    pub mime_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResourcesResult {
    pub resources: Vec<Resource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTemplate {
    pub uri_template: String,
    pub name: String,
    pub description: String,
    pub mime_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResourceTemplatesResult {
    pub resource_templates: Vec<ResourceTemplate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceContents {
    pub uri: String,
    pub mime_type: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadResourceResult {
    pub contents: Vec<ResourceContents>,
}

/// `notifications/progress`' params: a streamed answer's text so far, as it is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressParams {
    pub progress_token: Value,
    /// Characters of the answer written so far.
    pub progress: f64,
    /// The text written since the last notification.
    pub message: String,
}

/// The JSON Schema of `T` as a tool's `inputSchema` or `outputSchema`: inline, without the
/// `$schema` key.
pub fn tool_schema<T: JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    schema
}
