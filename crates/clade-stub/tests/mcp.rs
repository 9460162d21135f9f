//! Clade's MCP client against a real MCP server process (`clade-mcp-fixture`, built with rmcp).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)]

use std::time::Duration;

use clade_tools::CallContext;
use clade_tools::mcp::{Server, ServerSpec, Transport};
use serde_json::json;

fn spec(timeout: Duration) -> ServerSpec {
    ServerSpec {
        name: "fixture".into(),
        transport: Transport::Stdio {
            command: vec![env!("CARGO_BIN_EXE_clade-mcp-fixture").into()],
            env: Vec::new(),
        },
        agents: vec!["alice".into()],
        timeout,
    }
}

fn pid_of(text: &str) -> String {
    text.rsplit("pid ").next().unwrap().trim_end_matches(')').to_owned()
}

#[tokio::test]
async fn tools_are_discovered_namespaced_called_and_restarted() {
    let (_server, tools) = Server::connect(spec(Duration::from_secs(2))).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    for expected in ["mcp.fixture.echo", "mcp.fixture.add", "mcp.fixture.slow", "mcp.fixture.crash"]
    {
        assert!(names.contains(&expected), "{names:?}");
    }
    let tool = |name: &str| tools.iter().find(|t| t.name() == name).unwrap().clone();
    let echo = tool("mcp.fixture.echo");
    assert!(echo.touches_host(), "MCP tools must be denied unless allowed");
    assert!(echo.available_to("alice") && !echo.available_to("bob"));
    assert_eq!(echo.input_schema()["properties"]["text"]["type"], "string");
    let ctx = CallContext::default();

    let first = echo.call(json!({ "text": "hello" }), &ctx).await.unwrap();
    assert!(first.starts_with("hello (pid "), "{first}");
    assert_eq!(tool("mcp.fixture.add").call(json!({ "a": 2, "b": 40 }), &ctx).await.unwrap(), "42");
    // Bad arguments come back as a tool error, not a crash.
    assert!(tool("mcp.fixture.add").call(json!({ "a": "x" }), &ctx).await.is_err());

    // Time limit.
    let slow = tool("mcp.fixture.slow").call(json!({ "secs": 10 }), &ctx).await.unwrap_err();
    assert!(slow.contains("did not answer"), "{slow}");

    // A crash mid-call is reported, and the next call runs on a new server process.
    let crashed = tool("mcp.fixture.crash").call(json!({}), &ctx).await.unwrap_err();
    assert!(crashed.contains("restarted"), "{crashed}");
    let again = echo.call(json!({ "text": "back" }), &ctx).await.unwrap();
    assert!(again.starts_with("back (pid "), "{again}");
    assert_ne!(pid_of(&first), pid_of(&again), "the server was not restarted");
}

#[tokio::test]
async fn a_missing_server_is_a_clear_error() {
    let mut spec = spec(Duration::from_secs(2));
    spec.transport =
        Transport::Stdio { command: vec!["/nonexistent/mcp-server".into()], env: Vec::new() };
    let err = Server::connect(spec).await.err().unwrap().to_string();
    assert!(err.contains("MCP server fixture") && err.contains("/nonexistent/mcp-server"), "{err}");
}

#[tokio::test]
async fn a_streamable_http_server_works_too() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clade-mcp-fixture"))
        .args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut url).unwrap();
    let mut spec = spec(Duration::from_secs(5));
    spec.transport = Transport::Http { url: url.trim().to_owned() };
    let (_server, tools) = Server::connect(spec).await.unwrap();
    let add = tools.iter().find(|t| t.name() == "mcp.fixture.add").unwrap();
    let sum = add.call(json!({ "a": 20, "b": 22 }), &CallContext::default()).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(sum.unwrap(), "42");
}
