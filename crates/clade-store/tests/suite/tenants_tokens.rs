use clade_core::{AgentConfig, Handle, Tenant};
use clade_store::{Error, NewAgent};

use super::harness::backends;

#[tokio::test]
async fn default_tenant_exists_and_tenants_are_managed() {
    for h in backends().await {
        let names: Vec<_> =
            h.store.tenants().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, ["default"], "{}", h.name);
        h.store.create_tenant("acme").await.unwrap();
        assert!(
            matches!(h.store.create_tenant("acme").await, Err(Error::TenantExists(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.create_tenant("Bad Name").await, Err(Error::InvalidInput(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.tenant("nope").await, Err(Error::TenantNotFound(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.delete_tenant("default").await, Err(Error::DefaultTenant)),
            "{}",
            h.name
        );
        // Reopening does not create a second default tenant.
        let again = h.reopen().await.unwrap();
        assert_eq!(again.tenants().await.unwrap().len(), 2, "{}", h.name);
    }
}

#[tokio::test]
async fn deleting_a_tenant_deletes_everything_it_owns() {
    for h in backends().await {
        let acme = h.store.create_tenant("acme").await.unwrap();
        let spec = NewAgent {
            handle: Handle::parse("a1").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let agent = h.agents.create(acme.id, spec).await.unwrap();
        let ws = h.agents.workspace(&agent).unwrap();
        let (_, secret) =
            h.store.create_token(acme.id, "ci", &[clade_core::Scope::Admin]).await.unwrap();
        let ids = h.store.delete_tenant("acme").await.unwrap();
        h.agents.remove_workspaces(&ids);
        assert_eq!(ids, vec![agent.id], "{}", h.name);
        assert!(!ws.exists(), "{}", h.name);
        assert!(matches!(h.store.authenticate(&secret).await, Err(Error::BadToken)), "{}", h.name);
        assert!(
            matches!(h.store.tenant("acme").await, Err(Error::TenantNotFound(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.delete_tenant("acme").await, Err(Error::TenantNotFound(_))),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn tokens_authenticate_until_revoked() {
    for h in backends().await {
        let default = h.store.tenant(Tenant::DEFAULT_NAME).await.unwrap();
        let acme = h.store.create_tenant("acme").await.unwrap();
        let (info, secret) =
            h.store.create_token(acme.id, "deploy", &[clade_core::Scope::Admin]).await.unwrap();
        assert!(secret.starts_with("clade_") && secret.len() == 70, "{secret}");
        assert_eq!(h.store.authenticate(&secret).await.unwrap().id, acme.id, "{}", h.name);
        for bad in ["", "clade_", "Bearer x", &secret[..secret.len() - 1], &format!("{secret}0")] {
            assert!(
                matches!(h.store.authenticate(bad).await, Err(Error::BadToken)),
                "{}: {bad}",
                h.name
            );
        }
        // Listing is per tenant and never shows the secret.
        assert!(h.store.tokens(default.id).await.unwrap().is_empty(), "{}", h.name);
        let listed = h.store.tokens(acme.id).await.unwrap();
        assert_eq!(listed, vec![info.clone()], "{}", h.name);
        // Another tenant cannot revoke it.
        assert!(matches!(
            h.store.revoke_token(default.id, info.id).await,
            Err(Error::TokenNotFound(_))
        ));
        h.store.revoke_token(acme.id, info.id).await.unwrap();
        assert!(matches!(h.store.authenticate(&secret).await, Err(Error::BadToken)), "{}", h.name);
        assert!(h.store.tokens(acme.id).await.unwrap()[0].revoked_at.is_some(), "{}", h.name);
        assert!(matches!(
            h.store.revoke_token(acme.id, info.id).await,
            Err(Error::TokenNotFound(_))
        ));
        assert!(
            h.store.create_token(acme.id, "", &[clade_core::Scope::Admin]).await.is_err(),
            "{}",
            h.name
        );
        // Scopes are stored and read back with the tenant; a token needs at least one.
        let (_, sender) =
            h.store.create_token(acme.id, "send", &[clade_core::Scope::Send]).await.unwrap();
        let (tenant, scopes) = h.store.authenticate_scoped(&sender).await.unwrap();
        assert_eq!((tenant.id, scopes), (acme.id, vec![clade_core::Scope::Send]), "{}", h.name);
        assert!(h.store.create_token(acme.id, "none", &[]).await.is_err(), "{}", h.name);
    }
}
