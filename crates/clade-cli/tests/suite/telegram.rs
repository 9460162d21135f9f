//! Telegram: a bot that serves two tenants through the bindings, tested against the Bot API
//! emulator from npm (`telegram-test-api`), and against a fake Bot API of our own, written from
//! Telegram's documented wire format, for what the emulator does not do: `getUpdates`' offsets
//! (an update stays until confirmed), 429s with `retry_after`, 5xx, a malformed update, and a
//! listener killed mid-stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::support::{
    Env, POLL, Server, free_port, polled, polled_within, required_tool, token, two_tenants_under,
    write,
};

const TOKEN: &str = "123456:test-token";

/// The emulator, running until dropped.
struct Emulator {
    child: std::process::Child,
    url: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `telegram-test-api` (installed by `scripts/test` with `npm ci`).
fn emulator() -> Option<Emulator> {
    use std::io::BufRead;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/telegram");
    let installed = dir.join("node_modules/telegram-test-api/package.json");
    required_tool(
        installed.is_file().then(|| installed.clone()),
        "the Telegram Bot API emulator (npm ci in crates/clade-cli/tests/telegram)",
        "the Telegram emulator test",
        "run scripts/test, which installs it with npm",
    )?;
    let port = free_port();
    #[allow(clippy::disallowed_methods)] // The emulator is a program we did not write.
    let mut child = std::process::Command::new("node")
        .arg(dir.join("emulator.js"))
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("node is needed for the Telegram emulator test");
    let stdout = child.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout).lines().next().unwrap().unwrap();
    assert!(line.starts_with("ready"), "the emulator said {line:?}");
    Some(Emulator { child, url: format!("http://127.0.0.1:{port}") })
}

async fn post(url: &str, body: Value) -> Value {
    reqwest::Client::new().post(url).json(&body).send().await.unwrap().json().await.unwrap()
}

impl Emulator {
    /// A person (user id = chat id) writes `text` to the bot in their private chat.
    async fn say(&self, chat: i64, text: &str) {
        let message = json!({
            "botToken": TOKEN,
            "from": { "id": chat, "first_name": format!("user{chat}"), "is_bot": false },
            "chat": { "id": chat, "type": "private", "first_name": format!("user{chat}") },
            "text": text,
            "date": 1_700_000_000,
        });
        let answer = post(&format!("{}/sendMessage", self.url), message).await;
        assert_eq!(answer["ok"], true, "{answer}");
    }

    /// The bot's messages in `chat` as they stand now (edits applied), oldest first.
    async fn bot_messages(&self, chat: i64) -> Vec<String> {
        let history =
            post(&format!("{}/getUpdatesHistory", self.url), json!({ "token": TOKEN })).await;
        history["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["message"]["chat_id"].to_string().trim_matches('"') == chat.to_string())
            .map(|u| u["message"]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The bot's messages in `chat` once there are at least `count` and none ends in a draft's
    /// mark (or 30 s pass).
    async fn bot_messages_until(&self, chat: i64, count: usize) -> Vec<String> {
        let settled = |messages: &Vec<String>| {
            messages.len() >= count && messages.iter().all(|m| !m.ends_with(" …"))
        };
        polled(async || self.bot_messages(chat).await, settled).await
    }
}

/// The replies of every turn of the one session of `agent` (as `server`'s token sees it) on
/// `channel`.
async fn replies(server: &Server, agent: &str, channel: &str, token: Option<&str>) -> Vec<String> {
    let (_, sessions) =
        server.send("GET", &format!("/v1/sessions?agent={agent}"), token, None).await;
    let ours: Vec<&Value> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["platform"] == "telegram" && s["channel"] == channel)
        .collect();
    assert_eq!(ours.len(), 1, "one session for {channel}: {sessions}");
    let id = ours[0]["id"].as_str().unwrap();
    let (_, turns) = server.send("GET", &format!("/v1/sessions/{id}/turns"), token, None).await;
    let mut turns = turns["items"].as_array().unwrap().clone();
    turns.sort_by_key(|t| t["started_at"].as_i64());
    turns.iter().map(|t| t["reply"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_telegram_bot_serves_two_tenants_through_the_emulator() {
    let Some(emulator) = emulator() else { return };
    let (env, rival) = two_tenants_under(
        &format!(
            "channels:\n  telegram:\n    desk:\n      token_env: DESK_TOKEN\n      api_url: {}\n      poll_timeout_secs: 1\n\
             bindings:\n  - {{ platform: telegram, channel: \"desk:1\", agent: ada }}\n  - {{ platform: telegram, channel: \"desk:2\", agent: rival/bob }}\n",
            emulator.url
        ),
        &[("DESK_TOKEN", TOKEN)],
    );
    let server = env.serve(&[]);

    // Each chat reaches the agent its binding names, in that agent's tenant.
    emulator.say(1, "hello from the default tenant").await;
    emulator.say(2, "hello from the rival").await;
    let first = emulator.bot_messages_until(1, 1).await;
    let second = emulator.bot_messages_until(2, 1).await;
    assert_eq!(first.len(), 1, "one reply in chat 1: {first:?}");
    assert_eq!(second.len(), 1, "one reply in chat 2: {second:?}");
    assert!(first[0].contains("hello from the default tenant"), "{first:?}");
    assert!(second[0].contains("hello from the rival"), "{second:?}");
    assert_eq!(replies(&server, "ada", "desk:1", None).await, first);
    assert_eq!(replies(&server, "bob", "desk:2", Some(&rival)).await, second);
    // Neither tenant sees the other's chat.
    let (_, ours) = server.send("GET", "/v1/sessions", None, None).await;
    assert!(!ours.to_string().contains("desk:2"), "{ours}");
    let (_, theirs) = server.send("GET", "/v1/sessions", Some(&rival), None).await;
    assert!(!theirs.to_string().contains("desk:1"), "{theirs}");

    // A reply longer than a message is split at Telegram's limit, cut between words.
    let long: String = (0..1200).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
    emulator.say(1, &format!("/reply {long}")).await;
    // About 9,500 characters: three messages.
    let messages = emulator.bot_messages_until(1, 4).await;
    let shown: Vec<usize> = messages.iter().map(|m| m.encode_utf16().count()).collect();
    assert_eq!(messages.len(), 4, "the long reply in three messages: {shown:?}");
    assert!(messages[1..].iter().all(|m| m.encode_utf16().count() <= 4096), "{shown:?}");
    assert_eq!(messages[1..].join(" "), long);

    // A chat no binding routes gets nothing, and is counted.
    emulator.say(3, "anyone?").await;
    let channels = server
        .items_until("/v1/channels", |items| items.first().is_some_and(|c| c["unrouted"] == 1))
        .await;
    let status = json!({ "items": channels });
    let desk = &status["items"][0];
    assert_eq!(desk["name"], "desk", "{status}");
    assert_eq!(desk["state"], "connected", "{status}");
    assert_eq!(desk["unrouted"], 1, "{status}");
    assert_eq!(desk["received"], 3, "{status}");
    assert_eq!(desk["sent"], 5, "{status}");
    assert!(emulator.bot_messages(3).await.is_empty());
    let out = env.run(&["channels", "status", "--json", "--server", &server.url]).ok();
    assert_eq!(out.json()[0]["received"], 3, "{}", out.stdout);

    // A tenant cannot open a Telegram conversation itself (its agent's reply would go to any
    // chat it names through the operator's bot), nor read the channels.
    let event = json!({ "agent": "bob", "text": "spam", "source": { "platform": "telegram", "channel": "desk:1", "actor": "1" } });
    let (code, answer) = server.send("POST", "/v1/events", Some(&rival), Some(event)).await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("telegram"), "{answer}");
    let (code, _) = server.send("GET", "/v1/channels", Some(&rival), None).await;
    assert_eq!(code, 403, "a token without the admin scope");
    let (rival_admin, _) = token(&env, "rival", &["admin"]);
    let (code, _) = server.send("GET", "/v1/channels", Some(&rival_admin), None).await;
    assert_eq!(code, 404, "another tenant's admin is not the operator");
    // Nor reach the webhook route without the secret (this bot polls: it has none).
    let response = reqwest::Client::new()
        .post(format!("{}/channels/telegram/desk", server.url))
        .json(&json!({ "update_id": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let readiness = server.get_json("/readyz").await;
    assert_eq!(readiness["channels"][0]["state"], "connected", "{readiness}");
    // A stranger, or a tenant's own admin, learns whether the gateway is up, not its bots.
    let anonymous: serde_json::Value =
        reqwest::get(format!("{}/readyz", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!(anonymous["status"], readiness["status"], "{anonymous}");
    assert!(anonymous.get("channels").is_none() && anonymous["sandbox"].is_null(), "{anonymous}");
    assert!(!anonymous.to_string().contains("desk"), "{anonymous}");
    let (_, tenants) = server.send("GET", "/readyz", Some(&rival_admin), None).await;
    assert!(tenants.get("channels").is_none() && tenants["sandbox"].is_null(), "{tenants}");
}

/// A fake Bot API that keeps updates until a `getUpdates` offset confirms them, as Telegram
/// does, and fails as told.
#[derive(Default)]
struct FakeTelegram {
    /// Pending updates by id.
    updates: BTreeMap<i64, Value>,
    /// Every message the bot sent: (chat, text).
    sent: Vec<(i64, String)>,
    /// `sendMessage` calls to answer with 429 before taking one.
    rate_limit: usize,
    /// `getUpdates` calls to answer with 502.
    outages: usize,
    rate_limited: usize,
    next_message: i64,
    /// How many times each update was handed out.
    handed: BTreeMap<i64, usize>,
    /// What `setWebhook` registered: (url, secret_token).
    webhook: Option<(String, String)>,
    /// Each message's texts, first as sent, then as edited.
    versions: BTreeMap<i64, Vec<String>>,
    /// Files by `file_id`: their `file_path` and bytes.
    files: BTreeMap<String, (String, Vec<u8>)>,
    /// The `file_id`s asked for with `getFile`.
    asked_files: Vec<String>,
    /// Files the bot sent (`sendDocument`).
    documents: Vec<Document>,
    /// `sendDocument` calls to answer with 429 before taking one.
    document_rate_limit: usize,
}

/// A file the bot sent.
#[derive(Debug)]
struct Document {
    chat: i64,
    name: String,
    bytes: Vec<u8>,
    caption: Option<String>,
    /// How many messages the bot had sent before it.
    after_messages: usize,
}

type Fake = Arc<Mutex<FakeTelegram>>;

async fn fake_api(
    axum::extract::State(fake): axum::extract::State<Fake>,
    axum::extract::Path((bot, method)): axum::extract::Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    use axum::http::StatusCode;
    if bot != format!("bot{TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        );
    }
    match method.as_str() {
        "getUpdates" => {
            let wait = body["timeout"].as_u64().unwrap_or(0).min(1);
            let deadline = std::time::Instant::now() + Duration::from_secs(wait);
            loop {
                {
                    let mut fake = fake.lock().unwrap();
                    if fake.outages > 0 {
                        fake.outages -= 1;
                        return (
                            StatusCode::BAD_GATEWAY,
                            axum::Json(
                                json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
                            ),
                        );
                    }
                    if let Some(offset) = body["offset"].as_i64() {
                        fake.updates.retain(|id, _| *id >= offset);
                    }
                    if !fake.updates.is_empty() || std::time::Instant::now() >= deadline {
                        let result: Vec<Value> = fake.updates.values().cloned().collect();
                        for id in fake.updates.keys().copied().collect::<Vec<_>>() {
                            *fake.handed.entry(id).or_default() += 1;
                        }
                        return (StatusCode::OK, axum::Json(json!({"ok": true, "result": result})));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        "sendMessage" => {
            let mut fake = fake.lock().unwrap();
            if fake.rate_limit > 0 {
                fake.rate_limit -= 1;
                fake.rate_limited += 1;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(
                        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
                    ),
                );
            }
            let chat = body["chat_id"].as_i64().unwrap();
            fake.sent.push((chat, body["text"].as_str().unwrap().to_owned()));
            fake.next_message += 1;
            let id = fake.next_message;
            let text = body["text"].as_str().unwrap().to_owned();
            fake.versions.entry(id).or_default().push(text);
            (
                StatusCode::OK,
                axum::Json(
                    json!({"ok": true, "result": {"message_id": id, "date": 0, "chat": {"id": chat, "type": "private"}, "text": body["text"]}}),
                ),
            )
        }
        "setWebhook" => {
            let mut fake = fake.lock().unwrap();
            let url = body["url"].as_str().unwrap_or_default().to_owned();
            let secret = body["secret_token"].as_str().unwrap_or_default().to_owned();
            fake.webhook = Some((url, secret));
            (StatusCode::OK, axum::Json(json!({"ok": true, "result": true})))
        }
        "editMessageText" => {
            let mut fake = fake.lock().unwrap();
            let id = body["message_id"].as_i64().unwrap();
            let text = body["text"].as_str().unwrap().to_owned();
            match fake.versions.get_mut(&id) {
                Some(versions) if versions.last() == Some(&text) => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: message is not modified"}),
                    ),
                ),
                Some(versions) => {
                    versions.push(text);
                    (StatusCode::OK, axum::Json(json!({"ok": true, "result": true})))
                }
                None => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: message to edit not found"}),
                    ),
                ),
            }
        }
        "sendChatAction" => (StatusCode::OK, axum::Json(json!({"ok": true, "result": true}))),
        "getFile" => {
            let mut fake = fake.lock().unwrap();
            let id = body["file_id"].as_str().unwrap_or_default().to_owned();
            fake.asked_files.push(id.clone());
            match fake.files.get(&id) {
                Some((path, bytes)) => (
                    StatusCode::OK,
                    axum::Json(
                        json!({"ok": true, "result": {"file_id": id, "file_unique_id": "u", "file_size": bytes.len(), "file_path": path}}),
                    ),
                ),
                None => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: invalid file_id"}),
                    ),
                ),
            }
        }
        other => (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"ok": false, "error_code": 404, "description": format!("Not Found: method {other}")}),
            ),
        ),
    }
}

/// `POST <api>/bot<token>/sendDocument`: a multipart upload (Bot API "Sending files"), read
/// as a form: `chat_id`, an optional `caption`, and the file as `document`.
async fn fake_document(
    axum::extract::State(fake): axum::extract::State<Fake>,
    axum::extract::Path(bot): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    use axum::http::StatusCode;
    if bot != format!("bot{TOKEN}") {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"ok": false, "error_code": 401})));
    }
    let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(parts) = super::support::multipart(kind, &body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"ok": false, "error_code": 400, "description": "Bad Request: not a form"}),
            ),
        );
    };
    let text = |name: &str| {
        parts.iter().find(|p| p.name == name).map(|p| String::from_utf8_lossy(&p.data).into_owned())
    };
    let (Some(chat), Some(document)) = (
        text("chat_id").and_then(|c| c.parse::<i64>().ok()),
        parts.iter().find(|p| p.name == "document"),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat_id and document are required"}),
            ),
        );
    };
    let mut fake = fake.lock().unwrap();
    if fake.document_rate_limit > 0 {
        fake.document_rate_limit -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
            ),
        );
    }
    let before = fake.sent.len();
    let name = document.filename.clone().unwrap_or_default();
    let (bytes, caption) = (document.data.clone(), text("caption"));
    fake.documents.push(Document { chat, name, bytes, caption, after_messages: before });
    fake.next_message += 1;
    let id = fake.next_message;
    (
        StatusCode::OK,
        axum::Json(
            json!({"ok": true, "result": {"message_id": id, "date": 0, "chat": {"id": chat, "type": "private"}}}),
        ),
    )
}

/// `GET <api>/file/bot<token>/<file_path>`: a file's bytes.
async fn fake_file(
    axum::extract::State(fake): axum::extract::State<Fake>,
    axum::extract::Path((bot, path)): axum::extract::Path<(String, String)>,
) -> (axum::http::StatusCode, Vec<u8>) {
    if bot != format!("bot{TOKEN}") {
        return (axum::http::StatusCode::UNAUTHORIZED, Vec::new());
    }
    let fake = fake.lock().unwrap();
    match fake.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => (axum::http::StatusCode::OK, bytes.clone()),
        None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
    }
}

/// Serves `fake` as the Bot API on a free local port; its base URL.
async fn serve_fake(fake: &Fake) -> String {
    let app = axum::Router::new()
        .route("/{bot}/sendDocument", axum::routing::post(fake_document))
        .route("/{bot}/{method}", axum::routing::post(fake_api))
        .route("/file/{bot}/{*path}", axum::routing::get(fake_file))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    api
}

/// A data dir with `ada` and the bot `desk` on the Bot API at `api`, with `settings` (YAML
/// lines of the bot's, indented to it) and the rest of clade.yaml.
fn desk(api: &str, settings: &str, rest: &str) -> Env {
    let mut env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "channels:\n  telegram:\n    desk:\n      token_env: DESK_TOKEN\n      api_url: {api}\n      {settings}\n{rest}"
        ),
    );
    env.vars.push(("DESK_TOKEN".into(), TOKEN.into()));
    env
}

/// Chat 5 of `desk` is one session of `ada` whose events are `texts`, each once.
async fn one_event_each(server: &Server, texts: &[String]) {
    let sessions = server.sessions_on("ada", "telegram", "desk:5").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let turns = server.all_turns(sessions[0]["id"].as_str().unwrap()).await;
    let mut events: Vec<String> = turns
        .iter()
        .flat_map(|t| t["events"].as_array().unwrap().iter())
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    let mut expected = texts.to_vec();
    expected.sort();
    assert_eq!(events, expected);
}

fn message(update: i64, chat: i64, text: &str) -> Value {
    json!({
        "update_id": update,
        "message": {
            "message_id": update * 10,
            "date": 1_700_000_000,
            "from": { "id": chat, "is_bot": false, "first_name": "p" },
            "chat": { "id": chat, "type": "private" },
            "text": text,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_updates_are_taken_once_across_a_kill_429s_and_bad_updates() {
    let fake: Fake = Arc::default();
    {
        let mut f = fake.lock().unwrap();
        f.outages = 1;
        f.rate_limit = 1;
        f.updates.insert(1, message(1, 5, "m1"));
        // A message with no chat, and an edit: neither becomes an event, and they hold up
        // nothing after them.
        f.updates
            .insert(2, json!({"update_id": 2, "message": {"message_id": 20, "text": "no chat"}}));
        f.updates.insert(3, json!({"update_id": 3, "edited_message": {"message_id": 10, "chat": {"id": 5}, "text": "m1 edited"}}));
        for n in 4..=12 {
            f.updates.insert(n, message(n, 5, &format!("m{n}")));
        }
    }
    let api = serve_fake(&fake).await;

    let env = desk(&api, "poll_timeout_secs: 1\n      stream: false", "default_agent: ada\n");

    // Dies after taking the fifth update, before confirming any: Telegram sends them all again.
    if clade_runtime::failpoints::ENABLED {
        let mut dying = env
            .try_serve_with(&[], &[("CLADE_FAILPOINTS", "before_update_confirmed=5")])
            .expect("the gateway started");
        assert!(dying.exits_within(Duration::from_secs(30)), "the failpoint was never reached");
    } else {
        assert!(std::env::var("CI").is_err(), "CI builds the suite with failpoints");
    }
    let server = env.serve(&[]);
    // The first poll met a 502 and the first reply a 429: both were tried again.
    let sent = async || fake.lock().unwrap().sent.len();
    let every = Duration::from_millis(20);
    let replies = polled_within(Duration::from_secs(60), every, sent, |&n: &usize| n >= 3).await;
    assert!(replies >= 3, "no replies after a 502 and a 429");
    // The replies may be the dead gateway's, sent from the outbox before this one's poller
    // reached the bad update: wait for the poller to count it.
    let channels = async || server.send("GET", "/v1/channels", None, None).await.1;
    let malformed =
        |status: &serde_json::Value| status["items"][0]["malformed"].as_u64() >= Some(1);
    let status = polled_within(Duration::from_secs(30), every, channels, malformed).await;
    assert_eq!(status["items"][0]["malformed"], 1, "{status}");
    assert_eq!(fake.lock().unwrap().rate_limited, 1);
    // Killed mid-stream: some updates are stored and not yet confirmed, some replies not sent.
    server.kill9();
    {
        let mut f = fake.lock().unwrap();
        for n in 13..=20 {
            f.updates.insert(n, message(n, 5, &format!("m{n}")));
        }
    }
    let server = env.serve(&[]);
    let texts: Vec<String> =
        (1..=20).filter(|n| ![2, 3].contains(n)).map(|n| format!("m{n}")).collect();
    let replied = async || {
        let f = fake.lock().unwrap();
        texts.iter().all(|t| f.sent.iter().any(|(_, s)| s.ends_with(&format!(" {t}"))))
    };
    polled_within(Duration::from_secs(60), POLL, replied, |&replied| replied).await;
    // 0 lost: every message was answered in its chat.
    {
        let f = fake.lock().unwrap();
        for text in &texts {
            assert!(
                f.sent.iter().any(|(chat, s)| *chat == 5 && s.ends_with(&format!(" {text}"))),
                "no reply to {text}: {:?}",
                f.sent
            );
        }
        if clade_runtime::failpoints::ENABLED {
            assert!(
                f.handed[&1] >= 2,
                "the first update was sent again after the crash: {:?}",
                f.handed
            );
        }
    }
    // 0 doubled: each message is one event of one session, whatever Telegram sent again.
    one_event_each(&server, &texts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_webhook_takes_updates_signed_with_its_secret_once() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let mut env = desk(
        &api,
        "mode: webhook\n      webhook_secret_env: DESK_SECRET\n      public_url: https://clade.example.test/",
        "bindings:\n  - { platform: telegram, agent: ada }\n",
    );
    // A secret that is not set, or that Telegram would refuse, stops the gateway at start.
    let refused = |env: &Env, says: &str| {
        let out = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        assert_ne!(out.code, 0, "{}", out.stdout);
        let error = out.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
        assert!(error.contains(says), "{says:?} not in {}", out.stderr);
    };
    refused(&env, "environment variable DESK_SECRET (the webhook's secret token) is not set");
    env.vars.push(("DESK_SECRET".into(), "has spaces".into()));
    refused(&env, "Telegram's rule for secret_token");
    env.vars.pop();
    env.vars.push(("DESK_SECRET".into(), "s3cret-Token_1".into()));
    let server = env.serve(&[]);
    // The gateway registered its webhook with the secret Telegram is to send.
    super::support::until(&fake, |f| f.webhook.is_some()).await;
    assert_eq!(
        fake.lock().unwrap().webhook,
        Some(("https://clade.example.test/channels/telegram/desk".into(), "s3cret-Token_1".into()))
    );
    let hook = |bot: &str, secret: Option<&str>, body: String| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/channels/telegram/{bot}", server.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let update = message(7, 42, "via webhook").to_string();
    // Without the secret, with a wrong one, or to a bot that does not exist: alike, and nothing
    // is taken.
    for (bot, secret) in
        [("desk", None), ("desk", Some("wrong")), ("other", Some("s3cret-Token_1"))]
    {
        let (status, answer) = hook(bot, secret, update.clone()).await;
        assert_eq!(status, 401, "{bot} {secret:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature");
    }
    // Telegram retries a webhook it got no answer from: the same update twice is one event.
    for _ in 0..2 {
        let (status, answer) = hook("desk", Some("s3cret-Token_1"), update.clone()).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Unreadable updates are answered 200 (Telegram would send them forever) and skipped.
    for bad in ["not json", r#"{"update_id": 8, "message": {"message_id": 1}}"#] {
        let (status, answer) = hook("desk", Some("s3cret-Token_1"), bad.to_owned()).await;
        assert_eq!(status, 200, "{bad}: {answer}");
    }
    super::support::until(&fake, |f| !f.sent.is_empty()).await;
    assert_eq!(fake.lock().unwrap().sent, vec![(42, "echo: via webhook".to_owned())]);
    let sessions = server.sessions_on("ada", "telegram", "desk:42").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let turns = server.all_turns(sessions[0]["id"].as_str().unwrap()).await;
    assert_eq!(turns.len(), 1, "one event, one turn: {turns:?}");
    let (_, status) = server.send("GET", "/v1/channels", None, None).await;
    assert_eq!(status["items"][0]["mode"], "webhook", "{status}");
    assert_eq!(status["items"][0]["malformed"], 2, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_streams_into_one_message_edited_in_place() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    // About 4 seconds of streaming at 20 tokens a second.
    let mut env = desk(
        &api,
        "poll_timeout_secs: 1",
        &format!(
            "default_agent: ada\nmodels:\n  slow:\n    provider: openai\n    model: stub+tps=20\n    base_url: {}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [slow]\n",
            stub.url()
        ),
    );
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    let server = env.serve(&[]);
    let words: Vec<String> = (0..80).map(|i| format!("w{i}")).collect();
    let reply = words.join(" ");
    fake.lock().unwrap().updates.insert(1, message(1, 9, &format!("/reply {reply}")));
    let versions = polled_within(
        Duration::from_secs(60),
        POLL,
        async || fake.lock().unwrap().versions.clone(),
        |versions: &BTreeMap<i64, Vec<String>>| versions.values().any(|v| v.last() == Some(&reply)),
    )
    .await;
    // One message: drafts that grow, marked as unfinished, then the reply in the same message.
    assert_eq!(versions.len(), 1, "{versions:?}");
    let shown = versions.values().next().unwrap();
    assert_eq!(shown.last(), Some(&reply), "{shown:?}");
    assert!(shown.len() >= 3, "at least two drafts before the reply: {shown:?}");
    for (draft, next) in shown.iter().zip(&shown[1..]) {
        let text = draft.strip_suffix(" …").unwrap_or_else(|| panic!("not a draft: {draft:?}"));
        assert!(reply.starts_with(text.trim_end()), "{draft:?} is not the reply's start");
        assert!(next.len() >= text.len(), "no version shows less: {shown:?}");
    }
    // Nothing else went to the chat.
    assert_eq!(fake.lock().unwrap().sent.len(), 1);
    drop(server);
}

/// Files sent with messages: a photo (its largest size) is fetched with `getFile`, kept in the
/// agent's workspace and named in the turn's text under the caption; a document over the
/// 20 MB limit is not fetched, the chat is told so, and the message is still taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_with_messages_reach_the_agents_workspace_within_a_limit() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let env = desk(&api, "poll_timeout_secs: 1", "default_agent: ada\n");
    {
        let mut f = fake.lock().unwrap();
        f.files.insert("big-photo".into(), ("photos/file_7.jpg".into(), b"JPEGDATA".to_vec()));
        let mut photo = message(2, 42, "ignored");
        let m = &mut photo["message"];
        m.as_object_mut().unwrap().remove("text");
        m["caption"] = json!("what is this?");
        m["photo"] = json!([
            {"file_id": "small-photo", "file_unique_id": "a", "width": 90, "height": 90, "file_size": 3},
            {"file_id": "big-photo", "file_unique_id": "b", "width": 800, "height": 800, "file_size": 8},
        ]);
        f.updates.insert(2, photo);
        let mut huge = message(1, 42, "ignored");
        let m = &mut huge["message"];
        m.as_object_mut().unwrap().remove("text");
        m["document"] = json!({"file_id": "huge", "file_unique_id": "c", "file_name": "../../backup.tar", "file_size": 30 * 1024 * 1024});
        f.updates.insert(1, huge);
    }
    // Dies after taking the photo, before confirming it: Telegram sends it again, and, stored
    // with its file the first time, it is not fetched twice.
    if clade_runtime::failpoints::ENABLED {
        // The poller may reach the failpoint before the gateway has printed its address: then
        // it died while starting, which is the same death.
        let dying = env.try_serve_with(&[], &[("CLADE_FAILPOINTS", "before_update_confirmed=2")]);
        if let Some(mut dying) = dying {
            let died = dying.exits_within(Duration::from_secs(30));
            assert!(died, "the failpoint was never reached");
        }
        assert_eq!(fake.lock().unwrap().asked_files, ["big-photo"], "the photo was not fetched");
    }
    let server = env.serve(&[]);
    assert!(
        super::support::until(&fake, |f| f.sent.len() >= 3).await,
        "the messages were not answered"
    );
    let sent: Vec<String> = fake.lock().unwrap().sent.iter().map(|(_, t)| t.clone()).collect();
    let photo_reply =
        sent.iter().find(|t| t.contains("what is this?")).expect("no reply to the photo");
    assert!(
        photo_reply
            .contains("[file sent with this message: inbox/telegram/42_20/photo.jpg (8 bytes)]"),
        "{photo_reply}"
    );
    assert!(
        sent.iter().any(|t| t.starts_with("backup.tar is over the 20.0 MB limit")),
        "the chat was not told: {sent:?}"
    );
    assert!(
        sent.iter().any(|t| t.contains(
            "[file backup.tar was not kept: the file is over the 20.0 MB limit (30.0 MB)]"
        )),
        "{sent:?}"
    );
    // Once: the oversize file never, the photo not again when Telegram sent it again.
    assert_eq!(
        fake.lock().unwrap().asked_files,
        ["big-photo"],
        "a file was fetched twice, or the oversize one"
    );
    let kept: Vec<_> = std::fs::read_dir(env.data_dir().join("agents"))
        .unwrap()
        .map(|agent| agent.unwrap().path().join("inbox/telegram/42_20/photo.jpg"))
        .filter(|path| path.exists())
        .collect();
    assert_eq!(kept.len(), 1, "the photo is not in the agent's workspace");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"JPEGDATA");
    drop(server);
}

/// In a group chat the people share one conversation: each message is named after its sender
/// (so the agent knows who spoke), all go to one session, and replies go to the group; a
/// private chat stays a conversation of its own, its text as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_chat_is_one_conversation_naming_each_sender() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let env = desk(&api, "poll_timeout_secs: 1", "default_agent: ada\n");
    let in_group = |update: i64, from: Value, text: &str| {
        json!({"update_id": update, "message": {
            "message_id": update * 10, "date": 1_700_000_000, "from": from,
            "chat": {"id": -500, "type": "supergroup", "title": "team"}, "text": text,
        }})
    };
    {
        let mut f = fake.lock().unwrap();
        let ann = json!({"id": 7, "is_bot": false, "first_name": "Ann", "username": "ann"});
        let bo = json!({"id": 8, "is_bot": false, "first_name": "Bo"});
        f.updates.insert(1, in_group(1, ann, "shall we ship today?"));
        f.updates.insert(2, in_group(2, bo, "after lunch"));
        f.updates.insert(3, message(3, 7, "just me"));
    }
    let server = env.serve(&[]);
    assert!(super::support::until(&fake, |f| f.sent.len() >= 3).await, "no replies");
    let sent = fake.lock().unwrap().sent.clone();
    assert!(
        sent.contains(&(-500, "echo: Ann (@ann): shall we ship today?".to_owned())),
        "{sent:?}"
    );
    assert!(sent.contains(&(-500, "echo: Bo: after lunch".to_owned())), "{sent:?}");
    assert!(sent.contains(&(7, "echo: just me".to_owned())), "{sent:?}");
    let group = server.sessions_on("ada", "telegram", "desk:-500").await;
    assert_eq!(group.len(), 1, "one conversation for the group: {group:?}");
    assert_eq!(group[0]["actor"], "group", "{group:?}");
    assert_eq!(server.all_turns(group[0]["id"].as_str().unwrap()).await.len(), 2);
}

/// The bot `desk` on `api`, its agent `ada` allowed to attach files; and ada's workspace.
fn attaching_desk(api: &str) -> (Env, std::path::PathBuf) {
    let env = desk(
        api,
        "poll_timeout_secs: 1\n      stream: false",
        "default_agent: ada\ntools:\n  policy:\n    - { effect: allow, tool: reply.attach }\n",
    );
    let ws = std::path::PathBuf::from(env.run(&["agents", "workspace", "ada"]).ok().stdout.trim());
    (env, ws)
}

/// An agent sends files from its workspace with its reply (`reply.attach`): after the reply's
/// text, once, through a 429; and nothing from outside the workspace, whatever path, link or
/// hard link the agent tries, nor a file over the limit, each refused to the agent by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sends_files_from_its_workspace_and_nothing_from_outside_it() {
    let fake: Fake = Arc::default();
    fake.lock().unwrap().document_rate_limit = 1;
    let api = serve_fake(&fake).await;
    let (env, ws) = attaching_desk(&api);
    let secret = env.data_dir().join("secret.txt");
    std::fs::write(&secret, "SECRET").unwrap();
    std::fs::create_dir_all(ws.join("out")).unwrap();
    std::fs::write(ws.join("out/report.csv"), "a,b\n1,2\n").unwrap();
    std::os::unix::fs::symlink(&secret, ws.join("out/link.txt")).unwrap();
    std::fs::hard_link(&secret, ws.join("out/hard.txt")).unwrap();
    std::fs::File::create(ws.join("out/big.bin")).unwrap().set_len(21 * 1024 * 1024).unwrap();
    let attach = |path: &str| format!("/tool reply.attach {{\"path\": \"{path}\"}}");
    let text = [
        "/tool reply.attach {\"path\": \"out/report.csv\", \"caption\": \"the numbers\"}"
            .to_owned(),
        attach("out/link.txt"),
        attach("../secret.txt"),
        attach("/etc/passwd"),
        attach("out/hard.txt"),
        attach("out/big.bin"),
    ]
    .join("\n");
    fake.lock().unwrap().updates.insert(1, message(1, 7, &text));
    let server = env.serve(&[]);
    assert!(
        super::support::until(&fake, |f| !f.documents.is_empty()).await,
        "no file was sent: {:?}",
        fake.lock().unwrap().sent
    );
    // Give a second upload, if one were coming, the time to come.
    let documents = async || fake.lock().unwrap().documents.len();
    let uploaded = "a file uploaded twice";
    super::support::holds_for(Duration::from_millis(1500), uploaded, documents, |n| *n == 1).await;
    let f = fake.lock().unwrap();
    assert_eq!(
        f.documents.len(),
        1,
        "{:?}",
        f.documents.iter().map(|d| &d.name).collect::<Vec<_>>()
    );
    let sent = &f.documents[0];
    assert_eq!((sent.chat, sent.name.as_str()), (7, "report.csv"));
    assert_eq!(sent.bytes, b"a,b\n1,2\n");
    assert_eq!(sent.caption.as_deref(), Some("the numbers"));
    // After the reply's text, which the upload's 429 did not send twice.
    assert_eq!(sent.after_messages, 1);
    let replies: Vec<&String> = f.sent.iter().filter(|(c, _)| *c == 7).map(|(_, t)| t).collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let reply = replies[0];
    for refusal in [
        "a link is on its path",
        "leaves the workspace",
        "absolute",
        "more than one name",
        "over the",
    ] {
        assert!(reply.contains(refusal), "{refusal}: {reply}");
    }
    assert!(!f.documents.iter().any(|d| d.bytes.windows(6).any(|w| w == b"SECRET")));
    drop(f);
    drop(server);
}

/// A gateway killed in the middle of a turn that attaches files (after the first file's call
/// is journaled, as the second's starts): the resumed turn's reply carries both files, each
/// sent once, the first taken from the journal rather than run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_attached_before_a_crash_are_sent_once_after_it() {
    if !clade_runtime::failpoints::ENABLED {
        assert!(std::env::var("CI").is_err(), "CI builds the suite with failpoints");
        return;
    }
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let (env, ws) = attaching_desk(&api);
    std::fs::create_dir_all(ws.join("out")).unwrap();
    std::fs::write(ws.join("out/one.txt"), "first").unwrap();
    std::fs::write(ws.join("out/two.txt"), "second").unwrap();
    let text = "/tool reply.attach {\"path\": \"out/one.txt\"}\n/tool reply.attach {\"path\": \"out/two.txt\"}";
    fake.lock().unwrap().updates.insert(1, message(1, 9, text));
    // The second call's start is journaled, then the process dies.
    if let Some(mut dying) =
        env.try_serve_with(&[], &[("CLADE_FAILPOINTS", "after_journal_intent=2")])
    {
        assert!(dying.exits_within(Duration::from_secs(30)), "the failpoint was never reached");
    }
    assert!(fake.lock().unwrap().documents.is_empty(), "a file went out before the turn ended");
    let _server = env.serve(&[]);
    assert!(
        super::support::until(&fake, |f| f.documents.len() >= 2).await,
        "the files were not sent after the restart: {:?}",
        fake.lock().unwrap().sent
    );
    let documents = async || fake.lock().unwrap().documents.len();
    let uploaded = "a file uploaded twice";
    super::support::holds_for(Duration::from_millis(1500), uploaded, documents, |n| *n == 2).await;
    let f = fake.lock().unwrap();
    let sent: Vec<(&str, &[u8])> =
        f.documents.iter().map(|d| (d.name.as_str(), d.bytes.as_slice())).collect();
    assert_eq!(sent, [("one.txt", b"first".as_slice()), ("two.txt", b"second".as_slice())]);
    let replies = f.sent.iter().filter(|(chat, _)| *chat == 9).count();
    assert_eq!(replies, 1, "{:?}", f.sent);
}

/// The bot `desk` in webhook mode (its secret `secret`) on a fake Bot API holding `updates`
/// messages of chat 5, and its gateway serving.
async fn webhook_desk(updates: i64, secret: &str) -> (Fake, Env, Server) {
    let fake: Fake = Arc::default();
    {
        let mut f = fake.lock().unwrap();
        for n in 1..=updates {
            f.updates.insert(n, message(n, 5, &format!("m{n}")));
        }
    }
    let api = serve_fake(&fake).await;
    let mut env = desk(
        &api,
        "mode: webhook\n      webhook_secret_env: DESK_SECRET\n      poll_timeout_secs: 1\n      stream: false",
        "default_agent: ada\n",
    );
    env.vars.push(("DESK_SECRET".into(), secret.into()));
    let server = env.serve(&[]);
    (fake, env, server)
}

/// The bot's listener as a process of its own (`clade channels listen`), the gateway in webhook
/// mode: killed after taking an update and before confirming it, then started again, it relays
/// every message once (0 lost, 0 doubled), and the gateway answers each from its outbox. A
/// listener with the wrong secret is refused by the gateway and confirms nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_of_its_own_relays_every_update_once_through_a_kill() {
    let (fake, env, server) = webhook_desk(6, "relay-secret_1").await;
    let listen = |vars: &[(&str, &str)]| {
        let mut cmd = env.command();
        cmd.args(["channels", "listen", "desk", "--server", &server.url])
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // A listener that does not hold the gateway's secret gets nothing stored or confirmed.
    let mut wrong = listen(&[("DESK_SECRET", "not-the-secret")]).spawn().unwrap();
    let (said, _) = super::support::gathered(wrong.stderr.take().unwrap());
    assert!(super::support::until(&fake, |f| f.handed.contains_key(&1)).await);
    let refusal = "the gateway refuses this listener";
    let read = async || said.lock().unwrap().clone();
    let said = super::support::polled(read, |s| s.contains(refusal)).await;
    assert!(said.contains(refusal), "{said}");
    // Refused, it sends nothing and confirms no update (six stay with the platform).
    let untouched = |f: &(usize, usize)| *f == (0, 6);
    let seen = async || {
        let f = fake.lock().unwrap();
        (f.sent.len(), f.updates.len())
    };
    super::support::holds_for(Duration::from_millis(500), "refused yet acted", seen, untouched)
        .await;
    let _ = wrong.kill();
    let _ = wrong.wait();

    // Dies after the third update is stored, before it is confirmed.
    if clade_runtime::failpoints::ENABLED {
        let out = listen(&[("CLADE_FAILPOINTS", "before_update_confirmed=3")]).output().unwrap();
        assert!(!out.status.success(), "the failpoint was never reached");
    } else {
        assert!(std::env::var("CI").is_err(), "CI builds the suite with failpoints");
    }
    {
        let mut f = fake.lock().unwrap();
        for n in 7..=9 {
            f.updates.insert(n, message(n, 5, &format!("m{n}")));
        }
    }
    let mut listener = listen(&[]).spawn().unwrap();
    let texts: Vec<String> = (1..=9).map(|n| format!("m{n}")).collect();
    let answered = |f: &FakeTelegram| {
        texts.iter().all(|t| f.sent.iter().any(|(_, s)| s.ends_with(&format!(" {t}"))))
    };
    let all = super::support::until(&fake, answered).await;
    let sent = async || fake.lock().unwrap().sent.len();
    super::support::holds_for(Duration::from_millis(1000), "answered twice", sent, |n| *n <= 9)
        .await;
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(all, "not every message was answered: {:?}", fake.lock().unwrap().sent);
    // Once each: one reply a message, one event a message, whatever was relayed twice.
    let replies = fake.lock().unwrap().sent.clone();
    assert_eq!(replies.len(), 9, "{replies:?}");
    if clade_runtime::failpoints::ENABLED {
        assert!(fake.lock().unwrap().handed[&1] >= 3, "nothing was relayed twice");
    }
    one_event_each(&server, &texts).await;
    let (_, status) = server.send("GET", "/v1/channels", None, None).await;
    assert_eq!(status["items"][0]["mode"], "webhook", "{status}");
    assert_eq!(status["items"][0]["received"], 9, "{status}");
}

/// A listener paired with the gateway (`clade remote listen` on its machine, `clade pair
/// listener` on the gateway's) relays with its key and holds none of the channel's secrets;
/// a request signed by a key paired for nothing, or carrying neither, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_listener_relays_without_the_channels_secret() {
    let (fake, env, server) = webhook_desk(3, "gateway-only-secret").await;
    // The listener's machine: the same clade.yaml, the bot's token, and no webhook secret.
    let relay_host = super::support::listener_host(&env, &[("DESK_TOKEN", TOKEN)]);
    let unpaired = relay_host
        .command()
        .args(["channels", "listen", "desk", "--server", &server.url])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&unpaired.stderr);
    assert!(!unpaired.status.success() && said.contains("DESK_SECRET is not set"), "{said}");

    super::support::pair_listener(&env, &server.url, &relay_host, "desk", "telegram");

    // Signed by a key paired as nothing: refused, as is a request with neither key nor secret.
    let stranger = clade_tools::remote::identity::Identity::load_or_create(
        &env.data_dir().join("stranger.key"),
    )
    .unwrap();
    let body = message(9, 5, "forged").to_string().into_bytes();
    let time = clade_core::Clock::now(&clade_core::SystemClock).as_millis();
    let path = "/channels/telegram/desk";
    let text = clade_tools::remote::identity::request_text("POST", path, time, &body);
    let signature = stranger.sign(&[clade_tools::remote::identity::REQUEST, &text]);
    let client = reqwest::Client::new();
    let forged = client
        .post(format!("{}{path}", server.url))
        .header(clade_protocol::remote_tools::PEER_HEADER, stranger.public())
        .header(clade_protocol::remote_tools::PEER_TIME_HEADER, time.to_string())
        .header(clade_protocol::remote_tools::PEER_SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let bare = client.post(format!("{}{path}", server.url)).body(body).send().await.unwrap();
    assert_eq!(bare.status(), 401);

    let mut listener = relay_host
        .command()
        .args(["channels", "listen", "desk", "--paired"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answered = super::support::until(&fake, |f| f.sent.len() >= 3).await;
    let sent = async || fake.lock().unwrap().sent.len();
    super::support::holds_for(Duration::from_millis(500), "answered twice", sent, |n| *n <= 3)
        .await;
    let _ = listener.kill();
    let _ = listener.wait();
    let sent: Vec<String> = fake.lock().unwrap().sent.iter().map(|(_, t)| t.clone()).collect();
    assert!(answered, "{sent:?}");
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(!sent.iter().any(|t| t.contains("forged")), "{sent:?}");
    let listed = env.run(&["pair", "list", "--json"]).json();
    assert!(listed.to_string().contains("\"kind\":\"listener\""), "{listed}");
}
