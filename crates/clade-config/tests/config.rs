//! Parsing `clade.yaml`: defaults, every field, and errors that name file, line and field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::path::Path;

use clade_config::{Config, Durability, LogFormat};

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("clade.yaml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_means_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.listen, "127.0.0.1:7420");
    assert_eq!(config.store.durability, Durability::Full);
}

#[test]
fn every_section_parses() {
    let config = parse(
        "server:\n  listen: 0.0.0.0:9000\n  max_body_bytes: 4096\nstore:\n  url: postgres://x@h/db\n  durability: normal\nlog:\n  format: json\n  filter: debug\n",
    )
    .unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:9000");
    assert_eq!(config.server.max_body_bytes, 4096);
    assert_eq!(config.store.url.as_deref(), Some("postgres://x@h/db"));
    assert_eq!(config.store.durability, Durability::Normal);
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn unknown_key_is_an_error_with_file_line_and_field() {
    let err = parse("server:\n  listen: 127.0.0.1:1\n  lisen: oops\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:3:"), "{err}");
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn wrong_type_names_line() {
    let err = parse("server:\n  max_body_bytes: lots\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:2:"), "{err}");
}

#[test]
fn bad_enum_value_is_an_error() {
    let err = parse("store:\n  durability: sometimes\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:2:"), "{err}");
    assert!(err.contains("sometimes") || err.contains("durability"), "{err}");
}

#[test]
fn syntax_error_names_line() {
    let err = parse("server:\n  listen: [unclosed\n").unwrap_err();
    assert!(err.starts_with("clade.yaml:"), "{err}");
}

#[test]
fn missing_file_names_path() {
    let err = Config::load(Path::new("/nonexistent/clade.yaml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/clade.yaml"), "{err}");
}

#[test]
fn committed_schema_matches_the_types() {
    let generated = serde_json::to_string_pretty(&Config::json_schema()).unwrap() + "\n";
    clade_test_support::assert_committed("docs/clade.schema.json", &generated);
}
