//! The web console at `/console`: driven in a real browser (Debian's Chromium through
//! Playwright for Python, `tests/clients/console_browser.py`), and its sign-in's cookie tried
//! from outside a browser (another origin, a forged CSRF token, a revoked token).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::support::{Env, Server, on_path, run_client, token, write};

/// Debian's Chromium (`chromium`), from the `PATH`.
fn chromium(test: &str) -> Option<PathBuf> {
    on_path("chromium", test, "run scripts/test, which installs Debian's chromium")
}

/// `alice`, whose shell commands wait for a person's approval, in the default tenant; `bob` in
/// the tenant `rival`, whose token (read and send) is returned.
fn alice_and_rival() -> (Env, String) {
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "bob"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        "tools:\n  approval_timeout_secs: 60\n  policy:\n    - { effect: ask, tool: shell.exec }\n",
    );
    let rival = token(&env, "rival", &["read", "send"]).0;
    (env, rival)
}

/// Signs in to the console with `token`: the cookie and the CSRF token.
async fn sign_in(server: &Server, token: &str) -> (reqwest::StatusCode, String, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/console/session", server.url))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .unwrap_or_default();
    (status, cookie, response.json().await.unwrap_or(Value::Null))
}

async fn with_cookie(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> u16 {
    answer_with_cookie(server, method, path, cookie, headers, json!({})).await.0
}

async fn answer_with_cookie(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url))
        .header("cookie", cookie)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The console in Chromium: sign-in, a live turn without a reload, pause and resume, an
/// approval, the other panels, replay of an exported trace, sign-out, and another tenant who
/// edits the URL to reach this tenant's agent and session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let test = "the console's browser test";
    let Some(python) = super::support::python_clients(test) else { return };
    let Some(chromium) = chromium(test) else { return };
    let (env, rival) = alice_and_rival();
    let server = env.serve(&[]);
    // A session with a turn, exported as a trace for the replay page.
    let (status, sent) = server
        .send(
            "POST",
            "/v1/events",
            None,
            Some(json!({ "agent": "alice", "text": "first", "wait": true,
                         "source": { "platform": "http", "channel": "api", "actor": "test" } })),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let session = sent["session_id"].as_str().unwrap().to_owned();
    // A schedule that fired, then was turned off, for the schedules panel's history.
    let job = json!({ "name": "tick", "schedule": "* * * * * *", "prompt": "tick" });
    let (status, made) = server.send("POST", "/v1/agents/alice/jobs", None, Some(job)).await;
    assert_eq!(status, 201, "{made}");
    let fired = super::support::eventually(async || {
        let (_, runs) = server.send("GET", "/v1/agents/alice/jobs/tick/runs", None, None).await;
        runs["items"].as_array().filter(|r| !r.is_empty()).map(|r| r.len())
    });
    assert!(fired.await.is_some(), "the schedule never fired");
    let off = Some(json!({ "enabled": false }));
    let (status, _) = server.send("PATCH", "/v1/agents/alice/jobs/tick", None, off).await;
    assert_eq!(status, 200);
    let trace = env.data_dir().join("trace.jsonl");
    let trace_path = trace.to_str().unwrap();
    env.run(&["trace", "export", "--session", &session, "--output", trace_path]).ok();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let got = tokio::task::spawn_blocking({
        let (url, token) = (server.url.clone(), server.token.clone());
        let shots = shots.to_str().unwrap().to_owned();
        move || {
            run_client(
                &python,
                "console_browser.py",
                &[
                    chromium.to_str().unwrap(),
                    &url,
                    &token,
                    &rival,
                    &session,
                    trace.to_str().unwrap(),
                    &shots,
                ],
            )
        }
    })
    .await
    .unwrap();

    assert!(got["bad_token"].as_str().unwrap().contains("token"), "{got}");
    assert_eq!(got["agents"], json!(["alice"]), "the tenant's own agents: {got}");
    assert!(got["who"].as_str().unwrap().contains("operator"), "{got}");
    let cookie = &got["cookie"][0];
    assert_eq!(
        (&cookie["name"], &cookie["httpOnly"], &cookie["sameSite"]),
        (&json!("clade_console"), &json!(true), &json!("Strict")),
        "{got}"
    );
    assert_eq!(got["script_sees_cookie"], "", "the page's script cannot read the cookie: {got}");
    assert_eq!(got["operator_in_rival"], json!(["bob"]), "{got}");
    assert!(got["operator_who"].as_str().unwrap().contains("looking into rival"), "{got}");
    assert!(got["live_turn"].as_str().unwrap().contains("hello console"), "{got}");
    assert_eq!(got["reloads"], 1, "the turn appeared without a reload: {got}");
    assert!(got["fires"].as_u64().unwrap() >= 1, "the schedule's history: {got}");
    assert!(got["schedule"].as_str().unwrap().contains("disabled"), "{got}");
    assert_eq!((&got["paused"], &got["resumed"]), (&json!(true), &json!(true)), "{got}");
    assert_eq!((&got["csrf_missing"], &got["csrf_wrong"]), (&json!(403), &json!(403)), "{got}");
    assert_eq!(got["still_running"], true, "a forged change changed nothing: {got}");
    assert!(got["approval_shown"].as_str().unwrap().contains("from-the-console"), "{got}");
    let approved = &got["approved_call"];
    assert_eq!((&approved["status"], &approved["is_error"]), (&json!(200), &json!(false)), "{got}");
    assert!(approved["content"].as_str().unwrap().contains("from-the-console"), "{got}");
    assert!(got["stop_shown"].as_str().unwrap().contains("model/0"), "{got}");
    let skipped = &got["skipped_turn"];
    assert_eq!(
        (&skipped["status"], &skipped["reply"]),
        (&json!(200), &json!("answered from the console")),
        "the console's answer stood for the model's: {got}"
    );
    assert_eq!(got["breakpoints_left"], json!([]), "{got}");
    assert!(got["lineage"].as_str().unwrap().contains("Made by a person"), "{got}");
    let calls = got["tool_calls"].as_array().unwrap();
    assert!(
        calls.iter().any(|c| c.as_str().unwrap().matches("in-the-log").count() >= 2),
        "the turn's call in the tool log, with its arguments and result: {got}"
    );
    let hours = got["usage_hours"].as_array().unwrap();
    assert!(
        hours.iter().skip(1).all(|h| h.as_str().unwrap().ends_with('h')) && hours.len() >= 2,
        "the heat map by hour: {got}"
    );
    assert!(got["session_turns"].as_u64().unwrap() >= 1, "{got}");
    let first = got["replay_first"].as_str().unwrap();
    assert!(first.starts_with("step 1 of "), "{got}");
    assert!(got["replay_second"].as_str().unwrap().starts_with("step 2 of "), "{got}");
    assert!(got["replay_corrupt"].as_str().unwrap().contains("line 1 is not JSON"), "{got}");
    assert!(got["replay_newer"].as_str().unwrap().contains("newer than this console"), "{got}");
    assert_eq!(got["after_sign_out"], 401, "{got}");
    assert_eq!(got["rival_agents"], json!(["bob"]), "{got}");
    assert!(got["rival_agent_page"].as_str().unwrap().contains("alice"), "{got}");
    assert!(got["rival_agent_page"].as_str().unwrap().starts_with("Not found"), "{got}");
    assert!(got["rival_session_page"].as_str().unwrap().starts_with("Not found"), "{got}");
    assert_eq!(got["rival_fetch"], 404, "{got}");
    assert_eq!(got["page_errors"], json!([]), "{got}");
    for panel in
        ["signin", "agents", "tenants", "agent", "approvals", "audit", "usage", "session", "replay"]
    {
        let shot = shots.join(format!("{panel}.png"));
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "no screenshot {shot:?}");
    }
}

/// The console's cookie outside a browser: refused from another origin and on a WebSocket
/// upgrade naming none, refused for a change without the CSRF token, and ended when its token
/// is revoked; a token that cannot read cannot sign in, and a bad body is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_cookie_is_taken_only_as_its_rules_say() {
    let (env, _rival) = alice_and_rival();
    let (reader, reader_id) = token(&env, "default", &["read"]);
    let (sender, _) = token(&env, "default", &["send"]);
    let server = env.serve(&[]);
    let host = server.url.trim_start_matches("http://").to_owned();

    let (status, _, body) = sign_in(&server, &sender).await;
    assert_eq!(status, 403, "a token that cannot read: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("read scope"), "{body}");
    let (status, _, body) = sign_in(&server, "clade_nope").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (401, Some("invalid_token")));
    assert!(body["error"]["message"].as_str().unwrap().contains("clade tokens create"), "{body}");
    let bad = reqwest::Client::new()
        .post(format!("{}/console/session", server.url))
        .header("content-type", "application/json")
        .body(r#"{"token": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let (status, cookie, me) = sign_in(&server, &reader).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!((&me["tenant"], &me["operator"]), (&json!("default"), &json!(false)), "{me}");
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    use reqwest::Method;
    assert_eq!(with_cookie(&server, Method::GET, "/v1/agents", &cookie, &[]).await, 200);
    let evil = [("origin", "http://evil.example")];
    assert_eq!(with_cookie(&server, Method::GET, "/v1/agents", &cookie, &evil).await, 403);
    let own = format!("http://{host}");
    let same = [("origin", own.as_str())];
    assert_eq!(with_cookie(&server, Method::GET, "/v1/agents", &cookie, &same).await, 200);
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    assert_eq!(with_cookie(&server, Method::GET, "/v1/ws", &cookie, &upgrade).await, 403);
    // A change: refused without the CSRF token; with it, the token's own scopes decide (a
    // read token may not pause).
    let pause = "/v1/agents/alice/pause";
    assert_eq!(with_cookie(&server, Method::POST, pause, &cookie, &[]).await, 403);
    let with_csrf = [("x-clade-csrf", csrf.as_str())];
    assert_eq!(with_cookie(&server, Method::POST, pause, &cookie, &with_csrf).await, 403);
    let (_, status) = server.send("GET", "/v1/agents/alice/status", None, None).await;
    assert!(status["paused"].is_null(), "nothing was paused: {status}");
    // A bearer token sent beside the cookie is the request's credential, as without it.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/agents", server.url))
        .header("cookie", &cookie)
        .bearer_auth("clade_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Only the operator's sign-in looks into another tenant.
    let view = "/console/session/tenant";
    let rival = json!({ "tenant": "rival" });
    let (status, _) =
        answer_with_cookie(&server, Method::PUT, view, &cookie, &with_csrf, rival.clone()).await;
    assert_eq!(status, 404, "a tenant's sign-in cannot look into another tenant");
    assert_eq!(with_cookie(&server, Method::GET, "/console/tenants", &cookie, &[]).await, 404);
    let (_, operator, me) = sign_in(&server, &server.token).await;
    assert_eq!(me["operator"], true, "{me}");
    let own_csrf = [("x-clade-csrf", me["csrf"].as_str().unwrap())];
    let (status, _) =
        answer_with_cookie(&server, Method::PUT, view, &operator, &[], rival.clone()).await;
    assert_eq!(status, 403, "no CSRF token");
    let nope = json!({ "tenant": "nope" });
    let (status, body) =
        answer_with_cookie(&server, Method::PUT, view, &operator, &own_csrf, nope).await;
    assert_eq!(status, 400, "{body}");
    let (status, me) =
        answer_with_cookie(&server, Method::PUT, view, &operator, &own_csrf, rival).await;
    assert_eq!((status, &me["viewing"]), (200, &json!("rival")), "{me}");
    let agents = answer_with_cookie(&server, Method::GET, "/v1/agents", &operator, &[], json!({}));
    let (status, agents) = agents.await;
    assert_eq!(status, 200);
    let handles: Vec<&str> =
        agents["items"].as_array().unwrap().iter().map(|a| a["handle"].as_str().unwrap()).collect();
    assert_eq!(handles, ["bob"], "{agents}");
    let alice = with_cookie(&server, Method::GET, "/v1/agents/alice", &operator, &[]).await;
    assert_eq!(alice, 404, "looking into rival, alice is not there");
    let (status, tenants) =
        answer_with_cookie(&server, Method::GET, "/console/tenants", &operator, &[], json!({}))
            .await;
    assert_eq!(status, 200);
    assert_eq!(tenants["items"].as_array().unwrap().len(), 2, "{tenants}");
    let back = json!({ "tenant": null });
    let (status, me) =
        answer_with_cookie(&server, Method::PUT, view, &operator, &own_csrf, back).await;
    assert_eq!((status, me.get("viewing")), (200, None), "{me}");
    assert_eq!(with_cookie(&server, Method::GET, "/v1/agents/alice", &operator, &[]).await, 200);

    // The token revoked: the cookie stands for nothing.
    env.run(&["tokens", "revoke", &reader_id]).ok();
    assert_eq!(with_cookie(&server, Method::GET, "/v1/agents", &cookie, &[]).await, 401);
    assert_eq!(with_cookie(&server, Method::GET, "/console/session", &cookie, &[]).await, 401);
    // A made-up sign-in.
    let made_up = "clade_console=0123456789abcdef";
    assert_eq!(with_cookie(&server, Method::GET, "/v1/agents", made_up, &[]).await, 401);

    // The page and its assets carry a policy that runs no inline script and no framing.
    let page = reqwest::get(format!("{}/console", server.url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    let missing = reqwest::get(format!("{}/console/assets/../../etc/passwd", server.url)).await;
    assert_ne!(missing.unwrap().status(), 200);
    let missing = reqwest::get(format!("{}/console/assets/secret.txt", server.url)).await;
    assert_eq!(missing.unwrap().status(), 404);
}
