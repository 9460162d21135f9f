//! Per-agent secrets: values encrypted with the master key before they reach the store.
//!
//! The master key comes from `CLADE_MASTER_KEY` (64 hex characters) or the key file
//! `<data-dir>/master.key` (mode 0600), created with the first secret. A fingerprint of the key
//! is kept in the store so a wrong key is refused instead of silently failing to decrypt.

use std::path::PathBuf;

use clade_core::{Agent, AgentId, SecretName};

use crate::crypto::MasterKey;
use crate::datadir::write_private_file;
use crate::error::{Error, Result};
use crate::store::{SecretInfo, Store};

const FINGERPRINT_KEY: &str = "master_key_fingerprint";

/// Encrypting access to agents' secrets.
#[derive(Clone)]
pub struct Secrets {
    store: Store,
    key_file: PathBuf,
    key_from_env: Option<String>,
}

impl Secrets {
    /// `key_from_env` is the value of `CLADE_MASTER_KEY`, if set; it takes precedence over the
    /// key file.
    pub fn new(store: Store, key_file: PathBuf, key_from_env: Option<String>) -> Self {
        Self { store, key_file, key_from_env }
    }

    pub async fn set(&self, agent: &Agent, name: &SecretName, value: &[u8]) -> Result<()> {
        let key = self.key(true).await?;
        let sealed = key.seal(&context(agent.id, name), value)?;
        self.store.put_sealed(agent.id, name, sealed).await
    }

    /// `value` sealed for `agent`'s secret `name` under the master key (made if this store has
    /// none yet), for a caller that writes it with other rows.
    pub(crate) async fn seal(
        &self,
        agent: AgentId,
        name: &SecretName,
        value: &[u8],
    ) -> Result<crate::crypto::Sealed> {
        let key = self.key(true).await?;
        key.seal(&context(agent, name), value)
    }

    pub async fn get(&self, agent: &Agent, name: &SecretName) -> Result<Vec<u8>> {
        let sealed = self.store.sealed(agent.id, name).await?;
        let key = self.key(false).await?;
        key.open(&context(agent.id, name), &sealed, name.as_str())
    }

    pub async fn list(&self, agent: &Agent) -> Result<Vec<SecretInfo>> {
        self.store.secret_rows().of_agent(agent.id).await
    }

    pub async fn remove(&self, agent: &Agent, name: &SecretName) -> Result<()> {
        self.store.secret_rows().delete(agent.id, name).await
    }

    /// Fails if secrets exist but the key to read them is missing or wrong; run at start-up so
    /// the problem is reported before anyone needs a secret.
    pub async fn check(&self) -> Result<()> {
        if self.store.secret_rows().count().await? > 0 {
            self.key(false).await?;
        }
        Ok(())
    }

    async fn key(&self, create: bool) -> Result<MasterKey> {
        let existing = match &self.key_from_env {
            Some(hex) => Some(MasterKey::from_hex(hex)?),
            None => match std::fs::read_to_string(&self.key_file) {
                Ok(text) => Some(MasterKey::from_hex(&text)?),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(Error::Io { action: "read", path: self.key_file.clone(), source });
                }
            },
        };
        let secrets = self.store.secret_rows().count().await?;
        let key = match existing {
            Some(key) => key,
            None if secrets == 0 && create => {
                let key = MasterKey::generate();
                write_private_file(&self.key_file, key.to_hex().as_bytes())?;
                key
            }
            None => return Err(Error::MasterKeyMissing { secrets, path: self.key_file.clone() }),
        };
        let fingerprint = key.fingerprint();
        if secrets > 0 {
            if self.store.meta().get(FINGERPRINT_KEY).await?.as_deref()
                != Some(fingerprint.as_str())
            {
                return Err(Error::WrongMasterKey { path: self.key_file.clone() });
            }
        } else if create {
            self.store.meta().set(FINGERPRINT_KEY, &fingerprint).await?;
        }
        Ok(key)
    }
}

/// Associated data binding a ciphertext to its agent and name.
fn context(agent: AgentId, name: &SecretName) -> Vec<u8> {
    format!("{agent}/{name}").into_bytes()
}
