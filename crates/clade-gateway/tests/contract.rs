//! The public contract: the committed OpenAPI document and error-code docs match the code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::path::Path;

use clade_gateway::error::Code;

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated =
        serde_json::to_string_pretty(&clade_gateway::openapi::document()).unwrap() + "\n";
    clade_test_support::assert_committed("docs/openapi.json", &generated);
}

#[test]
fn every_error_code_is_documented() {
    let docs = std::fs::read_to_string(repo_file("docs/errors.md")).unwrap();
    for code in Code::ALL {
        let heading = format!("## `{}`", code.as_str());
        assert!(docs.contains(&heading), "docs/errors.md lacks a section {heading}");
        let status = code.status().as_u16().to_string();
        let section = docs.split(&heading).nth(1).unwrap_or_default();
        assert!(
            section.lines().take(3).any(|l| l.contains(&status)),
            "{heading} must state HTTP {status}"
        );
    }
}

#[test]
fn codes_are_unique_snake_case() {
    let mut seen = std::collections::HashSet::new();
    for code in Code::ALL {
        assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
        assert!(code.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    }
}
