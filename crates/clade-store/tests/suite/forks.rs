//! Branches and workers on both backends: started once per key within their limit, settled
//! once (the outcome delivered into the parent session with `execution.ended`), not before
//! their session is done, never after a cancel; a worker continued runs anew; forks do not
//! nest, and another tenant finds none of it.

use clade_core::{EventKind, ExecutionKind, ExecutionStatus, TurnStatus};
use clade_store::{Error, NewFork, RunFilter, TurnOutcome};

use super::harness::{accept, backends, tenant_and_agent};

fn fork(
    tenant: &clade_core::Tenant,
    agent: &clade_core::Agent,
    parent: clade_core::SessionId,
    kind: ExecutionKind,
    key: &str,
) -> NewFork {
    NewFork {
        tenant: tenant.id,
        agent: agent.id,
        kind,
        parent_session: parent,
        parent_turn: None,
        task: format!("think about {key}"),
        tools: Vec::new(),
        key: key.to_owned(),
        max_running: 2,
    }
}

/// Runs the fork session's open event as one turn that ends with `status` and `reply`.
async fn run_turn(
    store: &clade_store::Store,
    tenant: &clade_core::Tenant,
    forked: &clade_store::Forked,
    status: TurnStatus,
    reply: &str,
) {
    let session = store.sessions(tenant.id).get(forked.fork.session).await.unwrap();
    let (turn, _) =
        store.turns().start(&session, vec![forked.accepted.event_id], 0, Vec::new()).await.unwrap();
    let outcome = TurnOutcome {
        status,
        reply: (status == TurnStatus::Completed).then(|| reply.to_owned()),
        error: (status == TurnStatus::Failed).then(|| reply.to_owned()),
        model: None,
    };
    store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
}

#[tokio::test]
async fn a_fork_starts_once_settles_once_and_reports_into_its_parent() {
    for h in backends().await {
        let (tenant, ada) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (_, bo) = tenant_and_agent(&h.store, &h.agents, "bo").await;
        let rival = h.store.tenants().create("rival").await.unwrap();
        let desk = accept(&h.store, &tenant, &ada, "desk").await.session_id;

        let started = h
            .store
            .start_fork(fork(&tenant, &ada, desk, ExecutionKind::Branch, "k1"))
            .await
            .unwrap();
        assert!(!started.accepted.duplicate, "{}", h.name);
        let kinds: Vec<_> = started.announced.iter().map(|r| (r.kind, r.session_id)).collect();
        assert_eq!(kinds, [(EventKind::ExecutionStarted, Some(desk))], "{}", h.name);
        let session = h.store.sessions(tenant.id).get(started.fork.session).await.unwrap();
        assert_eq!(session.source.platform, clade_core::Origin::Branch, "{}", h.name);
        assert_eq!(started.fork.status, ExecutionStatus::Running, "{}", h.name);
        // The same key: the same fork, nothing new.
        let again = h
            .store
            .start_fork(fork(&tenant, &ada, desk, ExecutionKind::Branch, "k1"))
            .await
            .unwrap();
        assert!(again.accepted.duplicate && again.announced.is_empty(), "{}", h.name);
        assert_eq!(again.fork.session, started.fork.session, "{}", h.name);

        // Not done yet: nothing to settle.
        assert!(
            h.store.forks(tenant.id).settle(started.fork.session).await.unwrap().is_none(),
            "{}",
            h.name
        );
        // A second branch fits, a third is over the limit; a worker counts apart.
        h.store.start_fork(fork(&tenant, &ada, desk, ExecutionKind::Branch, "k2")).await.unwrap();
        let over = h.store.start_fork(fork(&tenant, &ada, desk, ExecutionKind::Branch, "k3")).await;
        assert!(
            matches!(&over, Err(Error::InvalidInput(m)) if m.contains("run already")),
            "{}: {over:?}",
            h.name
        );
        let worker = h
            .store
            .start_fork(fork(&tenant, &ada, desk, ExecutionKind::Worker, "w1"))
            .await
            .unwrap();
        // Forks do not nest; another agent's session and another tenant's are refused.
        let nested = h
            .store
            .start_fork(fork(&tenant, &ada, started.fork.session, ExecutionKind::Worker, "n"))
            .await;
        assert!(
            matches!(&nested, Err(Error::InvalidInput(m)) if m.contains("do not start their own")),
            "{}: {nested:?}",
            h.name
        );
        let theirs = h.store.start_fork(fork(&tenant, &bo, desk, ExecutionKind::Branch, "b")).await;
        assert!(matches!(theirs, Err(Error::InvalidInput(_))), "{}", h.name);
        let mut across = fork(&tenant, &ada, desk, ExecutionKind::Branch, "r");
        across.tenant = rival.id;
        assert!(
            matches!(h.store.start_fork(across).await, Err(Error::SessionNotFound(_))),
            "{}",
            h.name
        );
        assert_eq!(
            h.store.forks(rival.id).get(started.fork.session).await.unwrap(),
            None,
            "{}",
            h.name
        );

        // Its turn ends: settled once, the outcome an event of the parent.
        run_turn(&h.store, &tenant, &started, TurnStatus::Completed, "forty-two").await;
        let settled =
            h.store.forks(tenant.id).settle(started.fork.session).await.unwrap().expect("settled");
        assert_eq!(settled.fork.status, ExecutionStatus::Completed, "{}", h.name);
        assert_eq!(settled.fork.output.as_deref(), Some("forty-two"), "{}", h.name);
        let delivered = settled.delivered.expect("delivered");
        assert_eq!(delivered.session_id, desk, "{}", h.name);
        let kinds: Vec<_> = settled.announced.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [EventKind::ExecutionEnded], "{}", h.name);
        let event = h.store.sessions(tenant.id).event(delivered.event_id).await.unwrap();
        assert!(
            event.text.contains("concluded") && event.text.ends_with("forty-two"),
            "{}: {}",
            h.name,
            event.text
        );
        assert!(
            h.store.forks(tenant.id).settle(started.fork.session).await.unwrap().is_none(),
            "{}",
            h.name
        );

        // A cancelled worker settles to nothing; continued, it runs anew and reports.
        let (cancelled, changed, _) =
            h.store.forks(tenant.id).cancel(*worker.fork.session.as_bytes()).await.unwrap();
        assert!(changed && cancelled.status == ExecutionStatus::Cancelled, "{}", h.name);
        run_turn(&h.store, &tenant, &worker, TurnStatus::Failed, "cancelled by request").await;
        assert!(
            h.store.forks(tenant.id).settle(worker.fork.session).await.unwrap().is_none(),
            "{}",
            h.name
        );
        let (_, again, _) =
            h.store.forks(tenant.id).cancel(*worker.fork.execution.as_bytes()).await.unwrap();
        assert!(!again, "{}", h.name);
        let more = h
            .store
            .forks(tenant.id)
            .continue_worker(worker.fork.session, desk, "go on".into(), "c1".into())
            .await
            .unwrap();
        assert_ne!(more.fork.execution, worker.fork.execution, "{}", h.name);
        assert_eq!(more.fork.status, ExecutionStatus::Running, "{}", h.name);
        let progress = h
            .store
            .forks(tenant.id)
            .set_progress(worker.fork.session, "half".into())
            .await
            .unwrap()
            .0;
        assert_eq!(progress.progress.as_deref(), Some("half"), "{}", h.name);
        run_turn(&h.store, &tenant, &more, TurnStatus::Failed, "no luck").await;
        let failed =
            h.store.forks(tenant.id).settle(worker.fork.session).await.unwrap().expect("settled");
        assert_eq!(failed.fork.status, ExecutionStatus::Failed, "{}", h.name);
        let event =
            h.store.sessions(tenant.id).event(failed.delivered.unwrap().event_id).await.unwrap();
        assert!(event.text.contains("failed: no luck"), "{}: {}", h.name, event.text);
        // A branch is no worker to continue.
        let wrong = h
            .store
            .forks(tenant.id)
            .continue_worker(started.fork.session, desk, "x".into(), "c2".into())
            .await;
        assert!(matches!(wrong, Err(Error::InvalidInput(_))), "{}", h.name);

        let runs = h
            .store
            .forks(tenant.id)
            .runs(&RunFilter { agent: Some(ada.id), limit: 10, ..RunFilter::default() })
            .await
            .unwrap();
        // (Runs started in one millisecond may list in either order.)
        let mut kinds: Vec<_> = runs.iter().map(|r| (r.kind.as_str(), r.status.as_str())).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                ("branch", "completed"),
                ("branch", "running"),
                ("worker", "cancelled"),
                ("worker", "failed")
            ],
            "{}",
            h.name
        );
        let open =
            RunFilter { agent: Some(ada.id), open_only: true, limit: 10, ..RunFilter::default() };
        assert_eq!(h.store.forks(tenant.id).runs(&open).await.unwrap().len(), 1, "{}", h.name);
        assert!(
            h.store
                .forks(rival.id)
                .runs(&RunFilter { limit: 10, ..RunFilter::default() })
                .await
                .unwrap()
                .is_empty(),
            "{}",
            h.name
        );
        let unsettled = h.store.system().unsettled_forks(10).await.unwrap();
        assert_eq!(unsettled.len(), 1, "{}: the second branch", h.name);
    }
}
