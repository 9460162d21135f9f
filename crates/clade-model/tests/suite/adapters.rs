use std::time::{Duration, Instant};

use clade_model::{Error, Message, ModelRequest, StopReason, StreamEvent, ToolCall};
use futures::StreamExt;

use super::support::{all, anthropic, call, openai, stub, time_tool, user};

#[tokio::test]
async fn text_replies_in_every_mode() {
    let stub = stub().await;
    for (label, provider) in all(&stub) {
        let response = call(provider.as_ref(), "stub", &user("hello there")).await.unwrap();
        assert_eq!(response.text, "echo: hello there", "{label}");
        assert_eq!(response.stop_reason, Some(StopReason::EndTurn), "{label}");
        assert!(response.tool_calls.is_empty(), "{label}");
        assert!(
            response.usage.input_tokens > 0 && response.usage.output_tokens > 0,
            "{label}: {:?}",
            response.usage
        );
    }
}

#[tokio::test]
async fn tool_calls_round_trip_with_namespaced_names() {
    let stub = stub().await;
    for (label, provider) in all(&stub) {
        let mut request = user("/tool time.now {\"tz\":\"UTC\"}");
        request.tools = vec![time_tool()].into();
        let first = call(provider.as_ref(), "stub", &request).await.unwrap();
        assert_eq!(first.stop_reason, Some(StopReason::ToolUse), "{label}");
        assert_eq!(first.tool_calls.len(), 1, "{label}");
        let tool_call = &first.tool_calls[0];
        assert_eq!(tool_call.name, "time.now", "{label}: the wire name maps back");
        assert_eq!(
            tool_call.parse_arguments().unwrap(),
            serde_json::json!({ "tz": "UTC" }),
            "{label}"
        );
        assert!(!tool_call.id.is_empty(), "{label}");

        request.messages.push(Message::Assistant {
            text: first.text.clone(),
            tool_calls: first.tool_calls.clone(),
        });
        request.messages.push(Message::Tool {
            call_id: tool_call.id.clone(),
            content: "12:00".into(),
            is_error: false,
        });
        let second = call(provider.as_ref(), "stub", &request).await.unwrap();
        // The provider only ever sees the wire name.
        assert_eq!(second.text, "tool results: time_now -> 12:00", "{label}");
        assert_eq!(second.stop_reason, Some(StopReason::EndTurn), "{label}");
    }
}

#[tokio::test]
async fn openai_request_matches_the_documented_wire_format() {
    let stub = stub().await;
    let mut request = ModelRequest {
        messages: vec![Message::system("be brief"), Message::user("/tool time.now")],
        tools: vec![time_tool()].into(),
        ..ModelRequest::default()
    };
    request.params.max_tokens = 77;
    call(openai(&stub, true).as_ref(), "gpt-test", &request).await.unwrap();
    let captured = stub.captured().pop().unwrap();
    assert_eq!(captured.path, "/v1/chat/completions");
    assert_eq!(captured.headers["authorization"], "Bearer sk-test-key");
    let body = captured.body;
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["messages"][0], serde_json::json!({ "role": "system", "content": "be brief" }));
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "time_now");
    assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");

    // Assistant tool calls and tool results use the documented shapes.
    let call_ = ToolCall { id: "call_1".into(), name: "time.now".into(), arguments: "{}".into() };
    request.messages.push(Message::Assistant { text: String::new(), tool_calls: vec![call_] });
    request.messages.push(Message::Tool {
        call_id: "call_1".into(),
        content: "noon".into(),
        is_error: false,
    });
    call(openai(&stub, false).as_ref(), "gpt-test", &request).await.unwrap();
    let body = stub.captured().pop().unwrap().body;
    assert!(body.get("stream").is_none());
    assert_eq!(body["messages"][2]["content"], serde_json::Value::Null);
    assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["name"], "time_now");
    assert_eq!(
        body["messages"][3],
        serde_json::json!({ "role": "tool", "tool_call_id": "call_1", "content": "noon" })
    );
}

#[tokio::test]
async fn anthropic_request_matches_the_documented_wire_format_and_caches_the_prefix() {
    let stub = stub().await;
    let mut request = ModelRequest {
        messages: vec![Message::system("persona: SOUL.md"), Message::user("/tool time.now")],
        tools: vec![time_tool()].into(),
        ..ModelRequest::default()
    };
    let first = call(anthropic(&stub, true).as_ref(), "claude-test", &request).await.unwrap();
    let captured = stub.captured().pop().unwrap();
    assert_eq!(captured.path, "/v1/messages");
    assert_eq!(captured.headers["x-api-key"], "sk-test-key");
    assert_eq!(captured.headers["anthropic-version"], "2023-06-01");
    let body = captured.body;
    assert_eq!(body["system"][0]["text"], "persona: SOUL.md");
    assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(body["tools"][0]["name"], "time_now");
    assert_eq!(body["tools"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(body["max_tokens"].is_u64());

    // Tool results go back as tool_result blocks in a user turn.
    request
        .messages
        .push(Message::Assistant { text: String::new(), tool_calls: first.tool_calls.clone() });
    request.messages.push(Message::Tool {
        call_id: first.tool_calls[0].id.clone(),
        content: "noon".into(),
        is_error: true,
    });
    let second = call(anthropic(&stub, true).as_ref(), "claude-test", &request).await.unwrap();
    let body = stub.captured().pop().unwrap().body;
    assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(body["messages"][2]["role"], "user");
    assert_eq!(body["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(body["messages"][2]["content"][0]["is_error"], true);

    // The first request wrote the cache, the second read it.
    assert!(first.usage.cache_write_tokens > 0, "{:?}", first.usage);
    assert!(second.usage.cached_input_tokens > 0, "{:?}", second.usage);
}

#[tokio::test]
async fn every_error_class_is_recognised() {
    let stub = stub().await;
    for (label, provider) in all(&stub) {
        type Check = fn(&Error) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            (
                "stub+status=429+retry-after=3",
                |e| matches!(e, Error::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3),
            ),
            ("stub+status=500", |e| matches!(e, Error::Server { status: 500, .. })),
            ("stub+status=503", |e| {
                matches!(e, Error::Server { status: 503, .. }) && e.is_retryable()
            }),
            ("stub+status=401", |e| matches!(e, Error::Auth { .. })),
            ("stub+context-too-long", |e| matches!(e, Error::ContextTooLong { .. })),
            ("stub+no-such-directive", |e| {
                matches!(e, Error::InvalidRequest { .. }) && !e.is_retryable()
            }),
        ];
        for (model, check) in cases {
            let err = call(provider.as_ref(), model, &user("hi")).await.unwrap_err();
            assert!(check(&err), "{label} {model}: got {err:?}");
        }
    }
    // Overloaded is Anthropic's 529.
    let err =
        call(anthropic(&stub, true).as_ref(), "stub+status=529", &user("hi")).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }), "{err:?}");
}

#[tokio::test]
async fn broken_streams_are_malformed_not_silent() {
    let stub = stub().await;
    for provider in [openai(&stub, true), anthropic(&stub, true)] {
        for model in ["stub+malformed", "stub+truncate"] {
            let err =
                call(provider.as_ref(), model, &user("a few words of reply")).await.unwrap_err();
            assert!(
                matches!(err, Error::MalformedResponse(_)),
                "{} {model}: {err:?}",
                provider.name()
            );
        }
    }
}

#[tokio::test]
async fn transport_failures_and_stalls_are_classified() {
    let unreachable = clade_model::openai::OpenAi::new(
        "openai",
        reqwest::Client::new(),
        super::support::options("http://127.0.0.1:1/v1".into(), true),
    );
    let err = call(&unreachable, "stub", &user("hi")).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }) && err.is_retryable(), "{err:?}");

    let stub = stub().await;
    let mut options = super::support::options(format!("{}/v1", stub.url()), true);
    options.idle_timeout = Duration::from_millis(100);
    let slow = clade_model::openai::OpenAi::new("openai", reqwest::Client::new(), options);
    let err =
        call(&slow, "stub+tps=2", &user("several words that take a while")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn model_mistakes_reach_the_caller_as_data() {
    let stub = stub().await;
    for (label, provider) in all(&stub) {
        let response = call(provider.as_ref(), "stub+invalid-tool-json", &user("/tool echo {}"))
            .await
            .unwrap();
        // Streamed, the model's broken JSON arrives verbatim; complete Anthropic responses
        // carry it as a string. Either way it is an error for the model to see, not a failure.
        let error = response.tool_calls[0].parse_arguments().unwrap_err();
        assert!(error.starts_with("arguments of echo"), "{label}: {error}");
        let response = call(provider.as_ref(), "stub+unknown-tool", &user("hi")).await.unwrap();
        assert_eq!(response.tool_calls[0].name, "no_such_tool", "{label}");
    }
}

#[tokio::test]
async fn deltas_arrive_while_the_model_is_still_answering() {
    let stub = stub().await;
    let words = "one two three four five six seven eight nine ten eleven twelve";
    for provider in [openai(&stub, true), anthropic(&stub, true)] {
        let started = Instant::now();
        let mut stream =
            provider.stream("stub+tps=40", &user(&format!("/reply {words}"))).await.unwrap();
        let mut first = None;
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            if let StreamEvent::TextDelta(delta) = event.unwrap() {
                first.get_or_insert_with(|| started.elapsed());
                text.push_str(&delta);
            }
        }
        let total = started.elapsed();
        let first = first.unwrap();
        assert_eq!(text, words);
        // 12 words at 40/s take ~300 ms; the first must come long before the end.
        assert!(
            first * 3 < total,
            "{}: first delta at {first:?}, done at {total:?}",
            provider.name()
        );
    }
}
