//! `server.traces`: every tenant's turns as OpenTelemetry spans (GenAI conventions), sent over
//! OTLP to a receiver built on the OpenTelemetry project's own protobuf messages
//! (`tests/clients/otlp_receiver.py`), and `clade trace export` / `clade usage estimate FILE`.

use std::io::BufRead as _;
use std::process::{Child, Stdio};

use serde_json::{Value, json};

use super::support::{
    Env, ada_and_rival_bob, free_port, polled_within, priced_models, python_clients, run_client,
    write,
};

/// The receiver, running until dropped.
struct Receiver {
    child: Child,
    folder: tempfile::TempDir,
    http: u64,
    grpc: u64,
}

impl Receiver {
    fn start(python: &std::path::Path, fail: u32) -> Self {
        let folder = tempfile::tempdir().unwrap();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/otlp_receiver.py");
        #[allow(clippy::disallowed_methods)] // The receiver is a program we did not write.
        let mut child = std::process::Command::new(python)
            .arg(&script)
            .arg("serve")
            .arg(folder.path())
            .args(["--fail", &fail.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ports: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        Self {
            child,
            folder,
            http: ports["http"].as_u64().unwrap(),
            grpc: ports["grpc"].as_u64().unwrap(),
        }
    }

    /// Every export taken so far.
    fn received(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.folder.path().join("received.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn refused(&self) -> u32 {
        std::fs::read_to_string(self.folder.path().join("refused"))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// Waits until the spans of `turns` turns have come, then returns every span.
    async fn spans_of(&self, turns: usize) -> Vec<Value> {
        let spans = polled_within(
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(100),
            async || {
                self.received()
                    .iter()
                    .flat_map(|r| r["spans"].as_array().unwrap().clone())
                    .collect::<Vec<_>>()
            },
            |spans: &Vec<Value>| {
                spans
                    .iter()
                    .filter(|s| s["attributes"]["gen_ai.operation.name"] == "invoke_agent")
                    .count()
                    >= turns
            },
        )
        .await;
        let roots =
            spans.iter().filter(|s| s["attributes"]["gen_ai.operation.name"] == "invoke_agent");
        assert!(roots.count() >= turns, "spans of {turns} turns did not come: {spans:?}");
        spans
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event(agent: &str, text: &str) -> Value {
    json!({ "agent": agent, "text": text, "wait": true,
        "source": { "platform": "http", "channel": "c", "actor": "someone" } })
}

/// The turn span of `turn`, and the spans under it.
fn trace_of<'a>(spans: &'a [Value], turn: &str) -> (&'a Value, Vec<&'a Value>) {
    let root = spans
        .iter()
        .find(|s| s["attributes"]["clade.turn.id"] == turn)
        .unwrap_or_else(|| panic!("no span of turn {turn}: {spans:?}"));
    let children = spans
        .iter()
        .filter(|s| s["trace_id"] == root["trace_id"] && s["parent_span_id"] == root["span_id"])
        .collect();
    (root, children)
}

/// Both tenants' turns reach the collector over OTLP/HTTP as GenAI spans: the turn's
/// `invoke_agent` span with its tenant, agent and tokens, a `chat` span per model call and an
/// `execute_tool` span per tool call under it; no text unless asked for; a collector that
/// refuses at first is tried again. Then, over gRPC with content on, the answer's text and the
/// tool's arguments travel too, with the configured header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenants_turns_reach_a_collector_as_genai_spans_over_http_and_grpc() {
    let Some(python) = python_clients("the traces test") else { return };
    let mut env = Env::new();
    let rival = ada_and_rival_bob(&env);
    let receiver = Receiver::start(&python, 2);
    let config = format!(
        "server:\n  traces:\n    endpoint: http://127.0.0.1:{}\n    service_name: clade-test\n",
        receiver.http
    );
    write(&env.data_dir().join("clade.yaml"), &config);
    env.run(&["agents", "create", "cy"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "agent.ask", "--resource", "cy"]).ok();
    let server = env.serve(&[]);
    let tool = r#"/tool tools.find {"query":"memory"}"#;
    let (status, ada) = server.send("POST", "/v1/events", None, Some(event("ada", tool))).await;
    assert_eq!(status, 200, "{ada}");
    let (status, bob) =
        server.send("POST", "/v1/events", Some(&rival), Some(event("bob", "hi"))).await;
    assert_eq!(status, 200, "{bob}");
    let (status, refused) =
        server.send("POST", "/v1/events", None, Some(event("ada", "/tool nope.tool {}"))).await;
    assert_eq!(status, 200, "{refused}");
    let ask = r#"/tool agent.ask {"to":"cy","message":"hello cy"}"#;
    let (status, asked) = server.send("POST", "/v1/events", None, Some(event("ada", ask))).await;
    assert_eq!(status, 200, "{asked}");

    // ada's three turns, bob's, and cy's answer to ada's ask.
    let spans = receiver.spans_of(5).await;
    assert!(receiver.refused() >= 2, "the collector's first refusals were not met with a retry");
    let (root, children) = trace_of(&spans, ada["turn_id"].as_str().unwrap());
    assert_eq!(root["name"], "invoke_agent ada", "{root}");
    assert_eq!(root["attributes"]["gen_ai.agent.name"], "ada");
    assert_eq!(root["attributes"]["clade.tenant.name"], "default");
    assert_eq!(root["attributes"]["gen_ai.conversation.id"], ada["session_id"]);
    assert_eq!(root["attributes"]["clade.turn.status"], "completed");
    assert_eq!(root["resource"]["service.name"], "clade-test");
    assert_eq!(root["scope"], "clade");
    assert!(root["end"].as_u64().unwrap() >= root["start"].as_u64().unwrap());
    // Asked for the tool, then answered after its result: two model calls, one tool call.
    let chats: Vec<_> =
        children.iter().filter(|s| s["attributes"]["gen_ai.operation.name"] == "chat").collect();
    assert_eq!(chats.len(), 2, "{children:?}");
    assert_eq!(chats[0]["kind"], 3, "a model call is a client span: {}", chats[0]);
    assert_eq!(chats[0]["attributes"]["gen_ai.response.finish_reasons"], json!(["tool_calls"]));
    let tokens: u64 =
        chats.iter().map(|c| c["attributes"]["gen_ai.usage.input_tokens"].as_u64().unwrap()).sum();
    assert_eq!(root["attributes"]["gen_ai.usage.input_tokens"].as_u64().unwrap(), tokens);
    let tools: Vec<_> =
        children.iter().filter(|s| s["name"] == "execute_tool tools.find").collect();
    assert_eq!(tools.len(), 1, "{children:?}");
    assert_eq!(tools[0]["attributes"]["gen_ai.tool.name"], "tools.find");
    // Nothing said is sent unless the operator opts in.
    for span in &spans {
        let attributes = span["attributes"].as_object().unwrap();
        for key in
            ["gen_ai.output.messages", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"]
        {
            assert!(!attributes.contains_key(key), "{key} sent without `content: true`: {span}");
        }
    }
    // A tool refused before it ran is an error span of its own, named by what the model asked.
    let (_, children) = trace_of(&spans, refused["turn_id"].as_str().unwrap());
    let nope = children.iter().find(|s| s["name"] == "execute_tool nope.tool").unwrap();
    assert_eq!(nope["status"]["code"], 2, "{nope}");
    assert_eq!(nope["attributes"]["error.type"], "tool_error", "{nope}");
    // cy's turn answering ada's ask is linked to ada's turn, in ada's trace.
    let (asker, _) = trace_of(&spans, asked["turn_id"].as_str().unwrap());
    let cys = spans
        .iter()
        .find(|s| s["name"] == "invoke_agent cy")
        .unwrap_or_else(|| panic!("no turn of cy: {spans:?}"));
    let link = &cys["links"][0];
    assert_eq!(
        (&link["trace_id"], &link["span_id"]),
        (&asker["trace_id"], &asker["span_id"]),
        "{cys}"
    );
    assert_eq!(link["attributes"]["clade.message.kind"], "ask", "{link}");
    assert_eq!(link["attributes"]["clade.message.from"], "ada", "{link}");
    let (bob_root, _) = trace_of(&spans, bob["turn_id"].as_str().unwrap());
    assert_eq!(bob_root["attributes"]["clade.tenant.name"], "rival", "{bob_root}");
    assert_eq!(bob_root["attributes"]["gen_ai.agent.name"], "bob");
    drop(server);

    // The same over gRPC, with the content and a header from the environment.
    let config = format!(
        "server:\n  traces:\n    endpoint: http://127.0.0.1:{}\n    protocol: grpc\n    content: true\n    headers_env:\n      x-api-key: TRACES_KEY\n",
        receiver.grpc
    );
    write(&env.data_dir().join("clade.yaml"), &config);
    env.vars.push(("TRACES_KEY".into(), "k3y".into()));
    let server = env.serve(&[]);
    let (status, again) = server.send("POST", "/v1/events", None, Some(event("ada", tool))).await;
    assert_eq!(status, 200, "{again}");
    let spans = receiver.spans_of(6).await;
    let by_grpc: Vec<_> =
        receiver.received().into_iter().filter(|r| r["transport"] == "grpc").collect();
    assert!(!by_grpc.is_empty(), "nothing came over gRPC");
    assert_eq!(by_grpc[0]["headers"]["x-api-key"], "k3y", "{:?}", by_grpc[0]["headers"]);
    let (_, children) = trace_of(&spans, again["turn_id"].as_str().unwrap());
    let tool = children.iter().find(|s| s["name"] == "execute_tool tools.find").unwrap();
    let arguments = tool["attributes"]["gen_ai.tool.call.arguments"].as_str().unwrap();
    assert!(arguments.contains("memory"), "{tool}");
    assert!(tool["attributes"]["gen_ai.tool.call.result"].is_string(), "{tool}");
    let answered = children.iter().any(|s| {
        s["attributes"]["gen_ai.output.messages"].as_str().is_some_and(|m| m.contains("assistant"))
    });
    assert!(answered, "no model answer's text with `content: true`: {children:?}");
}

/// With the collector down, turns answer as ever. A session's turns export as OTLP/JSON that
/// the protobuf JSON parser reads with unknown fields refused; the file prices on other models as the session does; a session of another tenant
/// is not found; a file that is not OTLP/JSON is refused by line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_trace_exports_as_otlp_json_and_prices_like_the_session() {
    let Some(python) = python_clients("the trace export test") else { return };
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let env = priced_models(&stub);
    let rival = ada_and_rival_bob(&env);
    // A collector that is down: turns answer as ever, the spans wait in the outbox.
    let config = env.data_dir().join("clade.yaml");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!("server:\n  traces:\n    endpoint: http://127.0.0.1:{}\n", free_port()));
    write(&config, &yaml);
    let server = env.serve(&[]);
    let (status, first) =
        server.send("POST", "/v1/events", None, Some(event("ada", "hello"))).await;
    assert_eq!(status, 200, "{first}");
    let session = first["session_id"].as_str().unwrap().to_owned();
    let mut again = event("ada", "how much do I cost?");
    again["session"] = json!(session);
    let (status, body) = server.send("POST", "/v1/events", None, Some(again)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], first["session_id"], "{body}");

    let file = env.data_dir().join("trace.jsonl");
    let path = file.to_str().unwrap();
    let out = env.run(&["trace", "export", "--session", &session, "-o", path]).ok();
    assert!(out.stdout.contains("wrote 2 turns"), "{}", out.stdout);
    let checked = run_client(&python, "otlp_receiver.py", &["check", path]);
    assert_eq!(checked["requests"], 2, "{checked}");
    let names: Vec<&str> =
        checked["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"invoke_agent ada") && names.iter().any(|n| n.starts_with("chat ")),
        "{names:?}"
    );

    let from_session = env.run(&["usage", "estimate", "--session", &session, "--json"]).ok().json();
    let from_file = env.run(&["usage", "estimate", path, "--json"]).ok().json();
    assert_eq!(from_file["calls"], 2, "{from_file}");
    assert!(from_file["input_tokens"].as_u64().unwrap() > 0, "{from_file}");
    for field in ["calls", "input_tokens", "output_tokens", "recorded_cost_usd", "on"] {
        assert_eq!(
            from_file[field], from_session[field],
            "{field}: {from_file} against {from_session}"
        );
    }
    assert_eq!(from_file["file"], path);

    // The rival's session is not the default tenant's to export, nor its to read.
    let (status, bob) =
        server.send("POST", "/v1/events", Some(&rival), Some(event("bob", "hi"))).await;
    assert_eq!(status, 200, "{bob}");
    let theirs = bob["session_id"].as_str().unwrap();
    env.run(&["trace", "export", "--session", theirs]).fails_with("no session");
    env.run(&["trace", "export", "--session", "nonsense"]).fails_with("is not a session id");
    let broken = env.data_dir().join("broken.jsonl");
    std::fs::write(&broken, "{\"resourceSpans\": []}\nnot json\n").unwrap();
    env.run(&["usage", "estimate", broken.to_str().unwrap()])
        .fails_with("broken.jsonl:2: not JSON");
    env.run(&["usage", "estimate", "/nonexistent/trace.jsonl"]).fails_with("cannot read");
}
