//! OpenAI Chat Completions (`POST {base}/chat/completions`), streaming and not, with tool
//! calls and `stream_options.include_usage`. Any OpenAI-compatible server works: OpenRouter,
//! Groq, Ollama, vLLM, llama.cpp, LM Studio.

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::http::{Decoder, response_events};
use crate::provider::{HttpOptions, Provider, ToolNames, send_authed};
use crate::types::{EventStream, Message, ModelRequest, StopReason, StreamEvent, Usage};

pub struct OpenAi {
    name: String,
    client: reqwest::Client,
    options: HttpOptions,
}

impl OpenAi {
    pub fn new(name: impl Into<String>, client: reqwest::Client, options: HttpOptions) -> Self {
        Self { name: name.into(), client, options }
    }
}

/// The request body, as OpenAI documents it.
pub fn request_body(model: &str, request: &ModelRequest, stream: bool) -> Value {
    let names = names_of(request);
    serde_json::to_value(Body::new(model, request, stream, &names)).unwrap_or(Value::Null)
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

/// The wire body, borrowing the request: serialised straight to bytes, with no JSON tree built
/// (and dropped) per call, which for a long session's context is most of the work.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `null` when the turn is only tool calls, as OpenAI sends it.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    r#type: &'static str,
    function: WireToolFunction<'a>,
}

#[derive(Serialize)]
struct WireToolFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> Body<'a> {
    fn new(model: &'a str, request: &'a ModelRequest, stream: bool, names: &'a ToolNames) -> Self {
        let messages = request
            .messages
            .iter()
            .map(|message| match message {
                Message::System { text } => WireMessage::System { content: text },
                Message::User { text } => WireMessage::User { content: text },
                Message::Assistant { text, tool_calls } => WireMessage::Assistant {
                    content: (!text.is_empty()).then_some(text.as_str()),
                    tool_calls: tool_calls
                        .iter()
                        .map(|c| WireCall {
                            id: &c.id,
                            r#type: "function",
                            function: WireFunction {
                                name: names.wire(&c.name),
                                arguments: &c.arguments,
                            },
                        })
                        .collect(),
                },
                Message::Tool { call_id, content, .. } => {
                    WireMessage::Tool { tool_call_id: call_id, content }
                }
            })
            .collect();
        let tools = request
            .tools
            .iter()
            .map(|t| WireTool {
                r#type: "function",
                function: WireToolFunction {
                    name: names.wire(&t.name),
                    description: &t.description,
                    parameters: &t.input_schema,
                },
            })
            .collect();
        Self {
            model,
            messages,
            max_tokens: request.params.max_tokens,
            temperature: request.params.temperature,
            tools,
            stream: stream.then_some(true),
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
        }
    }
}

fn classify(provider: &str, status: u16, body: &str) -> Option<Error> {
    let value: Value = serde_json::from_str(body).ok()?;
    let code = value["error"]["code"].as_str().unwrap_or_default();
    let message = value["error"]["message"].as_str().unwrap_or_default().to_owned();
    (status == 400
        && (code == "context_length_exceeded" || message.contains("maximum context length")))
    .then(|| Error::ContextTooLong { provider: provider.to_owned(), message })
}

fn stop_reason(finish: &str) -> StopReason {
    match finish {
        "stop" => StopReason::EndTurn,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn usage(value: &Value) -> Option<Usage> {
    let prompt = value["prompt_tokens"].as_u64()?;
    let cached = value["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    Some(Usage {
        input_tokens: prompt.saturating_sub(cached),
        output_tokens: value["completion_tokens"].as_u64().unwrap_or(0),
        cached_input_tokens: cached,
        cache_write_tokens: 0,
    })
}

/// Turns chunks into events; Stop is emitted last, at `[DONE]`, after the usage chunk.
#[derive(Default)]
struct ChunkState {
    names: ToolNames,
    started: HashMap<u64, usize>,
    finish: Option<StopReason>,
    usage: Option<Usage>,
    done: bool,
}

impl ChunkState {
    fn on_data(&mut self, data: &str) -> Result<Vec<StreamEvent>, Error> {
        let names = &self.names;
        if data.trim() == "[DONE]" {
            self.done = true;
            let mut out = Vec::new();
            if let Some(usage) = self.usage.take() {
                out.push(StreamEvent::Usage(usage));
            }
            out.push(StreamEvent::Stop(self.finish.take().unwrap_or(StopReason::EndTurn)));
            return Ok(out);
        }
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| {
            Error::MalformedResponse(format!("chunk is not JSON ({e}): {}", short(data)))
        })?;
        if chunk.error.is_some() {
            return Err(Error::Server {
                provider: "openai".into(),
                status: 200,
                message: crate::http::error_message(data),
            });
        }
        let mut out = Vec::new();
        if let Some(u) = chunk.usage.as_ref().and_then(usage) {
            self.usage = Some(u);
        }
        for choice in chunk.choices.into_iter().flatten() {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta(text.into_owned()));
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let wire_index = call.index.unwrap_or(0);
                let next = self.started.len();
                let function = call.function.unwrap_or_default();
                let index = match self.started.get(&wire_index) {
                    Some(i) => *i,
                    None => {
                        let id = call.id.unwrap_or_default().into_owned();
                        let name = names.clade(function.name.as_deref().unwrap_or_default());
                        self.started.insert(wire_index, next);
                        out.push(StreamEvent::ToolCallStart { index: next, id, name });
                        next
                    }
                };
                if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
                    out.push(StreamEvent::ToolCallDelta { index, arguments: args.into_owned() });
                }
            }
            if let Some(finish) = choice.finish_reason {
                self.finish = Some(stop_reason(&finish));
            }
        }
        Ok(out)
    }
}

/// One streamed chunk, as far as Clade reads it; text borrows from the event's data unless it
/// has escapes. Typed rather than a `Value` tree: a turn parses one per delta.
#[derive(serde::Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Default, serde::Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ChunkToolCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct ChunkToolCall<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<ChunkFunction<'a>>,
}

#[derive(Default, serde::Deserialize)]
struct ChunkFunction<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

impl Decoder for ChunkState {
    const END: &'static str = "[DONE]";

    fn on_event(&mut self, data: &str) -> Result<Vec<StreamEvent>, Error> {
        self.on_data(data)
    }

    fn done(&self) -> bool {
        self.done
    }
}

fn short(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Events of a complete (non-streaming) response body.
fn complete_events(body: &Value, names: &ToolNames) -> Result<Vec<StreamEvent>, Error> {
    let choice = body["choices"].get(0).ok_or_else(|| {
        Error::MalformedResponse(format!("response has no choices: {}", short(&body.to_string())))
    })?;
    let message = &choice["message"];
    let mut out = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        out.push(StreamEvent::TextDelta(text.to_owned()));
    }
    for (index, call) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
        out.push(StreamEvent::ToolCallStart {
            index,
            id: call["id"].as_str().unwrap_or_default().to_owned(),
            name: names.clade(call["function"]["name"].as_str().unwrap_or_default()),
        });
        out.push(StreamEvent::ToolCallDelta {
            index,
            arguments: call["function"]["arguments"].as_str().unwrap_or_default().to_owned(),
        });
    }
    if let Some(u) = usage(&body["usage"]) {
        out.push(StreamEvent::Usage(u));
    }
    out.push(StreamEvent::Stop(stop_reason(choice["finish_reason"].as_str().unwrap_or("stop"))));
    Ok(out)
}

impl Provider for OpenAi {
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
            let url = self.options.url("/chat/completions");
            let build = |token: Option<&str>| {
                let mut req =
                    self.client.post(&url).timeout(self.options.connect_timeout).json(&body);
                if let Some(token) = token {
                    req = req.bearer_auth(token);
                }
                for (k, v) in &self.options.headers {
                    req = req.header(k, v);
                }
                req
            };
            let response = send_authed(&self.options, &self.name, build, classify).await?;
            let decoder = ChunkState { names: names.clone(), ..ChunkState::default() };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Result<Vec<StreamEvent>, Error> {
        let mut state = ChunkState::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(state.on_data(chunk)?);
        }
        Ok(out)
    }

    /// Compatible servers fill absent fields with `null` and add fields of their own; the typed
    /// chunk takes all of it, escapes included.
    #[test]
    fn chunks_with_nulls_and_extra_fields_stream_as_openai_does() {
        let out = events(&[
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":null},"finish_reason":null,"logprobs":null}],"system_fingerprint":"fp"}"#,
            r#"{"choices":[{"delta":{"content":"say \"hi\"\n"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":3,"id":"call_1","type":"function","function":{"name":"get_time","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{\"tz\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            out,
            vec![
                StreamEvent::TextDelta("say \"hi\"\n".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_1".into(),
                    name: "get_time".into()
                },
                StreamEvent::ToolCallDelta { index: 0, arguments: "{\"tz\":".into() },
                StreamEvent::Usage(Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cached_input_tokens: 2,
                    cache_write_tokens: 0,
                }),
                StreamEvent::Stop(StopReason::ToolUse),
            ]
        );
    }

    #[test]
    fn an_error_chunk_or_a_broken_one_is_an_error_not_an_event() {
        let error = events(&[r#"{"error":{"message":"overloaded","type":"server_error"}}"#]);
        assert!(
            matches!(&error, Err(Error::Server { message, .. }) if message.contains("overloaded")),
            "{error:?}"
        );
        for broken in [r#"{"choices":[{"delta":{"content":"#, r#"{"choices":"many"}"#] {
            let result = events(&[broken]);
            assert!(matches!(result, Err(Error::MalformedResponse(_))), "{broken}: {result:?}");
        }
    }
}
