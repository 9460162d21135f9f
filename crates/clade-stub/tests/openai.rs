//! The OpenAI endpoint answers a request the same whether the stub keeps requests for tests
//! (read through a JSON tree) or not (plain requests read straight into typed fields).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)]

use clade_stub::{Stub, StubOptions};
use serde_json::{Value, json};

/// Status, content type, and the body as JSON values (one per server-sent event when
/// streamed), without what differs between two answers (ids, times).
async fn answer(stub: &Stub, body: &[u8]) -> (u16, String, Vec<Value>) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stub.url()))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    let mut values: Vec<Value> = if kind.starts_with("text/event-stream") {
        text.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap()]
    };
    for value in &mut values {
        if let Some(object) = value.as_object_mut() {
            object.remove("id");
            object.remove("created");
        }
    }
    (status, kind, values)
}

#[tokio::test]
async fn a_stub_that_keeps_no_requests_answers_as_one_that_does() {
    let keeping = Stub::start("127.0.0.1:0", StubOptions::default()).await.unwrap();
    let plain = Stub::start("127.0.0.1:0", StubOptions { capture: 0, ..StubOptions::default() })
        .await
        .unwrap();
    let history = json!([
        { "role": "system", "content": "Be \"brief\".\nAlways." },
        { "role": "user", "content": "héllo wörld" },
        { "role": "assistant", "content": "echo: héllo wörld" },
        { "role": "developer", "content": null },
        { "role": "user", "content": "/tool time.now {}" },
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": "time_now", "arguments": "{}" } }
        ] },
        { "role": "tool", "tool_call_id": "call_1", "content": "12:00" },
        { "role": "user", "content": "and now?" },
    ]);
    // Each body, and whether it is refused.
    let good = [
        json!({ "model": "stub", "stream": true, "stream_options": { "include_usage": true }, "messages": history }),
        json!({ "model": "stub", "stream": true, "messages": [{ "role": "user", "content": "/tool echo {\"text\": \"hi\"}" }] }),
        json!({ "model": "stub", "messages": history, "extra": { "ignored": [1, 2] } }),
        json!({ "model": "stub", "stream": "yes", "messages": [{ "role": "user", "content": "x" }] }),
        json!({ "model": "stub", "stream": true, "messages": [{ "role": "user", "content": [{ "type": "text", "text": "parts" }] }] }),
    ]
    .map(|body| (body.to_string().into_bytes(), false));
    let bad = [
        json!({ "model": "stub", "messages": [{ "role": "wizard", "content": "x" }] }),
        json!({ "model": "stub", "messages": [{ "role": "tool", "content": "no call id" }] }),
        json!({ "model": "stub", "messages": [{ "role": "user", "content": 7 }] }),
        json!({ "messages": [{ "role": "user", "content": "no model" }] }),
        json!({ "model": "stub" }),
        json!({ "model": "stub+status=429x1", "messages": [{ "role": "user", "content": "x" }] }),
    ]
    .map(|body| (body.to_string().into_bytes(), true));
    // Arrays where objects belong (which serde's derived structs would take), broken JSON, and
    // invalid UTF-8 in a field the stub does not read.
    let raw: [(&[u8], bool); 6] = [
        (br#"["stub", [{"role": "user", "content": "x"}]]"#, true),
        (br#"{"model": "stub", "messages": [["user", "hi"]]}"#, true),
        (br#"{"model": "stub", "stream": true, "stream_options": [true], "messages": [{"role": "user", "content": "x"}]}"#, false),
        (br#"{"model": "stub", "messages": [{"role": "assistant", "content": "x", "tool_calls": [["c1", {"name": "n"}]]}, {"role": "user", "content": "y"}]}"#, false),
        (b"{\"model\": \"stub\", \"messages\": [", true),
        (b"{\"model\": \"stub\", \"extra\": \"\xff\xfe\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", true),
    ];
    let bodies: Vec<(Vec<u8>, bool)> = good
        .into_iter()
        .chain(bad)
        .chain(raw.into_iter().map(|(body, refused)| (body.to_vec(), refused)))
        .collect();
    let mut answers = Vec::new();
    for (body, refused) in &bodies {
        let shown = String::from_utf8_lossy(body);
        let expected = answer(&keeping, body).await;
        let got = answer(&plain, body).await;
        assert_eq!(got, expected, "{shown}");
        assert_eq!(got.0 >= 400, *refused, "{shown} was answered with {}", got.0);
        answers.push(got);
    }
    // The streamed plain request really streamed a reply.
    let (status, kind, events) = &answers[0];
    assert_eq!((*status, kind.as_str()), (200, "text/event-stream"));
    assert!(events.iter().any(|e| e["choices"][0]["delta"]["content"].is_string()), "{events:?}");
    assert!(events.iter().any(|e| e["usage"]["total_tokens"].as_u64() > Some(0)), "{events:?}");
}
