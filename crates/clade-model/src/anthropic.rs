//! Anthropic Messages (`POST {base}/v1/messages`), streaming and not: `tool_use` and
//! `tool_result` blocks, the streaming event sequence, and prompt caching (`cache_control` on
//! the stable prefix: the system prompt, i.e. persona files, and the tool definitions).

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::http::{Decoder, response_events};
use crate::provider::{HttpOptions, Provider, ToolNames, send_authed};
use crate::types::{EventStream, Message, ModelRequest, StopReason, StreamEvent, Usage};

pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    name: String,
    client: reqwest::Client,
    options: HttpOptions,
    /// Send credentials as `Authorization: Bearer` (OAuth tokens) instead of `x-api-key`.
    bearer: bool,
}

impl Anthropic {
    pub fn new(name: impl Into<String>, client: reqwest::Client, options: HttpOptions) -> Self {
        Self { name: name.into(), client, options, bearer: false }
    }

    pub fn with_bearer_auth(mut self) -> Self {
        self.bearer = true;
        self
    }
}

fn names_of(request: &ModelRequest) -> ToolNames {
    let called = request.messages.iter().flat_map(|m| match m {
        Message::Assistant { tool_calls, .. } => {
            tool_calls.iter().map(|c| c.name.as_str()).collect()
        }
        _ => Vec::new(),
    });
    ToolNames::new(request.tools.iter().map(|t| t.name.as_str()).chain(called))
}

/// The request body, as Anthropic documents it.
pub fn request_body(model: &str, request: &ModelRequest, stream: bool) -> Value {
    let names = names_of(request);
    serde_json::to_value(Body::new(model, request, stream, &names)).unwrap_or(Value::Null)
}

/// The wire body, borrowing the request (see `openai::Body`: no JSON tree per call).
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: Vec<WireTurn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
}

#[derive(Serialize)]
struct WireTurn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: Value },
    ToolResult { tool_use_id: &'a str, content: &'a str, is_error: bool },
}

#[derive(Serialize)]
struct SystemBlock {
    r#type: &'static str,
    text: String,
    cache_control: Ephemeral,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<Ephemeral>,
}

/// A prompt-cache breakpoint: everything up to here is cached.
#[derive(Serialize)]
struct Ephemeral {
    r#type: &'static str,
}

const EPHEMERAL: Ephemeral = Ephemeral { r#type: "ephemeral" };

impl<'a> Body<'a> {
    fn new(model: &'a str, request: &'a ModelRequest, stream: bool, names: &'a ToolNames) -> Self {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::System { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let mut turns: Vec<WireTurn<'a>> = Vec::new();
        for message in &request.messages {
            let (role, blocks) = match message {
                Message::System { .. } => continue,
                Message::User { text } => ("user", vec![Block::Text { text }]),
                Message::Assistant { text, tool_calls } => {
                    let mut blocks = Vec::new();
                    if !text.is_empty() {
                        blocks.push(Block::Text { text });
                    }
                    for call in tool_calls {
                        // The API needs an object; a model's invalid arguments are sent as a
                        // string field so the conversation stays valid and the model sees what
                        // it wrote.
                        let input = call
                            .parse_arguments()
                            .unwrap_or_else(|_| json!({ "_invalid_arguments": call.arguments }));
                        blocks.push(Block::ToolUse {
                            id: &call.id,
                            name: names.wire(&call.name),
                            input,
                        });
                    }
                    ("assistant", blocks)
                }
                Message::Tool { call_id, content, is_error } => (
                    "user",
                    vec![Block::ToolResult { tool_use_id: call_id, content, is_error: *is_error }],
                ),
            };
            // Consecutive messages of one role form one turn (e.g. several tool results).
            match turns.last_mut() {
                Some(last) if last.role == role => last.content.extend(blocks),
                _ => turns.push(WireTurn { role, content: blocks }),
            }
        }
        let count = request.tools.len();
        let tools = request
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| WireTool {
                name: names.wire(&t.name),
                description: &t.description,
                input_schema: &t.input_schema,
                // A cache breakpoint after the last tool caches all tool definitions.
                cache_control: (i + 1 == count).then_some(EPHEMERAL),
            })
            .collect();
        Self {
            model,
            max_tokens: request.params.max_tokens,
            messages: turns,
            system: if system.is_empty() {
                Vec::new()
            } else {
                vec![SystemBlock {
                    r#type: "text",
                    text: system.join("\n\n"),
                    cache_control: EPHEMERAL,
                }]
            },
            temperature: request.params.temperature,
            tools,
            stream: stream.then_some(true),
        }
    }
}

fn classify(provider: &str, status: u16, body: &str) -> Option<Error> {
    let value: Value = serde_json::from_str(body).ok()?;
    let kind = value["error"]["type"].as_str().unwrap_or_default();
    let message = value["error"]["message"].as_str().unwrap_or_default().to_owned();
    let provider = provider.to_owned();
    match (status, kind) {
        (_, "overloaded_error") => Some(Error::Overloaded { provider, retry_after: None }),
        (400 | 413, _)
            if message.contains("prompt is too long") || message.contains("too many tokens") =>
        {
            Some(Error::ContextTooLong { provider, message })
        }
        _ => None,
    }
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: value["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: value["output_tokens"].as_u64().unwrap_or(0),
        cached_input_tokens: value["cache_read_input_tokens"].as_u64().unwrap_or(0),
        cache_write_tokens: value["cache_creation_input_tokens"].as_u64().unwrap_or(0),
    }
}

#[derive(Default)]
struct EventState {
    provider: String,
    names: ToolNames,
    /// Content-block index -> tool-call ordinal.
    tools: HashMap<u64, usize>,
    usage: Usage,
    stop: Option<StopReason>,
    done: bool,
}

impl EventState {
    fn on_data(&mut self, data: &str) -> Result<Vec<StreamEvent>, Error> {
        let (provider, names) = (self.provider.as_str(), &self.names);
        let event: Value = serde_json::from_str(data).map_err(|e| {
            Error::MalformedResponse(format!(
                "event is not JSON ({e}): {}",
                data.chars().take(200).collect::<String>()
            ))
        })?;
        let mut out = Vec::new();
        match event["type"].as_str().unwrap_or_default() {
            "message_start" => self.usage = usage(&event["message"]["usage"]),
            "content_block_start" => {
                let block = &event["content_block"];
                let index = event["index"].as_u64().unwrap_or(0);
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let ordinal = self.tools.len();
                        self.tools.insert(index, ordinal);
                        out.push(StreamEvent::ToolCallStart {
                            index: ordinal,
                            id: block["id"].as_str().unwrap_or_default().to_owned(),
                            name: names.clade(block["name"].as_str().unwrap_or_default()),
                        });
                    }
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta(text.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &event["delta"];
                let index = event["index"].as_u64().unwrap_or(0);
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        out.push(StreamEvent::TextDelta(
                            delta["text"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                    Some("input_json_delta") => {
                        if let Some(&ordinal) = self.tools.get(&index) {
                            let part = delta["partial_json"].as_str().unwrap_or_default();
                            if !part.is_empty() {
                                out.push(StreamEvent::ToolCallDelta {
                                    index: ordinal,
                                    arguments: part.to_owned(),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.stop = Some(stop_reason(reason));
                }
                if let Some(output) = event["usage"]["output_tokens"].as_u64() {
                    self.usage.output_tokens = output;
                }
            }
            "message_stop" => {
                self.done = true;
                out.push(StreamEvent::Usage(self.usage));
                out.push(StreamEvent::Stop(self.stop.take().unwrap_or(StopReason::EndTurn)));
            }
            "error" => {
                let kind = event["error"]["type"].as_str().unwrap_or_default();
                let message = event["error"]["message"].as_str().unwrap_or_default().to_owned();
                let provider = provider.to_owned();
                return Err(match kind {
                    "overloaded_error" => Error::Overloaded { provider, retry_after: None },
                    "rate_limit_error" => Error::RateLimited { provider, retry_after: None },
                    _ => Error::Server {
                        provider,
                        status: 200,
                        message: format!("{kind}: {message}"),
                    },
                });
            }
            _ => {} // ping, content_block_stop, and event types added later.
        }
        Ok(out)
    }
}

impl Decoder for EventState {
    const END: &'static str = "message_stop";

    fn on_event(&mut self, data: &str) -> Result<Vec<StreamEvent>, Error> {
        self.on_data(data)
    }

    fn done(&self) -> bool {
        self.done
    }
}

fn complete_events(body: &Value, names: &ToolNames) -> Result<Vec<StreamEvent>, Error> {
    let blocks = body["content"]
        .as_array()
        .ok_or_else(|| Error::MalformedResponse("response has no content array".into()))?;
    let mut out = Vec::new();
    let mut tools = 0;
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => out.push(StreamEvent::TextDelta(
                block["text"].as_str().unwrap_or_default().to_owned(),
            )),
            Some("tool_use") => {
                out.push(StreamEvent::ToolCallStart {
                    index: tools,
                    id: block["id"].as_str().unwrap_or_default().to_owned(),
                    name: names.clade(block["name"].as_str().unwrap_or_default()),
                });
                out.push(StreamEvent::ToolCallDelta {
                    index: tools,
                    arguments: block["input"].to_string(),
                });
                tools += 1;
            }
            _ => {}
        }
    }
    out.push(StreamEvent::Usage(usage(&body["usage"])));
    out.push(StreamEvent::Stop(stop_reason(body["stop_reason"].as_str().unwrap_or("end_turn"))));
    Ok(out)
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn body(&self, model: &str, request: &ModelRequest) -> Option<String> {
        let names = names_of(request);
        serde_json::to_string(&Body::new(model, request, self.options.stream, &names)).ok()
    }

    fn stream<'a>(
        &'a self,
        model: &'a str,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<EventStream, Error>> {
        Box::pin(async move {
            let names = names_of(request);
            let body = Body::new(model, request, self.options.stream, &names);
            let url = self.options.url("/v1/messages");
            let build = |token: Option<&str>| {
                let mut req = self
                    .client
                    .post(&url)
                    .timeout(self.options.connect_timeout)
                    .header("anthropic-version", API_VERSION)
                    .json(&body);
                if let Some(token) = token {
                    req = if self.bearer {
                        req.bearer_auth(token)
                    } else {
                        req.header("x-api-key", token)
                    };
                }
                for (k, v) in &self.options.headers {
                    req = req.header(k, v);
                }
                req
            };
            let response = send_authed(&self.options, &self.name, build, classify).await?;
            let decoder = EventState {
                provider: self.name.clone(),
                names: names.clone(),
                ..EventState::default()
            };
            response_events(
                &self.name,
                response,
                self.options.stream,
                self.options.idle_timeout,
                |value| complete_events(value, &names),
                decoder,
            )
            .await
        })
    }
}
