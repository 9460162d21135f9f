//! The MCP server, driven by the official `mcp` Python SDK (PyPI), unchanged: over streamable
//! HTTP with a tenant token (all the token's agents, or one agent's URL), and over stdio through
//! `clade mcp serve`, as an MCP host launches a server. Agents are tools, sessions resources;
//! another tenant's token reaches none of them, a read-only token calls none, and a bad message
//! gets a JSON-RPC error.

use serde_json::{Value, json};

use super::support::{Env, ada_and_rival_bob, python_clients, run_client, token};

fn code(error: &Value) -> i64 {
    error["code"].as_i64().unwrap_or_else(|| panic!("not an MCP error: {error}"))
}

#[test]
fn the_official_mcp_sdk_asks_agents_and_reads_their_sessions() {
    let Some(python) = python_clients("the MCP client test") else { return };
    let env = Env::new();
    let rival = ada_and_rival_bob(&env);
    let (read_only, _) = token(&env, "default", &["read"]);
    env.run(&["agents", "create", "cy"]).ok();
    let limited = env
        .run(&["tokens", "create", "--only-agent", "cy", "--scope", "read", "--scope", "send"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    env.run(&["memory", "add", "Ada's cat is called Miso", "--agent", "ada"]).ok();
    let server = env.serve(&[]);
    let clade = assert_cmd::cargo::cargo_bin("clade");
    let data_dir = env.data_dir();
    let got = run_client(
        &python,
        "mcp_client.py",
        &[
            &server.url,
            &server.token,
            &rival,
            &read_only,
            clade.to_str().unwrap(),
            data_dir.to_str().unwrap(),
            &limited,
        ],
    );

    // Agents are tools, each taking a message and a session.
    assert_eq!(got["tools"], json!(["ada", "cy"]), "{got}");
    assert_eq!(got["tool_schema"]["required"], json!(["message"]), "{got}");
    assert!(got["tool_schema"]["properties"]["session"].is_object(), "{got}");

    let first = &got["first"];
    assert_eq!(first["text"], "echo: hello mcp", "{got}");
    assert_eq!(first["is_error"], false, "{got}");
    assert_eq!(first["structured"]["reply"], "echo: hello mcp", "{got}");
    // The same session continues; another is another.
    let session = first["structured"]["session_id"].as_str().unwrap();
    assert_eq!(got["second"]["structured"]["session_id"], session, "{got}");
    assert_ne!(got["other_session"]["structured"]["session_id"], session, "{got}");

    // Streamed as progress notifications whose texts join to the answer.
    let streamed = &got["streamed"];
    assert_eq!(streamed["text"], "echo: a streamed answer of several words", "{got}");
    let progress = got["progress"].as_array().unwrap();
    assert!(progress.len() >= 3, "not streamed: {got}");
    let joined: String = progress.iter().map(|p| p["message"].as_str().unwrap_or("")).collect();
    assert_eq!(joined, streamed["text"].as_str().unwrap(), "{got}");
    let counts: Vec<f64> = progress.iter().map(|p| p["progress"].as_f64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "progress must grow: {got}");

    // The agent's own tools run on the server.
    assert!(got["tool"]["text"].as_str().unwrap().contains("from a tool"), "{got}");

    // Bad arguments are the tool's error, which the host's model reads.
    for case in ["wrong_schema", "empty_message"] {
        assert_eq!(got[case]["is_error"], true, "{case}: {got}");
        assert!(!got[case]["text"].as_str().unwrap().is_empty(), "{case}: {got}");
    }
    assert!(got["wrong_schema"]["text"].as_str().unwrap().contains("inputSchema"), "{got}");
    assert_eq!(code(&got["unknown_tool"]), -32602, "{got}");

    // Sessions are resources, read as transcripts.
    let uri = format!("clade://sessions/{session}");
    assert!(got["resources"].as_array().unwrap().iter().any(|r| r["uri"] == uri.as_str()), "{got}");
    let transcript = got["transcript"].as_str().unwrap();
    for line in ["hello mcp", "echo: hello mcp", "again", "echo: again"] {
        assert!(transcript.contains(line), "{line:?} not in {transcript}");
    }
    assert_eq!(got["transcript_mime"], "text/markdown", "{got}");
    assert_eq!(code(&got["missing_resource"]), -32002, "{got}");
    assert_eq!(code(&got["foreign_uri"]), -32002, "{got}");
    assert_eq!(
        got["templates"],
        json!(["clade://sessions/{session_id}", "clade://agents/{handle}/memories"]),
        "{got}"
    );
    // Each agent's memory is a resource too.
    let listed = got["resources"].as_array().unwrap();
    assert!(listed.iter().any(|r| r["uri"] == "clade://agents/ada/memories"), "{got}");
    let memories = got["memories"].as_str().unwrap();
    assert!(memories.contains("# Memory of `ada`") && memories.contains("Miso"), "{memories}");
    assert_eq!(code(&got["missing_agent_memories"]), -32002, "{got}");

    // One agent's URL, through the initialize handshake alone.
    assert_eq!(got["one_agent_tools"], json!(["ada"]), "{got}");
    assert_eq!(got["one_agent_call"]["text"], "echo: legacy", "{got}");

    // Another tenant sees only its own agent, and nothing of ada's.
    assert_eq!(got["rival_tools"], json!(["bob"]), "{got}");
    assert_eq!(code(&got["rival_calls_ada"]), -32602, "{got}");
    let rival_resources = got["rival_resources"].as_array().unwrap();
    assert!(rival_resources.iter().all(|uri| !uri.as_str().unwrap().contains(session)), "{got}");
    assert_eq!(code(&got["rival_reads_ada"]), -32002, "{got}");
    assert_eq!(code(&got["rival_reads_ada_memories"]), -32002, "{got}");
    assert!(rival_resources.iter().all(|uri| !uri.as_str().unwrap().contains("/ada/")), "{got}");
    assert_eq!(got["rival_bob"]["text"], "echo: hi bob", "{got}");
    assert_ne!(got["rival_one_agent"], "connected", "{got}");

    // A read-only token lists but cannot ask.
    assert_eq!(got["read_only_tools"], json!(["ada", "cy"]), "{got}");
    // A token limited to `cy` sees nothing of `ada`, not even her name or sessions.
    assert_eq!(got["limited_tools"], json!(["cy"]), "{got}");
    assert_eq!(code(&got["limited_calls_ada"]), -32602, "{got}");
    assert_eq!(got["limited_resources"], json!(["clade://agents/cy/memories"]), "{got}");
    assert_eq!(code(&got["limited_reads_ada_memories"]), -32002, "{got}");
    assert_eq!(code(&got["read_only_call"]), -32003, "{got}");

    // Over stdio, bridged by `clade mcp serve --agent ada`.
    assert_eq!(got["stdio_tools"], json!(["ada"]), "{got}");
    assert_eq!(got["stdio_call"]["text"], "echo: over stdio", "{got}");
    assert!(got["stdio_progress"].as_array().unwrap().len() >= 2, "{got}");
    assert_eq!(code(&got["stdio_unknown_tool"]), -32602, "{got}");

    // Bad messages: JSON-RPC errors with 4xx; a notification is taken; GET has no stream.
    let raw = &got["raw"];
    for (case, status, rpc) in [
        ("not_json", 400, -32700),
        ("batch", 400, -32600),
        ("no_method", 400, -32600),
        ("bad_version", 400, -32600),
        ("unknown_method", 200, -32601),
    ] {
        assert_eq!(raw[case]["status"], status, "{case}: {raw}");
        assert_eq!(raw[case]["body"]["error"]["code"], rpc, "{case}: {raw}");
        assert!(raw[case]["body"]["error"]["message"].as_str().unwrap().len() > 10, "{raw}");
    }
    assert_eq!(raw["unknown_method"]["body"]["id"], 7, "{raw}");
    assert_eq!(raw["notification"]["status"], 202, "{raw}");
    assert_eq!(raw["get"]["status"], 405, "{raw}");

    // Each call was an event of `ada` on platform `mcp`, in the session its `session` named.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s1 = runtime.block_on(server.sessions_on("ada", "mcp", "s1"));
    assert_eq!(s1.len(), 1, "{s1:?}");
    assert_eq!(runtime.block_on(server.all_turns(s1[0]["id"].as_str().unwrap())).len(), 2);
}
