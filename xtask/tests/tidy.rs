//! Repository-wide rules checked on every `cargo test`: layering, crate docs, architecture doc.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // Test code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each crate's layer (DESIGN.md §4): a crate may depend only on crates of a lower layer.
fn layer(name: &str) -> Option<u8> {
    Some(match name {
        "clade-core" => 0,
        "clade-config" | "clade-protocol" => 1,
        "clade-store" | "clade-model" | "clade-tools" | "clade-test-support" => 2,
        "clade-stub" => 3,
        "clade-memory" => 3,
        "clade-runtime" => 4,
        "clade-flow" | "clade-sched" | "clade-channels" | "clade-cluster" | "clade-otlp" => 5,
        "clade-gateway" | "clade-sim" => 6,
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

/// The architecture page is a map a newcomer reads in one sitting: inventories and figures
/// belong in `docs/internals/` and `docs/perf/`.
#[test]
fn architecture_doc_stays_a_map() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    assert!(
        doc.len() <= 40_000,
        "docs/ARCHITECTURE.md is {} bytes, over 40,000: move detail to docs/internals/",
        doc.len()
    );
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

/// Unsafe code is denied workspace-wide; the SQLite VFS shim, the binary's allocator settings
/// and the sandbox's kernel interfaces (seccomp with a listener and its ioctls; the init's
/// inherited report socket and its fork-to-exec limits) are the places allowed to opt out, so a
/// new `allow(unsafe_code)` is a decision to make in review, not a line to slip in.
#[test]
fn unsafe_code_stays_in_the_vfs_shim_and_the_allocator_settings() {
    let allowed = [
        Path::new("crates/clade-store/src/paced.rs"),
        Path::new("crates/clade-cli/src/memory.rs"),
        Path::new("crates/clade-tools/src/seccomp.rs"),
        Path::new("crates/clade-tools/src/init.rs"),
    ];
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

/// Libraries say what went wrong; the CLI's `advice` module says which command fixes it, and
/// the gateway says it in HTTP terms. A command line quoted in a library's code (an error, a
/// message to a model) would tell an API caller or a model to run a program it cannot.
#[test]
fn command_lines_are_advised_only_at_the_edges() {
    // The binary's crate and the gateway (whose route descriptions and auth refusals speak to
    // the operator of this very binary) are the edges; logs speak to the operator too.
    let edges = ["crates/clade-cli/", "crates/clade-gateway/", "xtask/"];
    let mut offenders = Vec::new();
    for (file, lines) in library_sources() {
        let name = file.to_string_lossy().replace('\\', "/");
        if edges.iter().any(|edge| name.starts_with(edge)) {
            continue;
        }
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let logged = ["tracing::", "info!(", "warn!(", "error!(", "debug!("]
                .iter()
                .any(|log| code.contains(log));
            if code.contains("`clade ") && !logged {
                offenders.push(format!("{name}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "a library quotes a command line; return a typed error and advise in clade-cli's advice module:\n{}",
        offenders.join("\n")
    );
}

/// The `[licenses]`, `[bans]` and `[sources]` of `deny.toml`, checked offline against the
/// resolved dependency graph, so the policy holds on every `cargo test` even where cargo-deny
/// (and the network its advisories check needs) is absent.
#[test]
fn dependencies_follow_deny_toml() {
    let deny = std::fs::read_to_string(root().join("deny.toml")).unwrap();
    let section = |name: &str| -> String {
        let start = deny.find(&format!("[{name}]")).unwrap_or_else(|| panic!("no [{name}]"));
        let rest = &deny[start + name.len() + 2..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
    };
    let quoted = |text: &str| -> Vec<String> {
        text.split('"').skip(1).step_by(2).map(str::to_owned).collect()
    };
    let licenses = section("licenses");
    let allow_list = &licenses[licenses.find("allow = [").unwrap()..];
    let allowed = quoted(&allow_list[..allow_list.find(']').unwrap()]);
    let bans = section("bans");
    let banned: Vec<String> =
        bans.lines().filter(|l| l.contains("crate = ")).flat_map(quoted).collect();
    assert!(allowed.contains(&"MIT".to_owned()) && banned.contains(&"serde_yml".to_owned()));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--all-features"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resolved: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let mut problems = Vec::new();
    let mut registries = std::collections::BTreeSet::new();
    for package in meta["packages"].as_array().unwrap() {
        if !resolved.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        let version = package["version"].as_str().unwrap();
        if banned.iter().any(|b| b == name) {
            problems.push(format!("{name} {version} is banned by deny.toml"));
        }
        match package["source"].as_str() {
            None => {}
            Some(source) if source.starts_with("registry+") => {
                registries.insert(source.to_owned());
            }
            Some(source) => problems.push(format!("{name} {version} comes from {source}")),
        }
        match package["license"].as_str() {
            Some(expression) if license_allowed(expression, &allowed) => {}
            other => problems.push(format!("{name} {version}: license {other:?} is not allowed")),
        }
    }
    if registries.len() > 1 {
        problems.push(format!("packages come from more than one registry: {registries:?}"));
    }
    assert!(problems.is_empty(), "deny.toml does not hold:\n{}", problems.join("\n"));
}

/// Whether an SPDX expression (with the old `/` for OR) is satisfied by `allowed`: an OR needs
/// one side, an AND both; `X WITH exception` must be allowed as written.
fn license_allowed(expression: &str, allowed: &[String]) -> bool {
    let spaced = expression.replace('(', " ( ").replace(')', " ) ").replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut at = 0;
    let ok = or_expr(&tokens, &mut at, allowed);
    ok && at == tokens.len()
}

fn or_expr(tokens: &[&str], at: &mut usize, allowed: &[String]) -> bool {
    let mut ok = and_expr(tokens, at, allowed);
    while tokens.get(*at) == Some(&"OR") {
        *at += 1;
        ok |= and_expr(tokens, at, allowed);
    }
    ok
}

fn and_expr(tokens: &[&str], at: &mut usize, allowed: &[String]) -> bool {
    let mut ok = term(tokens, at, allowed);
    while tokens.get(*at) == Some(&"AND") {
        *at += 1;
        ok &= term(tokens, at, allowed);
    }
    ok
}

fn term(tokens: &[&str], at: &mut usize, allowed: &[String]) -> bool {
    let Some(&token) = tokens.get(*at) else { return false };
    *at += 1;
    if token == "(" {
        let ok = or_expr(tokens, at, allowed);
        *at += usize::from(tokens.get(*at) == Some(&")"));
        return ok;
    }
    let mut license = token.to_owned();
    if tokens.get(*at) == Some(&"WITH") {
        license = format!("{license} WITH {}", tokens.get(*at + 1).copied().unwrap_or_default());
        *at += 2;
    }
    allowed.contains(&license)
}

#[test]
fn license_expressions_are_read_as_spdx_says() {
    let allowed = vec!["MIT".to_owned(), "Apache-2.0".to_owned()];
    assert!(license_allowed("MIT OR GPL-3.0", &allowed));
    assert!(!license_allowed("MIT AND GPL-3.0", &allowed));
    assert!(license_allowed("(MIT OR GPL-3.0) AND Apache-2.0", &allowed));
    assert!(!license_allowed("(MIT OR Apache-2.0) AND GPL-3.0", &allowed));
    assert!(license_allowed("MIT/Apache-2.0", &allowed));
    assert!(!license_allowed("Apache-2.0 WITH LLVM-exception", &allowed));
    assert!(!license_allowed("", &allowed));
}

/// The API edge reads tenant data only through a `TenantStore` (`AppState::of`), and never
/// through the `SystemStore`, which holds the reads that cross tenants: so no request can
/// reach another tenant's rows, whatever ids it names. What the gateway may still ask the
/// plain store is what holds no tenant's data.
#[test]
fn the_gateway_never_reads_across_tenants() {
    let allowed = [
        "acting_as",
        "authenticate_scoped",
        // A paired operator's key, as a token: it says which tenant a request is.
        "peers().authenticate",
        // Whether a key is a channel's paired listener: whose key, no tenant's data.
        "peers().is_paired",
        "clock",
        "clone",
        // The deployment's configuration, which only the operator's token reaches (and a
        // worker node paired by the operator, to join).
        "config_revisions().get",
        "config_revisions().latest",
        "config_revisions().list",
        // Where the store is, without its password: for a paired worker node to join.
        "location",
        // The cluster's leases: node names and shard numbers, no tenant's data (the
        // operator's token only, too).
        "shard_leases().list",
        "now",
        "outbox_head",
        "ping",
        "tenant_scope",
        // The operator naming another tenant's agent (`tenant/handle` as an OpenAI model),
        // looked up only once the caller is known to be the operator.
        "tenants().named",
        // The tenants whose usage the operator's token asked for (`/v1/usage?all_tenants`),
        // listed only once the caller is known to be the operator.
        "tenants().list",
    ];
    let mut offenders = Vec::new();
    for file in rust_files(Path::new("crates/clade-gateway/src")) {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains(".system()") {
                offenders.push(format!("{}:{}: a cross-tenant read", file.display(), n + 1));
            }
            for (at, _) in code.match_indices("state.store.") {
                let word = |from: &str| -> String {
                    from.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
                };
                let rest = &code[at + "state.store.".len()..];
                let mut method = word(rest);
                // A table group's handle is named with the method asked of it.
                if let Some(next) = rest[method.len()..].strip_prefix("().") {
                    let handled = format!("{method}().{}", word(next));
                    if allowed.contains(&handled.as_str()) {
                        method = handled;
                    }
                }
                if !allowed.contains(&method.as_str()) {
                    offenders.push(format!(
                        "{}:{}: state.store.{method} (use state.of(&tenant))",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the gateway reads around the tenant scope:\n{}",
        offenders.join("\n")
    );
}

/// Each backend runs on its own driver: PostgreSQL on sqlx's native pool, SQLite on rusqlite
/// (with a native sqlx pool for settings and migrations). sqlx's `Any` driver, which decoded
/// every row into a common form and hid each database's types, is for tests only: the
/// binary's dependency graph does not enable it, and the store's code never names it.
#[test]
fn the_store_runs_on_native_drivers() {
    let mut offenders = Vec::new();
    for file in rust_files(Path::new("crates/clade-store/src")) {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in ["AnyPool", "AnyConnection", "AnyRow", "sqlx::Any", "sqlx::any"] {
                if code.contains(word) {
                    offenders.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "the store uses sqlx's Any driver:\n{}", offenders.join("\n"));
    let output = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "clade-cli", "-e", "normal,features", "-i", "sqlx"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("sqlx feature \"postgres\""), "no sqlx in the graph?\n{tree}");
    assert!(!tree.contains("sqlx feature \"any\""), "the binary enables sqlx's Any:\n{tree}");
}

// ---------------------------------------------------------------------------------------------
// Ratchets: measures of code health that may only go down (`xtask/ratchets.txt`), and the
// functions allowed to stay over the length limit (`xtask/long-functions.txt`).

/// Non-test source of every workspace crate: `(path, lines)`, each file cut at its first
/// top-level `#[cfg(test)]` (test modules sit at the end of a file, by convention).
fn library_sources() -> Vec<(PathBuf, Vec<String>)> {
    let mut sources = Vec::new();
    for dir in ["crates", "xtask/src"] {
        for file in rust_files(Path::new(dir)) {
            let text = file.to_string_lossy();
            if text.contains("/tests/") || text.contains("/benches/") || text.contains("/examples/")
            {
                continue;
            }
            let body = std::fs::read_to_string(root().join(&file)).unwrap();
            sources.push((file, split_tests(&body).0));
        }
    }
    sources
}

/// A library file's lines split into library code and test code: an item under a top-level
/// `#[cfg(test)]` (a `mod tests { … }`, wherever it stands in the file) is test code, and
/// everything else, before it or after it, is library code.
fn split_tests(body: &str) -> (Vec<String>, Vec<String>) {
    let (mut library, mut tests) = (Vec::new(), Vec::new());
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        if line != "#[cfg(test)]" {
            library.push(line.to_owned());
            continue;
        }
        tests.push(line.to_owned());
        // Its other attributes, then the item: one line, or a block to its closing brace.
        while let Some(line) = lines.next() {
            tests.push(line.to_owned());
            if line.starts_with("#[") {
                continue;
            }
            if line.ends_with('{') {
                for line in lines.by_ref() {
                    tests.push(line.to_owned());
                    if line == "}" {
                        break;
                    }
                }
            }
            break;
        }
    }
    (library, tests)
}

/// Every test source: integration tests under `tests/` and the test modules of library files.
fn test_sources() -> Vec<(PathBuf, String)> {
    let mut sources = Vec::new();
    for file in rust_files(Path::new("crates")).into_iter().chain(rust_files(Path::new("xtask"))) {
        let body = std::fs::read_to_string(root().join(&file)).unwrap();
        // Test support is test code wherever it lives.
        let path = file.to_string_lossy();
        if path.contains("/tests/") || path.starts_with("crates/clade-test-support/") {
            sources.push((file, body));
        } else {
            let tests = split_tests(&body).1;
            if !tests.is_empty() {
                sources.push((file, tests.join("\n")));
            }
        }
    }
    sources
}

/// Public methods of the inherent `impl <type_name> { … }` blocks across the store crate.
fn public_methods(type_name: &str) -> Vec<String> {
    let openings = [format!("impl {type_name} {{"), format!("impl crate::{type_name} {{")];
    let mut methods = Vec::new();
    for (file, lines) in library_sources() {
        if !file.starts_with("crates/clade-store/src") {
            continue;
        }
        let mut inside = false;
        for line in &lines {
            if openings.contains(line) {
                inside = true;
            } else if inside && line == "}" {
                inside = false;
            } else if inside {
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                let rest = trimmed
                    .strip_prefix("pub async fn ")
                    .or_else(|| trimmed.strip_prefix("pub fn "));
                if let (4, Some(rest)) = (indent, rest) {
                    let name: String =
                        rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    methods.push(name);
                }
            }
        }
    }
    methods.sort();
    methods
}

/// `(file::name, lines)` of every function in library code, by rustfmt's layout: a body ends
/// at the first line holding only `}` at the signature's indentation.
fn function_lengths() -> Vec<(String, usize)> {
    let mut lengths = Vec::new();
    for (file, lines) in library_sources() {
        let mut at = 0;
        while at < lines.len() {
            let line = &lines[at];
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let signature = ["pub(crate) ", "pub(super) ", "pub ", ""].iter().find_map(|vis| {
                let rest = trimmed.strip_prefix(vis)?;
                let rest = rest.strip_prefix("const ").unwrap_or(rest);
                let rest = rest.strip_prefix("async ").unwrap_or(rest);
                let rest = rest.strip_prefix("unsafe ").unwrap_or(rest);
                rest.strip_prefix("fn ")
            });
            let Some(rest) = signature else {
                at += 1;
                continue;
            };
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // The signature ends at the first line ending in `{` (a body follows) or `;` (a
            // declaration in a trait); a line ending in `}` first is a one-line function.
            let opened = lines[at..].iter().position(|l| {
                let l = l.trim_end();
                l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
            });
            let Some(opened) =
                opened.map(|n| at + n).filter(|n| lines[*n].trim_end().ends_with('{'))
            else {
                at += 1;
                continue;
            };
            let close = format!("{}}}", " ".repeat(indent));
            if let Some(end) = lines[opened..].iter().position(|l| *l == close) {
                lengths.push((format!("{}::{name}", file.display()), opened + end - at + 1));
            }
            at += 1;
        }
    }
    lengths
}

fn read_ratchets() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root().join("xtask/ratchets.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').expect("ratchets.txt: `name = count` lines");
            (name.trim().to_owned(), value.trim().parse().expect("ratchets.txt: a count"))
        })
        .collect()
}

/// What the ratchets measure, now.
fn measures() -> BTreeMap<String, usize> {
    let library = library_sources();
    // An error turned into text where it is mapped: `map_err(|e| e.to_string())` and kin.
    let errors_to_strings: usize = library
        .iter()
        .map(|(_, lines)| {
            lines.iter().filter(|l| l.contains("map_err(") && l.contains("to_string()")).count()
        })
        .sum();
    let string_results: usize = library
        .iter()
        .map(|(_, lines)| {
            lines.iter().filter(|l| l.contains("Result<") && l.contains(", String>")).count()
        })
        .sum();
    // Waits on real time: tokio's and std's sleeps, and a store's clock (the system's, in
    // these tests). A manual clock's `sleep` waits on the test's own time and is not counted.
    let real_sleeps =
        [concat!("time::", "sleep("), concat!("thread::", "sleep("), "clock().sleep("];
    let sleeps: usize = test_sources()
        .iter()
        .map(|(_, body)| {
            body.lines()
                .filter(|l| real_sleeps.iter().any(|s| l.contains(s)))
                .filter(|l| !l.trim_start().starts_with("//"))
                .count()
        })
        .sum();
    BTreeMap::from([
        ("store_public_methods".to_owned(), public_methods("Store").len()),
        ("tenant_store_public_methods".to_owned(), public_methods("TenantStore").len()),
        ("system_store_public_methods".to_owned(), public_methods("SystemStore").len()),
        ("string_results".to_owned(), string_results),
        ("errors_mapped_to_strings".to_owned(), errors_to_strings),
        ("sleeps_in_tests".to_owned(), sleeps),
    ])
}

/// Code health only goes one way: each measure in `xtask/ratchets.txt` may not rise; when one
/// falls, lower its line in the same change, so the gain is kept.
#[test]
fn code_health_ratchets_only_go_down() {
    let ratchets = read_ratchets();
    let mut complaints = Vec::new();
    for (name, now) in measures() {
        match ratchets.get(&name) {
            None => complaints.push(format!("{name} = {now}: add this line to xtask/ratchets.txt")),
            Some(&limit) if now > limit => complaints.push(format!(
                "{name} rose to {now} (limit {limit}); use the shape the limit asks for instead"
            )),
            Some(&limit) if now < limit => complaints.push(format!(
                "{name} fell to {now}: lower its line in xtask/ratchets.txt from {limit}"
            )),
            Some(_) => {}
        }
    }
    assert!(complaints.is_empty(), "{}", complaints.join("\n"));
}

/// No function over 100 lines, except those in `xtask/long-functions.txt`, a list that only
/// shrinks: a listed function that is now short (or gone) must leave the list.
#[test]
fn functions_stay_short() {
    const LIMIT: usize = 100;
    let listed: std::collections::BTreeSet<String> =
        std::fs::read_to_string(root().join("xtask/long-functions.txt"))
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect();
    let long: BTreeMap<String, usize> =
        function_lengths().into_iter().filter(|(_, lines)| *lines > LIMIT).collect();
    let mut complaints: Vec<String> = long
        .iter()
        .filter(|(name, _)| !listed.contains(*name))
        .map(|(name, lines)| {
            format!("{name} has {lines} lines (limit {LIMIT}): split it along its concerns")
        })
        .collect();
    complaints.extend(listed.iter().filter(|name| !long.contains_key(*name)).map(|name| {
        format!("{name} is short now or gone: remove it from xtask/long-functions.txt")
    }));
    assert!(complaints.is_empty(), "{}", complaints.join("\n"));
}

/// The docs (the README, `docs/`, `docs/internals/`, `docs/perf/`) name the tests behind their
/// claims as `` `path/to/file.rs::test_name` ``; each such name must exist, so a renamed or
/// dropped test cannot leave a claim unbacked.
#[test]
fn docs_name_tests_that_exist() {
    let mut missing = Vec::new();
    let mut checked = 0;
    let mut docs = vec![PathBuf::from("README.md")];
    for dir in ["docs", "docs/internals", "docs/perf"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else { continue };
        docs.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .map(|p| p.strip_prefix(root()).map(Path::to_owned).unwrap_or(p)),
        );
    }
    for doc in docs {
        let doc = doc.display().to_string();
        let Ok(text) = std::fs::read_to_string(root().join(&doc)) else {
            continue;
        };
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some((path, name)) = quoted.split_once(".rs::") else {
                continue;
            };
            let path = format!("{path}.rs");
            let name = name.trim_end_matches("()");
            checked += 1;
            let body = std::fs::read_to_string(root().join(&path)).unwrap_or_default();
            let defined = [format!("fn {name}("), format!("fn {name}<")]
                .iter()
                .any(|d| body.contains(d.as_str()));
            if !defined {
                missing.push(format!("{doc}: `{path}::{name}` names no function"));
            }
        }
    }
    assert!(checked > 0, "the docs name no tests at all");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
