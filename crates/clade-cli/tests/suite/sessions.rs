//! Sessions over HTTP and the CLI: steering, cancel, timeouts, parallel sessions, webhook
//! subscribers that fail or hang (dead letters, backoff), `clade event send` and `clade chat`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{
    Env, PATIENCE, Server, eventually, model_called, polled_within, serve_hook, write,
};

async fn stub() -> clade_stub::Stub {
    clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap()
}

/// A data dir with agent `ada` and `yaml` as clade.yaml, `{stub}` standing for the stub's URL.
fn setup(yaml: &str, stub: &clade_stub::Stub) -> Env {
    let mut env = Env::new();
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    write(&env.data_dir().join("clade.yaml"), &yaml.replace("{stub}", stub.url()));
    env.run(&["agents", "create", "ada"]).ok();
    env
}

fn event(agent: &str, text: &str, actor: &str) -> Value {
    json!({ "agent": agent, "text": text, "source": { "platform": "http", "channel": "c", "actor": actor } })
}

async fn post(server: &Server, body: Value) -> (u16, Value) {
    server.send("POST", "/v1/events", None, Some(body)).await
}

/// A slow model (through the stub) for agent `ada`.
fn slow_model(ms: u64) -> String {
    format!(
        "models:\n  slow:\n    provider: openai\n    model: stub+latency={ms}\n    base_url: {{stub}}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [slow]\n"
    )
}

/// Cancel over the API stops the session's running turn, with the reason; the CLI's cancel
/// then finds none running. (The engine's cancel and `turn_timeout_secs` are tested in the
/// simulator: `clade-sim` `suite::sessions`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_over_the_api_and_the_cli() {
    let stub = stub().await;
    let env = setup(&slow_model(4000), &stub);
    let server = env.serve(&[]);
    let (_, first) = post(&server, event("ada", "one", "cancel")).await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    model_called(&stub, 1).await;
    let (status, answer) =
        server.send("POST", &format!("/v1/sessions/{session}/cancel"), None, None).await;
    assert_eq!((status, &answer["cancelled"]), (200, &json!(true)), "{answer}");
    let all =
        server.turns_until(&session, |t| t.first().is_some_and(|t| t["status"] != "running")).await;
    assert_eq!(all[0]["status"], "failed", "{all:?}");
    assert_eq!(all[0]["error"], "cancelled by request", "{all:?}");
    let (url, _) = server.address();
    let none = env.run(&["sessions", "cancel", &session, "--server", &url]).ok().stdout;
    assert!(none.contains("was running"), "no turn runs now: {none}");
}

/// How a test receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    Fail,
    Hang,
}

/// A webhook receiver answering as `mode` says; logs every attempt as (type, outbox seq, when).
async fn receiver(
    mode: Arc<Mutex<Answer>>,
    log: Arc<Mutex<Vec<(String, i64, Instant)>>>,
) -> String {
    serve_hook(move |body: axum::body::Bytes| {
        let (mode, log) = (mode.clone(), log.clone());
        async move {
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            log.lock().unwrap().push((kind, event["seq"].as_i64().unwrap_or(0), Instant::now()));
            let answer = *mode.lock().unwrap();
            match answer {
                Answer::Ok => axum::http::StatusCode::OK,
                Answer::Fail => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Answer::Hang => std::future::pending().await,
            }
        }
    })
    .await
}

/// A subscriber that always fails gets each event `max_attempts` times, with growing gaps,
/// then it is dead-lettered; `clade deadletters list` shows it and `retry` delivers it once
/// the receiver is back. A subscriber that hangs meanwhile holds back no turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_subscribers_dead_letter_with_backoff_and_hanging_ones_block_no_turn() {
    let stub = stub().await;
    let (dead_mode, dead_log) =
        (Arc::new(Mutex::new(Answer::Fail)), Arc::new(Mutex::new(Vec::new())));
    let (hang_mode, hang_log) =
        (Arc::new(Mutex::new(Answer::Hang)), Arc::new(Mutex::new(Vec::new())));
    let dead = receiver(dead_mode.clone(), dead_log.clone()).await;
    let hang = receiver(hang_mode, hang_log.clone()).await;
    let mut env = setup(
        &format!(
            "subscribers:\n  - name: dead\n    url: {dead}\n    secret_env: HOOK_SECRET\n    max_attempts: 4\n    events: [turn.finished]\n  - name: hang\n    url: {hang}\n    secret_env: HOOK_SECRET\n"
        ),
        &stub,
    );
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    let server = env.serve(&[]);
    for n in 0..3 {
        let mut body = event("ada", &format!("message {n}"), "hooks");
        body["wait"] = json!(true);
        let started = Instant::now();
        let (status, answer) = post(&server, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "completed", "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a turn waited {:?} for subscribers",
            started.elapsed()
        );
    }
    assert!(!hang_log.lock().unwrap().is_empty(), "the hanging subscriber was called");

    // Three turn.finished events, four attempts each, then dead letters.
    let dead_letters = || -> Vec<Value> {
        let letters = env.run(&["deadletters", "list", "--json"]).ok().json();
        letters.as_array().unwrap().iter().filter(|d| d["subscriber"] == "dead").cloned().collect()
    };
    // Each look runs the CLI: not too often, beside the deliveries whose timing is checked.
    let three = |ours: &Vec<Value>| ours.len() == 3;
    let letters =
        polled_within(PATIENCE, Duration::from_millis(200), async || dead_letters(), three).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(letters.iter().all(|d| d["attempts"] == 4), "{letters:?}");
    let first_seq = letters.iter().map(|d| d["outbox_id"].as_i64().unwrap()).min().unwrap();
    let attempts: Vec<Instant> = dead_log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, seq, _)| *seq == first_seq)
        .map(|(.., at)| *at)
        .collect();
    assert_eq!(attempts.len(), 4, "attempts of the first event");
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[2] > gaps[0] + gaps[0] / 2, "the gaps between attempts grow: {gaps:?}");

    // Back up: a retry delivers it and takes it off the list; a second retry finds nothing.
    *dead_mode.lock().unwrap() = Answer::Ok;
    let id = first_seq.to_string();
    let out = env.run(&["deadletters", "retry", "dead", &id]).ok();
    assert!(out.stdout.contains("delivered"), "{}", out.stdout);
    let delivered = dead_log.lock().unwrap().iter().filter(|(_, seq, _)| *seq == first_seq).count();
    assert_eq!(delivered, 5, "the retry reached the receiver");
    let left = env.run(&["deadletters", "list", "--json"]).ok().json();
    assert_eq!(
        left.as_array().unwrap().iter().filter(|d| d["subscriber"] == "dead").count(),
        2,
        "{left}"
    );
    env.run(&["deadletters", "retry", "dead", &id]).fails_with("no dead letter");
    env.run(&["deadletters", "retry", "nobody", &id]).fails_with("no dead letter");
}

/// `clade event send` answers with the reply in a new session per invocation (platform and
/// channel `cli`); `clade chat` keeps one session and prints each reply as it streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_send_and_chat_talk_to_the_server() {
    let stub = stub().await;
    let env = setup("", &stub);
    let server = env.serve(&[]);
    for text in ["hello there", "/reply second"] {
        let out = env.run(&["--agent", "ada", "event", "send", text, "--server", &server.url]).ok();
        let want = if text.starts_with("/reply") { "second" } else { "echo: hello there" };
        assert_eq!(out.stdout.trim(), want, "{}", out.stderr);
    }
    let sessions = env.run(&["sessions", "list", "--json"]).ok().json();
    let cli: Vec<&Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["platform"] == "cli" && s["channel"] == "cli")
        .collect();
    assert_eq!(cli.len(), 2, "one session per invocation: {sessions}");

    let out = env
        .run_with_stdin(
            &["--agent", "ada", "chat", "--server", &server.url],
            "first line\n\n/reply done\n",
        )
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["echo: first line", "done"], "{}", out.stderr);
    let sessions = env.run(&["sessions", "list", "--json"]).ok().json();
    let chat: Vec<&Value> =
        sessions.as_array().unwrap().iter().filter(|s| s["channel"] == "chat").collect();
    assert_eq!(chat.len(), 1, "chat keeps one session: {sessions}");
    let turns =
        server.get_json(&format!("/v1/sessions/{}/turns", chat[0]["id"].as_str().unwrap())).await;
    assert_eq!(turns["items"].as_array().unwrap().len(), 2, "{turns}");
}

/// `PATCH /v1/sessions/{id}` and `clade sessions queue-mode` set a session's own queue mode,
/// and `null` (`agent` in the CLI) returns the session to its agent's; bad values are refused
/// and change nothing. (What the mode does to the session's turns is `clade-sim`'s
/// `suite::sessions::a_sessions_own_queue_mode_overrides_its_agents`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_own_queue_mode_is_set_over_the_api_and_the_cli() {
    let stub = stub().await;
    let env = setup(&slow_model(10), &stub);
    let server = env.serve(&[]);
    let mut hello = event("ada", "hello", "own");
    hello["wait"] = json!(true);
    let (_, answer) = post(&server, hello).await;
    let session = answer["session_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/sessions/{session}");
    for (body, code) in [
        (json!({ "queue_mode": "fast" }), "invalid_request"),
        (json!({ "queue_mode": "steer", "colour": "red" }), "invalid_request"),
    ] {
        let (status, answer) = server.send("PATCH", &path, None, Some(body)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{answer}");
    }
    let (status, answer) = server
        .send(
            "PATCH",
            "/v1/sessions/01900000-0000-7000-8000-000000000000",
            None,
            Some(json!({ "queue_mode": "steer" })),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(server.get_json(&path).await.get("queue_mode").is_none(), "nothing was set");
    let url = &server.url;
    let unknown = "01900000-0000-7000-8000-000000000000";
    env.run(&["sessions", "queue-mode", unknown, "steer", "--server", url]).fails_with("not found");
    let out = env.run(&["sessions", "queue-mode", &session, "fast", "--server", url]);
    assert_ne!(out.code, 0, "an unknown mode is a usage error: {}", out.stdout);

    let (status, answer) =
        server.send("PATCH", &path, None, Some(json!({ "queue_mode": "steer" }))).await;
    assert_eq!((status, &answer["queue_mode"]), (200, &json!("steer")), "{answer}");
    assert_eq!(server.get_json(&path).await["queue_mode"], "steer");
    let out = env.run(&["sessions", "queue-mode", &session, "agent", "--server", url]).ok();
    assert!(out.stdout.contains("follows its agent's queue mode"), "{}", out.stdout);
    assert!(server.get_json(&path).await.get("queue_mode").is_none(), "cleared");
}

/// A session's turns come a page at a time: each page in order, `next_cursor` until the last,
/// and a bad limit or cursor is a 400 that says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_turns_come_a_page_at_a_time() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let mut session = String::new();
    for n in 0..5 {
        let body = json!({ "agent": "ada", "text": format!("hello {n}"), "source": { "platform": "http", "channel": "c", "actor": "u" }, "wait": true });
        let (status, value) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 200, "{value}");
        session = value["session_id"].as_str().unwrap().to_owned();
    }
    let first = server.get_json(&format!("/v1/sessions/{session}/turns?limit=2")).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2, "{first}");
    assert!(first["next_cursor"].is_string(), "{first}");
    let all = server.all_turns(&session).await;
    let texts: Vec<&str> = all.iter().map(|t| t["events"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello 0", "hello 1", "hello 2", "hello 3", "hello 4"]);
    assert!(all.iter().all(|t| t["step_count"].as_u64() > Some(0)), "step counts ride along");
    let unpaged = server.get_json(&format!("/v1/sessions/{session}/turns")).await;
    assert_eq!(unpaged["items"].as_array().unwrap().len(), 5);
    assert!(unpaged.get("next_cursor").is_none(), "{unpaged}");
    for (query, named) in [("limit=0", "limit"), ("limit=1001", "limit"), ("cursor=nope", "cursor")]
    {
        let (status, body) =
            server.send("GET", &format!("/v1/sessions/{session}/turns?{query}"), None, None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(named), "{query}: {body}");
    }
}

/// A webhook subscriber receives the events of the tenants it names, by default the default
/// tenant's only: another tenant's conversations never reach it unless the operator says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_only_the_tenants_they_name() {
    let hook = || async {
        let log: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = log.clone();
        let url = serve_hook(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        })
        .await;
        (url, log)
    };
    let ((ours, our_log), (theirs, their_log)) = (hook().await, hook().await);
    let mut env = Env::new();
    env.vars.push(("HOOK_SECRET".into(), "s".into()));
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "subscribers:\n  - {{ name: ours, url: \"{ours}\", secret_env: HOOK_SECRET }}\n  - {{ name: theirs, url: \"{theirs}\", secret_env: HOOK_SECRET, tenants: [acme] }}\n"
        ),
    );
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "ada"]).ok();
    let acme = env.run(&["--tenant", "acme", "tokens", "create"]).ok().stdout.trim().to_owned();
    let server = env.serve(&[]);
    let body = json!({ "agent": "ada", "text": "hi", "source": { "platform": "http", "channel": "c", "actor": "u" }, "wait": true });
    let mut sessions = Vec::new();
    for token in [None, Some(acme.as_str())] {
        let (status, value) = server.send("POST", "/v1/events", token, Some(body.clone())).await;
        assert_eq!(status, 200, "{value}");
        sessions.push(value["session_id"].as_str().unwrap().to_owned());
    }
    let finished = |log: &Arc<Mutex<Vec<Value>>>| {
        log.lock().unwrap().iter().filter(|e| e["type"] == "turn.finished").count()
    };
    let both =
        eventually(async || (finished(&our_log) > 0 && finished(&their_log) > 0).then_some(()));
    assert!(both.await.is_some(), "a subscriber got no turn.finished");
    let sessions_of = |log: &Arc<Mutex<Vec<Value>>>| -> Vec<String> {
        let mut seen: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["session"].as_str().unwrap_or_default().to_owned())
            .collect();
        seen.dedup();
        seen
    };
    assert_eq!(sessions_of(&our_log), [sessions[0].clone()], "the default tenant's only");
    assert_eq!(sessions_of(&their_log), [sessions[1].clone()], "acme's only");
}

/// A turn's journal comes a page at a time, in the order it was written, each step in its
/// typed view; a turn of another session (or tenant) is not found, and a bad limit is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_steps_come_a_page_at_a_time() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    let (rival, _) = super::support::token(&env, "rival", &["read"]);
    let server = env.serve(&[]);
    let source = |channel: &str| json!({ "platform": "http", "channel": channel, "actor": "u" });
    let text = "/tool echo {\"text\":\"one\"}\n/tool echo {\"text\":\"two\"}";
    let body = json!({ "agent": "ada", "text": text, "source": source("c"), "wait": true });
    let (status, value) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 200, "{value}");
    let session = value["session_id"].as_str().unwrap().to_owned();
    let turn = value["turn_id"].as_str().unwrap().to_owned();
    let steps = format!("/v1/sessions/{session}/turns/{turn}/steps");

    let whole = server.get_json(&steps).await;
    let keys: Vec<&str> =
        whole["items"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "model/0",
            "tool/0/0/start",
            "tool/0/0/result",
            "tool/0/1/start",
            "tool/0/1/result",
            "model/1"
        ],
        "{whole}"
    );
    assert!(whole.get("next_cursor").is_none(), "{whole}");
    assert_eq!(whole["items"][2]["content"], "one", "{whole}");
    assert_eq!(whole["items"][4]["kind"], "tool_result", "{whole}");
    let turns = server.get_json(&format!("/v1/sessions/{session}/turns")).await;
    assert_eq!(turns["items"][0]["step_count"], 6, "{turns}");

    // Page by page, following `next_cursor`: the same steps, each once.
    let mut paged = Vec::new();
    let mut path = format!("{steps}?limit=4");
    loop {
        let page = server.get_json(&path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 4, "{page}");
        paged.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{steps}?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(Value::from(paged), whole["items"]);
    let past = server.get_json(&format!("{steps}?cursor=99")).await;
    assert_eq!(past["items"], json!([]), "{past}");

    // Another session's turn, an unknown one, and the rival's view: not found.
    let body = json!({ "agent": "ada", "text": "hi", "source": source("other"), "wait": true });
    let (_, other) = server.send("POST", "/v1/events", None, Some(body)).await;
    let other = other["session_id"].as_str().unwrap();
    for (path, token, code) in [
        (format!("/v1/sessions/{other}/turns/{turn}/steps"), None, "turn_not_found"),
        (format!("/v1/sessions/{session}/turns/{session}/steps"), None, "turn_not_found"),
        (format!("/v1/sessions/{session}/turns/nope/steps"), None, "turn_not_found"),
        (steps.clone(), Some(rival.as_str()), "session_not_found"),
    ] {
        let (status, body) = server.send("GET", &path, token, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some(code)), "{path}: {body}");
    }
    for query in ["limit=0", "limit=1001", "cursor=nope"] {
        let (status, body) = server.send("GET", &format!("{steps}?{query}"), None, None).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
}

/// `GET /v1/sessions` a page at a time: the pages join into the whole list, in its order, and
/// a cursor it never gave is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_a_page_at_a_time() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    for n in 0..5 {
        let mut body = event("ada", "hi", &format!("actor-{n}"));
        body["wait"] = json!(true);
        let (status, answer) = post(&server, body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let whole = server.get_json("/v1/sessions?agent=ada").await;
    let whole: Vec<&Value> = whole["items"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(whole.len(), 5);
    let mut paged = Vec::new();
    let mut path = "/v1/sessions?agent=ada&limit=2".to_owned();
    loop {
        let page = server.get_json(&path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        paged.extend(items.iter().map(|s| s["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/sessions?agent=ada&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let paged: Vec<&Value> = paged.iter().collect();
    assert_eq!(paged, whole);
    let (status, answer) = server.send("GET", "/v1/sessions?cursor=not-a-cursor", None, None).await;
    assert_eq!((status, &answer["error"]["code"]), (400, &json!("invalid_request")), "{answer}");
}
