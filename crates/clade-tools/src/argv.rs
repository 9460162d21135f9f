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
//! Options are read as the program reads them, not as they are spelled:
//!
//! - for the programs in [`KNOWN`] (`rm`, `cp`, `mv`, `chmod`, `chown`, `chgrp`, `ln`), a long
//!   option is resolved as GNU getopt resolves it (any unambiguous prefix: `--rec`,
//!   `--recursiv`), and then stands for its short flag where it has one (`--recursive` is
//!   `-r`), and short flags that mean the same are one (`rm -R` is `rm -r`), in commands and
//!   in patterns alike;
//! - for any other program, a deny or ask rule's `--name` also matches every abbreviation of
//!   it (`--na`) and `--name=value`, while an allow rule's matches only what it names: an
//!   unknown spelling is never allowed by accident, and never slips past a deny.
//!
//! The single word `*` matches every command (as `*` does for other tools). A shell line
//! (`command`) runs as `/bin/sh -c <line>`: its program is `sh`, so no pattern for another
//! program ever matches it, and only a rule naming `sh` allows one.

/// A pattern or quoted line that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    #[error("unclosed {quote} in {text:?}")]
    Unclosed { quote: char, text: String },
    #[error("trailing \\ in {0:?}")]
    TrailingEscape(String),
    #[error("an argv pattern needs at least a program (or `*` for any command)")]
    Empty,
    #[error("`**` may only be the last word of {0:?}")]
    RestNotLast(String),
    #[error("{program} has no option {option:?}: its options are --{options}")]
    UnknownOption { program: &'static str, option: String, options: String },
    #[error("short flags {0:?} cannot hold `*`")]
    WildShort(String),
}

/// One word of a pattern or command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    /// Quoted in whole or in part: its `*` are literal.
    literal: bool,
}

/// Splits `text` into words the way a pattern is read: spaces separate, `'…'` and `"…"` quote
/// (no escapes inside single quotes; `\` escapes one character elsewhere).
fn words(text: &str) -> Result<Vec<Word>, ArgvError> {
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
                            None => return Err(unclosed(c, text)),
                        },
                        Some(other) => word.text.push(other),
                        None => return Err(unclosed(c, text)),
                    }
                }
            }
            '\\' => {
                let word = current.get_or_insert(Word { text: String::new(), literal: true });
                word.literal = true;
                match chars.next() {
                    Some(escaped) => word.text.push(escaped),
                    None => return Err(ArgvError::TrailingEscape(text.to_owned())),
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

fn unclosed(quote: char, text: &str) -> ArgvError {
    ArgvError::Unclosed { quote, text: text.to_owned() }
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
pub fn split(line: &str) -> Result<Vec<String>, ArgvError> {
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

/// A program whose options are known: its long options, each with the short flag it is (if
/// any), and short flags that mean the same as another (`R` is `r`).
pub struct Known {
    pub program: &'static str,
    pub longs: &'static [(&'static str, Option<char>)],
    pub same: &'static [(char, char)],
}

/// The programs whose options a rule reads as the program does (GNU coreutils' spellings).
pub const KNOWN: &[Known] = &[
    Known {
        program: "rm",
        longs: &[
            ("force", Some('f')),
            ("interactive", None),
            ("one-file-system", None),
            ("no-preserve-root", None),
            ("preserve-root", None),
            ("recursive", Some('r')),
            ("dir", Some('d')),
            ("verbose", Some('v')),
            ("help", None),
            ("version", None),
        ],
        same: &[('R', 'r')],
    },
    Known {
        program: "cp",
        longs: &[
            ("archive", Some('a')),
            ("attributes-only", None),
            ("backup", None),
            ("copy-contents", None),
            ("debug", None),
            ("dereference", Some('L')),
            ("force", Some('f')),
            ("interactive", Some('i')),
            ("link", Some('l')),
            ("no-clobber", Some('n')),
            ("no-dereference", Some('P')),
            ("no-preserve", None),
            ("no-target-directory", Some('T')),
            ("one-file-system", Some('x')),
            ("parents", None),
            ("preserve", None),
            ("recursive", Some('r')),
            ("reflink", None),
            ("remove-destination", None),
            ("sparse", None),
            ("strip-trailing-slashes", None),
            ("suffix", Some('S')),
            ("symbolic-link", Some('s')),
            ("target-directory", Some('t')),
            ("update", None),
            ("verbose", Some('v')),
            ("help", None),
            ("version", None),
        ],
        same: &[('R', 'r')],
    },
    Known {
        program: "mv",
        longs: &[
            ("backup", None),
            ("debug", None),
            ("exchange", None),
            ("force", Some('f')),
            ("interactive", Some('i')),
            ("no-clobber", Some('n')),
            ("no-copy", None),
            ("no-target-directory", Some('T')),
            ("strip-trailing-slashes", None),
            ("suffix", Some('S')),
            ("target-directory", Some('t')),
            ("update", None),
            ("verbose", Some('v')),
            ("context", Some('Z')),
            ("help", None),
            ("version", None),
        ],
        same: &[],
    },
    Known { program: "chmod", longs: MODE_AND_OWNER, same: &[] },
    Known { program: "chown", longs: MODE_AND_OWNER, same: &[] },
    Known { program: "chgrp", longs: MODE_AND_OWNER, same: &[] },
    Known {
        program: "ln",
        longs: &[
            ("backup", None),
            ("directory", Some('d')),
            ("force", Some('f')),
            ("interactive", Some('i')),
            ("logical", Some('L')),
            ("no-dereference", Some('n')),
            ("no-target-directory", Some('T')),
            ("physical", Some('P')),
            ("relative", Some('r')),
            ("symbolic", Some('s')),
            ("suffix", Some('S')),
            ("target-directory", Some('t')),
            ("verbose", Some('v')),
            ("help", None),
            ("version", None),
        ],
        same: &[],
    },
];

/// The options of `chmod`, `chown` and `chgrp` (one list: each lacks a few of the others', which
/// it then refuses itself).
const MODE_AND_OWNER: &[(&str, Option<char>)] = &[
    ("changes", Some('c')),
    ("dereference", None),
    ("no-dereference", Some('h')),
    ("from", None),
    ("no-preserve-root", None),
    ("preserve-root", None),
    ("quiet", Some('f')),
    ("silent", Some('f')),
    ("reference", None),
    ("recursive", Some('R')),
    ("verbose", Some('v')),
    ("help", None),
    ("version", None),
];

fn known(program: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.program == program)
}

/// A long option as the program reads it: `--name` or `--name=value` resolved by exact name
/// or unique prefix, then its short flag where it has one (`--target-directory=DIR` is
/// `-t DIR`: the flag, then its value as the next word). `None`: the program has no such
/// option (or the prefix is ambiguous), so it refuses the command.
enum Resolved<'a> {
    Short(char),
    ShortWithValue(char, &'a str),
    Long(String),
}

fn resolve_long<'a>(known: &Known, arg: &'a str) -> Option<Resolved<'a>> {
    let body = arg.strip_prefix("--")?;
    let (name, value) = match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    };
    let exact = known.longs.iter().find(|(long, _)| *long == name);
    let found = exact.or_else(|| {
        let mut prefixed = known.longs.iter().filter(|(long, _)| long.starts_with(name));
        let first = prefixed.next()?;
        // Two names for one flag (`--quiet`, `--silent`) are not an ambiguity.
        prefixed.all(|other| other.1.is_some() && other.1 == first.1).then_some(first)
    })?;
    Some(match (found.1, value) {
        (Some(short), None) => Resolved::Short(short),
        (Some(short), Some(value)) => Resolved::ShortWithValue(short, value),
        (None, Some(value)) => Resolved::Long(format!("--{}={value}", found.0)),
        (None, None) => Resolved::Long(format!("--{}", found.0)),
    })
}

fn same_flag(known: Option<&Known>, flag: char) -> char {
    known.and_then(|k| k.same.iter().find(|(alias, _)| *alias == flag)).map_or(flag, |(_, f)| *f)
}

/// A command's arguments, sorted the way patterns see them.
#[derive(Debug, Default)]
struct Parsed<'a> {
    short: Vec<char>,
    long: Vec<std::borrow::Cow<'a, str>>,
    operands: Vec<&'a str>,
}

impl Parsed<'_> {
    fn add_short(&mut self, flag: char) {
        if !self.short.contains(&flag) {
            self.short.push(flag);
        }
    }
}

fn parse_args<'a>(program: &str, args: &'a [String]) -> Parsed<'a> {
    let known = known(program);
    let mut parsed = Parsed::default();
    let mut operands_only = false;
    for arg in args {
        if operands_only {
            parsed.operands.push(arg);
        } else if arg == "--" {
            operands_only = true;
        } else if arg.starts_with("--") {
            match known.and_then(|k| resolve_long(k, arg)) {
                Some(Resolved::Short(flag)) => parsed.add_short(same_flag(known, flag)),
                Some(Resolved::ShortWithValue(flag, value)) => {
                    parsed.add_short(same_flag(known, flag));
                    parsed.operands.push(value);
                }
                Some(Resolved::Long(long)) => parsed.long.push(long.into()),
                None => parsed.long.push(arg.as_str().into()),
            }
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            for flag in cluster.chars() {
                parsed.add_short(same_flag(known, flag));
            }
        } else {
            parsed.operands.push(arg);
        }
    }
    parsed
}

/// Whether a deny or ask rule's long option `pattern` catches the command's `arg`: as
/// written, by its name before a `=value`, or as an abbreviation of it.
fn long_caught(pattern: &Word, arg: &str) -> bool {
    if word_matches(pattern, arg) {
        return true;
    }
    let name = arg.split_once('=').map_or(arg, |(name, _)| name);
    if word_matches(pattern, name) {
        return true;
    }
    let plain = pattern.literal || !pattern.text.contains('*');
    plain && name.len() > 2 && pattern.text.starts_with(name)
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
    pub fn parse(pattern: &str) -> Result<Self, ArgvError> {
        let mut words = words(pattern)?;
        if words.is_empty() {
            return Err(ArgvError::Empty);
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
        // A known program's options are read as it reads them ([`KNOWN`]).
        let known = program
            .as_ref()
            .filter(|p| p.literal || !p.text.contains('*'))
            .and_then(|p| known(program_name(&p.text)));
        let mut this =
            Self { program, short: Vec::new(), long: Vec::new(), operands: Vec::new(), rest };
        let add_short = |short: &mut Vec<char>, flag: char| {
            let flag = same_flag(known, flag);
            if !short.contains(&flag) {
                short.push(flag);
            }
        };
        for word in words {
            if !word.literal && word.text == "**" {
                return Err(ArgvError::RestNotLast(pattern.to_owned()));
            }
            if word.text.starts_with("--") && !word.literal {
                match known.filter(|_| !word.text.contains('*')) {
                    Some(k) => match resolve_long(k, &word.text) {
                        Some(Resolved::Short(flag)) => add_short(&mut this.short, flag),
                        Some(Resolved::ShortWithValue(flag, value)) => {
                            add_short(&mut this.short, flag);
                            this.operands.push(Word { text: value.to_owned(), literal: false });
                        }
                        Some(Resolved::Long(long)) => {
                            this.long.push(Word { text: long, literal: false })
                        }
                        None => {
                            return Err(ArgvError::UnknownOption {
                                program: k.program,
                                option: word.text.clone(),
                                options: k
                                    .longs
                                    .iter()
                                    .map(|(l, _)| *l)
                                    .collect::<Vec<_>>()
                                    .join(", --"),
                            });
                        }
                    },
                    None => this.long.push(word),
                }
            } else if let Some(cluster) =
                word.text.strip_prefix('-').filter(|c| !c.is_empty() && !word.literal)
            {
                if cluster.contains('*') {
                    return Err(ArgvError::WildShort(word.text.clone()));
                }
                for flag in cluster.chars() {
                    add_short(&mut this.short, flag);
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

    /// Whether the command `argv` matches, as an allow rule reads it: exactly the options it
    /// names.
    pub fn matches(&self, argv: &[String]) -> bool {
        self.matches_as(argv, false)
    }

    /// Whether the command `argv` matches, as a deny or ask rule reads it: an option of an
    /// unknown program is caught abbreviated or with a value too (see the module doc).
    pub fn catches(&self, argv: &[String]) -> bool {
        self.matches_as(argv, true)
    }

    fn matches_as(&self, argv: &[String], widely: bool) -> bool {
        let Some(program) = &self.program else { return true };
        let Some((argv0, args)) = argv.split_first() else { return false };
        // A program written as a path matches the path run; a bare name, the resolved name.
        let name = if program.text.contains('/') { argv0.as_str() } else { program_name(argv0) };
        if !word_matches(program, name) {
            return false;
        }
        let parsed = parse_args(program_name(argv0), args);
        let long_ok =
            |p: &Word, arg: &str| if widely { long_caught(p, arg) } else { word_matches(p, arg) };
        let shorts_ok = self.short.iter().all(|f| parsed.short.contains(f));
        let longs_ok = self.long.iter().all(|p| parsed.long.iter().any(|arg| long_ok(p, arg)));
        let operands_ok = parsed.operands.len() >= self.operands.len()
            && self.operands.iter().zip(&parsed.operands).all(|(p, arg)| word_matches(p, arg));
        if !(shorts_ok && longs_ok && operands_ok) {
            return false;
        }
        self.rest
            || (parsed.short.iter().all(|f| self.short.contains(f))
                && parsed.long.iter().all(|arg| self.long.iter().any(|p| long_ok(p, arg)))
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
        assert!(!matches("tar -r **", "tar -Rf x"), "flags are case-sensitive: deny -R too");
        assert!(matches("tar -R **", "tar -Rf x"));
        assert!(matches("rm -r **", "rm -Rf x"), "rm's -R is its -r");
        assert!(matches("curl --output=* **", "curl --output=/tmp/x http://h"));
    }

    fn catches(pattern: &str, line: &str) -> bool {
        ArgvPattern::parse(pattern).unwrap().catches(&argv(line))
    }

    #[test]
    fn a_known_programs_options_are_read_as_it_reads_them() {
        for deny in ["rm -r **", "rm -R **", "rm --recursive **", "rm --rec **"] {
            for line in [
                "rm -r victim",
                "rm -R victim",
                "rm -fR victim",
                "rm --recursive victim",
                "rm --recursiv victim",
                "rm --rec victim",
                "rm --r victim",
                "rm -f --re victim",
                "/usr/bin/rm --recursive --force victim",
            ] {
                assert!(catches(deny, line), "{deny} let {line} through");
                assert!(matches(deny, line), "{deny} as an allow missed {line}");
            }
            assert!(!catches(deny, "rm -f victim"), "{deny}");
            assert!(!catches(deny, "rm -- --recursive"), "{deny}: an operand after --");
        }
        // Two names of one flag are no ambiguity; a prefix of two flags is refused by rm, and
        // by the pattern parser.
        assert!(catches("chmod -f **", "chmod --qu 600 x"));
        assert!(catches("chmod -f **", "chmod --sil 600 x"));
        assert!(!catches("rm -v **", "rm --ver x"), "--verbose or --version: rm refuses it");
        let err = ArgvPattern::parse("rm --recurse **").unwrap_err().to_string();
        assert!(err.contains("rm has no option") && err.contains("--recursive"), "{err}");
        // A long option's `=value` is its short flag and then the value, as the program reads
        // it: a deny of `cp -t` catches `cp --target-directory=DIR` in every spelling.
        for line in [
            "cp -t /etc a",
            "cp --target-directory=/etc a",
            "cp --target=/etc a",
            "cp --target-directory /etc a",
            "cp -rt /etc a",
        ] {
            assert!(catches("cp -t **", line), "cp -t ** let {line} through");
            assert!(catches("cp --target-directory **", line), "{line}");
            assert!(catches("cp -t /etc **", line), "the value is the flag's operand: {line}");
        }
        assert!(!catches("cp -t /etc **", "cp --target-directory=/tmp a"));
        // An allow of a known flag takes its long spelling, and nothing wider.
        assert!(matches("rm -f *", "rm --force x"));
        assert!(!matches("rm -f *", "rm --force --recursive x"));
    }

    #[test]
    fn an_unknown_programs_long_options_are_caught_abbreviated_by_a_deny_only() {
        assert!(catches("tool --dangerous **", "tool --dang x"));
        assert!(catches("tool --dangerous **", "tool --dangerous=yes x"));
        assert!(catches("tool --dangerous **", "tool --d x"));
        assert!(!catches("tool --dangerous **", "tool -- --dang"));
        assert!(!catches("tool --dangerous **", "tool --dangerously x"));
        assert!(!matches("tool --dangerous **", "tool --dang x"), "an allow names exactly");
        assert!(!matches("tool --safe", "tool --saf"));
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
