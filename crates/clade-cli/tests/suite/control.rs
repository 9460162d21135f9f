//! Operators' control of what agents run, through the real binary: a paused agent or session
//! starts no turn (events wait, stored, across a restart) until the pause is lifted from the
//! API or the CLI, the status shows what waits and why, other agents run on, and another
//! tenant can neither pause nor see it.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{Server, holds_for, token};

fn event(agent: &str, channel: &str, text: &str) -> Value {
    json!({ "agent": agent, "text": text,
        "source": { "platform": "http", "channel": channel, "actor": "pat" } })
}

/// A session's turns now.
async fn turns_now(server: &Server, session: &str) -> Vec<Value> {
    let page = server.get_json(&format!("/v1/sessions/{session}/turns")).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

/// A gateway serving agents `ada` and `bo`, and a token of another tenant.
fn ada_bo_and_a_rival() -> (super::support::Env, Server, String) {
    let env = super::support::Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["agents", "create", "bo"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    let (rival, _) = token(&env, "rival", &["admin"]);
    let server = env.serve(&[]);
    (env, server, rival)
}

fn completed(turns: &[Value]) -> bool {
    !turns.is_empty() && turns.iter().all(|t| t["status"] == "completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_starts_no_turn_until_resumed_even_across_a_restart() {
    let (env, server, rival) = ada_bo_and_a_rival();

    let pause = json!({ "reason": "maintenance" });
    let (status, _) =
        server.send("POST", "/v1/agents/ada/pause", Some(&rival), Some(pause.clone())).await;
    assert_eq!(status, 404, "another tenant paused ada");
    let (status, paused) = server.send("POST", "/v1/agents/ada/pause", None, Some(pause)).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["reason"], "maintenance");

    // Waiting for a paused agent's answer would block the sender: it is told instead.
    let mut waiting = event("ada", "desk", "are you there?");
    waiting["wait"] = json!(true);
    let (status, accepted) = server.send("POST", "/v1/events", None, Some(waiting)).await;
    assert_eq!(status, 202, "{accepted}");
    let notice = accepted["paused"].as_str().unwrap_or_default();
    assert!(notice.contains("paused") && notice.contains("clade agents resume ada"), "{accepted}");
    let session = accepted["session_id"].as_str().unwrap().to_owned();
    // Another agent runs on.
    let mut other = event("bo", "desk", "hello");
    other["wait"] = json!(true);
    let (status, answer) = server.send("POST", "/v1/events", None, Some(other)).await;
    assert_eq!((status, answer["reply"]["text"].as_str()), (200, Some("echo: hello")));
    // Sent before bo's, which has ended: had ada's run, it would have begun by now.
    assert_eq!(turns_now(&server, &session).await.len(), 0, "a paused agent ran");

    let status_of = server.get_json("/v1/agents/ada/status").await;
    assert_eq!(status_of["paused"]["reason"], "maintenance", "{status_of}");
    assert_eq!(status_of["sessions"][0]["session"], session.as_str(), "{status_of}");
    assert_eq!(status_of["sessions"][0]["state"], "waiting", "{status_of}");
    assert_eq!(status_of["sessions"][0]["open_events"], 1, "{status_of}");
    let (status, _) = server.send("GET", "/v1/agents/ada/status", Some(&rival), None).await;
    assert_eq!(status, 404);
    let cli = env.run(&["agents", "status", "ada"]).ok().stdout;
    assert!(cli.contains("paused since") && cli.contains("maintenance"), "{cli}");

    // The pause outlasts a crash of the gateway.
    server.kill9();
    let server = env.serve(&[]);
    let ran = "ran after a restart";
    holds_for(
        Duration::from_millis(800),
        ran,
        async || turns_now(&server, &session).await,
        |t| t.is_empty(),
    )
    .await;

    // Lifted from the CLI: the store, then the gateway told over its admin socket.
    let resumed = env.run(&["agents", "resume", "ada"]).ok().stdout;
    assert!(resumed.contains("resumed agent ada"), "{resumed}");
    let turns = server.turns_until(&session, completed).await;
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert_eq!(turns[0]["reply"], "echo: are you there?");
    let status_of = server.get_json("/v1/agents/ada/status").await;
    assert_eq!(status_of["paused"], Value::Null, "{status_of}");
    assert_eq!(status_of["sessions"], json!([]), "{status_of}");

    // One session paused, over the API; `clade sessions resume` lifts it.
    let (status, _) =
        server.send("POST", &format!("/v1/sessions/{session}/pause"), None, Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .send("POST", &format!("/v1/sessions/{session}/pause"), Some(&rival), Some(json!({})))
        .await;
    assert_eq!(status, 404, "another tenant paused the session");
    server.send("POST", "/v1/events", None, Some(event("ada", "desk", "second"))).await;
    let mut elsewhere = event("ada", "hall", "elsewhere");
    elsewhere["wait"] = json!(true);
    let (status, answer) = server.send("POST", "/v1/events", None, Some(elsewhere)).await;
    assert_eq!((status, answer["reply"]["text"].as_str()), (200, Some("echo: elsewhere")));
    let ran = "a paused session ran";
    holds_for(
        Duration::from_millis(500),
        ran,
        async || turns_now(&server, &session).await,
        |t| t.len() == 1,
    )
    .await;
    let status_of = server.get_json("/v1/agents/ada/status").await;
    assert_eq!(status_of["sessions"][0]["state"], "paused", "{status_of}");
    let (url, _) = server.address();
    let lifted = env.run(&["sessions", "resume", &session, "--server", &url]).ok().stdout;
    assert!(lifted.contains("lifted the pause"), "{lifted}");
    let turns = server.turns_until(&session, |t| t.len() == 2 && completed(t)).await;
    assert_eq!(turns.len(), 2, "{turns:?}");

    // Each pause and each lifting is a lifecycle event: the agent's of no session, the
    // session's in it.
    let paused = server.get_json("/v1/events?type=executions.paused").await;
    let sessions: Vec<&Value> =
        paused["items"].as_array().unwrap().iter().map(|e| &e["session"]).collect();
    assert_eq!(sessions, [&Value::Null, &json!(session)], "{paused}");
    assert_eq!(paused["items"][0]["data"]["reason"], "maintenance", "{paused}");
    let resumed = server.get_json("/v1/events?type=executions.resumed").await;
    assert_eq!(resumed["items"].as_array().unwrap().len(), 2, "{resumed}");

    // The CLI says so too, and does not block; an agent that is not paused gets no notice.
    let (status, _) = server.send("POST", "/v1/agents/bo/pause", None, Some(json!({}))).await;
    assert_eq!(status, 200);
    let (url, _) = server.address();
    let sent = env.run(&["--agent", "bo", "event", "send", "hi", "--server", &url]).ok();
    assert!(sent.stderr.contains("agent bo is paused"), "{}", sent.stderr);
    let sent = env.run(&["--agent", "ada", "event", "send", "hi", "--server", &url]).ok();
    assert!(!sent.stderr.contains("paused"), "{}", sent.stderr);
}

/// `GET /v1/events` pages through the tenant's lifecycle events by agent, session, type and
/// time, each readable as the protocol says; another tenant reads only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_history_pages_by_agent_session_type_and_time() {
    let (_env, server, rival) = ada_bo_and_a_rival();
    let mut sessions = Vec::new();
    for (agent, channel, text) in [("ada", "a", "one"), ("ada", "a", "two"), ("bo", "b", "three")] {
        let mut body = event(agent, channel, text);
        body["wait"] = json!(true);
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        sessions.push(answer["session_id"].as_str().unwrap().to_owned());
    }
    let read = |page: &Value| -> Vec<clade_protocol::WebhookEvent> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                serde_json::from_value(item.clone()).unwrap_or_else(|e| panic!("{e}: {item}"))
            })
            .collect()
    };
    let finished = read(&server.get_json("/v1/events?type=turn.finished").await);
    assert_eq!(finished.len(), 3, "{finished:?}");
    let ada = read(&server.get_json("/v1/events?agent=ada").await);
    assert!(ada.iter().all(|e| e.session.as_deref() == Some(sessions[0].as_str())), "{ada:?}");
    assert_eq!(ada.iter().filter(|e| e.event.kind().ends_turn()).count(), 2, "{ada:?}");
    let bo = read(&server.get_json(&format!("/v1/events?session={}", sessions[2])).await);
    assert!(
        !bo.is_empty() && bo.iter().all(|e| e.session.as_deref() == Some(sessions[2].as_str()))
    );

    // A page at a time, each after the last, none twice.
    let mut seen = Vec::new();
    let mut path = "/v1/events?limit=2".to_owned();
    loop {
        let page = server.get_json(&path).await;
        let items = read(&page);
        if items.is_empty() {
            break;
        }
        seen.extend(items.iter().map(|e| e.seq));
        path = format!("/v1/events?limit=2&cursor={}", page["next_cursor"]);
    }
    let mut sorted = seen.clone();
    sorted.dedup();
    assert!(seen.len() >= 6 && sorted == seen && seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let later = finished.last().unwrap().created_at + 60_000;
    assert_eq!(server.get_json(&format!("/v1/events?since={later}")).await["items"], json!([]));

    let (status, theirs) = server.send("GET", "/v1/events", Some(&rival), None).await;
    assert_eq!((status, theirs["items"].clone()), (200, json!([])), "{theirs}");
    let (status, _) = server.send("GET", "/v1/events?agent=ada", Some(&rival), None).await;
    assert_eq!(status, 404);
    let (status, body) = server.send("GET", "/v1/events?type=turn.exploded", None, None).await;
    assert_eq!(status, 400, "{body}");
}
