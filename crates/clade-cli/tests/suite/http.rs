//! The HTTP API of the real binary: auth, agents, errors, isolation, logs.

use serde_json::{Value, json};

use super::support::{Env, Server};

struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        // No connection reuse: after an error the server may close a connection without reading
        // the rest of the body, and a reused connection would then fail on the client side.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Self { client, url: server.url.clone() }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null))
    }
}

/// Error bodies gathered for one snapshot, each under what was asked.
#[derive(Default)]
struct Snapshot(Vec<Value>);

impl Snapshot {
    #[track_caller]
    fn check(&mut self, request: &str, got: &(u16, Value), status: u16, code: &str) {
        assert_error(got, status, code);
        self.0.push(json!({ "request": request, "status": got.0, "body": got.1 }));
    }
}

#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{}", got.1);
    // What a client can look up itself, it is told to look up in the API's terms, never the
    // command line's (only an operator's CLI makes tokens, so that advice names it).
    if code.ends_with("_not_found") {
        assert!(!message.contains("`clade ") && !message.contains("--"), "{message}");
    }
}

#[tokio::test]
async fn health_openapi_and_auth() {
    let env = Env::new();
    let server = env.serve(&[]);
    let api = Api::new(&server);
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(api.call("GET", "/readyz", None, None).await.1["status"], "ready");
    let doc = api.call("GET", "/openapi.json", None, None).await.1;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/agents"]["post"].is_object());

    // The token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.data_dir().join("token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_error(&api.call("GET", "/v1/agents", None, None).await, 401, "missing_token");
    assert_error(
        &api.call("GET", "/v1/agents", Some("clade_nope"), None).await,
        401,
        "invalid_token",
    );
    assert_eq!(api.call("GET", "/v1/agents", Some(&server.token), None).await.0, 200);

    // A token revoked while the server runs stops working on the next call.
    let created = env.run(&["tokens", "create", "--name", "temp"]).ok();
    let temp = created.stdout.trim().to_owned();
    assert_eq!(api.call("GET", "/v1/agents", Some(&temp), None).await.0, 200);
    let list = env.run(&["tokens", "list", "--json"]).ok().json();
    let id = list.as_array().unwrap().iter().find(|t| t["name"] == "temp").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.run(&["tokens", "revoke", &id]).ok();
    assert_error(&api.call("GET", "/v1/agents", Some(&temp), None).await, 401, "invalid_token");
    assert_error(&api.call("GET", "/nope", None, None).await, 404, "route_not_found");
    assert_error(
        &api.call("PUT", "/v1/agents", Some(&server.token), None).await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn agents_crud_and_pagination() {
    let env = Env::new();
    let server = env.serve(&[]);
    let api = Api::new(&server);
    let t = Some(server.token.as_str());
    let (status, ada) =
        api.call("POST", "/v1/agents", t, Some(json!({"handle": "ada", "name": "Ada"}))).await;
    assert_eq!(status, 201, "{ada}");
    assert_eq!(ada["handle"], "ada");
    assert_eq!(ada["name"], "Ada");
    assert_eq!(ada["template"], "default");
    assert!(ada["created_at"].as_i64().unwrap() > 1_700_000_000_000);
    for h in ["b1", "b2", "b3"] {
        assert_eq!(api.call("POST", "/v1/agents", t, Some(json!({"handle": h}))).await.0, 201);
    }
    // The CLI sees what the API created (same store).
    assert_eq!(env.run(&["agents", "show", "ada", "--json"]).ok().json()["id"], ada["id"]);

    let (_, page) = api.call("GET", "/v1/agents?limit=3", t, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_cursor"], "b2");
    let (_, rest) = api.call("GET", "/v1/agents?limit=3&cursor=b2", t, None).await;
    assert_eq!(rest["items"][0]["handle"], "b3");
    assert!(rest.get("next_cursor").is_none());

    assert_eq!(api.call("GET", "/v1/agents/ada", t, None).await.1, ada);
    assert_eq!(api.call("DELETE", "/v1/agents/ada", t, None).await.0, 204);
    assert_error(&api.call("GET", "/v1/agents/ada", t, None).await, 404, "agent_not_found");
    let gone = api.call("DELETE", "/v1/agents/ada", t, None).await;
    assert_error(&gone, 404, "agent_not_found");
    assert_eq!(
        gone.1["error"]["message"], "agent \"ada\" not found; list agents with GET /v1/agents",
        "the API's own words for a missing agent"
    );
    // The CLI words the same failure its own way.
    let cli = env.run(&["agents", "show", "ada"]);
    assert_ne!(cli.code, 0);
    assert_eq!(
        cli.stderr.trim(),
        "error: agent \"ada\" not found; list agents with `clade agents list`"
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let env = Env::new();
    let server = env.serve(&[]);
    let api = Api::new(&server);
    let t = Some(server.token.as_str());
    // Every error body below goes into one snapshot: a change of wording or shape shows.
    let mut errors = Snapshot::default();
    api.call("POST", "/v1/agents", t, Some(json!({"handle": "ada"}))).await;
    errors.check(
        "POST /v1/agents: a handle that exists",
        &api.call("POST", "/v1/agents", t, Some(json!({"handle": "ada"}))).await,
        409,
        "handle_taken",
    );
    errors.check(
        "POST /v1/agents: a handle that breaks the rules",
        &api.call("POST", "/v1/agents", t, Some(json!({"handle": "Bad!"}))).await,
        400,
        "invalid_handle",
    );
    errors.check(
        "POST /v1/agents: no handle",
        &api.call("POST", "/v1/agents", t, Some(json!({"name": "x"}))).await,
        400,
        "invalid_request",
    );
    let unknown =
        api.call("POST", "/v1/agents", t, Some(json!({"handle": "x", "colour": 1}))).await;
    errors.check("POST /v1/agents: an unknown field", &unknown, 400, "invalid_request");
    assert!(unknown.1["error"]["message"].as_str().unwrap().contains("colour"));
    errors.check(
        "POST /v1/agents: an unknown template",
        &api.call("POST", "/v1/agents", t, Some(json!({"handle": "x", "template": "nope"}))).await,
        404,
        "template_not_found",
    );
    errors.check(
        "POST /v1/agents: a name with a newline",
        &api.call("POST", "/v1/agents", t, Some(json!({"handle": "x", "name": "a\nb"}))).await,
        400,
        "invalid_request",
    );
    let zero = api.call("GET", "/v1/agents?limit=0", t, None).await;
    errors.check("GET /v1/agents?limit=0", &zero, 400, "invalid_request");
    let many = api.call("GET", "/v1/agents?limit=many", t, None).await;
    errors.check("GET /v1/agents?limit=many", &many, 400, "invalid_request");
    let token = server.token.as_str();
    errors.check(
        "POST /v1/agents: JSON cut short",
        &api.raw("/v1/agents", token, "application/json", b"{\"handle\":".to_vec()).await,
        400,
        "invalid_request",
    );
    errors.check(
        "POST /v1/agents: an array, not an object",
        &api.raw("/v1/agents", token, "application/json", b"[\"x\"]".to_vec()).await,
        400,
        "invalid_request",
    );
    errors.check(
        "POST /v1/agents: not UTF-8",
        &api.raw("/v1/agents", token, "application/json", vec![0xff, 0xfe, b'{']).await,
        400,
        "invalid_request",
    );
    errors.check(
        "POST /v1/agents: text/plain",
        &api.raw("/v1/agents", token, "text/plain", b"{}".to_vec()).await,
        415,
        "unsupported_media_type",
    );
    let huge = format!("{{\"handle\":\"x\",\"name\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    errors.check(
        "POST /v1/agents: a 2 MiB body",
        &api.raw("/v1/agents", token, "application/json", huge.into_bytes()).await,
        413,
        "payload_too_large",
    );
    errors.check(
        "GET /v1/agents: no token",
        &api.call("GET", "/v1/agents", None, None).await,
        401,
        "missing_token",
    );
    errors.check(
        "GET /v1/agents: a token nobody issued",
        &api.call("GET", "/v1/agents", Some("clade_nope"), None).await,
        401,
        "invalid_token",
    );
    errors.check(
        "GET /v1/agents/nobody",
        &api.call("GET", "/v1/agents/nobody", t, None).await,
        404,
        "agent_not_found",
    );
    let read = env.run(&["tokens", "create", "--name", "reader", "--scope", "read"]).ok();
    let read = read.stdout.trim().to_owned();
    errors.check(
        "POST /v1/agents: a read-only token",
        &api.call("POST", "/v1/agents", Some(&read), Some(json!({"handle": "y"}))).await,
        403,
        "forbidden",
    );
    insta::assert_json_snapshot!("api_error_bodies", errors.0);
    // Still serving, and nothing half-created.
    let (_, list) = api.call("GET", "/v1/agents", t, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tenants_cannot_see_each_other() {
    let env = Env::new();
    env.run(&["tenants", "create", "acme"]).ok();
    let acme_token =
        env.run(&["--tenant", "acme", "tokens", "create"]).ok().stdout.trim().to_owned();
    let server = env.serve(&[]);
    let api = Api::new(&server);
    let default = Some(server.token.as_str());
    let acme = Some(acme_token.as_str());
    assert_eq!(
        api.call("POST", "/v1/agents", acme, Some(json!({"handle": "secret-agent"}))).await.0,
        201
    );
    // Another tenant gets exactly what a missing agent gets.
    let theirs = api.call("GET", "/v1/agents/secret-agent", default, None).await;
    let missing = api.call("GET", "/v1/agents/never-existed", default, None).await;
    assert_eq!(theirs.0, missing.0);
    assert_eq!(theirs.1["error"]["code"], missing.1["error"]["code"]);
    assert_eq!(api.call("DELETE", "/v1/agents/secret-agent", default, None).await.0, 404);
    assert_eq!(api.call("GET", "/v1/agents", default, None).await.1["items"], json!([]));
    // The same handle may exist in both.
    assert_eq!(
        api.call("POST", "/v1/agents", default, Some(json!({"handle": "secret-agent"}))).await.0,
        201
    );
    assert_eq!(api.call("GET", "/v1/agents/secret-agent", acme, None).await.0, 200);
}

#[tokio::test]
async fn json_logs_name_tenant_and_agent() {
    let env = Env::new();
    let server = env.serve(&["--log-format", "json"]);
    let api = Api::new(&server);
    api.call("POST", "/v1/agents", Some(&server.token), Some(json!({"handle": "logged"}))).await;
    let logs = server.stop();
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "no JSON log lines: {logs}");
    let created = lines
        .iter()
        .find(|l| l["fields"]["message"] == "agent created")
        .unwrap_or_else(|| panic!("no 'agent created' line: {logs}"));
    assert_eq!(created["span"]["tenant"], "default", "{created}");
    assert_eq!(created["span"]["agent"], "logged", "{created}");
}

#[tokio::test]
async fn serve_refuses_a_taken_port() {
    let env = Env::new();
    let server = env.serve(&[]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Another data dir (the same one would be refused first, as served already), migrated
    // beforehand so that the error is all `serve` prints.
    let other = Env::new();
    other.run(&["agents", "list"]).ok();
    other.run(&["serve", "--listen", &addr]).fails_with("cannot listen on");
}

/// The OpenAPI fuzzer the suite runs: `CLADE_SCHEMATHESIS` (set by `scripts/test`, which
/// installs schemathesis from PyPI into `target/schemathesis`), else one on the `PATH`. `None`,
/// said loudly, when there is none, except under `CI=true`, where that fails the test.
fn schemathesis() -> Option<std::path::PathBuf> {
    let found =
        std::env::var_os("CLADE_SCHEMATHESIS").map(std::path::PathBuf::from).or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("schemathesis"))
                    .find(|p| p.is_file())
            })
        });
    super::support::required_tool(
        found,
        "schemathesis",
        "the OpenAPI fuzz test",
        "run scripts/test, which installs it, or pip install schemathesis",
    )
}

/// The API does what its OpenAPI document says, as schemathesis (an OpenAPI fuzzer we did
/// not write, driven only by `/openapi.json`) finds: every status and body documented, every
/// request the document calls valid accepted, every invalid one refused with a 4xx, no 5xx,
/// and (its stateful phase, following the document's links) what a call creates found by the
/// calls that read it. 100 examples an operation; any seed may be asked for. Its
/// configuration (`tests/schemathesis.toml`) names the few refusals a schema cannot
/// express, and the test points the routes that name a session or a turn at real ones, so the
/// fuzzer gets past the 404 into their handlers. The WebSocket route is left out: a handshake
/// is not a request and response, and `suite::hardening` tests it with a WebSocket client.
#[test]
fn the_api_matches_its_openapi_document() {
    let Some(fuzzer) = schemathesis() else { return };
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["--agent", "ada", "cron", "create", "nightly", "0 3 * * *", "tidy up"]).ok();
    let server = env.serve(&[]);
    // A session with a turn that called a tool: its journal has every common kind of step.
    let event = json!({ "agent": "ada", "text": "/tool echo {\"text\":\"hi\"}", "wait": true,
        "source": { "platform": "http", "channel": "fuzz", "actor": "me" } });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, answer) = runtime.block_on(server.send("POST", "/v1/events", None, Some(event)));
    assert_eq!(status, 200, "{answer}");
    let (session, turn) =
        (answer["session_id"].as_str().unwrap(), answer["turn_id"].as_str().unwrap());
    let steps =
        runtime.block_on(server.get_json(&format!("/v1/sessions/{session}/turns/{turn}/steps")));
    assert!(steps["items"].as_array().unwrap().len() >= 3, "{steps}");
    let mut config = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml"),
    )
    .unwrap();
    // Not the event stream: an SSE response never ends.
    for operation in [
        "GET /v1/sessions/{id}",
        "PATCH /v1/sessions/{id}",
        "GET /v1/sessions/{id}/turns",
        "POST /v1/sessions/{id}/resume",
        "POST /v1/sessions/{id}/cancel",
    ] {
        config += &format!(
            "\n[[operations]]\ninclude-name = \"{operation}\"\nparameters = {{ \"path.id\" = \"{session}\" }}\n"
        );
    }
    config += &format!(
        "\n[[operations]]\ninclude-name = \"GET /v1/sessions/{{id}}/turns/{{turn}}/steps\"\n\
         parameters = {{ \"path.id\" = \"{session}\", \"path.turn\" = \"{turn}\" }}\n"
    );
    let config_file = env.data_dir().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let config = config_file;
    // Any seed must pass. The suite runs a fixed one, so a change is judged by what it changed
    // (this one found the last mismatch); `CLADE_FUZZ_SEED=<n>` replays another,
    // `CLADE_FUZZ_SEED=random` draws one (printed), and `CLADE_FUZZ_EXAMPLES` runs more.
    let seed = match std::env::var("CLADE_FUZZ_SEED").as_deref() {
        Ok("random") => rand::random_range(1..1_000_000u32).to_string(),
        Ok(seed) => seed.to_owned(),
        Err(_) => "59632".to_owned(),
    };
    let examples = std::env::var("CLADE_FUZZ_EXAMPLES").unwrap_or_else(|_| "100".to_owned());
    eprintln!("schemathesis: seed {seed}, {examples} examples an operation");
    let out = std::process::Command::new(&fuzzer)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", server.url)])
        .args(["--header", &format!("Authorization: Bearer {}", server.token)])
        .args(["--checks", "all", "--max-examples", &examples, "--seed", &seed])
        .args(["--exclude-path", "/v1/ws", "--no-color"])
        // Its cache goes beside the test's data, not into the source tree.
        .current_dir(env.data_dir())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).replace(&server.token, "<token>");
    assert!(
        out.status.success(),
        "schemathesis (seed {seed}: replay with CLADE_FUZZ_SEED={seed}) found mismatches between the API and its document:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation but the WebSocket upgrade and the document itself (which schemathesis
    // leaves out of what it tests).
    let operations = clade_gateway::routes::OPERATIONS.len() - 2;
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "not every operation was tested:\n{report}"
    );
    // The document's links were followed: calls chained from what others created.
    assert!(report.contains("✅ Stateful"), "no stateful phase ran:\n{report}");
}
