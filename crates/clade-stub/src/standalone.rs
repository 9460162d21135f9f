//! The stub as a process of its own: `clade-stub` and `clade stub` share these arguments.

#![allow(clippy::print_stdout)] // Prints its address for scripts and parent processes.

use crate::{Behaviour, StubOptions};

/// Why the stub could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("unknown directive {0:?} in --defaults (see --help)")]
    UnknownDirective(String),
    #[error("cannot listen on {address}: {source} (is another server on that port?)")]
    Listen { address: String, source: std::io::Error },
    #[error("the stub stopped serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Where the stub listens and what every request gets (see the binary's help for directives).
#[derive(Debug, clap::Args)]
pub struct StubArgs {
    /// Address to listen on (port 0: any free port; the first line printed names it).
    #[arg(long, default_value = "127.0.0.1:7421")]
    pub listen: String,
    /// Directives applied to every request, e.g. `tps=100+latency=20`.
    #[arg(long, default_value = "")]
    pub defaults: String,
    /// Exit when standard input closes: a parent that spawns the stub (`clade bench`) cannot
    /// leave it behind, even when killed.
    #[arg(long, hide = true)]
    pub exit_with_stdin: bool,
}

/// The line printed once listening starts; [`parse_ready_line`] reads the address back.
const READY: &str = "clade-stub listening on http://";

/// Serves until the process is stopped (or, with `--exit-with-stdin`, until stdin closes).
pub async fn run(args: StubArgs) -> Result<(), StandaloneError> {
    let mut defaults = Behaviour::default();
    defaults.apply(&args.defaults).map_err(|d| StandaloneError::UnknownDirective(d.0))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| StandaloneError::Listen { address: args.listen.clone(), source })?;
    let address = listener.local_addr()?;
    println!(
        "{READY}{address} (OpenAI base URL http://{address}/v1, Anthropic base URL http://{address})"
    );
    // Nothing outside this process can read captured requests, so none are kept: copying
    // every request would be the stub's own cost in `clade bench turns`.
    let options = StubOptions { defaults, capture: 0, ..StubOptions::default() };
    let serve = crate::serve(listener, options);
    if !args.exit_with_stdin {
        return Ok(serve.await?);
    }
    let stdin_closed = async {
        use tokio::io::AsyncReadExt as _;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        served = serve => Ok(served?),
        () = stdin_closed => Ok(()),
    }
}

/// The base URL (`http://host:port`) in the stub's first line of output, if that is the line.
pub fn parse_ready_line(line: &str) -> Option<String> {
    let rest = line.strip_prefix(READY)?;
    let address = rest.split_whitespace().next()?;
    Some(format!("http://{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_gives_the_address_back() {
        let line = format!("{READY}127.0.0.1:4711 (OpenAI base URL http://127.0.0.1:4711/v1, …)");
        assert_eq!(parse_ready_line(&line).as_deref(), Some("http://127.0.0.1:4711"));
        assert_eq!(parse_ready_line("something else"), None);
    }
}
