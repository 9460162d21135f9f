//! Webhooks and the Standard Webhooks specification: what Clade delivers verifies with that
//! specification's own library (`standardwebhooks`, PyPI), unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::support::{Env, python_clients, run_client, serve_hook, write};

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
    for _ in 0..200 {
        if !standard_log.lock().unwrap().is_empty() && !plain_log.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let got = run_client(&python, "standard_webhooks.py", &[file.to_str().unwrap()]);
    for result in got.as_array().unwrap() {
        assert_eq!(result["verified"], true, "{got}");
        assert_eq!(result["type"], "turn.finished", "{got}");
        assert_eq!(result["tampered_refused"], true, "{got}");
    }
}
