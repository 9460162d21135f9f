//! Leases to paired components on both backends: granted within the tenant's own agents and
//! sessions, bounded, listed per tenant, ended when revoked, expired, or when their agent or
//! component goes, each grant and end audited; another tenant's ids lease nothing.

use std::time::Duration;

use clade_core::AuditKind;
use clade_store::Error;
use clade_store::peer_leases::LeaseScope;

use super::harness::{accept, backends, tenant_and_agent};

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn leases_are_granted_within_a_tenant_and_end_for_every_stated_reason() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let store = h.store.acting_as("test operator");
        let rival = store.tenants().create("rival").await.unwrap();
        store
            .peers()
            .record(clade_store::NewPeer {
                kind: "subscriber".into(),
                name: "hooks".into(),
                endpoint: "http://127.0.0.1:1/".into(),
                key: "key".into(),
                agents: vec!["default/*".into()],
                leased: true,
                token: None,
            })
            .await
            .unwrap();
        let session = accept(&store, &tenant, &ada, "c1").await.session_id;
        let other = accept(&store, &tenant, &ada, "c2").await.session_id;

        let on_session = store
            .leases(tenant.id)
            .grant("subscriber", "hooks", LeaseScope::Session(session), DAY)
            .await
            .unwrap();
        assert_eq!(on_session.granted_by, "test operator");
        let on_bo = store
            .leases(tenant.id)
            .grant("subscriber", "hooks", LeaseScope::Agent(bo.id), DAY)
            .await
            .unwrap();
        let whole = store
            .leases(tenant.id)
            .grant("subscriber", "hooks", LeaseScope::Tenant, DAY)
            .await
            .unwrap();

        // What a lease covers: its scope, its tenant, and events from its grant on.
        let later = on_session.granted_at.plus(Duration::from_secs(1));
        assert!(on_session.covers(tenant.id, Some(ada.id), Some(session), later));
        assert!(!on_session.covers(tenant.id, Some(ada.id), Some(other), later));
        assert!(!on_session.covers(rival.id, Some(ada.id), Some(session), later));
        let before = clade_core::Timestamp::from_millis(on_session.granted_at.as_millis() - 1);
        assert!(!on_session.covers(tenant.id, Some(ada.id), Some(session), before));
        assert!(on_bo.covers(tenant.id, Some(bo.id), None, later));
        assert!(!on_bo.covers(tenant.id, Some(ada.id), Some(session), later));
        assert!(whole.covers(tenant.id, None, None, later));

        // Bad leases change nothing.
        for ttl in [Duration::ZERO, Duration::from_secs(31 * 86_400)] {
            let err =
                store.leases(tenant.id).grant("subscriber", "hooks", LeaseScope::Tenant, ttl).await;
            assert!(matches!(err, Err(Error::InvalidLease(_))), "{}: {err:?}", h.name);
        }
        let err =
            store.leases(tenant.id).grant("subscriber", "nobody", LeaseScope::Tenant, DAY).await;
        assert!(matches!(err, Err(Error::PeerNotFound(_))), "{}: {err:?}", h.name);
        let err = store
            .leases(rival.id)
            .grant("subscriber", "hooks", LeaseScope::Agent(ada.id), DAY)
            .await;
        assert!(matches!(err, Err(Error::AgentNotFound(_))), "{}: {err:?}", h.name);
        let err = store
            .leases(rival.id)
            .grant("subscriber", "hooks", LeaseScope::Session(session), DAY)
            .await;
        assert!(matches!(err, Err(Error::SessionNotFound(_))), "{}: {err:?}", h.name);
        assert_eq!(store.leases(tenant.id).list(100).await.unwrap().len(), 3, "{}", h.name);
        assert!(store.leases(rival.id).list(100).await.unwrap().is_empty(), "{}", h.name);
        let err = store.leases(rival.id).get(whole.id).await;
        assert!(matches!(err, Err(Error::LeaseNotFound(_))), "{}: {err:?}", h.name);
        let err = store.leases(rival.id).end(whole.id, "revoked").await;
        assert!(matches!(err, Err(Error::LeaseNotFound(_))), "{}: {err:?}", h.name);

        // Revoked, expired, its agent deleted, its component unpaired.
        let ended = store.leases(tenant.id).end(whole.id, "revoked").await.unwrap();
        assert_eq!(ended.ended_why.as_deref(), Some("revoked"));
        assert!(!ended.live(store.now()));
        let again = store.leases(tenant.id).end(whole.id, "something else").await.unwrap();
        assert_eq!(again, ended, "{}", h.name);
        let short = store
            .leases(tenant.id)
            .grant("subscriber", "hooks", LeaseScope::Tenant, Duration::from_secs(1))
            .await
            .unwrap();
        // Once its second has passed, the short lease is no longer among the live ones.
        let live = clade_test_support::wait::polled(
            async || {
                let leases = store.peers().leases_of("subscriber", "hooks").await.unwrap();
                leases.into_iter().map(|l| l.id).collect::<Vec<_>>()
            },
            |live| !live.contains(&short.id),
        )
        .await;
        assert_eq!(live, [on_session.id, on_bo.id], "{}", h.name);
        assert_eq!(
            store.leases(tenant.id).get(short.id).await.unwrap().ended_why.as_deref(),
            Some("expired")
        );
        h.agents.delete(tenant.id, "bo").await.unwrap();
        assert_eq!(
            store.leases(tenant.id).get(on_bo.id).await.unwrap().ended_why.as_deref(),
            Some("agent deleted")
        );
        store.peers().remove("subscriber", "hooks").await.unwrap();
        assert_eq!(
            store.leases(tenant.id).get(on_session.id).await.unwrap().ended_why.as_deref(),
            Some("unpaired")
        );
        assert!(store.peers().leases_of("subscriber", "hooks").await.unwrap().is_empty());

        // Each grant audited, and each end that was not part of a deletion.
        let filter = clade_store::access::AuditFilter { limit: 1000, ..Default::default() };
        let audit = store.access(tenant.id).audit_records(&filter).await.unwrap();
        let count = |kind: AuditKind| audit.iter().filter(|r| r.kind == kind.as_str()).count();
        assert_eq!(count(AuditKind::LeaseGranted), 4, "{}", h.name);
        assert_eq!(count(AuditKind::LeaseEnded), 2, "{}", h.name);
        assert!(audit.iter().any(|r| r.kind == "lease.ended" && r.detail.contains("expired")));
    }
}
