//! `server.metrics`: Prometheus metrics on a listener of their own, read by the Prometheus
//! project's own Python parser (`prometheus_client`), never on the public port.

use serde_json::{Value, json};

use super::support::{
    Env, ada_and_rival_bob, free_port, polled_within, python_clients, run_client, serve_hook, write,
};

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
    let mut env = env;
    let rival = ada_and_rival_bob(&env);
    let port = free_port();
    let hook = serve_hook(|| async { axum::http::StatusCode::OK }).await;
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    let config = format!(
        "server:\n  metrics:\n    listen: 127.0.0.1:{port}\n    max_tenants: 1\nsubscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n"
    );
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
    // The webhook subscriber is sent the turns' events after they commit.
    let scraped = polled_within(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(200),
        async || run_client(&python, "prometheus_scrape.py", &[&url]),
        |scraped| {
            let lag = "clade_outbox_delivery_lag_seconds_count";
            sample(scraped, lag, &[("subscriber", "hook")]).is_some_and(|n| n >= 3.0)
        },
    )
    .await;
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
    // Latencies: a tool's run (the unknown tool never ran), a model's first output (each of
    // ada's calls streams), the outbox's delivery to the subscriber (waited for above).
    let ran = [("tenant", "default"), ("tool", "tools.find")];
    assert_eq!(sample(&scraped, "clade_tool_run_seconds_count", &ran), Some(1.0), "{scraped}");
    let unknown = [("tenant", "default"), ("tool", "nope.tool")];
    let never = sample(&scraped, "clade_tool_run_seconds_count", &unknown).unwrap_or(0.0);
    assert_eq!(never, 0.0, "{scraped}");
    let first = [("tenant", "default")];
    let firsts = sample(&scraped, "clade_model_first_token_seconds_count", &first);
    assert_eq!(firsts, Some(4.0), "{scraped}");
    assert_eq!(scraped["types"]["clade_outbox_delivery_lag_seconds"], "histogram");
    assert!(sample(&scraped, "clade_runtime_tasks_alive", &[]).unwrap() > 0.0);
    let fsync_p99 = sample(&scraped, "clade_store_commit_seconds", &[("quantile", "0.99")]);
    assert!(fsync_p99.is_some_and(|s| s > 0.0), "{scraped}");

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

/// Metrics are on by default, at 127.0.0.1:9464: a gateway that finds the port taken (another
/// gateway on the machine) starts without them and says so; `enabled: false` turns them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_on_by_default_and_a_taken_default_port_is_no_failure() {
    let default = clade_config::ServerConfig::default().metrics_listener().unwrap();
    assert_eq!((default.config.listen.as_str(), default.required), ("127.0.0.1:9464", false));
    // Held here, or by another test's gateway: taken either way.
    let _held = std::net::TcpListener::bind("127.0.0.1:9464");
    let env = Env::new();
    let server = env.serve(&[]);
    let (status, _) = server.send("GET", "/v1/agents", Some(&server.token), None).await;
    assert_eq!(status, 200, "the gateway runs without its metrics");
    let said = server.stop();
    assert!(said.contains("no metrics: the default port is taken"), "{said}");
    assert!(said.contains("server.metrics.enabled: false"), "{said}");

    let off = Env::new();
    write(&off.data_dir().join("clade.yaml"), "server:\n  metrics:\n    enabled: false\n");
    let quiet = off.serve(&[]);
    let (status, _) = quiet.send("GET", "/v1/agents", Some(&quiet.token), None).await;
    assert_eq!(status, 200);
    let said = quiet.stop();
    assert!(!said.contains("no metrics"), "{said}");
}
