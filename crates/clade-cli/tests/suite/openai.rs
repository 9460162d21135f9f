//! The OpenAI-compatible API, driven by the official `openai` Python package (PyPI), unchanged:
//! models are agents, the server keeps the conversation, answers come whole and streamed,
//! tools run on the server, and errors come in OpenAI's shape, which the package raises as its
//! own exception classes. Another tenant's token reaches none of it.

use super::support::{Env, ada_and_rival_bob, python_clients, run_client};

#[test]
fn the_official_openai_client_talks_to_an_agent_streaming_and_not() {
    let Some(python) = python_clients("the OpenAI client test") else { return };
    let env = Env::new();
    let rival = ada_and_rival_bob(&env);
    let server = env.serve(&[]);
    let got = run_client(&python, "openai_client.py", &[&server.url, &server.token, &rival]);

    assert_eq!(got["models"], serde_json::json!(["ada"]), "{got}");
    assert_eq!(got["rival_models"], serde_json::json!(["bob"]), "{got}");

    let first = &got["first"];
    assert_eq!(first["content"], "echo: hello there", "{got}");
    assert_eq!((&first["role"], &first["finish"]), (&"assistant".into(), &"stop".into()));
    assert_eq!(first["object"], "chat.completion");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"), "{got}");
    assert!(first["prompt_tokens"].as_u64().unwrap() > 0, "{got}");

    // Streamed in word-sized pieces that join to the answer, under one id, with the usage.
    let streamed = &got["streamed"];
    assert_eq!(streamed["content"], "echo: and a second message", "{got}");
    assert_eq!(streamed["finishes"], serde_json::json!(["stop"]), "{got}");
    assert_eq!(streamed["roles"], serde_json::json!(["assistant"]), "{got}");
    assert_eq!(streamed["ids"], 1, "{got}");
    assert!(streamed["chunks"].as_u64().unwrap() >= 5, "not streamed: {got}");
    // The server kept the conversation: the second turn's prompt holds the first.
    assert!(
        streamed["prompt_tokens"].as_u64().unwrap() > first["prompt_tokens"].as_u64().unwrap(),
        "{got}"
    );

    assert!(got["tool"].as_str().unwrap().contains("from a tool"), "{got}");
    // Resending the history kept one session: the server's history grew, not the client's alone.
    let history = &got["history"];
    assert_eq!(history["content"], "echo: follow-up", "{got}");
    assert!(
        history["second_prompt"].as_u64().unwrap() > history["first_prompt"].as_u64().unwrap(),
        "{got}"
    );
    assert_eq!(got["operator_rival"], "echo: hi bob", "{got}");

    let errors = &got["errors"];
    for (case, status, class, code, param) in [
        ("unknown_model", 404, "NotFoundError", "model_not_found", Some("model")),
        ("rival_reaches_ada", 404, "NotFoundError", "model_not_found", Some("model")),
        ("rival_names_default", 404, "NotFoundError", "model_not_found", Some("model")),
        ("two_choices", 400, "BadRequestError", "invalid_request", Some("n")),
        ("client_tools", 400, "BadRequestError", "invalid_request", Some("tools")),
        ("ends_with_assistant", 400, "BadRequestError", "invalid_request", Some("messages")),
        ("bad_token", 401, "AuthenticationError", "invalid_token", None),
    ] {
        let error = &errors[case];
        assert_eq!(error["status"], status, "{case}: {error}");
        assert_eq!(error["class"], class, "{case}: {error}");
        assert_eq!(error["code"], code, "{case}: {error}");
        assert!(!error["message"].as_str().unwrap_or_default().is_empty(), "{case}: {error}");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{case}: {error}");
            assert!(error["type"].is_string(), "{case}: {error}");
        }
    }

    // Each conversation is one session of `ada`: `alice`'s holds both of its turns.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let alice = runtime.block_on(server.sessions_on("ada", "openai", "alice"));
    assert_eq!(alice.len(), 1, "{alice:?}");
    let turns = runtime.block_on(server.all_turns(alice[0]["id"].as_str().unwrap()));
    assert_eq!(turns.len(), 2, "{turns:?}");
}
