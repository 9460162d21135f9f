//! The AgentHub: Spawn, SendMessage and Trace over gRPC, driven by gRPC's official Python
//! packages unchanged (the client made from `proto/` by `grpcio-tools`' own protoc), on plain
//! HTTP/2 and over TLS; and the same operations over HTTP (`POST /v1/agents` with a task, `GET
//! /v1/agents/{handle}/events`). Another tenant's token reaches none of it.

use serde_json::Value;

use super::support::{
    Env, PATIENCE, ada_and_rival_bob, free_port, polled_blocking, python_clients, run_client,
    token, write,
};

fn proto_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    dir.canonicalize().unwrap().to_string_lossy().into_owned()
}

/// The `turn.finished` replies among a trace's events, in order.
fn replies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "turn.finished")
        .map(|e| e["data"]["reply"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_official_grpc_client_spawns_sends_and_traces() {
    let Some(python) = python_clients("the AgentHub gRPC test") else { return };
    let env = Env::new();
    let rival = ada_and_rival_bob(&env);
    let (read, _) = token(&env, "default", &["read"]);
    let port = free_port();
    let config = format!("server:\n  grpc:\n    listen: 127.0.0.1:{port}\n");
    write(&env.data_dir().join("clade.yaml"), &config);
    let server = env.serve(&[]);
    let address = format!("127.0.0.1:{port}");
    let got = run_client(
        &python,
        "hub_client.py",
        &["plain", &proto_dir(), &address, &server.token, &rival, &read],
    );

    let spawned = &got["spawned"];
    assert_eq!((&spawned["handle"], &spawned["template"]), (&"scout".into(), &"default".into()));
    assert!(!spawned["agent_id"].as_str().unwrap().is_empty(), "{got}");
    assert!(!spawned["task_event"].as_str().unwrap().is_empty(), "{got}");

    // Acknowledged once stored; the same key again is the same message, nothing new.
    let (sent, again) = (&got["sent"], &got["again"]);
    assert_eq!(sent["duplicate"], false, "{got}");
    assert_eq!(again["duplicate"], true, "{got}");
    assert_eq!((&again["event_id"], &again["session"]), (&sent["event_id"], &sent["session"]));

    // The live trace saw the message's turn as it ran, its text as written included.
    let live = got["live"].as_array().unwrap_or_else(|| panic!("no live trace: {got}"));
    assert!(live.iter().any(|e| e["kind"] == "turn.started"), "{got}");
    assert!(live.iter().any(|e| e["kind"] == "text.delta" && e["id"] == 0), "{got}");
    assert_eq!(replies(&got["live"]).last().unwrap(), "echo: hello over grpc", "{got}");
    // Stored events carry the id a trace resumes from; a turn's start may be announced before
    // it commits (id 0), and is then not passed on twice.
    let stored = live.iter().filter(|e| e["kind"] != "text.delta" && e["kind"] != "turn.started");
    assert!(stored.clone().count() > 0 && stored.clone().all(|e| e["id"].as_u64() > Some(0)));
    let started = live.iter().filter(|e| e["kind"] == "turn.started");
    assert_eq!(started.filter(|e| e["session"] == got["sent"]["session"]).count(), 1, "{got}");

    // Replayed from the start: both turns once each, in order, no deltas, ids in order.
    let replay = got["replay"].as_array().unwrap();
    assert_eq!(replies(&got["replay"]), ["echo: first task", "echo: hello over grpc"], "{got}");
    assert!(replay.iter().all(|e| e["kind"] != "text.delta" && e.get("error").is_none()));
    let ids: Vec<u64> = replay.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.iter().all(|id| *id > 0), "{ids:?}");
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), ids.len());
    // Resumed after its first event: exactly the rest.
    assert_eq!(got["resumed_after"], replay[0]["id"]);
    let resumed = got["resumed"].as_array().unwrap();
    assert_eq!(resumed.as_slice(), &replay[1..], "{got}");
    // One session's turn.finished alone.
    let filtered = got["filtered"].as_array().unwrap();
    assert_eq!(replies(&got["filtered"]), ["echo: hello over grpc"], "{got}");
    assert!(filtered.iter().all(|e| e["session"] == sent["session"]), "{got}");

    // A worker run on the message's session; its key finds it again.
    let run = &got["run"];
    assert_eq!((&run["kind"], &run["duplicate"]), (&"worker".into(), &false.into()), "{got}");
    assert_eq!(got["run_again"]["execution_id"], run["execution_id"], "{got}");
    assert_eq!(got["run_again"]["duplicate"], true, "{got}");

    let errors = &got["errors"];
    for (case, status, code) in [
        ("no_token", "UNAUTHENTICATED", "missing_token"),
        ("bad_token", "UNAUTHENTICATED", "invalid_token"),
        ("read_only_spawn", "PERMISSION_DENIED", "forbidden"),
        ("read_only_send", "PERMISSION_DENIED", "forbidden"),
        ("rival_send", "NOT_FOUND", "agent_not_found"),
        ("rival_into_session", "NOT_FOUND", "session_not_found"),
        ("rival_trace", "NOT_FOUND", "agent_not_found"),
        ("rival_run", "NOT_FOUND", "session_not_found"),
        ("taken_handle", "ALREADY_EXISTS", "handle_taken"),
        ("bad_handle", "INVALID_ARGUMENT", "invalid_handle"),
        ("nothing_to_spawn", "INVALID_ARGUMENT", "invalid_request"),
        ("blank_task", "INVALID_ARGUMENT", "invalid_request"),
        ("no_kind", "INVALID_ARGUMENT", "invalid_request"),
        ("empty_text", "INVALID_ARGUMENT", "invalid_request"),
        ("unknown_kind", "INVALID_ARGUMENT", "invalid_request"),
        ("unknown_agent", "NOT_FOUND", "agent_not_found"),
        ("not_a_session", "INVALID_REQUEST_OR_NOT_FOUND", ""),
    ] {
        let error = &errors[case];
        if status == "INVALID_REQUEST_OR_NOT_FOUND" {
            assert!(
                error["status"] == "INVALID_ARGUMENT" || error["status"] == "NOT_FOUND",
                "{case}: {error}"
            );
            continue;
        }
        assert_eq!((&error["status"], &error["code"]), (&status.into(), &code.into()), "{case}");
        assert!(!error["message"].as_str().unwrap_or_default().is_empty(), "{case}: {error}");
    }
    // Refusals name what is wrong, and which scope a call needs.
    let forbidden = errors["read_only_spawn"]["message"].as_str().unwrap();
    assert!(forbidden.contains("Spawn") && forbidden.contains("admin"), "{forbidden}");
    // A task refused for being blank made no agent.
    assert_eq!(got["blank_made_no_agent"]["code"], "agent_not_found", "{got}");

    // The rival's own agent is untouched, and scout has its three messages' sessions.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sessions = runtime.block_on(server.get_json("/v1/sessions?agent=scout"));
    let platforms: Vec<&str> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["platform"].as_str().unwrap())
        .collect();
    assert!(platforms.contains(&"hub") && platforms.contains(&"grpc"), "{sessions}");
}

/// A trace held open ends, with `UNAUTHENTICATED`, once its token is revoked.
#[test]
fn a_trace_ends_when_its_token_is_revoked() {
    let Some(python) = python_clients("the AgentHub revocation test") else { return };
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let (watcher, id) = token(&env, "default", &["read"]);
    let port = free_port();
    let config = format!("server:\n  grpc:\n    listen: 127.0.0.1:{port}\n");
    write(&env.data_dir().join("clade.yaml"), &config);
    let server = env.serve(&[]);
    let address = format!("127.0.0.1:{port}");
    let marker = env.tmp.path().join("trace-open");
    let (proto, client, seen) = (proto_dir(), python.clone(), marker.clone());
    let tracing = std::thread::spawn(move || {
        let seen = seen.to_string_lossy().into_owned();
        run_client(&client, "hub_client.py", &["revoked", &proto, &address, &watcher, "ada", &seen])
    });
    // Messages until the trace has shown one: it is open and its token taken.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shown = || {
        if marker.exists() {
            return true;
        }
        let event = serde_json::json!({"agent": "ada", "text": "hi", "source": {"platform": "t", "channel": "c", "actor": "a"}});
        runtime.block_on(server.send("POST", "/v1/events", None, Some(event)));
        false
    };
    // One message a look: a trickle the trace can show, not a flood of turns.
    let every = std::time::Duration::from_millis(300);
    polled_blocking(PATIENCE, every, shown, |&shown| shown);
    assert!(marker.exists(), "the trace showed nothing");
    env.run(&["tokens", "revoke", &id]).ok();
    let got = tracing.join().unwrap();
    let ended = &got["ended"];
    assert_eq!(
        (&ended["status"], &ended["code"]),
        (&"UNAUTHENTICATED".into(), &"invalid_token".into()),
        "{got}"
    );
    // Ended by the open stream's own check, not refused at its start.
    assert!(ended["message"].as_str().unwrap().contains("the trace's token"), "{got}");
}

/// A token's traces count against its `streams_per_token`: one more is refused with
/// RESOURCE_EXHAUSTED and a `retry-after` trailer, and a closed trace gives its slot back.
#[test]
fn a_tokens_traces_stay_within_its_stream_quota() {
    let Some(python) = python_clients("the AgentHub stream quota test") else { return };
    let env = Env::new();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "ada"]).ok();
    let (watcher, _) = token(&env, "acme", &["read"]);
    let port = free_port();
    let config = format!(
        "server:\n  grpc:\n    listen: 127.0.0.1:{port}\ntenants:\n  acme:\n    quotas: {{ streams_per_token: 1 }}\n"
    );
    write(&env.data_dir().join("clade.yaml"), &config);
    let _server = env.serve(&[]);
    let address = format!("127.0.0.1:{port}");
    let got =
        run_client(&python, "hub_client.py", &["crowded", &proto_dir(), &address, &watcher, "ada"]);
    let second = &got["second"];
    assert_eq!(second["status"], "RESOURCE_EXHAUSTED", "{got}");
    assert_eq!(second["code"], "quota_exceeded", "{got}");
    assert!(second["message"].as_str().unwrap().contains("streams_per_token"), "{got}");
    assert!(second["retry_after"].as_str().is_some_and(|s| !s.is_empty()), "{got}");
    // Taken, it shows nothing and runs to its deadline: not refused.
    assert_eq!(got["after_close"], "DEADLINE_EXCEEDED", "a closed trace kept its slot: {got}");
}

#[test]
fn the_hub_serves_tls_and_refuses_plain_connections() {
    let Some(python) = python_clients("the AgentHub TLS test") else { return };
    let env = Env::new();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (env.tmp.path().join("hub.pem"), env.tmp.path().join("hub.key"));
    write(&cert, &certified.cert.pem());
    write(&key, &certified.signing_key.serialize_pem());
    let port = free_port();
    let config = format!(
        "server:\n  grpc:\n    listen: 127.0.0.1:{port}\n    tls:\n      cert: {}\n      key: ../hub.key\n",
        cert.display()
    );
    write(&env.data_dir().join("clade.yaml"), &config);
    let server = env.serve(&[]);
    let address = format!("localhost:{port}");
    let ca = cert.to_string_lossy().into_owned();
    let got =
        run_client(&python, "hub_client.py", &["tls", &proto_dir(), &address, &server.token, &ca]);
    assert_eq!(got["spawned"]["handle"], "sealed", "{got}");
    assert_eq!(replies(&got["trace"]), ["echo: over tls"], "{got}");
    assert_eq!(got["plain_to_tls"]["status"], "UNAVAILABLE", "{got}");
}

/// A key file that is not a key stops `clade serve` at its start, naming the setting; a port
/// taken too.
#[test]
fn a_bad_grpc_setting_stops_the_start_with_the_reason() {
    let env = Env::new();
    write(&env.tmp.path().join("bad.pem"), "not a certificate\n");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (config, expected) in [
        (
            "server:\n  grpc:\n    listen: 127.0.0.1:0\n    tls: { cert: ../bad.pem, key: ../bad.pem }\n".to_owned(),
            "server.grpc",
        ),
        (
            "server:\n  grpc:\n    listen: 127.0.0.1:0\n    tls: { cert: ../missing.pem, key: ../bad.pem }\n".to_owned(),
            "server.grpc.tls.cert",
        ),
        (format!("server:\n  grpc:\n    listen: 127.0.0.1:{port}\n"), "server.grpc.listen"),
        ("server:\n  grpc:\n    listen: nowhere\n".to_owned(), "server.grpc.listen"),
    ] {
        write(&env.data_dir().join("clade.yaml"), &config);
        let out = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        assert_ne!(out.code, 0, "{config}");
        assert!(out.stderr.contains(expected), "{config}: {}", out.stderr);
    }
}

/// The same operations over HTTP: an agent made with a task, and its trace as Server-Sent
/// Events, replayed from the start and filtered; the rival tenant reaches none of it.
#[test]
fn the_hub_over_http_spawns_and_traces() {
    let env = Env::new();
    let rival = ada_and_rival_bob(&env);
    let server = env.serve(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let created = http
            .post(format!("{}/v1/agents", server.url))
            .bearer_auth(&server.token)
            .json(&serde_json::json!({"handle": "courier", "task": "by http"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        let session = created["task"]["session_id"].as_str().unwrap().to_owned();
        assert!(created["task"]["event_id"].is_string(), "{created}");

        let trace = |query: &str, token: &str| {
            http.get(format!("{}/v1/agents/courier/events{query}", server.url))
                .bearer_auth(token)
                .send()
        };
        let stream = trace("?after=0&type=turn.finished", &server.token).await.unwrap();
        assert_eq!(stream.status(), 200);
        let text = read_until(stream, "echo: by http").await;
        assert!(text.contains("event: turn.finished"), "{text}");
        assert!(!text.contains("event: turn.started"), "filtered out: {text}");
        // Each event says which of the agent's sessions it is of.
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["session"], session.as_str(), "{text}");
        assert_eq!(data["data"]["reply"], "echo: by http", "{text}");

        for (query, token, status) in [
            ("?after=0", rival.as_str(), 404),
            ("?type=nope", server.token.as_str(), 400),
            ("?after=x", server.token.as_str(), 400),
            ("?session=00000000-0000-7000-8000-000000000000", server.token.as_str(), 404),
        ] {
            let refused = trace(query, token).await.unwrap();
            assert_eq!(refused.status(), status, "{query}");
        }
        // A task refused for its size makes no agent.
        let long = "x".repeat(70_000);
        let refused = http
            .post(format!("{}/v1/agents", server.url))
            .bearer_auth(&server.token)
            .json(&serde_json::json!({"handle": "wordy", "task": long}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let missing =
            http.get(format!("{}/v1/agents/wordy", server.url)).bearer_auth(&server.token);
        assert_eq!(missing.send().await.unwrap().status(), 404);
    });
}

/// An SSE body read until it holds `needle` (a test fails after 20 s without it).
async fn read_until(response: reqwest::Response, needle: &str) -> String {
    use futures::StreamExt as _;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while !text.contains(needle) {
            match body.next().await {
                Some(Ok(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), read).await;
    text
}

/// The gRPC server holds at most `server.max_connections` connections, given out as the HTTP
/// server's are: at the cap a newcomer takes the place of the oldest connection that never
/// made an authenticated call, while one that did keeps its place; one that sends nothing is
/// closed after `server.header_timeout_secs`; a place freed serves again.
#[test]
fn the_grpc_server_caps_connections_and_closes_silent_ones() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let env = Env::new();
    let port = free_port();
    let config = format!(
        "server:\n  max_connections: 3\n  header_timeout_secs: 1\n  grpc:\n    listen: 127.0.0.1:{port}\n"
    );
    write(&env.data_dir().join("clade.yaml"), &config);
    let server = env.serve(&[]);
    let connect = || {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp
    };
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    };
    let read_frame = |tcp: &mut std::net::TcpStream| -> Option<(u8, u8, Vec<u8>)> {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).ok()?;
        Some((head[3], head[4], payload))
    };
    // Served: the server acknowledges a client's SETTINGS (type 4, flag ACK), which it reads
    // after the preface.
    let served = |tcp: &mut std::net::TcpStream| {
        tcp.write_all(PREFACE).unwrap();
        tcp.write_all(&frame(4, 0, 0, &[])).unwrap();
        std::iter::from_fn(|| read_frame(tcp))
            .take(5)
            .any(|(kind, flags, _)| kind == 4 && flags == 1)
    };
    // How long the server takes to close a connection (reading past what it sends, its own
    // SETTINGS), if it does within 5 s.
    let closed_within = |tcp: &mut std::net::TcpStream| {
        let start = Instant::now();
        let mut buf = [0u8; 256];
        while start.elapsed() < Duration::from_secs(5) {
            match tcp.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    };
    // A connection answering a PING is open.
    let pings = |tcp: &mut std::net::TcpStream| {
        tcp.write_all(&frame(6, 0, 0, b"clade!!!")).is_ok()
            && std::iter::from_fn(|| read_frame(tcp))
                .take(20)
                .any(|(kind, flags, payload)| kind == 6 && flags == 1 && payload == b"clade!!!")
    };
    // A call with the operator's token, by hand: HPACK literals, no Huffman.
    let hpack = |headers: &[(&str, &str)]| {
        let mut block = Vec::new();
        let string = |block: &mut Vec<u8>, text: &str| {
            let mut len = text.len();
            if len < 127 {
                block.push(len as u8);
            } else {
                block.push(127);
                len -= 127;
                while len >= 128 {
                    block.push((len % 128) as u8 | 0x80);
                    len /= 128;
                }
                block.push(len as u8);
            }
            block.extend(text.as_bytes());
        };
        for (name, value) in headers {
            block.push(0);
            string(&mut block, name);
            string(&mut block, value);
        }
        block
    };
    let bearer = format!("Bearer {}", server.token);
    let call = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/clade.hub.v1.AgentHub/SendMessage"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("authorization", &bearer),
    ]);
    let mut trusted = connect();
    assert!(served(&mut trusted));
    trusted.write_all(&frame(4, 1, 0, &[])).unwrap();
    trusted.write_all(&frame(1, 4, 1, &call)).unwrap();
    trusted.write_all(&frame(0, 1, 1, &[0; 5])).unwrap();
    // The call is answered (an empty message is refused after the token is checked): its
    // trailers end the stream.
    let answered = std::iter::from_fn(|| read_frame(&mut trusted))
        .take(20)
        .any(|(kind, flags, _)| kind == 1 && flags & 1 == 1);
    assert!(answered, "the authenticated call was not answered");

    // Strangers fill the other places and take each other's: the trusted connection stays.
    let mut strangers: Vec<_> = (0..2).map(|_| connect()).collect();
    for tcp in &mut strangers {
        assert!(served(tcp), "a connection within the cap was not served");
    }
    let mut newcomer = connect();
    assert!(served(&mut newcomer), "a newcomer at the cap was not served");
    let closed = closed_within(&mut strangers[0]).expect("the oldest stranger kept its place");
    assert!(closed < Duration::from_secs(1), "closed only after {closed:?}");
    assert!(pings(&mut trusted), "the authenticated connection lost its place");

    drop((strangers, newcomer, trusted));
    std::thread::sleep(Duration::from_millis(200));
    let mut silent = connect();
    let closed = closed_within(&mut silent).expect("a silent connection stayed open");
    assert!(closed >= Duration::from_millis(500), "closed before its time: {closed:?}");
    let mut freed = connect();
    assert!(served(&mut freed), "a freed place did not serve");
}
