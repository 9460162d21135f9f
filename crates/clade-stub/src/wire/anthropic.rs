//! Anthropic Messages, provider side: content blocks, the streaming event sequence, and prompt
//! caching (a prefix marked with `cache_control` is written the first time, read afterwards).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clade_model::script::tokens;
use clade_model::{Message, ToolCall};
use serde_json::{Value, json};

use super::{Plan, failure, split_arguments, stub_header, unix_now, wait_latency};
use crate::behaviour::Behaviour;
use crate::{Shared, capture, paced_body, token_is_valid};

fn error(status: u16, kind: &str, message: &str, retry_after: Option<f64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = super::retry_after_header(retry_after).and_then(|v| v.parse().ok()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn invalid(message: &str) -> Response {
    error(400, "invalid_request_error", message, None)
}

fn block_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

fn parse_messages(body: &Value) -> Result<Vec<Message>, String> {
    let mut out = Vec::new();
    let system = block_text(&body["system"]);
    if !system.is_empty() {
        out.push(Message::System { text: system });
    }
    let messages = body["messages"].as_array().ok_or("messages: Field required")?;
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().ok_or(format!("messages.{i}.role: Field required"))?;
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(blocks) => blocks.clone(),
            _ => return Err(format!("messages.{i}.content: Input should be a valid list")),
        };
        match role {
            "user" => {
                let mut text = String::new();
                for block in &blocks {
                    match block["type"].as_str() {
                        Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                        Some("tool_result") => out.push(Message::Tool {
                            call_id: block["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                            content: block_text(&block["content"]),
                            is_error: block["is_error"].as_bool().unwrap_or(false),
                        }),
                        _ => {}
                    }
                }
                if !text.is_empty() {
                    out.push(Message::User { text });
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for block in &blocks {
                    match block["type"].as_str() {
                        Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                        Some("tool_use") => tool_calls.push(ToolCall {
                            id: block["id"].as_str().unwrap_or_default().to_owned(),
                            name: block["name"].as_str().unwrap_or_default().to_owned(),
                            arguments: block["input"].to_string(),
                        }),
                        _ => {}
                    }
                }
                out.push(Message::Assistant { text, tool_calls });
            }
            other => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', got {other:?}"
                ));
            }
        }
    }
    Ok(out)
}

/// Tokens of the cacheable prefix (system and tools) if the request marks it for caching.
fn cacheable_prefix(body: &Value) -> Option<(u64, u64)> {
    let marked = |v: &Value| {
        v.as_array().is_some_and(|items| items.iter().any(|i| i.get("cache_control").is_some()))
    };
    if !marked(&body["system"]) && !marked(&body["tools"]) {
        return None;
    }
    let prefix = format!("{}{}", body["system"], body["tools"]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    prefix.hash(&mut hasher);
    Some((hasher.finish(), tokens(&prefix)))
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return invalid("There was an issue with the JSON body of your request.");
    };
    capture(&shared, "/v1/messages", &headers, &body);
    let Some(model) = body["model"].as_str() else { return invalid("model: Field required") };
    if headers.get("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required");
    }
    let header = stub_header(&headers);
    let behaviour = match Behaviour::for_request(&shared.options.defaults, model, header.as_deref())
    {
        Ok(b) => b,
        Err(unknown) => return invalid(&format!("unknown stub directive {:?}", unknown.0)),
    };
    wait_latency(&behaviour).await;
    if behaviour.oauth && !token_is_valid(&shared, &headers) {
        return error(401, "authentication_error", "invalid x-api-key", None);
    }
    if let Some((status, retry)) = failure(
        &shared,
        &behaviour,
        &format!("anthropic|{model}|{}", header.unwrap_or_default()),
        &raw,
    ) {
        return match status {
            429 => error(
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit.",
                retry.or(Some(0.05)),
            ),
            529 => error(529, "overloaded_error", "Overloaded", retry),
            401 => error(401, "authentication_error", "invalid x-api-key", None),
            s => error(s, "api_error", "Internal server error", retry),
        };
    }
    if behaviour.context_too_long {
        return invalid("prompt is too long: 210000 tokens > 200000 maximum");
    }
    if body["max_tokens"].as_u64().is_none() {
        return invalid("max_tokens: Field required");
    }
    let messages = match parse_messages(&body) {
        Ok(m) => m,
        Err(message) => return invalid(&message),
    };
    let plan = Plan::new(&messages, &behaviour);
    if let Some(max) = behaviour.max_context.filter(|max| plan.input_tokens > *max) {
        return invalid(&format!(
            "prompt is too long: {} tokens > {max} maximum",
            plan.input_tokens
        ));
    }
    let (mut cache_read, mut cache_write) = (0, 0);
    if let Some((key, prefix_tokens)) = cacheable_prefix(&body)
        && let Ok(mut seen) = shared.cached_prefixes.lock()
    {
        if seen.insert(key) {
            cache_write = prefix_tokens;
        } else {
            cache_read = prefix_tokens;
        }
    }
    let input = plan.input_tokens.saturating_sub(cache_read + cache_write).max(1);
    let id = format!("msg_{:x}", unix_now());
    let stop = if plan.calls.is_empty() { "end_turn" } else { "tool_use" };
    let usage = json!({
        "input_tokens": input,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": plan.output_tokens,
    });
    if body["stream"].as_bool() != Some(true) {
        let mut content = Vec::new();
        if !plan.text.is_empty() {
            content.push(json!({ "type": "text", "text": plan.text }));
        }
        for call in &plan.calls {
            // A real model's input is always an object; the stub sends what it was told to.
            let input = serde_json::from_str::<Value>(&call.arguments)
                .unwrap_or_else(|_| json!(call.arguments));
            content.push(
                json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input }),
            );
        }
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let frame = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    let start_usage = json!({
        "input_tokens": input, "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read, "output_tokens": 1,
    });
    let mut frames = vec![frame(
        "message_start",
        json!({ "type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null, "usage": start_usage,
        }}),
    )];
    let mut index = 0;
    if !plan.deltas.is_empty() {
        frames.push(frame("content_block_start", json!({ "type": "content_block_start", "index": index, "content_block": { "type": "text", "text": "" } })));
        frames.push(frame("ping", json!({ "type": "ping" })));
        if behaviour.malformed {
            frames.push("event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\"\n\n".to_owned());
        }
        for delta in &plan.deltas {
            frames.push(frame("content_block_delta", json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": delta } })));
        }
        frames.push(frame(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
        index += 1;
    }
    for call in &plan.calls {
        frames.push(frame(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": { "type": "tool_use", "id": call.id, "name": call.name, "input": {} } }),
        ));
        for part in split_arguments(&call.arguments) {
            frames.push(frame("content_block_delta", json!({ "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": part } })));
        }
        frames.push(frame(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
        index += 1;
    }
    frames.push(frame(
        "message_delta",
        json!({ "type": "message_delta", "delta": { "stop_reason": stop, "stop_sequence": null }, "usage": { "output_tokens": plan.output_tokens } }),
    ));
    frames.push(frame("message_stop", json!({ "type": "message_stop" })));
    if behaviour.truncate {
        frames.truncate((frames.len() / 2).max(1));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(paced_body(frames, behaviour.delta_pause()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
