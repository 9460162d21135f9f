//! Policy matching: never panics, stays fast, and `covers` is sound: when it says a pattern
//! includes another, every text the narrower one matches, the wider one matches too.
#![no_main]

use clade_config::{Constraints, PolicyEffect, PolicyRule};
use clade_tools::pattern::{covers, matches};
use clade_tools::argv::{ArgvPattern, split};
use clade_tools::policy::{ARGV_TOOLS, SourcedRule, Target, decide, narrowing_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.splitn(4, '\n').collect();
    let [wider, narrower, subject, rest] = [0, 1, 2, 3].map(|i| parts.get(i).copied().unwrap_or(""));
    if covers(wider, narrower) && matches(narrower, subject) {
        assert!(matches(wider, subject), "covers({wider:?}, {narrower:?}) but {subject:?} escapes");
    }
    // A pattern covers itself, and `*` covers everything.
    assert!(covers(narrower, narrower) || narrower.contains('*'));
    assert!(covers("*", narrower));
    let rule = |effect, tool: &str, resource: &str| SourcedRule {
        rule: PolicyRule { effect, tool: tool.into(), resource: resource.into(), constraints: Constraints::default() },
        source: "fuzz".into(),
    };
    let rules = vec![
        rule(PolicyEffect::Allow, wider, narrower),
        rule(PolicyEffect::Ask, narrower, wider),
        rule(PolicyEffect::Deny, rest, subject),
    ];
    let decision = decide(&rules, subject, Target::Text(rest), true);
    // A matching deny always wins.
    if matches(rest, subject) && matches(subject, rest) {
        assert_eq!(decision.effect, PolicyEffect::Deny);
    }
    // Delegation never widens: an accepted child matches nothing its parent does not.
    let parent = rule(PolicyEffect::Allow, wider, narrower).rule;
    let child = rule(PolicyEffect::Allow, subject, rest).rule;
    if narrowing_error(&parent, &child).is_none() {
        // A child naming exactly an argv tool narrows as argv patterns (checked below).
        assert!(covers(wider, subject));
        assert!(ARGV_TOOLS.contains(&subject) || covers(narrower, rest));
    }
    // Argv patterns: `covers` is sound too.
    if let (Ok(w), Ok(n), Ok(argv)) =
        (ArgvPattern::parse(wider), ArgvPattern::parse(narrower), split(subject))
    {
        if w.covers(&n) && n.matches(&argv) {
            assert!(w.matches(&argv), "argv {wider:?} covers {narrower:?} but {argv:?} escapes");
        }
    }
});
