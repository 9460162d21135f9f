//! Peer identities for pairing (`docs/specs/remote-tools.md` §8): an Ed25519 key pair kept in
//! a private file, what it signs, and checks of what others signed. Keys travel as base64url
//! (no padding) of their 32 bytes.

use std::path::Path;

use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a host signs to answer a pairing challenge: this, the challenge, the gateway's key.
pub const PAIR_HOST: &[u8] = b"clade.pair.v1/host\n";
/// What a gateway signs to confirm a pairing: this, the host's challenge, the host's key.
pub const PAIR_GATEWAY: &[u8] = b"clade.pair.v1/gateway\n";
/// What a host signs to prove itself on a manifest request: this and the challenge.
pub const HOST_PROOF: &[u8] = b"clade.host.v1\n";
/// What a gateway signs for each request: this, then method, path, time and body digest.
pub const REQUEST: &[u8] = b"clade.request.v1\n";

/// A key pair of one side.
pub struct Identity {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("public", &self.public()).finish()
    }
}

/// Why an identity could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the identity {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write the identity {path}: {message}")]
    Write { path: String, message: String },
}

impl Identity {
    /// The identity kept at `path`, made (and written, private) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => Ed25519KeyPair::from_pkcs8(&bytes).map(|pair| Self { pair }).map_err(
                |e| IdentityError::Read {
                    path: shown,
                    message: format!(
                        "not an Ed25519 key ({e}); move it away to make a new one, then pair again"
                    ),
                },
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let write = |message: String| IdentityError::Write { path: shown.clone(), message };
                let document =
                    Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                        .map_err(|e| write(e.to_string()))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| write(e.to_string()))?;
                }
                write_private(path, document.as_ref()).map_err(|e| write(e.to_string()))?;
                let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
                    .map_err(|e| write(e.to_string()))?;
                Ok(Self { pair })
            }
            Err(e) => Err(IdentityError::Read { path: shown, message: e.to_string() }),
        }
    }

    /// A new identity held in memory only (tests, a host that pairs once per run).
    pub fn ephemeral() -> Option<Self> {
        let document =
            Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).ok()?;
        Ed25519KeyPair::from_pkcs8(document.as_ref()).ok().map(|pair| Self { pair })
    }

    /// The public key, as it travels.
    pub fn public(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// A short form of the public key for people: its first 16 characters.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public())
    }

    /// `message`'s signature, as it travels.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.sign(&parts.concat()).as_ref())
    }
}

/// A key's first 16 characters.
pub fn fingerprint(key: &str) -> String {
    key.chars().take(16).collect()
}

/// Whether `signature` is `key`'s over the concatenated `parts`.
pub fn verify(key: &str, parts: &[&[u8]], signature: &str) -> bool {
    let (Ok(key), Ok(signature)) = (URL_SAFE_NO_PAD.decode(key), URL_SAFE_NO_PAD.decode(signature))
    else {
        return false;
    };
    key.len() == 32
        && UnparsedPublicKey::new(&ED25519, key).verify(&parts.concat(), &signature).is_ok()
}

/// The bytes of a key as it travels, if it is one.
pub fn key_bytes(key: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(key).ok().filter(|bytes| bytes.len() == 32)
}

/// 32 random bytes as they travel: a challenge.
pub fn challenge() -> String {
    let mut bytes = [0u8; 32];
    // A challenge must not be guessed: the OS's generator.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The text a request's signature covers after [`REQUEST`].
pub fn request_text(method: &str, path: &str, time_ms: i64, body: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(body));
    format!("{method}\n{path}\n{time_ms}\n{digest}").into_bytes()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_text() {
        let (Some(a), Some(b)) = (Identity::ephemeral(), Identity::ephemeral()) else {
            panic!("no key pair");
        };
        let signature = a.sign(&[PAIR_HOST, b"nonce"]);
        assert!(verify(&a.public(), &[PAIR_HOST, b"nonce"], &signature));
        assert!(!verify(&b.public(), &[PAIR_HOST, b"nonce"], &signature));
        assert!(!verify(&a.public(), &[PAIR_GATEWAY, b"nonce"], &signature));
        assert!(!verify("not a key", &[PAIR_HOST, b"nonce"], &signature));
        assert!(!verify(&a.public(), &[PAIR_HOST, b"nonce"], "garbage"));
        assert_ne!(challenge(), challenge());
    }

    #[test]
    fn an_identity_is_kept_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys").join("identity.key");
        let made = Identity::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        let read = Identity::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(made.public(), read.public());
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
        std::fs::write(&path, b"junk").unwrap_or_else(|e| panic!("{e}"));
        let error =
            Identity::load_or_create(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("not an Ed25519 key"), "{error}");
    }
}
