//! Repository chores, run as `cargo xtask <task>`.
//!
//! - `codegen`: regenerate the committed schemas (`docs/clade.schema.json`, `docs/openapi.json`).
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
        _ => {
            eprintln!("usage: cargo xtask codegen");
            std::process::exit(2);
        }
    }
}
