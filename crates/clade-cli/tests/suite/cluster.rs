//! `clade serve` as a cluster's node (`cluster:` in clade.yaml): several gateways on one
//! PostgreSQL store and one NATS server, each running its share of the sessions, any of them
//! taking any event, and the survivors carrying on a dead node's sessions.

use serde_json::{Value, json};

use std::sync::{Arc, Mutex};

use super::support::{Env, Server, polled, polled_within, serve_hook, write};

/// A node's data dir with a clade.yaml joining `cluster` as `node`.
fn node(store: &str, nats: &str, cluster: &str, node: &str, shards: u32) -> Env {
    node_with(store, nats, cluster, node, shards, "")
}

/// [`node`] with more of clade.yaml.
fn node_with(store: &str, nats: &str, cluster: &str, node: &str, shards: u32, more: &str) -> Env {
    let more = if more.contains("lease_ttl_secs") {
        more.to_owned()
    } else {
        format!("  lease_ttl_secs: 2\n{more}")
    };
    let mut env = Env::new();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "store:\n  url: \"{store}\"\ncluster:\n  name: {cluster}\n  node: {node}\n  nats_url: {nats}\n  shards: {shards}\n{more}"
        ),
    );
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    env
}

/// A slow webhook receiver: the ids of the `turn.finished` events it was sent, in order.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let finished = Arc::new(Mutex::new(Vec::new()));
    let log = finished.clone();
    let url = serve_hook(move |body: axum::body::Bytes| {
        let log = log.clone();
        async move {
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if event["type"] == "turn.finished" {
                log.lock().unwrap().push(event["id"].as_str().unwrap_or_default().to_owned());
            }
            // Slow, so that a second node delivering too would read the cursor before this
            // delivery moved it, and send the same event again.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            axum::http::StatusCode::OK
        }
    })
    .await;
    (url, finished)
}

/// The `host:port` in `url` (`postgres://user@host:port/db`, `nats://host:port`) and the
/// address it resolves to: what a [`clade_test_support::Proxy`] stands in for.
fn server_of(url: &str) -> (String, std::net::SocketAddr) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest).to_owned();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host_port).unwrap().next().unwrap();
    (host_port, addr)
}

/// The schema a [`clade_test_support::PgSchema`]'s URL selects.
fn schema_name(schema: &clade_test_support::PgSchema) -> String {
    schema.url().rsplit("search_path%3D").next().unwrap_or_default().to_owned()
}

fn cluster_name() -> String {
    let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
    format!("e2e-{}-{nanos}", std::process::id())
}

/// `clade node list --json` through `env`: each node's name, shard count and duties, for the
/// nodes that hold something (a node heard but holding nothing yet is listed too).
fn nodes(env: &Env) -> Vec<(String, usize, usize)> {
    let list = env.run(&["node", "list", "--json"]).ok().json();
    list.as_array()
        .unwrap()
        .iter()
        .map(|node| {
            (
                node["node"].as_str().unwrap().to_owned(),
                node["shards"].as_array().unwrap().len(),
                node["duties"].as_array().unwrap().len(),
            )
        })
        .filter(|(_, shards, duties)| shards + duties > 0)
        .collect()
}

/// Sends `text` on `channel` through `server` and waits for the turn: its session and status.
async fn ask(server: &Server, channel: &str, text: &str) -> (String, String) {
    let body = json!({ "agent": "ada", "text": text, "wait": true,
        "source": { "platform": "http", "channel": channel, "actor": "someone" } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["session_id"].as_str().unwrap().to_owned();
    (session, answer["status"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_store_split_the_sessions_and_carry_on_a_dead_nodes() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let cluster = cluster_name();
    // Both nodes name one subscriber: one node at a time delivers to it.
    let (hook, finished) = receiver().await;
    let more =
        format!("subscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n");
    let a = node_with(schema.url(), &nats, &cluster, "a", 8, &more);
    let b = node_with(schema.url(), &nats, &cluster, "b", 8, &more);
    a.run(&["agents", "create", "ada"]).ok();
    let on_a = a.serve(&[]);
    let on_b = b.serve(&[]);
    let every = std::time::Duration::from_millis(100);
    let split = polled_within(
        std::time::Duration::from_secs(20),
        every,
        async || nodes(&a),
        |n| {
            n.len() == 2
                && n.iter().all(|(_, shards, _)| *shards == 4)
                && n.iter().map(|(_, _, duties)| duties).sum::<usize>() == 5
        },
    )
    .await;
    assert_eq!(split.len(), 2, "two nodes, four shards each: {split:?}");
    assert_eq!(split.iter().map(|(_, _, duties)| duties).sum::<usize>(), 5, "{split:?}");
    // Sessions on both nodes' shards, each event taken by one node or the other.
    let mut sessions = Vec::new();
    for n in 0..8 {
        let through = if n % 2 == 0 { &on_a } else { &on_b };
        let (session, status) = ask(through, &format!("c{n}"), "hello").await;
        assert_eq!(status, "completed", "session {session} through node {}", n % 2);
        sessions.push(session);
    }
    // Each node announces its load and version; the node list shows them through a's running
    // gateway (its admin socket), and the API through b.
    let announced = |list: &Value| {
        let items = list.as_array().cloned().unwrap_or_default();
        items.len() == 2
            && items.iter().all(|n| n["version"] == env!("CARGO_PKG_VERSION"))
            && items.iter().filter_map(|n| n["load"].as_f64()).sum::<f64>() > 0.0
    };
    let listed = polled_within(
        std::time::Duration::from_secs(20),
        every,
        async || a.run(&["node", "list", "--json"]).ok().json(),
        announced,
    )
    .await;
    assert!(announced(&listed), "{listed}");
    let table = a.run(&["node", "list"]).ok().stdout;
    assert!(table.contains("LOAD") && table.contains("/min"), "{table}");
    let api = on_b.get_json("/v1/cluster/nodes").await;
    assert!(announced(&api["items"]), "{api}");
    let read = async || finished.lock().unwrap().clone();
    polled_within(std::time::Duration::from_secs(20), every, read, |ids| ids.len() >= 8).await;
    // Had both nodes delivered, the repeats would come within their next look (a second).
    let delivered =
        polled_within(std::time::Duration::from_secs(3), every, read, |ids| ids.len() > 8).await;
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (delivered.len(), unique.len()),
        (8, 8),
        "each turn's end delivered once: {delivered:?}"
    );
    // Node a dies; b takes its shards when their leases expire, and answers every session.
    on_a.kill9();
    let alone = polled_within(
        std::time::Duration::from_secs(20),
        every,
        async || nodes(&b),
        |n| n.len() == 1 && n[0].1 == 8 && n[0].2 == 5,
    )
    .await;
    assert_eq!(alone, vec![("b".to_owned(), 8, 5)], "b holds everything");
    for (n, before) in sessions.iter().enumerate() {
        let (session, status) = ask(&on_b, &format!("c{n}"), "again").await;
        assert_eq!(&session, before, "the same session");
        assert_eq!(status, "completed");
        let turns = on_b.all_turns(&session).await;
        assert_eq!(turns.len(), 2, "each event ran once: {turns:?}");
    }
    drop(on_b);
    drop(schema);
}

/// libfaketime, which shifts a process's clock (the `faketime` package).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A tenant's event rate is shared among the nodes that count each other as members: with
/// two, each node lets through half the burst and its refusal says why, so a tenant spread
/// over both gets no more in all than one node would let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_event_rate_is_shared_among_the_nodes() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let cluster = cluster_name();
    let more = "tenants:\n  \"*\":\n    quotas: { events_per_second: 0.001, burst: 4 }\n";
    let a = node_with(schema.url(), &nats, &cluster, "a", 4, more);
    let b = node_with(schema.url(), &nats, &cluster, "b", 4, more);
    a.run(&["agents", "create", "ada"]).ok();
    let servers = [a.serve(&[]), b.serve(&[])];
    let members = |nodes: &Value| {
        nodes["items"]
            .as_array()
            .map_or(0, |items| items.iter().filter(|node| !node["heard_ms_ago"].is_null()).count())
    };
    for server in &servers {
        let nodes = polled_within(
            std::time::Duration::from_secs(20),
            std::time::Duration::from_millis(100),
            async || server.get_json("/v1/cluster/nodes").await,
            |nodes| members(nodes) == 2,
        )
        .await;
        assert_eq!(members(&nodes), 2, "{nodes}");
    }
    for server in &servers {
        for n in 0..3 {
            let body = json!({ "agent": "ada", "text": format!("hello {n}"),
                "source": { "platform": "http", "channel": "c", "actor": "someone" } });
            let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
            if n < 2 {
                assert!(status < 300, "event {n} through {}: {answer}", server.url);
                continue;
            }
            assert_eq!(status, 429, "a node let more than its half of the burst through: {answer}");
            let said = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(
                said.contains("this node's share of tenants.\"*\".quotas.events_per_second: 0.001 over 2 nodes"),
                "{answer}"
            );
        }
    }
}

/// A node whose clock is minutes off the database's would fire schedules early or late: it is
/// refused at its start, saying by how much and what to do, whichever way it is off.
#[tokio::test]
async fn a_node_whose_clock_is_minutes_off_is_refused() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    if !std::path::Path::new(FAKETIME).exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "{FAKETIME} is missing: scripts/test installs the faketime package");
        eprintln!("SKIPPED: {FAKETIME} is missing (install the faketime package)");
        return;
    }
    let cluster = cluster_name();
    for (offset, secs, way) in [("+5m", 300.0, "s ahead of"), ("-3m", 180.0, "s behind")] {
        let mut skewed = node(schema.url(), &nats, &cluster, "skewed", 8);
        skewed.vars.extend(
            [("LD_PRELOAD", FAKETIME), ("FAKETIME", offset), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let out = skewed.run(&["serve", "--listen", "127.0.0.1:0"]);
        assert_ne!(out.code, 0, "a node {offset} off started");
        assert!(out.stderr.contains(&format!("{way} the database's")), "{}", out.stderr);
        let said = out.stderr.split("clock is ").nth(1).and_then(|rest| rest.split(' ').next());
        let off: f64 = said.and_then(|n| n.parse().ok()).unwrap_or_default();
        assert!((off - secs).abs() < 5.0, "{offset}: {}", out.stderr);
        assert!(out.stderr.contains("sync this machine's clock"), "{}", out.stderr);
    }
    // The same node with the machine's clock joins. When its clock drifts later (libfaketime
    // reads the offset from a file each second), it runs on, degraded, and says why; once the
    // clock agrees again, it is ready again.
    let mut on_time = node(schema.url(), &nats, &cluster, "on-time", 8);
    let offset = on_time.data_dir().join("clock-offset");
    write(&offset, "+0\n");
    on_time.vars.extend(
        [
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let server = on_time.serve(&[]);
    let readiness = async || server.send("GET", "/readyz", None, None).await;
    assert_eq!(readiness().await.1["status"], "ready");
    write(&offset, "+5m\n");
    let (status, drifted) = polled(readiness, |(_, r)| r["status"] == "degraded").await;
    assert_eq!((status, &drifted["status"]), (200, &json!("degraded")), "{drifted}");
    let reason = drifted["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("s ahead of the database's"), "{drifted}");
    assert!(reason.contains("sync this machine's clock"), "{drifted}");
    write(&offset, "+0\n");
    let (_, again) = polled(readiness, |(_, r)| r["status"] == "ready").await;
    assert_eq!(again["status"], "ready", "{again}");
}

#[tokio::test]
async fn a_node_is_refused_a_sqlite_store_a_taken_name_or_another_shard_count() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let cluster = cluster_name();
    // On SQLite: a cluster's nodes must share one store.
    let alone = Env::new();
    write(
        &alone.data_dir().join("clade.yaml"),
        &format!("cluster:\n  name: {cluster}\n  node: a\n  nats_url: {nats}\n"),
    );
    let out = alone.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("needs a PostgreSQL store"), "{}", out.stderr);
    // No name.
    let nameless = Env::new();
    write(
        &nameless.data_dir().join("clade.yaml"),
        &format!(
            "store:\n  url: \"{}\"\ncluster:\n  name: {cluster}\n  nats_url: {nats}\n",
            schema.url()
        ),
    );
    let out = nameless.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(out.stderr.contains("this node has no name"), "{}", out.stderr);
    // No NATS there.
    let deaf = node(schema.url(), "nats://127.0.0.1:1", &cluster, "a", 8);
    let out = deaf.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(out.stderr.contains("cannot connect to NATS at nats://127.0.0.1:1"), "{}", out.stderr);
    let first = node(schema.url(), &nats, &cluster, "a", 8);
    let running = first.serve(&[]);
    // Its name taken by a running node.
    let twin = node(schema.url(), &nats, &cluster, "a", 8);
    let out = twin.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("another node of this cluster is named \"a\""), "{}", out.stderr);
    // Another shard count than the running node's.
    let other = node(schema.url(), &nats, &cluster, "b", 16);
    let out = other.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("runs this cluster with 8 shards and this node is configured with 16"),
        "{}",
        out.stderr
    );
    drop(running);
}

/// `clade node drain` hands a node's shards and duties over at once, without waiting for its
/// leases (of 9 s here) to expire, and the other node answers every session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_shards_over_without_waiting_for_its_leases() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let cluster = cluster_name();
    let slow = "  lease_ttl_secs: 9\n";
    let a = node_with(schema.url(), &nats, &cluster, "a", 8, slow);
    let b = node_with(schema.url(), &nats, &cluster, "b", 8, slow);
    a.run(&["agents", "create", "ada"]).ok();
    let on_a = a.serve(&[]);
    let on_b = b.serve(&[]);
    let every = std::time::Duration::from_millis(100);
    let within = std::time::Duration::from_secs(30);
    let split = polled_within(within, every, async || nodes(&a), |n| n.len() == 2).await;
    assert_eq!(split.len(), 2, "{split:?}");
    let mut sessions = Vec::new();
    for n in 0..6 {
        sessions.push(ask(&on_a, &format!("c{n}"), "hello").await.0);
    }
    let drained = a.run(&["node", "drain", "--wait", "10s"]).ok().stdout;
    assert!(drained.contains("went to the other nodes"), "{drained}");
    let left = nodes(&a);
    assert!(left.iter().all(|(node, _, _)| node == "b"), "a still holds leases: {left:?}");
    // b takes them at its next tick (3 s with these leases), not when they would expire.
    let alone = polled_within(
        within,
        every,
        async || nodes(&b),
        |n| n.len() == 1 && n[0].1 == 8 && n[0].2 == 5,
    )
    .await;
    assert_eq!(alone, vec![("b".to_owned(), 8, 5)]);
    // a drained takes no event; b answers them all.
    let body = json!({ "agent": "ada", "text": "anyone?", "source": { "platform": "http", "channel": "c0", "actor": "x" } });
    let (status, _) = on_a.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 503, "a drained node took an event");
    for (n, before) in sessions.iter().enumerate() {
        let (session, status) = ask(&on_b, &format!("c{n}"), "again").await;
        assert_eq!((&session, status.as_str()), (before, "completed"));
    }
    drop(on_a);
}

/// The shards `node` holds, as `clade node list` reads them.
fn shards_of(env: &Env, node: &str) -> Vec<u32> {
    let list = env.run(&["node", "list", "--json"]).ok().json();
    let held = list.as_array().unwrap().iter().find(|n| n["node"] == node);
    held.map(|n| n["shards"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as u32))
        .into_iter()
        .flatten()
        .collect()
}

fn shard_of(session: &str, shards: u32) -> u32 {
    let id: clade_core::SessionId = session.parse().unwrap();
    clade_core::shard::shard_of(id.as_bytes(), shards)
}

/// A drain hands each shard over as its own turns end: a conversation idle on the drained
/// node is answered by the other node while a long turn still runs on the drained one, and
/// that turn runs to its end there, once, instead of being cut off and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_each_shard_over_as_its_own_turns_end() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let cluster = cluster_name();
    let more = format!(
        "  lease_ttl_secs: 6\nmodels:\n  slow:\n    provider: openai\n    model: stub+latency=12000\n    base_url: {}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [scripted]\n  agents:\n    bo: {{ default: [slow] }}\n",
        stub.url()
    );
    let mut a = node_with(schema.url(), &nats, &cluster, "a", 8, &more);
    let mut b = node_with(schema.url(), &nats, &cluster, "b", 8, &more);
    for env in [&mut a, &mut b] {
        env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    }
    a.run(&["agents", "create", "ada"]).ok();
    a.run(&["agents", "create", "bo"]).ok();
    let on_a = a.serve(&[]);
    let on_b = b.serve(&[]);
    let every = std::time::Duration::from_millis(100);
    let within = std::time::Duration::from_secs(30);
    let split = polled_within(
        within,
        every,
        async || nodes(&a),
        |n| n.len() == 2 && n.iter().all(|(_, shards, _)| *shards == 4),
    )
    .await;
    assert_eq!(split.len(), 2, "{split:?}");
    let on_a_shards = shards_of(&a, "a");
    // bo's slow turn runs on a, in one of a's shards.
    let mut slow = None;
    for n in 0..40 {
        let body = json!({ "agent": "bo", "text": "think", "source": { "platform": "http", "channel": format!("s{n}"), "actor": "x" } });
        let (status, accepted) = on_a.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 202, "{accepted}");
        let session = accepted["session_id"].as_str().unwrap().to_owned();
        if on_a_shards.contains(&shard_of(&session, 8)) {
            slow = Some(session);
            break;
        }
    }
    let slow = slow.expect("40 sessions and none in a's shards");
    // An idle conversation of ada's in another of a's shards.
    let mut idle = None;
    for n in 0..40 {
        let channel = format!("c{n}");
        let (session, status) = ask(&on_a, &channel, "hello").await;
        assert_eq!(status, "completed");
        let shard = shard_of(&session, 8);
        if on_a_shards.contains(&shard) && shard != shard_of(&slow, 8) {
            idle = Some((channel, session));
            break;
        }
    }
    let (channel, idle) = idle.expect("40 sessions and none in another of a's shards");
    // bo's model call is under way (a turn is stored only with its first step).
    let called =
        async || stub.captured().iter().filter(|c| c.path.ends_with("/chat/completions")).count();
    assert!(
        polled_within(within, every, called, |n| *n >= 1).await >= 1,
        "bo's model was never called"
    );

    let drain = std::thread::spawn(move || {
        let out = a.run(&["node", "drain", "--wait", "30s"]).ok().stdout;
        (a, out)
    });
    // Once a takes no more events, it is handing over.
    let probe = json!({ "agent": "ada", "text": "probe", "source": { "platform": "http", "channel": "probe", "actor": "x" } });
    let refusing = async || on_a.send("POST", "/v1/events", None, Some(probe.clone())).await.0;
    assert_eq!(polled_within(within, every, refusing, |status| *status == 503).await, 503);
    // b answers ada's conversation once a has handed its shard over, without waiting for bo's turn.
    let (session, status) = ask(&on_b, &channel, "again").await;
    assert_eq!((session.as_str(), status.as_str()), (idle.as_str(), "completed"));
    let bo = on_b.get_json(&format!("/v1/sessions/{slow}/turns")).await;
    let unfinished = bo["items"].as_array().unwrap().iter().all(|t| t["status"] == "running");
    assert!(unfinished, "bo's turn ended before ada was answered: {bo}");

    let (a, drained) = drain.join().unwrap();
    assert!(drained.contains("went to the other nodes"), "{drained}");
    let ended = |turns: &[Value]| turns.first().is_some_and(|t| t["status"] != "running");
    let turns = on_b.turns_until(&slow, ended).await;
    assert_eq!(turns.len(), 1, "bo's turn ran again: {turns:#?}");
    assert_eq!(turns[0]["status"], "completed", "{turns:#?}");
    let left = nodes(&a);
    assert!(left.iter().all(|(node, _, _)| node == "b"), "a still holds leases: {left:?}");
    drop(on_a);
}

/// `clade bench cluster` runs one node and two on a schema of its own, reports turns for each
/// size and, for two, a takeover and cross-node latency, and leaves no schema behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_cluster_measures_each_size_and_cleans_up() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let env = Env::new();
    let admin = clade_test_support::pg_admin_url();
    let args = [
        "bench",
        "cluster",
        "--database",
        &admin,
        "--nats",
        &nats,
        "--nodes",
        "1,2",
        "--sessions",
        "20",
        "--seconds",
        "1",
        "--concurrency",
        "4",
        "--shards",
        "8",
        "--lease-ttl-secs",
        "2",
    ];
    let out = env.run(&args).ok();
    let row = |nodes: &str| -> Vec<String> {
        let line = out.stdout.lines().find(|l| l.split_whitespace().next() == Some(nodes));
        let line = line.unwrap_or_else(|| panic!("no row for {nodes}: {}", out.stdout));
        line.split_whitespace().filter(|w| *w != "|").map(str::to_owned).collect()
    };
    let (one, two) = (row("1"), row("2"));
    assert!(one[1].parse::<u64>().unwrap() > 0, "no turns on one node: {}", out.stdout);
    assert!(two[1].parse::<u64>().unwrap() > 0, "no turns on two nodes: {}", out.stdout);
    assert!(two.iter().any(|w| w.contains('/')), "no takeover figure: {}", out.stdout);
    assert!(out.stdout.contains("2 nodes deliver"), "{}", out.stdout);
    // Its schemas are gone.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    let (left,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'clade_bench_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "the bench left its schemas");
    drop(schema);
    let bad = env.run(&["bench", "cluster", "--database", "/tmp/x.db"]);
    assert!(
        bad.stderr.contains("--database: a cluster's nodes share a PostgreSQL database"),
        "{}",
        bad.stderr
    );
}

/// The crash test (`crash.rs`) on a cluster: three nodes on one PostgreSQL store, events sent
/// to any of them, and nodes killed with SIGKILL at random and started again while many
/// sessions send events whose turns call an at-most-once and an idempotent ledger tool (one
/// ledger for all the nodes). Between kills, at random, a node is cut off from PostgreSQL or
/// from NATS (each node reaches both through a proxy of its own) for up to twice its lease's
/// time: cut from the database that long, it loses its shards to the others while its turns
/// are still running, and every write it then tries must be refused by the fence. Judged as
/// on one node: every acknowledged event has exactly one completed turn, no at-most-once call
/// ran twice, per-session order held, every turn's event reached the subscriber (delivered
/// from whichever node holds the outbox), and repeated idempotency keys got the original
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_kill9_under_load_loses_nothing_and_repeats_nothing() {
    use rand::{Rng as _, SeedableRng as _};
    use std::sync::RwLock;

    use super::crash::{
        Deliveries, Judged, Pick, Recorder, SECRET, before_next_kill, drive, receiver, resend_all,
    };

    const NODES: usize = 3;
    const SESSIONS: usize = 24;
    let scale = clade_test_support::soak_scale();
    let (events, kills) = (24 * scale, 12 * scale);
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let seed = super::crash::crash_seed();
    println!(
        "cluster crash test seed: {seed} (replay its fault plan with CLADE_CRASH_SEED={seed})"
    );
    let mut plan = rand::rngs::StdRng::seed_from_u64(seed);
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let hook = receiver(deliveries.clone()).await;
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger.txt");
    let more = format!(
        "testing:\n  ledger_file: {}\nsubscribers:\n  - name: hook\n    url: {hook}\n    secret_env: HOOK_SECRET\n    max_attempts: 100000\nsessions:\n  idle_secs: 2\n  max_queued: 100000\n",
        ledger.display()
    );
    // (The drivers wait for acknowledgements, not turns: at soak length a session's queue
    // outgrows the default 64 while its node restarts, and 429s are pacing, not loss.)
    let cluster = cluster_name();
    let (pg_server, pg) = server_of(&clade_test_support::pg_admin_url());
    let (nats_server, nats_addr) = server_of(&nats);
    // Each node reaches PostgreSQL and NATS through links the test cuts.
    let links: Vec<[clade_test_support::Proxy; 2]> = (0..NODES)
        .map(|_| {
            let start = |addr| clade_test_support::Proxy::start(addr).unwrap();
            [start(pg), start(nats_addr)]
        })
        .collect();
    let envs: Vec<Arc<Env>> = (0..NODES)
        .map(|i| {
            let [to_pg, to_nats] = &links[i];
            let store = schema.url().replace(&pg_server, &to_pg.addr().to_string());
            let nats = nats.replace(&nats_server, &to_nats.addr().to_string());
            let mut env = node_with(&store, &nats, &cluster, &format!("n{i}"), 16, &more);
            env.vars.retain(|(name, _)| name != "HOOK_SECRET");
            env.vars.push(("HOOK_SECRET".into(), SECRET.into()));
            Arc::new(env)
        })
        .collect();
    envs[0].run(&["agents", "create", "crash"]).ok();
    let mut servers: Vec<Option<Server>> = envs.iter().map(|env| Some(env.serve(&[]))).collect();
    let urls: Vec<(String, String)> =
        servers.iter().flatten().map(|s| (s.url.clone(), s.token.clone())).collect();
    let urls = Arc::new(RwLock::new(urls));
    let client = reqwest::Client::new();
    let recorder = Arc::new(Recorder {
        start: tokio::time::Instant::now(),
        ops: Mutex::default(),
        faults: Mutex::default(),
    });

    // Drivers: each session's events to node s first, then the next node on each failure.
    let to_any_node: Pick = {
        let urls = urls.clone();
        Arc::new(move |s, n| urls.read().unwrap()[(s + n) % NODES].clone())
    };
    let drivers = drive(SESSIONS, events, &client, &recorder, &to_any_node);

    // The killer: a node at random, SIGKILL, started again under its name; and, before half
    // of the kills, a node cut off from PostgreSQL or NATS for 0.5 to 4 s (leases of 2 s).
    for _ in 0..kills {
        before_next_kill(&mut plan, 100..800).await;
        if plan.random_bool(0.5) {
            let (victim, link) = (plan.random_range(0..NODES), plan.random_range(0..2));
            let start_ms = recorder.ms();
            links[victim][link].cut();
            before_next_kill(&mut plan, 500..4_000).await;
            links[victim][link].restore();
            recorder.fault(["partition-postgres", "partition-nats"][link], start_ms);
        }
        let victim = plan.random_range(0..NODES);
        let start_ms = recorder.ms();
        let (env, dead) = (envs[victim].clone(), servers[victim].take().unwrap());
        // Dead first: a node of the same name still running would refuse the new one.
        let again = tokio::task::spawn_blocking(move || {
            dead.kill9();
            env.serve(&[])
        });
        let again = again.await.unwrap();
        urls.write().unwrap()[victim] = (again.url.clone(), again.token.clone());
        servers[victim] = Some(again);
        recorder.fault("kill9", start_ms);
    }
    for driver in drivers {
        driver.await.unwrap();
    }
    resend_all(SESSIONS, events, &client, &recorder, &to_any_node).await;
    let partitions =
        recorder.faults.lock().unwrap().iter().filter(|f| f.kind.starts_with("partition")).count();
    println!("cluster crash test: {kills} kills of {NODES} nodes, {partitions} partitions");
    let judged = Judged {
        sessions: SESSIONS,
        events,
        seed,
        patience: std::time::Duration::from_secs(scale as u64),
    };
    let any = servers[0].as_ref().unwrap();
    judged.judge(any, &client, &recorder, &deliveries, &ledger, "cluster-crash").await;
    for server in servers.into_iter().flatten() {
        let log = server.stop();
        assert!(!log.contains("panicked"), "{log}");
    }
    drop((schema, links));
}

/// NATS down delays work and loses none: an event taken by one node for a session another
/// runs loses its signal, and the holder's scan of the store (every lease's time) runs it;
/// the nodes keep their shards meanwhile (their leases are the database's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_delays_work_and_loses_none() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::NatsServer::start(&[]) else { return };
    let cluster = cluster_name();
    let a = node(schema.url(), &nats.url, &cluster, "a", 8);
    let b = node(schema.url(), &nats.url, &cluster, "b", 8);
    a.run(&["agents", "create", "ada"]).ok();
    let on_a = a.serve(&[]);
    let on_b = b.serve(&[]);
    let every = std::time::Duration::from_millis(100);
    let within = std::time::Duration::from_secs(20);
    polled_within(within, every, async || nodes(&a), |n| n.len() == 2).await;
    let list = a.run(&["node", "list", "--json"]).ok().json();
    let of_b: Vec<u32> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["node"] == "b")
        .flat_map(|node| node["shards"].as_array().unwrap().iter())
        .map(|shard| u32::try_from(shard.as_u64().unwrap()).unwrap())
        .collect();
    // A session b runs.
    let mut on_bs = None;
    for n in 0..40 {
        let (session, _) = ask(&on_b, &format!("c{n}"), "hello").await;
        let id = clade_core::SessionId::parse(&session).unwrap();
        if of_b.contains(&clade_core::shard::shard_of(id.as_bytes(), 8)) {
            on_bs = Some(n);
            break;
        }
    }
    let n = on_bs.expect("40 sessions, none of b's");
    drop(nats);
    // Through a, which stores the event and cannot tell b; b's scan finds it within about a
    // lease's time (2 s here).
    let asked = std::time::Instant::now();
    let (_, status) = ask(&on_a, &format!("c{n}"), "are you there?").await;
    assert_eq!(status, "completed");
    assert!(asked.elapsed() < std::time::Duration::from_secs(15), "{:?}", asked.elapsed());
    let both = nodes(&a);
    assert_eq!(both.len(), 2, "a node lost its shards while NATS was down: {both:?}");
    drop((on_a, on_b));
}

/// `GET /v1/cluster/nodes` shows the operator each node's shards and duties; to another
/// tenant's admin the route does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_the_nodes_over_the_api_and_no_tenant_does() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let cluster = cluster_name();
    let a = node(schema.url(), &nats, &cluster, "a", 8);
    let b = node(schema.url(), &nats, &cluster, "b", 8);
    a.run(&["tenants", "create", "acme"]).ok();
    let (acme_admin, _) = super::support::token(&a, "acme", &["admin"]);
    let on_a = a.serve(&[]);
    let _on_b = b.serve(&[]);
    let every = std::time::Duration::from_millis(100);
    let read = async || on_a.get_json("/v1/cluster/nodes").await;
    let spread = |list: &serde_json::Value| {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items.len() == 2 && items.iter().all(|n| n["shards"].as_array().map(Vec::len) == Some(4))
    };
    let list = polled_within(std::time::Duration::from_secs(20), every, read, spread).await;
    assert!(spread(&list), "{list}");
    assert_eq!(
        (list["items"][0]["node"].as_str(), list["items"][1]["node"].as_str()),
        (Some("a"), Some("b"))
    );
    assert!(
        list["items"][0]["expires_in_ms"].as_i64().is_some_and(|ms| ms > 0 && ms <= 2_000),
        "{list}"
    );
    let (status, answer) = on_a.send("GET", "/v1/cluster/nodes", Some(&acme_admin), None).await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.to_string().contains("no such route"), "{answer}");
}

/// A PostgreSQL outage (the database restarting, failing over, out of reach): requests get a
/// 503 naming the store, with `Retry-After`, in bounded time, and the gateway is not ready;
/// nothing is half-written, so the same event sent again once the database is back is stored
/// once, and the conversation carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_with_retry_after_and_half_writes_nothing() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let (server, target) = server_of(&clade_test_support::pg_admin_url());
    let proxy = clade_test_support::Proxy::start(target).unwrap();
    let store = schema.url().replace(&server, &proxy.addr().to_string());
    let env = Env::new();
    write(&env.data_dir().join("clade.yaml"), &format!("store:\n  url: \"{store}\"\n"));
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let (session, status) = ask(&server, "c", "first").await;
    assert_eq!(status, "completed");

    proxy.cut();
    let body = json!({ "agent": "ada", "text": "second", "idempotency_key": "second",
        "source": { "platform": "http", "channel": "c", "actor": "someone" } });
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{}/v1/events", server.url))
            .bearer_auth(&server.token)
            .json(&body)
            .timeout(std::time::Duration::from_secs(60))
            .send()
    };
    let asked = std::time::Instant::now();
    let refused = post().await.unwrap();
    let waited = asked.elapsed();
    assert_eq!(refused.status(), 503, "{:?}", refused.text().await);
    let retry = refused.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)), "no Retry-After");
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
    // Where the database is stays the operator's: no host, port, user or schema to a caller.
    let said = answer.to_string();
    for secret in [proxy.addr().port().to_string(), "postgres".into(), schema_name(&schema)] {
        assert!(!said.contains(&secret), "the 503 names {secret}: {said}");
    }
    assert!(waited < std::time::Duration::from_secs(15), "the 503 took {waited:?}");
    let ready = client.get(format!("{}/readyz", server.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "ready without its store");

    proxy.restore();
    let every = std::time::Duration::from_millis(200);
    let within = std::time::Duration::from_secs(30);
    let answer = async || {
        let response = post().await.ok()?;
        response.status().is_success().then_some(())?;
        response.json::<serde_json::Value>().await.ok()
    };
    let stored = polled_within(within, every, answer, Option::is_some).await;
    let stored = stored.expect("not stored once the store was back");
    let again = answer().await.expect("sent again");
    assert_eq!(again["event_id"], stored["event_id"], "stored twice: {stored} {again}");
    let (_, status) = ask(&server, "c", "third").await;
    assert_eq!(status, "completed");
    let turns = server.all_turns(&session).await;
    let mut texts: Vec<String> = turns
        .iter()
        .flat_map(|t| t["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect();
    texts.sort();
    assert_eq!(texts, ["first", "second", "third"], "each event once: {turns:?}");
}

/// `clade demo cloud` (what `scripts/demo-cloud` runs): three nodes come up, people's
/// conversations and an agent's message to another run through any node, a node is killed
/// and every conversation it ran answers again through the others; the schema it made is
/// gone afterwards. A store that is not PostgreSQL is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_cloud_carries_a_killed_nodes_conversations_on() {
    let Some(nats) = clade_test_support::nats_url() else { return };
    let database = clade_test_support::pg_admin_url();
    let env = Env::new();
    let demo = env.run(&["demo", "cloud", "--database", &database, "--nats", &nats]).ok();
    let out = &demo.stdout;
    assert!(out.contains("shards spread over the nodes: n0 4, n1 4, n2 4"), "{out}");
    assert_eq!(out.matches("-> ada: \"hello from desk").count(), 6, "{out}");
    assert!(out.contains("[ada -> bo]") && out.contains("bo's turn ran"), "{out}");
    let killed = out.lines().find(|l| l.starts_with("killing n")).unwrap_or_default();
    let orphans = killed.matches("desk-").count();
    assert!(orphans > 0, "{out}");
    assert_eq!(out.matches("\"are you still there?\"; ada, now on").count(), orphans, "{out}");
    assert!(out.contains("every conversation carried on"), "{out}");
    let ours = out.split("(schema ").nth(1).and_then(|s| s.split(')').next()).expect("a schema");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database).await.unwrap();
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'clade_demo_%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!left.iter().any(|(name,)| name == ours), "schema {ours} left behind");

    env.run(&["demo", "cloud", "--database", "/tmp/clade.db"]).fails_with("PostgreSQL");
}

/// `clade pair node` on the gateway's machine (`hub`'s data dir) for the worker waiting at
/// `url`: what it printed.
fn pair_node(hub: &Env, url: &str, name: &str) -> String {
    let paired = hub
        .command()
        .env(super::remote::PAIR_TOKEN.0, super::remote::PAIR_TOKEN.1)
        .args(["pair", "node", url, name])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&paired.stdout).into_owned();
    assert!(paired.status.success(), "{said}{}", String::from_utf8_lossy(&paired.stderr));
    said
}

/// `clade node join --hub`: a worker waits to be paired, the operator pairs it from the
/// gateway (`clade pair node`), and it takes the cluster's configuration and store from the
/// gateway and runs its share of the sessions with no API of its own; `clade node list` shows
/// it a worker. The join route answers only the key paired under the name asked: not a
/// tenant's token, not another key, not the worker's key under another name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joins_through_its_gateway_and_runs_sessions_without_an_api() {
    use super::remote::{PAIR_TOKEN, signed};
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let Some(nats) = clade_test_support::nats_url() else { return };
    let cluster = cluster_name();
    let hub = node(schema.url(), &nats, &cluster, "hub", 8);
    hub.run(&["agents", "create", "ada"]).ok();
    let on_hub = hub.serve(&[]);
    let (status, _) = on_hub.send("GET", "/cluster/join/w1", Some(&on_hub.token), None).await;
    assert_eq!(status, 401, "a token is no node's key");

    let worker = Env::new();
    let args = ["node", "join", "--hub", &on_hub.url, "--listen", "127.0.0.1:0"];
    let waiting = worker.spawn_service(&args, &[PAIR_TOKEN]).expect("the worker printed nothing");
    let said = pair_node(&hub, &waiting.url, "w1");
    assert!(said.contains("paired worker node w1"), "{said}");

    let every = std::time::Duration::from_millis(100);
    let within = std::time::Duration::from_secs(30);
    let split = polled_within(within, every, async || nodes(&hub), |n| n.len() == 2).await;
    assert_eq!(split.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), ["hub", "w1"]);
    let listed = hub.run(&["node", "list", "--json"]).ok().json();
    let roles: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["role"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(roles, [("hub", "gateway"), ("w1", "worker")]);
    // Its pairing listener is gone, and it serves nothing else.
    assert!(reqwest::get(&waiting.url).await.is_err(), "the worker still listens");
    assert!(!worker.data_dir().join("gateway.url").exists());

    // The hub answers every event; a session in a shard the worker holds ran there (the hub is
    // fenced off it), so its turn completing shows the worker ran it.
    let on_worker = shards_of(&hub, "w1");
    assert!(!on_worker.is_empty(), "{listed}");
    let mut ran_on_worker = 0;
    for n in 0..24 {
        let (session, status) = ask(&on_hub, &format!("c{n}"), "hello").await;
        assert_eq!(status, "completed", "{session}");
        if on_worker.contains(&shard_of(&session, 8)) {
            ran_on_worker += 1;
        }
        if ran_on_worker == 2 {
            break;
        }
    }
    assert_eq!(ran_on_worker, 2, "no session fell in the worker's shards {on_worker:?}");

    // Its key under another name, and a key never paired, are refused alike.
    let key = clade_tools::remote::identity::Identity::load_or_create(
        &worker.data_dir().join("remote.key"),
    )
    .unwrap();
    let now = clade_core::Clock::now(&clade_core::SystemClock).as_millis();
    let (status, _) = signed(&on_hub.url, &key, "GET", "/cluster/join/hub", None, now).await;
    assert_eq!(status, 401, "the worker's key under another node's name");
    let (status, joined) =
        signed(&on_hub.url, &key, "GET", "/cluster/join/w1", None, now + 1).await;
    assert_eq!(status, 200, "{joined}");
    assert!(joined["config"].as_str().unwrap().contains(&cluster), "{joined}");
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger =
        clade_tools::remote::identity::Identity::load_or_create(&stranger_dir.path().join("k"))
            .unwrap();
    let (status, _) = signed(&on_hub.url, &stranger, "GET", "/cluster/join/w1", None, now).await;
    assert_eq!(status, 401, "a key never paired");
    drop(waiting);
}

/// A worker pointed at what is not a URL is refused at once; paired with a gateway that runs
/// alone (no `cluster:`), it is told so and stops, naming the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_a_gateway_running_alone_is_told_so_and_stops() {
    use super::remote::PAIR_TOKEN;
    let worker = Env::new();
    worker.run(&["node", "join", "--hub", "gateway:7420"]).fails_with("is not an http://");
    let alone = Env::new();
    let gateway = alone.serve(&[]);
    let args = ["node", "join", "--hub", &gateway.url, "--listen", "127.0.0.1:0"];
    let mut waiting =
        worker.spawn_service(&args, &[PAIR_TOKEN]).expect("the worker printed nothing");
    pair_node(&alone, &waiting.url, "w1");
    assert!(waiting.exits_within(std::time::Duration::from_secs(30)), "the worker ran on");
    let said = waiting.stop();
    assert!(said.contains("runs alone") && said.contains("409"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}
