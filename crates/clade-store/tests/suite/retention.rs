//! Retention sweeps on both backends: old idle sessions go with everything they own, an open
//! one stays, what a policy does not name stays, and another tenant's records are untouched.

use clade_core::{ExecutionId, ExecutionKind, ExecutionStatus, StepKey, TurnStatus};
use clade_store::retention::Cutoffs;
use clade_store::{ExecutionOwner, ExecutionStep, NewExecution};

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
        let outcome = completed();
        h.store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
        // Runs the conversation owns: a worker's, ended with a step, and a branch's still
        // under way.
        let run = |kind| NewExecution {
            id: ExecutionId::generate(h.store.now()),
            tenant: tenant.id,
            agent: ada.id,
            kind,
            owner: ExecutionOwner::Session(done.session_id),
            status: ExecutionStatus::Running,
            input: "{}".into(),
        };
        let (worker, branch) = (run(ExecutionKind::Worker), run(ExecutionKind::Branch));
        for new in [&worker, &branch] {
            h.store.start_execution(new.clone()).await.unwrap();
        }
        let executions = || h.store.executions(tenant.id);
        let step = ExecutionStep { seq: 1, key: "task".into(), data: "{}".into() };
        executions().append_step(worker.id, step).await.unwrap();
        executions().set_status(worker.id, ExecutionStatus::Completed, None, None).await.unwrap();
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
            (swept.sessions, swept.events, swept.turns, swept.runs, swept.steps),
            (1, 1, 1, 1, 3),
            "{}: {swept:?}",
            h.name
        );
        let gone = executions().get(worker.id).await;
        assert!(matches!(gone, Err(clade_store::Error::ExecutionNotFound(_))), "{}", h.name);
        let kept = executions().get(branch.id).await.unwrap();
        assert_eq!(kept.status, ExecutionStatus::Running, "{}: a run under way went", h.name);
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

/// On PostgreSQL, a sweep on one node and an accept on another can overlap. The sweep locks
/// each session it chose, as an accept locks the session it reads, and checks again once it
/// holds the lock: an event accepted into the session meanwhile keeps the session, and the
/// event, which was acknowledged.
#[tokio::test]
async fn a_session_revived_while_a_sweep_chose_it_is_kept_with_its_event() {
    use sqlx::{Connection, Executor, Row};
    for h in backends().await {
        if h.name != "postgres" {
            continue;
        }
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        // An idle conversation: its one event answered.
        let done = accept(&h.store, &tenant, &ada, "old").await;
        let turn = new_turn(&h.store, &done, &tenant, &ada);
        h.store.turns().begin(&turn, vec![done.event_id], Vec::new(), None, None).await.unwrap();
        let outcome = completed();
        h.store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();

        // Another node, between reading the session and committing an event into it.
        let url = match &h.location {
            clade_store::Location::Postgres(url) => url.clone(),
            clade_store::Location::Sqlite(_) => unreachable!(),
        };
        let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
        other.execute("BEGIN").await.unwrap();
        sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
            .bind(done.session_id.as_bytes().to_vec())
            .execute(&mut other)
            .await
            .unwrap();

        let later = clade_core::Timestamp::from_millis(h.store.now().as_millis() + 86_400_000);
        let store = h.store.clone();
        let sweep = tokio::spawn(async move {
            store.sweep(tenant.id, Cutoffs { sessions: Some(later), ..Cutoffs::default() }).await
        });
        // The sweep chose the session and waits for its lock.
        let mut watch = sqlx::PgConnection::connect(&url).await.unwrap();
        let waiting = super::harness::eventually(
            clade_test_support::wait::PATIENCE,
            clade_test_support::wait::POLL,
            async || {
                let row = sqlx::query("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(&mut watch)
                    .await
                    .unwrap();
                row.get::<i64, _>(0) > 0
            },
        )
        .await;
        assert!(waiting, "the sweep deleted without waiting for the session's lock");

        // The other node's event commits.
        let event = clade_core::EventId::generate(h.store.now());
        sqlx::query(
            "INSERT INTO events (id, tenant_id, session_id, seq, idempotency_key, payload_hash, \
             text, status, created_at) VALUES ($1, $2, $3, 1, $4, 'h', 'back again', 'pending', $5)",
        )
        .bind(event.as_bytes().to_vec())
        .bind(tenant.id.as_bytes().to_vec())
        .bind(done.session_id.as_bytes().to_vec())
        .bind(event.to_string())
        .bind(h.store.now().as_millis())
        .execute(&mut other)
        .await
        .unwrap();
        sqlx::query("UPDATE sessions SET next_seq = 2, updated_at = $2 WHERE id = $1")
            .bind(done.session_id.as_bytes().to_vec())
            .bind(h.store.now().as_millis())
            .execute(&mut other)
            .await
            .unwrap();
        other.execute("COMMIT").await.unwrap();

        let swept = sweep.await.unwrap().unwrap();
        assert_eq!(swept.sessions, 0, "{swept:?}");
        let sessions = h.store.sessions(tenant.id);
        assert!(sessions.get(done.session_id).await.is_ok(), "the revived session was deleted");
        assert_eq!(sessions.event(event).await.unwrap().text, "back again");
        assert_eq!(sessions.event(done.event_id).await.unwrap().text, "hello");
    }
}

/// A turn's end: completed, with a reply.
fn completed() -> clade_store::TurnOutcome {
    clade_store::TurnOutcome {
        status: TurnStatus::Completed,
        reply: Some("bye".into()),
        error: None,
        model: None,
    }
}
