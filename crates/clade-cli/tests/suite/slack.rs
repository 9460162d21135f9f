//! Slack: an app serving two tenants through the bindings over Socket Mode, against a fake
//! Slack written from its documented wire formats (the Web API, `apps.connections.open` and
//! Socket Mode's envelopes and acknowledgements); and the Events API, with requests signed by
//! Slack's own SDK (`slack_sdk`, PyPI).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use serde_json::{Value, json};

use super::support::{Env, holds_for, python_clients, run_client, two_tenants_under, until, write};

/// What the fake Slack saw and is to do.
#[derive(Default)]
struct FakeSlack {
    /// Envelopes waiting to be pushed down the socket.
    outgoing: VecDeque<Value>,
    /// Envelope ids acknowledged by the app.
    acks: Vec<String>,
    /// Envelopes sent and not acknowledged: Slack sends them again on the next connection.
    unacked: Vec<Value>,
    /// Messages posted: (channel, thread_ts, text).
    posted: Vec<(String, Option<String>, String)>,
    /// Each message's texts, first as posted, then as updated, by ts.
    versions: BTreeMap<String, Vec<String>>,
    /// `chat.postMessage` calls to answer with 429 before taking one.
    rate_limit: usize,
    /// Socket connections opened.
    connections: usize,
    /// Tell the connected socket to go away.
    disconnect: bool,
    url: String,
    /// Files asked an upload URL for (`files.getUploadURLExternal`), by file id: the name and
    /// length declared, and the bytes once posted to the URL.
    uploads: BTreeMap<String, (String, usize, Option<Vec<u8>>)>,
    /// Files shared (`files.completeUploadExternal`).
    shared: Vec<SharedFile>,
}

/// A file shared into a chat.
#[derive(Debug, PartialEq, Eq)]
struct SharedFile {
    channel: String,
    thread: Option<String>,
    id: String,
    title: String,
    comment: Option<String>,
}

type Fake = Arc<Mutex<FakeSlack>>;

const BOT_TOKEN: &str = "xoxb-test";
const APP_TOKEN: &str = "xapp-test";

async fn web_api(
    axum::extract::State(fake): axum::extract::State<Fake>,
    axum::extract::Path(method): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    raw: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // JSON, or a form for the methods that take no JSON (as Slack documents each method).
    let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let body: Value = if kind.starts_with("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let pairs = text.split('&').filter_map(|pair| pair.split_once('='));
        Value::Object(pairs.map(|(k, v)| (k.to_owned(), json!(v.replace('+', " ")))).collect())
    } else if method == "files.getUploadURLExternal" {
        return axum::Json(json!({"ok": false, "error": "invalid_arguments"})).into_response();
    } else {
        match serde_json::from_slice(&raw) {
            Ok(body) => body,
            Err(_) => {
                return axum::Json(json!({"ok": false, "error": "invalid_json"})).into_response();
            }
        }
    };
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut fake = fake.lock().unwrap();
    let token = if method == "apps.connections.open" { APP_TOKEN } else { BOT_TOKEN };
    if auth != format!("Bearer {token}") {
        return axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    match method.as_str() {
        "apps.connections.open" => {
            fake.connections += 1;
            axum::Json(json!({"ok": true, "url": format!("{}/socket", fake.url)})).into_response()
        }
        "chat.postMessage" => {
            if fake.rate_limit > 0 {
                fake.rate_limit -= 1;
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    axum::Json(json!({"ok": false, "error": "ratelimited"})),
                )
                    .into_response();
            }
            let channel = body["channel"].as_str().unwrap().to_owned();
            let thread = body["thread_ts"].as_str().map(str::to_owned);
            let text = body["text"].as_str().unwrap().to_owned();
            let ts = format!("9000.{:04}", fake.posted.len() + 1);
            fake.posted.push((channel.clone(), thread, text.clone()));
            fake.versions.entry(ts.clone()).or_default().push(text);
            axum::Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or_default().to_owned();
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            match fake.versions.get_mut(&ts) {
                Some(versions) => {
                    versions.push(text);
                    axum::Json(json!({"ok": true, "ts": ts})).into_response()
                }
                None => {
                    axum::Json(json!({"ok": false, "error": "message_not_found"})).into_response()
                }
            }
        }
        "files.getUploadURLExternal" => {
            let (Some(name), Some(length)) = (
                body["filename"].as_str(),
                body["length"].as_str().and_then(|l| l.parse::<usize>().ok()),
            ) else {
                return axum::Json(json!({"ok": false, "error": "invalid_arguments"}))
                    .into_response();
            };
            let id = format!("F{}", fake.uploads.len() + 1);
            fake.uploads.insert(id.clone(), (name.to_owned(), length, None));
            let http = fake.url.replace("ws://", "http://");
            axum::Json(
                json!({"ok": true, "upload_url": format!("{http}/upload/{id}"), "file_id": id}),
            )
            .into_response()
        }
        "files.completeUploadExternal" => {
            let channel = body["channel_id"].as_str().unwrap_or_default().to_owned();
            let thread = body["thread_ts"].as_str().map(str::to_owned);
            let comment = body["initial_comment"].as_str().map(str::to_owned);
            let Some(file) = body["files"].get(0) else {
                return axum::Json(json!({"ok": false, "error": "invalid_arguments"}))
                    .into_response();
            };
            let (id, title) = (file["id"].as_str().unwrap_or_default(), file["title"].as_str());
            // Only a file whose bytes arrived, whole, can be shared.
            let whole = fake.uploads.get(id).is_some_and(|(_, length, bytes)| {
                bytes.as_ref().is_some_and(|b| b.len() == *length)
            });
            if !whole {
                return axum::Json(json!({"ok": false, "error": "file_not_found"})).into_response();
            }
            let title = title.unwrap_or_default().to_owned();
            fake.shared.push(SharedFile { channel, thread, id: id.to_owned(), title, comment });
            axum::Json(json!({"ok": true, "files": [{"id": id}]})).into_response()
        }
        _ => axum::Json(json!({"ok": false, "error": "unknown_method"})).into_response(),
    }
}

/// `POST <upload_url>`: a file's bytes, to the URL `files.getUploadURLExternal` gave.
async fn upload(
    axum::extract::State(fake): axum::extract::State<Fake>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let mut fake = fake.lock().unwrap();
    // The URL is signed: a token sent with it would be one leaked.
    if headers.contains_key("authorization") {
        return axum::http::StatusCode::BAD_REQUEST;
    }
    match fake.uploads.get_mut(&id) {
        Some((_, _, bytes)) => {
            *bytes = Some(body.to_vec());
            axum::http::StatusCode::OK
        }
        None => axum::http::StatusCode::NOT_FOUND,
    }
}

async fn socket(
    axum::extract::State(fake): axum::extract::State<Fake>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade.on_upgrade(move |socket| serve_socket(fake, socket))
}

/// Socket Mode's side: `hello`, then each waiting envelope, collecting acknowledgements, until
/// told to disconnect.
async fn serve_socket(fake: Fake, mut socket: WebSocket) {
    let hello = json!({"type": "hello", "num_connections": 1});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    {
        let mut fake = fake.lock().unwrap();
        let again = std::mem::take(&mut fake.unacked);
        for envelope in again.into_iter().rev() {
            fake.outgoing.push_front(envelope);
        }
    }
    loop {
        let (next, leave) = {
            let mut fake = fake.lock().unwrap();
            let leave = std::mem::take(&mut fake.disconnect);
            (if leave { None } else { fake.outgoing.pop_front() }, leave)
        };
        if leave {
            let bye = json!({"type": "disconnect", "reason": "refresh_requested"});
            let _ = socket.send(Message::Text(bye.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        if let Some(envelope) = next {
            fake.lock().unwrap().unacked.push(envelope.clone());
            if socket.send(Message::Text(envelope.to_string().into())).await.is_err() {
                return;
            }
        }
        match tokio::time::timeout(Duration::from_millis(20), socket.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let ack: Value = serde_json::from_str(text.as_str()).unwrap();
                let id = ack["envelope_id"].as_str().unwrap().to_owned();
                let mut fake = fake.lock().unwrap();
                fake.unacked.retain(|e| e["envelope_id"] != id.as_str());
                fake.acks.push(id);
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(None) | Ok(Some(Err(_))) => return,
        }
    }
}

async fn serve_fake(fake: &Fake) -> String {
    let app = axum::Router::new()
        .route("/api/{method}", axum::routing::post(web_api))
        .route("/socket", axum::routing::get(socket))
        .route("/upload/{id}", axum::routing::post(upload))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    fake.lock().unwrap().url = format!("ws://{address}");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/api")
}

/// A data dir with `ada` and the app `team` in events mode on the Web API at `api` (its app
/// token's variable named too, for a listener of its own).
fn events_app(api: &str) -> Env {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "channels:\n  slack:\n    team:\n      token_env: SLACK_TOKEN\n      mode: events\n      signing_secret_env: SLACK_SECRET\n      app_token_env: SLACK_APP\n      api_url: {api}\n      stream: false\n\
             default_agent: ada\n"
        ),
    );
    env
}

fn envelope(id: &str, event: Value) -> Value {
    json!({
        "type": "events_api",
        "envelope_id": id,
        "accepts_response_payload": false,
        "payload": { "type": "event_callback", "team_id": "T1", "event_id": format!("Ev{id}"), "event": event },
    })
}

fn dm(channel: &str, user: &str, ts: &str, text: &str) -> Value {
    json!({"type": "message", "channel_type": "im", "channel": channel, "user": user, "ts": ts, "text": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_app_serves_two_tenants_over_socket_mode() {
    let fake: Fake = Arc::default();
    fake.lock().unwrap().rate_limit = 1;
    let api = serve_fake(&fake).await;
    let (env, rival) = two_tenants_under(
        &format!(
            "channels:\n  slack:\n    team:\n      token_env: SLACK_TOKEN\n      app_token_env: SLACK_APP\n      api_url: {api}\n      stream: false\n\
             bindings:\n  - {{ platform: slack, channel: \"team:D*\", agent: ada }}\n  - {{ platform: slack, channel: \"team:C2*\", agent: rival/bob }}\n"
        ),
        &[("SLACK_TOKEN", BOT_TOKEN), ("SLACK_APP", APP_TOKEN)],
    );
    let server = env.serve(&[]);

    // A direct message: acknowledged once stored, answered in its channel (after a 429).
    fake.lock().unwrap().outgoing.push_back(envelope("e1", dm("D1", "U1", "1.1", "hi there")));
    assert!(until(&fake, |f| f.acks.contains(&"e1".to_owned())).await, "e1 not acknowledged");
    assert!(until(&fake, |f| !f.posted.is_empty()).await, "no reply after a 429");
    assert_eq!(
        fake.lock().unwrap().posted[0],
        ("D1".to_owned(), None, "echo: hi there".to_owned())
    );
    // The same event again (Slack retries what it thinks was lost), a bot's message and one
    // without a channel: acknowledged, and none answered.
    for (id, event) in [
        ("e2", dm("D1", "U1", "1.1", "hi there")),
        (
            "e3",
            json!({"type": "message", "channel_type": "im", "channel": "D1", "bot_id": "B1", "ts": "1.2", "text": "a bot"}),
        ),
        (
            "e4",
            json!({"type": "message", "channel_type": "im", "user": "U1", "ts": "1.3", "text": "where?"}),
        ),
    ] {
        fake.lock().unwrap().outgoing.push_back(envelope(id, event));
    }
    assert!(until(&fake, |f| f.acks.len() == 4).await, "{:?}", fake.lock().unwrap().acks);

    // Slack asks the app to reconnect: it opens a new socket and goes on.
    fake.lock().unwrap().disconnect = true;
    assert!(until(&fake, |f| f.connections >= 2).await, "no second connection");
    let mention = json!({"type": "app_mention", "channel": "C22", "user": "U9", "ts": "5.1", "thread_ts": "5.0", "text": "<@UAPP> bonjour"});
    fake.lock().unwrap().outgoing.push_back(envelope("e5", mention));
    assert!(until(&fake, |f| f.posted.len() == 2).await, "the mention was not answered");
    let posted = fake.lock().unwrap().posted.clone();
    assert_eq!(
        posted[1],
        ("C22".to_owned(), Some("5.0".to_owned()), "echo: <@U9>: bonjour".to_owned())
    );
    assert_eq!(posted.len(), 2, "{posted:?}");

    // Each chat is its tenant's, and the repeat was no second turn.
    let ours = server.sessions_on("ada", "slack", "team:D1").await;
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(server.all_turns(ours[0]["id"].as_str().unwrap()).await.len(), 1);
    let (_, theirs) = server.send("GET", "/v1/sessions", Some(&rival), None).await;
    assert!(theirs.to_string().contains("team:C22/5.0"), "{theirs}");
    assert!(!theirs.to_string().contains("team:D1"), "{theirs}");
    let (_, status) = server.send("GET", "/v1/channels", None, None).await;
    let team = &status["items"][0];
    assert_eq!((team["platform"].as_str(), team["mode"].as_str()), (Some("slack"), Some("socket")));
    assert_eq!(team["state"], "connected", "{status}");
    assert_eq!((team["received"].as_u64(), team["malformed"].as_u64()), (Some(2), Some(1)));
    // A tenant cannot start a Slack conversation through the API.
    let event = json!({ "agent": "bob", "text": "spam", "source": { "platform": "slack", "channel": "team:D1", "actor": "U1" } });
    let (code, _) = server.send("POST", "/v1/events", Some(&rival), Some(event)).await;
    assert_eq!(code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_events_signed_by_slacks_sdk_are_taken_once() {
    let Some(python) = python_clients("the Slack events test") else { return };
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let mut env = events_app(&api);
    env.vars.push(("SLACK_TOKEN".into(), BOT_TOKEN.into()));
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    env.vars.push(("SLACK_SECRET".into(), secret.into()));
    let server = env.serve(&[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sign = |timestamp: &str, body: &str| {
        let file = env.data_dir().join("slack-body.json");
        std::fs::write(&file, body).unwrap();
        let got =
            run_client(&python, "slack_sign.py", &[secret, timestamp, file.to_str().unwrap()]);
        assert_eq!(got["verified"], true, "{got}");
        got["x-slack-signature"].as_str().unwrap().to_owned()
    };
    let post = |app: &str, timestamp: &str, signature: &str, body: &str| {
        let request = reqwest::Client::new()
            .post(format!("{}/channels/slack/{app}", server.url))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", timestamp)
            .header("x-slack-signature", signature)
            .body(body.to_owned());
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Slack checks the URL first.
    let check =
        json!({"type": "url_verification", "token": "x", "challenge": "3eZbrw1aBm"}).to_string();
    let (status, answer) = post("team", &now, &sign(&now, &check), &check).await;
    assert_eq!((status, answer["challenge"].as_str()), (200, Some("3eZbrw1aBm")));
    let event = json!({"type": "event_callback", "event_id": "Ev1", "event": dm("D7", "U7", "7.7", "from events")}).to_string();
    let signature = sign(&now, &event);
    // A wrong signature, a stale one (10 minutes old), no app of that name: refused alike.
    let stale = (now.parse::<i64>().unwrap() - 600).to_string();
    for (app, timestamp, signature) in [
        ("team", now.clone(), "v0=00".to_owned()),
        ("team", stale.clone(), sign(&stale, &event)),
        ("other", now.clone(), signature.clone()),
    ] {
        let (status, answer) = post(app, &timestamp, &signature, &event).await;
        assert_eq!(status, 401, "{app} {timestamp}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature");
    }
    // Slack retries an event it got no answer to in time: one event, one reply.
    for _ in 0..2 {
        let (status, answer) = post("team", &now, &signature, &event).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert!(until(&fake, |f| !f.posted.is_empty()).await, "no reply");
    let posted = async || fake.lock().unwrap().posted.clone();
    let once = vec![("D7".to_owned(), None, "echo: from events".to_owned())];
    holds_for(Duration::from_millis(300), "a retried event", posted, |p| *p == once).await;
    let sessions = server.sessions_on("ada", "slack", "team:D7").await;
    assert_eq!(server.all_turns(sessions[0]["id"].as_str().unwrap()).await.len(), 1);
}

/// A file the agent attaches goes into the thread it was asked in, as Slack uploads work: an
/// upload URL for the declared name and length, the bytes to it (no token with them), then the
/// file shared in the channel and thread, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sends_a_file_into_the_slack_thread_it_was_asked_in() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let (env, _) = super::support::attaching_agent(
        &format!(
            "  slack:\n    team:\n      token_env: SLACK_TOKEN\n      app_token_env: SLACK_APP\n      api_url: {api}\n      stream: false\n"
        ),
        &[("SLACK_TOKEN", BOT_TOKEN), ("SLACK_APP", APP_TOKEN)],
        &[("out/notes.txt", b"minutes of the meeting\n")],
    );
    let _server = env.serve(&[]);
    let text = r#"/tool reply.attach {"path": "out/notes.txt", "caption": "the notes"}"#;
    let mut asked = dm("D7", "U9", "5.1", text);
    asked["thread_ts"] = json!("5.0");
    fake.lock().unwrap().outgoing.push_back(envelope("e1", asked));
    assert!(until(&fake, |f| !f.shared.is_empty()).await, "no file was shared");
    let sent = async || {
        let f = fake.lock().unwrap();
        (f.shared.len(), f.posted.len())
    };
    let once = |sent: &(usize, usize)| *sent == (1, 1);
    holds_for(Duration::from_millis(1000), "a file or reply sent twice", sent, once).await;
    let f = fake.lock().unwrap();
    let shared = SharedFile {
        channel: "D7".to_owned(),
        thread: Some("5.0".to_owned()),
        id: "F1".to_owned(),
        title: "notes.txt".to_owned(),
        comment: Some("the notes".to_owned()),
    };
    assert_eq!(f.shared, [shared]);
    let (name, length, bytes) = &f.uploads["F1"];
    assert_eq!((name.as_str(), *length), ("notes.txt", 23));
    assert_eq!(bytes.as_deref(), Some(b"minutes of the meeting\n".as_slice()));
    // The reply's text went first, into the same thread.
    assert_eq!(f.posted.len(), 1, "{:?}", f.posted);
    assert_eq!(f.posted[0].1.as_deref(), Some("5.0"));
}

/// The app's Socket Mode listener as a process of its own (`clade channels listen`), the
/// gateway in events mode: a listener without the signing secret gets nothing stored or
/// acknowledged; one killed after taking an event and before acknowledging it is sent it again
/// on the next connection; every message is answered once (0 lost, 0 doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_listener_of_its_own_relays_every_event_once_through_a_kill() {
    let fake: Fake = Arc::default();
    {
        let mut f = fake.lock().unwrap();
        for n in 1..=4 {
            let event = dm("D1", "U1", &format!("1.{n}"), &format!("m{n}"));
            f.outgoing.push_back(envelope(&format!("e{n}"), event));
        }
    }
    let api = serve_fake(&fake).await;
    let mut env = events_app(&api);
    for (name, value) in
        [("SLACK_TOKEN", BOT_TOKEN), ("SLACK_APP", APP_TOKEN), ("SLACK_SECRET", "signing-secret")]
    {
        env.vars.push((name.into(), value.into()));
    }
    let server = env.serve(&[]);
    let listen = |vars: &[(&str, &str)]| {
        let mut cmd = env.command();
        cmd.args(["channels", "listen", "team", "--server", &server.url])
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // Signed with another secret: refused, nothing stored or acknowledged.
    let mut wrong = listen(&[("SLACK_SECRET", "not-the-secret")]).spawn().unwrap();
    let (said, _) = super::support::gathered(wrong.stderr.take().unwrap());
    assert!(until(&fake, |f| f.unacked.len() == 4).await, "the events were not sent");
    let refusal = "the gateway refuses this listener";
    let read = async || said.lock().unwrap().clone();
    let said = super::support::polled(read, |s| s.contains(refusal)).await;
    assert!(said.contains(refusal), "{said}");
    // Refused, it acknowledges and posts nothing.
    let seen = async || {
        let f = fake.lock().unwrap();
        (f.acks.len(), f.posted.len())
    };
    let untouched = |f: &(usize, usize)| *f == (0, 0);
    super::support::holds_for(Duration::from_millis(500), "refused yet acted", seen, untouched)
        .await;
    let _ = wrong.kill();
    let _ = wrong.wait();

    // Dies after the second event is stored, before it is acknowledged.
    if clade_runtime::failpoints::ENABLED {
        let out = listen(&[("CLADE_FAILPOINTS", "before_update_confirmed=2")]).output().unwrap();
        assert!(!out.status.success(), "the failpoint was never reached");
        assert_eq!(fake.lock().unwrap().acks, ["e1"]);
    } else {
        assert!(std::env::var("CI").is_err(), "CI builds the suite with failpoints");
    }
    {
        let mut f = fake.lock().unwrap();
        for n in 5..=6 {
            let event = dm("D1", "U1", &format!("1.{n}"), &format!("m{n}"));
            f.outgoing.push_back(envelope(&format!("e{n}"), event));
        }
    }
    let mut listener = listen(&[]).spawn().unwrap();
    let answered = until(&fake, |f| f.posted.len() >= 6 && f.unacked.is_empty()).await;
    let posted = async || fake.lock().unwrap().posted.len();
    holds_for(Duration::from_millis(800), "answered twice", posted, |n| *n <= 6).await;
    let _ = listener.kill();
    let _ = listener.wait();
    let posted: Vec<String> = fake.lock().unwrap().posted.iter().map(|p| p.2.clone()).collect();
    assert!(answered, "{posted:?}");
    let mut expected: Vec<String> = (1..=6).map(|n| format!("echo: m{n}")).collect();
    let mut got = posted.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "each message answered once");
    let sessions = server.sessions_on("ada", "slack", "team:D1").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let turns = server.all_turns(sessions[0]["id"].as_str().unwrap()).await;
    let events: usize = turns.iter().map(|t| t["events"].as_array().unwrap().len()).sum();
    assert_eq!(events, 6);
}

/// A Socket Mode listener paired with the gateway (`clade pair listener`) relays events signed
/// with its key, on a machine that holds the app's tokens but not its signing secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_slack_listener_relays_without_the_signing_secret() {
    let fake: Fake = Arc::default();
    {
        let mut f = fake.lock().unwrap();
        for n in 1..=2 {
            let event = dm("D1", "U1", &format!("1.{n}"), &format!("m{n}"));
            f.outgoing.push_back(envelope(&format!("e{n}"), event));
        }
    }
    let api = serve_fake(&fake).await;
    let mut env = events_app(&api);
    for (name, value) in [("SLACK_TOKEN", BOT_TOKEN), ("SLACK_SECRET", "signing-secret")] {
        env.vars.push((name.into(), value.into()));
    }
    let server = env.serve(&[]);
    let host = super::support::listener_host(
        &env,
        &[("SLACK_TOKEN", BOT_TOKEN), ("SLACK_APP", APP_TOKEN)],
    );
    super::support::pair_listener(&env, &server.url, &host, "team", "slack");
    let mut listener = host
        .command()
        .args(["channels", "listen", "team", "--paired"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answered = until(&fake, |f| f.posted.len() >= 2 && f.unacked.is_empty()).await;
    let _ = listener.kill();
    let _ = listener.wait();
    let mut posted: Vec<String> = fake.lock().unwrap().posted.iter().map(|p| p.2.clone()).collect();
    assert!(answered, "{posted:?}");
    posted.sort();
    assert_eq!(posted, ["echo: m1", "echo: m2"]);
}
