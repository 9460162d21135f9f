use clade_core::{AgentConfig, Handle, SecretName, Tenant};
use clade_store::{Error, MasterKey, NewAgent, Secrets};

use super::harness::backends;

#[tokio::test]
async fn secrets_are_encrypted_listed_without_values_and_removed() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let spec = NewAgent {
            handle: Handle::parse("s").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let agent = h.agents.create(tenant.id, spec).await.unwrap();
        let secrets = Secrets::new(h.store.clone(), h.data_dir.master_key_path(), None);
        let name = SecretName::parse("API_KEY").unwrap();
        secrets.set(&agent, &name, b"sk-canary-123").await.unwrap();
        assert_eq!(secrets.get(&agent, &name).await.unwrap(), b"sk-canary-123", "{}", h.name);
        secrets.set(&agent, &name, b"sk-canary-456").await.unwrap();
        assert_eq!(secrets.get(&agent, &name).await.unwrap(), b"sk-canary-456", "{}", h.name);
        let listed = secrets.list(&agent).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, name);

        // The key file is private, and the stored value is not the plaintext.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(h.data_dir.master_key_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        if h.name == "sqlite" {
            let raw = std::fs::read(h.data_dir.sqlite_path()).unwrap();
            let wal = std::fs::read(h.data_dir.sqlite_path().with_extension("db-wal"))
                .unwrap_or_default();
            let needle = b"sk-canary";
            assert!(!raw.windows(needle.len()).any(|w| w == needle), "plaintext in db");
            assert!(!wal.windows(needle.len()).any(|w| w == needle), "plaintext in wal");
        }

        secrets.remove(&agent, &name).await.unwrap();
        assert!(
            matches!(secrets.get(&agent, &name).await, Err(Error::SecretNotFound(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(secrets.remove(&agent, &name).await, Err(Error::SecretNotFound(_))),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn missing_or_wrong_master_key_is_refused() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let spec = NewAgent {
            handle: Handle::parse("k").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let agent = h.agents.create(tenant.id, spec).await.unwrap();
        let key_path = h.data_dir.master_key_path();
        let secrets = Secrets::new(h.store.clone(), key_path.clone(), None);
        let name = SecretName::parse("TOKEN").unwrap();
        secrets.set(&agent, &name, b"v").await.unwrap();
        secrets.check().await.unwrap();

        let saved = std::fs::read_to_string(&key_path).unwrap();
        std::fs::remove_file(&key_path).unwrap();
        let err = secrets.check().await.unwrap_err();
        assert!(matches!(err, Error::MasterKeyMissing { secrets: 1, .. }), "{}: {err}", h.name);
        // Setting a new secret must not silently mint a new key while old secrets exist.
        assert!(matches!(
            secrets.set(&agent, &name, b"w").await,
            Err(Error::MasterKeyMissing { .. })
        ));
        assert!(!key_path.exists());

        let wrong =
            Secrets::new(h.store.clone(), key_path.clone(), Some(MasterKey::generate().to_hex()));
        assert!(matches!(wrong.check().await, Err(Error::WrongMasterKey { .. })), "{}", h.name);
        let malformed = Secrets::new(h.store.clone(), key_path.clone(), Some("not-hex".into()));
        assert!(matches!(malformed.check().await, Err(Error::BadMasterKey(_))), "{}", h.name);

        // The right key from the environment works without the file.
        let from_env =
            Secrets::new(h.store.clone(), key_path.clone(), Some(saved.trim().to_owned()));
        assert_eq!(from_env.get(&agent, &name).await.unwrap(), b"v", "{}", h.name);
    }
}
