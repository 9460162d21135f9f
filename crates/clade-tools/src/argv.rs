//! Policy patterns over a command's argument list, for tools that run programs
//! (`shell.exec`): a rule names a program and its arguments as a list, never a command line
//! that a shell would then read its own way.
//!
//! A pattern is words separated by spaces (`'…'` or `"…"` quote a word, whose characters are
//! then all literal):
//!
//! - the first word is the **program**, matched against its name: `git` matches `git`,
//!   `/usr/bin/git` and `/bin/git`, but not `./git` or `/workspace/git` (only the system's
//!   program directories resolve to a bare name); a word with a `/` matches the path as run;
//! - `-abc` requires the short flags `a`, `b` and `c`, however the command clusters or orders
//!   them (`-a -cb`, `-bca`);
//! - `--name` or `--name=*` requires a long flag matching it;
//! - any other word is the next **operand**, a glob on one argument (`*` never crosses into the
//!   next argument);
//! - a last word `**` lets the command have more flags and operands than the pattern names;
//!   without it the command has exactly the flags and operands named.
//!
//! The single word `*` matches every command (as `*` does for other tools). A shell line
//! (`command`) runs as `/bin/sh -c <line>`: its program is `sh`, so no pattern for another
//! program ever matches it, and only a rule naming `sh` allows one.

/// One word of a pattern or command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    /// Quoted in whole or in part: its `*` are literal.
    literal: bool,
}

/// Splits `text` into words the way a pattern is read: spaces separate, `'…'` and `"…"` quote
/// (no escapes inside single quotes; `\` escapes one character elsewhere).
fn words(text: &str) -> Result<Vec<Word>, String> {
    let mut out = Vec::new();
    let mut current: Option<Word> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(word) = current.take() {
                    out.push(word);
                }
            }
            '\'' | '"' => {
                let word = current.get_or_insert(Word { text: String::new(), literal: true });
                word.literal = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match chars.next() {
                            Some(escaped) => word.text.push(escaped),
                            None => return Err(format!("unclosed {c} in {text:?}")),
                        },
                        Some(other) => word.text.push(other),
                        None => return Err(format!("unclosed {c} in {text:?}")),
                    }
                }
            }
            '\\' => {
                let word = current.get_or_insert(Word { text: String::new(), literal: true });
                word.literal = true;
                match chars.next() {
                    Some(escaped) => word.text.push(escaped),
                    None => return Err(format!("trailing \\ in {text:?}")),
                }
            }
            other => {
                current.get_or_insert(Word { text: String::new(), literal: false }).text.push(other)
            }
        }
    }
    out.extend(current);
    Ok(out)
}

/// The argument list as one line that [`split`] reads back exactly: the form in which an
/// `argv` call is shown in approvals and the audit log, and matched by "approve always".
pub fn quote(argv: &[String]) -> String {
    let quote_one = |arg: &String| {
        let plain = !arg.is_empty()
            && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain { arg.clone() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
    };
    argv.iter().map(quote_one).collect::<Vec<_>>().join(" ")
}

/// Reads a line made by [`quote`] back into its arguments.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    Ok(words(line)?.into_iter().map(|w| w.text).collect())
}

/// Directories whose programs a pattern names by their bare name: the sandbox's `PATH`.
const SYSTEM_DIRS: &[&str] =
    &["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The name a pattern's program word is matched against.
pub fn program_name(argv0: &str) -> &str {
    match argv0.rsplit_once('/') {
        Some((dir, name)) if SYSTEM_DIRS.contains(&dir) => name,
        _ => argv0,
    }
}

/// A command's arguments, sorted the way patterns see them.
#[derive(Debug, Default)]
struct Parsed<'a> {
    short: Vec<char>,
    long: Vec<&'a str>,
    operands: Vec<&'a str>,
}

fn parse_args(args: &[String]) -> Parsed<'_> {
    let mut parsed = Parsed::default();
    let mut operands_only = false;
    for arg in args {
        if operands_only {
            parsed.operands.push(arg);
        } else if arg == "--" {
            operands_only = true;
        } else if arg.starts_with("--") {
            parsed.long.push(arg);
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            for flag in cluster.chars() {
                if !parsed.short.contains(&flag) {
                    parsed.short.push(flag);
                }
            }
        } else {
            parsed.operands.push(arg);
        }
    }
    parsed
}

/// A parsed argv pattern (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgvPattern {
    /// `None`: the pattern `*`, every command.
    program: Option<Word>,
    short: Vec<char>,
    long: Vec<Word>,
    operands: Vec<Word>,
    /// A last `**`: more flags and operands may follow.
    rest: bool,
}

fn word_matches(pattern: &Word, text: &str) -> bool {
    if pattern.literal {
        pattern.text == text
    } else {
        crate::pattern::matches(&pattern.text, text)
    }
}

fn word_covers(wider: &Word, narrower: &Word) -> bool {
    let narrower_exact = narrower.literal || !narrower.text.contains('*');
    match (wider.literal, narrower_exact) {
        (true, exact) => exact && wider.text == narrower.text,
        (false, true) => crate::pattern::matches(&wider.text, &narrower.text),
        (false, false) => crate::pattern::covers(&wider.text, &narrower.text),
    }
}

impl ArgvPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let mut words = words(pattern)?;
        if words.is_empty() {
            return Err("an argv pattern needs at least a program (or `*` for any command)".into());
        }
        if words.len() == 1 && words[0] == (Word { text: "*".into(), literal: false }) {
            return Ok(Self::any());
        }
        let rest = words.last().is_some_and(|w| !w.literal && w.text == "**");
        if rest {
            words.pop();
        }
        let mut words = words.into_iter();
        let program = words.next();
        let mut this =
            Self { program, short: Vec::new(), long: Vec::new(), operands: Vec::new(), rest };
        for word in words {
            if !word.literal && word.text == "**" {
                return Err(format!("`**` may only be the last word of {pattern:?}"));
            }
            if word.text.starts_with("--") && !word.literal {
                this.long.push(word);
            } else if let Some(cluster) =
                word.text.strip_prefix('-').filter(|c| !c.is_empty() && !word.literal)
            {
                if cluster.contains('*') {
                    return Err(format!("short flags {:?} cannot hold `*`", word.text));
                }
                for flag in cluster.chars() {
                    if !this.short.contains(&flag) {
                        this.short.push(flag);
                    }
                }
            } else {
                this.operands.push(word);
            }
        }
        Ok(this)
    }

    fn any() -> Self {
        Self {
            program: None,
            short: Vec::new(),
            long: Vec::new(),
            operands: Vec::new(),
            rest: true,
        }
    }

    /// Whether the command `argv` matches.
    pub fn matches(&self, argv: &[String]) -> bool {
        let Some(program) = &self.program else { return true };
        let Some((argv0, args)) = argv.split_first() else { return false };
        // A program written as a path matches the path run; a bare name, the resolved name.
        let name = if program.text.contains('/') { argv0.as_str() } else { program_name(argv0) };
        if !word_matches(program, name) {
            return false;
        }
        let parsed = parse_args(args);
        let shorts_ok = self.short.iter().all(|f| parsed.short.contains(f));
        let longs_ok = self.long.iter().all(|p| parsed.long.iter().any(|arg| word_matches(p, arg)));
        let operands_ok = parsed.operands.len() >= self.operands.len()
            && self.operands.iter().zip(&parsed.operands).all(|(p, arg)| word_matches(p, arg));
        if !(shorts_ok && longs_ok && operands_ok) {
            return false;
        }
        self.rest
            || (parsed.short.iter().all(|f| self.short.contains(f))
                && parsed.long.iter().all(|arg| self.long.iter().any(|p| word_matches(p, arg)))
                && parsed.operands.len() == self.operands.len())
    }

    /// Whether every command `narrower` matches is also matched by `self` (sound: a "yes" is
    /// always right; some true inclusions are refused, which only keeps delegation narrower).
    pub fn covers(&self, narrower: &ArgvPattern) -> bool {
        let Some(program) = &self.program else { return true };
        let Some(child_program) = &narrower.program else { return false };
        if !word_covers(program, child_program) {
            return false;
        }
        let operands_pairwise = |n: usize| {
            self.operands.iter().zip(&narrower.operands).take(n).all(|(w, c)| word_covers(w, c))
        };
        let longs_named = |of: &ArgvPattern, by: &ArgvPattern| {
            of.long.iter().all(|p| by.long.iter().any(|c| word_covers(p, c)))
        };
        if self.rest {
            self.short.iter().all(|f| narrower.short.contains(f))
                && longs_named(self, narrower)
                && narrower.operands.len() >= self.operands.len()
                && operands_pairwise(self.operands.len())
        } else {
            !narrower.rest
                && self.short.len() == narrower.short.len()
                && self.short.iter().all(|f| narrower.short.contains(f))
                && self.long.len() == narrower.long.len()
                && longs_named(self, narrower)
                && narrower.long.iter().all(|c| self.long.iter().any(|p| word_covers(p, c)))
                && self.operands.len() == narrower.operands.len()
                && operands_pairwise(self.operands.len())
        }
    }

    /// Literal characters named: the more, the more specific (see [`crate::policy`]).
    pub fn specificity(&self) -> usize {
        let count = |w: &Word| {
            if w.literal { w.text.chars().count() } else { crate::pattern::specificity(&w.text) }
        };
        self.program.iter().map(count).sum::<usize>()
            + self.short.len()
            + self.long.iter().map(count).sum::<usize>()
            + self.operands.iter().map(count).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn matches(pattern: &str, line: &str) -> bool {
        ArgvPattern::parse(pattern).unwrap().matches(&argv(line))
    }

    #[test]
    fn quoting_round_trips() {
        for args in [
            vec!["git", "status"],
            vec!["sh", "-c", "git status; id"],
            vec!["echo", "it's", "", "a*b", "tab\there", "new\nline", "$(x)"],
        ] {
            let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
            assert_eq!(split(&quote(&args)).unwrap(), args, "{}", quote(&args));
        }
        assert!(split("'open").is_err());
    }

    #[test]
    fn programs_resolve_only_from_system_dirs() {
        assert!(matches("git status", "/usr/bin/git status"));
        assert!(matches("git status", "/bin/git status"));
        assert!(!matches("git status", "./git status"));
        assert!(!matches("git status", "/workspace/git status"));
        assert!(!matches("git status", "/usr/bin/../../workspace/git status"));
        assert!(matches("/usr/bin/git status", "/usr/bin/git status"));
        assert!(!matches("/usr/bin/git status", "git status"));
        // What "approve always" grants: the quoted argument list matches itself.
        let run: Vec<String> = ["/bin/sh", "-c", "echo it's *"].map(str::to_owned).to_vec();
        assert!(ArgvPattern::parse(&quote(&run)).unwrap().matches(&run));
    }

    #[test]
    fn an_allow_names_exactly_what_it_allows() {
        assert!(matches("git status", "git status"));
        assert!(!matches("git status", "git status --short"));
        assert!(matches("git status **", "git status --short"));
        assert!(!matches("git status **", "git -c core.pager=x status"));
        assert!(!matches("git status*", "git status x"));
        assert!(matches("git status*", "git statusX"), "a glob stays within one argument");
        assert!(!matches("git status **", "gitx status"));
        // A shell line is the program `sh`.
        assert!(!matches("git status **", "/bin/sh -c git status; id"));
        assert!(matches("sh -c *", "/bin/sh -c anything"));
        assert!(matches("*", "anything at all"));
    }

    #[test]
    fn a_deny_sees_through_flag_spelling() {
        for line in [
            "rm -rf x",
            "rm -r -f x",
            "rm -fr x",
            "rm  -rf x",
            "/bin/rm -rf x",
            "rm x -rf",
            "rm -f -- -r",
        ] {
            let hit = matches("rm -r **", line);
            assert_eq!(hit, !line.ends_with("-- -r"), "{line}");
        }
        assert!(!matches("rm -r **", "rm -Rf x"), "flags are case-sensitive: deny -R too");
        assert!(matches("rm -R **", "rm -Rf x"));
        assert!(matches("curl --output=* **", "curl --output=/tmp/x http://h"));
    }

    #[test]
    fn covers_is_sound() {
        let p = |s: &str| ArgvPattern::parse(s).unwrap();
        assert!(p("*").covers(&p("git status")));
        assert!(p("git **").covers(&p("git status **")));
        assert!(p("git status **").covers(&p("git status -s")));
        assert!(!p("git status").covers(&p("git status **")));
        assert!(!p("rm -f *").covers(&p("rm -f -r x")));
        assert!(!p("git status **").covers(&p("*")));
        assert!(!p("git *").covers(&p("git * **")));
        assert!(p("ls").covers(&p("'ls'")));
    }
}
