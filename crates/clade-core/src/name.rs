//! User-chosen names: agent and tenant handles, secret names, template names.
//!
//! Each is validated once, at the edge, so the rest of the code can take them as given.

use std::fmt;

/// A name did not follow its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {rule}")]
pub struct Error {
    kind: &'static str,
    input: String,
    rule: &'static str,
}

fn check(
    kind: &'static str,
    rule: &'static str,
    input: &str,
    max_len: usize,
    allowed: fn(u8) -> bool,
    first: fn(u8) -> bool,
) -> Result<String, Error> {
    let ok = input.bytes().next().is_some_and(first)
        && input.len() <= max_len
        && input.bytes().all(allowed);
    if ok { Ok(input.to_owned()) } else { Err(Error { kind, input: input.to_owned(), rule }) }
}

macro_rules! define_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:literal, $max:literal, $allowed:expr, $first:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `input`; the error says which rule it broke.
            pub fn parse(input: &str) -> Result<Self, Error> {
                check($kind, $rule, input, $max, $allowed, $first).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

impl Handle {
    /// A handle read back from storage, under the rules it was stored with: before handles had
    /// to start with a letter or digit, `-x` was accepted, and such rows must stay readable.
    pub fn from_stored(input: &str) -> Result<Self, Error> {
        check("handle", HANDLE_RULE, input, 64, handle_byte, handle_byte).map(Self)
    }
}

impl TemplateName {
    /// The built-in template every agent gets unless another is named.
    pub fn builtin_default() -> Self {
        Self(crate::agent::AgentConfig::DEFAULT_TEMPLATE.to_owned())
    }
}

fn handle_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// A handle never starts with `-` (a command line would read it as a flag) or `_`.
fn handle_first_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A handle as a regular expression, for schemas that describe one (the OpenAPI document).
pub const HANDLE_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

const HANDLE_RULE: &str =
    "use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit";

fn secret_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

define_name!(
    /// The name of an agent or tenant: 1–64 lowercase letters, digits, `-` or `_`; unique per
    /// tenant (agents) or per deployment (tenants).
    Handle,
    "handle",
    "use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit",
    64,
    handle_byte,
    handle_first_byte
);
define_name!(
    /// The name of a secret: 1–128 ASCII letters, digits, `-`, `_` or `.` (e.g. `OPENAI_API_KEY`).
    SecretName,
    "secret name",
    "use 1-128 ASCII letters, digits, '-', '_' or '.'",
    128,
    secret_byte,
    secret_byte
);
define_name!(
    /// The name of a persona template: same rules as a handle.
    TemplateName,
    "template name",
    "use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit",
    64,
    handle_byte,
    handle_first_byte
);

/// Characters that make a name display as something it is not: control characters, and the
/// invisible format characters of Unicode (bidirectional overrides and isolates, zero-width
/// spaces and joiners, the byte-order mark). Names shown in listings refuse them.
/// The characters [`is_spoofing_char`] refuses, as a regular expression's negated class.
macro_rules! no_spoofing_char {
    () => {
        "[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]"
    };
}

/// A label shown in listings (an event source's platform, channel or actor) as a regular
/// expression: 1–256 characters, none of them [`is_spoofing_char`].
pub const LABEL_PATTERN: &str = concat!("^", no_spoofing_char!(), "{1,256}$");

/// A display name's characters as a regular expression: 1–200 ([`crate::agent::MAX_DISPLAY_NAME_LEN`]),
/// none of them [`is_spoofing_char`]; it must also not be blank ([`NOT_BLANK_PATTERN`]).
pub const DISPLAY_NAME_PATTERN: &str = concat!("^", no_spoofing_char!(), "{1,200}$");

/// Text with something in it as a regular expression: at least one character that is not
/// Unicode whitespace (the `White_Space` set `str::trim` removes), spelled out so that every
/// regex engine reads it alike.
pub const NOT_BLANK_PATTERN: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

pub fn is_spoofing_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// An agent setting's key as a regular expression (the API's schema).
pub const SETTING_KEY_PATTERN: &str = "^[a-z][a-z0-9._-]{0,63}$";

/// Whether `key` may name an agent's setting: 1-64 of `a-z`, `0-9`, `.`, `_` and `-`,
/// starting with a letter ([`SETTING_KEY_PATTERN`]).
pub fn is_setting_key(key: &str) -> bool {
    key.len() <= 64
        && key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_follow_the_rules() {
        for good in ["a", "my-agent_2", &"x".repeat(64)] {
            assert!(Handle::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Upper", "has space", "dot.ted", "é", &"x".repeat(65), "../x", "-rf", "_x"]
        {
            let err = Handle::parse(bad).unwrap_err();
            assert!(err.to_string().contains("use 1-64 lowercase"), "{bad}: {err}");
        }
    }

    #[test]
    fn stored_handles_keep_the_rules_they_were_made_with() {
        assert_eq!(Handle::from_stored("-old").unwrap().as_str(), "-old");
        assert!(Handle::from_stored("Upper").is_err());
    }

    #[test]
    fn spoofing_characters_are_named() {
        for bad in ['\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{061c}', '\u{7}', '\u{7f}'] {
            assert!(is_spoofing_char(bad), "{bad:?}");
        }
        for good in ['a', 'é', '中', ' ', '-', '\u{1f600}'] {
            assert!(!is_spoofing_char(good), "{good:?}");
        }
    }

    #[test]
    fn secret_names_allow_env_style() {
        assert!(SecretName::parse("OPENAI_API_KEY").is_ok());
        assert!(SecretName::parse("a/b").is_err());
    }
}
