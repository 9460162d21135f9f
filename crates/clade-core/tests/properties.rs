//! Property tests of the core's text forms: every value written as text (to the store, the API
//! or configuration) reads back as itself, each value has one spelling, and no input makes a
//! parser panic.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // Test code.

use clade_core::{
    AgentRef, DISPLAY_NAME_PATTERN, EventKind, HANDLE_PATTERN, Handle, LABEL_PATTERN,
    NOT_BLANK_PATTERN, Scope, StepKey, TenantId, TurnId, TurnStatus, is_spoofing_char,
};
use proptest::prelude::*;

fn step_key() -> impl Strategy<Value = StepKey> {
    prop_oneof![
        any::<u32>().prop_map(|iteration| StepKey::Model { iteration }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(iteration, index)| StepKey::ToolStart { iteration, index }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(iteration, index)| StepKey::ToolResult { iteration, index }),
        any::<u32>().prop_map(|n| StepKey::Resume { n }),
    ]
}

/// Text near the step keys' grammar, and anything at all.
fn step_key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(model|resume|tool)(/(0|00|[0-9]{1,11}|-1|x)){0,3}(/(start|result|end))?/?",
        any::<String>(),
    ]
}

/// Handles, from the pattern the OpenAPI document gives for them.
fn handle() -> impl Strategy<Value = String> {
    let pattern = clade_core::HANDLE_PATTERN.trim_start_matches('^').trim_end_matches('$');
    proptest::string::string_regex(pattern).unwrap()
}

/// Whether `text` matches `pattern` as a JSON Schema validator reads it (a search, `^` and `$`
/// anchoring at the ends of the text, as in ECMA-262).
fn matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern).unwrap().is_match(text)
}

/// Text rich in the characters the patterns are about: controls, whitespace, bidirectional
/// and zero-width marks, and anything at all.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\\u0000-\\u00a0\\u061c\\u1680\\u2000-\\u206f\\u3000\\ufeff a-z0-9_-]{0,12}",
        "[a-z]{250,260}",
        any::<String>(),
    ]
}

proptest! {
    /// The OpenAPI document's patterns say exactly what the server accepts, so a client that
    /// checks a request against the document is never refused for it, nor let through.
    #[test]
    fn the_documents_patterns_agree_with_the_rules(text in tricky_text()) {
        prop_assert_eq!(matches(HANDLE_PATTERN, &text), Handle::parse(&text).is_ok(), "handle {:?}", text);
        let label = (1..=256).contains(&text.chars().count()) && !text.chars().any(is_spoofing_char);
        prop_assert_eq!(matches(LABEL_PATTERN, &text), label, "label {:?}", text);
        prop_assert_eq!(matches(NOT_BLANK_PATTERN, &text), !text.trim().is_empty(), "blank {:?}", text);
        let display = matches(DISPLAY_NAME_PATTERN, &text) && matches(NOT_BLANK_PATTERN, &text);
        prop_assert_eq!(display, clade_core::agent::validate_display_name(&text).is_ok(), "name {:?}", text);
    }

    #[test]
    fn a_step_key_reads_back_as_written(key in step_key()) {
        prop_assert_eq!(StepKey::parse(&key.to_string()), Some(key));
    }

    #[test]
    fn a_step_key_has_one_spelling(text in step_key_text()) {
        // Never a panic; and text that parses is exactly what the key writes.
        if let Some(key) = StepKey::parse(&text) {
            prop_assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn steps_of_one_iteration_keep_their_order(iteration in any::<u32>(), a in 0u32..1000, b in 0u32..1000) {
        // A call's start comes after the model step, and its result after its start; calls
        // come in their order.
        let model = StepKey::Model { iteration }.order();
        let start = StepKey::ToolStart { iteration, index: a }.order();
        let result = StepKey::ToolResult { iteration, index: a }.order();
        prop_assert!(model < start && start < result);
        let other = StepKey::ToolStart { iteration, index: b }.order();
        prop_assert_eq!(a.cmp(&b), start.cmp(&other));
    }

    #[test]
    fn an_id_reads_back_as_written(bytes in any::<[u8; 16]>()) {
        let id = TenantId::from_bytes(bytes);
        prop_assert_eq!(TenantId::parse(&id.to_string()).unwrap(), id);
        let turn = TurnId::from_bytes(bytes);
        prop_assert_eq!(turn.to_string().parse::<TurnId>().unwrap(), turn);
    }

    #[test]
    fn id_parsing_never_panics(text in any::<String>()) {
        let _ = TenantId::parse(&text);
    }

    #[test]
    fn a_valid_handle_reads_back_as_written(text in handle()) {
        let parsed = Handle::parse(&text).unwrap();
        prop_assert_eq!(parsed.as_str(), text.as_str());
    }

    #[test]
    fn an_accepted_handle_follows_the_rules(text in any::<String>()) {
        if let Ok(handle) = Handle::parse(&text) {
            let bytes = handle.as_str().as_bytes();
            prop_assert!(!bytes.is_empty() && bytes.len() <= 64);
            prop_assert!(bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit());
            prop_assert!(bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_'));
        }
    }

    #[test]
    fn an_agent_reference_reads_back_as_written(tenant in handle(), agent in handle()) {
        let text = format!("{tenant}/{agent}");
        let parsed = AgentRef::parse(&text).unwrap();
        prop_assert!(parsed.is(&tenant, &agent));
        prop_assert_eq!(parsed.to_string(), text);
        // A bare handle is the default tenant's agent, written out in full.
        let bare = AgentRef::parse(&agent).unwrap();
        prop_assert_eq!(bare.to_string(), format!("default/{agent}"));
    }

    #[test]
    fn scopes_read_back_as_joined(picked in proptest::sample::subsequence(Scope::ALL.to_vec(), 0..=5)) {
        prop_assert_eq!(Scope::split(&Scope::join(&picked)).unwrap(), picked);
    }

    #[test]
    fn scope_parsing_names_what_it_refuses(text in any::<String>()) {
        match Scope::split(&text) {
            Ok(scopes) => prop_assert!(scopes.len() <= Scope::ALL.len()),
            Err(message) => prop_assert!(message.contains("unknown scope")),
        }
    }

    #[test]
    fn vocabulary_parsing_accepts_only_its_own_words(text in any::<String>()) {
        if let Some(status) = TurnStatus::parse(&text) {
            prop_assert_eq!(status.as_str(), text.as_str());
        }
        if let Some(kind) = EventKind::parse(&text) {
            prop_assert_eq!(kind.as_str(), text.as_str());
        }
    }
}

#[test]
fn every_word_of_the_vocabulary_reads_back() {
    for status in TurnStatus::ALL {
        assert_eq!(TurnStatus::parse(status.as_str()), Some(*status));
    }
    for kind in EventKind::ALL {
        assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
    }
}
