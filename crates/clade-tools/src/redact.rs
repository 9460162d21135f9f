//! Removing granted secret values from what a tool returns, the audit log and errors: the value
//! itself and its common encodings (reversed, hex, base64 at any alignment and URL-safe,
//! percent-encoded).
//!
//! What it cannot catch, and the docs say so: a value split across lines or chunks (`xxd`,
//! `base64 -w 8`), transformed otherwise (one character at a time, ROT13, compressed,
//! encrypted), or leaked through a side channel (the command's exit code, timing, a file it
//! writes into the workspace for a later call). Redaction is a net for accidents, not a
//! boundary: a command that holds a secret can always exfiltrate it to where it has access.

use base64::Engine as _;

/// Shortest secret that is redacted (shorter ones would erase ordinary text).
const MIN_SECRET: usize = 4;
/// Shortest encoded form searched for: a shorter base64 core matches ordinary text by chance.
const MIN_FORM: usize = 6;

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

    /// `text` with every form of every secret replaced by `[secret]`.
    pub fn redact(&self, text: &str) -> String {
        self.forms.iter().fold(text.to_owned(), |acc, form| acc.replace(form.as_str(), "[secret]"))
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
        assert!(Redactor::new(["abc"]).is_empty(), "too short to redact");
    }
}
