//! Remote tool hosts through the real binary: `clade cron-service` serves the cron tools over
//! the remote tool protocol to a gateway whose scheduler is off; an agent's calls reach it
//! through the gateway's tool path, acting for the calling agent only; its fires run in the
//! gateway, woken over the admin socket; it passes `clade tool-host check`; and the admin socket
//! answers the operator's status and reload.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{Value, json};

use super::support::{Env, eventually, read, token, write};

const TOKEN_VAR: (&str, &str) = ("CRON_TOKEN", "cron-s3cret");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_service_hosts_the_cron_tools_and_its_fires_run_in_the_gateway() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "evil"]).ok();
    env.run(&["--tenant", "evil", "agents", "create", "mallory"]).ok();
    let (evil, _) = token(&env, "evil", &["admin"]);
    // Jobs that fire every second, for the test's pace: the service reads it at its start.
    const FAST_JOBS: &str = "tenants:\n  \"*\":\n    quotas: { cron_min_interval_secs: 1 }\n";
    write(&env.data_dir().join("clade.yaml"), FAST_JOBS);
    let cron = env
        .spawn_service(
            &["cron-service", "--listen", "127.0.0.1:0", "--token-env", "CRON_TOKEN"],
            &[TOKEN_VAR],
        )
        .expect("the cron service printed nothing");
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "{FAST_JOBS}scheduler:\n  enabled: false\ntool_hosts:\n  cron:\n    url: {}\n    token_env: CRON_TOKEN\n    agents: ['*']\n",
            cron.url
        ),
    );
    let server = env.serve_with(&[], &[TOKEN_VAR]);

    // The cron tools are the host's: described by its manifest.
    let tools = server.get_json("/v1/agents/ada/tools").await;
    let names: Vec<&str> =
        tools["items"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    for name in ["cron.list", "cron.create", "cron.enable", "cron.remove"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    let say = |agent: &str, text: &str| {
        json!({ "agent": agent, "text": text, "wait": true,
            "source": { "platform": "http", "channel": "dm", "actor": "grace" } })
    };
    let create = r#"/tool cron.create {"name":"remind","schedule":"* * * * * *","prompt":"/reply time to stretch"}"#;
    let (status, answer) = server.send("POST", "/v1/events", None, Some(say("ada", create))).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["session_id"].as_str().unwrap().to_owned();
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("\"remind\"") && !reply.contains("error"), "{reply}");
    // Arguments its manifest's schema refuses are refused here, before the host is asked.
    let bad = r#"/tool cron.create {"name":"bad","schedule":5,"prompt":"x"}"#;
    let (_, answer) = server.send("POST", "/v1/events", None, Some(say("ada", bad))).await;
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("invalid arguments for") && reply.contains("/schedule"), "{reply}");
    // The host acted for the calling agent and session: the job is ada's, aimed at her chat.
    let job = server.get_json("/v1/agents/ada/jobs/remind").await;
    assert_eq!(job["target"], format!("origin:{session}"), "{job}");

    // The cron service fires it; the gateway, woken over its admin socket, runs the turn.
    let answered = eventually(async || {
        let turns = server.all_turns(&session).await;
        let stretch = |t: &Value| t["reply"] == "time to stretch" && t["status"] == "completed";
        turns.iter().any(stretch).then_some(())
    });
    assert!(answered.await.is_some(), "the job fired by the cron service never ran in the gateway");

    // Another tenant's agent reaches the same host and sees only its own (no) jobs.
    let (status, listed) = server
        .send("POST", "/v1/events", Some(&evil), Some(say("mallory", "/tool cron.list")))
        .await;
    assert_eq!(status, 200, "{listed}");
    let text = listed["reply"]["text"].as_str().unwrap();
    assert!(!text.contains("remind") && text.contains("[]"), "{text}");
    let remove = r#"/tool cron.remove {"name":"remind"}"#;
    let (_, removed) =
        server.send("POST", "/v1/events", Some(&evil), Some(say("mallory", remove))).await;
    assert!(removed["reply"]["text"].as_str().unwrap().contains("no job"), "{removed}");
    assert_eq!(server.get_json("/v1/agents/ada/jobs/remind").await["name"], "remind");

    // Each call went through the gateway's audit log, like a built-in's.
    let audit = server.get_json("/v1/audit?limit=200").await;
    let audited = audit["items"].as_array().unwrap();
    assert!(
        audited.iter().any(|r| r["tool"] == "cron.create"),
        "no audit record of the host's tool: {audit}"
    );

    // The service passes the protocol's conformance test, and fails it without its token.
    let check = env
        .command()
        .env(TOKEN_VAR.0, TOKEN_VAR.1)
        .args(["tool-host", "check", &cron.url, "--token-env", "CRON_TOKEN", "--call", "cron.list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}{}", String::from_utf8_lossy(&check.stderr));
    assert!(stdout.contains("passed all 10 conformance checks"), "{stdout}");
    let check = env.command().args(["tool-host", "check", &cron.url]).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success() && stdout.contains("FAIL  manifest"), "{stdout}");
    assert!(String::from_utf8_lossy(&check.stderr).contains("failed"), "{stdout}");
}

/// A tool host that is down when the gateway starts is left out, then joins when it comes up,
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_host_down_at_start_joins_when_it_comes_up() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "scheduler:\n  enabled: false\ntool_hosts:\n  cron:\n    url: http://127.0.0.1:{port}/\n    token_env: CRON_TOKEN\n"
        ),
    );
    let server = env.serve_with(&[], &[TOKEN_VAR]);
    let has_cron = || async {
        let tools = server.get_json("/v1/agents/ada/tools").await;
        tools["items"].as_array().unwrap().iter().any(|t| t["name"] == "cron.list")
    };
    assert!(!has_cron().await, "a host that is down offers no tools");
    let listen = format!("127.0.0.1:{port}");
    let _cron = env
        .spawn_service(
            &["cron-service", "--listen", &listen, "--token-env", "CRON_TOKEN"],
            &[TOKEN_VAR],
        )
        .expect("the cron service printed nothing");
    let joined = eventually(async || has_cron().await.then_some(())).await;
    assert!(joined.is_some(), "the host's tools were never offered after it came up");
    let (status, answer) = server
        .send("POST", "/v1/agents/ada/tools/cron.list/call", None, Some(json!({ "arguments": {} })))
        .await;
    assert_eq!((status, answer["content"].clone()), (200, json!("[]")), "{answer}");
    let logs = server.stop();
    assert!(logs.contains("tool source joined"), "{logs}");
}

#[tokio::test]
async fn the_admin_socket_answers_the_operator_and_no_one_else() {
    let env = Env::new();
    let server = env.serve(&[]);
    let socket = env.data_dir().join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin socket is {mode:o}");

    let status = env.run(&["gateway", "status", "--json"]).ok().json();
    assert_eq!(status["pid"], server.child.id(), "{status}");
    assert!(server.url.contains(status["listen"].as_str().unwrap()), "{status}");
    assert_eq!(status["config_revision"], Value::Null);

    // A revision applied beside the gateway is in force once `reload` returns.
    let file = env.data_dir().join("next.yaml");
    write(&file, "sessions:\n  max_queued: 7\n");
    env.run(&["config", "apply", file.to_str().unwrap()]).ok();
    let reloaded = env.run(&["gateway", "reload"]).ok();
    assert!(reloaded.stdout.contains("revision 1"), "{}", reloaded.stdout);
    let status = env.run(&["gateway", "status", "--json"]).ok().json();
    assert_eq!(status["config_revision"], 1, "{status}");

    // Garbage on the socket is answered with an error naming what to send; no HTTP route
    // reaches an admin action.
    use std::io::{BufRead as _, Write as _};
    let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    raw.write_all(b"{\"action\":\"shutdown\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&raw).read_line(&mut line).unwrap();
    assert!(line.contains("\"type\":\"error\"") && line.contains("not an admin request"), "{line}");
    for path in
        ["/admin", "/v1/admin/status", "/v1/gateway/reload", "/pair", "/v1/pair", "/pair/confirm"]
    {
        let (status, _) =
            server.send("POST", path, None, Some(json!({ "action": "status" }))).await;
        assert_eq!(status, 404, "{path}");
    }

    // Without a gateway, the command says what to do.
    drop(server);
    env.run(&["gateway", "status"]).fails_with("is `clade serve` running");
}

/// A scheduler in another process (`clade cron-service`) takes its fires from the gateway's
/// bucket of the tenant's events, over the admin socket: the API and the fires together stay
/// within `events_per_second`, not twice it.
#[tokio::test]
async fn a_separate_schedulers_fires_take_from_the_gateways_event_rate() {
    use std::io::{BufRead as _, Write as _};
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        "tenants:\n  \"*\":\n    quotas: { events_per_second: 0.001, burst: 2 }\n",
    );
    let server = env.serve(&[]);
    let tenants = env.run(&["tenants", "list", "--json"]).ok().json();
    let tenant = tenants[0]["id"].as_str().unwrap().to_owned();
    let socket = env.data_dir().join("admin.sock");
    let take = |tenant: &str| {
        let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let asked = json!({ "action": "take_events", "tenant": tenant, "events": 1 });
        raw.write_all(format!("{asked}\n").as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&raw).read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let event = json!({ "agent": "ada", "text": "hi",
        "source": { "platform": "http", "channel": "dm", "actor": "grace" } });

    // A fire takes one of the two; the API gets the other, and then none.
    assert_eq!(take(&tenant), json!({ "type": "taken", "admitted": true }));
    let (status, answer) = server.send("POST", "/v1/events", None, Some(event.clone())).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = server.send("POST", "/v1/events", None, Some(event)).await;
    assert_eq!(status, 429, "{answer}");
    // And the fires wait too.
    assert_eq!(take(&tenant), json!({ "type": "taken", "admitted": false }));
    // A tenant id that is not one is named.
    let refused = take("acme");
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("not a tenant id"), "{refused}");
}

/// An OpenAPI document's operations as an agent's tools: denied until a grant allows them,
/// then each request built from the arguments (path, query, header, JSON body) and sent with
/// the configured credentials; loopback reached only with `private_network`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openapi_documents_operations_are_tools_under_policy_and_the_egress_guard() {
    use axum::extract::{Path, Query, RawQuery};
    use axum::http::HeaderMap;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/v1/pets/{id}",
        get(|Path(id): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            let trace = headers.get("x-trace").and_then(|v| v.to_str().ok()).unwrap_or("");
            axum::Json(json!({ "id": id, "query": query, "auth": auth, "trace": trace }))
        })
        .put(|Path(id): Path<String>, Query(_q): Query<Value>, body: String| async move {
            axum::Json(json!({ "updated": id, "body": body }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(
        &env.data_dir().join("pets.yaml"),
        &format!(
            r##"openapi: 3.0.3
info: {{ title: Pets, version: "1" }}
servers: [{{ url: "{api}" }}]
paths:
  /pets/{{petId}}:
    parameters: [{{ name: petId, in: path, required: true, schema: {{ type: string }} }}]
    get:
      operationId: showPet
      summary: One pet
      parameters:
        - {{ name: verbose, in: query, schema: {{ type: boolean }} }}
        - {{ $ref: "#/components/parameters/Trace" }}
    put:
      operationId: updatePet
      requestBody:
        content: {{ application/json: {{ schema: {{ type: object }} }} }}
components:
  parameters:
    Trace: {{ name: X-Trace, in: header, schema: {{ type: string }} }}
"##
        ),
    );
    // The API is added to a serving gateway: its tools come with the new revision.
    let server = env.serve_with(&[], &[("PETS_AUTH", "Bearer pk-123")]);
    let next = env.data_dir().join("next.yaml");
    write(
        &next,
        "openapi:\n  pets:\n    document: pets.yaml\n    headers_env: { Authorization: PETS_AUTH }\n",
    );
    let applied = env.run(&["config", "apply", next.to_str().unwrap()]).ok();
    assert!(!applied.stdout.contains("at the next start: openapi"), "{}", applied.stdout);
    let show = eventually(async || {
        let tools = server.get_json("/v1/agents/ada/tools").await;
        let tools = tools["items"].as_array().unwrap();
        tools.iter().find(|t| t["name"] == "openapi.pets.showpet").cloned()
    });
    let show = show.await.unwrap_or_default();
    assert!(show.is_object(), "openapi.pets.showpet never came with the new revision");
    assert_eq!(show["input_schema"]["required"], json!(["petId"]), "{show}");

    let call = |tool: &'static str, arguments: Value| {
        let server = &server;
        async move {
            server
                .send(
                    "POST",
                    &format!("/v1/agents/ada/tools/{tool}/call"),
                    None,
                    Some(json!({ "arguments": arguments })),
                )
                .await
        }
    };
    let arguments = json!({ "petId": "7 & 8", "verbose": true, "X-Trace": "t-1" });
    // It touches the network: denied without a rule.
    let (_, denied) = call("openapi.pets.showpet", arguments.clone()).await;
    assert!(denied.to_string().contains("denied"), "{denied}");
    // Allowed, but loopback needs private_network.
    env.run(&["--agent", "ada", "grants", "add", "--tool", "openapi.pets.*"]).ok();
    let (_, guarded) = call("openapi.pets.showpet", arguments.clone()).await;
    assert!(guarded.to_string().contains("private_network"), "{guarded}");
    env.run(&["--agent", "ada", "grants", "add", "--tool", "openapi.pets.*", "--private-network"])
        .ok();
    let (status, answer) = call("openapi.pets.showpet", arguments).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["content"].as_str().unwrap_or_default();
    let body: Value = serde_json::from_str(content.split("\n\n").nth(1).unwrap_or("null")).unwrap();
    assert_eq!(body["id"], "7 & 8", "{content}");
    assert_eq!(body["query"], "verbose=true");
    assert_eq!(body["auth"], "Bearer pk-123");
    assert_eq!(body["trace"], "t-1");
    let (_, updated) =
        call("openapi.pets.updatepet", json!({ "petId": "7", "body": { "name": "Rex" } })).await;
    assert!(
        updated["content"].as_str().unwrap_or_default().contains(r#"{\"name\":\"Rex\"}"#),
        "{updated}"
    );
    // Arguments of the wrong type, or missing, are refused against the document's schemas.
    for (arguments, named) in
        [(json!({ "petId": "1", "verbose": "loud" }), "/verbose"), (json!({}), "petId")]
    {
        let (_, refused) = call("openapi.pets.showpet", arguments).await;
        let content = refused["content"].as_str().unwrap_or_default();
        assert!(content.contains("invalid arguments for") && content.contains(named), "{refused}");
    }
    // Arguments the document does not have are refused before any request.
    let (_, refused) = call("openapi.pets.showpet", json!({ "petId": "1", "host": "evil" })).await;
    assert!(refused.to_string().contains("unknown argument"), "{refused}");
    let audit = server.get_json("/v1/audit?limit=100").await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|r| r["tool"] == "openapi.pets.showpet"),
        "{audit}"
    );
}

/// Pairing through the real binaries: `clade pair tool` makes the gateway challenge the cron
/// service from its own process; the service's tools are offered at once and after a restart
/// with no token configured; a service that comes back with another key is refused, audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_tool_host_is_offered_without_its_token_until_its_key_changes() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(&env.data_dir().join("clade.yaml"), "scheduler:\n  enabled: false\n");
    let service = |identity: &str| {
        env.spawn_service(
            &[
                "cron-service",
                "--listen",
                "127.0.0.1:0",
                "--token-env",
                "CRON_TOKEN",
                "--identity",
                identity,
            ],
            &[TOKEN_VAR],
        )
        .expect("the cron service printed nothing")
    };
    let first_key = env.data_dir().join("first.key");
    let cron = service(first_key.to_str().unwrap());
    let server = env.serve(&[]);
    let names = |tools: &Value| -> Vec<String> {
        tools["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        !names(&server.get_json("/v1/agents/ada/tools").await).contains(&"cron.list".to_owned())
    );

    let tested = env.run(&["pair", "test"]).ok();
    assert!(
        tested.stdout.contains("its key: ") && tested.stdout.contains("paired components: 0"),
        "{}",
        tested.stdout
    );
    // Without the token, or with the wrong one, nothing is paired.
    env.run(&["pair", "tool", &cron.url, "cron", "--token-env", "NOT_SET_ANYWHERE"])
        .fails_with("is not set");
    let wrong = env
        .command()
        .env("WRONG", "nope")
        .args(["pair", "tool", &cron.url, "cron", "--token-env", "WRONG"])
        .output()
        .unwrap();
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let paired = env
        .command()
        .env(TOKEN_VAR.0, TOKEN_VAR.1)
        .args(["pair", "tool", &cron.url, "cron", "--token-env", "CRON_TOKEN"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&paired.stdout);
    assert!(paired.status.success(), "{said}{}", String::from_utf8_lossy(&paired.stderr));
    assert!(
        said.contains("paired tool host cron") && said.contains("4 tools offered now"),
        "{said}"
    );
    // Offered at once, and used like any tool.
    assert!(
        names(&server.get_json("/v1/agents/ada/tools").await).contains(&"cron.list".to_owned())
    );
    let (status, answer) = server
        .send("POST", "/v1/agents/ada/tools/cron.list/call", None, Some(json!({ "arguments": {} })))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "[]", "{answer}");
    let listed = env.run(&["pair", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["name"], "cron");
    assert_eq!(listed[0]["endpoint"], cron.url.as_str());

    // A restart: the gateway connects with its key alone (no tool_hosts, no token).
    drop(server);
    let server = env.serve(&[]);
    assert!(
        names(&server.get_json("/v1/agents/ada/tools").await).contains(&"cron.list".to_owned())
    );

    // The service comes back at the same place with another key: refused, and audited.
    let url = cron.url.clone();
    drop(cron);
    drop(server);
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap().to_owned();
    let other_key = env.data_dir().join("other.key");
    let _replaced = env
        .spawn_service(
            &[
                "cron-service",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--token-env",
                "CRON_TOKEN",
                "--identity",
                other_key.to_str().unwrap(),
            ],
            &[TOKEN_VAR],
        )
        .expect("the replacement printed nothing");
    let server = env.serve(&[]);
    assert!(
        !names(&server.get_json("/v1/agents/ada/tools").await).contains(&"cron.list".to_owned())
    );
    let audit = server.get_json("/v1/audit?limit=500").await;
    let kinds: Vec<&str> =
        audit["items"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"peer.paired"), "{kinds:?}");
    assert!(kinds.contains(&"peer.refused"), "{kinds:?}");
    let logs = server.stop();
    assert!(logs.contains("did not prove it holds the key"), "{logs}");
    env.run(&["pair", "remove", "cron"]).ok();
    env.run(&["pair", "remove", "cron"]).fails_with("no component named");
}

/// A remote host's progress frames reach the session's live subscribers as `tool.progress`,
/// before the call's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_progress_reaches_live_subscribers() {
    use axum::routing::{get, post};
    use clade_protocol::remote_tools::{FRAMES_CONTENT_TYPE, PROTOCOL};
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let host = axum::Router::new()
        .route(
            "/manifest",
            get(|| async {
                axum::Json(json!({
                    "protocol": PROTOCOL,
                    "host": { "name": "slow", "version": "1" },
                    "heartbeat_secs": 5,
                    "tools": [{ "name": "slow.count", "description": "Counts slowly",
                        "input_schema": { "type": "object" }, "effect": "pure", "touches_host": false }],
                }))
            }),
        )
        .route("/health", get(|| async { axum::Json(json!({ "status": "ok", "protocol": PROTOCOL, "tools": 1 })) }))
        .route(
            "/calls",
            post(|| async {
                let frames = [
                    json!({ "type": "progress", "message": "halfway", "fraction": 0.5 }),
                    json!({ "type": "result", "content": "counted" }),
                ];
                let body: String = frames.iter().map(|f| format!("{f}\n")).collect();
                ([(axum::http::header::CONTENT_TYPE, FRAMES_CONTENT_TYPE)], body)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, host).await });

    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!("tool_hosts:\n  slow:\n    url: http://{address}/\n    agents: ['*']\n"),
    );
    let server = env.serve(&[]);
    let url = format!("{}/v1/ws", server.url.replace("http://", "ws://"));
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", server.token).parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Text(json!({ "type": "subscribe", "agent": "ada" }).to_string().into()))
        .await
        .unwrap();
    assert_eq!(read(&mut socket).await["type"], "subscribed");
    let body = json!({ "agent": "ada", "text": "/tool slow.count", "source": { "platform": "http", "channel": "dm", "actor": "grace" } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    let mut seen = Vec::new();
    loop {
        let frame = read(&mut socket).await;
        let kind = frame["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "tool.progress" {
            assert_eq!(frame["data"]["name"], "slow.count", "{frame}");
            assert_eq!(frame["data"]["message"], "halfway", "{frame}");
            assert_eq!(frame["data"]["fraction"], 0.5, "{frame}");
        }
        seen.push(kind.clone());
        if kind == "turn.finished" {
            break;
        }
    }
    let at = |kind: &str| seen.iter().position(|k| k == kind);
    assert!(at("tool.progress").is_some(), "{seen:?}");
    assert!(at("tool.progress") < at("tool.result"), "{seen:?}");
}

/// A separate scheduler's fire of a job whose target is a flow records the run in the store
/// and asks the gateway, over the admin socket, to drive it: the run ends in the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_schedulers_flow_fires_run_in_the_gateway() {
    let env = Env::new();
    env.run(&["agents", "create", "writer"]).ok();
    write(&env.data_dir().join("clade.yaml"), "scheduler:\n  enabled: false\n");
    let server = env.serve(&[]);
    let flow = "name: beat\nagents:\n  w: { handle: writer }\ntasks:\n  - id: say\n    agent: w\n    prompt: /reply beat\n";
    let (status, _) = server.send("POST", "/v1/flows", None, Some(json!({ "flow": flow }))).await;
    assert_eq!(status, 201);
    let job = json!({ "name": "beat", "schedule": "* * * * * *", "target": "flow:beat",
        "prompt": "{}" });
    let (status, answer) = server.send("POST", "/v1/agents/writer/jobs", None, Some(job)).await;
    assert_eq!(status, 201, "{answer}");
    let _cron = env
        .spawn_service(
            &["cron-service", "--listen", "127.0.0.1:0", "--token-env", "CRON_TOKEN"],
            &[TOKEN_VAR],
        )
        .expect("the cron service printed nothing");
    let done = eventually(async || {
        let runs = server.get_json("/v1/agents/writer/jobs/beat/runs").await;
        let items = runs["items"].as_array()?.clone();
        items.into_iter().find(|run| run["flow_run_status"] == "completed")
    })
    .await;
    let done = done.unwrap_or_else(|| panic!("no fire's run ended in the gateway"));
    let id = done["flow_run_id"].as_str().unwrap();
    let run = server.get_json(&format!("/v1/flows/runs/{id}")).await;
    assert_eq!(run["scheduled_by"]["job"], "beat", "{run}");
}
