//! OpenAI Chat Completions, provider side.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

use clade_model::{Message, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Plan, failure, split_arguments, stub_header, unix_now, wait_latency};
use crate::behaviour::Behaviour;
use crate::{Shared, capture, paced_body, token_is_valid};

fn error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
    retry_after: Option<f64>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body =
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = super::retry_after_header(retry_after).and_then(|v| v.parse().ok()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn invalid(message: &str) -> Response {
    error(400, "invalid_request_error", None, message, None)
}

fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""))
        }
        _ => None,
    }
}

/// The request's messages in Clade's neutral form.
fn parse_messages(body: &Value) -> Result<Vec<Message>, String> {
    let messages = body["messages"].as_array().ok_or("'messages' is a required array")?;
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let text = || {
                text_of(&m["content"])
                    .ok_or(format!("messages[{i}].content must be a string or an array of parts"))
            };
            match m["role"].as_str() {
                Some("system" | "developer") => Ok(Message::System { text: text()? }),
                Some("user") => Ok(Message::User { text: text()? }),
                Some("assistant") => {
                    let tool_calls = m["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| ToolCall {
                            id: c["id"].as_str().unwrap_or_default().to_owned(),
                            name: c["function"]["name"].as_str().unwrap_or_default().to_owned(),
                            arguments: c["function"]["arguments"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        })
                        .collect();
                    Ok(Message::Assistant { text: text()?, tool_calls })
                }
                Some("tool") => Ok(Message::Tool {
                    call_id: m["tool_call_id"]
                        .as_str()
                        .ok_or(format!("messages[{i}].tool_call_id is required"))?
                        .to_owned(),
                    content: text()?,
                    is_error: false,
                }),
                other => Err(format!(
                    "messages[{i}].role {other:?} is not one of system, user, assistant, tool"
                )),
            }
        })
        .collect()
}

/// What the handler needs of a request body.
struct Request<'a> {
    model: Cow<'a, str>,
    /// Its messages, or why they are not valid (reported after any failure the request asked
    /// for, as before they were read).
    messages: Result<Vec<Message>, String>,
    stream: bool,
    include_usage: bool,
}

/// A plain request, read straight into typed fields. Anything it does not cover (a part list
/// for content, an unknown role, a field of another type, an array where an object belongs, a
/// body to capture) takes [`Request::read`]'s general path instead, which answers as before:
/// this one only spares the stub a JSON tree per request, which was most of its CPU in
/// benchmarks. (One difference is left: in fields it does not read, a lone surrogate escape, a
/// number beyond `f64` or nesting past 128 levels is skipped, where the JSON tree refused it.)
#[derive(Deserialize)]
struct PlainRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Object<PlainMessage<'a>>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Object<PlainStreamOptions>>,
}

/// `T` read only from a JSON object: serde's derived structs also take an array of their
/// fields' values, which the JSON tree of the general path does not.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(OnlyMaps(std::marker::PhantomData)).map(Object)
    }
}

#[derive(Deserialize)]
struct PlainStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct PlainMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<Object<PlainCall<'a>>>>,
    #[serde(default, borrow)]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PlainCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<Object<PlainFunction<'a>>>,
}

#[derive(Deserialize)]
struct PlainFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl PlainMessage<'_> {
    /// As [`parse_messages`] reads it; `None` for what only that reports on.
    fn into_message(self) -> Option<Message> {
        let text = self.content.map(Cow::into_owned).unwrap_or_default();
        Some(match self.role.as_ref() {
            "system" | "developer" => Message::System { text },
            "user" => Message::User { text },
            "assistant" => Message::Assistant {
                text,
                tool_calls: self
                    .tool_calls
                    .into_iter()
                    .flatten()
                    .map(|Object(call)| {
                        let (name, arguments) = call
                            .function
                            .map(|Object(f)| {
                                (f.name.unwrap_or_default(), f.arguments.unwrap_or_default())
                            })
                            .unwrap_or_default();
                        ToolCall {
                            id: call.id.unwrap_or_default().into_owned(),
                            name: name.into_owned(),
                            arguments: arguments.into_owned(),
                        }
                    })
                    .collect(),
            },
            "tool" => Message::Tool {
                call_id: self.tool_call_id?.into_owned(),
                content: text,
                is_error: false,
            },
            _ => return None,
        })
    }
}

impl<'a> Request<'a> {
    /// Reads `body`, capturing it when the stub keeps requests; an error answers the request.
    fn read(shared: &Shared, headers: &HeaderMap, body: &'a [u8]) -> Result<Self, Box<Response>> {
        // Text first: skipping a field it does not read, serde_json would not check its bytes.
        if shared.options.capture == 0
            && let Ok(text) = std::str::from_utf8(body)
            && let Ok(Object(plain)) = serde_json::from_str::<Object<PlainRequest<'a>>>(text)
            && let Some(messages) =
                plain.messages.into_iter().map(|Object(m)| m.into_message()).collect()
        {
            return Ok(Self {
                model: plain.model,
                messages: Ok(messages),
                stream: plain.stream == Some(true),
                include_usage: plain.stream_options.and_then(|Object(o)| o.include_usage)
                    == Some(true),
            });
        }
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return Err(Box::new(invalid("We could not parse the JSON body of your request.")));
        };
        capture(shared, "/v1/chat/completions", headers, &body);
        let Some(model) = body["model"].as_str() else {
            return Err(Box::new(invalid("you must provide a model parameter")));
        };
        Ok(Self {
            model: Cow::Owned(model.to_owned()),
            messages: parse_messages(&body),
            stream: body["stream"].as_bool() == Some(true),
            include_usage: body["stream_options"]["include_usage"].as_bool() == Some(true),
        })
    }
}

/// One streamed chunk, fields in the order OpenAI's reference shows them.
#[derive(Serialize)]
struct Chunk<'a, D> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChunkChoice<'a, D>; 1],
}

#[derive(Serialize)]
struct ChunkChoice<'a, D> {
    index: u32,
    delta: D,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// A delta of text, the first also naming the role.
#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    content: &'a str,
}

/// The last chunk's delta: `{}`.
#[derive(Serialize)]
struct NoDelta {}

/// A chunk's delta, any of the shapes above or a JSON value.
trait Delta {
    /// The server-sent event of the chunk that carries this delta.
    fn frame(&self, id: &str, created: u64, model: &str, finish: Option<&str>) -> String;
}

impl<D: Serialize> Delta for D {
    fn frame(&self, id: &str, created: u64, model: &str, finish: Option<&str>) -> String {
        let chunk = Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices: [ChunkChoice { index: 0, delta: self, logprobs: None, finish_reason: finish }],
        };
        let mut frame = b"data: ".to_vec();
        // Plain structs, strings and JSON values always serialise, and to valid UTF-8.
        let _ = serde_json::to_writer(&mut frame, &chunk);
        frame.extend_from_slice(b"\n\n");
        String::from_utf8(frame).unwrap_or_default()
    }
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match Request::read(&shared, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let model = request.model.as_ref();
    let header = stub_header(&headers);
    let behaviour = match Behaviour::for_request(&shared.options.defaults, model, header.as_deref())
    {
        Ok(b) => b,
        Err(unknown) => return invalid(&format!("unknown stub directive {:?}", unknown.0)),
    };
    wait_latency(&behaviour).await;
    if behaviour.oauth && !token_is_valid(&shared, &headers) {
        return error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
            None,
        );
    }
    if let Some((status, retry)) = failure(
        &shared,
        &behaviour,
        &format!("openai|{model}|{}", header.unwrap_or_default()),
        &body,
    ) {
        return match status {
            429 => error(
                429,
                "requests",
                Some("rate_limit_exceeded"),
                "Rate limit reached for requests.",
                retry.or(Some(0.05)),
            ),
            401 => error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided.",
                None,
            ),
            s => error(
                s,
                "server_error",
                None,
                "The server had an error while processing your request.",
                retry,
            ),
        };
    }
    if behaviour.context_too_long {
        return error(
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
            None,
        );
    }
    let messages = match request.messages {
        Ok(m) => m,
        Err(message) => return invalid(&message),
    };
    let plan = Plan::new(&messages, &behaviour);
    if let Some(max) = behaviour.max_context.filter(|max| plan.input_tokens > *max) {
        return error(
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            &format!(
                "This model's maximum context length is {max} tokens. However, your messages resulted in {} tokens.",
                plan.input_tokens
            ),
            None,
        );
    }
    let id = format!("chatcmpl-{:x}", unix_now());
    let finish = if plan.calls.is_empty() { "stop" } else { "tool_calls" };
    let usage = json!({
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": { "cached_tokens": 0 },
    });
    if !request.stream {
        let mut message = json!({ "role": "assistant", "content": if plan.calls.is_empty() { json!(plan.text) } else { Value::Null } });
        if !plan.calls.is_empty() {
            message["tool_calls"] = plan
                .calls
                .iter()
                .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
                .collect();
        }
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "created": unix_now(), "model": model,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
            "usage": usage,
        }))
        .into_response();
    }
    let created = unix_now();
    let chunk = |delta: &dyn Delta, finish: Option<&str>| delta.frame(&id, created, model, finish);
    let mut frames = vec![chunk(&TextDelta { role: Some("assistant"), content: "" }, None)];
    if behaviour.malformed {
        frames.push("data: {\"id\": \"chatcmpl-broken\", \"choices\": [\n\n".to_owned());
    }
    for delta in &plan.deltas {
        frames.push(chunk(&TextDelta { role: None, content: delta }, None));
    }
    for (index, call) in plan.calls.iter().enumerate() {
        frames.push(chunk(
            &json!({ "tool_calls": [{ "index": index, "id": call.id, "type": "function", "function": { "name": call.name, "arguments": "" } }] }),
            None,
        ));
        for part in split_arguments(&call.arguments) {
            frames.push(chunk(
                &json!({ "tool_calls": [{ "index": index, "function": { "arguments": part } }] }),
                None,
            ));
        }
    }
    frames.push(chunk(&NoDelta {}, Some(finish)));
    if request.include_usage {
        frames.push(format!("data: {}\n\n", json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage })));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    if behaviour.truncate {
        frames.truncate((frames.len() / 2).max(1));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(paced_body(frames, behaviour.delta_pause()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
