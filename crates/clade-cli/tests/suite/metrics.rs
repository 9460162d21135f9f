//! `server.metrics`: Prometheus metrics on a listener of their own, read by the Prometheus
//! project's own Python parser (`prometheus_client`), never on the public port.

use serde_json::{Value, json};

use super::support::{Env, ada_and_rival_bob, free_port, python_clients, run_client, write};

/// The value of the sample `name` whose labels include `labels`, if there is one.
fn sample(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scraped["samples"].as_array().unwrap().iter().find_map(|s| {
        let matches = s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v);
        matches.then(|| s["value"].as_f64().unwrap())
    })
}

/// Turns, their time, model calls and the engine's and store's figures are scraped in the text
/// format the Prometheus parser reads; tenants past `max_tenants` are counted as `other`, and
/// the public port serves no metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_counted_by_tenant_within_a_cap_on_a_listener_of_their_own() {
    let Some(python) = python_clients("the metrics test") else { return };
    let env = Env::new();
    let rival = ada_and_rival_bob(&env);
    let port = free_port();
    let config = format!("server:\n  metrics:\n    listen: 127.0.0.1:{port}\n    max_tenants: 1\n");
    write(&env.data_dir().join("clade.yaml"), &config);
    let server = env.serve(&[]);
    let event = |agent: &str, text: &str| {
        json!({ "agent": agent, "text": text, "wait": true,
            "source": { "platform": "http", "channel": "c", "actor": "someone" } })
    };
    // Two turns of ada's: one finds tools, one calls a tool that does not exist.
    for text in [r#"/tool tools.find {"query":"memory"}"#, "/tool nope.tool {}"] {
        let (status, body) =
            server.send("POST", "/v1/events", None, Some(event("ada", text))).await;
        assert_eq!(status, 200, "{body}");
    }
    let bob = event("bob", "hi");
    let (status, body) = server.send("POST", "/v1/events", Some(&rival), Some(bob)).await;
    assert_eq!(status, 200, "{body}");

    let url = format!("http://127.0.0.1:{port}/metrics");
    let scraped = run_client(&python, "prometheus_scrape.py", &[&url]);
    assert!(scraped["content_type"].as_str().unwrap().starts_with("text/plain"), "{scraped}");
    let turns = |tenant| {
        sample(&scraped, "clade_turns_total", &[("tenant", tenant), ("status", "completed")])
    };
    assert_eq!(turns("default"), Some(2.0), "{scraped}");
    // The cap is one tenant: the second one seen is `other`, and the capping is counted.
    assert_eq!(turns("other"), Some(1.0), "{scraped}");
    assert_eq!(turns("rival"), None, "a tenant past the cap was named");
    assert!(sample(&scraped, "clade_metric_labels_capped_total", &[]).unwrap() >= 1.0);
    assert_eq!(scraped["types"]["clade_turn_seconds"], "histogram", "{scraped}");
    assert_eq!(sample(&scraped, "clade_turn_seconds_count", &[("tenant", "default")]), Some(2.0));
    assert_eq!(
        sample(&scraped, "clade_queue_wait_seconds_count", &[("tenant", "default")]),
        Some(2.0)
    );
    // Each of ada's turns called the model twice: for the tool call, and after its result.
    let calls = sample(&scraped, "clade_model_calls_total", &[("tenant", "default")]);
    assert_eq!(calls, Some(4.0), "{scraped}");
    let tool = |name, outcome| {
        let labels = [("tenant", "default"), ("tool", name), ("outcome", outcome)];
        sample(&scraped, "clade_tool_calls_total", &labels)
    };
    assert_eq!(tool("tools.find", "ok"), Some(1.0), "{scraped}");
    assert_eq!(tool("nope.tool", "error"), Some(1.0), "{scraped}");
    assert_eq!(sample(&scraped, "clade_turns_running", &[]), Some(0.0));
    assert!(sample(&scraped, "clade_sessions_active", &[]).unwrap() >= 1.0);
    assert!(sample(&scraped, "clade_store_commits_total", &[]).unwrap() > 0.0);
    assert!(sample(&scraped, "clade_process_resident_bytes", &[]).unwrap() > 1e6);
    assert_eq!(sample(&scraped, "clade_executions_open", &[("kind", "subagent")]), Some(0.0));
    // Turns are counted running, not as open executions.
    assert_eq!(sample(&scraped, "clade_executions_open", &[("kind", "turn")]), None);

    // The public port has no metrics, for any caller.
    let (status, _) = server.send("GET", "/metrics", None, None).await;
    assert_eq!(status, 404);
}

/// A metrics listener that cannot be had, or is another server's, stops `clade serve` or the
/// configuration check naming the setting.
#[test]
fn a_metrics_listener_that_cannot_be_had_is_refused_naming_the_setting() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = env.data_dir().join("clade.yaml");
    write(&yaml, "server:\n  metrics:\n    listen: nowhere\n");
    env.run(&["config", "validate"]).fails_with("server.metrics.listen");
    write(&yaml, "server:\n  listen: 127.0.0.1:7999\n  metrics:\n    listen: 127.0.0.1:7999\n");
    env.run(&["config", "validate"]).fails_with("a port of its own");
    write(&yaml, &format!("server:\n  metrics:\n    listen: 127.0.0.1:{port}\n"));
    let busy = env.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(busy.code, 0, "{}", busy.stdout);
    assert!(busy.stderr.contains("server.metrics.listen"), "{}", busy.stderr);
    drop(taken);
}
