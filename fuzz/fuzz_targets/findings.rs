//! Reading a run's account and command line for the audit log: both are text a sandboxed
//! command controls, so any bytes must give findings without a panic, and every finding
//! stays bounded (at most six lines or names of at most 200 characters each; header records
//! at most 30 lines of at most 300).
#![no_main]

use clade_tools::sandbox::{Finding, RunFacts, findings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first byte picks the network grant; the rest splits into account and command.
    let network = data.first().is_some_and(|b| b & 1 == 1);
    let (account, command) = text.split_once('\u{1}').unwrap_or((&text, &text));
    for account in [account.to_owned(), format!("exit code 1\nstdout:\n{account}\nstderr:\n{command}")] {
        let run = RunFacts { command, network, granted_env: &["HOME"] };
        for finding in findings(&account, &run) {
            let items = match finding {
                Finding::Violation(items) | Finding::Refused(items) => {
                    assert!(items.len() <= 30 && items.iter().all(|i| i.chars().count() <= 300));
                    continue;
                }
                Finding::Limit(line) | Finding::SeemsLimited(line) => vec![line],
                Finding::Denied(items) | Finding::Hidden(items) | Finding::Withheld(items) => items,
            };
            assert!(items.len() <= 6, "{items:?}");
            assert!(items.iter().all(|i| i.chars().count() <= 200), "{items:?}");
        }
    }
});
