//! OpenAI Chat Completions, provider side.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clade_model::{Message, ToolCall};
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

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return invalid("We could not parse the JSON body of your request.");
    };
    capture(&shared, "/v1/chat/completions", &headers, &body);
    let Some(model) = body["model"].as_str() else {
        return invalid("you must provide a model parameter");
    };
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
    if let Some((status, retry)) =
        failure(&shared, &behaviour, &format!("openai|{model}|{}", header.unwrap_or_default()))
    {
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
    let messages = match parse_messages(&body) {
        Ok(m) => m,
        Err(message) => return invalid(&message),
    };
    let plan = Plan::new(&messages, &behaviour);
    let id = format!("chatcmpl-{:x}", unix_now());
    let finish = if plan.calls.is_empty() { "stop" } else { "tool_calls" };
    let usage = json!({
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": { "cached_tokens": 0 },
    });
    if body["stream"].as_bool() != Some(true) {
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
    let chunk = |delta: Value, finish: Option<&str>| {
        let value = json!({
            "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        format!("data: {value}\n\n")
    };
    let mut frames = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    if behaviour.malformed {
        frames.push("data: {\"id\": \"chatcmpl-broken\", \"choices\": [\n\n".to_owned());
    }
    for delta in &plan.deltas {
        frames.push(chunk(json!({ "content": delta }), None));
    }
    for (index, call) in plan.calls.iter().enumerate() {
        frames.push(chunk(
            json!({ "tool_calls": [{ "index": index, "id": call.id, "type": "function", "function": { "name": call.name, "arguments": "" } }] }),
            None,
        ));
        for part in split_arguments(&call.arguments) {
            frames.push(chunk(
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": part } }] }),
                None,
            ));
        }
    }
    frames.push(chunk(json!({}), Some(finish)));
    if body["stream_options"]["include_usage"].as_bool() == Some(true) {
        frames.push(format!("data: {}\n\n", json!({ "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model, "choices": [], "usage": usage })));
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
