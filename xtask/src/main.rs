//! Repository chores, run as `cargo xtask <task>`.
//!
//! - `codegen`: regenerate the committed schemas (`docs/clade.schema.json`, `docs/openapi.json`).
//! - `check-history <file>`: check a crash run's saved history against the reliability
//!   contract (the crash test saves one on every run and prints where).
//!
//! The tidy checks (dependency direction, crate docs) live in `xtask/tests/tidy.rs` so that
//! `cargo test` runs them.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // A developer tool: it runs cargo.

use std::process::Command;

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "codegen" => {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["test", "-p", "clade-config", "-p", "clade-gateway", "--", "committed"])
                .env("UPDATE_SCHEMAS", "1")
                .status()?;
            anyhow::ensure!(status.success(), "codegen failed");
            eprintln!("regenerated docs/clade.schema.json and docs/openapi.json");
            Ok(())
        }
        "check-history" => {
            let Some(path) = std::env::args().nth(2) else {
                eprintln!("usage: cargo xtask check-history <history.json>");
                std::process::exit(2);
            };
            let history = clade_test_support::history::History::load(path.as_ref())
                .map_err(anyhow::Error::msg)?;
            let report = clade_test_support::history::check(&history);
            eprintln!("{report}");
            let violations = report.violations();
            for violation in &violations {
                eprintln!("violation: {violation}");
            }
            anyhow::ensure!(violations.is_empty(), "the run broke the contract");
            eprintln!("contract held");
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask codegen | check-history <history.json>");
            std::process::exit(2);
        }
    }
}
