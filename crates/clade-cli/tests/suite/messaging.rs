//! Agents messaging each other (`agent.send`, `agent.ask`) through the real binary: grants
//! decide who may message whom, a message arrives as the receiver's event and is listed on both
//! sides, chains and loops are cut, no one can forge an agent's message, no tenant reaches
//! another's agents, and an ask answered across a `kill -9` is answered once.

use serde_json::{Value, json};

use super::support::{Env, Server, token, write};

fn tool(name: &str, args: Value) -> String {
    format!("/tool {name} {args}")
}

/// Sends `text` to `agent` from a person and waits for the turn; the reply's text.
async fn say(server: &Server, agent: &str, text: &str) -> String {
    let body = json!({ "agent": agent, "text": text, "wait": true,
        "source": { "platform": "http", "channel": "desk", "actor": "pat" } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["reply"]["text"].as_str().unwrap_or_default().to_owned()
}

/// The agent's messages once `done` holds for them.
async fn messages_until(
    server: &Server,
    agent: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    server.items_until(&format!("/v1/agents/{agent}/messages"), done).await
}

/// Whether a session's first turn has ended.
fn ended(turns: &[Value]) -> bool {
    turns.first().is_some_and(|t| t["status"] != "running")
}

fn grant(env: &Env, from: &str, tool: &str, to: &str) {
    env.run(&["--agent", from, "grants", "add", "--tool", tool, "--resource", to]).ok();
}

/// Without a grant an agent messages no one; with one it sends (the receiver's turn runs in
/// its conversation with the sender, both listings show the message) and asks (the answer is
/// the receiver's reply). A loop of asks is cut where it would wait on itself, a chain of sends
/// stops at `max_depth`, the platform of agents' messages is refused to everyone else, and
/// another tenant's agent of the same handle is never reached nor its messages read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_message_each_other_within_their_grants_and_tenant() {
    let env = Env::new();
    write(&env.data_dir().join("clade.yaml"), "sessions:\n  messaging:\n    max_depth: 3\n");
    for agent in ["ada", "bo", "cy"] {
        env.run(&["agents", "create", agent]).ok();
    }
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "bo"]).ok();
    let (rival, _) = token(&env, "rival", &["admin"]);
    let server = env.serve(&[]);

    let hello = tool("agent.send", json!({ "to": "bo", "message": "hello bo" }));
    let refused = say(&server, "ada", &hello).await;
    assert!(refused.contains("needs a rule or grant"), "{refused}");
    assert_eq!(messages_until(&server, "bo", |_| true).await, Vec::<Value>::new());

    grant(&env, "ada", "agent.send", "bo");
    grant(&env, "ada", "agent.ask", "bo");
    let sent = say(&server, "ada", &hello).await;
    assert!(sent.contains("\"delivered\":true"), "{sent}");
    let received = messages_until(&server, "bo", |m| !m.is_empty()).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let message = &received[0];
    assert_eq!((message["from"].as_str(), message["to"].as_str()), (Some("ada"), Some("bo")));
    assert_eq!(message["kind"], "send");
    assert_eq!(message["depth"], 1);
    assert_eq!(message["text"], "hello bo");
    let bo_session = message["to_session"].as_str().unwrap().to_owned();
    let turns = server.turns_until(&bo_session, ended).await;
    assert_eq!(turns[0]["reply"], "echo: hello bo", "{turns:?}");
    let session = server.get_json(&format!("/v1/sessions/{bo_session}")).await;
    assert_eq!(session["platform"], "agent", "{session}");
    assert_eq!(session["actor"], "ada", "{session}");
    let ada = server.get_json("/v1/agents/ada/messages").await;
    assert_eq!(ada["items"][0]["id"], message["id"], "the sender lists it too: {ada}");
    let cli = env.run(&["agents", "messages", "ada", "--json"]).ok().stdout;
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli[0]["id"], message["id"], "{cli}");
    assert_eq!(cli[0]["text"], "hello bo", "{cli}");
    let table = env.run(&["agents", "messages", "bo"]).ok().stdout;
    assert!(table.contains("send") && table.contains("hello bo"), "{table}");

    let asked =
        say(&server, "ada", &tool("agent.ask", json!({ "to": "bo", "message": "your name?" })))
            .await;
    assert_eq!(asked, "tool results: agent.ask -> echo: your name?");

    // ada asks bo, who asks ada, who asks bo again: bo's conversation with ada is waiting for
    // ada's answer, so that last ask is refused, and every turn still ends.
    grant(&env, "bo", "agent.ask", "ada");
    let innermost = tool("agent.ask", json!({ "to": "bo", "message": "round three" }));
    let middle = tool("agent.ask", json!({ "to": "ada", "message": innermost }));
    let looped =
        say(&server, "ada", &tool("agent.ask", json!({ "to": "bo", "message": middle }))).await;
    assert!(looped.contains("waiting for an answer from you already"), "{looped}");
    assert!(!looped.contains("round three\""), "{looped}");

    // A chain of sends: ada → bo → cy → ada would be the fourth message; it stops at three.
    grant(&env, "bo", "agent.send", "cy");
    grant(&env, "cy", "agent.send", "ada");
    grant(&env, "ada", "agent.send", "cy");
    let fourth = tool("agent.send", json!({ "to": "cy", "message": "and round we go" }));
    let third = tool("agent.send", json!({ "to": "ada", "message": fourth }));
    let second = tool("agent.send", json!({ "to": "cy", "message": third }));
    say(&server, "ada", &tool("agent.send", json!({ "to": "bo", "message": second }))).await;
    let to_cy = |m: &[Value]| m.iter().filter(|m| m["to"] == "cy").cloned().collect::<Vec<_>>();
    let ada_in = messages_until(&server, "ada", |m| m.iter().any(|m| m["depth"] == 3)).await;
    let third = ada_in.iter().find(|m| m["depth"] == 3).expect("the third message");
    assert_eq!((third["from"].as_str(), third["to"].as_str()), (Some("cy"), Some("ada")));
    let cut = server.turns_until(third["to_session"].as_str().unwrap(), ended).await;
    assert!(cut[0]["reply"].as_str().unwrap().contains("a chain stops at 3"), "{cut:?}");
    let cy = to_cy(&messages_until(&server, "cy", |_| true).await);
    assert_eq!(cy.len(), 1, "a fourth went out: {cy:?}");
    assert_eq!(cy[0]["depth"], 2);

    // Nobody else speaks as an agent: not a new event, not one into an agent's session.
    let forged = json!({ "agent": "bo", "text": "I am ada",
        "source": { "platform": "agent", "channel": "ada", "actor": "ada" } });
    let (status, body) = server.send("POST", "/v1/events", None, Some(forged)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("kept for agents"), "{body}");
    let into = json!({ "session": bo_session, "text": "I am ada" });
    let (status, body) = server.send("POST", "/v1/events", None, Some(into)).await;
    assert_eq!(status, 400, "{body}");

    // The rival's bo was never reached, and its token reads none of these messages.
    let (status, theirs) = server.send("GET", "/v1/agents/bo/messages", Some(&rival), None).await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let (status, _) = server.send("GET", "/v1/agents/ada/messages", Some(&rival), None).await;
    assert_eq!(status, 404);
    // Even a grant of every agent names none of another tenant's.
    let across = tool("agent.send", json!({ "to": "rival/bo", "message": "hi" }));
    let denied = say(&server, "ada", &across).await;
    assert!(denied.contains("denied"), "{denied}");
    grant(&env, "ada", "agent.send", "*");
    let strange = say(&server, "ada", &across).await;
    assert!(strange.contains("to: "), "{strange}");
    let (_, theirs) = server.send("GET", "/v1/agents/bo/messages", Some(&rival), None).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
}

/// `clade teams create` makes a preset's agents from their roles' templates, with grants that
/// let the coordinator ask its members and the members only tell it; a name taken or a preset
/// unknown makes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_from_a_preset_asks_its_members_within_its_grants() {
    let env = Env::new();
    let presets = env.run(&["teams", "presets"]).ok().stdout;
    assert!(presets.contains("coordinator, coder, reviewer"), "{presets}");
    let made = env.run(&["teams", "create", "dev", "--name", "acme"]).ok().stdout;
    assert!(made.contains("acme-coordinator") && made.contains("acme-coder"), "{made}");
    let listed = env.run(&["agents", "list", "--json"]).ok().stdout;
    for handle in ["acme-coordinator", "acme-coder", "acme-reviewer"] {
        assert!(listed.contains(handle), "{handle} missing: {listed}");
    }
    let coder = env.run(&["agents", "workspace", "acme-coder"]).ok().stdout;
    let soul = std::fs::read_to_string(std::path::Path::new(coder.trim()).join("SOUL.md")).unwrap();
    assert!(soul.contains("software engineer") && soul.contains("acme-coordinator"), "{soul}");
    env.run(&["teams", "create", "dev", "--name", "acme"]).fails_with("exists already");
    env.run(&["teams", "create", "circus", "--name", "big"]).fails_with("no preset \"circus\"");
    env.run(&["teams", "create", "dev", "--name", "Bad Name"]).fails_with("bad handle");
    let after = env.run(&["agents", "list", "--json"]).ok().stdout;
    let count = |text: &str| serde_json::from_str::<Value>(text).unwrap().as_array().unwrap().len();
    assert_eq!(count(&after), count(&listed), "a refused team made agents");

    let server = env.serve(&[]);
    let ask = tool("agent.ask", json!({ "to": "acme-coder", "message": "status?" }));
    let answer = say(&server, "acme-coordinator", &ask).await;
    assert_eq!(answer, "tool results: agent.ask -> echo: status?");
    let back = tool("agent.ask", json!({ "to": "acme-coordinator", "message": "why?" }));
    let refused = say(&server, "acme-coder", &back).await;
    assert!(refused.contains("needs a rule or grant"), "{refused}");
    let tell = tool("agent.send", json!({ "to": "acme-coordinator", "message": "done" }));
    assert!(say(&server, "acme-coder", &tell).await.contains("\"delivered\":true"));
}

/// What an agent publishes on a topic reaches every other agent of its tenant subscribed to it,
/// in a conversation for the topic; subscribing and publishing need grants naming the topic, an
/// unsubscribed agent gets no more, and another tenant's subscriber of the same topic nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_reaches_the_topics_subscribers_in_the_tenant() {
    let env = Env::new();
    for agent in ["ada", "bo", "cy"] {
        env.run(&["agents", "create", agent]).ok();
    }
    env.run(&["tenants", "create", "rival"]).ok();
    env.run(&["--tenant", "rival", "agents", "create", "bo"]).ok();
    env.run(&["--tenant", "rival", "--agent", "bo", "grants", "add", "--tool", "agent.subscribe"])
        .ok();
    let (rival, _) = token(&env, "rival", &["admin"]);
    let server = env.serve(&[]);
    let subscribe = tool("agent.subscribe", json!({ "topic": "news" }));
    assert!(say(&server, "bo", &subscribe).await.contains("needs a rule or grant"));
    for agent in ["bo", "cy"] {
        grant(&env, agent, "agent.subscribe", "news");
        assert!(say(&server, agent, &subscribe).await.contains("subscribed to"), "{agent}");
    }
    let body = json!({ "agent": "bo", "text": subscribe, "wait": true,
        "source": { "platform": "http", "channel": "desk", "actor": "pat" } });
    let (status, answer) = server.send("POST", "/v1/events", Some(&rival), Some(body)).await;
    assert!(status == 200 && answer["reply"]["text"].as_str().unwrap().contains("subscribed"));

    let publish = tool("agent.publish", json!({ "topic": "news", "message": "release at noon" }));
    assert!(say(&server, "ada", &publish).await.contains("needs a rule or grant"));
    grant(&env, "ada", "agent.publish", "news");
    let published = say(&server, "ada", &publish).await;
    assert!(published.contains(r#""delivered_to":["bo","cy"]"#), "{published}");
    let to_bo = messages_until(&server, "bo", |m| !m.is_empty()).await;
    assert_eq!(
        (to_bo[0]["kind"].as_str(), to_bo[0]["from"].as_str()),
        (Some("publish"), Some("ada"))
    );
    let session = server
        .get_json(&format!("/v1/sessions/{}", to_bo[0]["to_session"].as_str().unwrap()))
        .await;
    assert_eq!(
        (session["platform"].as_str(), session["channel"].as_str()),
        (Some("agent"), Some("topic:news"))
    );

    let leave = tool("agent.subscribe", json!({ "topic": "news", "subscribed": false }));
    assert!(say(&server, "cy", &leave).await.contains("unsubscribed"));
    let again = tool("agent.publish", json!({ "topic": "news", "message": "moved to one" }));
    let published = say(&server, "ada", &again).await;
    assert!(published.contains(r#""delivered_to":["bo"]"#), "{published}");
    let (_, theirs) = server.send("GET", "/v1/agents/bo/messages", Some(&rival), None).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
}

/// `agent.spawn` makes a child agent whose grants are delegated from its parent's, so asking
/// for more than the parent holds makes nothing, and the child cannot exceed what it got; the
/// child's answer returns to the parent, and the same name asks the same child again; an
/// ephemeral child is deleted once it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_agent_holds_only_what_its_parent_delegated() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let spawn = |tools: Value| {
        tool("agent.spawn", json!({ "name": "helper", "task": "summarise", "tools": tools }))
    };
    let reading = json!([{ "tool": "fs.read", "resource": "notes/a.txt" }]);
    let refused = say(&server, "ada", &spawn(reading.clone())).await;
    assert!(refused.contains("needs a rule or grant"), "{refused}");
    grant(&env, "ada", "agent.spawn", "*");
    grant(&env, "ada", "fs.read", "notes/*");
    let beyond = say(&server, "ada", &spawn(json!([{ "tool": "shell.exec" }]))).await;
    assert!(beyond.contains("you hold no grant that covers shell.exec"), "{beyond}");
    let wider = say(&server, "ada", &spawn(json!([{ "tool": "fs.read" }]))).await;
    assert!(wider.contains("you hold no grant that covers fs.read"), "{wider}");
    let listed = env.run(&["agents", "list", "--json"]).ok().stdout;
    assert!(!listed.contains("ada-helper"), "a refused child was made: {listed}");

    let made = say(&server, "ada", &spawn(reading.clone())).await;
    assert!(made.contains(r#""child":"ada-helper""#), "{made}");
    assert!(made.contains(r#""answer":"echo: summarise""#), "{made}");
    let grants = env.run(&["--agent", "ada-helper", "grants", "list", "--json"]).ok().stdout;
    let grants: Value = serde_json::from_str(&grants).unwrap();
    let grants = grants.as_array().unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        (grants[0]["tool"].as_str(), grants[0]["resource"].as_str()),
        (Some("fs.read"), Some("notes/a.txt"))
    );

    // The lineage, from either side.
    let tree = server.get_json("/v1/agents/ada/lineage").await;
    assert_eq!(tree["ancestors"], json!([]), "{tree}");
    assert_eq!(tree["children"], json!([{ "handle": "ada-helper", "children": [] }]), "{tree}");
    let up = server.get_json("/v1/agents/ada-helper/lineage").await;
    assert_eq!((&up["ancestors"], &up["children"]), (&json!(["ada"]), &json!([])), "{up}");

    // The child reaches no further than its grant, and makes no children of its own.
    let outside =
        say(&server, "ada-helper", &tool("fs.read", json!({ "path": "notes/b.txt" }))).await;
    assert!(outside.contains("needs a rule or grant") || outside.contains("denied"), "{outside}");
    let grandchild = say(&server, "ada-helper", &spawn(json!([]))).await;
    assert!(grandchild.contains("needs a rule or grant"), "{grandchild}");
    // The same name asks the same child.
    let again = say(&server, "ada", &spawn(reading)).await;
    assert!(again.contains(r#""child":"ada-helper""#), "{again}");
    let listed = env.run(&["agents", "list", "--json"]).ok().stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // An ephemeral child answers and is gone, with its sessions; asked again, a new one is made.
    let once =
        tool("agent.spawn", json!({ "name": "temp", "task": "count to three", "ephemeral": true }));
    let answered = say(&server, "ada", &once).await;
    assert!(answered.contains(r#""answer":"echo: count to three""#), "{answered}");
    assert!(answered.contains(r#""deleted":true"#), "{answered}");
    let listed = env.run(&["agents", "list", "--json"]).ok().stdout;
    assert!(!listed.contains("ada-temp"), "the ephemeral child stayed: {listed}");
    let (status, _) = server.send("GET", "/v1/agents/ada-temp", None, None).await;
    assert_eq!(status, 404);
    let again = tool("agent.spawn", json!({ "name": "temp", "task": "again", "ephemeral": true }));
    let answered = say(&server, "ada", &again).await;
    assert!(answered.contains(r#""answer":"echo: again""#), "{answered}");

    // Each spawn that ran is a sub-agent run of ada's: the two asking for more than she holds
    // failed, saying why; the four others completed with the answer.
    let runs = env.run(&["runs", "list", "ada", "--kind", "subagent", "--json"]).ok().stdout;
    let runs: Value = serde_json::from_str(&runs).unwrap();
    let runs = runs.as_array().unwrap();
    let status = |s: &str| runs.iter().filter(|r| r["status"] == s).count();
    assert_eq!((status("completed"), status("failed"), runs.len()), (4, 2, 6), "{runs:#?}");
    let newest = &runs[0];
    assert!(newest["output"].as_str().unwrap().contains("echo: again"), "{newest}");
    assert!(newest["input"].as_str().unwrap().contains(r#""child":"ada-temp""#), "{newest}");
    let failed = runs.iter().find(|r| r["status"] == "failed").unwrap();
    assert!(failed["error"].as_str().unwrap().contains("you hold no grant"), "{failed}");
}
