//! The `clade-stub` binary: serves the scripted OpenAI and Anthropic APIs on a port.

use clade_stub::standalone::{StubArgs, run};
use clap::Parser;

/// An LLM server speaking the OpenAI and Anthropic wire protocols, scripted and deterministic.
///
/// Behaviours are chosen per request by `+`-separated directives in the model name or the
/// `x-stub` header, e.g. model `gpt+tps=50+status=429x2`. Directives: fixed=TEXT, latency=MS or
/// MS-MS, tps=N, status=CODE[xN], retry-after=S, malformed, truncate, invalid-tool-json,
/// unknown-tool, oauth, context-too-long.
#[derive(Parser)]
#[command(name = "clade-stub", version)]
struct Cli {
    #[command(flatten)]
    args: StubArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(run(Cli::parse().args).await?)
}
