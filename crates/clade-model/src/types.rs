//! Provider-neutral requests and responses. Adapters translate these to and from each
//! provider's wire format; nothing outside an adapter sees a wire type.

use std::pin::Pin;

use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One message of the conversation sent to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions. Adapters that have a separate system field (Anthropic) move these there.
    System {
        text: String,
    },
    User {
        text: String,
    },
    Assistant {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of a tool call the model asked for.
    Tool {
        call_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

impl Message {
    pub fn system(text: impl Into<String>) -> Self {
        Message::System { text: text.into() }
    }

    pub fn user(text: impl Into<String>) -> Self {
        Message::User { text: text.into() }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub input_schema: serde_json::Value,
}

/// A tool call the model made. `arguments` is kept as the raw JSON text the model produced:
/// a model may emit invalid JSON, and the caller must be able to tell the model so rather
/// than fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    /// Parses the arguments; the error text is meant to be sent back to the model.
    pub fn parse_arguments(&self) -> Result<serde_json::Value, String> {
        let text = if self.arguments.trim().is_empty() { "{}" } else { &self.arguments };
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value @ serde_json::Value::Object(_)) => Ok(value),
            Ok(_) => Err(format!("arguments of {} must be a JSON object", self.name)),
            Err(err) => Err(format!("arguments of {} are not valid JSON: {err}", self.name)),
        }
    }
}

/// Sampling and length parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

impl Default for Params {
    fn default() -> Self {
        Self { max_tokens: 1024, temperature: None }
    }
}

/// Everything a model call needs except the model's name, which the router fills in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub messages: Vec<Message>,
    /// Shared: the same tools go out with every call of a turn, and of every turn of an agent.
    #[serde(default)]
    pub tools: std::sync::Arc<[ToolSpec]>,
    #[serde(default)]
    pub params: Params,
    /// Whose prompts this one may share what a provider keeps between calls with (the local
    /// model's attention cache): reused only within one scope, so no tenant can time another's
    /// prompts. The engine sets the tenant; `None` is never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_scope: Option<String>,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the normal rate (excludes cached reads and cache writes).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cached_input_tokens + self.cache_write_tokens
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    ContentFilter,
    Other(String),
}

/// One piece of a streamed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    TextDelta(String),
    /// A tool call begins; `index` identifies it in later deltas.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: usize,
        arguments: String,
    },
    Usage(Usage),
    Stop(StopReason),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, Error>> + Send>>;

/// A complete response, assembled from a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub stop_reason: Option<StopReason>,
}

impl ModelResponse {
    /// Folds one event in.
    pub fn apply(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::TextDelta(text) => self.text.push_str(&text),
            StreamEvent::ToolCallStart { index, id, name } => {
                while self.tool_calls.len() <= index {
                    self.tool_calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.tool_calls[index].id = id;
                self.tool_calls[index].name = name;
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = self.tool_calls.get_mut(index) {
                    call.arguments.push_str(&arguments);
                }
            }
            StreamEvent::Usage(usage) => {
                // Providers report usage in parts (Anthropic: input at start, output at end).
                self.usage.input_tokens = self.usage.input_tokens.max(usage.input_tokens);
                self.usage.output_tokens = self.usage.output_tokens.max(usage.output_tokens);
                self.usage.cached_input_tokens =
                    self.usage.cached_input_tokens.max(usage.cached_input_tokens);
                self.usage.cache_write_tokens =
                    self.usage.cache_write_tokens.max(usage.cache_write_tokens);
            }
            StreamEvent::Stop(reason) => self.stop_reason = Some(reason),
        }
    }

    /// Drains a stream into a response.
    pub async fn collect(mut stream: EventStream) -> Result<Self, Error> {
        use futures::StreamExt;
        let mut response = Self::default();
        while let Some(event) = stream.next().await {
            response.apply(event?);
        }
        if response.stop_reason.is_none() {
            return Err(Error::MalformedResponse("stream ended without a stop reason".into()));
        }
        Ok(response)
    }
}
