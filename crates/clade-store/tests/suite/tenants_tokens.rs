use clade_core::{AgentConfig, Handle, Tenant};
use clade_store::{Error, NewAgent};

use super::harness::backends;

#[tokio::test]
async fn default_tenant_exists_and_tenants_are_managed() {
    for h in backends().await {
        let names: Vec<_> = h
            .store
            .tenants()
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, ["default"], "{}", h.name);
        h.store.tenants().create("acme").await.unwrap();
        assert!(
            matches!(h.store.tenants().create("acme").await, Err(Error::TenantExists(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.tenants().create("Bad Name").await, Err(Error::InvalidInput(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.tenants().named("nope").await, Err(Error::TenantNotFound(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.tenants().delete("default").await, Err(Error::DefaultTenant)),
            "{}",
            h.name
        );
        // Reopening does not create a second default tenant.
        let again = h.reopen().await.unwrap();
        assert_eq!(again.tenants().list().await.unwrap().len(), 2, "{}", h.name);
    }
}

#[tokio::test]
async fn deleting_a_tenant_deletes_everything_it_owns() {
    for h in backends().await {
        let acme = h.store.tenants().create("acme").await.unwrap();
        let spec = NewAgent {
            handle: Handle::parse("a1").unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let agent = h.agents.create(acme.id, spec).await.unwrap();
        let ws = h.agents.workspace(&agent).unwrap();
        let (_, secret) = h
            .store
            .tokens(acme.id)
            .create("ci", &[clade_core::Scope::Admin], None, None)
            .await
            .unwrap();
        // A running execution of the tenant's, with a step: nothing of it may outlive it.
        let execution = clade_store::NewExecution {
            id: clade_core::ExecutionId::generate(h.store.now()),
            tenant: acme.id,
            agent: agent.id,
            kind: clade_core::ExecutionKind::CronFire,
            owner: clade_store::ExecutionOwner::Agent(agent.id),
            status: clade_core::ExecutionStatus::Running,
            input: "{}".into(),
        };
        h.store.start_execution(execution.clone()).await.unwrap();
        let step = clade_store::ExecutionStep { seq: 1, key: "fired".into(), data: "{}".into() };
        h.store.executions(acme.id).append_step(execution.id, step).await.unwrap();
        let ids = h.store.tenants().delete("acme").await.unwrap();
        assert!(h.store.system().open_executions(10).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.store.usage(acme.id).stored_bytes().await.unwrap(), 0, "{}", h.name);
        h.agents.remove_workspaces(&ids);
        assert_eq!(ids, vec![agent.id], "{}", h.name);
        assert!(!ws.exists(), "{}", h.name);
        assert!(matches!(h.store.authenticate(&secret).await, Err(Error::BadToken)), "{}", h.name);
        assert!(
            matches!(h.store.tenants().named("acme").await, Err(Error::TenantNotFound(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.store.tenants().delete("acme").await, Err(Error::TenantNotFound(_))),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn tokens_authenticate_until_revoked() {
    for h in backends().await {
        let default = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let acme = h.store.tenants().create("acme").await.unwrap();
        let (info, secret) = h
            .store
            .tokens(acme.id)
            .create("deploy", &[clade_core::Scope::Admin], None, None)
            .await
            .unwrap();
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
        assert!(h.store.tokens(default.id).list().await.unwrap().is_empty(), "{}", h.name);
        let listed = h.store.tokens(acme.id).list().await.unwrap();
        assert_eq!(listed, vec![info.clone()], "{}", h.name);
        // Another tenant cannot revoke it.
        assert!(matches!(
            h.store.tokens(default.id).revoke(info.id).await,
            Err(Error::TokenNotFound(_))
        ));
        h.store.tokens(acme.id).revoke(info.id).await.unwrap();
        assert!(matches!(h.store.authenticate(&secret).await, Err(Error::BadToken)), "{}", h.name);
        assert!(
            h.store.tokens(acme.id).list().await.unwrap()[0].revoked_at.is_some(),
            "{}",
            h.name
        );
        assert!(matches!(
            h.store.tokens(acme.id).revoke(info.id).await,
            Err(Error::TokenNotFound(_))
        ));
        assert!(
            h.store
                .tokens(acme.id)
                .create("", &[clade_core::Scope::Admin], None, None)
                .await
                .is_err(),
            "{}",
            h.name
        );
        // Scopes are stored and read back with the tenant; a token needs at least one.
        let (_, sender) = h
            .store
            .tokens(acme.id)
            .create("send", &[clade_core::Scope::Send], None, None)
            .await
            .unwrap();
        let (tenant, access) = h.store.authenticate_scoped(&sender).await.unwrap();
        assert_eq!(
            (tenant.id, access.scopes),
            (acme.id, vec![clade_core::Scope::Send]),
            "{}",
            h.name
        );
        assert_eq!(access.agents, None, "{}", h.name);
        assert!(
            h.store.tokens(acme.id).create("none", &[], None, None).await.is_err(),
            "{}",
            h.name
        );
    }
}

/// A token limited to some agents names them by id: it reaches those, never another tenant's
/// agent, never the admin scope, and not an agent made again under a deleted one's handle.
#[tokio::test]
async fn a_token_limited_to_agents_reaches_only_those() {
    use clade_core::Scope;
    for h in backends().await {
        let acme = h.store.tenants().create("acme").await.unwrap();
        let rival = h.store.tenants().create("rival").await.unwrap();
        let spec = |handle: &str| NewAgent {
            handle: Handle::parse(handle).unwrap(),
            display_name: None,
            config: AgentConfig::default(),
        };
        let ada = h.agents.create(acme.id, spec("ada")).await.unwrap();
        let bo = h.agents.create(acme.id, spec("bo")).await.unwrap();
        let theirs = h.agents.create(rival.id, spec("ada")).await.unwrap();

        let (info, secret) = h
            .store
            .tokens(acme.id)
            .create("bot", &[Scope::Operate], Some(&[ada.id]), None)
            .await
            .unwrap();
        assert_eq!(info.agents, Some(vec![ada.id]), "{}", h.name);
        let (tenant, access) = h.store.authenticate_scoped(&secret).await.unwrap();
        assert_eq!(tenant.id, acme.id, "{}", h.name);
        assert!(access.reaches(ada.id) && !access.reaches(bo.id), "{}", h.name);
        assert!(!access.whole_tenant(), "{}", h.name);
        assert_eq!(h.store.tokens(acme.id).list().await.unwrap()[0].agents, Some(vec![ada.id]));

        // Refused, and nothing stored: another tenant's agent, admin, an empty list.
        let refused = [
            h.store.tokens(acme.id).create("x", &[Scope::Read], Some(&[theirs.id]), None).await,
            h.store.tokens(acme.id).create("x", &[Scope::Admin], Some(&[ada.id]), None).await,
            h.store.tokens(acme.id).create("x", &[Scope::Read], Some(&[]), None).await,
        ];
        assert!(matches!(refused[0], Err(Error::AgentNotFound(_))), "{}", h.name);
        assert!(matches!(refused[1], Err(Error::InvalidInput(ref m)) if m.contains("admin")));
        assert!(matches!(refused[2], Err(Error::InvalidInput(_))), "{}", h.name);
        assert_eq!(h.store.tokens(acme.id).list().await.unwrap().len(), 1, "{}", h.name);

        // A new agent under a deleted one's handle is not reached.
        h.agents.delete(acme.id, "ada").await.unwrap();
        let again = h.agents.create(acme.id, spec("ada")).await.unwrap();
        let (_, access) = h.store.authenticate_scoped(&secret).await.unwrap();
        assert!(!access.reaches(again.id), "{}", h.name);
    }
}

/// A token made to expire works until then and is refused from then on, on both backends; an
/// expiry in the past is refused when the token is made, and listings show it.
#[tokio::test]
async fn a_token_stops_working_when_it_expires() {
    use std::sync::Arc;
    use std::time::Duration;
    for h in backends().await {
        let clock = Arc::new(clade_core::ManualClock::new(h.store.now()));
        let options = clade_store::StoreOptions {
            migrations: clade_store::Migrations::Apply,
            clock: clock.clone(),
            ..clade_store::StoreOptions::new(h.location.clone(), clade_store::Durability::Full)
        };
        drop(h.store);
        let store = clade_store::Store::open(options).await.unwrap();
        let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let soon = store.now().plus(Duration::from_secs(3600));
        let (info, secret) = store
            .tokens(tenant.id)
            .create("day", &[clade_core::Scope::Read], None, Some(soon))
            .await
            .unwrap();
        assert_eq!(info.expires_at, Some(soon), "{}", h.name);
        assert!(store.authenticate(&secret).await.is_ok(), "{}", h.name);
        let listed = store.tokens(tenant.id).list().await.unwrap();
        assert_eq!(listed.iter().find(|t| t.id == info.id).unwrap().expires_at, Some(soon));
        clock.advance(Duration::from_secs(3600));
        assert!(matches!(store.authenticate(&secret).await, Err(Error::BadToken)), "{}", h.name);
        let past = store.now();
        let refused = store
            .tokens(tenant.id)
            .create("old", &[clade_core::Scope::Read], None, Some(past))
            .await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{}", h.name);
    }
}
