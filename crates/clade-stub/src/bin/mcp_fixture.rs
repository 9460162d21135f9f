//! An MCP server on stdio for tests: `echo`, `add`, `slow` (sleeps) and `crash` (exits the
//! process, so clients can test restarts). Each answer names this process, so a test can see
//! that a crashed server was restarted.

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
    let server = Fixture;
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
