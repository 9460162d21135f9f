//! The `clade` binary: the command line over Clade's crates.
//!
//! Owns argument parsing, logging set-up, human and JSON output, and the mapping of every
//! failure to a one-line message and a non-zero exit code. It holds no business logic: each
//! command is a few calls into `clade-store` or `clade-gateway`. Start at [`cli::Command`].

// Printing is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;
mod context;
mod logging;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the context chain joined, as the user needs to read it.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
