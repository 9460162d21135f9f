//! An MCP server for tests: `echo`, `add`, `slow` (sleeps), `crash` (exits the process, so
//! clients can test restarts) and `read_file` / `write_file` (so tests can see what the
//! server's sandbox lets it touch). Each answer names this process (a random tag), so a test can see that
//! a crashed server was restarted. On stdio by default; `--http 127.0.0.1:0` serves streamable HTTP at
//! `/mcp` instead and prints the URL on its first line.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::{ServiceExt, schemars, tool, tool_router};
use serde::Deserialize;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Returned unchanged.
    text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SlowArgs {
    secs: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct PathArgs {
    path: String,
}

#[derive(Debug, Clone)]
struct Fixture;

/// Names this process among restarts: random, because in a sandbox's own pid namespace every
/// incarnation of the server has the same pid.
#[allow(clippy::disallowed_methods)] // Must differ per process, so no seed.
fn process_tag() -> u64 {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(rand::random)
}

#[tool_router(server_handler)]
impl Fixture {
    #[tool(description = "Returns its text, with a number naming this server process")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        format!("{text} (pid {})", process_tag())
    }

    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        a.saturating_add(b).to_string()
    }

    #[tool(description = "Sleeps, then answers")]
    async fn slow(&self, Parameters(SlowArgs { secs }): Parameters<SlowArgs>) -> String {
        #[allow(clippy::disallowed_methods)] // A fixture's real slowness.
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        "done".into()
    }

    #[tool(description = "Returns a file's text, or the error reading it")]
    fn read_file(&self, Parameters(PathArgs { path }): Parameters<PathArgs>) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[tool(description = "Writes `written` to a file; returns ok or the error")]
    fn write_file(&self, Parameters(PathArgs { path }): Parameters<PathArgs>) -> String {
        match std::fs::write(&path, "written") {
            Ok(()) => "ok".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[tool(description = "Exits the server process")]
    fn crash(&self) -> String {
        std::process::exit(3)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(addr) = args.iter().position(|a| a == "--http").and_then(|i| args.get(i + 1)) {
        use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
        use rmcp::transport::streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService,
        };
        let service = StreamableHttpService::new(
            || Ok(Fixture),
            LocalSessionManager::default().into(),
            StreamableHttpServerConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        #[allow(clippy::print_stdout)] // The URL is the protocol with the test that started it.
        {
            println!("http://{}/mcp", listener.local_addr()?);
        }
        let app = axum::Router::new().nest_service("/mcp", service);
        axum::serve(listener, app).await?;
        return Ok(());
    }
    let running = Fixture.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
