//! What a careless operator or a second process must not be able to do to a store: serve it
//! twice, read it through loose file modes, or have a truncated file taken for a new store.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use super::support::{Env, PATIENCE, eventually, holds_for, polled_within};

/// A data dir whose clade.yaml is `yaml`.
fn configured(yaml: &str) -> Env {
    let env = Env::new();
    super::support::write(&env.data_dir().join("clade.yaml"), yaml);
    env
}

/// Creates each tenant (with an agent `agent`, if given) and a token of its own; the tokens.
fn tenants_with_tokens(env: &Env, tenants: &[&str], agent: Option<&str>) -> Vec<String> {
    tenants
        .iter()
        .map(|tenant| {
            env.run(&["tenants", "create", tenant]).ok();
            if let Some(agent) = agent {
                env.run(&["--tenant", tenant, "agents", "create", agent]).ok();
            }
            env.run(&["--tenant", tenant, "tokens", "create"]).ok().stdout.trim().to_owned()
        })
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_second_server_on_one_sqlite_store_refuses_to_start() {
    let env = Env::new();
    let first = env.serve(&[]);
    let second = env.run(&["serve", "--listen", "127.0.0.1:0"]);
    let second = second.fails_with("already served by process");
    assert!(second.stderr.contains(&first.child.id().to_string()), "{}", second.stderr);
    // Another data dir pointing at the same database file is the same store.
    let other = Env::new();
    let db = env.data_dir().join("clade.db");
    other
        .run(&["--store", db.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"])
        .fails_with("stop that server first");
    // Commands other than `serve` still run beside it.
    env.run(&["agents", "list"]).ok();
    // Once the first is gone, the store can be served again.
    first.kill9();
    let again = env.serve(&[]);
    drop(again);
}

#[tokio::test]
async fn a_second_server_on_one_postgres_store_refuses_to_start() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let env = Env::new();
    let first = env.serve(&["--store", schema.url()]);
    let other = Env::new();
    // `serve` logs at `info`, so the error is its last line rather than its only one.
    let second = other.run(&["--store", schema.url(), "serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(second.code, 0);
    let last = second.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("already served by another clade serve process"),
        "{}",
        second.stderr
    );
    first.kill9();
    // The lock went with the first server's connection.
    let again = other.serve(&["--store", schema.url()]);
    drop(again);
}

#[test]
fn the_data_dir_and_store_files_are_private_whatever_the_umask() {
    let env = Env::new();
    let dir = env.data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("clade");
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(&bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CLADE_DATA_DIR", &dir)
        .env_remove("CLADE_STORE")
        .env_remove("CLADE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    assert_eq!(mode(&dir), 0o700, "data dir");
    for file in ["clade.db", "clade.db-wal", "clade.db-shm", "clade.db.lock", "token"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let _ = child.kill();
    let _ = child.wait();
    // A file made readable by others since is made private again at the next open.
    std::fs::set_permissions(dir.join("clade.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    env.run(&["agents", "list"]).ok();
    assert_eq!(mode(&dir.join("clade.db")), 0o600);
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("seccomp"))
            .count(),
        0,
        "no seccomp filter is kept on disk, where it could be replaced"
    );
}

#[test]
fn an_empty_database_file_is_refused_not_taken_for_a_new_store() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let db = env.data_dir().join("clade.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(env.data_dir().join(format!("clade.db{suffix}")));
    }
    std::fs::File::create(&db).unwrap(); // Truncates it.
    env.run(&["agents", "list"]).fails_with("is empty (0 bytes)");
    env.run(&["serve", "--listen", "127.0.0.1:0"]).fails_with("restore it from a backup");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "the file is left as it was");
}

/// Bytes changed inside a page (50 of them, in a record that keeps its length, which SQLite's
/// own quick check cannot see) fail the page's checksum: `serve` refuses to start, naming the
/// file and the way out for a change made on purpose, and other commands refuse to read it.
#[test]
fn a_store_whose_bytes_changed_on_disk_is_refused() {
    let env = Env::new();
    let handle = format!("marked-{}", "q".repeat(57));
    env.run(&["agents", "create", &handle]).ok();
    // Folds the WAL into the database file, where the bytes are then changed.
    env.run(&["migrate", "--rewrite-checksums"]).ok();
    let db = env.data_dir().join("clade.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes
        .windows(handle.len())
        .position(|window| window == handle.as_bytes())
        .expect("the agent's handle is in the database file");
    bytes[at + 7..at + 57].copy_from_slice(&[b'z'; 50]);
    std::fs::write(&db, &bytes).unwrap();

    let refused = env.run(&["serve", "--listen", "127.0.0.1:0"]).fails_with("checksum");
    let error = refused.stderr.trim();
    assert!(error.contains(&db.display().to_string()), "names the file: {error}");
    assert!(error.contains("--rewrite-checksums") && error.contains("backup"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    env.run(&["agents", "list"]).fails_with("checksum");
    // The operator accepts the file as it is: it reads again, changed bytes and all.
    env.run(&["migrate", "--rewrite-checksums"]).ok();
    env.run(&["agents", "list"]).ok();
    assert!(std::fs::read(&db).unwrap().windows(50).any(|w| w == [b'z'; 50]), "left as changed");
}

#[test]
fn a_store_that_cannot_be_opened_is_named_once() {
    let env = Env::new();
    let out = env.run(&["--store", "/proc/x/clade.db", "agents", "list"]);
    let out = out.fails_with("/proc/x/clade.db");
    assert_eq!(out.stderr.matches("unable to open").count(), 1, "{}", out.stderr);
}

// ---- Streams and credentials -------------------------------------------------------------

use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _};

/// A tenant `acme` with agent `ada` and a token of its own: (token id, secret).
fn acme(env: &Env) -> (String, String) {
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "ada"]).ok();
    let out = env.run(&["--tenant", "acme", "tokens", "create", "--name", "stream"]).ok();
    let id = out.stderr.split_whitespace().nth(1).unwrap().to_owned();
    (id, out.stdout.trim().to_owned())
}

async fn websocket(
    server: &super::support::Server,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/v1/ws", server.url.replace("http://", "ws://"));
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next frame that is not a ping, within 5 s.
async fn next_frame<S>(socket: &mut S) -> Option<Message>
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Err(_) => panic!("no frame within 5 s"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => return Some(message),
        }
    }
}

async fn close_code<S>(socket: &mut S) -> Option<u16>
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match next_frame(socket).await? {
            Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
            _ => continue,
        }
    }
}

/// A WebSocket of `token`'s, once subscribed to `what` (`{"session": id}` or `{"agent": h}`).
async fn subscribed(
    server: &super::support::Server,
    token: &str,
    what: Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut socket = websocket(server, token).await;
    let mut subscribe = json!({ "type": "subscribe" });
    subscribe.as_object_mut().unwrap().extend(what.as_object().unwrap().clone());
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    assert!(
        matches!(next_frame(&mut socket).await, Some(Message::Text(t)) if t.contains("subscribed"))
    );
    socket
}

/// The SSE stream at `path`, opened with `token`.
async fn event_stream(
    server: &super::support::Server,
    token: &str,
    path: &str,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<> {
    let sse = reqwest::Client::new()
        .get(format!("{}{path}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    sse.bytes_stream()
}

/// What an SSE stream sends until it ends, or is silent for `silence`.
async fn rest_of<S>(sse: &mut S, silence: Duration) -> String
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    let mut tail = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(silence, sse.next()).await {
        tail.push_str(&String::from_utf8_lossy(&chunk));
    }
    tail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_close_within_a_second_of_their_token_being_revoked_or_tenant_deleted() {
    let env = Env::new();
    let (token_id, token) = acme(&env);
    let server = env.serve(&[]);
    let (status, body) = super::support::request(
        &server.url,
        &token,
        "POST",
        "/v1/events",
        Some(json!({ "agent": "ada", "text": "hi", "source": { "platform": "http", "channel": "c", "actor": "me" }, "wait": true })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().or(body["sessionId"].as_str()).unwrap().to_owned();

    let mut socket = subscribed(&server, &token, json!({ "session": session })).await;
    let mut sse = event_stream(&server, &token, &format!("/v1/sessions/{session}/events")).await;
    // The replay of the turn's events comes first.
    let mut seen = String::new();
    while !seen.contains("turn.finished") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), sse.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    env.run(&["--tenant", "acme", "tokens", "revoke", &token_id]).ok();
    let revoked = Instant::now();
    assert_eq!(
        close_code(&mut socket).await,
        Some(1008),
        "the WebSocket closes as a policy violation"
    );
    let tail = rest_of(&mut sse, Duration::from_secs(5)).await;
    assert!(tail.contains("event: error") && tail.contains("invalid_token"), "{tail}");
    assert!(revoked.elapsed() < Duration::from_secs(3), "closed after {:?}", revoked.elapsed());

    // A deleted tenant's streams end the same way.
    env.run(&["tenants", "create", "brief"]).ok();
    env.run(&["--tenant", "brief", "agents", "create", "bo"]).ok();
    let brief = env.run(&["--tenant", "brief", "tokens", "create"]).ok().stdout.trim().to_owned();
    let mut socket = subscribed(&server, &brief, json!({ "agent": "bo" })).await;
    env.run(&["tenants", "delete", "brief", "--yes"]).ok();
    assert_eq!(close_code(&mut socket).await, Some(1008));
}

/// A token made with `--expires-in` works until then; at expiry its open streams end as a
/// revoked token's do, and its next request is refused as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tokens_streams_end_and_its_requests_are_refused() {
    let env = Env::new();
    acme(&env);
    let made = env.run(&["--tenant", "acme", "tokens", "create", "--expires-in", "4s"]).ok();
    let made_at = Instant::now();
    let token = made.stdout.trim().to_owned();
    let server = env.serve(&[]);
    let (status, body) =
        super::support::request(&server.url, &token, "GET", "/v1/agents", None).await;
    assert_eq!(status, 200, "the token works before it expires: {body}");
    let mut socket = subscribed(&server, &token, json!({ "agent": "ada" })).await;
    let mut sse = event_stream(&server, &token, "/v1/agents/ada/events").await;
    assert!(made_at.elapsed() < Duration::from_secs(4), "too slow to test before expiry");

    assert_eq!(close_code(&mut socket).await, Some(1008), "the WebSocket closes at expiry");
    let tail = rest_of(&mut sse, Duration::from_secs(10)).await;
    assert!(tail.contains("event: error") && tail.contains("invalid_token"), "{tail}");
    assert!(made_at.elapsed() >= Duration::from_secs(4), "closed before expiry");
    let (status, body) =
        super::support::request(&server.url, &token, "GET", "/v1/agents", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_frames_get_close_codes_and_wrong_types_are_named() {
    use tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);

    let mut socket = websocket(&server, &server.token).await;
    socket
        .send(Message::Text(json!({ "type": "subscribe", "session": 12 }).to_string().into()))
        .await
        .unwrap();
    let Some(Message::Text(reply)) = next_frame(&mut socket).await else { panic!("no reply") };
    assert!(reply.contains("\\\"session\\\" must be a string"), "{reply}");
    socket.send(Message::Text("x".repeat(400 * 1024).into())).await.unwrap();
    assert_eq!(close_code(&mut socket).await, Some(1009), "oversize message");

    let mut socket = websocket(&server, &server.token).await;
    let invalid = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(invalid)).await.unwrap();
    assert_eq!(close_code(&mut socket).await, Some(1007), "invalid UTF-8");

    // A handshake whose key is not 16 bytes of base64 is refused before any upgrade, as the
    // document's pattern says; a well-formed one is switched.
    let handshake = |key: &str| {
        format!(
            "GET /v1/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
            server.token
        )
    };
    let address = server.url.trim_start_matches("http://").to_owned();
    for (key, status) in [("not base64 at all!", "400"), ("dGhlIHNhbXBsZSBub25jZQ==", "101")] {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut raw = tokio::net::TcpStream::connect(&address).await.unwrap();
        raw.write_all(handshake(key).as_bytes()).await.unwrap();
        let mut head = vec![0; 512];
        let read = raw.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..read]);
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{key}: {head}");
        if status == "400" {
            assert!(head.contains("Sec-WebSocket-Key"), "{head}");
        }
    }

    // The server is still fine.
    let (status, _) = server.send("GET", "/v1/agents", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_a_bad_header_is_not_missing() {
    let env = Env::new();
    let server = env.serve(&[]);
    let client = reqwest::Client::new();
    let get = |auth: Option<String>| {
        let mut request = client.get(format!("{}/v1/agents", server.url));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (status, body) = get(Some(format!("{scheme} {}", server.token))).await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let (status, body) = get(Some(format!("Basic {}", server.token))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{body}");
    let (status, body) = get(None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("missing_token")), "{body}");
}

#[tokio::test]
async fn names_that_would_spoof_listings_or_flags_are_refused() {
    let env = Env::new();
    env.run(&["agents", "create", "--", "-rf"]).fails_with("starting with a letter or digit");
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let (status, body) =
        server.send("POST", "/v1/agents", None, Some(json!({ "handle": "-x" }))).await;
    assert_eq!(status, 400, "{body}");
    for channel in ["a\u{202e}txt.exe", "zero\u{200b}width", "bell\u{7}", "line\nbreak"] {
        let (status, body) = server
            .send(
                "POST",
                "/v1/events",
                None,
                Some(json!({ "agent": "ada", "text": "hi", "source": { "platform": "http", "channel": channel, "actor": "me" } })),
            )
            .await;
        assert_eq!(status, 400, "{channel:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("source.channel"), "{body}");
    }
}

/// Lifecycle events reach a live stream once each, in order: `turn.started` before the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sees_each_lifecycle_event_once() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let mut socket = websocket(&server, &server.token).await;
    socket
        .send(Message::Text(json!({ "type": "subscribe", "agent": "ada" }).to_string().into()))
        .await
        .unwrap();
    assert!(
        matches!(next_frame(&mut socket).await, Some(Message::Text(t)) if t.contains("subscribed"))
    );
    let (status, _) = server
        .send("POST", "/v1/events", None, Some(json!({ "agent": "ada", "text": "/tool time.now", "source": { "platform": "http", "channel": "c", "actor": "me" } })))
        .await;
    assert_eq!(status, 202);
    let mut kinds = Vec::new();
    while !kinds.iter().any(|k| k == "turn.finished") {
        let Some(Message::Text(text)) = next_frame(&mut socket).await else { panic!("closed") };
        let frame: Value = serde_json::from_str(&text).unwrap();
        kinds.push(frame["kind"].as_str().unwrap().to_owned());
    }
    let lifecycle: Vec<&String> = kinds.iter().filter(|k| *k != "text.delta").collect();
    assert_eq!(lifecycle.iter().filter(|k| **k == "turn.started").count(), 1, "{kinds:?}");
    assert_eq!(kinds.first().map(String::as_str), Some("turn.started"), "{kinds:?}");
}

// ---- Network for sandboxed commands --------------------------------------------------------

/// A network grant reaches the outside only through the egress proxy, which never opens the
/// gateway, the store's database or the host's other loopback services, private ranges or
/// metadata addresses; a host the grant names (with `private_network`) is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_grant_never_reaches_the_gateway_the_store_or_private_ranges() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "shell.exec", "--network"]).ok();
    let server = env.serve(&[]);
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = open.accept().await {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nallowed",
                )
                .await;
        }
    });
    let gateway = server.url.clone();
    let script = format!(
        r#"
import socket, urllib.request, urllib.error
for url in ['{gateway}/healthz', 'http://127.0.0.1:5432/', 'http://localhost:{open_port}/', 'http://10.0.0.1/', 'http://172.16.0.1/', 'http://169.254.169.254/', 'http://[fd00:ec2::254]/']:
    try:
        print('fetch', url, urllib.request.urlopen(url, timeout=5).read().decode())
    except urllib.error.HTTPError as e:
        print('fetch', url, e.code)
    except Exception as e:
        print('fetch', url, 'error', e)
for port in (5432, {open_port}, int('{gateway}'.rsplit(':', 1)[1])):
    try:
        socket.create_connection(('127.0.0.1', port), 2); print('direct', port, 'open')
    except OSError as e:
        print('direct', port, 'closed')
s = socket.create_connection(('127.0.0.1', 3128), 5)
s.sendall(b'CONNECT 127.0.0.1:5432 HTTP/1.1\r\n\r\n')
print('tunnel', s.recv(100).split(b'\r\n')[0].decode())
"#
    );
    let call = |script: String| {
        let server = &server;
        async move {
            let (status, body) = server
                .send(
                    "POST",
                    "/v1/agents/ada/tools/shell.exec/call",
                    None,
                    Some(json!({ "arguments": { "argv": ["python3", "-c", script] } })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["content"].as_str().unwrap_or_default().to_owned()
        }
    };
    let out = call(script.clone()).await;
    for line in out.lines().filter(|l| l.starts_with("fetch ")) {
        assert!(line.ends_with(" 403"), "refused by the proxy: {line}\n{out}");
    }
    assert_eq!(out.lines().filter(|l| l.starts_with("fetch ")).count(), 7, "{out}");
    assert_eq!(out.matches(" closed").count(), 3, "no route around the proxy: {out}");
    assert!(out.contains("tunnel HTTP/1.1 403"), "{out}");
    // Each refusal is in the audit log, recorded by the daemon.
    let audit = server.get_json("/v1/audit?agent=ada&limit=1000").await;
    let denied: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "sandbox.denied")
        .filter(|r| r["detail"].to_string().contains("egress refused"))
        .collect();
    assert!(!denied.is_empty(), "{audit}");

    // A grant naming the host, with private_network, reaches it (and only it).
    env.run(&[
        "--agent",
        "ada",
        "grants",
        "add",
        "--tool",
        "shell.exec",
        "--resource",
        "python3 **",
        "--network",
        "--private-network",
        "--host",
        &format!("127.0.0.1:{open_port}"),
    ])
    .ok();
    let out = call(script).await;
    assert!(
        out.contains(&format!("fetch http://localhost:{open_port}/ 403")),
        "named by address, not by name: {out}"
    );
    let named = call(format!(
        "import urllib.request\nprint('got', urllib.request.urlopen('http://127.0.0.1:{open_port}/', timeout=5).read().decode())\ntry:\n    urllib.request.urlopen('{gateway}/healthz', timeout=5)\nexcept Exception as e:\n    print('gateway', e)\n"
    ))
    .await;
    assert!(named.contains("got allowed"), "{named}");
    assert!(named.contains("gateway HTTP Error 403"), "{named}");
}

/// A tenant's own token grants its agents only what the operator's ceiling for that tenant
/// allows; narrowing grants (deny, ask) are always accepted, and the operator's own default
/// tenant is unbounded unless configured.
#[tokio::test]
async fn a_tenant_grants_only_within_the_operators_ceiling() {
    let env = configured(
        "tenants:\n  acme:\n    ceiling: { tools: [\"fs.*\", shell.exec], network: false }\n",
    );
    let tokens = tenants_with_tokens(&env, &["acme", "rival"], Some("ada"));
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let grant = |token: &str, body: Value| {
        let (url, token, body) = (server.url.clone(), token.to_owned(), body);
        async move { super::support::request(&url, &token, "POST", "/v1/grants", Some(body)).await }
    };
    let (acme, rival) = (&tokens[0], &tokens[1]);
    let cases = [
        (acme, json!({ "agent": "ada", "tool": "fs.read" }), 201),
        (acme, json!({ "agent": "ada", "tool": "shell.exec", "resource": "git status **" }), 201),
        (acme, json!({ "agent": "ada", "tool": "*" }), 403),
        (acme, json!({ "agent": "ada", "tool": "http.request" }), 403),
        (
            acme,
            json!({ "agent": "ada", "tool": "shell.exec", "constraints": { "network": true } }),
            403,
        ),
        (
            acme,
            json!({ "agent": "ada", "tool": "shell.exec", "constraints": { "private_network": true } }),
            403,
        ),
        (
            acme,
            json!({ "agent": "ada", "tool": "shell.exec", "constraints": { "env": ["KEY"] } }),
            403,
        ),
        (acme, json!({ "agent": "ada", "tool": "*", "effect": "deny" }), 201),
        // No ceiling configured: nothing that allows.
        (rival, json!({ "agent": "ada", "tool": "fs.read" }), 403),
        // An ask turns the default deny into a question the tenant may answer: bounded too.
        (rival, json!({ "agent": "ada", "tool": "shell.exec", "effect": "ask" }), 403),
        (rival, json!({ "agent": "ada", "tool": "shell.exec", "effect": "deny" }), 201),
        // The operator's own tenant.
        (
            &server.token,
            json!({ "agent": "ada", "tool": "shell.exec", "constraints": { "network": true } }),
            201,
        ),
    ];
    for (token, body, expected) in cases {
        let (status, answer) = grant(token, body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        if expected == 403 {
            assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains(".ceiling"), "{answer}");
        }
    }
    // Who granted is recorded.
    let audit = server.send("GET", "/v1/audit?limit=1000", Some(acme), None).await.1;
    assert!(audit.to_string().contains("tenant acme (api)"), "{audit}");
}

/// Deleting an agent kills its grants and pending approvals: a waiting call is told, the
/// approval cannot be approved any more, and a new agent with the same handle inherits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_agent_leaves_no_live_grant_or_approval_behind() {
    let env = configured(
        "tools:\n  approval_timeout_secs: 60\n  policy:\n    - { effect: ask, tool: shell.exec }\n",
    );
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "fs.read"]).ok();
    let server = env.serve(&[]);
    let (url, token) = server.address();
    let call = tokio::spawn(async move {
        let body = json!({ "arguments": { "argv": ["true"] } });
        super::support::request(
            &url,
            &token,
            "POST",
            "/v1/agents/ada/tools/shell.exec/call",
            Some(body),
        )
        .await
    });
    let approval = eventually(async || {
        let pending = server.get_json("/v1/approvals").await;
        let first = pending["items"].as_array().and_then(|a| a.first())?;
        Some(first["id"].as_str().unwrap().to_owned())
    });
    let approval = approval.await.expect("no approval was asked for");
    let (status, _) = server.send("DELETE", "/v1/agents/ada", None, None).await;
    assert_eq!(status, 204);
    let (status, answer) =
        tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["is_error"], true, "{answer}");
    assert!(answer["content"].as_str().unwrap().contains("cancelled"), "{answer}");
    let cancelled = server.get_json("/v1/approvals?status=cancelled").await;
    assert_eq!(cancelled["items"][0]["id"], approval.as_str(), "{cancelled}");
    let (status, answer) = server
        .send(
            "POST",
            &format!("/v1/approvals/{approval}"),
            None,
            Some(json!({ "decision": "approve" })),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("approval_decided")),
        "{answer}"
    );

    env.run(&["agents", "create", "ada"]).ok();
    let grants = server.get_json("/v1/grants?agent=ada").await;
    assert_eq!(grants["items"].as_array().map(Vec::len), Some(0), "{grants}");
    assert_eq!(server.get_json("/v1/approvals").await["items"].as_array().map(Vec::len), Some(0));
    // The old grant is still on record, revoked.
    let all = server.get_json("/v1/grants").await;
    assert!(all.to_string().contains("revoked"), "{all}");
}

/// A turn waiting for an approval is paused: its timeout does not run meanwhile. A turn that
/// ends while its approval is pending (cancelled here) takes the approval with it: it is
/// reported cancelled and cannot be approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_pauses_its_turn_and_ends_with_it() {
    let env = configured(
        "sessions:\n  turn_timeout_secs: 1\ntools:\n  approval_timeout_secs: 30\n  policy:\n    - { effect: ask, tool: shell.exec }\n",
    );
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let send = |actor: &str| {
        let body = json!({ "agent": "ada", "text": "/tool shell.exec {\"argv\":[\"echo\",\"ran\"]}", "source": { "platform": "http", "channel": "c", "actor": actor } });
        let server = &server;
        async move {
            let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
            assert_eq!(status, 202, "{answer}");
            answer["session_id"].as_str().unwrap().to_owned()
        }
    };
    let pending = async || {
        let asked = eventually(async || {
            let list = server.get_json("/v1/approvals").await;
            let first = list["items"].as_array().and_then(|a| a.first())?;
            Some(first["id"].as_str().unwrap().to_owned())
        });
        asked.await.expect("no approval was asked for")
    };
    let server = &server;
    let turns = async |session: String| {
        let ended = |turns: &[Value]| {
            turns.first().is_some_and(|t| t["status"].as_str().is_some_and(|s| s != "running"))
        };
        let turns = server.turns_until(&session, ended).await;
        turns.into_iter().next().unwrap_or_default()
    };

    // Approved after three times the turn timeout: the turn still completes, and the tool ran.
    let session = send("patient").await;
    let approval = pending().await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (status, _) = server
        .send(
            "POST",
            &format!("/v1/approvals/{approval}"),
            None,
            Some(json!({ "decision": "approve" })),
        )
        .await;
    assert_eq!(status, 200);
    let turn = turns(session).await;
    assert_eq!(turn["status"], "completed", "{turn}");

    // Cancelled while waiting: the approval ends with the turn.
    let session = send("impatient").await;
    let approval = pending().await;
    let (status, _) =
        server.send("POST", &format!("/v1/sessions/{session}/cancel"), None, None).await;
    assert!(status < 300, "{status}");
    let turn = turns(session).await;
    assert_eq!(turn["status"], "failed", "{turn}");
    let cancelled = async || server.get_json("/v1/approvals?status=cancelled").await;
    let ended = eventually(async || {
        let cancelled = cancelled().await;
        let items = cancelled["items"].as_array()?;
        items.iter().any(|x| x["id"] == approval.as_str()).then_some(())
    });
    if ended.await.is_none() {
        panic!("the approval outlived its turn: {}", cancelled().await);
    }
    let (status, answer) = server
        .send(
            "POST",
            &format!("/v1/approvals/{approval}"),
            None,
            Some(json!({ "decision": "approve" })),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("approval_decided")),
        "{answer}"
    );
}

/// A flood of idle, unauthenticated sockets does not starve clients that send requests: at the
/// connection cap the oldest silent socket makes room, and silent sockets are closed once the
/// header timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_does_not_starve_real_clients() {
    use tokio::io::AsyncReadExt;
    let env = configured("server:\n  max_connections: 64\n  header_timeout_secs: 3\n");
    let server = env.serve(&[]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    for _ in 0..20 {
        let asked = Instant::now();
        let (status, _) = server.send("GET", "/v1/agents", None, None).await;
        assert_eq!(status, 200);
        assert!(asked.elapsed() < Duration::from_secs(2), "a request waited {:?}", asked.elapsed());
    }
    // Closed within `limit`: a read ends (end of stream or reset) before then.
    async fn closed_within(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(limit, socket.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
    // Closed already: a read ends at once; open: it waits.
    async fn closed(socket: &mut tokio::net::TcpStream) -> bool {
        closed_within(socket, Duration::from_millis(200)).await
    }
    let mut evicted = 0;
    for socket in &mut flood {
        evicted += usize::from(closed(socket).await);
    }
    assert!(evicted >= 300 - 64, "only {evicted} of 300 idle sockets were closed at the cap");
    // The rest go once the header timeout (3 s) has passed.
    for (n, socket) in flood.iter_mut().enumerate() {
        let gone = closed_within(socket, PATIENCE).await;
        assert!(gone, "idle socket {n} still open {:?} after the flood", started.elapsed());
    }
    // A connection that sent a request and then idles is closed after the header timeout too.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    use tokio::io::AsyncWriteExt;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let gone = closed_within(&mut idle, PATIENCE).await;
    assert!(gone, "an idle keep-alive connection outlived the header timeout");
}

/// A granted secret is redacted from a command's output in its common encodings too, not only
/// as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_secrets_are_redacted_in_their_common_encodings() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let secret = "canary-7f3e9a1c5b2d";
    env.run_with_stdin(&["--agent", "ada", "secrets", "set", "API_KEY"], secret).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "shell.exec", "--env", "API_KEY"]).ok();
    let server = env.serve(&[]);
    let script = "printenv API_KEY; printenv API_KEY | rev; printenv API_KEY | base64; \
                  printf 'x%s' \"$API_KEY\" | base64; \
                  python3 -c \"import os,binascii,urllib.parse; k=os.environ['API_KEY']; print(binascii.hexlify(k.encode()).decode()); print(urllib.parse.quote('a b ' + k))\"";
    let (status, body) = server
        .send(
            "POST",
            "/v1/agents/ada/tools/shell.exec/call",
            None,
            Some(json!({ "arguments": { "command": script } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let content = body["content"].as_str().unwrap();
    assert_eq!(content.matches("[secret]").count(), 6, "{content}");
    let reversed: String = secret.chars().rev().collect();
    for leaked in [secret.to_owned(), reversed, hex::encode(secret), "Y2FuYXJ5LTdmM2U5".to_owned()]
    {
        assert!(!content.contains(&leaked), "{leaked} leaked: {content}");
    }
}

/// WebSocket subscribers that never read cost the server a bounded amount: their queues are
/// short, they are caught up from the outbox or closed, and once closed their memory is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_that_never_read_are_bounded() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let rss_kib = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let pid = server.child.id();
    // Warm up, then measure from here.
    let (status, _) = server
        .send("POST", "/v1/events", None, Some(json!({ "agent": "ada", "text": "warm", "source": { "platform": "http", "channel": "w", "actor": "w" }, "wait": true })))
        .await;
    assert_eq!(status, 200);
    let before = rss_kib(pid);
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut socket = websocket(&server, &server.token).await;
        socket
            .send(Message::Text(json!({ "type": "subscribe", "agent": "ada" }).to_string().into()))
            .await
            .unwrap();
        sockets.push(socket); // Never read from again.
    }
    let text = "x".repeat(60 * 1024);
    for n in 0..120 {
        let body = json!({ "agent": "ada", "text": text, "source": { "platform": "http", "channel": "big", "actor": format!("a{}", n % 4) }, "wait": n % 4 == 3 });
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert!(status == 200 || status == 202, "{answer}");
    }
    let loaded = rss_kib(pid);
    // Before the bound, 1,024 events a socket were queued: +250 MB here, and never closed.
    assert!(
        loaded.saturating_sub(before) < 120 * 1024,
        "RSS grew by {} KiB while 20 sockets did not read 120 turns of 60 KB",
        loaded.saturating_sub(before)
    );
    // A client that does not read is closed once the server has waited on it too long (the
    // wait is real time: reading sooner would make it a client that reads).
    tokio::time::sleep(Duration::from_secs(12)).await;
    for (n, socket) in sockets.iter_mut().enumerate() {
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "socket {n} was never closed");
    }
    // The server still answers.
    let (status, _) = server.send("GET", "/v1/agents", None, None).await;
    assert_eq!(status, 200);
    drop(sockets);
}

/// Admin actions are in the tenant's audit chain with who made them, through the CLI (the
/// operator) and through the API (the tenant's token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_are_in_the_audit_chain_with_who_made_them() {
    let env = Env::new();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "ada"]).ok();
    env.run_with_stdin(
        &["--tenant", "acme", "--agent", "ada", "secrets", "set", "KEY"],
        "value-1234",
    )
    .ok();
    env.run(&["--tenant", "acme", "--agent", "ada", "secrets", "rm", "KEY"]).ok();
    let (spare, spare_id) = {
        let out = env.run(&["--tenant", "acme", "tokens", "create", "--name", "spare"]).ok();
        (out.stdout.trim().to_owned(), out.stderr.split_whitespace().nth(1).unwrap().to_owned())
    };
    let token = env
        .run(&["--tenant", "acme", "tokens", "create", "--name", "api"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    env.run(&["--tenant", "acme", "tokens", "revoke", &spare_id]).ok();
    env.run(&["tenants", "create", "brief"]).ok();
    env.run(&["tenants", "delete", "brief", "--yes"]).ok();
    let server = env.serve(&[]);
    let (status, _) =
        server.send("POST", "/v1/agents", Some(&token), Some(json!({ "handle": "bo" }))).await;
    assert_eq!(status, 201);
    let (status, _) = server.send("DELETE", "/v1/agents/bo", Some(&token), None).await;
    assert_eq!(status, 204);
    drop(spare);

    let (_, audit) = server.send("GET", "/v1/audit?limit=1000", Some(&token), None).await;
    let records: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let detail = match &r["detail"] {
                Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            (
                r["kind"].as_str().unwrap_or_default().to_owned(),
                detail["by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (kind, by) in [
        ("tenant.created", "operator (cli)"),
        ("agent.created", "operator (cli)"),
        ("secret.set", "operator (cli)"),
        ("secret.removed", "operator (cli)"),
        ("token.created", "operator (cli)"),
        ("token.revoked", "operator (cli)"),
        ("agent.created", "tenant acme (api)"),
        ("agent.deleted", "tenant acme (api)"),
    ] {
        assert!(
            records.iter().any(|(k, b)| k == kind && b == by),
            "no {kind} by {by} in {records:?}"
        );
    }
    assert!(!audit.to_string().contains("value-1234"), "a secret's value in the audit log");
    let (_, verified) = server.send("GET", "/v1/audit?verify=true", Some(&token), None).await;
    assert_eq!(verified["ok"], true, "{verified}");
    // A deleted tenant's chain goes with it; the operator's records the deletion.
    let (_, operator) = server.send("GET", "/v1/audit?limit=1000", None, None).await;
    assert!(
        operator.to_string().contains("tenant.deleted") && operator.to_string().contains("brief"),
        "{operator}"
    );
}

/// Per-tenant quotas answer 429 naming the limit: agents counted in the creating transaction
/// (concurrent creations cannot pass it), events through a bucket per tenant, so one tenant at
/// its limit does not slow or stop another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_and_rate_limits_answer_429_and_stay_per_tenant() {
    let env = configured(
        "tenants:\n  acme:\n    quotas: { agents: 3, events_per_second: 5, burst: 5 }\n  \"*\":\n    quotas: { agents: 2 }\n",
    );
    let tokens = tenants_with_tokens(&env, &["acme", "rival"], None);
    let server = env.serve(&[]);
    let (acme, rival) = (tokens[0].clone(), tokens[1].clone());
    for n in 0..3 {
        let (status, body) = server
            .send("POST", "/v1/agents", Some(&acme), Some(json!({ "handle": format!("a{n}") })))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) =
        server.send("POST", "/v1/agents", Some(&acme), Some(json!({ "handle": "a3" }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tenants.acme.quotas.agents"),
        "{body}"
    );
    // Twenty at once against a quota of two ("*"): exactly two are created.
    let creates = (0..20).map(|n| {
        let (url, token) = (server.url.clone(), rival.clone());
        tokio::spawn(async move {
            super::support::request(
                &url,
                &token,
                "POST",
                "/v1/agents",
                Some(json!({ "handle": format!("r{n}") })),
            )
            .await
            .0
        })
    });
    let statuses: Vec<u16> =
        futures::future::join_all(creates).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 429), "{statuses:?}");

    // Events: acme's burst of 5 passes, the rest are told when to retry; rival is unaffected.
    let event = |agent: &str, n: usize| json!({ "agent": agent, "text": format!("e{n}"), "source": { "platform": "http", "channel": "c", "actor": "me" } });
    let client = reqwest::Client::new();
    let mut limited = 0;
    for n in 0..12 {
        let response = client
            .post(format!("{}/v1/events", server.url))
            .bearer_auth(&acme)
            .json(&event("a0", n))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 429 {
            limited += 1;
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains("events_per_second"),
                "{body}"
            );
        } else {
            assert_eq!(response.status().as_u16(), 202);
        }
    }
    assert!((6..=7).contains(&limited), "{limited} of 12 limited at 5/s with a burst of 5");
    let rival_agent = {
        let (_, list) = server.send("GET", "/v1/agents", Some(&rival), None).await;
        list["items"][0]["handle"].as_str().unwrap().to_owned()
    };
    for n in 0..12 {
        let (status, body) =
            server.send("POST", "/v1/events", Some(&rival), Some(event(&rival_agent, n))).await;
        assert_eq!(status, 202, "another tenant is not limited by acme's bucket: {body}");
    }
    let send = async || server.send("POST", "/v1/events", Some(&acme), Some(event("a0", 99))).await;
    let every = Duration::from_millis(100);
    let (status, _) = polled_within(Duration::from_secs(5), every, send, |a| a.0 == 202).await;
    assert_eq!(status, 202, "the bucket refills");
}

/// A tenant's stored bytes are bounded by its `stored_bytes` quota: past it new events are
/// refused with a 429 naming the limit, also within one measuring period (what was accepted
/// since the last measure counts), while another tenant goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_stored_bytes_quota_is_refused_and_others_are_not() {
    let env = configured("tenants:\n  acme:\n    quotas: { stored_bytes: 40000 }\n");
    let tokens = tenants_with_tokens(&env, &["acme", "rival"], None);
    let server = env.serve(&[]);
    let (acme, rival) = (tokens[0].clone(), tokens[1].clone());
    for token in [&acme, &rival] {
        let (status, body) =
            server.send("POST", "/v1/agents", Some(token), Some(json!({ "handle": "ada" }))).await;
        assert_eq!(status, 201, "{body}");
    }
    let event = |n: usize| json!({ "agent": "ada", "text": format!("{n} {}", "x".repeat(4000)), "source": { "platform": "http", "channel": format!("c{n}"), "actor": "me" } });
    let mut accepted = 0;
    let mut refusal = None;
    for n in 0..30 {
        let (status, body) = server.send("POST", "/v1/events", Some(&acme), Some(event(n))).await;
        match status {
            202 => accepted += 1,
            _ => {
                refusal = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refusal.expect("30 events of 4 KB passed a quota of 40,000 bytes");
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tenants.acme.quotas.stored_bytes"), "{message}");
    assert!((1..10).contains(&accepted), "{accepted} events of 4 KB accepted under 40,000 bytes");
    for n in 0..12 {
        let (status, body) = server.send("POST", "/v1/events", Some(&rival), Some(event(n))).await;
        assert_eq!(status, 202, "another tenant is not bound by acme's quota: {body}");
    }
    // Still refused after the measure is renewed: the store holds what it held.
    let span = clade_gateway::quotas::STORED_BYTES_EVERY + Duration::from_millis(500);
    let send = async || server.send("POST", "/v1/events", Some(&acme), Some(event(99))).await.0;
    holds_for(span, "accepted past the quota", send, |status| *status == 429).await;
}

/// Listening beyond loopback is said out loud: other machines can reach the gateway, in plain
/// HTTP.
#[test]
fn serving_on_every_interface_warns() {
    use std::io::{BufRead, Read};
    let logs = |listen: &str| {
        let env = Env::new();
        let mut child = env
            .command()
            .args(["serve", "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "{line}");
        let _ = child.kill();
        let mut logs = String::new();
        child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
        let _ = child.wait();
        logs
    };
    let open = logs("0.0.0.0:0");
    assert!(open.contains("listens beyond this machine") && open.contains("plain HTTP"), "{open}");
    let local = logs("127.0.0.1:0");
    assert!(!local.contains("listens beyond this machine"), "{local}");
}

/// A tenant's `concurrent_turns` quota: its sessions' turns run one at a time, while another
/// tenant's run beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_running_turns_are_bounded_by_its_quota() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let mut env = configured(&format!(
        "models:\n  slow:\n    provider: openai\n    model: stub+latency=400\n    base_url: {}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [slow]\ntenants:\n  acme:\n    quotas: {{ concurrent_turns: 1 }}\n",
        stub.url()
    ));
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    let tokens = tenants_with_tokens(&env, &["acme", "rival"], Some("ada"));
    let server = env.serve(&[]);
    // Three sessions each (three actors), sent at once and awaited.
    let mut calls = Vec::new();
    for (tenant, token) in ["acme", "rival"].iter().zip(&tokens) {
        for n in 0..3 {
            let (url, token) = (server.url.clone(), token.clone());
            let body = json!({ "agent": "ada", "text": "hi", "source": { "platform": "http", "channel": "c", "actor": format!("{tenant}{n}") }, "wait": true });
            calls.push(tokio::spawn(async move {
                super::support::request(&url, &token, "POST", "/v1/events", Some(body)).await
            }));
        }
    }
    let answers: Vec<(u16, Value)> =
        futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
    let spans = |range: std::ops::Range<usize>, token: &str| {
        let (url, token) = (server.url.clone(), token.to_owned());
        let sessions: Vec<String> = answers[range]
            .iter()
            .map(|(s, a)| {
                assert_eq!(*s, 200, "{a}");
                a["session_id"].as_str().unwrap().to_owned()
            })
            .collect();
        async move {
            let mut spans = Vec::new();
            for session in sessions {
                let (_, turns) = super::support::request(
                    &url,
                    &token,
                    "GET",
                    &format!("/v1/sessions/{session}/turns"),
                    None,
                )
                .await;
                let turn = &turns["items"][0];
                spans.push((
                    turn["started_at"].as_i64().unwrap(),
                    turn["finished_at"].as_i64().unwrap(),
                ));
            }
            spans.sort();
            spans
        }
    };
    let acme = spans(0..3, &tokens[0]).await;
    let rival = spans(3..6, &tokens[1]).await;
    // acme's turns never overlap; rival's do (they ran at once).
    assert!(acme.windows(2).all(|w| w[1].0 >= w[0].1), "acme's turns overlapped: {acme:?}");
    assert!(rival.windows(2).any(|w| w[1].0 < w[0].1), "rival's turns were serialised: {rival:?}");
}

/// Stream ids reveal nothing of the shared counter (consecutive events do not get consecutive
/// numbers), yet a client resumes exactly where it left off by handing one back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ids_are_opaque_and_resume_exactly() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let (status, body) = server
        .send("POST", "/v1/events", None, Some(json!({ "agent": "ada", "text": "/tool time.now", "source": { "platform": "http", "channel": "c", "actor": "me" }, "wait": true })))
        .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    let read = |last: Option<String>| {
        let (url, token, session) = (server.url.clone(), server.token.clone(), session.clone());
        async move {
            let mut request = reqwest::Client::new()
                .get(format!("{url}/v1/sessions/{session}/events"))
                .bearer_auth(token);
            if let Some(last) = last {
                request = request.header("last-event-id", last);
            }
            let mut stream = request.send().await.unwrap().bytes_stream();
            let mut text = String::new();
            while !text.contains("event: turn.finished") {
                let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text.lines()
                .filter_map(|l| l.strip_prefix("id:"))
                .map(|id| id.trim().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let ids = read(None).await;
    assert!(ids.len() >= 3, "{ids:?}");
    let numbers: Vec<u64> = ids.iter().map(|id| id.parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0].abs_diff(w[1]) > 1_000_000),
        "ids count up: {numbers:?}"
    );
    let resumed = read(Some(ids[0].clone())).await;
    assert_eq!(resumed, ids[1..].to_vec(), "resuming after the first id gives the rest, once");
    let (status, _) =
        server.send("GET", &format!("/v1/sessions/{session}/events?after=abc"), None, None).await;
    assert_eq!(status, 400);
}

/// A secret or network granted for one command pattern reaches that command only: another
/// command allowed by a broader rule runs without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_attach_their_capabilities_only_to_what_they_name() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run_with_stdin(&["--agent", "ada", "secrets", "set", "API_KEY"], "granted-value-9c1e").ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "shell.exec"]).ok();
    env.run(&[
        "--agent",
        "ada",
        "grants",
        "add",
        "--tool",
        "shell.exec",
        "--resource",
        "python3 -c *",
        "--env",
        "API_KEY",
    ])
    .ok();
    let server = env.serve(&[]);
    let run = |argv: Vec<&str>| {
        let server = &server;
        let argv: Vec<String> = argv.into_iter().map(str::to_owned).collect();
        async move {
            let (status, body) = server
                .send(
                    "POST",
                    "/v1/agents/ada/tools/shell.exec/call",
                    None,
                    Some(json!({ "arguments": { "argv": argv } })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["content"].as_str().unwrap_or_default().to_owned()
        }
    };
    let granted = run(vec![
        "python3",
        "-c",
        "import os; print('key' if os.environ.get('API_KEY') else 'none')",
    ])
    .await;
    assert!(granted.contains("key"), "{granted}");
    for other in [vec!["printenv", "API_KEY"], vec!["sh", "-c", "echo ${API_KEY:-none}"]] {
        let out = run(other.clone()).await;
        assert!(
            !out.contains("[secret]") && !out.contains("granted-value"),
            "{other:?} got the secret: {out}"
        );
    }
}

/// The sandbox's self-check runs in the background, so the gateway answers at once; its
/// outcome shows in `/readyz`, and a broken sandbox still fails closed: every host-touching
/// call is refused with the check's reason, which says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_sandbox_is_reported_by_readyz_and_refuses_tools() {
    // A "bwrap" that cannot set anything up.
    let env = configured(
        "tools:\n  bwrap: /bin/false\n  policy:\n    - { effect: allow, tool: shell.exec }\n",
    );
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let first = server.get_json("/readyz").await;
    assert!(["ready", "degraded"].contains(&first["status"].as_str().unwrap()), "{first}");
    let ready = self_checked(&server).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["sandbox"]["status"], "broken", "{ready}");
    let reason = ready["sandbox"]["reason"].as_str().unwrap();
    assert!(reason.contains("bubblewrap"), "the reason says what to do: {reason}");
    let (status, body) = server
        .send(
            "POST",
            "/v1/agents/ada/tools/shell.exec/call",
            None,
            Some(json!({ "arguments": { "argv": ["true"] } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_error"], true, "{body}");
    assert!(body["content"].as_str().unwrap().contains("self-check"), "{body}");
}

/// A working sandbox passes its self-check, and `/readyz` says so to the operator; a caller
/// without a token, and a tenant's admin, learn only whether the gateway is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_sandbox_passes_its_self_check() {
    let env = Env::new();
    let (_, tenant_admin) = acme(&env);
    let server = env.serve(&[]);
    let ready = self_checked(&server).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["sandbox"]["status"], "ready", "{ready}");
    let stranger: Value =
        reqwest::get(format!("{}/readyz", server.url)).await.unwrap().json().await.unwrap();
    let (_, tenant) = server.send("GET", "/readyz", Some(&tenant_admin), None).await;
    for (who, answer) in [("no token", stranger), ("a tenant's token", tenant)] {
        assert_eq!(answer["status"], "ready", "{who}: {answer}");
        let told: Vec<&String> = answer
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, value)| !value.is_null() && value.as_array().is_none_or(|a| !a.is_empty()))
            .map(|(key, _)| key)
            .collect();
        assert_eq!(told, ["status"], "{who} is told more than whether it is ready: {answer}");
    }
}

/// `/readyz` once the sandbox's self-check has finished.
async fn self_checked(server: &super::support::Server) -> Value {
    let checked = eventually(async || {
        let ready = server.get_json("/readyz").await;
        (ready["sandbox"]["status"] != "checking").then_some(ready)
    });
    match checked.await {
        Some(ready) => ready,
        None => panic!("the self-check never finished: {}", server.get_json("/readyz").await),
    }
}

/// Takes a store back to schema version 8, as a clade of that version left it.
async fn downgrade_to_version_8(url: &str) {
    sqlx::any::install_default_drivers();
    // As Clade reaches it: through the VFS that keeps a SQLite file's page checksums.
    let url = clade_store::Location::parse(url).unwrap().connect_url().unwrap();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let blob = if url.starts_with("postgres") { "BYTEA" } else { "BLOB" };
    // Versions 14 and 15 added jobs; version 13 made turns executions and their journal execution steps.
    let turns = format!(
        "CREATE TABLE turns (id {blob} PRIMARY KEY, session_id {blob} NOT NULL, \
         tenant_id {blob} NOT NULL, agent_id {blob} NOT NULL, status TEXT NOT NULL, reply TEXT, \
         error TEXT, model TEXT, config_revision BIGINT NOT NULL, started_at BIGINT NOT NULL, \
         finished_at BIGINT, model_calls BIGINT NOT NULL DEFAULT 0, \
         input_tokens BIGINT NOT NULL DEFAULT 0, output_tokens BIGINT NOT NULL DEFAULT 0, \
         cost_micros BIGINT NOT NULL DEFAULT 0)"
    );
    let journal = format!(
        "CREATE TABLE journal (turn_id {blob} NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL, \
         data TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (turn_id, step))"
    );
    for sql in [
        "DROP TABLE debug_stops",
        "DROP TABLE breakpoints",
        "DELETE FROM schema_migrations WHERE version = 35",
        "ALTER TABLE job_runs DROP COLUMN flow_run",
        "DELETE FROM schema_migrations WHERE version = 34",
        "DROP TABLE flows",
        "DELETE FROM schema_migrations WHERE version = 33",
        "ALTER TABLE leases DROP COLUMN expires_at",
        "DELETE FROM schema_migrations WHERE version = 32",
        "ALTER TABLE api_tokens DROP COLUMN expires_at",
        "DELETE FROM schema_migrations WHERE version = 31",
        "DROP TABLE channel_chats",
        "DELETE FROM schema_migrations WHERE version = 30",
        "DROP TABLE memory_upkeep",
        "DELETE FROM schema_migrations WHERE version = 29",
        "DROP TABLE forks",
        "DELETE FROM schema_migrations WHERE version = 28",
        "DROP TABLE agent_lineage",
        "DELETE FROM schema_migrations WHERE version = 27",
        "DROP TABLE topic_subscriptions",
        "DELETE FROM schema_migrations WHERE version = 26",
        "DROP TABLE pauses",
        "DELETE FROM schema_migrations WHERE version = 25",
        "DROP TABLE agent_messages",
        "DELETE FROM schema_migrations WHERE version = 24",
        "DROP TABLE working_memory",
        "DELETE FROM schema_migrations WHERE version = 23",
        "DROP TABLE session_summaries",
        "DELETE FROM schema_migrations WHERE version = 22",
        "DROP TABLE IF EXISTS memories_fts",
        "DROP TABLE memory_links",
        "DROP TABLE memories",
        "DELETE FROM schema_migrations WHERE version = 21",
        "DROP TABLE job_runs",
        "DROP TABLE jobs",
        "DROP TABLE config_revisions",
        "DROP TABLE agent_settings",
        "DROP TABLE host_calls",
        "DROP TABLE peer_leases",
        "DROP TABLE peers",
        "DELETE FROM schema_migrations WHERE version = 20",
        "DELETE FROM schema_migrations WHERE version = 19",
        "DELETE FROM schema_migrations WHERE version = 18",
        "DELETE FROM schema_migrations WHERE version = 17",
        "DELETE FROM schema_migrations WHERE version = 16",
        "DELETE FROM schema_migrations WHERE version = 15",
        "DELETE FROM schema_migrations WHERE version = 14",
        "DROP TABLE execution_steps",
        "DROP TABLE executions",
        turns.as_str(),
        "CREATE INDEX turns_by_session ON turns (session_id, id)",
        journal.as_str(),
        "DELETE FROM schema_migrations WHERE version = 13",
        "DROP TABLE leases",
        "DELETE FROM schema_migrations WHERE version = 12",
        "ALTER TABLE api_tokens DROP COLUMN agents",
        "DELETE FROM schema_migrations WHERE version = 11",
        "DELETE FROM schema_migrations WHERE version = 10",
        "ALTER TABLE api_tokens DROP COLUMN scopes",
        "DELETE FROM schema_migrations WHERE version = 9",
    ] {
        sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
    }
}

/// Only `clade serve` and `clade migrate` upgrade a store: any other command, which may run
/// beside a server of the store's version, refuses one that needs it, in one line that says
/// what to do, and leaves it as it was. On both backends.
#[tokio::test]
async fn only_serve_and_migrate_upgrade_a_store() {
    let pg = clade_test_support::PgSchema::create().await;
    let env = Env::new();
    let sqlite = format!("sqlite://{}", env.data_dir().join("clade.db").display());
    let mut stores = vec![sqlite];
    stores.extend(pg.as_ref().map(|schema| schema.url().to_owned()));
    for store in &stores {
        env.run(&["--store", store, "agents", "create", "ada"]).ok();
        downgrade_to_version_8(store).await;
        let refused = env.run(&["--store", store, "agents", "list"]);
        assert_ne!(refused.code, 0, "{store}");
        let error = refused.stderr.trim();
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.contains("schema version 8") && error.contains("clade migrate"), "{error}");
        // Refused again: nothing was upgraded behind the refusal.
        assert_ne!(env.run(&["--store", store, "tokens", "list"]).code, 0, "{store}");
        let upgraded = env.run(&["--store", store, "migrate"]).ok();
        let to = format!("from version 8 to {}", clade_store::SCHEMA_VERSION);
        assert!(upgraded.stdout.contains(&to), "{}", upgraded.stdout);
        let listed = env.run(&["--store", store, "agents", "list"]).ok();
        assert!(listed.stdout.contains("ada"), "{}", listed.stdout);
        let again = env.run(&["--store", store, "migrate"]).ok();
        assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
        // The server upgrades too.
        downgrade_to_version_8(store).await;
        drop(env.serve(&["--store", store]));
        env.run(&["--store", store, "agents", "list"]).ok();
    }
}

/// On PostgreSQL a migration run holds an advisory lock for its schema: a second process
/// waits for the first instead of racing it.
#[tokio::test]
async fn migrations_on_postgres_wait_for_each_other() {
    let Some(schema) = clade_test_support::PgSchema::create().await else { return };
    let env = Env::new();
    env.run(&["--store", schema.url(), "agents", "create", "ada"]).ok();
    downgrade_to_version_8(schema.url()).await;
    // Hold the lock as a migrating process would.
    let mut holder =
        <sqlx::AnyConnection as sqlx::Connection>::connect(schema.url()).await.unwrap();
    let lock = "SELECT pg_advisory_lock(hashtextextended('clade migrate ' || current_schema(), 0))";
    sqlx::Executor::execute(&mut holder, lock).await.unwrap();
    let mut waiting = env
        .command()
        .args(["--store", schema.url(), "migrate"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Waiters for this lock (an advisory key is split into classid and objid).
    let waiters = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND ((classid::bigint << 32) | objid::bigint) \
             = hashtextextended('clade migrate ' || current_schema(), 0)";
    let asked = eventually(async || {
        let row = sqlx::query(waiters).fetch_one(&mut holder).await.unwrap();
        if sqlx::Row::get::<i64, _>(&row, 0) >= 1 {
            return Some(());
        }
        assert!(waiting.try_wait().unwrap().is_none(), "migrate did not wait for the lock");
        None
    });
    asked.await.expect("migrate never asked for the lock");
    assert!(waiting.try_wait().unwrap().is_none(), "migrate ran while another held the lock");
    drop(holder);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    let to = format!("from version 8 to {}", clade_store::SCHEMA_VERSION);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&to));
}

/// Strangers cannot starve the gateway's slots by trickling bodies: with every slot held by a
/// socket that sent a hook's headers and one byte of its body, authenticated requests still get
/// in (the strangers are evicted first); a trickled body is cut off once it falls below the
/// least rate; and a body declared longer than `server.max_body_bytes` is refused (413) before
/// it is read, with or without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_cannot_starve_authenticated_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = configured(
        "server:\n  max_connections: 40\n  header_timeout_secs: 2\ntenants:\n  acme:\n    hooks:\n      gh: { agent: ada, secret_env: GH_SECRET }\n",
    );
    env.vars.push(("GH_SECRET".into(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()));
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let trickle = |length: u64| {
        let address = address.clone();
        async move {
            let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
            let head = format!(
                "POST /hooks/acme/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            socket
        }
    };
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(trickle(100_000).await);
    }
    // Every authenticated request gets an answer while the flood holds its sockets open.
    for n in 0..30 {
        let (status, body) = server.send("GET", "/v1/agents", None, None).await;
        assert_eq!(status, 200, "authenticated request {n} was refused: {body}");
        for socket in flood.iter_mut().take(3) {
            let _ = socket.write_all(b" ").await;
        }
    }
    // A trickled body is cut off: its connection answers and closes within the grace and a
    // little more, however slowly it keeps sending.
    let mut slow = trickle(100_000).await;
    let started = Instant::now();
    let mut answer = Vec::new();
    loop {
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(500), slow.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "a trickled body was never cut off"
                );
                let _ = slow.write_all(b" ").await;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    // A declared length over the limit is refused at once, before its body.
    for token in [None, Some(server.token.as_str())] {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{{}}"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
            .await
            .expect("an over-long body was not refused at once")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("payload_too_large") && answer.contains("max_body_bytes"),
            "{answer}"
        );
    }
}

/// The README's policy through the real binary and the real `rm`: with `rm **` allowed and
/// `rm --recursive **` denied, every spelling GNU `rm` reads as recursive (abbreviated long
/// options, `-R`, bundled flags, the option after the operand) is denied and the directory
/// stays; a plain `rm` of a file, which the allow covers, still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_holds_through_the_binary_however_rm_is_spelled() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    for (rule, effect) in [("rm **", "allow"), ("rm --recursive **", "deny"), ("mkdir **", "allow")]
    {
        let grant = ["--agent", "ada", "grants", "add", "--tool", "shell.exec", "--resource", rule];
        env.run(&[&grant[..], &["--effect", effect]].concat()).ok();
    }
    let ws = env.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    let victim = std::path::Path::new(&ws).join("victim");
    let server = env.serve(&[]);
    let exec = |argv: &[&str]| call_as_ada(&server, "shell.exec", json!({ "argv": argv }));
    let (status, body) = exec(&["mkdir", "-p", "victim/inner"]).await;
    assert_eq!((status, body["decision"].as_str()), (200, Some("allow")), "{body}");
    std::fs::write(victim.join("inner/keep"), "kept").unwrap();
    std::fs::write(victim.join("loose"), "x").unwrap();
    let spellings: [&[&str]; 12] = [
        &["rm", "--recursive", "victim"],
        &["rm", "--recursiv", "victim"],
        &["rm", "--rec", "victim"],
        &["rm", "--r", "victim"],
        &["rm", "-r", "victim"],
        &["rm", "-R", "victim"],
        &["rm", "-rf", "victim"],
        &["rm", "-fR", "victim"],
        &["rm", "-f", "-r", "victim"],
        &["rm", "victim", "--rec"],
        &["rm", "--force", "--recursive", "victim"],
        &["/usr/bin/rm", "-R", "victim"],
    ];
    for argv in spellings {
        let (status, body) = exec(argv).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], "deny", "{argv:?} was not denied: {body}");
        assert!(victim.join("inner/keep").is_file(), "{argv:?} removed the directory: {body}");
    }
    // The control: what the allow covers runs.
    let (_, body) = exec(&["rm", "victim/loose"]).await;
    assert_eq!(body["decision"], "allow", "{body}");
    let gone = std::fs::metadata(victim.join("loose")).is_err();
    assert!(gone && victim.join("inner/keep").is_file(), "{body}");
}

/// An allow rule for a program is not an allow for every program it can start: with
/// `git status **` allowed, a repository whose configuration names an fsmonitor command does
/// not get it run (the run may execute `git` only); nor does an allowed `find` run `-exec`.
/// A rule allowing a shell still lets the shell run what it runs, which is also what shows
/// the attack is real: through `sh -c`, the same `git status` runs the fsmonitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_program_cannot_start_other_programs() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    for rule in ["git init **", "git status **", "find **", "sh -c *"] {
        env.run(&["--agent", "ada", "grants", "add", "--tool", "shell.exec", "--resource", rule])
            .ok();
    }
    env.run(&["--agent", "ada", "grants", "add", "--tool", "fs.*"]).ok();
    let ws = env.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    let ws = std::path::Path::new(&ws);
    let server = env.serve(&[]);
    let server = &server;
    let call = |tool: &'static str, arguments: Value| call_as_ada(server, tool, arguments);
    let (status, body) = call("shell.exec", json!({ "argv": ["git", "init", "-q", "."] })).await;
    assert_eq!(status, 200, "{body}");
    let config =
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfsmonitor = \"id > pwned.txt\"\n";
    let (status, body) =
        call("fs.write", json!({ "path": ".git/config", "content": config })).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = call("shell.exec", json!({ "argv": ["git", "status"] })).await;
    assert_eq!(status, 200, "{body}");
    assert!(std::fs::metadata(ws.join("pwned.txt")).is_err(), "git ran its fsmonitor: {body}");
    let (_, body) = call(
        "shell.exec",
        json!({ "argv": ["find", ".", "-maxdepth", "0", "-exec", "sh", "-c", "id > found.txt", ";"] }),
    )
    .await;
    assert!(std::fs::metadata(ws.join("found.txt")).is_err(), "find ran -exec: {body}");

    // The control: a shell may run programs, so the same repository's fsmonitor runs there.
    let (status, body) = call("shell.exec", json!({ "command": "git status" })).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        std::fs::metadata(ws.join("pwned.txt")).is_ok(),
        "the attack did not reproduce: {body}"
    );
}

/// The class, not the case: programs that start programs, each allowed by its own rule
/// (`<program> **`) and asked to start `touch` through its own features (`-exec`, `system()`,
/// checkpoints, pipes to commands, aliases, pagers, `e` commands, wrappers that exist to run
/// another program). None may: a run executes its own program only. A program this machine
/// lacks is counted apart; most must be there for the corpus to mean something. The control:
/// the same attempts through an allowed shell do start `touch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_that_start_programs_start_none() {
    const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
    let attempts: Vec<Vec<&str>> = vec![
        vec!["find", ".", "-maxdepth", "0", "-exec", "touch", "{m}", ";"],
        vec!["find", ".", "-maxdepth", "0", "-execdir", "touch", "{m}", ";"],
        vec!["find", ".", "-maxdepth", "0", "-exec", "sh", "-c", "touch {m}", ";"],
        vec![
            "tar",
            "-cf",
            "/dev/null",
            "--checkpoint=1",
            "--checkpoint-action=exec=touch {m}",
            "/etc/hostname",
        ],
        vec!["tar", "-cf", "x.tar", "-I", "touch {m}", "/etc/hostname"],
        vec!["tar", "-cf", "x.tar", "--use-compress-program=touch {m}", "/etc/hostname"],
        vec!["awk", "BEGIN{system(\"touch {m}\")}"],
        vec!["awk", "BEGIN{print \"x\" | \"touch {m}\"}"],
        vec!["awk", "BEGIN{\"touch {m}\" | getline x}"],
        vec!["gawk", "BEGIN{system(\"touch {m}\")}"],
        vec!["mawk", "BEGIN{system(\"touch {m}\")}"],
        vec!["python3", "-c", "import os; os.system('touch {m}')"],
        vec!["python3", "-c", "import subprocess; subprocess.run(['touch', '{m}'])"],
        vec!["python3", "-c", "import os; os.execv('/usr/bin/touch', ['touch', '{m}'])"],
        vec!["python3", "-c", "import os; os.posix_spawn('/usr/bin/touch', ['touch', '{m}'], {})"],
        vec!["python3", "-c", "import pty; pty.spawn(['touch', '{m}'])"],
        vec!["perl", "-e", "system('touch', '{m}')"],
        vec!["perl", "-e", "exec 'touch', '{m}'"],
        vec!["perl", "-e", "`touch {m}`"],
        vec!["perl", "-e", "open(my $f, '|-', 'touch {m}')"],
        vec!["sed", "-n", "1e touch {m}", "/etc/hostname"],
        vec!["sed", "s/.*/touch {m}/e", "/etc/hostname"],
        vec!["git", "-c", "alias.x=!touch {m}", "x"],
        vec!["git", "-c", "core.pager=touch {m}", "-p", "version"],
        vec!["git", "-c", "core.fsmonitor=touch {m}", "status"],
        // Configuration that names a program to run, on the command line.
        vec![
            "git",
            "-c",
            "diff.external=touch {m}",
            "diff",
            "--ext-diff",
            "--no-index",
            "/etc/hostname",
            "/etc/hosts",
        ],
        vec!["git", "-c", "core.sshCommand=touch {m}", "ls-remote", "ssh://host/repo"],
        vec!["git", "-c", "protocol.ext.allow=always", "ls-remote", "ext::touch {m}"],
        vec![
            "git",
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "-c",
            "core.editor=touch {m}",
            "commit",
            "--allow-empty",
        ],
        vec!["tar", "-xf", "a.tar", "--to-command=touch {m}"],
        vec!["flock", "-c", "touch {m}", "lock"],
        vec!["timeout", "5", "touch", "{m}"],
        vec!["nice", "touch", "{m}"],
        vec!["nohup", "touch", "{m}"],
        vec!["stdbuf", "-o0", "touch", "{m}"],
        vec!["flock", "lock", "touch", "{m}"],
        vec!["setsid", "touch", "{m}"],
        vec!["ionice", "touch", "{m}"],
        vec!["taskset", "1", "touch", "{m}"],
        vec!["unshare", "touch", "{m}"],
        vec!["strace", "-o", "/dev/null", "touch", "{m}"],
        vec!["script", "-qc", "touch {m}", "/dev/null"],
        vec!["vim", "-es", "-c", "!touch {m}", "-c", "q"],
        vec!["vi", "-es", "-c", "!touch {m}", "-c", "q"],
        vec!["gdb", "-batch", "-ex", "shell touch {m}"],
        vec!["node", "-e", "require('child_process').execSync('touch {m}')"],
        vec!["rsync", "-e", "touch {m}", "a", "host:b"],
        vec!["ssh", "-o", "ProxyCommand=touch {m}", "host"],
        vec!["man", "-P", "touch {m}", "ls"],
        vec!["make", "-f", "/dev/stdin"],
        vec!["xargs", "touch"],
        vec!["tclsh"],
        // The dynamic loader run as a program maps whatever program it is given: Landlock
        // sees only the loader executed, which every dynamically linked program needs.
        vec!["find", ".", "-maxdepth", "0", "-exec", LOADER, "/usr/bin/touch", "{m}", ";"],
        vec!["xargs", LOADER, "/usr/bin/touch"],
        vec!["timeout", "5", LOADER, "/usr/bin/touch", "{m}"],
        vec!["python3", "-c", "import os; os.execv('{loader}', ['ld', '/usr/bin/touch', '{m}'])"],
        vec!["perl", "-e", "exec '{loader}', '/usr/bin/touch', '{m}'"],
        // The loader put where the one allowed `execveat` looks for the program (the
        // descriptor the init executed it through), by `dup2` and by `F_DUPFD`, at both
        // numbers that descriptor ever had.
        vec![
            "python3",
            "-c",
            "import os; f = os.open('{loader}', os.O_PATH); os.dup2(f, 200); os.execve(200, ['ld', '/usr/bin/touch', '{m}'], {})",
        ],
        vec![
            "python3",
            "-c",
            "import os; f = os.open('{loader}', os.O_PATH); os.dup2(f, 255); os.execve(255, ['ld', '/usr/bin/touch', '{m}'], {})",
        ],
        vec![
            "python3",
            "-c",
            "import os, fcntl; f = os.open('{loader}', os.O_PATH); g = fcntl.fcntl(f, fcntl.F_DUPFD, 255); os.execve(g, ['ld', '/usr/bin/touch', '{m}'], {})",
        ],
        // A program starting itself again is starting a program too.
        vec![
            "find",
            ".",
            "-maxdepth",
            "0",
            "-exec",
            "find",
            ".",
            "-maxdepth",
            "0",
            "-fprint",
            "{m}",
            ";",
        ],
    ];
    let stdin_of = |program: &str, marker: &str| match program {
        "make" => Some(format!("all:\n\ttouch {marker}\n")),
        "xargs" => Some(format!("{marker}\n")),
        "tclsh" => Some(format!("exec touch {marker}\n")),
        _ => None,
    };
    let mut programs: Vec<&str> = attempts.iter().map(|a| a[0]).collect();
    programs.dedup();
    let mut policy = String::from(
        "tools:\n  policy:\n    - { effect: allow, tool: shell.exec, resource: \"sh -c *\" }\n",
    );
    for program in &programs {
        policy.push_str(&format!(
            "    - {{ effect: allow, tool: shell.exec, resource: \"{program} **\" }}\n"
        ));
    }
    let env = configured(&policy);
    env.run(&["agents", "create", "ada"]).ok();
    let ws = env.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    let ws = std::path::Path::new(&ws);
    let server = env.serve(&[]);
    let server = &server;
    let run = |arguments: Value| async move {
        let body = json!({ "arguments": arguments });
        server.send("POST", "/v1/agents/ada/tools/shell.exec/call", None, Some(body)).await
    };
    run(json!({ "argv": ["git", "init", "-q", "."] })).await;
    run(json!({ "argv": ["tar", "-cf", "a.tar", "-C", "/etc", "hostname"] })).await;
    let (mut ran, mut missing) = (0, Vec::new());
    for (n, attempt) in attempts.iter().enumerate() {
        let marker = format!("pwned-{n}");
        let argv: Vec<String> =
            attempt.iter().map(|a| a.replace("{m}", &marker).replace("{loader}", LOADER)).collect();
        let mut arguments = json!({ "argv": argv });
        if let Some(stdin) = stdin_of(attempt[0], &marker) {
            arguments["stdin"] = json!(stdin);
        }
        let (status, body) = run(arguments).await;
        assert_eq!(status, 200, "{argv:?}: {body}");
        if body.to_string().contains("is not a program on PATH") {
            missing.push(attempt[0]);
        } else {
            ran += 1;
        }
        assert!(
            std::fs::metadata(ws.join(&marker)).is_err(),
            "{argv:?} started another program: {body}"
        );
    }
    assert!(
        ran >= 30,
        "only {ran} of {} attempts found their program ({missing:?} missing)",
        attempts.len()
    );
    eprintln!(
        "programs that start programs: {ran} attempted, all contained; not on this machine: {missing:?}"
    );
    // A hook the agent wrote into the repository (as `fs.write` would) runs no more than
    // configuration does; through a shell (the control below) it does run.
    let hook = ws.join(".git/hooks/pre-commit");
    super::support::write(&hook, "#!/bin/sh\ntouch hooked\n");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let commit = "git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x";
    let argv: Vec<&str> = commit.split(' ').collect();
    let (status, body) = run(json!({ "argv": argv })).await;
    assert_eq!(status, 200, "{body}");
    assert!(std::fs::metadata(ws.join("hooked")).is_err(), "git ran the agent's hook: {body}");
    let (status, body) = run(json!({ "command": commit })).await;
    assert_eq!(status, 200, "{body}");
    assert!(std::fs::metadata(ws.join("hooked")).is_ok(), "the hook control did not run: {body}");
    // The control: through an allowed shell, the same features do start programs.
    for (n, line) in [
        "awk 'BEGIN{system(\"touch ctl-0\")}'",
        "find . -maxdepth 0 -exec touch ctl-1 ';'",
        "timeout 5 touch ctl-2",
        "find . -maxdepth 0 -exec /lib64/ld-linux-x86-64.so.2 /usr/bin/touch ctl-3 ';'",
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = run(json!({ "command": line })).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            std::fs::metadata(ws.join(format!("ctl-{n}"))).is_ok(),
            "the control {line} did not run: {body}"
        );
    }
}

/// A call's arguments are checked against its tool's JSON Schema before policy or the tool
/// sees them, and the caller is told what is wrong and what the parameters are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_arguments_are_checked_against_their_schema() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "fs.*"]).ok();
    let server = env.serve(&[]);
    let call = |tool: &'static str, arguments: Value| {
        let server = &server;
        async move {
            let path = format!("/v1/agents/ada/tools/{tool}/call");
            server.send("POST", &path, None, Some(json!({ "arguments": arguments }))).await
        }
    };
    for (tool, arguments, named) in [
        ("fs.write", json!({ "path": "a.txt" }), "content"),
        ("fs.write", json!({ "path": 7, "content": "x" }), "/path"),
        ("fs.read", json!({ "path": "a.txt", "max_bytes": "many" }), "/max_bytes"),
    ] {
        let (status, body) = call(tool, arguments.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["is_error"], true, "{tool} {arguments}: {body}");
        let content = body["content"].as_str().unwrap();
        assert!(content.contains("invalid arguments for") && content.contains(named), "{content}");
        assert!(content.contains("its parameters are"), "{content}");
    }
    let ws = env.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    assert!(std::fs::metadata(std::path::Path::new(&ws).join("a.txt")).is_err());
    let (_, body) = call("fs.write", json!({ "path": "a.txt", "content": "x" })).await;
    assert_eq!(body["is_error"], false, "{body}");
}

/// One tenant cannot hold every stream slot: its streams (SSE and WebSocket alike) stop at its
/// `streams` quota and each token's at `streams_per_token`, refused with 429 and `Retry-After`;
/// a closed stream gives its slot back, and another tenant's streams are never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_streams_stop_at_its_quota_and_others_still_stream() {
    let env = configured("tenants:\n  acme:\n    quotas: { streams: 3, streams_per_token: 2 }\n");
    let tokens = tenants_with_tokens(&env, &["acme", "rival"], Some("ada"));
    let second = env.run(&["--tenant", "acme", "tokens", "create"]).ok().stdout.trim().to_owned();
    let server = env.serve(&[]);
    let (first, rival) = (tokens[0].clone(), tokens[1].clone());
    let client = reqwest::Client::new();
    let open = |token: &str| {
        client.get(format!("{}/v1/agents/ada/events", server.url)).bearer_auth(token).send()
    };
    let refused = |response: &reqwest::Response, says: &str| {
        assert_eq!(response.status(), 429, "{says}");
        assert!(response.headers().contains_key("retry-after"), "no Retry-After: {says}");
    };

    let a1 = open(&first).await.unwrap();
    let a2 = open(&first).await.unwrap();
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let over = open(&first).await.unwrap();
    refused(&over, "the token's third stream");
    let message =
        over.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("streams_per_token"), "{message}");
    // A WebSocket is a stream like the others.
    let url = format!("{}/v1/ws", server.url.replace("http://", "ws://"));
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {first}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a WebSocket past the token's quota was let in: {:?}", other.map(|_| ())),
    }
    let b1 = open(&second).await.unwrap();
    assert_eq!(b1.status(), 200);
    let over = open(&second).await.unwrap();
    refused(&over, "the tenant's fourth stream");
    let message =
        over.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("tenants.acme.quotas.streams"), "{message}");

    // Another tenant streams as it likes.
    let mut theirs = Vec::new();
    for _ in 0..5 {
        let response = open(&rival).await.unwrap();
        assert_eq!(response.status(), 200);
        theirs.push(response);
    }

    // A stream closed gives its slot back (the server notices the hang-up at its next write
    // or keep-alive; the first try may come before).
    drop(a1);
    let reopened = eventually(async || {
        let response = open(&second).await.unwrap();
        (response.status() == 200).then_some(response)
    })
    .await;
    assert!(reopened.is_some(), "a closed stream's slot never came back");
    drop((a2, b1, theirs));
}

/// Calls `tool` as the agent `ada`, with the server's own token: the status and the answer.
async fn call_as_ada(
    server: &super::support::Server,
    tool: &str,
    arguments: Value,
) -> (u16, Value) {
    let body = json!({ "arguments": arguments });
    server.send("POST", &format!("/v1/agents/ada/tools/{tool}/call"), None, Some(body)).await
}

/// A workspace holds no more than its quota (`tools.limits.workspace_mib`): a command's files
/// grow only by what is left (the kernel stops the writer, and the model is told why), a full
/// workspace says so after every run, `fs.write` refuses what would pass it, and deleting
/// makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_holds_no_more_than_its_quota() {
    let env = configured("tools:\n  limits:\n    workspace_mib: 2\n");
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "shell.exec"]).ok();
    env.run(&["--agent", "ada", "grants", "add", "--tool", "fs.*"]).ok();
    let ws = env.run(&["agents", "workspace", "ada"]).ok().stdout.trim().to_owned();
    let ws = std::path::Path::new(&ws);
    let server = env.serve(&[]);
    let server = &server;
    let call = |tool: &'static str, arguments: Value| async move {
        let (status, body) = call_as_ada(server, tool, arguments).await;
        assert_eq!(status, 200, "{body}");
        body["content"].as_str().unwrap_or_default().to_owned()
    };
    let fill = json!({ "argv": ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=8"] });
    let out = call("shell.exec", fill.clone()).await;
    assert!(out.contains("SIGXFSZ") && out.contains("workspace_mib"), "{out}");
    let size = std::fs::metadata(ws.join("big")).unwrap().len();
    assert!(size <= 2 * 1024 * 1024, "the file passed the quota: {size} bytes");
    assert!(out.contains("the workspace is full"), "{out}");

    // Full: the next write is refused, by a command and by fs.write alike.
    let out = call(
        "shell.exec",
        json!({ "argv": ["dd", "if=/dev/zero", "of=more", "bs=1k", "count=64"] }),
    )
    .await;
    assert!(out.contains("SIGXFSZ"), "{out}");
    assert!(std::fs::metadata(ws.join("more")).map(|m| m.len()).unwrap_or(0) == 0, "{out}");
    let out = call("fs.write", json!({ "path": "note.md", "content": "x".repeat(4096) })).await;
    assert!(out.contains("quota") && out.contains("delete files"), "{out}");
    assert!(!ws.join("note.md").exists());

    // Deleting makes room.
    let out = call("shell.exec", json!({ "argv": ["rm", "big", "more"] })).await;
    assert!(out.contains("exit code 0"), "{out}");
    let out = call("fs.write", json!({ "path": "note.md", "content": "kept" })).await;
    assert!(out.contains("wrote 4 bytes"), "{out}");
}

/// A tenant's agents' workspaces together hold no more than its total
/// (`quotas.workspace_mib`), each also within its own quota: what one agent holds leaves the
/// others only the rest, to commands and `fs.write` alike, and deleting makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_workspaces_together_hold_no_more_than_its_total() {
    let env = configured(
        "tools:\n  limits:\n    workspace_mib: 10\ntenants:\n  default:\n    quotas: { workspace_mib: 3 }\n",
    );
    for agent in ["ada", "bob"] {
        env.run(&["agents", "create", agent]).ok();
        env.run(&["--agent", agent, "grants", "add", "--tool", "shell.exec"]).ok();
        env.run(&["--agent", agent, "grants", "add", "--tool", "fs.*"]).ok();
    }
    let bob_ws = env.run(&["agents", "workspace", "bob"]).ok().stdout.trim().to_owned();
    let bob_ws = std::path::Path::new(&bob_ws);
    let server = env.serve(&[]);
    let server = &server;
    let call = |agent: &'static str, tool: &'static str, arguments: Value| async move {
        let body = json!({ "arguments": arguments });
        let path = format!("/v1/agents/{agent}/tools/{tool}/call");
        let (status, body) = server.send("POST", &path, None, Some(body)).await;
        assert_eq!(status, 200, "{body}");
        body["content"].as_str().unwrap_or_default().to_owned()
    };
    let two_mib = json!({ "argv": ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=2"] });
    let out = call("ada", "shell.exec", two_mib.clone()).await;
    assert!(out.contains("exit code 0"), "ada's own 2 MiB fit: {out}");
    // Bob has what ada left of the 3: about 1 MiB, not his own 10.
    let out = call("bob", "shell.exec", two_mib).await;
    assert!(out.contains("SIGXFSZ") && out.contains("the tenant's quotas.workspace_mib"), "{out}");
    let size = std::fs::metadata(bob_ws.join("big")).unwrap().len();
    assert!(size <= 1024 * 1024 + 64 * 1024, "bob's file passed the tenant's total: {size} bytes");
    let out =
        call("bob", "fs.write", json!({ "path": "note.md", "content": "x".repeat(256 * 1024) }))
            .await;
    assert!(
        out.contains("the tenant's quotas.workspace_mib") && out.contains("delete files"),
        "{out}"
    );

    // Ada deleting her file makes room for bob.
    let out = call("ada", "shell.exec", json!({ "argv": ["rm", "big"] })).await;
    assert!(out.contains("exit code 0"), "{out}");
    let out =
        call("bob", "fs.write", json!({ "path": "note.md", "content": "x".repeat(256 * 1024) }))
            .await;
    assert!(out.contains("wrote 262144 bytes"), "{out}");
}

/// Where the operator's rules ask a tenant about a tool past its ceiling, the tenant may
/// approve a call once, but not "always": that would leave an allow grant it could not give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_approve_always_past_its_ceiling() {
    let env = configured(
        "tools:\n  approval_timeout_secs: 30\n  policy:\n    - { effect: ask, tool: shell.exec }\n",
    );
    tenants_with_tokens(&env, &["acme"], Some("ada"));
    let (acme, _) = super::support::token(&env, "acme", &["admin", "approve"]);
    let server = env.serve(&[]);
    let body = json!({ "agent": "ada", "text": "/tool shell.exec {\"argv\":[\"echo\",\"ran\"]}",
        "source": { "platform": "http", "channel": "c", "actor": "pat" } });
    let (status, answer) = server.send("POST", "/v1/events", Some(&acme), Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    let asked = server.items_as_until(Some(&acme), "/v1/approvals", |a| !a.is_empty()).await;
    let approval = asked.first().and_then(|a| a["id"].as_str()).map(str::to_owned);
    let path = format!("/v1/approvals/{}", approval.expect("no approval was asked for"));
    let decide = |decision: &str| {
        let (server, path, acme) = (&server, path.clone(), acme.clone());
        let body = json!({ "decision": decision });
        async move { server.send("POST", &path, Some(&acme), Some(body)).await }
    };
    let (status, refused) = decide("approve_always").await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("ceiling"), "{refused}");
    let (status, decided) = decide("approve").await;
    assert_eq!(status, 200, "{decided}");
    let grants = server.send("GET", "/v1/grants", Some(&acme), None).await.1;
    assert_eq!(grants["items"], json!([]), "no grant was left behind: {grants}");
}

/// A tenant that fills every connection slot with authenticated, idle keep-alive
/// connections does not keep the others out: at the cap, a new connection takes the place of
/// the oldest of the tenant holding the most, so another tenant's request still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_connections_cannot_keep_the_others_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = configured("server:\n  max_connections: 24\n  header_timeout_secs: 30\n");
    let greedy = tenants_with_tokens(&env, &["greedy"], None).remove(0);
    let server = env.serve(&[]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let request = |token: &str| {
        format!("GET /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    // Every slot: a connection that authenticated once and now idles, kept alive.
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket.write_all(request(&greedy).as_bytes()).await.unwrap();
        let mut head = vec![0; 2048];
        let read = socket.read(&mut head).await.unwrap();
        assert!(String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"));
        held.push(socket);
    }
    // Another tenant (the operator's) is served all the same, on a new connection.
    let (status, answer) = server.send("GET", "/v1/agents", None, None).await;
    assert_eq!(status, 200, "{answer}");
    // The greedy tenant's oldest connection made room: it is closed.
    let mut oldest = held.remove(0);
    let mut rest = vec![0; 64];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), oldest.read(&mut rest))
        .await
        .expect("the oldest greedy connection was not closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

/// A keep-alive connection to `server` and the head of its answer to one request of `token`'s.
async fn keep_alive(
    server: &super::support::Server,
    token: String,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request =
        format!("GET /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0; 4096];
    let read = socket.read(&mut head).await.unwrap();
    (socket, String::from_utf8_lossy(&head[..read]).into_owned())
}

/// One token holds no more connections than `connections_per_token`; the tenant's other
/// tokens still connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_connections_stay_within_its_quota() {
    let env = configured("tenants:\n  acme:\n    quotas: { connections_per_token: 2 }\n");
    let first = tenants_with_tokens(&env, &["acme"], None).remove(0);
    let second = env.run(&["--tenant", "acme", "tokens", "create"]).ok().stdout.trim().to_owned();
    let server = env.serve(&[]);
    let (_a, answer) = keep_alive(&server, first.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_b, answer) = keep_alive(&server, first.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_c, answer) = keep_alive(&server, first.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("tenants.acme.quotas.connections_per_token"), "{answer}");
    let (_d, answer) = keep_alive(&server, second).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "the tenant's other token: {answer}");
}

/// A tenant's `connections` quota bounds the connections its tokens hold below the global
/// cap: a request on one more is refused with 429 and `Retry-After`, other tenants are served,
/// and a connection closed gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_connections_stay_within_its_quota() {
    let env = configured("tenants:\n  acme:\n    quotas: { connections: 2 }\n");
    let acme = tenants_with_tokens(&env, &["acme"], None).remove(0);
    let server = env.serve(&[]);
    let open = |token: String| keep_alive(&server, token);
    let (first, answer) = open(acme.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_second, answer) = open(acme.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_third, answer) = open(acme.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("tenants.acme.quotas.connections"), "{answer}");
    // Another tenant is not held to acme's share.
    let (status, body) = server.send("GET", "/v1/agents", None, None).await;
    assert_eq!(status, 200, "{body}");
    // A closed connection gives its place back.
    drop(first);
    let served = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let (_socket, answer) = open(acme.clone()).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "acme's closed connection kept its place");
}
