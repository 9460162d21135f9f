//! The `clade` binary: the command line over Clade's crates.
//!
//! Owns argument parsing, logging set-up, human and JSON output, and the mapping of every
//! failure to a one-line message and a non-zero exit code. It holds no business logic: each
//! command is a few calls into `clade-store` or `clade-gateway`. Start at [`cli::Command`].

// Printing is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin_socket;
mod advice;
mod cli;
mod commands;
mod context;
mod logging;
mod memory;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// The longest wait at exit for the runtime's threads to finish what they are polling.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> ExitCode {
    // The sandbox's init (pid 1 of a tool run): before any thread or runtime exists, since it
    // forks the command.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__sandbox-init") {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return clade_tools::init::main(&args);
    }
    memory::configure();
    // Whatever the caller's umask, files Clade creates (the store, its WAL, keys, workspaces,
    // what sandboxed tools write) are its own user's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    quiet_on_closed_stdout();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(memory::give_back_freed_memory)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(commands::run(cli));
    // The command is done: what it awaited has finished. A library's background task that does
    // not stop when the runtime does (sqlx's pool upkeep was once seen spinning through the
    // timer's shutdown, a worker thread never coming back) must not keep the process alive
    // after its answer, so the wait for the runtime's threads is bounded.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the context chain joined, as the user needs to read it.
            eprintln!("{}", advice::error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// `clade … | head` closes stdout early; Rust ignores SIGPIPE, so the next `println!` panics.
/// Like other command-line tools, stop quietly instead (exit status 141, as if by SIGPIPE).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
