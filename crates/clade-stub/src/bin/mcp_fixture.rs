//! An MCP server for tests: `echo`, `add`, `slow` (sleeps) and `crash` (exits the process, so
//! clients can test restarts). Each answer names this process, so a test can see that a crashed
//! server was restarted. On stdio by default; `--http 127.0.0.1:0` serves streamable HTTP at
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

#[derive(Debug, Clone)]
struct Fixture;

#[tool_router(server_handler)]
impl Fixture {
    #[tool(description = "Returns its text, with the server's pid")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        format!("{text} (pid {})", std::process::id())
    }

    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        a.saturating_add(b).to_string()
    }

    #[tool(description = "Sleeps, then answers")]
    async fn slow(&self, Parameters(SlowArgs { secs }): Parameters<SlowArgs>) -> String {
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        "done".into()
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
