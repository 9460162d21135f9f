//! A CLI paired as an operator through the real binaries: `clade remote listen` on "another
//! machine" (its own data dir) waits, `clade pair cli` pairs it from the gateway; it then talks
//! to the agents it was given with its key alone, and nothing else: another agent, a scope it
//! lacks, a replayed, stale or forged request, a gateway that is not the one paired, and after
//! `clade pair remove`, nothing at all.

use std::time::Duration;

use clade_core::Clock as _;
use clade_protocol::remote_tools::{PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER};
use clade_tools::remote::identity::{self, Identity};
use serde_json::{Value, json};

use super::support::{Env, PATIENCE, POLL, gathered, polled_blocking, polled_within};

pub(super) const PAIR_TOKEN: (&str, &str) = ("CLADE_PAIR_TOKEN", "pairing-secret-0123456789");

/// A request signed with `key` at `time`: its status and JSON answer.
pub(super) async fn signed(
    url: &str,
    key: &Identity,
    method: &str,
    path: &str,
    body: Option<Value>,
    time: i64,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let text = identity::request_text(method, path, time, &body);
    let signature = key.sign(&[identity::REQUEST, &text]);
    send(url, key, method, path, body, time, &signature).await
}

async fn send(
    url: &str,
    key: &Identity,
    method: &str,
    path: &str,
    body: Vec<u8>,
    time: i64,
    signature: &str,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{url}{path}"))
        .header(PEER_HEADER, key.public())
        .header(PEER_TIME_HEADER, time.to_string())
        .header(PEER_SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_cli_reaches_what_it_was_given_with_its_key_until_unpaired() {
    let gateway = Env::new();
    gateway.run(&["agents", "create", "ada"]).ok();
    gateway.run(&["agents", "create", "bo"]).ok();
    let server = gateway.serve(&[]);
    let laptop = Env::new();

    // Without the pairing token, nothing is paired; with it, the waiting CLI keeps the gateway.
    let mut waiting = listen(&laptop, &server.url);
    let wrong = gateway
        .command()
        .env(PAIR_TOKEN.0, "not-the-token")
        .args(["pair", "cli", &waiting.url, "laptop", "--agents", "default/ada"])
        .output()
        .unwrap();
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let paired = gateway
        .command()
        .env(PAIR_TOKEN.0, PAIR_TOKEN.1)
        .args(["pair", "cli", &waiting.url, "laptop", "--agents", "default/ada"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&paired.stdout);
    assert!(paired.status.success(), "{said}{}", String::from_utf8_lossy(&paired.stderr));
    assert!(said.contains("paired operator laptop"), "{said}");
    assert!(waiting.exits_within(Duration::from_secs(10)), "remote listen did not end once paired");

    // Its key is all it needs: it reaches ada, and only ada.
    let status = laptop.run(&["remote", "status"]).ok().stdout;
    assert!(
        status.contains("paired as laptop") && status.contains("agents it reaches: ada"),
        "{status}"
    );
    let reply = laptop.run(&["remote", "send", "--agent", "ada", "hello"]).ok().stdout;
    assert_eq!(reply.trim(), "echo: hello");
    laptop.run(&["remote", "send", "--agent", "bo", "hello"]).fails_with("agent \"bo\" not found");
    let chat =
        laptop.run_with_stdin(&["remote", "chat", "--agent", "ada"], "one\ntwo\n").ok().stdout;
    assert!(chat.contains("echo: one") && chat.contains("echo: two"), "{chat}");

    // Signed by hand with its key: a scope it lacks, a replay, a stale time and a forgery are
    // refused.
    let key = Identity::load_or_create(&laptop.data_dir().join("remote.key")).unwrap();
    let now = clade_core::SystemClock.now().as_millis();
    let (status, answer) =
        signed(&server.url, &key, "POST", "/v1/agents", Some(json!({ "handle": "made" })), now)
            .await;
    assert_eq!((status, answer["error"]["code"].clone()), (403, json!("forbidden")), "{answer}");
    let body = json!({ "agent": "ada", "text": "once", "wait": true,
        "source": { "platform": "cli", "channel": "c", "actor": "a" } });
    let bytes = body.to_string().into_bytes();
    let text = identity::request_text("POST", "/v1/events", now, &bytes);
    let signature = key.sign(&[identity::REQUEST, &text]);
    let (status, answer) =
        send(&server.url, &key, "POST", "/v1/events", bytes.clone(), now, &signature).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) =
        send(&server.url, &key, "POST", "/v1/events", bytes.clone(), now, &signature).await;
    assert_eq!(status, 401, "a replay was taken: {answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("taken already"), "{answer}");
    let stale = now - 10 * 60 * 1000;
    let (status, answer) = signed(&server.url, &key, "GET", "/v1/agents", None, stale).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) =
        send(&server.url, &key, "GET", "/v1/agents", Vec::new(), now + 1, &signature).await;
    assert_eq!(status, 401, "a signature of another request was taken");
    let stranger = Identity::ephemeral().unwrap();
    let (status, answer) = signed(&server.url, &stranger, "GET", "/v1/agents", None, now).await;
    assert_eq!(status, 401, "{answer}");

    // Pointed at another gateway, the CLI sends it nothing: that gateway cannot prove the key.
    let other = Env::new();
    let impostor = other.serve(&[]);
    let profile_path = laptop.data_dir().join("remote.json");
    let profile = std::fs::read_to_string(&profile_path).unwrap();
    std::fs::write(&profile_path, profile.replace(&server.url, &impostor.url)).unwrap();
    laptop.run(&["remote", "status"]).fails_with("did not prove");
    std::fs::write(&profile_path, profile).unwrap();

    // Unpaired: its key no longer counts, and its token is revoked.
    gateway.run(&["pair", "remove", "laptop"]).ok();
    laptop.run(&["remote", "status"]).fails_with("not paired with this gateway");
    let tokens = gateway.run(&["tokens", "list", "--json"]).ok().json();
    let peer_token =
        tokens.as_array().unwrap().iter().find(|t| t["name"] == "peer:laptop").unwrap();
    assert!(!peer_token["revoked_at"].is_null(), "{peer_token}");
    let audit = server.get_json("/v1/audit?limit=500").await;
    let kinds: Vec<&str> =
        audit["items"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"peer.paired") && kinds.contains(&"peer.removed"), "{kinds:?}");
}

/// `clade remote listen` on the laptop, waiting for the gateway at `gateway` to pair it.
fn listen(laptop: &Env, gateway: &str) -> super::support::Server {
    laptop
        .spawn_service(
            &["remote", "listen", "--listen", "127.0.0.1:0", "--gateway", gateway],
            &[PAIR_TOKEN],
        )
        .expect("clade remote listen printed nothing")
}

/// A request signed with `key`, each at a new time (a repeated signature is a replay).
async fn as_laptop(
    url: &str,
    key: &Identity,
    at: &mut i64,
    method: &str,
    path: String,
    body: Option<Value>,
) -> (u16, Value) {
    *at += 1;
    signed(url, key, method, &path, body, *at).await
}

/// Leases `scope` to the operator `laptop` for `ttl`; the lease's id.
fn grant_to_laptop(gateway: &Env, scope: &[&str], ttl: &str) -> String {
    let mut args = vec!["lease", "grant", "laptop", "--kind", "operator", "--ttl", ttl];
    args.extend_from_slice(scope);
    let granted = gateway.run(&args).ok().stdout;
    assert!(granted.contains("to operator laptop"), "{granted}");
    granted.split_whitespace().nth(1).unwrap().to_owned()
}

/// Waits up to 10 s for `done` to hold of the lease `id` (as `clade lease list --json` shows it).
fn lease_becomes(gateway: &Env, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let lease = || {
        let leases = gateway.run(&["lease", "list", "--json"]).ok().json();
        leases.as_array().unwrap().iter().find(|l| l["id"] == id).unwrap().clone()
    };
    // Each look runs the CLI: a slower pace than a plain read.
    polled_blocking(Duration::from_secs(10), Duration::from_millis(100), lease, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_cli_reaches_one_session_only_while_its_lease_lives_and_its_chat_runs() {
    let gateway = Env::new();
    gateway.run(&["agents", "create", "ada"]).ok();
    let server = gateway.serve(&[]);
    let mut sessions = Vec::new();
    let mut turns = Vec::new();
    for channel in ["one", "two"] {
        let body = json!({ "agent": "ada", "text": "hi", "wait": true,
            "source": { "platform": "web", "channel": channel, "actor": "u" } });
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        sessions.push(answer["session_id"].as_str().unwrap().to_owned());
        turns.push(answer["turn_id"].as_str().unwrap().to_owned());
    }
    let (leased, other) = (sessions[0].as_str(), sessions[1].as_str());

    let laptop = Env::new();
    let mut waiting = listen(&laptop, &server.url);
    let paired = gateway
        .command()
        .env(PAIR_TOKEN.0, PAIR_TOKEN.1)
        .args(["pair", "cli", &waiting.url, "laptop", "--leased", "--agents", "default/*"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&paired.stdout);
    assert!(paired.status.success(), "{said}{}", String::from_utf8_lossy(&paired.stderr));
    assert!(said.contains("reaches what a tenant leases to it"), "{said}");
    assert!(waiting.exits_within(Duration::from_secs(10)));

    // Paired, but leased nothing: it reaches nothing.
    let status = laptop.run(&["remote", "status"]).ok().stdout;
    assert!(status.trim_end().ends_with("agents it reaches:"), "{status}");
    laptop
        .run(&["remote", "send", "--agent", "ada", "hello"])
        .fails_with("agent \"ada\" not found");
    laptop
        .run_with_stdin(&["remote", "chat", "--session", leased], "hello\n")
        .fails_with("is it leased to this CLI");

    // A lease of one session, for it as an operator (not as a subscriber: none is named so).
    gateway
        .run(&["lease", "grant", "laptop", "--session", leased, "--ttl", "1h"])
        .fails_with("no paired subscriber named \"laptop\"");
    let lease_id = grant_to_laptop(&gateway, &["--session", leased], "1h");

    // Signed by hand: that session, and nothing beside it.
    let key = Identity::load_or_create(&laptop.data_dir().join("remote.key")).unwrap();
    let mut at = clade_core::SystemClock.now().as_millis();
    let (status, answer) =
        as_laptop(&server.url, &key, &mut at, "GET", format!("/v1/sessions/{leased}"), None).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) =
        as_laptop(&server.url, &key, &mut at, "GET", format!("/v1/sessions/{other}"), None).await;
    assert_eq!(status, 404, "another session of the same agent was reachable");
    let (status, _) =
        as_laptop(&server.url, &key, &mut at, "GET", format!("/v1/sessions/{other}/turns"), None)
            .await;
    assert_eq!(status, 404);
    let (status, answer) =
        as_laptop(&server.url, &key, &mut at, "GET", "/v1/sessions".into(), None).await;
    assert_eq!((status, answer["items"].as_array().map(Vec::len)), (200, Some(0)), "{answer}");
    let into_other = json!({ "session": other, "text": "sneak", "wait": true });
    let (status, _) =
        as_laptop(&server.url, &key, &mut at, "POST", "/v1/events".into(), Some(into_other)).await;
    assert_eq!(status, 404, "it sent into a session it was not leased");
    let new_session = json!({ "agent": "ada", "text": "sneak", "wait": true,
        "source": { "platform": "web", "channel": "three", "actor": "u" } });
    let (status, _) =
        as_laptop(&server.url, &key, &mut at, "POST", "/v1/events".into(), Some(new_session)).await;
    assert_eq!(status, 404, "it opened a session of an agent it was not leased");
    let not_the_source = json!({ "session": leased, "text": "x",
        "source": { "platform": "web", "channel": "two", "actor": "u" } });
    let (status, answer) =
        as_laptop(&server.url, &key, &mut at, "POST", "/v1/events".into(), Some(not_the_source))
            .await;
    assert_eq!(status, 400, "{answer}");
    let extend =
        json!({ "peer": "laptop", "kind": "operator", "session": leased, "ttl_secs": 86400 });
    let (status, answer) =
        as_laptop(&server.url, &key, &mut at, "POST", "/v1/leases".into(), Some(extend)).await;
    assert_eq!((status, answer["error"]["code"].clone()), (403, json!("forbidden")), "{answer}");
    // The agent's memory is recalled in its other sessions: a lease of one may not write to it.
    let remember = json!({ "content": "Everyone's password is hunter2" });
    let path = format!("/v1/sessions/{leased}/memories");
    let (status, answer) =
        as_laptop(&server.url, &key, &mut at, "POST", path, Some(remember)).await;
    assert_eq!(status, 404, "{answer}");
    // Nor write a batch, nor spend the agent's budget mining one of its turns.
    for (path, body) in [
        (
            format!("/v1/sessions/{leased}/memories/batch"),
            json!({ "items": [{ "content": "Everyone's password is hunter2" }] }),
        ),
        (format!("/v1/sessions/{leased}/turns/{}/mine", turns[0]), json!({})),
    ] {
        let (status, answer) =
            as_laptop(&server.url, &key, &mut at, "POST", path.clone(), Some(body)).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }

    // Its chat sends into the leased session and follows it; when the chat ends, so does the
    // lease ("revoked on disconnect").
    let chat =
        laptop.run_with_stdin(&["remote", "chat", "--session", leased], "one\ntwo\n").ok().stdout;
    assert!(chat.contains("echo: one") && chat.contains("echo: two"), "{chat}");
    let turns = server.all_turns(leased).await;
    assert_eq!(turns.len(), 3, "the chat's turns are not in the leased session: {turns:?}");
    let listed = server.get_json("/v1/sessions?agent=ada").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    let ended = lease_becomes(&gateway, &lease_id, |l| !l["ended_why"].is_null());
    assert_eq!(ended["ended_why"], "disconnected", "{ended}");
    let (status, _) =
        as_laptop(&server.url, &key, &mut at, "GET", format!("/v1/sessions/{leased}"), None).await;
    assert_eq!(status, 404, "the session was reachable after its lease ended");

    // A chat under way ends when the tenant revokes its lease, saying so.
    let lease_id = grant_to_laptop(&gateway, &["--session", leased], "1h");
    let mut open_chat = laptop
        .command()
        .args(["remote", "chat", "--session", leased])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = open_chat.stdin.take();
    let (said, all_said) = gathered(open_chat.stderr.take().unwrap());
    let attached = lease_becomes(&gateway, &lease_id, |_| true);
    assert!(attached["live"].as_bool().unwrap(), "{attached}");
    // Revoked once the chat follows its session, which it says as it starts.
    let chatting = || said.lock().unwrap().contains("chatting with");
    assert!(polled_blocking(PATIENCE, POLL, chatting, |&c| c), "{}", said.lock().unwrap());
    gateway.run(&["lease", "revoke", &lease_id]).ok();
    let ended = polled_blocking(
        Duration::from_secs(10),
        POLL,
        || open_chat.try_wait().unwrap(),
        Option::is_some,
    );
    let Some(exit) = ended else {
        open_chat.kill().ok();
        panic!("the chat ran on after its lease was revoked");
    };
    assert!(!exit.success());
    let _ = all_said.recv_timeout(PATIENCE);
    let said = said.lock().unwrap().clone();
    assert!(said.contains("the gateway ended this chat"), "{said}");

    // A lease that runs out ends by itself.
    let lease_id = grant_to_laptop(&gateway, &["--agent", "ada"], "2s");
    let (status, _) =
        as_laptop(&server.url, &key, &mut at, "GET", format!("/v1/sessions/{other}"), None).await;
    assert_eq!(status, 200, "an agent's lease reaches all its sessions");
    let every = Duration::from_millis(200);
    let (status, _) = polled_within(
        Duration::from_secs(10),
        every,
        async || {
            as_laptop(&server.url, &key, &mut at, "GET", format!("/v1/sessions/{other}"), None)
                .await
        },
        |(status, _)| *status == 404,
    )
    .await;
    assert_eq!(status, 404, "an expired lease still counted");
    let expired = lease_becomes(&gateway, &lease_id, |l| !l["ended_why"].is_null());
    assert_eq!(expired["ended_why"], "expired", "{expired}");
}
