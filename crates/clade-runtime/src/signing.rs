//! Webhook signatures, for the deliveries Clade sends and the requests its inbound hooks take:
//!
//! - **Clade's own:** `X-Clade-Signature: sha256=<hex>`, the HMAC-SHA256 of the body alone.
//! - **Standard Webhooks** (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix
//!   seconds) and `webhook-signature: v1,<base64>`, the HMAC-SHA256 of `id.timestamp.body`,
//!   so any of that specification's libraries verifies what Clade sends, and Clade what they
//!   sign. A secret `whsec_<base64>` is that specification's form: its key is the decoded
//!   bytes. Any other secret is its own key, as those libraries take raw bytes.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far a Standard Webhooks timestamp may be from the receiver's clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

const STANDARD_PREFIX: &str = "whsec_";
/// Signatures a `webhook-signature` may offer (several while a key rotates), and its length:
/// what a request without the secret can make the receiver compare.
const MAX_SIGNATURES: usize = 8;
const MAX_SIGNATURES_LEN: usize = 1024;

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the secret is empty, or `whsec_` followed by something that is not base64")]
    BadSecret,
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-timestamp {0:?} is not a number of seconds since 1970")]
    BadTimestamp(String),
    #[error(
        "webhook-timestamp is {0} s away from this server's clock (at most {TOLERANCE_SECS} s is taken): a replayed or delayed request, or a clock that is off"
    )]
    Stale(i64),
    #[error("no signature matches the body under this hook's secret")]
    NoMatch,
}

/// `sha256=<hex>`: HMAC-SHA256 (RFC 2104) of the body under `secret`.
pub fn clade_signature(secret: &[u8], body: &[u8]) -> String {
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => {
            format!("sha256={}", hex::encode(mac.chain_update(body).finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// Checks an `X-Clade-Signature` header against the body, in constant time.
pub fn verify_clade(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing("X-Clade-Signature"))?;
    let hex = header.trim().strip_prefix("sha256=").ok_or(SignatureError::NoMatch)?;
    let expected = hex::decode(hex).map_err(|_| SignatureError::NoMatch)?;
    let mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::BadSecret)?;
    mac.chain_update(body).verify_slice(&expected).map_err(|_| SignatureError::NoMatch)
}

/// A Standard Webhooks signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct StandardKey(Vec<u8>);

impl std::fmt::Debug for StandardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandardKey(..)")
    }
}

impl StandardKey {
    /// The key of `secret`: `whsec_<base64>` decoded, any other secret as it is.
    pub fn new(secret: &[u8]) -> Result<Self, SignatureError> {
        let key = match secret.strip_prefix(STANDARD_PREFIX.as_bytes()) {
            Some(encoded) => {
                let encoded: Vec<u8> = encoded.iter().copied().filter(|b| *b != b'=').collect();
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(encoded)
                    .map_err(|_| SignatureError::BadSecret)?
            }
            None => secret.to_vec(),
        };
        if key.is_empty() {
            return Err(SignatureError::BadSecret);
        }
        Ok(Self(key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Result<HmacSha256, SignatureError> {
        let mac = HmacSha256::new_from_slice(&self.0).map_err(|_| SignatureError::BadSecret)?;
        Ok(mac
            .chain_update(id.as_bytes())
            .chain_update(b".")
            .chain_update(timestamp)
            .chain_update(b".")
            .chain_update(body))
    }

    /// `v1,<base64>`: the `webhook-signature` of a message `id` sent at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        match self.mac(id, &timestamp.to_string(), body) {
            Ok(mac) => format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ),
            Err(_) => String::new(),
        }
    }

    /// Checks the three headers against the body: the timestamp within [`TOLERANCE_SECS`] of
    /// `now` (Unix seconds), and any one of the space-separated `v1` signatures matching, in
    /// constant time.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let id = id.ok_or(SignatureError::Missing("webhook-id"))?;
        let timestamp = timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
        let signatures = signatures.ok_or(SignatureError::Missing("webhook-signature"))?;
        let at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp(timestamp.chars().take(32).collect()))?;
        let off = now.saturating_sub(at);
        if off.saturating_abs() > TOLERANCE_SECS {
            return Err(SignatureError::Stale(off));
        }
        if signatures.len() > MAX_SIGNATURES_LEN {
            return Err(SignatureError::NoMatch);
        }
        // The body is hashed once, whatever the number of candidates: each costs a clone of
        // the hashed state and a constant-time comparison.
        let hashed = self.mac(id, timestamp.trim(), body)?;
        for signature in signatures.split(' ').take(MAX_SIGNATURES) {
            let Some(("v1", encoded)) = signature.split_once(',') else { continue };
            let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                continue;
            };
            if hashed.clone().verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_vectors_as_clade_signatures() {
        assert_eq!(
            clade_signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            clade_signature(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let body = b"{}";
        let header = clade_signature(b"k", body);
        assert_eq!(verify_clade(b"k", body, Some(&header)), Ok(()));
        assert_eq!(verify_clade(b"other", body, Some(&header)), Err(SignatureError::NoMatch));
        assert_eq!(verify_clade(b"k", b"{ }", Some(&header)), Err(SignatureError::NoMatch));
        assert_eq!(
            verify_clade(b"k", body, None),
            Err(SignatureError::Missing("X-Clade-Signature"))
        );
        assert_eq!(verify_clade(b"k", body, Some("sha256=zz")), Err(SignatureError::NoMatch));
    }

    /// The specification's own example (its reference libraries' test vector).
    #[test]
    fn the_standard_webhooks_example_signs_and_verifies() {
        let key = StandardKey::new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let signature = key.sign(id, 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let verify =
            |ts: &str, sig: &str, now: i64| key.verify(Some(id), Some(ts), Some(sig), body, now);
        assert_eq!(verify("1614265330", &signature, 1614265330 + 10), Ok(()));
        // Among others, and after an unknown version.
        assert_eq!(
            verify("1614265330", &format!("v2,abc v1,AAAA {signature}"), 1614265330),
            Ok(())
        );
        assert_eq!(
            verify("1614265330", &signature, 1614265330 + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify("1614265330", &signature, 1614265330 - 400),
            Err(SignatureError::Stale(-400))
        );
        assert_eq!(verify("1614265331", &signature, 1614265330), Err(SignatureError::NoMatch));
        assert!(matches!(
            verify("soon", &signature, 1614265330),
            Err(SignatureError::BadTimestamp(_))
        ));
        assert_eq!(verify("1614265330", "v1,!!!", 1614265330), Err(SignatureError::NoMatch));
        // At most 8 candidates, in at most 1 KiB: a stranger cannot make it compare more.
        let many = |n: usize| format!("{}{signature}", "v1,AAAA ".repeat(n));
        assert_eq!(verify("1614265330", &many(7), 1614265330), Ok(()));
        assert_eq!(verify("1614265330", &many(8), 1614265330), Err(SignatureError::NoMatch));
        let long = format!("v1,{} {signature}", "A".repeat(1024));
        assert_eq!(verify("1614265330", &long, 1614265330), Err(SignatureError::NoMatch));
        assert_eq!(
            key.verify(None, Some("1"), Some(&signature), body, 1),
            Err(SignatureError::Missing("webhook-id"))
        );
        // A raw secret is its own key; a malformed `whsec_` secret is refused.
        assert_ne!(StandardKey::new(b"raw").unwrap(), key);
        assert_eq!(StandardKey::new(b"whsec_***"), Err(SignatureError::BadSecret));
        assert_eq!(StandardKey::new(b""), Err(SignatureError::BadSecret));
    }
}
