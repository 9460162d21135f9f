//! Paired subscribers through the real binaries: `clade pair subscriber` makes the gateway
//! pair with `clade subscriber-service`, which is then sent its agents' events signed with the
//! gateway's key, across restarts, while an impostor at its address is sent nothing; a
//! subscriber paired `--leased` is sent only what a live lease covers, and leases end when
//! revoked, expired or unpaired. Another tenant leases nothing of the first's.

use std::path::Path;

use serde_json::{Value, json};

use super::support::{Env, Server, eventually, polled, token};

const TOKEN_VAR: (&str, &str) = ("SUB_TOKEN", "subscriber-secret");

/// The events a subscriber wrote, one JSON object a line.
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The `turn.finished` events of `session` a subscriber wrote.
fn finished(path: &Path, session: &str) -> usize {
    events(path).iter().filter(|e| e["type"] == "turn.finished" && e["session"] == session).count()
}

/// Waits until the subscriber wrote `count` finished turns of `session`.
async fn await_finished(path: &Path, session: &str, count: usize) {
    let got = eventually(async || (finished(path, session) >= count).then_some(())).await;
    assert!(
        got.is_some(),
        "the subscriber did not get {count} finished turns of {session}: {:?}",
        events(path)
    );
}

/// One turn of `agent` for `actor`; the session id.
async fn turn(server: &Server, bearer: Option<&str>, agent: &str, actor: &str) -> String {
    let body = json!({ "agent": agent, "text": "hello", "wait": true,
        "source": { "platform": "http", "channel": "dm", "actor": actor } });
    let (status, answer) = server.send("POST", "/v1/events", bearer, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["session_id"].as_str().unwrap().to_owned()
}

fn subscriber(env: &Env, listen: &str, key: &Path, out: &Path) -> Server {
    // One peers file: a replacement with another key still knows the gateway's, as a
    // subscriber whose identity changed would.
    let peers = env.data_dir().join("subscriber.peers.json");
    env.spawn_service(
        &[
            "subscriber-service",
            "--listen",
            listen,
            "--token-env",
            TOKEN_VAR.0,
            "--identity",
            key.to_str().unwrap(),
            "--peers",
            peers.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[TOKEN_VAR],
    )
    .expect("the subscriber service printed nothing")
}

fn pair(env: &Env, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["pair", "subscriber", url, "hooks", "--token-env", TOKEN_VAR.0];
    args.extend(extra);
    let paired = env.command().env(TOKEN_VAR.0, TOKEN_VAR.1).args(&args).output().unwrap();
    let said = String::from_utf8_lossy(&paired.stdout).into_owned();
    assert!(paired.status.success(), "{said}{}", String::from_utf8_lossy(&paired.stderr));
    said
}

/// `ada` in the default tenant and in `evil`, a subscriber writing to `out`, and a gateway.
struct Setup {
    env: Env,
    evil: String,
    out: std::path::PathBuf,
    hooks: Server,
    server: Server,
}

fn setup() -> Setup {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "evil"]).ok();
    env.run(&["--tenant", "evil", "agents", "create", "ada"]).ok();
    let (evil, _) = token(&env, "evil", &["admin"]);
    let out = env.data_dir().join("events.ndjson");
    let hooks = subscriber(&env, "127.0.0.1:0", &env.data_dir().join("first.key"), &out);
    let server = env.serve(&[]);
    Setup { env, evil, out, hooks, server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_subscriber_is_sent_its_agents_events_and_an_impostor_nothing() {
    let Setup { env, evil, out, hooks, server } = setup();

    // The token authorizes pairing: without the right one, nothing is paired.
    let wrong = env
        .command()
        .env("WRONG", "nope")
        .args(["pair", "subscriber", &hooks.url, "hooks", "--token-env", "WRONG"])
        .output()
        .unwrap();
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let said = pair(&env, &hooks.url, &[]);
    assert!(said.contains("paired subscriber hooks"), "{said}");
    let listed = env.run(&["pair", "list", "--json"]).ok().json();
    assert_eq!(
        (listed[0]["kind"].clone(), listed[0]["leased"].clone()),
        (json!("subscriber"), json!(false))
    );

    // Its agents' events arrive at once; another tenant's never do.
    let ours = turn(&server, None, "ada", "grace").await;
    await_finished(&out, &ours, 1).await;
    let theirs = turn(&server, Some(&evil), "ada", "mallory").await;
    turn(&server, None, "ada", "grace").await;
    await_finished(&out, &ours, 2).await;
    assert_eq!(finished(&out, &theirs), 0, "{:?}", events(&out));
    assert!(events(&out).iter().all(|e| e["tenant"] == events(&out)[0]["tenant"]));

    // Paired for good: after a restart it is sent events with no configuration at all.
    drop(server);
    let server = env.serve(&[]);
    turn(&server, None, "ada", "grace").await;
    await_finished(&out, &ours, 3).await;

    // The subscriber comes back at its address with another key: it is sent nothing, and the
    // refusal is audited.
    let port = hooks.url.trim_end_matches('/').rsplit(':').next().unwrap().to_owned();
    drop(hooks);
    let stolen = env.data_dir().join("impostor.ndjson");
    let _impostor =
        subscriber(&env, &format!("127.0.0.1:{port}"), &env.data_dir().join("other.key"), &stolen);
    turn(&server, None, "ada", "grace").await;
    let refused = eventually(async || {
        let audit = server.get_json("/v1/audit?limit=500").await;
        let items = audit["items"].as_array().unwrap();
        items.iter().any(|r| r["kind"] == "peer.refused").then_some(())
    });
    assert!(refused.await.is_some(), "no peer.refused audit record");
    assert!(events(&stolen).is_empty(), "{:?}", events(&stolen));
    let logs = server.stop();
    assert!(logs.contains("did not sign the challenge"), "{logs}");
    env.run(&["pair", "remove", "hooks"]).ok();
    env.run(&["pair", "remove", "hooks"]).fails_with("no component named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_subscriber_is_sent_only_what_a_live_lease_covers() {
    let Setup { env, evil, out, hooks, server } = setup();
    let said = pair(&env, &hooks.url, &["--leased"]);
    assert!(said.contains("what tenants lease to it"), "{said}");

    let first = turn(&server, None, "ada", "grace").await;
    let second = turn(&server, None, "ada", "linus").await;
    let (status, lease) = server
        .send(
            "POST",
            "/v1/leases",
            None,
            Some(json!({ "peer": "hooks", "session": first, "ttl_secs": 600 })),
        )
        .await;
    assert_eq!(status, 201, "{lease}");
    assert_eq!((lease["scope"].clone(), lease["live"].clone()), (json!("session"), json!(true)));
    assert_eq!(lease["agent"], "ada");
    let id = lease["id"].as_str().unwrap().to_owned();

    // Another tenant cannot lease, see or end the first tenant's.
    let (status, answer) = server
        .send(
            "POST",
            "/v1/leases",
            Some(&evil),
            Some(json!({ "peer": "hooks", "session": first, "ttl_secs": 60 })),
        )
        .await;
    assert_eq!((status, answer["error"]["code"].clone()), (404, json!("session_not_found")));
    let (status, answer) = server
        .send("POST", "/v1/leases", Some(&evil), Some(json!({ "peer": "hooks", "ttl_secs": 60 })))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (404, json!("peer_not_found")),
        "{answer}"
    );
    let (_, theirs) = server.send("GET", "/v1/leases", Some(&evil), None).await;
    assert_eq!(theirs["items"], json!([]));
    let (status, answer) =
        server.send("DELETE", &format!("/v1/leases/{id}"), Some(&evil), None).await;
    assert_eq!((status, answer["error"]["code"].clone()), (404, json!("lease_not_found")));
    // Bad leases are refused, naming the problem.
    for (body, code) in [
        (json!({ "peer": "nobody", "ttl_secs": 60 }), "peer_not_found"),
        (json!({ "peer": "hooks", "ttl_secs": 0 }), "invalid_lease"),
        (
            json!({ "peer": "hooks", "ttl_secs": 60, "agent": "ada", "session": first }),
            "invalid_lease",
        ),
        (json!({ "peer": "hooks", "ttl_secs": 60, "session": "nope" }), "invalid_request"),
    ] {
        let (status, answer) = server.send("POST", "/v1/leases", None, Some(body.clone())).await;
        assert!(status >= 400 && answer["error"]["code"] == code, "{body} → {status} {answer}");
    }

    // Only the leased session's events made while the lease runs arrive.
    turn(&server, None, "ada", "grace").await;
    turn(&server, None, "ada", "linus").await;
    turn(&server, None, "ada", "grace").await;
    await_finished(&out, &first, 2).await;
    assert_eq!(finished(&out, &second), 0, "{:?}", events(&out));

    // Revoked: nothing more of that session. A short lease on the other session shows the
    // dispatcher passed the revoked session's next turn by.
    let (status, ended) = server.send("DELETE", &format!("/v1/leases/{id}"), None, None).await;
    assert_eq!(
        (status, ended["ended_why"].clone(), ended["live"].clone()),
        (200, json!("revoked"), json!(false))
    );
    turn(&server, None, "ada", "grace").await;
    let (status, short) = server
        .send(
            "POST",
            "/v1/leases",
            None,
            Some(json!({ "peer": "hooks", "session": second, "ttl_secs": 2 })),
        )
        .await;
    assert_eq!(status, 201, "{short}");
    turn(&server, None, "ada", "linus").await;
    await_finished(&out, &second, 1).await;
    assert_eq!(finished(&out, &first), 2, "{:?}", events(&out));

    // Expired: ended, and said so.
    let ended_why = async || {
        let all = server.get_json("/v1/leases").await;
        let leases = all["items"].as_array().unwrap();
        leases.iter().find(|l| l["id"] == short["id"]).unwrap()["ended_why"].clone()
    };
    let why = polled(ended_why, |why: &Value| why == "expired").await;
    assert_eq!(why, "expired");

    // The CLI grants, lists and refuses the same; unpairing ends every lease.
    let granted = env.run(&["lease", "grant", "hooks", "--agent", "ada", "--ttl", "10m"]).ok();
    assert!(granted.stdout.contains("to subscriber hooks"), "{}", granted.stdout);
    env.run(&["lease", "grant", "hooks", "--ttl", "0s"]).fails_with("--ttl");
    env.run(&["lease", "grant", "nobody"]).fails_with("no paired subscriber named \"nobody\"");
    env.run(&["pair", "remove", "hooks"]).ok();
    let leases = env.run(&["lease", "list", "--json"]).ok().json();
    let agents: Vec<&Value> =
        leases.as_array().unwrap().iter().filter(|l| l["scope"] == "agent").collect();
    assert_eq!(agents.len(), 1, "{leases}");
    assert_eq!(agents[0]["ended_why"], "unpaired");
    let audit = server.get_json("/v1/audit?limit=500").await;
    let kinds: Vec<&str> =
        audit["items"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"lease.granted") && kinds.contains(&"lease.ended"), "{kinds:?}");
    drop(hooks);
}
