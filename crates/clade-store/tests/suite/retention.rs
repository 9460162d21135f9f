//! Retention sweeps on both backends: old idle sessions go with everything they own, an open
//! one stays, what a policy does not name stays, and another tenant's records are untouched.

use clade_core::{StepKey, TurnStatus};
use clade_store::retention::Cutoffs;

use super::harness::{accept, backends, new_turn, tenant_and_agent};

#[tokio::test]
async fn a_sweep_deletes_old_idle_sessions_with_all_they_own_and_nothing_else() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        // A finished conversation: its event, a turn with two steps, lifecycle events.
        let done = accept(&h.store, &tenant, &ada, "done").await;
        let turn = new_turn(&h.store, &done, &tenant, &ada);
        let step = |iteration| clade_store::JournalEntry {
            step: StepKey::Model { iteration },
            data: "{}".into(),
        };
        let started = clade_protocol::LifecycleEvent::from(clade_protocol::TurnStarted {
            turn: turn.id.to_string(),
            agent: "ada".into(),
            events: vec![done.event_id.to_string()],
        });
        h.store
            .turns()
            .begin(
                &turn,
                vec![done.event_id],
                vec![clade_store::OutboxEvent::from(&started)],
                Some((step(0), None)),
                None,
            )
            .await
            .unwrap();
        h.store.turns().append_journal(&turn, step(1), Vec::new(), None, None).await.unwrap();
        let outcome = clade_store::TurnOutcome {
            status: TurnStatus::Completed,
            reply: Some("bye".into()),
            error: None,
            model: None,
        };
        h.store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
        // A conversation whose event still waits: kept, however old.
        let open = accept(&h.store, &tenant, &ada, "open").await;
        // Another tenant's finished-or-not records: never touched.
        let rival = h.store.tenants().create("rival").await.unwrap();
        let spec = clade_store::NewAgent {
            handle: clade_core::Handle::parse("bo").unwrap(),
            display_name: None,
            config: clade_core::AgentConfig::default(),
        };
        let bo = h.agents.create(rival.id, spec).await.unwrap();
        let theirs = accept(&h.store, &rival, &bo, "theirs").await;
        // A lease on the finished conversation, which ends with it.
        h.store
            .peers()
            .record(clade_store::NewPeer {
                kind: "subscriber".into(),
                name: "hooks".into(),
                endpoint: "http://127.0.0.1:1/".into(),
                key: "key".into(),
                agents: vec!["*".into()],
                leased: true,
                token: None,
            })
            .await
            .unwrap();
        let scope = clade_store::peer_leases::LeaseScope::Session(done.session_id);
        let day = std::time::Duration::from_secs(86_400);
        let lease =
            h.store.leases(tenant.id).grant("subscriber", "hooks", scope, day).await.unwrap();

        // Only what the policy names: here no session cutoff, so nothing goes.
        let later = clade_core::Timestamp::from_millis(h.store.now().as_millis() + 86_400_000);
        let kept =
            h.store.sweep(tenant.id, Cutoffs { dead_letters: Some(later), ..Cutoffs::default() });
        assert!(kept.await.unwrap().is_empty(), "{}", h.name);
        assert!(h.store.sessions(tenant.id).get(done.session_id).await.is_ok(), "{}", h.name);

        let swept = h
            .store
            .sweep(tenant.id, Cutoffs { sessions: Some(later), ..Cutoffs::default() })
            .await
            .unwrap();
        let ended = h.store.leases(tenant.id).get(lease.id).await.unwrap();
        assert_eq!(ended.ended_why.as_deref(), Some("session deleted"), "{}", h.name);
        assert_eq!(
            (swept.sessions, swept.events, swept.turns, swept.steps),
            (1, 1, 1, 2),
            "{}: {swept:?}",
            h.name
        );
        assert_eq!(swept.outbox, 1, "{}: {swept:?}", h.name);
        let gone = h.store.sessions(tenant.id).get(done.session_id).await;
        assert!(matches!(gone, Err(clade_store::Error::SessionNotFound(_))), "{}", h.name);
        assert!(
            h.store.sessions(tenant.id).get(open.session_id).await.is_ok(),
            "{}: an open session went",
            h.name
        );
        assert_eq!(h.store.system().pending_events(open.session_id).await.unwrap().len(), 1);
        assert!(h.store.sessions(rival.id).get(theirs.session_id).await.is_ok(), "{}", h.name);
        let left =
            h.store.sessions(tenant.id).turn_records(done.session_id, None, 10).await.unwrap();
        assert!(left.is_empty(), "{}: the turn outlived its session", h.name);

        // Audited with its counts, in the swept tenant's chain; an empty sweep writes nothing.
        let filter = clade_store::AuditFilter { limit: 1000, ..Default::default() };
        let audit = h.store.access(tenant.id).audit_records(&filter).await.unwrap();
        let records: Vec<_> = audit.iter().filter(|r| r.kind == "retention.swept").collect();
        assert_eq!(records.len(), 1, "{}", h.name);
        assert!(records[0].detail.contains("\"sessions\":1"), "{}", records[0].detail);
        assert!(
            h.store.access(tenant.id).verify_audit().await.unwrap().broken.is_none(),
            "{}",
            h.name
        );
        let again =
            h.store.sweep(tenant.id, Cutoffs { sessions: Some(later), ..Cutoffs::default() });
        assert!(again.await.unwrap().is_empty(), "{}", h.name);
    }
}
