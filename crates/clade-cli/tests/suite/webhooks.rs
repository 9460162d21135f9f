//! Webhooks and the Standard Webhooks specification: what Clade delivers verifies with that
//! specification's own library (`standardwebhooks`, PyPI), unchanged.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::support::{Env, eventually, python_clients, run_client, serve_hook, write};

/// A receiver that records every delivery's body and signature headers.
async fn recorder(log: Arc<Mutex<Vec<(Value, String)>>>) -> String {
    serve_hook(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let log = log.clone();
        async move {
            let pick = |name: &str| {
                headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
            };
            let kept = json!({
                "webhook-id": pick("webhook-id"),
                "webhook-timestamp": pick("webhook-timestamp"),
                "webhook-signature": pick("webhook-signature"),
                "x-clade-signature": pick("x-clade-signature"),
            });
            log.lock().unwrap().push((kept, String::from_utf8_lossy(&body).into_owned()));
            axum::http::StatusCode::OK
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_verify_with_the_standard_webhooks_library() {
    let Some(python) = python_clients("the Standard Webhooks test") else { return };
    // A secret in the specification's `whsec_` form, and a plain one (its own key).
    let standard_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (standard_log, plain_log) = (Arc::default(), Arc::default());
    let standard = recorder(Arc::clone(&standard_log)).await;
    let plain = recorder(Arc::clone(&plain_log)).await;
    let mut env = Env::new();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "subscribers:\n  - {{ name: standard, url: \"{standard}\", secret_env: STANDARD_SECRET, events: [turn.finished] }}\n  - {{ name: plain, url: \"{plain}\", secret_env: PLAIN_SECRET, events: [turn.finished] }}\n"
        ),
    );
    env.vars.push(("STANDARD_SECRET".into(), standard_secret.into()));
    env.vars.push(("PLAIN_SECRET".into(), "s3cret".into()));
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let event = json!({ "agent": "ada", "text": "hi", "source": { "platform": "http", "channel": "c", "actor": "me" }, "wait": true });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(event)).await;
    assert_eq!(status, 200, "{answer}");
    let both_delivered = async || {
        let standard = !standard_log.lock().unwrap().is_empty();
        (standard && !plain_log.lock().unwrap().is_empty()).then_some(())
    };
    eventually(both_delivered).await;
    let mut deliveries = Vec::new();
    for (log, secret, raw) in
        [(&standard_log, standard_secret, false), (&plain_log, "s3cret", true)]
    {
        let (headers, body) = log.lock().unwrap().first().cloned().expect("nothing delivered");
        let id = serde_json::from_str::<Value>(&body).unwrap()["id"].clone();
        assert_eq!(headers["webhook-id"], id, "webhook-id is the event's id: {headers}");
        // Clade's own signature still comes along.
        let clade = clade_runtime::outbox::signature(secret.as_bytes(), body.as_bytes());
        assert_eq!(headers["x-clade-signature"], clade.as_str(), "{headers}");
        deliveries.push(json!({ "secret": secret, "raw": raw, "headers": headers, "body": body }));
    }
    let file = env.data_dir().join("deliveries.json");
    std::fs::write(&file, serde_json::to_vec(&deliveries).unwrap()).unwrap();
    let got = run_client(&python, "standard_webhooks.py", &["verify", file.to_str().unwrap()]);
    for result in got.as_array().unwrap() {
        assert_eq!(result["verified"], true, "{got}");
        assert_eq!(result["type"], "turn.finished", "{got}");
        assert_eq!(result["tampered_refused"], true, "{got}");
    }
}

/// Posts `body` to a hook with `headers`: status and JSON answer.
async fn post_hook(url: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The Standard Webhooks headers of `body`, signed by the specification's own library at
/// `timestamp`.
fn signed_by_library(
    python: &std::path::Path,
    env: &Env,
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    let file = env.data_dir().join(format!("body-{id}.txt"));
    std::fs::write(&file, body).unwrap();
    let got = run_client(
        python,
        "standard_webhooks.py",
        &["sign", secret, id, &timestamp.to_string(), file.to_str().unwrap()],
    );
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", got["webhook-signature"].as_str().unwrap().to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_to_a_tenants_hook_become_its_agents_events_once() {
    let Some(python) = python_clients("the inbound hook test") else { return };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut env = Env::new();
    write(
        &env.data_dir().join("clade.yaml"),
        "tenants:\n  acme:\n    hooks:\n      gh: { agent: ada, secret_env: GH_SECRET, mode: wait, session: /repo }\n      plain: { agent: ada, secret_env: PLAIN_SECRET, scheme: clade }\n  rival:\n    hooks:\n      steal: { agent: ada, secret_env: RIVAL_SECRET, mode: wait }\n",
    );
    env.vars.push(("GH_SECRET".into(), secret.into()));
    env.vars.push(("PLAIN_SECRET".into(), "s3cret".into()));
    env.vars.push(("RIVAL_SECRET".into(), "rival-secret".into()));
    for (tenant, agent) in [("acme", "ada"), ("rival", "bob")] {
        env.run(&["tenants", "create", tenant]).ok();
        env.run(&["--tenant", tenant, "agents", "create", agent]).ok();
    }
    let server = env.serve(&[]);
    let gh = format!("{}/hooks/acme/gh", server.url);
    #[allow(clippy::disallowed_methods)] // The test signs as the sender's clock says.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;

    // Signed by the specification's library, mode wait: the agent's answer comes back.
    let body = r#"{"repo": "acme/site", "action": "opened"}"#;
    let headers = signed_by_library(&python, &env, secret, "msg_1", now, body);
    let (status, first) = post_hook(&gh, body, &headers).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["reply"]["text"], format!("echo: {body}"), "{first}");
    // Delivered again (same webhook-id): the same event, and no second turn.
    let (status, again) = post_hook(&gh, body, &headers).await;
    assert!(status == 200 || status == 202, "{again}");
    assert_eq!(again["event_id"], first["event_id"], "{again}");
    let session = first["session_id"].as_str().unwrap();
    let (_, turns) = super::support::request(
        &server.url,
        &super::support::token(&env, "acme", &["read"]).0,
        "GET",
        &format!("/v1/sessions/{session}/turns"),
        None,
    )
    .await;
    assert_eq!(turns["items"].as_array().unwrap().len(), 1, "{turns}");
    // The body's `repo` names the session: another repo, another session.
    let other = r#"{"repo": "acme/api"}"#;
    let headers2 = signed_by_library(&python, &env, secret, "msg_2", now, other);
    let (status, second) = post_hook(&gh, other, &headers2).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["session_id"], first["session_id"], "{second}");

    // Refused: a changed body, a stale timestamp, no signature, another hook's secret.
    let (status, answer) = post_hook(&gh, &format!("{body} "), &headers).await;
    assert_eq!((status, &answer["error"]["code"]), (401, &json!("invalid_signature")), "{answer}");
    let stale = signed_by_library(&python, &env, secret, "msg_3", now - 600, body);
    let (status, answer) = post_hook(&gh, body, &stale).await;
    assert_eq!((status, &answer["error"]["code"]), (401, &json!("invalid_signature")), "{answer}");
    let (status, answer) = post_hook(&gh, body, &[]).await;
    assert_eq!((status, &answer["error"]["code"]), (401, &json!("invalid_signature")), "{answer}");

    let foreign = clade_runtime::signing::StandardKey::new(b"rival-secret").unwrap();
    let forged = vec![
        ("webhook-id", "msg_4".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", foreign.sign("msg_4", now, body.as_bytes())),
    ];
    assert_eq!(post_hook(&gh, body, &forged).await.0, 401);

    // Clade's own scheme, async: stored at once. Its signature covers the body alone, so the
    // body names the request: a replay, whatever key it claims, is the same event.
    let plain = format!("{}/hooks/acme/plain", server.url);
    let signature = clade_runtime::signing::clade_signature(b"s3cret", b"ping");
    let headers = vec![("x-clade-signature", signature.clone())];
    let (status, stored) = post_hook(&plain, "ping", &headers).await;
    assert_eq!(status, 202, "{stored}");
    let replayed = vec![("x-clade-signature", signature), ("idempotency-key", "fresh".to_owned())];
    let (status, repeated) = post_hook(&plain, "ping", &replayed).await;
    assert_eq!(status, 202, "{repeated}");
    assert_eq!(repeated["event_id"], stored["event_id"], "{repeated}");
    assert_eq!(post_hook(&plain, "pong", &headers).await.0, 401);

    // No such hook, another tenant's name for it, no such tenant: refused as a bad signature
    // is, with the same words, so a stranger cannot tell which exist.
    let (_, bad) = post_hook(&gh, body, &[]).await;
    for path in ["/hooks/acme/nope", "/hooks/rival/gh", "/hooks/nobody/gh"] {
        let (status, answer) = post_hook(&format!("{}{path}", server.url), body, &headers2).await;
        assert_eq!(status, 401, "{path}: {answer}");
        assert_eq!(answer, bad, "{path}");
    }
    // A tenant's hook reaches only its own agents: rival's names `ada`, which rival has not.
    let key = clade_runtime::signing::StandardKey::new(b"rival-secret").unwrap();
    let steal = vec![
        ("webhook-id", "msg_5".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", key.sign("msg_5", now, b"hand it over")),
    ];
    let (status, answer) =
        post_hook(&format!("{}/hooks/rival/steal", server.url), "hand it over", &steal).await;
    assert_eq!((status, &answer["error"]["code"]), (404, &json!("agent_not_found")), "{answer}");
    let (acme_read, _) = super::support::token(&env, "acme", &["read"]);
    let (_, sessions) =
        super::support::request(&server.url, &acme_read, "GET", "/v1/sessions?agent=ada", None)
            .await;
    let items = sessions["items"].as_array().unwrap();
    let mut actors: Vec<&str> = items.iter().map(|s| s["actor"].as_str().unwrap()).collect();
    actors.sort();
    assert_eq!(actors, ["gh", "gh", "plain"], "acme's own hooks' sessions, none of rival's");

    // Not text: refused, nothing stored.
    let bytes = [0xff_u8, 0xfe];
    let response = reqwest::Client::new()
        .post(&plain)
        .header("x-clade-signature", clade_runtime::signing::clade_signature(b"s3cret", &bytes))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // The gateway's log says which check failed; the caller was told no more.
    let logs = server.stop();
    assert!(logs.contains("hook request refused") && logs.contains("clock"), "{logs}");
    assert!(logs.contains("no such hook"), "{logs}");
}

#[test]
fn hooks_are_listed_and_secrets_made_in_the_standard_form() {
    let env = Env::new();
    write(
        &env.data_dir().join("clade.yaml"),
        "tenants:\n  acme:\n    hooks:\n      gh: { agent: ada, secret_env: CLADE_TEST_UNSET_SECRET, mode: wait }\n",
    );
    let listed = env.run(&["hooks", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["path"], "/hooks/acme/gh", "{listed}");
    assert_eq!(listed[0]["scheme"], "standard", "{listed}");
    assert_eq!(listed[0]["mode"], "wait", "{listed}");
    assert_eq!(listed[0]["secret_set"], false, "{listed}");
    let table = env.run(&["hooks", "list"]).ok().stdout;
    assert!(table.contains("CLADE_TEST_UNSET_SECRET (NOT SET)"), "{table}");
    let first = env.run(&["hooks", "secret"]).ok().stdout.trim().to_owned();
    let second = env.run(&["hooks", "secret"]).ok().stdout.trim().to_owned();
    assert!(first.starts_with("whsec_") && first != second, "{first} {second}");
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.decode(&first["whsec_".len()..]).unwrap();
    assert_eq!(key.len(), 32);
    clade_runtime::signing::StandardKey::new(first.as_bytes()).unwrap();
}
