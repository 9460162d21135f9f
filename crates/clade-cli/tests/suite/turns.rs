//! Turns over HTTP: streaming, queue modes, back-pressure, yield and resume, bindings, bad input.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{Env, Server, eventually, model_called, polled, read, serve_hook, write};

async fn stub() -> clade_stub::Stub {
    clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap()
}

/// A data dir with agent `ada` and `yaml` as clade.yaml (where `{stub}` is the stub's URL).
fn setup(yaml: &str, stub: Option<&clade_stub::Stub>) -> Env {
    let mut env = Env::new();
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    let yaml = stub.map_or(yaml.to_owned(), |s| yaml.replace("{stub}", s.url()));
    write(&env.data_dir().join("clade.yaml"), &yaml);
    env.run(&["agents", "create", "ada"]).ok();
    env
}

async fn post(server: &Server, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

fn event(text: &str, actor: &str) -> Value {
    json!({ "agent": "ada", "text": text, "source": { "platform": "http", "channel": "c", "actor": actor } })
}

/// Waits until the session has `n` turns that are no longer running.
async fn settled(server: &Server, session: &str, n: usize) -> Vec<Value> {
    let settled = |all: &[Value]| all.iter().filter(|t| t["status"] != "running").count() >= n;
    server.turns_until(session, settled).await
}

/// Reads a session's SSE stream up to the next `turn.finished`: when it came (from `started`),
/// its data, the text deltas before it, and when the first of those came.
async fn until_finished(
    response: &mut reqwest::Response,
    parser: &mut clade_model::sse::SseParser,
    started: Instant,
) -> (Duration, Value, String, Option<Duration>) {
    let (mut first_delta, mut text) = (None, String::new());
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let mut events = Vec::new();
        parser.push(&chunk, &mut events).unwrap();
        for e in events {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            match e.event.as_deref() {
                Some("text.delta") => {
                    first_delta.get_or_insert_with(|| started.elapsed());
                    text.push_str(data["text"].as_str().unwrap());
                }
                Some("turn.finished") => return (started.elapsed(), data, text, first_delta),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_reach_an_sse_client_before_the_turn_finishes() {
    let stub = stub().await;
    let env = setup(
        "models:\n  slow:\n    provider: openai\n    model: stub+tps=25\n    base_url: {stub}/v1\n    api_key_env: STUB_KEY\n",
        Some(&stub),
    );
    let server = env.serve(&[]);
    let words = "one two three four five six seven eight nine ten";
    // The session first, so that the stream is open before the measured turn starts: text
    // deltas are live only, and a stream opened after the first ones would miss them.
    let (status, warm, _) = post(&server, event("/reply warm", "sse")).await;
    assert_eq!(status, 202, "{warm}");
    let session = warm["session_id"].as_str().unwrap().to_owned();
    let mut response = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{session}/events", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let mut parser = clade_model::sse::SseParser::default();
    until_finished(&mut response, &mut parser, Instant::now()).await;

    let started = Instant::now();
    let (status, accepted, _) = post(&server, event(&format!("/reply {words}"), "sse")).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["session_id"], session.as_str());
    let (done_at, data, text, first_delta) =
        until_finished(&mut response, &mut parser, started).await;
    let first = first_delta.expect("no delta streamed");
    assert_eq!(text, words);
    assert_eq!(data["reply"], words);
    // Ten words at 25/s take ~400 ms; the first must arrive long before the end.
    assert!(
        first + Duration::from_millis(200) < done_at,
        "first delta {first:?}, finished {done_at:?}"
    );

    // A client that disconnects mid-stream harms nothing.
    let (_, second, _) = post(&server, event(&format!("/reply {words}"), "sse")).await;
    let mut partial = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{session}/events", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let _ = partial.chunk().await;
    drop(partial);
    let all = settled(&server, second["session_id"].as_str().unwrap(), 3).await;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|t| t["status"] == "completed"), "{all:?}");
    // Each turn reports what its model calls consumed.
    assert_eq!(all[0]["usage"]["model_calls"], 1, "{}", all[0]);
    assert!(all[0]["usage"]["input_tokens"].as_u64().unwrap() > 0, "{}", all[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesce_folds_a_burst_and_full_queues_push_back() {
    let stub = stub().await;
    let env = setup(
        "models:\n  slow:\n    provider: openai\n    model: stub+latency=1500\n    base_url: {stub}/v1\n    api_key_env: STUB_KEY\nsessions:\n  queue_mode: coalesce\n  max_queued: 3\n",
        Some(&stub),
    );
    let server = env.serve(&[]);
    let (_, first, _) = post(&server, event("first", "burst")).await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    // Send the burst while the first turn's model call (1.5 s) is under way.
    model_called(&stub, 1).await;
    for text in ["second", "third"] {
        assert_eq!(post(&server, event(text, "burst")).await.0, 202);
    }
    // The queue is full now (one running, two waiting): push back with Retry-After.
    let (status, value, headers) = post(&server, event("fourth", "burst")).await;
    assert_eq!(status, 429, "{value}");
    assert_eq!(value["error"]["code"], "session_busy");
    assert!(headers.get("retry-after").is_some());
    let all = settled(&server, &session, 2).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let texts: Vec<Vec<&str>> = all
        .iter()
        .map(|t| {
            t["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect()
        })
        .collect();
    assert_eq!(texts, vec![vec!["first"], vec!["second", "third"]]);
}

/// A turn that reaches `max_iterations` yields; resuming it runs the same turn on from its
/// journal with a fresh budget: the at-most-once tool it already called is not called again,
/// and the turn then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_iterations_yields_and_resume_continues_the_turn() {
    let env = Env::new();
    let ledger = env.tmp.path().join("ledger.txt");
    let yaml =
        format!("sessions:\n  max_iterations: 1\ntesting:\n  ledger_file: {}\n", ledger.display());
    write(&env.data_dir().join("clade.yaml"), &yaml);
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let mut body = event("/tool ledger.append {\"note\":\"once\"}", "yield");
    body["wait"] = json!(true);
    let (_, value, _) = post(&server, body).await;
    assert_eq!(value["status"], "yielded", "{value}");
    let waits = value["error"].as_str().unwrap();
    assert!(
        waits.contains(&format!(
            "session {} waits to be resumed",
            value["session_id"].as_str().unwrap()
        )),
        "{value}"
    );
    let (session, turn) =
        (value["session_id"].as_str().unwrap().to_owned(), value["turn_id"].clone());
    let lines = || std::fs::read_to_string(&ledger).unwrap_or_default().lines().count();
    assert_eq!(lines(), 1, "the tool ran once before the yield");
    // A newer turn completes before the resume; the resumed turn must not see it.
    let mut later = event("/reply later", "yield");
    later["wait"] = json!(true);
    assert_eq!(post(&server, later).await.1["status"], "completed");

    let out = env.run(&["sessions", "resume", &session, "--server", &server.url]).ok();
    assert!(out.stdout.contains("resumed 1 event"), "{}", out.stdout);
    let all =
        server.turns_until(&session, |all| all.iter().all(|t| t["status"] == "completed")).await;
    assert_eq!(all.len(), 2, "resume ran the same turn on, not a new one: {all:?}");
    assert_eq!(all[0]["id"], turn, "{all:?}");
    assert_eq!(all[0]["status"], "completed", "{all:?}");
    assert_eq!(
        all[0]["usage"]["model_calls"], 2,
        "one model call before the yield, one after: {all:?}"
    );
    assert_eq!(lines(), 1, "the at-most-once tool was not called again");
    // Nothing left to resume: a second resume is a no-op.
    let out = env.run(&["sessions", "resume", &session, "--server", &server.url]).ok();
    assert!(out.stdout.contains("resumed 0 event"), "{}", out.stdout);
    let shown = env.run(&["sessions", "show", &session]).ok().stdout;
    assert!(shown.contains("· ledger.append") && shown.contains("· resumed"), "{shown}");
    assert!(!shown.contains("[yielded]"), "{shown}");
    assert_eq!(all[0]["step_count"], 5, "{all:?}");
    let turn = turn.as_str().unwrap();
    let page = server.get_json(&format!("/v1/sessions/{session}/turns/{turn}/steps")).await;
    let steps = page["items"].as_array().unwrap();
    let keys: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["model/0", "tool/0/0/start", "tool/0/0/result", "resume/0", "model/1"],
        "{steps:?}"
    );
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["model_response", "tool_started", "tool_result", "resumed", "model_response"],
        "{steps:?}"
    );
    assert!(steps[0]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{steps:?}");
    assert_eq!(steps[0]["tool_calls"][0]["name"], "ledger.append", "{steps:?}");
    assert_eq!(steps[1]["name"], "ledger.append", "{steps:?}");
    assert_eq!(steps[1]["effect"], "at_most_once", "{steps:?}");
    assert_eq!((steps[1]["iteration"].as_u64(), steps[1]["index"].as_u64()), (Some(0), Some(0)));
    assert_eq!(steps[3]["n"], 0, "{steps:?}");
    // System, the user's message, the tool call and its result: nothing of the later turn.
    assert_eq!(steps[4]["messages"], 4, "{steps:?}");
    assert_eq!(steps[0]["request_sha256"].as_str().map(str::len), Some(64), "{steps:?}");
    // `sessions show --json` shows the same typed steps.
    let shown = env.run(&["sessions", "show", &session, "--json"]).ok().stdout;
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(&shown["turns"][0]["steps"], &page["items"], "{shown}");
}

/// An event that names no agent and that no binding takes, with no default agent, is the API's
/// 404 `no_agent`. (Which agent bindings and the default agent pick is `clade-sim`'s
/// `suite::bindings`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_agent_takes_is_a_404_saying_so() {
    let env = setup("bindings:\n  - platform: irc\n    agent: ada\n", None);
    let server = env.serve(&[]);
    let body =
        json!({ "text": "hi", "source": { "platform": "matrix", "channel": "1", "actor": "u" } });
    let (status, value, _) = post(&server, body).await;
    assert_eq!(status, 404, "{value}");
    assert_eq!(value["error"]["code"], "no_agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_get_clear_json_errors() {
    let env = setup("", None);
    env.run(&["tenants", "create", "acme"]).ok();
    let acme = env.run(&["--tenant", "acme", "tokens", "create"]).ok().stdout.trim().to_owned();
    let server = env.serve(&[]);
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let raw = |body: Vec<u8>, key: Option<&str>| {
        let mut request = client
            .post(format!("{}/v1/events", server.url))
            .bearer_auth(&server.token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid_request"),
        (vec![b'{', 0xff, 0xfe, b'}'], 400, "invalid_request"),
        (br#"{"agent":"ada","source":{"platform":"p","channel":"c","actor":"a"}}"#.to_vec(), 400, "invalid_request"),
        (br#"{"agent":"ada","text":"hi"}"#.to_vec(), 400, "invalid_request"),
        (br#"{"agent":"ada","text":"  ","source":{"platform":"p","channel":"c","actor":"a"}}"#.to_vec(), 400, "invalid_request"),
        (br#"{"agent":"ada","text":"hi","source":{"platform":"","channel":"c","actor":"a"}}"#.to_vec(), 400, "invalid_request"),
        (br#"{"agent":"ada","text":"hi","colour":1,"source":{"platform":"p","channel":"c","actor":"a"}}"#.to_vec(), 400, "invalid_request"),
        (br#"{"agent":"ghost","text":"hi","source":{"platform":"p","channel":"c","actor":"a"}}"#.to_vec(), 404, "agent_not_found"),
        (br#"{"text":"hi","source":{"platform":"p","channel":"c","actor":"a"}}"#.to_vec(), 404, "no_agent"),
        (json!({ "agent": "ada", "text": "x".repeat(70_000), "source": { "platform": "p", "channel": "c", "actor": "a" } }).to_string().into_bytes(), 400, "invalid_request"),
        (json!({ "agent": "ada", "text": "x".repeat(2_000_000), "source": { "platform": "p", "channel": "c", "actor": "a" } }).to_string().into_bytes(), 413, "payload_too_large"),
    ];
    for (body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let got = raw(body, None).await;
        assert_eq!(got.0, status, "{shown}: {}", got.1);
        assert_eq!(got.1["error"]["code"], code, "{shown}: {}", got.1);
    }
    let mismatch = br#"{"agent":"ada","text":"hi","idempotency_key":"a","source":{"platform":"p","channel":"c","actor":"a"}}"#.to_vec();
    assert_eq!(raw(mismatch, Some("b")).await.0, 400);
    // The header alone works as the key.
    let body =
        br#"{"agent":"ada","text":"hi","source":{"platform":"p","channel":"c","actor":"a"}}"#
            .to_vec();
    let first = raw(body.clone(), Some("hdr-1")).await;
    let again = raw(body, Some("hdr-1")).await;
    assert_eq!(first, again);
    // Another tenant sees this session exactly as a missing one: turns, stream, resume.
    let session = first.1["session_id"].as_str().unwrap().to_owned();
    for (method, path) in
        [("GET", "turns"), ("GET", "events"), ("POST", "resume"), ("POST", "cancel")]
    {
        let url = format!("{}/v1/sessions/{session}/{path}", server.url);
        let request = if method == "GET" { client.get(url) } else { client.post(url) };
        let response = request.bearer_auth(&acme).send().await.unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "session_not_found");
    }
    // The same idempotency key in another tenant is a different event.
    let other = client
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(&acme)
        .header("idempotency-key", "hdr-1")
        .json(&json!({ "agent": "ada", "text": "hi", "source": { "platform": "p", "channel": "c", "actor": "a" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "acme has no agent ada");
    // Unknown sessions, in any tenant, look the same.
    let status = client
        .get(format!("{}/v1/sessions/not-a-uuid/turns", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    // Nothing above left a stuck session, and the server still answers.
    assert_eq!(client.get(format!("{}/healthz", server.url)).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_get_live_events_of_their_tenant_only() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let env = setup("", None);
    let server = env.serve(&[]);
    let url = format!("{}/v1/ws", server.url.replace("http://", "ws://"));
    // Without a token the upgrade is refused.
    assert!(tokio_tungstenite::connect_async(url.as_str()).await.is_err());
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", server.token).parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let send = |v: Value| Message::Text(v.to_string().into());
    socket.send(send(json!({ "type": "subscribe", "agent": "ghost" }))).await.unwrap();
    let reply = read(&mut socket).await;
    assert_eq!(reply["code"], "agent_not_found", "{reply}");
    socket
        .send(send(
            json!({ "type": "subscribe", "session": "01a202a8-d932-7e88-b965-332ac499616f" }),
        ))
        .await
        .unwrap();
    assert_eq!(read(&mut socket).await["code"], "session_not_found");
    socket.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(read(&mut socket).await["code"], "invalid_request");
    socket.send(send(json!({ "type": "subscribe", "agent": "ada" }))).await.unwrap();
    assert_eq!(read(&mut socket).await["type"], "subscribed");

    // Events of any of the agent's sessions arrive, deltas and lifecycle alike.
    let (status, _, _) = post(&server, event("hello websocket", "ws")).await;
    assert_eq!(status, 202);
    let mut kinds = Vec::new();
    let mut text = String::new();
    loop {
        let frame = read(&mut socket).await;
        assert_eq!(frame["type"], "event", "{frame}");
        let kind = frame["kind"].as_str().unwrap().to_owned();
        if kind == "text.delta" {
            text.push_str(frame["data"]["text"].as_str().unwrap());
        }
        kinds.push(kind.clone());
        if kind == "turn.finished" {
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("turn.started"), "{kinds:?}");
    assert_eq!(text, "echo: hello websocket");
}

/// Sends `text` from `actor` and waits for its turn, which must complete as the session's
/// `n`-th (from 0); returns the config revision that turn ran with.
async fn nth_turn_revision(server: &Server, text: &str, actor: &str, n: usize) -> String {
    let mut body = event(text, actor);
    body["wait"] = json!(true);
    let (status, answer, _) = post(server, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "completed", "{answer}");
    let session = answer["session_id"].as_str().unwrap().to_owned();
    let turns = settled(server, &session, n + 1).await;
    turns[n]["config_revision"].as_str().unwrap().to_owned()
}

/// The engine trusts persona files it checked a moment ago, but not across a tool call: an
/// agent that rewrites its own `SOUL.md` runs its very next turn with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_persona_edit_applies_to_its_next_turn() {
    let env = setup("tools:\n  policy:\n    - { effect: allow, tool: fs.write }\n", None);
    let server = env.serve(&[]);
    let mut revisions = Vec::new();
    let edit = r#"/tool fs.write {"path":"SOUL.md","content":"You are brief."}"#;
    for (n, text) in ["hello", edit, "again"].into_iter().enumerate() {
        revisions.push(nth_turn_revision(&server, text, "self-edit", n).await);
    }
    let ws = env.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    let soul = std::fs::read_to_string(std::path::Path::new(&ws).join("SOUL.md")).unwrap();
    assert_eq!(soul, "You are brief.", "the tool call did not write SOUL.md");
    assert_eq!(revisions[0].len(), 16, "a revision reads as 16 hex digits: {revisions:?}");
    assert_eq!(revisions[0], revisions[1], "the editing turn started before its edit");
    assert_ne!(revisions[1], revisions[2], "the next turn did not see the agent's own edit");
}

/// A receiver that refuses every delivery of sessions listed in `failing` and records the rest
/// as (session, type, seq).
async fn picky_receiver(
    failing: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, String, i64)>>>,
) -> String {
    serve_hook(move |body: axum::body::Bytes| {
        let (failing, log) = (failing.clone(), log.clone());
        async move {
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let session = event["session"].as_str().unwrap_or_default().to_owned();
            if failing.lock().unwrap().contains(&session) {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            log.lock().unwrap().push((session, kind, event["seq"].as_i64().unwrap_or(0)));
            axum::http::StatusCode::OK
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_session_holds_back_only_its_own_deliveries() {
    let failing = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = picky_receiver(failing.clone(), log.clone()).await;
    let mut env = setup(
        &format!(
            "subscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n    max_attempts: 1000\n"
        ),
        None,
    );
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    let server = env.serve(&[]);
    let send = |actor: &'static str, text: &'static str| {
        let mut body = event(text, actor);
        body["wait"] = json!(true);
        let server = &server;
        async move {
            let (_, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
            answer["session_id"].as_str().unwrap().to_owned()
        }
    };
    // Session A's subscriber deliveries fail; B's must still arrive meanwhile.
    let a = send("a", "first of a").await;
    failing.lock().unwrap().push(a.clone());
    send("a", "second of a").await;
    let b = send("b", "only b").await;
    let delivered_b = super::support::until(&log, |seen| {
        seen.iter().any(|(s, k, _)| *s == b && k == "turn.finished")
    });
    assert!(delivered_b.await, "session b's events were held back by session a's failures");
    // A recovers: its events arrive, in order, none lost.
    failing.lock().unwrap().clear();
    let delivered_a = || -> Vec<i64> {
        log.lock().unwrap().iter().filter(|(s, ..)| *s == a).map(|(.., seq)| *seq).collect()
    };
    let a_seqs = polled(async || delivered_a(), |seqs: &Vec<i64>| seqs.len() >= 4).await;
    assert!(a_seqs.len() >= 4, "session a's events were not all delivered: {a_seqs:?}");
    assert!(a_seqs.windows(2).all(|w| w[0] < w[1]), "session a's events out of order: {a_seqs:?}");
}

/// Configuration names agents as `tenant/handle` (a bare handle is the default tenant's): a
/// binding or the default agent routes only events of its own tenant, so another tenant's
/// events never land on an agent of the same handle in theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_the_default_agent_route_only_their_tenants_events() {
    let env =
        setup("bindings:\n  - platform: irc\n    agent: acme/ada\ndefault_agent: ada\n", None);
    let tokens: Vec<String> = ["acme", "globex"]
        .iter()
        .map(|tenant| {
            env.run(&["tenants", "create", tenant]).ok();
            env.run(&["--tenant", tenant, "agents", "create", "ada"]).ok();
            env.run(&["--tenant", tenant, "tokens", "create"]).ok().stdout.trim().to_owned()
        })
        .collect();
    let server = env.serve(&[]);
    let post_as = |token: &str, platform: &str| {
        let (url, token) = (server.url.clone(), token.to_owned());
        let body = json!({ "text": "hi", "source": { "platform": platform, "channel": "1", "actor": "u" }, "wait": true });
        async move {
            let response = reqwest::Client::new()
                .post(format!("{url}/v1/events"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let sessions_of = |tenant: &str| {
        env.run(&["--tenant", tenant, "--agent", "ada", "sessions", "list", "--json"]).ok().json()
    };
    // acme's telegram event: its binding.
    let (status, value) = post_as(&tokens[0], "irc").await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(sessions_of("acme")[0]["id"], value["session_id"]);
    // The default tenant's telegram event matches no binding of its own: the default agent.
    let (status, value) = post_as(&server.token, "irc").await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(sessions_of("default")[0]["id"], value["session_id"]);
    // globex has neither a binding nor a default agent, though it has an `ada`.
    for platform in ["irc", "matrix"] {
        let (status, value) = post_as(&tokens[1], platform).await;
        assert_eq!((status, value["error"]["code"].as_str()), (404, Some("no_agent")), "{value}");
    }
    assert_eq!(sessions_of("globex").as_array().map(Vec::len), Some(0));
}

/// A reference that names no agent, or names one twice, is refused at start with the field.
#[test]
fn agent_references_in_configuration_are_checked() {
    for (yaml, field) in [
        ("bindings:\n  - agent: Acme/ada\n", "bindings[0].agent"),
        ("default_agent: acme/\n", "default_agent"),
        ("sessions:\n  agents:\n    ada: {}\n    default/ada: {}\n", "sessions.agents"),
        ("budgets:\n  agents:\n    a/b/c: { usd_per_day: 1 }\n", "budgets.agents.a/b/c"),
        ("mcp:\n  m:\n    url: http://127.0.0.1:1/\n    agents: [\"acme/**\"]\n", "mcp.m.agents"),
    ] {
        let env = Env::new();
        write(&env.data_dir().join("clade.yaml"), yaml);
        let out = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        assert!(out.code != 0 && out.stderr.contains(field), "{yaml}: {}", out.stderr);
    }
}

/// Every lifecycle event reads as `clade_protocol` says it does: each webhook body is a
/// `WebhookEvent`, and each SSE event's data is its kind's data (`LifecycleEvent::from_parts`).
/// The turn is made to announce every kind there is but a failure: it asks for an approval,
/// calls a tool, yields at its model-call budget and is resumed; the deltas stream live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_event_reads_as_the_protocol_says() {
    use clade_core::EventKind;
    use clade_protocol::{LifecycleEvent, WebhookEvent};

    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<axum::body::Bytes>::new()));
    let hook = {
        let bodies = bodies.clone();
        serve_hook(move |body: axum::body::Bytes| {
            bodies.lock().unwrap().push(body);
            async { axum::http::StatusCode::OK }
        })
        .await
    };
    let stub = stub().await;
    let mut env = setup(
        &format!(
            "models:\n  streamed:\n    provider: openai\n    model: stub+tps=200\n    base_url: {{stub}}/v1\n    api_key_env: STUB_KEY\n\
             sessions:\n  max_iterations: 1\n\
             tools:\n  approval_timeout_secs: 60\n  policy:\n    - {{ effect: ask, tool: echo }}\n\
             subscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n"
        ),
        Some(&stub),
    );
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    let server = env.serve(&[]);
    let (status, answer, _) = post(&server, event("/tool echo {\"text\":\"hi\"}", "proto")).await;
    assert_eq!(status, 202, "{answer}");
    let session = answer["session_id"].as_str().unwrap().to_owned();
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{session}/events?after=0", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();

    // Approve the call, then resume the turn once it yielded.
    let approval = eventually(async || {
        server.get_json("/v1/approvals").await["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await
    .expect("no approval was asked for");
    let decision = json!({ "decision": "approve" });
    let (status, body) =
        server.send("POST", &format!("/v1/approvals/{approval}"), None, Some(decision)).await;
    assert_eq!(status, 200, "{body}");
    settled(&server, &session, 1).await;
    let (status, body) =
        server.send("POST", &format!("/v1/sessions/{session}/resume"), None, None).await;
    assert_eq!((status, body["resumed_events"].as_u64()), (200, Some(1)), "{body}");

    // The stream, up to the turn's end.
    let mut parser = clade_model::sse::SseParser::default();
    let mut streamed = Vec::new();
    while !streamed.contains(&EventKind::TurnFinished) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
            .await
            .expect("the stream went quiet before the turn finished")
            .unwrap()
            .unwrap();
        let mut events = Vec::new();
        parser.push(&chunk, &mut events).unwrap();
        for event in events {
            let kind = event.event.as_deref().and_then(EventKind::parse).unwrap();
            let data: Value = serde_json::from_str(&event.data).unwrap();
            LifecycleEvent::from_parts(kind, data.clone())
                .unwrap_or_else(|e| panic!("{kind} on the stream: {e}: {data}"));
            streamed.push(kind);
        }
    }
    let committed: Vec<EventKind> = EventKind::ALL
        .iter()
        .copied()
        // Of no session: `suite::cron` has the scheduler's `job.disabled`.
        .filter(|k| {
            !matches!(
                k,
                EventKind::TurnFailed
                    | EventKind::TextDelta
                    | EventKind::ToolProgress
                    | EventKind::JobDisabled
                    | EventKind::ConfigApplied
                    // `suite::messaging` has agents' messages.
                    | EventKind::AgentMessageSent
                    | EventKind::AgentMessageReceived
                    // `suite::control` has pauses.
                    | EventKind::ExecutionsPaused
                    | EventKind::ExecutionsResumed
                    // `suite::forks` has branches and workers.
                    | EventKind::ExecutionStarted
                    | EventKind::ExecutionProgress
                    | EventKind::ExecutionEnded
                    // `suite::debugging` has breakpoints' stops.
                    | EventKind::DebugStopped
                    | EventKind::DebugResumed
            )
        })
        .collect();
    for kind in committed.iter().chain([&EventKind::TextDelta]) {
        assert!(streamed.contains(kind), "no {kind} on the stream: {streamed:?}");
    }

    // The webhook, once every committed kind arrived.
    let delivered_now = || -> Vec<WebhookEvent> {
        bodies
            .lock()
            .unwrap()
            .iter()
            .map(|body| {
                serde_json::from_slice(body).unwrap_or_else(|e| {
                    panic!(
                        "a webhook body is no WebhookEvent: {e}: {}",
                        String::from_utf8_lossy(body)
                    )
                })
            })
            .collect()
    };
    let kinds_of = |delivered: &[WebhookEvent]| -> Vec<EventKind> {
        delivered.iter().map(|d| d.event.kind()).collect()
    };
    let all_came = |delivered: &Vec<WebhookEvent>| {
        let kinds = kinds_of(delivered);
        committed.iter().all(|k| kinds.contains(k))
    };
    let delivered = polled(async || delivered_now(), &all_came).await;
    assert!(all_came(&delivered), "the webhook got only {:?}", kinds_of(&delivered));
    assert!(delivered.iter().all(|d| d.session.as_deref() == Some(session.as_str())));
    let requested = delivered.iter().find_map(|d| match &d.event {
        LifecycleEvent::ApprovalRequested(requested) => Some(requested.clone()),
        _ => None,
    });
    let requested = requested.unwrap();
    assert_eq!((requested.approval.as_str(), requested.tool.as_str()), (approval.as_str(), "echo"));
    assert_eq!(requested.arguments, json!({ "text": "hi" }));
    // It names the call, as that call's `tool.called` does.
    let called = delivered.iter().find_map(|d| match &d.event {
        LifecycleEvent::ToolCalled(called) => Some(called.call.clone()),
        _ => None,
    });
    assert_eq!(requested.call, called, "{delivered:?}");
}

/// Events sent over the WebSocket by a client we did not write (the `websockets` package):
/// each answered once stored, with its `ref`, as `POST /v1/events` answers; the same key is
/// one event; a burst past the in-flight cap is slowed, never dropped; bad frames, another
/// tenant's token and a read-only token are refused frame by frame, the socket kept open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_sends_events_answered_once_stored() {
    let Some(python) = super::support::python_clients("the WebSocket events test") else {
        return;
    };
    let env = setup("", None);
    env.run(&["tenants", "create", "acme"]).ok();
    let (rival, _) = super::support::token(&env, "acme", &["admin"]);
    let (reader, _) = super::support::token(&env, "default", &["read"]);
    let server = env.serve(&[]);
    let url = format!("{}/v1/ws", server.url.replace("http://", "ws://"));
    let got = super::support::run_client(
        &python,
        "ws_client.py",
        &[&url, &server.token, &rival, &reader],
    );

    let (a, b) = (&got["first"]["a"], &got["first"]["b"]);
    assert_eq!(a["type"], "accepted", "{got}");
    assert_eq!(a["event_id"], b["event_id"], "one idempotency key, one event: {got}");
    let wait = &got["wait"];
    assert_eq!(
        (wait["type"].as_str(), wait["status"].as_str()),
        (Some("accepted"), Some("completed"))
    );
    assert_eq!(wait["reply"]["text"], "two", "{got}");
    let kinds = got["events"].as_array().unwrap();
    assert!(kinds.iter().any(|k| k == "turn.finished"), "the subscription saw the turn: {got}");

    assert_eq!(got["bad"]["d"]["code"], "invalid_request", "{got}");
    assert!(got["bad"]["d"]["message"].as_str().unwrap().contains("source is required"), "{got}");
    assert_eq!(got["bad"]["e"]["code"], "invalid_request", "{got}");
    let unnamed = got["unnamed"].as_array().unwrap();
    assert!(unnamed[0]["message"].as_str().unwrap().contains("\"ref\" must be a string"), "{got}");
    assert!(unnamed[1]["message"].as_str().unwrap().contains("not JSON"), "{got}");

    assert_eq!(got["burst"], json!(["accepted"]), "{got}");
    assert_eq!(got["burst_events"], 40, "{got}");
    assert_eq!(got["rival"]["code"], "session_not_found", "{got}");
    assert_eq!(got["reader"]["code"], "forbidden", "{got}");

    // What the socket stored is the tenant's, as through the API: 1 + 1 + 40 events of
    // `grace` on the ws channel, none of the rival's.
    let sessions = server.get_json("/v1/sessions?limit=200").await;
    let ours =
        sessions["items"].as_array().unwrap().iter().filter(|s| s["channel"] == "ws").count();
    assert_eq!(ours, 1, "{sessions}");
}
