//! Branches and workers through the real binary: a channel starts them with its tools, keeps
//! answering while they run on their own (slower) route, and then answers their outcomes,
//! which arrive as messages of their own; a worker reports progress, takes follow-ups in the
//! same context and has only the tools it was given; limits, cancels, timeouts and bad input
//! are clear refusals; and an outcome crosses a crash exactly once.

use serde_json::{Value, json};

use super::support::{Env, Server, holds_for, token, write};

fn tool(name: &str, args: Value) -> String {
    format!("/tool {name} {args}")
}

const DESK: &str = r#"{ "platform": "http", "channel": "desk", "actor": "pat" }"#;

/// Sends `text` to `agent` at the desk and waits for the turn: the session and the reply.
async fn say(server: &Server, agent: &str, text: &str) -> (String, String) {
    let source: Value = serde_json::from_str(DESK).unwrap();
    let body = json!({ "agent": agent, "text": text, "wait": true, "source": source });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    (
        answer["session_id"].as_str().unwrap_or_default().to_owned(),
        answer["reply"]["text"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The JSON a start tool returned, from the scripted model's summary of it.
fn started(reply: &str) -> Value {
    let json = reply.split_once(" -> ").map(|(_, json)| json).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|_| panic!("no fork started: {reply}"))
}

/// The replies of a session's turns, oldest first, once `done` holds for them.
async fn replies_until(
    server: &Server,
    session: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let replies = |turns: &[Value]| -> Vec<String> {
        let mut replies: Vec<String> =
            turns.iter().map(|t| t["reply"].as_str().unwrap_or_default().to_owned()).collect();
        replies.reverse();
        replies
    };
    let turns = server.turns_until(session, |t| done(&replies(t))).await;
    replies(&turns)
}

fn slow_routes(env: &mut Env, stub: &clade_stub::Stub, extra: &str) {
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "models:\n  slow:\n    provider: openai\n    model: stub+latency=1500\n    base_url: {}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [scripted]\n  branch: [slow]\n  worker: [slow]\n{extra}",
            stub.url()
        ),
    );
}

/// Nobody speaks on a branch's or worker's platform through the API, nor into a fork's session
/// by its id: each a 400 naming why. (What branches and workers do is `clade-sim`'s
/// `suite::forks`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_speaks_on_a_forks_platform_through_the_api() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let (_, reply) =
        say(&server, "ada", &tool("agent.branch", json!({ "task": "/reply the answer is 42" })))
            .await;
    let branch_id = started(&reply)["id"].as_str().unwrap().to_owned();
    for platform in ["branch", "worker"] {
        let body = json!({ "agent": "ada", "text": "hi",
            "source": { "platform": platform, "channel": "c", "actor": "a" } });
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains("kept for branches"),
            "{answer}"
        );
    }
    let body = json!({ "session": branch_id, "text": "hi" });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 400, "{answer}");
}

/// The API and the CLI see and steer the same runs: a worker started over the API (once per
/// Idempotency-Key) is listed among the agent's open runs, shown with its task, cancelled over
/// the API (its outcome never delivered), and listed by `clade runs`; another tenant finds
/// none of it, and bad input is refused naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_shown_started_and_cancelled_over_the_api_and_cli() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let mut env = Env::new();
    slow_routes(&mut env, &stub, "");
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    let (rival, _) = token(&env, "rival", &["admin"]);
    let server = env.serve(&[]);
    let (session, _) = say(&server, "ada", "hello").await;

    let start = json!({ "kind": "worker", "task": "/reply from the api", "tools": ["time.now"] });
    let path = format!("/v1/sessions/{session}/forks");
    let (status, run) = request_with_key(&server, &path, &start, "k1").await;
    assert_eq!(status, 201, "{run}");
    assert_eq!((run["kind"].as_str(), run["status"].as_str()), (Some("worker"), Some("running")));
    assert_eq!(run["fork"]["tools"], json!(["time.now"]), "{run}");
    assert_eq!(run["session"], session.as_str());
    let (status, again) = request_with_key(&server, &path, &start, "k1").await;
    assert_eq!((status, &again["id"]), (200, &run["id"]), "{again}");
    let worker = run["fork"]["id"].as_str().unwrap().to_owned();
    let reported = format!("[Worker {worker} reports]");
    let replies =
        replies_until(&server, &session, |r| r.iter().any(|r| r.contains(&reported))).await;
    assert!(
        replies.iter().any(|r| r.contains(&reported) && r.ends_with("from the api")),
        "{replies:?}"
    );
    let shown = server.get_json(&format!("/v1/runs/{}", run["id"].as_str().unwrap())).await;
    assert_eq!(
        (shown["status"].as_str(), shown["output"].as_str()),
        (Some("completed"), Some("from the api"))
    );
    // Pausing a run pauses its worker's session (durably, as `clade sessions pause` does);
    // resuming lifts it.
    let run_id = run["id"].as_str().unwrap().to_owned();
    let paused = env.run(&["runs", "pause", &run_id, "--server", &server.url]).ok().stdout;
    assert!(paused.contains(&format!("session {worker}")), "{paused}");
    let status = server.get_json("/v1/agents/ada/status").await;
    let theirs =
        status["sessions"].as_array().unwrap().iter().find(|s| s["session"] == worker.as_str());
    assert_eq!(theirs.map(|s| s["state"].clone()), Some(json!("paused")), "{status}");
    let resumed = env.run(&["runs", "resume", &run_id, "--server", &server.url]).ok().stdout;
    assert!(resumed.contains("lifted its pause"), "{resumed}");
    env.run(&["runs", "pause", "nope", "--server", &server.url]).fails_with("is not a run id");

    let (status, run) = request_with_key(
        &server,
        &path,
        &json!({ "kind": "branch", "task": "/reply too slow" }),
        "k2",
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let open = server.get_json("/v1/agents/ada/runs?open=true").await;
    let listed: Vec<&str> =
        open["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [id.as_str()], "{open}");
    let (status, answer) = server.send("GET", &format!("/v1/runs/{id}"), Some(&rival), None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("run_not_found")),
        "{answer}"
    );
    let (status, answer) =
        server.send("POST", &format!("/v1/runs/{id}/cancel"), Some(&rival), None).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = server
        .send("POST", &path, Some(&rival), Some(json!({ "kind": "branch", "task": "x" })))
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, cancelled) =
        server.send("POST", &format!("/v1/runs/{id}/cancel"), None, None).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let (status, again) = server.send("POST", &format!("/v1/runs/{id}/cancel"), None, None).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("cancelled")), "{again}");
    let span = std::time::Duration::from_millis(2000);
    let replies = async || replies_until(&server, &session, |_| true).await;
    let never = |replies: &Vec<String>| !replies.iter().any(|r| r.contains("too slow"));
    holds_for(span, "a cancelled run reported back", replies, never).await;

    let listed = env.run(&["runs", "list", "ada", "--json"]).ok().stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let states: Vec<&str> =
        listed.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(states, ["cancelled", "completed"], "{listed}");
    let table = env.run(&["runs", "list", "ada"]).ok().stdout;
    assert!(table.contains("branch") && table.contains("cancelled"), "{table}");
    let shown = env.run(&["runs", "show", &id]).ok().stdout;
    assert!(shown.contains("task: /reply too slow") && shown.contains("cancelled"), "{shown}");
    let turns = env.run(&["runs", "list", "ada", "--kind", "turn", "--json"]).ok().stdout;
    assert!(
        serde_json::from_str::<Value>(&turns).unwrap().as_array().unwrap().len() >= 3,
        "{turns}"
    );
    env.run(&["runs", "list", "ada", "--kind", "nap"]).fails_with("not a kind of run");
    env.run(&["runs", "show", "nope"]).fails_with("is not a run id");

    for (body, status_code, expected) in [
        (json!({ "kind": "turn", "task": "x" }), 400, "is not one of branch, worker"),
        (json!({ "kind": "worker", "task": "   " }), 400, "not only spaces"),
        (
            json!({ "kind": "branch", "task": "x", "tools": ["time.now"] }),
            422,
            "only a worker is given some",
        ),
        (
            json!({ "kind": "worker", "task": "x", "tools": ["agent.cancel"] }),
            422,
            "a worker can be given",
        ),
    ] {
        let (status, answer) = server.send("POST", &path, None, Some(body)).await;
        assert_eq!(status, status_code, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(expected),
            "{expected}: {answer}"
        );
    }
    let (status, answer) = server.send("GET", "/v1/runs/not-a-run", None, None).await;
    assert_eq!(status, 400, "{answer}");
}

/// `POST path` with `body` and an Idempotency-Key: status and answer.
async fn request_with_key(server: &Server, path: &str, body: &Value, key: &str) -> (u16, Value) {
    let (url, token) = server.address();
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
