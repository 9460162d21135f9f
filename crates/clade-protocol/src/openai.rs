//! The OpenAI-compatible surface: `POST /v1/chat/completions` and `GET /v1/models`, in the
//! shapes OpenAI documents for its Chat Completions API, so any OpenAI client reaches an agent
//! unchanged. The model name is the agent; the gateway keeps the conversation, so a client
//! sends only its new message (or the whole history, of which the last user message is new).
//!
//! Fields a client may send that change nothing here (sampling settings, `seed`, …) are taken
//! and ignored, as OpenAI's own clients send them by default; fields that would ask for
//! something the gateway does not do (several choices, the client's own tools) are refused
//! with an error naming them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionRequest {
    /// The agent: its handle, or `tenant/handle` for the operator (an admin token of the
    /// default tenant).
    #[schemars(length(min = 1, max = 130))]
    pub model: String,
    /// The conversation: its last `user` message is what the agent is sent.
    #[schemars(length(min = 1))]
    pub messages: Vec<ChatMessage>,
    /// Stream the answer as server-sent events (`chat.completion.chunk`).
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Names the conversation: the same `user` continues the same session (the
    /// `X-Session-Id` header does too). Without either, the conversation's first messages
    /// name it.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,
    /// Only 1: the agent answers once.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1))]
    pub n: Option<u32>,
    /// The agent's own tools run on the server; a client's tools are refused.
    #[serde(default)]
    #[schemars(length(max = 0))]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Anything else OpenAI's API takes (temperature, max_tokens, …): accepted and ignored,
    /// since the agent's configuration decides them.
    #[serde(flatten)]
    #[schemars(skip)]
    pub ignored: serde_json::Map<String, serde_json::Value>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StreamOptions {
    /// Send one last chunk with the usage of the whole answer (and no choices).
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One message of the conversation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    #[schemars(extend("enum" = ["system", "developer", "user", "assistant", "tool", "function"]))]
    pub role: String,
    /// Text, or a list of parts of which the `text` ones are read.
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub name: Option<String>,
    /// Anything else a message may carry (`tool_calls`, `refusal`, …): ignored.
    #[serde(flatten)]
    #[schemars(skip)]
    pub ignored: serde_json::Map<String, serde_json::Value>,
}

/// A message's content: text, or parts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message's content; only `text` parts are read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl MessageContent {
    /// The text it holds: the text itself, or its text parts joined by newlines.
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter(|part| part.kind == "text")
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The answer, when not streamed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop`.
    pub finish_reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One server-sent event of a streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionChunk {
    /// The same for every chunk of one answer.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    pub created: i64,
    pub model: String,
    /// Empty in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the last chunk, when `stream_options.include_usage` asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChunkDelta,
    /// `stop` in the last chunk with a choice, else null.
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ChunkDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `GET /v1/models`: the agents the token reaches, as models.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelEntry {
    /// The agent's handle: what `model` names.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds: when the agent was created.
    pub created: i64,
    /// The tenant.
    pub owned_by: String,
}

/// An error, in OpenAI's shape.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OpenAiErrorResponse {
    pub error: OpenAiError,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OpenAiError {
    /// What is wrong and what to do.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Clade's code (docs/errors.md), or OpenAI's where it has one (`model_not_found`).
    pub code: Option<String>,
}
