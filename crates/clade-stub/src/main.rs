//! The `clade-stub` binary: serves the scripted OpenAI and Anthropic APIs on a port.

#![allow(clippy::print_stdout)] // Prints its address for scripts.

use anyhow::{Context, Result};
use clade_stub::{Behaviour, StubOptions};
use clap::Parser;

/// An LLM server speaking the OpenAI and Anthropic wire protocols, scripted and deterministic.
///
/// Behaviours are chosen per request by `+`-separated directives in the model name or the
/// `x-stub` header, e.g. model `gpt+tps=50+status=429x2`. Directives: fixed=TEXT, latency=MS or
/// MS-MS, tps=N, status=CODE[xN], retry-after=S, malformed, truncate, invalid-tool-json,
/// unknown-tool, oauth, context-too-long.
#[derive(Parser)]
#[command(name = "clade-stub", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7421")]
    listen: String,
    /// Directives applied to every request, e.g. `tps=100+latency=20`.
    #[arg(long, default_value = "")]
    defaults: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut defaults = Behaviour::default();
    defaults
        .apply(&args.defaults)
        .map_err(|d| anyhow::anyhow!("unknown directive {:?} in --defaults", d.0))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    println!(
        "clade-stub listening on http://{address} (OpenAI base URL http://{address}/v1, Anthropic base URL http://{address})"
    );
    clade_stub::serve(listener, StubOptions { defaults, ..StubOptions::default() }).await?;
    Ok(())
}
