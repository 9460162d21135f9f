//! Live configuration through the real binary: `clade config apply` runs one flow (parse,
//! check, write, record) and a serving gateway takes the new revision without a restart;
//! a bad file changes nothing and says which step failed; history, diff and revert.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{Env, PATIENCE, Server, eventually, polled_within, write};

/// What the agent's `echo` tool call answers now, as the turn's reply summarises it.
async fn echo_reply(server: &Server, n: usize) -> String {
    let event = json!({ "agent": "ada", "text": format!("/tool echo {{\"text\":\"hi {n}\"}}"),
        "wait": true, "source": { "platform": "http", "channel": "c", "actor": format!("a{n}") } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(event)).await;
    assert_eq!(status, 200, "{answer}");
    answer["reply"]["text"].as_str().unwrap_or_default().to_owned()
}

/// Asks until the echo tool's answer satisfies `done` (the reload takes up to a second).
async fn until_echo(server: &Server, done: impl Fn(&str) -> bool) -> String {
    // Each look is a turn of its own (a new actor each time).
    let mut asked = 0..;
    let ask = async || echo_reply(server, asked.next().unwrap()).await;
    let every = Duration::from_millis(100);
    let reply = polled_within(PATIENCE, every, ask, |reply: &String| done(reply)).await;
    assert!(done(&reply), "the gateway never took the new configuration: {reply}");
    reply
}

#[tokio::test]
async fn an_applied_configuration_is_taken_live_and_a_bad_one_changes_nothing() {
    let env = Env::new();
    let yaml = env.data_dir().join("clade.yaml");
    write(&yaml, "sessions:\n  max_queued: 50\n");
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let allowed = echo_reply(&server, 1000).await;
    assert!(allowed.contains("hi 1000") && !allowed.contains("denied"), "{allowed}");

    // Deny the tool: the running gateway takes it without a restart.
    let deny = env.data_dir().join("deny.yaml");
    write(
        &deny,
        "sessions:\n  max_queued: 50\ntools:\n  policy:\n    - { effect: deny, tool: echo }\n",
    );
    let out = env.run(&["config", "apply", deny.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("applied revision 1"), "{}", out.stdout);
    assert!(out.stdout.contains("+  policy:"), "the diff is missing: {}", out.stdout);
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), std::fs::read_to_string(&deny).unwrap());
    let denied = until_echo(&server, |reply| reply.contains("denied")).await;
    assert!(!denied.contains("hi "), "{denied}");

    // Bad files: each names its step, and nothing changes (file, revisions, gateway).
    let bad = env.data_dir().join("bad.yaml");
    for (text, says) in [
        ("sessions:\n  max_queud: 5\n", "the parse step failed"),
        ("heartbeats:\n  ada: { prompt: \"  \" }\n", "the check step failed"),
        ("heartbeats:\n  ada: { schedule: \"0 0 30 2 *\", prompt: \"x\" }\n", "never fires"),
    ] {
        write(&bad, text);
        env.run(&["config", "apply", bad.to_str().unwrap()]).fails_with(says);
    }
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), std::fs::read_to_string(&deny).unwrap());
    let same = env.run(&["config", "apply", deny.to_str().unwrap()]).ok().stdout;
    assert!(same.contains("nothing applied"), "{same}");

    // Allow it again, then revert to revision 1: denied once more.
    let open = env.data_dir().join("open.yaml");
    write(&open, "sessions:\n  max_queued: 50\n");
    env.run(&["config", "apply", open.to_str().unwrap()]).ok();
    until_echo(&server, |reply| reply.contains("hi ")).await;
    let out = env.run(&["config", "revert", "1"]).ok();
    assert!(out.stdout.contains("applied revision 3"), "{}", out.stdout);
    until_echo(&server, |reply| reply.contains("denied")).await;
    env.run(&["config", "revert", "9"]).fails_with("no configuration revision 9");

    let history: Value = env.run(&["config", "history", "--json"]).ok().json();
    let revisions: Vec<i64> =
        history.as_array().unwrap().iter().map(|r| r["revision"].as_i64().unwrap()).collect();
    assert_eq!(revisions, [3, 2, 1], "{history}");
    assert_eq!(history[0]["reverts"], 1);
    assert_eq!(history[0]["applied_by"], "operator (cli)");
    let diff = env.run(&["config", "diff", "2"]).ok().stdout;
    assert!(diff.contains("-  policy:") && diff.contains("revision 2"), "{diff}");
    // Each revision is in the operator's audit log.
    let audit = server.get_json("/v1/audit?limit=1000").await;
    let applied =
        audit["items"].as_array().unwrap().iter().filter(|r| r["kind"] == "config.applied");
    assert_eq!(applied.count(), 3, "{audit}");
}

/// The same flow over the API, for the operator's token only: another tenant's admin finds no
/// such routes, whatever it sends.
#[tokio::test]
async fn the_operator_applies_and_reverts_over_the_api_and_no_tenant_can() {
    let env = Env::new();
    write(&env.data_dir().join("clade.yaml"), "sessions:\n  max_queued: 50\n");
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    let (acme, _) = super::support::token(&env, "acme", &["admin"]);
    let server = env.serve(&[]);
    let deny =
        "sessions:\n  max_queued: 50\ntools:\n  policy:\n    - { effect: deny, tool: echo }\n";

    let acme = Some(acme.as_str());
    for (method, path, body) in [
        ("GET", "/v1/config/revisions", None),
        ("GET", "/v1/config/revisions/1", None),
        ("POST", "/v1/config", Some(json!({ "yaml": deny }))),
        ("POST", "/v1/config/revisions/1/revert", None),
    ] {
        let (status, answer) = server.send(method, path, acme, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("route_not_found")),
            "{method} {path}"
        );
    }
    assert!(!std::fs::read_to_string(env.data_dir().join("clade.yaml")).unwrap().contains("deny"));

    let (status, answer) =
        server.send("POST", "/v1/config", None, Some(json!({ "yaml": "sessions: [" }))).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_config")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("the parse step failed"),
        "{answer}"
    );

    let (status, answer) =
        server.send("POST", "/v1/config", None, Some(json!({ "yaml": deny }))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["applied"].as_bool(), answer["revision"]["revision"].as_i64()),
        (Some(true), Some(1))
    );
    assert!(answer["revision"]["applied_by"].as_str().unwrap().contains("default"), "{answer}");
    until_echo(&server, |reply| reply.contains("denied")).await;
    let (_, again) = server.send("POST", "/v1/config", None, Some(json!({ "yaml": deny }))).await;
    assert_eq!(again["applied"], false, "{again}");

    let open = "sessions:\n  max_queued: 50\n";
    server.send("POST", "/v1/config", None, Some(json!({ "yaml": open }))).await;
    let (status, reverted) = server.send("POST", "/v1/config/revisions/1/revert", None, None).await;
    assert_eq!((status, reverted["revision"]["reverts"].as_i64()), (200, Some(1)), "{reverted}");
    let listed = server.get_json("/v1/config/revisions").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{listed}");
    let shown = server.get_json("/v1/config/revisions/3").await;
    assert_eq!(shown["yaml"], deny, "{shown}");
    let (status, missing) = server.send("GET", "/v1/config/revisions/99", None, None).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("revision_not_found")));
}

/// `config.apply` runs the same flow for an agent, and only where the operator's policy allows
/// it: denied by default, and recorded as the agent's when allowed.
#[tokio::test]
async fn an_agent_applies_a_configuration_only_when_policy_allows_it() {
    let env = Env::new();
    // A tenant that may grant its agents any tool.
    let acme_yaml = "tenants:\n  acme:\n    ceiling: { tools: [\"*\"] }\n";
    write(&env.data_dir().join("clade.yaml"), &format!("sessions:\n  max_queued: 50\n{acme_yaml}"));
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "acme"]).ok();
    env.run(&["--tenant", "acme", "agents", "create", "mole"]).ok();
    let (acme, _) = super::support::token(&env, "acme", &["admin"]);
    let server = env.serve(&[]);
    let grant = json!({ "agent": "mole", "tool": "config.apply" });
    let (status, answer) = server.send("POST", "/v1/grants", Some(&acme), Some(grant)).await;
    assert_eq!(status, 201, "{answer}");
    let hostile = json!({ "agent": "mole", "wait": true,
        "text": format!("/tool config.apply {}", json!({ "yaml": "sessions:\n  max_queued: 1\n" })),
        "source": { "platform": "http", "channel": "c", "actor": "m" } });
    let (_, answer) = server.send("POST", "/v1/events", Some(&acme), Some(hostile)).await;
    let reply = answer["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("config.apply is the operator's"), "{reply}");
    let call = |n: usize, yaml: &str| {
        let args = json!({ "yaml": yaml }).to_string();
        json!({ "agent": "ada", "text": format!("/tool config.apply {args}"), "wait": true,
            "source": { "platform": "http", "channel": "c", "actor": format!("c{n}") } })
    };
    let wanted = "sessions:\n  max_queued: 7\n";
    let (_, denied) = server.send("POST", "/v1/events", None, Some(call(1, wanted))).await;
    let reply = denied["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("denied") && !reply.contains("applied revision"), "{reply}");
    assert!(server.get_json("/v1/config/revisions").await["items"].as_array().unwrap().is_empty());

    let allow = format!(
        "sessions:\n  max_queued: 50\ntools:\n  policy:\n    - {{ effect: allow, tool: config.apply }}\n{acme_yaml}"
    );
    let (status, _) = server.send("POST", "/v1/config", None, Some(json!({ "yaml": allow }))).await;
    assert_eq!(status, 200);
    // Each look is a call of its own (a new actor each time), until the policy allows it.
    let mut asked = 2..;
    let apply = async || {
        let body = call(asked.next().unwrap(), wanted);
        let (_, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        answer["reply"]["text"].as_str().unwrap_or_default().to_owned()
    };
    let took = |reply: &String| reply.contains("applied revision");
    let applied = polled_within(PATIENCE, Duration::from_millis(100), apply, took).await;
    assert!(applied.contains("applied revision 2"), "{applied}");
    let revision = server.get_json("/v1/config/revisions/2").await;
    assert_eq!(revision["applied_by"], "agent ada", "{revision}");
    assert_eq!(std::fs::read_to_string(env.data_dir().join("clade.yaml")).unwrap(), wanted);
}

/// `--smoke` calls the new configuration's model before anything is written: a model that
/// refuses stops the apply at that step, with nothing changed; one that answers lets it
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_test_stops_a_configuration_whose_model_does_not_answer() {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let mut env = Env::new();
    env.vars.push(("STUB_KEY".into(), "sk-stub".into()));
    let yaml = env.data_dir().join("clade.yaml");
    write(&yaml, "sessions:\n  max_queued: 50\n");
    let model = |name: &str| {
        format!(
            "models:\n  main:\n    provider: openai\n    model: {name}\n    base_url: {}/v1\n    api_key_env: STUB_KEY\n",
            stub.url()
        )
    };
    let broken = env.data_dir().join("broken.yaml");
    write(&broken, &model("stub+status=401"));
    env.run(&["config", "apply", "--smoke", broken.to_str().unwrap()])
        .fails_with("the smoke test step failed: the channel model did not answer");
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), "sessions:\n  max_queued: 50\n");
    assert_eq!(env.run(&["config", "history", "--json"]).ok().json(), json!([]));
    let working = env.data_dir().join("working.yaml");
    write(&working, &model("stub+fixed=ok"));
    let out = env.run(&["config", "apply", "--smoke", working.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("applied revision 1"), "{}", out.stdout);
    assert!(!out.stdout.contains("at the next start"), "{}", out.stdout);

    // The same over the API, for the operator.
    let server = env.serve(&[]);
    let apply = |yaml: String| {
        let server = &server;
        async move {
            server
                .send("POST", "/v1/config", None, Some(json!({ "yaml": yaml, "smoke": true })))
                .await
        }
    };
    let (status, refused) = apply(model("stub+status=500")).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("invalid_config")),
        "{refused}"
    );
    assert!(refused["error"]["message"].as_str().unwrap().contains("smoke test"), "{refused}");
    assert_eq!(env.run(&["config", "history", "--json"]).ok().json().as_array().unwrap().len(), 1);
    let (status, applied) = apply(model("stub+fixed=fine")).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["revision"]["revision"], 2, "{applied}");

    // The serving gateway's turns call the new model from then on.
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["gateway", "reload"]).ok();
    let (status, answer) = server
        .send(
            "POST",
            "/v1/events",
            None,
            Some(json!({ "agent": "ada", "text": "hello", "wait": true,
                "source": { "platform": "http", "channel": "c", "actor": "u" } })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reply"]["text"], "fine", "{answer}");
}

/// Webhook subscribers change with a revision: one added to a serving gateway receives the
/// turns that follow, and one moved to another URL delivers there from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_follow_the_configuration_without_a_restart() {
    let hook = |seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>>| {
        super::support::serve_hook(move |body: axum::body::Bytes| {
            if let Ok(value) = serde_json::from_slice(&body) {
                seen.lock().unwrap().push(value);
            }
            async { axum::http::StatusCode::OK }
        })
    };
    let first_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let second_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let first = hook(first_seen.clone()).await;
    let second = hook(second_seen.clone()).await;
    let mut env = Env::new();
    env.vars.push(("HOOK_SECRET".into(), "s3cret".into()));
    env.run(&["agents", "create", "ada"]).ok();
    let server = env.serve(&[]);
    let say = |text: &str| {
        json!({ "agent": "ada", "text": text, "wait": true,
            "source": { "platform": "http", "channel": "c", "actor": "u" } })
    };
    let finished = |seen: &std::sync::Arc<std::sync::Mutex<Vec<Value>>>, reply: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "turn.finished" && e["data"]["reply"].as_str() == Some(reply))
    };
    let apply = |url: &str| {
        let file = env.data_dir().join("next.yaml");
        write(
            &file,
            &format!("subscribers:\n  - name: hook\n    url: {url}\n    secret_env: HOOK_SECRET\n"),
        );
        env.run(&["config", "apply", file.to_str().unwrap()]).ok()
    };
    let out = apply(&first);
    assert!(!out.stdout.contains("at the next start: subscribers"), "{}", out.stdout);
    env.run(&["gateway", "reload"]).ok();
    server.send("POST", "/v1/events", None, Some(say("/reply one"))).await;
    let delivered = eventually(async || finished(&first_seen, "one").then_some(())).await;
    assert!(
        delivered.is_some(),
        "the subscriber added live got nothing: {:?}",
        first_seen.lock().unwrap()
    );

    apply(&second);
    env.run(&["gateway", "reload"]).ok();
    server.send("POST", "/v1/events", None, Some(say("/reply two"))).await;
    let moved = eventually(async || finished(&second_seen, "two").then_some(())).await;
    assert!(moved.is_some(), "the moved subscriber delivered nothing to its new URL");
    assert!(!finished(&first_seen, "two"), "the old URL still received turns");
}

/// A configuration the next `clade serve` would refuse (a bot whose token's variable is not
/// set) is refused by `config apply` and `POST /v1/config` alike, naming the variable; with the
/// variable set it is applied, and `channels status` says the bot waits for a restart.
#[tokio::test]
async fn a_configuration_the_next_start_would_refuse_is_not_applied() {
    let env = Env::new();
    let server = env.serve(&[]);
    let bot = env.data_dir().join("bot.yaml");
    let text = "channels:\n  telegram:\n    desk:\n      token_env: DESK_BOT_TOKEN\n";
    write(&bot, text);
    let refused = env.run(&["config", "apply", bot.to_str().unwrap()]).fails_with("DESK_BOT_TOKEN");
    assert!(refused.stderr.contains("would refuse to start"), "{}", refused.stderr);
    assert!(!env.data_dir().join("clade.yaml").exists(), "a refused configuration was written");
    let (status, answer) =
        server.send("POST", "/v1/config", None, Some(json!({ "yaml": text }))).await;
    assert_eq!(status, 422, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("DESK_BOT_TOKEN") && message.contains("not set"), "{answer}");

    let applied = env
        .command()
        .env("DESK_BOT_TOKEN", "123:abc")
        .args(["config", "apply", bot.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let status = env.run(&["channels", "status"]).ok();
    assert!(status.stderr.contains("not running: telegram:desk"), "{}", status.stderr);
    assert!(status.stderr.contains("restart"), "{}", status.stderr);
    assert!(!status.stdout.contains("no channels"), "{}", status.stdout);
    drop(server);
}
