//! Operators' pauses on both backends: stored once, audited, scoped to the tenant's own agent
//! and session, listed with what the agent has in flight, lifted, and gone with the agent.

use clade_core::AuditKind;

use super::harness::{accept, backends, tenant_and_agent};

#[tokio::test]
async fn pauses_hold_per_agent_and_session_and_status_shows_what_waits() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let desk = accept(&h.store, &tenant, &ada, "desk").await.session_id;
        accept(&h.store, &tenant, &ada, "desk").await;
        let hall = accept(&h.store, &tenant, &ada, "hall").await.session_id;
        let bo_session = accept(&h.store, &tenant, &bo, "desk").await.session_id;

        let paused =
            h.store.pauses(tenant.id).pause(ada.id, None, Some("upgrade".into())).await.unwrap();
        let again =
            h.store.pauses(tenant.id).pause(ada.id, None, Some("other".into())).await.unwrap();
        assert_eq!(again.reason.as_deref(), Some("upgrade"), "{}: paused twice", h.name);
        assert_eq!(again.target(), paused.target(), "{}", h.name);
        h.store.pauses(tenant.id).pause(ada.id, Some(hall), None).await.unwrap();
        // A session of another agent, or an agent of another tenant, is refused as missing.
        let err =
            h.store.pauses(tenant.id).pause(ada.id, Some(bo_session), None).await.unwrap_err();
        assert!(matches!(err, clade_store::Error::SessionNotFound(_)), "{}: {err}", h.name);
        let rival = h.store.tenants().create("rival").await.unwrap();
        let err = h.store.pauses(rival.id).pause(ada.id, None, None).await.unwrap_err();
        assert!(matches!(err, clade_store::Error::AgentNotFound(_)), "{}: {err}", h.name);
        assert!(h.store.tenant_scope(rival.id).pauses().of_agent(ada.id).await.unwrap().is_empty());
        assert_eq!(h.store.all_pauses().await.unwrap().len(), 2, "{}", h.name);

        let status = h.store.pauses(tenant.id).agent_status(ada.id, 10).await.unwrap();
        let of = |id| status.iter().find(|s| s.session == id).unwrap();
        assert_eq!((of(desk).open_events, of(desk).state()), (2, "waiting"), "{}", h.name);
        assert_eq!((of(hall).open_events, of(hall).state()), (1, "paused"), "{}", h.name);
        assert!(of(desk).turn.is_none(), "{}", h.name);

        assert!(h.store.pauses(tenant.id).unpause(ada.id, None).await.unwrap(), "{}", h.name);
        assert!(!h.store.pauses(tenant.id).unpause(ada.id, None).await.unwrap(), "{}", h.name);
        let left = h.store.pauses(tenant.id).of_agent(ada.id).await.unwrap();
        assert_eq!(left.iter().map(|p| p.session).collect::<Vec<_>>(), [Some(hall)], "{}", h.name);
        let filter = clade_store::AuditFilter {
            agent: None,
            tool: None,
            since: None,
            until: None,
            after: None,
            limit: 1000,
        };
        let audit = h.store.access(tenant.id).audit_records(&filter).await.unwrap();
        let count = |kind: AuditKind| audit.iter().filter(|r| r.kind == kind.as_str()).count();
        assert_eq!(count(AuditKind::ExecutionsPaused), 2, "{}", h.name);
        assert_eq!(count(AuditKind::ExecutionsResumed), 1, "{}", h.name);

        h.agents.delete(tenant.id, "ada").await.unwrap();
        assert!(h.store.all_pauses().await.unwrap().is_empty(), "{}", h.name);
    }
}
