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

use super::support::Env;

const PAIR_TOKEN: (&str, &str) = ("CLADE_PAIR_TOKEN", "pairing-secret-0123456789");

/// A request signed with `key` at `time`: its status and JSON answer.
async fn signed(
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
    let mut waiting = laptop
        .spawn_service(
            &["remote", "listen", "--listen", "127.0.0.1:0", "--gateway", &server.url],
            &[PAIR_TOKEN],
        )
        .expect("clade remote listen printed nothing");
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
