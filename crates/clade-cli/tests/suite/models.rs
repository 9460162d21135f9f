//! `clade models`, `clade usage` and `GET /v1/usage` against clade-stub.

use serde_json::json;

use super::support::{Env, write};

async fn stub() -> clade_stub::Stub {
    clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap()
}

#[test]
fn without_a_model_the_offline_provider_says_what_it_is() {
    let env = Env::new();
    let list = env.run(&["models", "list"]).ok().stdout;
    assert!(list.contains("scripted") && list.contains("not a language model"), "{list}");
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
