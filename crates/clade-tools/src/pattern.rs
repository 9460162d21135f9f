//! Glob patterns of policy rules: `*` matches any run of characters, everything else itself.

/// Whether `pattern` matches all of `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    glob(pattern, text, false)
}

/// Whether every text `narrower` matches is also matched by `wider` — what delegation needs:
/// a child's grant must not reach anything its parent's does not.
///
/// Sound but not complete: it reads `narrower` as text in which a `*` can only be consumed by
/// a `*` of `wider`. When it says yes, the inclusion holds; some true inclusions (rare, such as
/// `a*` ⊇ `a**`) may be refused, which only errs on the side of a narrower grant.
pub fn covers(wider: &str, narrower: &str) -> bool {
    glob(wider, narrower, true)
}

/// Iterative wildcard matching with one backtrack point: linear in practice, never
/// exponential on hostile patterns such as `*a*a*a*a*b`. With `stars_are_wild`, a `*` in
/// `text` matches only a `*` of `pattern`.
fn glob(pattern: &str, text: &str, stars_are_wild: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let literal_ok = !(stars_are_wild && t[ti] == '*');
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] && literal_ok {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// How specific a pattern is: its count of literal characters. More specific rules win over
/// less specific ones of another effect (see [`crate::policy`]).
pub fn specificity(pattern: &str) -> usize {
    pattern.chars().filter(|c| *c != '*').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(matches("*", ""));
        assert!(matches("fs.*", "fs.read"));
        assert!(!matches("fs.*", "shell.exec"));
        assert!(matches("git *", "git status"));
        assert!(!matches("git *", "gitx status"));
        assert!(matches("*.github.com", "api.github.com"));
        assert!(!matches("*.github.com", "github.com.evil.net"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "aXbY"));
        assert!(!matches("*a*a*a*a*a*a*a*b", &"a".repeat(5000)));
    }

    #[test]
    fn inclusion_is_sound() {
        assert!(covers("*", "anything*"));
        assert!(covers("fs.*", "fs.read"));
        assert!(covers("fs.*", "fs.r*"));
        assert!(!covers("fs.read", "fs.*"));
        assert!(!covers("fs.r*", "fs.*"));
        assert!(covers("notes/*", "notes/2026/*"));
        assert!(!covers("notes/*", "*"));
        assert!(!covers("a*c", "a*"));
    }
}
