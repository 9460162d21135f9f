//! Path normalisation: never panics, and what it accepts is a clean relative path that cannot
//! leave the workspace lexically (no `..`, no empty or `.` parts, not absolute, no NUL).
#![no_main]

use clade_tools::workspace::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    if let Ok(clean) = normalize(&path) {
        assert!(!clean.starts_with('/'), "{clean:?}");
        assert!(!clean.contains('\0'));
        if clean != "." {
            assert!(clean.split('/').all(|p| !p.is_empty() && p != "." && p != ".."), "{path:?} -> {clean:?}");
        }
        // Normalising is idempotent.
        assert_eq!(normalize(&clean).as_deref(), Ok(clean.as_str()));
    }
});
