//! Removing granted secret values from what a tool returns, the audit log and errors: the value
//! itself and its common encodings (reversed, hex, base64 at any alignment and URL-safe,
//! percent-encoded).
//!
//! A value or encoded form split across lines (`fold -w 4`, `base64 -w 8`) is found too: the
//! output is searched once more with its line breaks taken out.
//!
//! What it cannot catch, and the docs say so: a value split otherwise (`xxd`'s columns, spaces
//! between characters, separate calls), transformed otherwise (one character at a time, ROT13, compressed,
//! encrypted), or leaked through a side channel (the command's exit code, timing, a file it
//! writes into the workspace for a later call). Redaction is a net for accidents, not a
//! boundary: a command that holds a secret can always exfiltrate it to where it has access.

use base64::Engine as _;

/// Shortest secret that is redacted (shorter ones would erase ordinary text).
const MIN_SECRET: usize = 4;
/// Shortest encoded form searched for: a shorter base64 core matches ordinary text by chance.
const MIN_FORM: usize = 6;
/// Shortest form searched for across line breaks: joining lines makes chance matches likelier.
const MIN_SPLIT_FORM: usize = 8;

/// The forms of a set of secret values to replace.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a form is replaced before a shorter one inside it.
    forms: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms = Vec::new();
        for secret in secrets.into_iter().filter(|s| s.len() >= MIN_SECRET) {
            forms.push(secret.to_owned());
            forms.push(secret.chars().rev().collect());
            // An encoded form may be shorter than the value (a base64 core): too short, it
            // would match ordinary text.
            forms.extend(encodings(secret).into_iter().filter(|f| f.len() >= MIN_FORM));
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Self { forms }
    }

    /// `text` with every form of every secret replaced by `[secret]`, whole or broken over
    /// lines (then the line breaks it spanned follow the marker, so lines stay lines).
    pub fn redact(&self, text: &str) -> String {
        let whole = self
            .forms
            .iter()
            .fold(text.to_owned(), |acc, form| acc.replace(form.as_str(), "[secret]"));
        if whole.contains(['\n', '\r']) { self.redact_across_lines(&whole) } else { whole }
    }

    fn redact_across_lines(&self, text: &str) -> String {
        // The text without its line breaks, and where each of its bytes was.
        let mut joined = String::with_capacity(text.len());
        let mut origin = Vec::with_capacity(text.len());
        for (at, ch) in text.char_indices() {
            if ch != '\n' && ch != '\r' {
                joined.push(ch);
                origin.extend(at..at + ch.len_utf8());
            }
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for form in self.forms.iter().filter(|f| f.len() >= MIN_SPLIT_FORM) {
            for (at, _) in joined.match_indices(form.as_str()) {
                spans.push((origin[at], origin[at + form.len() - 1] + 1));
            }
        }
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for (start, end) in spans {
            if start < copied {
                // Overlaps the span before: extend it.
                if end > copied {
                    out.extend(text[copied..end].chars().filter(|c| *c == '\n'));
                    copied = end;
                }
                continue;
            }
            out.push_str(&text[copied..start]);
            out.push_str("[secret]");
            out.extend(text[start..end].chars().filter(|c| *c == '\n'));
            copied = end;
        }
        out.push_str(&text[copied..]);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }
}

fn encodings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![hex::encode(bytes)];
    forms.push(hex::encode_upper(bytes));
    let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    if encoded != secret {
        forms.push(encoded.replace("%20", "+"));
        forms.push(encoded);
    }
    // Base64 of a longer text holds the secret at one of three alignments: for each, the
    // characters that depend only on the secret's bytes.
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&padded);
        let first = (4 * offset).div_ceil(3);
        let last = (8 * (offset + bytes.len())).saturating_sub(6) / 6;
        if last + 1 > first && last < text.len() {
            let core = &text[first..=last];
            forms.push(core.to_owned());
            let url_safe = core.replace('+', "-").replace('/', "_");
            if url_safe != core {
                forms.push(url_safe);
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_and_its_common_encodings_are_removed() {
        let secret = "sk-live-4f9a8b7c6d5e";
        let redactor = Redactor::new([secret]);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases = [
            secret.to_owned(),
            secret.chars().rev().collect(),
            hex::encode(secret),
            hex::encode_upper(secret),
            b64(secret),
            b64(&format!("{secret}\n")),
            b64(&format!("x{secret}")),
            b64(&format!("KEY={secret}\n")),
            base64::engine::general_purpose::URL_SAFE.encode(format!("ab{secret}")),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ];
        for leaked in cases {
            let text = format!("output: {leaked} end");
            let clean = redactor.redact(&text);
            assert!(clean.contains("[secret]"), "{leaked} in {clean}");
            // Nothing of the value is left that would give more than a couple of characters.
            assert!(
                !clean.contains(&leaked[2..leaked.len().saturating_sub(2)]),
                "{leaked} → {clean}"
            );
        }
        assert_eq!(redactor.redact("nothing secret here"), "nothing secret here");
        assert_eq!(redactor.redact("two\nlines\r\n"), "two\nlines\r\n");
        assert!(Redactor::new(["abc"]).is_empty(), "too short to redact");
    }

    /// `fold -w 4` of the value, `base64 -w 8` of a line holding it, CRLF breaks: each is
    /// caught, the lines around it are kept, and the breaks it spanned stay.
    #[test]
    fn a_value_broken_over_lines_is_removed() {
        let secret = "sk-live-4f9a8b7c6d5e";
        let redactor = Redactor::new([secret]);
        let wrap = |text: &str, width: usize, br: &str| {
            let chars: Vec<char> = text.chars().collect();
            chars.chunks(width).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(br)
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("KEY={secret}\n"));
        for (leaked, core) in [
            (wrap(secret, 4, "\n"), "4f9a"),
            (wrap(secret, 3, "\r\n"), "8b7"),
            (wrap(&b64, 8, "\n"), &b64[10..14]),
        ] {
            let text = format!("before\n{leaked}\nafter");
            let clean = redactor.redact(&text);
            assert!(clean.starts_with("before\n") && clean.ends_with("\nafter"), "{clean}");
            assert!(clean.contains("[secret]") && !clean.contains(core), "{leaked:?} → {clean:?}");
            assert_eq!(clean.matches('\n').count(), text.matches('\n').count(), "{clean:?}");
        }
    }

    #[test]
    fn short_values_are_not_looked_for_across_lines() {
        // Whole, a five-byte value goes; broken over lines it would match prose by chance.
        let redactor = Redactor::new(["hello"]);
        assert_eq!(redactor.redact("say hello"), "say [secret]");
        assert_eq!(redactor.redact("he\nllo"), "he\nllo");
    }
}
