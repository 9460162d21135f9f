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

/// Every turn allocates and frees many short-lived buffers (JSON of requests and replies, rows,
/// events). `clade bench turns --durability full` against the stub, two alternating runs each:
/// 2,954–3,427 turns/s at 100 sessions with mimalloc, 1,844–2,546 with glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    quiet_on_closed_stdout();
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

/// mimalloc asks the kernel for transparent huge pages on the memory it takes from the system
/// (with the common `madvise` setting, only those who ask get them), and a 2 MiB page is resident
/// whole as soon as one byte of it is touched, so memory freed inside it is never given back.
/// Without them, `clade bench turns` at 1,000 sessions held 51–55 KiB of RSS per active session
/// instead of 65, at no cost in turns/s or CPU per turn. Disabled for the whole process (and
/// inherited by the processes it starts); failure only costs memory, so it is ignored.
fn no_transparent_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
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
