//! Discord: a bot serving two tenants through the bindings, against a fake Discord written
//! from its documented gateway protocol (hello, identify with intents, heartbeats and their
//! acknowledgements, dispatches with sequence numbers, resume with missed events replayed) and
//! REST API (messages created and edited, typing, a 429 with `retry_after`, a channel's
//! messages after one, newest first); and a bot that was down fetching what it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use serde_json::{Value, json};

use super::support::{two_tenants_under, until};

const TOKEN: &str = "discord-test-token";
const BOT_USER: &str = "900";

/// What the fake Discord saw and is to do.
#[derive(Default)]
struct FakeDiscord {
    /// MESSAGE_CREATE payloads waiting to be dispatched.
    outgoing: VecDeque<Value>,
    /// Every dispatch sent, by sequence number (a resume replays those after its `seq`).
    dispatched: Vec<Value>,
    /// The opening payloads received: identify (2) or resume (6).
    openings: Vec<Value>,
    heartbeats: usize,
    /// Messages created: (channel, content).
    created: Vec<(String, String)>,
    /// POSTs to answer with 429 before taking one.
    rate_limit: usize,
    /// Close the socket with this code.
    close_with: Option<u16>,
    url: String,
    /// Every user message of every channel, as REST lists them (without `guild_id`).
    history: Vec<Value>,
    /// The `after` of each message listing asked for: (channel, after).
    listed: Vec<(String, String)>,
    /// Listings to answer with 429 first.
    list_rate_limit: usize,
    /// Channels the bot was removed from: their listings answer 403.
    gone: Vec<String>,
    /// Messages created with a file: (channel, file name, bytes, content).
    uploads: Vec<(String, String, Vec<u8>, String)>,
}

type Fake = Arc<Mutex<FakeDiscord>>;

async fn rest(
    axum::extract::State(fake): axum::extract::State<Fake>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if auth != format!("Bot {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "401: Unauthorized", "code": 0})),
        )
            .into_response();
    }
    let path = uri.path().trim_start_matches("/api/v10");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut fake = fake.lock().unwrap();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway", "bot"]) => {
            axum::Json(json!({"url": fake.url, "shards": 1})).into_response()
        }
        ("POST", ["channels", channel, "messages"]) => {
            if fake.rate_limit > 0 {
                fake.rate_limit -= 1;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"message": "You are being rate limited.", "retry_after": 0.5, "global": false})),
                )
                    .into_response();
            }
            let kind =
                headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if kind.starts_with("multipart/form-data") {
                // A message with files: `payload_json`, and `files[n]` named by its attachments.
                let parts = super::support::multipart(kind, &body).expect("a multipart body");
                let payload = parts.iter().find(|p| p.name == "payload_json").unwrap();
                let payload: Value = serde_json::from_slice(&payload.data).unwrap();
                assert_eq!(payload["allowed_mentions"]["parse"], json!([]), "files must not ping");
                let file = parts.iter().find(|p| p.name == "files[0]").expect("files[0]");
                let name = file.filename.clone().unwrap();
                assert_eq!(payload["attachments"][0]["filename"], name.as_str());
                let content = payload["content"].as_str().unwrap_or_default().to_owned();
                fake.uploads.push(((*channel).to_owned(), name, file.data.clone(), content));
                let id = format!("{}", 7000 + fake.uploads.len());
                return axum::Json(json!({"id": id, "channel_id": channel})).into_response();
            }
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["allowed_mentions"]["parse"], json!([]), "replies must not ping");
            let content = body["content"].as_str().unwrap().to_owned();
            fake.created.push(((*channel).to_owned(), content.clone()));
            let id = format!("{}", 5000 + fake.created.len());
            axum::Json(json!({"id": id, "channel_id": channel, "content": content})).into_response()
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            axum::Json(json!({"id": id, "channel_id": channel})).into_response()
        }
        ("POST", ["channels", _, "typing"]) => StatusCode::NO_CONTENT.into_response(),
        ("GET", ["channels", channel, "messages"]) => {
            if fake.list_rate_limit > 0 {
                fake.list_rate_limit -= 1;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"message": "You are being rate limited.", "retry_after": 0.2, "global": false})),
                )
                    .into_response();
            }
            if fake.gone.iter().any(|gone| gone == channel) {
                fake.listed.push(((*channel).to_owned(), "refused".to_owned()));
                return (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"message": "Missing Access", "code": 50001})),
                )
                    .into_response();
            }
            let query: std::collections::HashMap<&str, &str> = uri
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .collect();
            let after: u64 = query["after"].parse().unwrap();
            let limit: usize = query["limit"].parse().unwrap();
            assert!(limit <= 100, "Discord lists at most 100");
            fake.listed.push(((*channel).to_owned(), after.to_string()));
            let mut found: Vec<Value> = fake
                .history
                .iter()
                .filter(|m| m["channel_id"] == *channel)
                .filter(|m| m["id"].as_str().unwrap().parse::<u64>().unwrap() > after)
                .cloned()
                .collect();
            // The oldest after `after` first, cut to `limit`, then newest first, as Discord.
            found.sort_by_key(|m| m["id"].as_str().unwrap().parse::<u64>().unwrap());
            found.truncate(limit);
            found.reverse();
            axum::Json(Value::Array(found)).into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"message": "404: Not Found", "code": 0})))
            .into_response(),
    }
}

async fn gateway(
    axum::extract::State(fake): axum::extract::State<Fake>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade.on_upgrade(move |socket| serve_gateway(fake, socket))
}

async fn frame(socket: &mut WebSocket, payload: Value) -> bool {
    socket.send(Message::Text(payload.to_string().into())).await.is_ok()
}

/// The gateway's side: hello; identify (then READY) or resume (then the missed dispatches and
/// RESUMED); heartbeats acknowledged; MESSAGE_CREATE dispatched as queued; closed when told.
async fn serve_gateway(fake: Fake, mut socket: WebSocket) {
    if !frame(&mut socket, json!({"op": 10, "d": {"heartbeat_interval": 400}})).await {
        return;
    }
    let Some(Ok(Message::Text(text))) = socket.recv().await else { return };
    let opening: Value = serde_json::from_str(text.as_str()).unwrap();
    fake.lock().unwrap().openings.push(opening.clone());
    assert_eq!(opening["d"]["token"], TOKEN);
    match opening["op"].as_u64() {
        Some(2) => {
            let intents = opening["d"]["intents"].as_u64().unwrap();
            assert_eq!(intents & (1 << 15), 1 << 15, "the message content intent");
            let ready = {
                let mut fake = fake.lock().unwrap();
                let seq = fake.dispatched.len() as u64 + 1;
                let ready = json!({"op": 0, "t": "READY", "s": seq, "d": {
                    "v": 10, "session_id": "session-1", "resume_gateway_url": fake.url,
                    "user": {"id": BOT_USER, "username": "clade", "bot": true},
                }});
                fake.dispatched.push(ready.clone());
                ready
            };
            if !frame(&mut socket, ready).await {
                return;
            }
        }
        Some(6) => {
            assert_eq!(opening["d"]["session_id"], "session-1");
            // Discord replays what the bot missed after `seq`; this fake replays the last one it
            // saw too, which the bot must not take twice.
            let after = (opening["d"]["seq"].as_u64().unwrap() as usize).saturating_sub(1);
            let missed: Vec<Value> = fake.lock().unwrap().dispatched[after..].to_vec();
            for payload in missed {
                if !frame(&mut socket, payload).await {
                    return;
                }
            }
            let resumed = {
                let mut fake = fake.lock().unwrap();
                let seq = fake.dispatched.len() as u64 + 1;
                let resumed = json!({"op": 0, "t": "RESUMED", "s": seq, "d": null});
                fake.dispatched.push(resumed.clone());
                resumed
            };
            if !frame(&mut socket, resumed).await {
                return;
            }
        }
        other => panic!("unexpected opening {other:?}"),
    }
    loop {
        let (next, close) = {
            let mut fake = fake.lock().unwrap();
            let close = fake.close_with.take();
            let next = if close.is_some() { None } else { fake.outgoing.pop_front() };
            let next = next.map(|d| {
                let mut listed = d.clone();
                listed.as_object_mut().unwrap().remove("guild_id");
                fake.history.push(listed);
                let seq = fake.dispatched.len() as u64 + 1;
                let payload = json!({"op": 0, "t": "MESSAGE_CREATE", "s": seq, "d": d});
                fake.dispatched.push(payload.clone());
                payload
            });
            (next, close)
        };
        if let Some(code) = close {
            let close = CloseFrame { code, reason: "test".into() };
            let _ = socket.send(Message::Close(Some(close))).await;
            return;
        }
        if let Some(payload) = next
            && !frame(&mut socket, payload).await
        {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(20), socket.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let payload: Value = serde_json::from_str(text.as_str()).unwrap();
                if payload["op"] == 1 {
                    fake.lock().unwrap().heartbeats += 1;
                    if !frame(&mut socket, json!({"op": 11})).await {
                        return;
                    }
                }
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(None) | Ok(Some(Err(_))) => return,
        }
    }
}

async fn serve_fake(fake: &Fake) -> String {
    let app = axum::Router::new()
        .route("/", axum::routing::get(gateway))
        .fallback(rest)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // As Discord's: the gateway at a host's root, `/?v=10&encoding=json` added by the client.
    fake.lock().unwrap().url = format!("ws://{address}");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/api/v10")
}

fn message(id: &str, channel: &str, guild: Option<&str>, author: &str, content: &str) -> Value {
    let mut d = json!({"id": id, "channel_id": channel, "author": {"id": author, "username": "p"}, "content": content, "mentions": []});
    if let Some(guild) = guild {
        d["guild_id"] = json!(guild);
    }
    if content.contains(&format!("<@{BOT_USER}>")) {
        d["mentions"] = json!([{"id": BOT_USER}]);
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_bot_serves_two_tenants_and_resumes_its_gateway_session() {
    let fake: Fake = Arc::default();
    fake.lock().unwrap().rate_limit = 1;
    let api = serve_fake(&fake).await;
    let (env, rival) = two_tenants_under(
        &format!(
            "channels:\n  discord:\n    guild:\n      token_env: DISCORD_TOKEN\n      api_url: {api}\n      stream: false\n\
             bindings:\n  - {{ platform: discord, channel: \"guild:D*\", agent: ada }}\n  - {{ platform: discord, channel: \"guild:C*\", agent: rival/bob }}\n"
        ),
        &[("DISCORD_TOKEN", TOKEN)],
    );
    let server = env.serve(&[]);

    // A direct message, answered in its channel after a 429.
    fake.lock().unwrap().outgoing.push_back(message("1", "D1", None, "U1", "hi there"));
    assert!(until(&fake, |f| !f.created.is_empty()).await, "no reply");
    assert_eq!(fake.lock().unwrap().created[0], ("D1".to_owned(), "echo: hi there".to_owned()));
    // Guild chatter and a bot's message are not for the bot; a mention is, in rival's tenant.
    {
        let mut f = fake.lock().unwrap();
        f.outgoing.push_back(message("2", "C5", Some("G1"), "U2", "just chatting"));
        let mut bot = message("3", "D1", None, "B7", "a bot");
        bot["author"]["bot"] = json!(true);
        f.outgoing.push_back(bot);
        f.outgoing.push_back(message(
            "4",
            "C5",
            Some("G1"),
            "U2",
            &format!("<@{BOT_USER}> bonjour"),
        ));
    }
    assert!(until(&fake, |f| f.created.len() == 2).await, "the mention was not answered");
    assert_eq!(fake.lock().unwrap().created[1], ("C5".to_owned(), "echo: p: bonjour".to_owned()));
    // Heartbeats are sent and acknowledged.
    assert!(until(&fake, |f| f.heartbeats >= 1).await, "no heartbeat");

    // The socket drops: the bot resumes its session (no new identify), and the mention replayed
    // is no second turn.
    {
        let mut f = fake.lock().unwrap();
        f.close_with = Some(4000);
    }
    assert!(until(&fake, |f| f.openings.len() == 2).await, "no second connection");
    let resume = fake.lock().unwrap().openings[1].clone();
    assert_eq!(resume["op"], 6, "a resume, not a new identify: {resume}");
    fake.lock().unwrap().outgoing.push_back(message("5", "D1", None, "U1", "after the drop"));
    assert!(until(&fake, |f| f.created.len() == 3).await, "no reply after resuming");
    let created = async || fake.lock().unwrap().created.len();
    super::support::holds_for(Duration::from_millis(300), "answered twice", created, |n| *n == 3)
        .await;
    let created = fake.lock().unwrap().created.clone();
    assert_eq!(created.len(), 3, "{created:?}");
    assert_eq!(created[2], ("D1".to_owned(), "echo: after the drop".to_owned()));

    let ours = server.sessions_on("ada", "discord", "guild:D1").await;
    assert_eq!(server.all_turns(ours[0]["id"].as_str().unwrap()).await.len(), 2);
    let (_, theirs) = server.send("GET", "/v1/sessions", Some(&rival), None).await;
    assert!(!theirs.to_string().contains("guild:D1"), "{theirs}");
    let mention = theirs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["channel"] == "guild:C5")
        .unwrap_or_else(|| panic!("{theirs}"));
    let path = format!("/v1/sessions/{}/turns", mention["id"].as_str().unwrap());
    let (_, turns) = server.send("GET", &path, Some(&rival), None).await;
    assert_eq!(turns["items"].as_array().unwrap().len(), 1, "{turns}");
    let (_, status) = server.send("GET", "/v1/channels", None, None).await;
    let guild = &status["items"][0];
    assert_eq!(
        (guild["platform"].as_str(), guild["state"].as_str()),
        (Some("discord"), Some("connected"))
    );
    assert_eq!(guild["received"], 3, "{status}");

    // Discord refuses the token: the bot stops trying and says why.
    fake.lock().unwrap().close_with = Some(4004);
    let channels = server
        .items_until("/v1/channels", |items| items.first().is_some_and(|c| c["state"] == "failing"))
        .await;
    let error = channels.first().and_then(|c| c["last_error"].as_str()).unwrap_or_default();
    assert!(error.contains("4004") && error.contains("token"), "{channels:?}");
    let (code, _) = server.send(
        "POST",
        "/v1/events",
        Some(&rival),
        Some(json!({ "agent": "bob", "text": "x", "source": { "platform": "discord", "channel": "guild:D1", "actor": "U1" } })),
    ).await;
    assert_eq!(code, 400, "a tenant cannot start a Discord conversation");
}

/// The gateway replays nothing to a new session: a bot that was down fetches, from the REST
/// API, what was sent since the newest message it took in each chat it knows (a 429 on the way
/// waited out), answers what is for it and no chatter, and takes nothing twice across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bot_fetches_what_was_sent_while_it_was_down() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let (env, _rival) = two_tenants_under(
        &format!(
            "channels:\n  discord:\n    guild:\n      token_env: DISCORD_TOKEN\n      api_url: {api}\n      stream: false\n\
             bindings:\n  - {{ platform: discord, channel: \"guild:*\", agent: ada }}\n"
        ),
        &[("DISCORD_TOKEN", TOKEN)],
    );
    let server = env.serve(&[]);
    {
        let mut f = fake.lock().unwrap();
        f.outgoing.push_back(message("100", "D1", None, "U1", "first"));
        f.outgoing.push_back(message(
            "101",
            "C5",
            Some("G1"),
            "U2",
            &format!("<@{BOT_USER}> hello"),
        ));
    }
    assert!(until(&fake, |f| f.created.len() == 2).await, "no replies");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill9();

    // While the bot is down: a direct message, guild chatter and a mention.
    {
        let mut f = fake.lock().unwrap();
        let mut history = vec![
            message("205", "D1", None, "U1", "while you were away"),
            message("206", "C5", None, "U2", "just chatting"),
            message("207", "C5", None, "U2", &format!("<@{BOT_USER}> and you?")),
        ];
        f.history.append(&mut history);
        f.list_rate_limit = 1;
    }
    let server = env.serve(&[]);
    assert!(until(&fake, |f| f.created.len() == 4).await, "what was missed was not answered");
    let created = async || fake.lock().unwrap().created.len();
    super::support::holds_for(Duration::from_millis(500), "answered twice", created, |n| *n == 4)
        .await;
    let created = fake.lock().unwrap().created.clone();
    let replies: Vec<&str> = created.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(replies.contains(&"echo: while you were away"), "{replies:?}");
    assert!(replies.contains(&"echo: p: and you?"), "{replies:?}");
    assert!(!replies.iter().any(|r| r.contains("chatting")), "chatter is not for the bot");
    let listed = fake.lock().unwrap().listed.clone();
    assert!(listed.contains(&("D1".to_owned(), "100".to_owned())), "{listed:?}");
    assert!(listed.contains(&("C5".to_owned(), "101".to_owned())), "{listed:?}");

    // Another restart takes nothing twice: each chat is listed from the newest message taken.
    server.kill9();
    let server = env.serve(&[]);
    assert!(
        until(&fake, |f| f.listed.iter().any(|(c, after)| c == "D1" && after == "205")).await,
        "the second catch-up did not start after the message taken"
    );
    let created = async || fake.lock().unwrap().created.len();
    super::support::holds_for(
        Duration::from_millis(500),
        "a message was answered twice",
        created,
        |n| *n == 4,
    )
    .await;
    let ours = server.sessions_on("ada", "discord", "guild:D1").await;
    assert_eq!(server.all_turns(ours[0]["id"].as_str().unwrap()).await.len(), 2);

    // A chat that refuses the bot now (it was removed: 403) is asked once, then forgotten.
    fake.lock().unwrap().gone.push("C5".into());
    server.kill9();
    let refused =
        |f: &FakeDiscord| f.listed.iter().filter(|(c, a)| c == "C5" && a == "refused").count();
    let server = env.serve(&[]);
    assert!(until(&fake, |f| refused(f) == 1).await, "the removed chat was not asked");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    let d1 = |f: &FakeDiscord| f.listed.iter().filter(|(c, _)| c == "D1").count();
    let before = d1(&fake.lock().unwrap());
    let _server = env.serve(&[]);
    assert!(until(&fake, |f| d1(f) > before).await, "no catch-up after the last restart");
    let asked = async || refused(&fake.lock().unwrap());
    let again = "a chat that refused the bot was asked again";
    super::support::holds_for(Duration::from_millis(500), again, asked, |n| *n == 1).await;
}

/// A file the agent attaches comes as a message with the file, its caption as the content;
/// one over Discord's limit (under the agent's) is named in the chat, not uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sends_a_file_to_a_discord_chat_within_discords_limit() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let (env, ws) = super::support::attaching_agent(
        &format!(
            "  discord:\n    guild:\n      token_env: DISCORD_TOKEN\n      api_url: {api}\n      stream: false\n"
        ),
        &[("DISCORD_TOKEN", TOKEN)],
        &[("out/plan.md", b"# Plan\n")],
    );
    std::fs::File::create(ws.join("out/video.bin")).unwrap().set_len(11 * 1024 * 1024).unwrap();
    let _server = env.serve(&[]);
    let text = "/tool reply.attach {\"path\": \"out/plan.md\", \"caption\": \"the plan\"}\n/tool reply.attach {\"path\": \"out/video.bin\"}";
    fake.lock().unwrap().outgoing.push_back(message("1", "D1", None, "U1", text));
    assert!(
        until(&fake, |f| !f.uploads.is_empty() && f.created.len() >= 2).await,
        "no file, or no notice: {:?}",
        fake.lock().unwrap().created
    );
    let sent = async || {
        let f = fake.lock().unwrap();
        (f.uploads.len(), f.created.len())
    };
    let reached = sent().await;
    super::support::holds_for(Duration::from_millis(1000), "sent twice", sent, |now| {
        *now == reached
    })
    .await;
    let f = fake.lock().unwrap();
    assert_eq!(
        f.uploads,
        [("D1".to_owned(), "plan.md".to_owned(), b"# Plan\n".to_vec(), "the plan".to_owned())]
    );
    // The reply's text, then the notice for the file Discord would not take.
    assert_eq!(f.created.len(), 2, "{:?}", f.created);
    assert!(f.created[1].1.starts_with("[video.bin could not be sent:"), "{:?}", f.created);
    assert!(f.created[1].1.contains("over the"), "{:?}", f.created);
}

/// The bot's gateway socket held by a listener of its own (`clade channels listen`, the bot in
/// relay mode): messages it receives are answered by the gateway; killed, and started again,
/// its new session tells the gateway, which fetches what was sent meanwhile; every message is
/// answered once. The relay route takes nothing without the bot's relay secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_of_its_own_relays_discord_messages_once_across_a_kill() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let secret = "relay-secret-of-16-bytes-at-least";
    let (env, _) = super::support::attaching_agent(
        &format!(
            "  discord:\n    guild:\n      token_env: DISCORD_TOKEN\n      api_url: {api}\n      mode: relay\n      relay_secret_env: DISCORD_RELAY\n      stream: false\n"
        ),
        &[("DISCORD_TOKEN", TOKEN), ("DISCORD_RELAY", secret)],
        &[],
    );
    let server = env.serve(&[]);
    // Without the secret, or with another, nothing is taken.
    let relayed = json!({"user": BOT_USER, "d": message("50", "D1", None, "U1", "forged")});
    for given in ["", "not-the-relay-secret"] {
        let answer = reqwest::Client::new()
            .post(format!("{}/channels/discord/guild", server.url))
            .header("x-clade-relay-secret", given)
            .json(&relayed)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
    }
    let listen = || {
        let mut cmd = env.command();
        cmd.args(["channels", "listen", "guild", "--server", &server.url])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut first = listen();
    fake.lock().unwrap().outgoing.push_back(message("100", "D1", None, "U1", "m1"));
    assert!(until(&fake, |f| f.created.len() == 1).await, "the relayed message was not answered");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = first.kill();
    let _ = first.wait();
    // While no listener holds the socket.
    fake.lock().unwrap().history.push(message("205", "D1", None, "U1", "m2"));
    let mut second = listen();
    fake.lock().unwrap().outgoing.push_back(message("300", "D1", None, "U1", "m3"));
    let done = until(&fake, |f| f.created.len() >= 3).await;
    let created = async || fake.lock().unwrap().created.len();
    super::support::holds_for(Duration::from_millis(800), "answered twice", created, |n| *n <= 3)
        .await;
    let _ = second.kill();
    let _ = second.wait();
    let mut replies: Vec<String> =
        fake.lock().unwrap().created.iter().map(|(_, text)| text.clone()).collect();
    assert!(done, "{replies:?}");
    replies.sort();
    assert_eq!(replies, ["echo: m1", "echo: m2", "echo: m3"]);
    assert!(!replies.iter().any(|r| r.contains("forged")));
    assert_eq!(fake.lock().unwrap().openings.len(), 2, "each listener identified once");
    let (_, status) = server.send("GET", "/v1/channels", None, None).await;
    assert_eq!(status["items"][0]["mode"], "relay", "{status}");
}

/// A gateway-socket listener paired with the gateway (`clade pair listener`) relays messages
/// signed with its key, on a machine that holds the bot's token but not its relay secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_discord_listener_relays_without_the_relay_secret() {
    let fake: Fake = Arc::default();
    let api = serve_fake(&fake).await;
    let (env, _) = super::support::attaching_agent(
        &format!(
            "  discord:\n    guild:\n      token_env: DISCORD_TOKEN\n      api_url: {api}\n      mode: relay\n      relay_secret_env: DISCORD_RELAY\n      stream: false\n"
        ),
        &[("DISCORD_TOKEN", TOKEN), ("DISCORD_RELAY", "relay-secret-of-16-bytes-at-least")],
        &[],
    );
    let server = env.serve(&[]);
    let host = super::support::listener_host(&env, &[("DISCORD_TOKEN", TOKEN)]);
    super::support::pair_listener(&env, &server.url, &host, "guild", "discord");
    let mut listener = host
        .command()
        .args(["channels", "listen", "guild", "--paired"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    fake.lock().unwrap().outgoing.push_back(message("100", "D1", None, "U1", "m1"));
    let answered = until(&fake, |f| !f.created.is_empty()).await;
    let _ = listener.kill();
    let _ = listener.wait();
    let created = fake.lock().unwrap().created.clone();
    assert!(answered, "{created:?}");
    assert_eq!(created, [("D1".to_owned(), "echo: m1".to_owned())]);
}
