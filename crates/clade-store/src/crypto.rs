//! Encryption of secrets at rest: AES-256-GCM under one master key per data dir.
//!
//! Each value gets a fresh random 96-bit nonce, and the ciphertext is bound to the agent and
//! secret name as associated data, so a stored value moved to another row fails to decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The 256-bit key all secrets of a deployment are encrypted with.
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
    }
}

/// A value as stored: nonce and ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        #[allow(clippy::disallowed_methods)] // A secret: the OS's generator, never a seed.
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Parses 64 hex characters (the key file's and `CLADE_MASTER_KEY`'s format).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| Error::BadMasterKey("expected 64 hexadecimal characters".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::BadMasterKey("expected 64 hexadecimal characters".into()))?;
        Ok(Self(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short public value that identifies the key without revealing it, stored so a wrong
    /// key is caught before anything is encrypted with it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new().chain_update(b"clade master key check v1").chain_update(self.0);
        hex::encode(&digest.finalize()[..8])
    }

    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Sealed> {
        let cipher = self.cipher()?;
        let mut nonce = [0u8; 12];
        #[allow(clippy::disallowed_methods)] // A nonce: the OS's generator, never a seed.
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: context })
            .map_err(|_| Error::BadMasterKey("encryption failed".into()))?;
        Ok(Sealed { nonce: nonce.to_vec(), ciphertext })
    }

    /// `name` is only used in the error.
    pub fn open(&self, context: &[u8], sealed: &Sealed, name: &str) -> Result<Vec<u8>> {
        let cipher = self.cipher()?;
        let nonce: [u8; 12] =
            sealed.nonce.as_slice().try_into().map_err(|_| Error::Decrypt(name.to_owned()))?;
        cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: &sealed.ciphertext, aad: context })
            .map_err(|_| Error::Decrypt(name.to_owned()))
    }

    fn cipher(&self) -> Result<Aes256Gcm> {
        Aes256Gcm::new_from_slice(&self.0).map_err(|_| Error::BadMasterKey("bad key length".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_context() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"agent-1/API_KEY", b"s3cret").unwrap();
        assert_ne!(sealed.ciphertext, b"s3cret");
        assert_eq!(key.open(b"agent-1/API_KEY", &sealed, "API_KEY").unwrap(), b"s3cret");
        assert!(key.open(b"agent-2/API_KEY", &sealed, "API_KEY").is_err());
        assert!(MasterKey::generate().open(b"agent-1/API_KEY", &sealed, "API_KEY").is_err());
    }

    #[test]
    fn tampering_is_detected() {
        let key = MasterKey::generate();
        let mut sealed = key.seal(b"c", b"value").unwrap();
        sealed.ciphertext[0] ^= 1;
        assert!(matches!(key.open(b"c", &sealed, "x"), Err(Error::Decrypt(_))));
    }

    #[test]
    fn hex_round_trip_and_bad_input() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::from_hex(&key.to_hex()).unwrap().fingerprint(), key.fingerprint());
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
