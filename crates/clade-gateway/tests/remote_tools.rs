//! The remote tool protocol end to end in process: our host (`tool_host`) passes the
//! conformance test, a host that breaks the protocol fails the checks that name what it broke,
//! the gateway's client names what a bad host did (garbage, silence, no result, a refusal, a
//! foreign protocol), and a repeated idempotency key runs a tool once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clade_gateway::tool_host::{HostOptions, router};
use clade_tools::remote::conformance::{self, Target};
use clade_tools::remote::{Host, HostSpec};
use clade_tools::{CallContext, EffectClass, Registry, Tool, ToolResult};
use futures::future::BoxFuture;
use serde_json::{Value, json};

async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/")
}

/// A tool that counts its runs and takes a while, so repeats can overlap it; it reports its
/// progress halfway.
struct Counter(Arc<AtomicUsize>);

impl Tool for Counter {
    fn name(&self) -> &str {
        "count"
    }
    fn description(&self) -> &str {
        "Counts its runs."
    }
    fn input_schema(&self) -> Value {
        json!({ "type": "object", "properties": { "label": { "type": "string" } } })
    }
    fn effect(&self) -> EffectClass {
        EffectClass::Idempotent
    }
    fn resource_argument(&self) -> Option<&str> {
        Some("label")
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
            if let Some(progress) = &ctx.progress {
                progress.report("counted, now waiting", Some(0.5));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            if args["label"] == "fail" {
                return Err("the label says fail".into());
            }
            Ok(format!("run {n} of {}", args["label"]))
        })
    }
}

async fn our_host(token: Option<&str>, runs: Arc<AtomicUsize>) -> String {
    let mut registry = Registry::new();
    registry.register(Arc::new(clade_tools::builtin::Echo));
    registry.register(Arc::new(Counter(runs)));
    let options = HostOptions {
        name: "test host".into(),
        version: "1".into(),
        token: token.map(str::to_owned),
        heartbeat: Duration::from_millis(100),
        remembered: 100,
        identity: None,
        peers_file: None,
        memory: None,
    };
    listen(router(registry, options).unwrap()).await
}

fn failed(checks: &[conformance::Check]) -> Vec<&'static str> {
    checks.iter().filter(|c| c.outcome.is_err()).map(|c| c.name).collect()
}

#[tokio::test]
async fn our_host_passes_the_conformance_test() {
    let url = our_host(Some("s3cret"), Arc::default()).await;
    let target = Target {
        url,
        token: Some("s3cret".into()),
        sample: Some(("echo".into(), json!({ "text": "hi" }))),
        caller: None,
        timeout: Duration::from_secs(5),
    };
    let checks = conformance::run(&target).await;
    let names: Vec<_> = checks.iter().map(|c| c.name).collect();
    for name in ["manifest", "health", "version", "auth", "bad_request", "unknown_tool"] {
        assert!(names.contains(&name), "{name} was not checked: {names:?}");
    }
    for name in ["invalid_arguments", "call", "replay", "conflict"] {
        assert!(names.contains(&name), "{name} was not checked: {names:?}");
    }
    assert!(failed(&checks).is_empty(), "{checks:#?}");
}

#[tokio::test]
async fn a_host_that_breaks_the_protocol_fails_the_checks_that_name_it() {
    // It speaks another version, takes any token, answers calls with garbage, and forgets keys.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new()
        .route(
            "/manifest",
            get(|| async {
                axum::Json(json!({ "protocol": "clade.remote-tools/2", "heartbeat_secs": 1,
                    "host": { "name": "bad", "version": "0" }, "tools": [] }))
            }),
        )
        .route("/health", get(|| async { "fine" }))
        .route(
            "/calls",
            post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move { format!("{{\"type\":\"result\",\"content\":\"{n}\"}}\n") }
            }),
        );
    let url = listen(app).await;
    let target = Target {
        url,
        token: Some("anything".into()),
        sample: Some(("echo".into(), json!({}))),
        caller: None,
        timeout: Duration::from_secs(5),
    };
    let checks = conformance::run(&target).await;
    let failed = failed(&checks);
    for name in [
        "manifest",
        "health",
        "version",
        "auth",
        "bad_request",
        "unknown_tool",
        "invalid_arguments",
        "call",
        "replay",
        "conflict",
    ] {
        assert!(failed.contains(&name), "{name} passed against a broken host: {checks:#?}");
    }
    let manifest = checks.iter().find(|c| c.name == "manifest").unwrap();
    assert!(format!("{:?}", manifest.outcome).contains("clade.remote-tools/2"), "{manifest:?}");
    let call = checks.iter().find(|c| c.name == "call").unwrap();
    assert!(format!("{:?}", call.outcome).contains("content type"), "{call:?}");
}

/// A host whose calls answer `body` (a stream of chunks; `None` hangs after them).
async fn host_answering(chunks: Vec<&'static str>, hang: bool, status: u16) -> String {
    let manifest = json!({ "protocol": "clade.remote-tools/1", "heartbeat_secs": 1,
        "host": { "name": "scripted", "version": "0" },
        "tools": [{ "name": "work", "description": "", "effect": "pure",
            "input_schema": { "type": "object" } }] });
    let app =
        Router::new().route("/manifest", get(move || async move { axum::Json(manifest) })).route(
            "/calls",
            post(move || {
                let chunks = chunks.clone();
                async move {
                    let sent = futures::stream::iter(
                        chunks
                            .into_iter()
                            .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::from(c))),
                    );
                    let body = if hang {
                        Body::from_stream(futures::StreamExt::chain(
                            sent,
                            futures::stream::pending(),
                        ))
                    } else {
                        Body::from_stream(sent)
                    };
                    (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response()
                }
            }),
        );
    listen(app).await
}

/// The tools of the host at `url`, known as `name`, which takes no token, offered to every
/// agent.
async fn tools_at(name: &str, url: String) -> Vec<Arc<dyn Tool>> {
    let spec = HostSpec {
        name: name.into(),
        url,
        token: None,
        agents: vec!["*".into()],
        timeout: Duration::from_secs(20),
        peer: None,
    };
    Host::connect(spec).await.unwrap().1
}

/// The call's outcome, its error as the model reads it.
async fn call_work(url: String) -> Result<String, String> {
    let tools = tools_at("scripted", url).await;
    let ctx =
        CallContext { idempotency_key: "k".into(), call_id: "c".into(), ..Default::default() };
    tools[0].call(json!({}), &ctx).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_client_names_what_a_bad_host_did() {
    let garbage = call_work(
        host_answering(vec!["{\"type\":\"heartbeat\"}\n", "<html>oops\n"], false, 200).await,
    )
    .await;
    let error = garbage.unwrap_err();
    assert!(
        error.contains("tool host scripted")
            && error.contains("line 2")
            && error.contains("not a call frame"),
        "{error}"
    );

    let unfinished = call_work(
        host_answering(vec!["{\"type\":\"progress\",\"message\":\"half\"}\n"], false, 200).await,
    )
    .await;
    assert!(unfinished.unwrap_err().contains("without a result"));

    let cut = call_work(host_answering(vec!["{\"type\":\"result\",\"con"], false, 200).await).await;
    assert!(cut.unwrap_err().contains("inside a frame"));

    let silent =
        call_work(host_answering(vec!["{\"type\":\"heartbeat\"}\n"], true, 200).await).await;
    assert!(silent.unwrap_err().contains("stayed silent for 3 s"));

    let refused = call_work(
        host_answering(
            vec![r#"{"error":{"code":"unauthorized","message":"no token"}}"#],
            false,
            401,
        )
        .await,
    )
    .await;
    let error = refused.unwrap_err();
    assert!(error.contains("401") && error.contains("unauthorized: no token"), "{error}");

    let not_protocol = call_work(host_answering(vec!["Bad Gateway"], false, 502).await).await;
    assert!(not_protocol.unwrap_err().contains("without a protocol error body"));

    // A tool's own failure is for the model, word for word; progress and heartbeats are skipped.
    let failed = call_work(
        host_answering(
            vec![r#"{"type":"error","code":"tool_failed","message":"disk full"}"#, "\n"],
            false,
            200,
        )
        .await,
    )
    .await;
    assert_eq!(failed, Err("disk full".into()));
    let ok = call_work(host_answering(
        vec!["{\"type\":\"progress\",\"message\":\"a\",\"fraction\":0.5}\n{\"type\":\"heartbeat\"}\n", "{\"type\":\"result\",\"content\":\"done\",\"extra\":true}\n"],
        false,
        200,
    ).await)
    .await;
    assert_eq!(ok, Ok("done".into()));
}

#[tokio::test]
async fn a_host_of_another_protocol_or_with_bad_tools_is_refused_at_connect() {
    for (manifest, needle) in [
        (
            json!({ "protocol": "clade.remote-tools/9", "heartbeat_secs": 1, "host": { "name": "x", "version": "0" }, "tools": [] }),
            "speaks",
        ),
        (
            json!({ "protocol": "clade.remote-tools/1", "heartbeat_secs": 1, "host": { "name": "x", "version": "0" },
            "tools": [{ "name": "Shell Exec", "description": "", "effect": "pure", "input_schema": { "type": "object" } }] }),
            "tool name",
        ),
        (
            json!({ "protocol": "clade.remote-tools/1", "heartbeat_secs": 0, "host": { "name": "x", "version": "0" }, "tools": [] }),
            "heartbeat_secs",
        ),
        (
            json!({ "protocol": "clade.remote-tools/1", "heartbeat_secs": 1, "host": { "name": "x", "version": "0" },
            "tools": [{ "name": "a", "description": "", "effect": "sometimes", "input_schema": { "type": "object" } }] }),
            "not a manifest",
        ),
    ] {
        let app =
            Router::new().route("/manifest", get(move || async move { axum::Json(manifest) }));
        let url = listen(app).await;
        let spec = HostSpec {
            name: "odd".into(),
            url,
            token: None,
            agents: vec![],
            timeout: Duration::from_secs(5),
            peer: None,
        };
        let error = Host::connect(spec).await.err().expect("a bad manifest was taken").to_string();
        assert!(error.starts_with("tool host odd:") && error.contains(needle), "{error}");
    }
    // Nobody listening: the error says so.
    let spec = HostSpec {
        name: "gone".into(),
        url: "http://127.0.0.1:9/".into(),
        token: None,
        agents: vec![],
        timeout: Duration::from_secs(5),
        peer: None,
    };
    let error = Host::connect(spec).await.err().unwrap().to_string();
    assert!(error.contains("cannot fetch the manifest"), "{error}");
}

#[tokio::test]
async fn a_repeated_key_runs_the_tool_once_and_answers_the_first_outcome() {
    let runs = Arc::new(AtomicUsize::new(0));
    let url = our_host(Some("t"), runs.clone()).await;
    let spec = HostSpec {
        name: "ours".into(),
        url,
        token: Some("t".into()),
        agents: vec!["acme/*".into()],
        timeout: Duration::from_secs(10),
        peer: None,
    };
    let (_, tools) = Host::connect(spec).await.unwrap();
    let count = tools.iter().find(|t| t.name() == "count").unwrap().clone();
    assert_eq!(count.effect(), EffectClass::Idempotent);
    assert_eq!(count.resource(&json!({ "label": "x" })), Ok("x".into()));
    assert!(count.available_to("acme", "ada") && !count.available_to("evil", "ada"));

    let ctx =
        CallContext { idempotency_key: "one".into(), call_id: "c1".into(), ..Default::default() };
    // Three attempts of one call at once, then one more after it finished.
    let (a, b, c) = tokio::join!(
        count.call(json!({ "label": "x" }), &ctx),
        count.call(json!({ "label": "x" }), &ctx),
        count.call(json!({ "label": "x" }), &ctx)
    );
    let d = count.call(json!({ "label": "x" }), &ctx).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for answer in [&a, &b, &c, &d] {
        assert_eq!(answer, &Ok("run 1 of \"x\"".into()));
    }
    // The key with other arguments is a conflict, not a run.
    let conflict = count.call(json!({ "label": "y" }), &ctx).await.unwrap_err().to_string();
    assert!(conflict.contains("idempotency_conflict"), "{conflict}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Another key runs again; a failure is remembered too.
    let other =
        CallContext { idempotency_key: "two".into(), call_id: "c2".into(), ..Default::default() };
    assert_eq!(
        count.call(json!({ "label": "fail" }), &other).await,
        Err("the label says fail".into())
    );
    assert_eq!(
        count.call(json!({ "label": "fail" }), &other).await,
        Err("the label says fail".into())
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // The wrong token is refused before anything runs.
    let spec = HostSpec {
        name: "ours".into(),
        url: our_host(Some("right"), runs.clone()).await,
        token: Some("wrong".into()),
        agents: vec![],
        timeout: Duration::from_secs(5),
        peer: None,
    };
    let error = Host::connect(spec).await.err().unwrap().to_string();
    assert!(error.contains("401") && error.contains("unauthorized"), "{error}");
}

/// A host with a durable memory answers a repeated key from it after a restart: the tool does
/// not run again, and other arguments under the key are still a conflict.
#[tokio::test]
async fn a_host_with_a_store_remembers_keys_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = clade_store::DataDir::open(dir.path()).unwrap();
    let options = clade_store::StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..clade_store::StoreOptions::new(
            clade_store::Location::Sqlite(data.sqlite_path()),
            clade_store::Durability::Normal,
        )
    };
    let store = clade_store::Store::open(options).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let host = |runs: Arc<AtomicUsize>| {
        let mut registry = Registry::new();
        registry.register(Arc::new(Counter(runs)));
        let options = HostOptions {
            name: "durable".into(),
            version: "1".into(),
            token: None,
            heartbeat: Duration::from_millis(100),
            remembered: 100,
            identity: None,
            peers_file: None,
            memory: Some(store.clone()),
        };
        listen(router(registry, options).unwrap())
    };
    let call = |url: String, label: &'static str| async move {
        let tools = tools_at("durable", url).await;
        let count = tools.iter().find(|t| t.name() == "count").unwrap().clone();
        let ctx =
            CallContext { idempotency_key: "k".into(), call_id: "c".into(), ..Default::default() };
        count.call(json!({ "label": label }), &ctx).await
    };
    let first = host(runs.clone()).await;
    assert_eq!(call(first, "x").await, Ok("run 1 of \"x\"".into()));
    // Another process of the host, on the same store: its memory starts empty.
    let restarted = host(runs.clone()).await;
    assert_eq!(call(restarted.clone(), "x").await, Ok("run 1 of \"x\"".into()));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the tool ran again after the restart");
    let conflict = call(restarted, "y").await.unwrap_err().to_string();
    assert!(conflict.contains("idempotency_conflict"), "{conflict}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A hosted tool's progress reports travel as progress frames, before its result, to the
/// gateway's caller.
#[tokio::test]
async fn our_host_streams_a_tools_progress_before_its_result() {
    let runs = Arc::new(AtomicUsize::new(0));
    let tools = tools_at("ours", our_host(None, runs).await).await;
    let count = tools.iter().find(|t| t.name() == "count").unwrap().clone();
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reports.clone();
    let ctx = CallContext {
        idempotency_key: "p".into(),
        call_id: "c".into(),
        progress: Some(clade_tools::Progress::new(move |message, fraction| {
            seen.lock().unwrap().push((message.to_owned(), fraction));
        })),
        ..Default::default()
    };
    assert_eq!(count.call(json!({ "label": "x" }), &ctx).await, Ok("run 1 of \"x\"".into()));
    assert_eq!(*reports.lock().unwrap(), vec![("counted, now waiting".to_owned(), Some(0.5))]);
}

/// A host with a token, an identity and a peers file in `dir`.
async fn pairable_host(dir: &std::path::Path, identity_file: &str) -> String {
    let mut registry = Registry::new();
    registry.register(Arc::new(clade_tools::builtin::Echo));
    let identity =
        clade_tools::remote::identity::Identity::load_or_create(&dir.join(identity_file)).unwrap();
    let options = HostOptions {
        name: "pairable".into(),
        version: "1".into(),
        token: Some("pair-token".into()),
        heartbeat: Duration::from_millis(100),
        remembered: 100,
        identity: Some(Arc::new(identity)),
        peers_file: Some(dir.join("peers.json")),
        memory: None,
    };
    listen(router(registry, options).unwrap()).await
}

fn paired_spec(
    url: &str,
    identity: &Arc<clade_tools::remote::identity::Identity>,
    host_key: &str,
) -> HostSpec {
    HostSpec {
        name: "paired".into(),
        url: url.to_owned(),
        token: None,
        agents: vec!["*".into()],
        timeout: Duration::from_secs(5),
        peer: Some(clade_tools::remote::Peer {
            identity: identity.clone(),
            host_key: host_key.to_owned(),
        }),
    }
}

#[tokio::test]
async fn a_paired_gateway_calls_without_the_token_and_a_changed_host_key_is_refused() {
    use clade_tools::remote::identity::Identity;
    let dir = tempfile::tempdir().unwrap();
    let url = pairable_host(dir.path(), "host.key").await;
    let gateway = Arc::new(Identity::ephemeral().unwrap());

    // The token authorizes a pairing; a wrong one does not.
    let refused =
        clade_tools::remote::pair("paired", &url, "wrong", &gateway, Duration::from_secs(5))
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let host_key =
        clade_tools::remote::pair("paired", &url, "pair-token", &gateway, Duration::from_secs(5))
            .await
            .unwrap();

    // Paired: no token, every request signed, and the host proves its key.
    let (_, tools) = Host::connect(paired_spec(&url, &gateway, &host_key)).await.unwrap();
    let ctx =
        CallContext { idempotency_key: "p1".into(), call_id: "c".into(), ..Default::default() };
    assert_eq!(tools[0].call(json!({ "text": "signed" }), &ctx).await, Ok("signed".into()));

    // Another key that was never paired, signing its requests: refused.
    let stranger = Arc::new(Identity::ephemeral().unwrap());
    let error =
        Host::connect(paired_spec(&url, &stranger, &host_key)).await.err().unwrap().to_string();
    assert!(error.contains("401") && error.contains("not paired"), "{error}");

    // The host restarts with its peers file: still paired.
    let again = pairable_host(dir.path(), "host.key").await;
    assert!(Host::connect(paired_spec(&again, &gateway, &host_key)).await.is_ok());

    // A host at the same place with another identity (replaced): refused, flagged for audit.
    std::fs::remove_file(dir.path().join("peers.json")).ok();
    let impostor = pairable_host(dir.path(), "other.key").await;
    let error = Host::connect(paired_spec(&impostor, &gateway, &host_key)).await.err().unwrap();
    assert!(error.to_string().contains("not paired"), "{error}");
    // Even one that takes the gateway's requests must prove the key it was paired with.
    clade_tools::remote::pair("paired", &impostor, "pair-token", &gateway, Duration::from_secs(5))
        .await
        .unwrap();
    let error = Host::connect(paired_spec(&impostor, &gateway, &host_key)).await.err().unwrap();
    assert!(error.key_changed, "{error}");
    assert!(error.to_string().contains("did not prove it holds the key"), "{error}");
}

#[tokio::test]
async fn stale_or_forged_signatures_and_tokenless_pairing_are_refused() {
    use clade_protocol::remote_tools::{
        PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER, VERSION, VERSION_HEADER,
    };
    use clade_tools::remote::identity::{self, Identity};
    let dir = tempfile::tempdir().unwrap();
    let url = pairable_host(dir.path(), "host.key").await;
    let gateway = Identity::ephemeral().unwrap();
    clade_tools::remote::pair("paired", &url, "pair-token", &gateway, Duration::from_secs(5))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let send = |time: i64, signature: String| {
        http.get(format!("{url}manifest"))
            .header(VERSION_HEADER, VERSION)
            .header(PEER_HEADER, gateway.public())
            .header(PEER_TIME_HEADER, time.to_string())
            .header(PEER_SIGNATURE_HEADER, signature)
            .send()
    };
    let now = clade_core::Clock::now(&clade_core::SystemClock).as_millis();
    let sign = |time: i64| {
        gateway.sign(&[identity::REQUEST, &identity::request_text("GET", "manifest", time, &[])])
    };
    assert_eq!(send(now, sign(now)).await.unwrap().status(), 200);
    // Ten minutes old: a replay outside the window.
    let old = now - 600_000;
    let stale = send(old, sign(old)).await.unwrap();
    assert_eq!(stale.status(), 401);
    assert!(stale.text().await.unwrap().contains("from this component's clock"));
    // Signed for another route.
    let other =
        gateway.sign(&[identity::REQUEST, &identity::request_text("POST", "calls", now, &[])]);
    assert_eq!(send(now, other).await.unwrap().status(), 401);

    // A host without a token takes no pairing at all.
    let mut registry = Registry::new();
    registry.register(Arc::new(clade_tools::builtin::Echo));
    let open = listen(
        router(
            registry,
            HostOptions {
                name: "open".into(),
                version: "1".into(),
                token: None,
                heartbeat: Duration::from_millis(100),
                remembered: 10,
                identity: Some(Arc::new(Identity::ephemeral().unwrap())),
                peers_file: None,
                memory: None,
            },
        )
        .unwrap(),
    )
    .await;
    let error = clade_tools::remote::pair("open", &open, "any", &gateway, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no token to authorize"), "{error}");

    // A peers file that is not one stops the host from starting.
    std::fs::write(dir.path().join("bad.json"), "not json").unwrap();
    let bad = router(
        Registry::new(),
        HostOptions {
            name: "bad".into(),
            version: "1".into(),
            token: Some("t".into()),
            heartbeat: Duration::from_millis(100),
            remembered: 10,
            identity: None,
            peers_file: Some(dir.path().join("bad.json")),
            memory: None,
        },
    );
    assert!(bad.err().unwrap().to_string().contains("not a peers file"));
}
