//! Documented stream sequences (from the providers' API references), replayed byte for byte
//! through the adapters by a minimal server, independent of clade-stub.

use std::sync::Arc;

use axum::response::IntoResponse;
use clade_model::anthropic::Anthropic;
use clade_model::openai::OpenAi;
use clade_model::{Error, Provider, StopReason, ToolSpec};

use super::support::{call, options, user};

/// Serves `body` as an event stream on every POST; returns the base URL.
async fn replay(body: &'static str) -> String {
    let app = axum::Router::new().fallback(move || async move {
        ([("content-type", "text/event-stream")], body).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn weather_tools() -> Vec<ToolSpec> {
    ["get_weather", "get_time"]
        .into_iter()
        .map(|name| ToolSpec {
            name: name.into(),
            description: String::new(),
            input_schema: serde_json::json!({"type": "object"}),
        })
        .collect()
}

#[tokio::test]
async fn openai_documented_tool_call_stream() {
    let base = replay(include_str!("../fixtures/openai_stream_tool_calls.sse")).await;
    let provider: Arc<dyn Provider> =
        Arc::new(OpenAi::new("openai", reqwest::Client::new(), options(base, true)));
    let mut request = user("weather?");
    request.tools = weather_tools().into();
    let response = call(provider.as_ref(), "gpt-4o", &request).await.unwrap();
    assert_eq!(response.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(response.tool_calls.len(), 2);
    assert_eq!(response.tool_calls[0].id, "call_abc");
    assert_eq!(response.tool_calls[0].name, "get_weather");
    assert_eq!(
        response.tool_calls[0].parse_arguments().unwrap(),
        serde_json::json!({ "location": "Paris" })
    );
    assert_eq!(response.tool_calls[1].name, "get_time");
    // prompt_tokens includes the cached ones; Usage splits them.
    assert_eq!(response.usage.input_tokens, 18);
    assert_eq!(response.usage.cached_input_tokens, 64);
    assert_eq!(response.usage.output_tokens, 38);
}

#[tokio::test]
async fn anthropic_documented_tool_use_stream() {
    let base = replay(include_str!("../fixtures/anthropic_stream_tool_use.sse")).await;
    let provider: Arc<dyn Provider> =
        Arc::new(Anthropic::new("anthropic", reqwest::Client::new(), options(base, true)));
    let mut request = user("weather?");
    request.tools = weather_tools().into();
    let response = call(provider.as_ref(), "claude", &request).await.unwrap();
    assert_eq!(response.text, "Okay, let's check the weather.");
    assert_eq!(response.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        response.tool_calls[0].parse_arguments().unwrap(),
        serde_json::json!({ "location": "San Francisco, CA" })
    );
    assert_eq!(response.usage.input_tokens, 472);
    assert_eq!(response.usage.cached_input_tokens, 1024);
    assert_eq!(response.usage.output_tokens, 89);
}

#[tokio::test]
async fn anthropic_documented_error_event() {
    let base = replay(include_str!("../fixtures/anthropic_stream_error.sse")).await;
    let provider = Anthropic::new("anthropic", reqwest::Client::new(), options(base, true));
    let err = call(&provider, "claude", &user("hi")).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }), "{err:?}");
}
