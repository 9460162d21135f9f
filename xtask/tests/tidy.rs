//! Repository-wide rules checked on every `cargo test`: layering, crate docs, architecture doc.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // Test code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each crate's layer (DESIGN.md §4): a crate may depend only on crates of a lower layer.
fn layer(name: &str) -> Option<u8> {
    Some(match name {
        "clade-core" => 0,
        "clade-config" => 1,
        "clade-store" | "clade-model" | "clade-tools" | "clade-test-support" => 2,
        "clade-stub" => 3,
        "clade-memory" => 3,
        "clade-runtime" => 4,
        "clade-flow" | "clade-sched" => 5,
        "clade-gateway" => 6,
        "clade-cli" => 7,
        _ => return None,
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn workspace_crates() -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut crates = BTreeMap::new();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        if !name.starts_with("clade-") {
            continue;
        }
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null()) // Normal dependencies; tests may reach anywhere.
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("clade-"))
            .map(str::to_owned)
            .collect();
        crates.insert(name, (manifest.parent().unwrap().to_owned(), deps));
    }
    crates
}

#[test]
fn dependencies_point_down() {
    let mut violations = Vec::new();
    for (name, (_, deps)) in workspace_crates() {
        let Some(own) = layer(&name) else {
            violations.push(format!("{name} has no layer: add it to xtask/tests/tidy.rs"));
            continue;
        };
        for dep in deps {
            match layer(&dep) {
                Some(theirs) if theirs < own => {}
                _ => violations.push(format!("{name} (layer {own}) must not depend on {dep}")),
            }
        }
    }
    assert!(violations.is_empty(), "upward dependencies:\n{}", violations.join("\n"));
}

#[test]
fn every_crate_opens_with_a_doc_saying_what_it_owns() {
    for (name, (dir, _)) in workspace_crates() {
        let lib = dir.join("src/lib.rs");
        let main = dir.join("src/main.rs");
        let path = if lib.is_file() { lib } else { main };
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("//!"), "{} must open with a //! crate doc", path.display());
        let doc: String = text.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(doc.to_lowercase().contains("own"), "{name}: the crate doc must say what it owns");
    }
}

#[test]
fn architecture_doc_covers_every_crate() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    for name in workspace_crates().keys() {
        assert!(
            doc.contains(&format!("### `{name}`")),
            "docs/ARCHITECTURE.md lacks a `### `{name}`` section"
        );
    }
}

/// Unsafe code is denied workspace-wide; the SQLite VFS shim and the binary's allocator settings
/// are the places allowed to opt out, so a new `allow(unsafe_code)` is a decision to make in
/// review, not a line to slip in.
#[test]
fn unsafe_code_stays_in_the_vfs_shim_and_the_allocator_settings() {
    let allowed =
        [Path::new("crates/clade-store/src/paced.rs"), Path::new("crates/clade-cli/src/memory.rs")];
    let mut offenders = Vec::new();
    for file in rust_files(Path::new("crates")) {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        if text.contains("allow(unsafe_code)") && !allowed.contains(&file.as_path()) {
            offenders.push(file.display().to_string());
        }
    }
    assert!(offenders.is_empty(), "unsafe code allowed outside {allowed:?}: {offenders:?}");
}

/// Every `.rs` file under `dir`, relative to the repository root.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.strip_prefix(root()).unwrap().to_owned());
            }
        }
    }
    files.sort();
    files
}

/// The turn protocol is typed (`clade_core::lifecycle`): statuses, lifecycle event kinds,
/// audit kinds and journal step kinds are spelled once, in `as_str`, and read back with
/// `parse` where a value is stored or sent. A string literal spelling one of them anywhere else
/// in library or binary code is text standing in for a type: use the enum.
/// Integration tests under `tests/` and the crash-history checker (`clade-test-support`) read
/// the API as a client would, in its text, and may spell it; `clade-stub` speaks the
/// providers' protocols, not ours.
#[test]
fn protocol_words_are_spelled_only_in_the_vocabulary() {
    use clade_core::{AuditKind, EventKind, EventStatus, StepKind, TurnStatus};
    let mut words: Vec<&str> = Vec::new();
    words.extend(TurnStatus::ALL.iter().map(|w| w.as_str()));
    words.extend(EventStatus::ALL.iter().map(|w| w.as_str()));
    words.extend(EventKind::ALL.iter().map(|w| w.as_str()));
    words.extend(AuditKind::ALL.iter().map(|w| w.as_str()));
    words.extend(StepKind::ALL.iter().map(|w| w.as_str()));
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    let vocabulary = Path::new("crates/clade-core/src/lifecycle.rs");
    let clients = [Path::new("crates/clade-test-support"), Path::new("crates/clade-stub")];
    let mut offenders = Vec::new();
    for file in rust_files(Path::new("crates")) {
        let in_src = file.components().any(|c| c.as_os_str() == "src");
        if file == vocabulary || !in_src || clients.iter().any(|c| file.starts_with(c)) {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if let Some(word) = quoted.iter().find(|q| code.contains(q.as_str())) {
                offenders.push(format!("{}:{}: {word}", file.display(), n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "protocol words written as text outside clade_core::lifecycle; use the enum's as_str/parse:\n{}",
        offenders.join("\n")
    );
}
