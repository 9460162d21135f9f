//! Discord: a bot serving two tenants through the bindings, against a fake Discord written
//! from its documented gateway protocol (hello, identify with intents, heartbeats and their
//! acknowledgements, dispatches with sequence numbers, resume with missed events replayed) and
//! REST API (messages created and edited, typing, a 429 with `retry_after`).

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
    assert_eq!(fake.lock().unwrap().created[1], ("C5".to_owned(), "echo: bonjour".to_owned()));
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, status) = server.send("GET", "/v1/channels", None, None).await;
        if status["items"][0]["state"] == "failing" || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = status["items"][0]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("4004") && error.contains("token"), "{status}");
    let (code, _) = server.send(
        "POST",
        "/v1/events",
        Some(&rival),
        Some(json!({ "agent": "bob", "text": "x", "source": { "platform": "discord", "channel": "guild:D1", "actor": "U1" } })),
    ).await;
    assert_eq!(code, 400, "a tenant cannot start a Discord conversation");
}
