//! Clade's MCP client against a real MCP server process (`clade-mcp-fixture`, built with rmcp).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clade_config::{SandboxLimits, SandboxMode};
use clade_tools::CallContext;
use clade_tools::mcp::{Server, ServerSpec, Transport};
use clade_tools::sandbox::Sandbox;
use serde_json::json;

fn stdio(command: &str, mode: SandboxMode, dir: &Path) -> Transport {
    let sandbox = Sandbox::new(mode, None, Some("/usr/bin:/bin"), SandboxLimits::default());
    Transport::Stdio {
        command: vec![command.into()],
        env: Vec::new(),
        sandbox: Arc::new(sandbox),
        dir: dir.join("fixture"),
        network: false,
    }
}

/// The fixture on stdio, in the bubblewrap sandbox (the default), keeping its files in `dir`.
fn spec(timeout: Duration, dir: &Path) -> ServerSpec {
    ServerSpec {
        name: "fixture".into(),
        transport: stdio(env!("CARGO_BIN_EXE_clade-mcp-fixture"), SandboxMode::Bubblewrap, dir),
        agents: vec!["alice".into()],
        timeout,
    }
}

fn pid_of(text: &str) -> String {
    text.rsplit("pid ").next().unwrap().trim_end_matches(')').to_owned()
}

#[tokio::test]
async fn tools_are_discovered_namespaced_called_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, tools) = Server::connect(spec(Duration::from_secs(2), tmp.path())).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    for expected in ["mcp.fixture.echo", "mcp.fixture.add", "mcp.fixture.slow", "mcp.fixture.crash"]
    {
        assert!(names.contains(&expected), "{names:?}");
    }
    let tool = |name: &str| tools.iter().find(|t| t.name() == name).unwrap().clone();
    let echo = tool("mcp.fixture.echo");
    assert!(echo.touches_host(), "MCP tools must be denied unless allowed");
    assert!(echo.available_to("default", "alice") && !echo.available_to("default", "bob"));
    // A bare handle names the default tenant's agent, never another tenant's of that handle.
    assert!(!echo.available_to("acme", "alice"));
    assert_eq!(echo.input_schema()["properties"]["text"]["type"], "string");
    let ctx = CallContext::default();

    let first = echo.call(json!({ "text": "hello" }), &ctx).await.unwrap();
    assert!(first.starts_with("hello (pid "), "{first}");
    assert_eq!(tool("mcp.fixture.add").call(json!({ "a": 2, "b": 40 }), &ctx).await.unwrap(), "42");
    // Bad arguments come back as a tool error, not a crash.
    assert!(tool("mcp.fixture.add").call(json!({ "a": "x" }), &ctx).await.is_err());

    // Time limit.
    let slow =
        tool("mcp.fixture.slow").call(json!({ "secs": 10 }), &ctx).await.unwrap_err().to_string();
    assert!(slow.contains("did not answer"), "{slow}");

    // A crash mid-call is reported, and the next call runs on a new server process.
    let crashed = tool("mcp.fixture.crash").call(json!({}), &ctx).await.unwrap_err().to_string();
    assert!(crashed.contains("restarted"), "{crashed}");
    let again = echo.call(json!({ "text": "back" }), &ctx).await.unwrap();
    assert!(again.starts_with("back (pid "), "{again}");
    assert_ne!(pid_of(&first), pid_of(&again), "the server was not restarted");
}

#[tokio::test]
async fn a_missing_server_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(Duration::from_secs(2), tmp.path());
    spec.transport = stdio("/nonexistent/mcp-server", SandboxMode::None, tmp.path());
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
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(Duration::from_secs(5), tmp.path());
    spec.transport = Transport::Http { url: url.trim().to_owned() };
    let (_server, tools) = Server::connect(spec).await.unwrap();
    let add = tools.iter().find(|t| t.name() == "mcp.fixture.add").unwrap();
    let sum = add.call(json!({ "a": 20, "b": 22 }), &CallContext::default()).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(sum.unwrap(), "42");
}

/// A stdio server runs in the tool sandbox: it writes only its own directory and sees none of
/// the host's other files. The same calls without the sandbox reach them, so this test fails
/// if the sandbox is not applied.
#[tokio::test]
async fn a_stdio_server_is_confined_to_its_own_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let outside = host.path().join("planted.txt");
    let (secret, outside) = (&secret, &outside);
    let calls = |tools: Vec<Arc<dyn clade_tools::Tool>>| async move {
        let tool = |name: &str| tools.iter().find(|t| t.name() == name).unwrap().clone();
        let (read, write) = (tool("mcp.fixture.read_file"), tool("mcp.fixture.write_file"));
        let ctx = CallContext::default();
        let path = |p: &Path| json!({ "path": p.display().to_string() });
        (
            read.call(path(secret), &ctx).await.unwrap(),
            write.call(path(outside), &ctx).await.unwrap(),
            write.call(json!({ "path": "own.txt" }), &ctx).await.unwrap(),
        )
    };

    let (_server, tools) = Server::connect(spec(Duration::from_secs(5), tmp.path())).await.unwrap();
    let (read, planted, own) = calls(tools).await;
    assert!(read.starts_with("error:"), "the sandboxed server read a host file: {read}");
    assert!(planted.starts_with("error:"), "the sandboxed server wrote outside: {planted}");
    assert!(!outside.try_exists().unwrap());
    assert_eq!(own, "ok");
    let written = std::fs::read_to_string(tmp.path().join("fixture/own.txt")).unwrap();
    assert_eq!(written, "written", "its own directory is where its files go");

    let mut open = spec(Duration::from_secs(5), tmp.path());
    open.transport = stdio(env!("CARGO_BIN_EXE_clade-mcp-fixture"), SandboxMode::None, tmp.path());
    let (_server, tools) = Server::connect(open).await.unwrap();
    let (read, planted, _) = calls(tools).await;
    assert_eq!(read, "host secret", "without the sandbox the same call reaches the host");
    assert_eq!(planted, "ok");
}
