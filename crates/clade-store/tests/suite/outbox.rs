//! The outbox's numbering: subscribers keep a cursor into it, so an id is never issued twice.

use clade_core::{Agent, Tenant};
use clade_store::{OutboxEvent, Store};

use super::harness::{accept, backends, new_turn, tenant_and_agent};

/// Starts a turn for `agent` from `channel`; returns the id of its one outbox row.
async fn started(store: &Store, tenant: &Tenant, agent: &Agent, channel: &str) -> i64 {
    let accepted = accept(store, tenant, agent, channel).await;
    let turn = new_turn(store, &accepted, tenant, agent);
    let outbox = vec![OutboxEvent { kind: clade_core::EventKind::TurnStarted, data: "{}".into() }];
    let rows = store.turns().begin(&turn, vec![accepted.event_id], outbox, None, None).await;
    rows.unwrap()[0].id
}

/// Deleting an agent whose outbox rows are the newest must not let later rows take their ids:
/// a subscriber whose cursor already passed them would skip the new rows.
#[tokio::test]
async fn outbox_ids_are_never_issued_twice_even_after_deletes() {
    for h in backends().await {
        let (tenant, kept) = tenant_and_agent(&h.store, &h.agents, "kept").await;
        let first = started(&h.store, &tenant, &kept, "a").await;
        let (_, gone) = tenant_and_agent(&h.store, &h.agents, "gone").await;
        let newest = started(&h.store, &tenant, &gone, "b").await;
        assert!(newest > first, "{}", h.name);
        h.store.agents(tenant.id).delete("gone").await.unwrap();
        // A later delete sees a lower highest id left, and must not lower the mark.
        tenant_and_agent(&h.store, &h.agents, "idle").await;
        h.store.agents(tenant.id).delete("idle").await.unwrap();

        let next = started(&h.store, &tenant, &kept, "c").await;
        assert!(next > newest, "{}: outbox id {next} issued again (newest was {newest})", h.name);
        let again = h.reopen().await.unwrap();
        let (tenant, kept) = (again.tenants().named(Tenant::DEFAULT_NAME).await.unwrap(), kept);
        let after_restart = started(&again, &tenant, &kept, "d").await;
        assert!(after_restart > next, "{}: {after_restart} after a restart", h.name);
    }
}

/// Reads every outbox row after `cursor`, as a subscriber following the outbox does, and moves
/// the cursor past them. (Without waiting for this handle's writer, which the test holds.)
async fn follow(store: &Store, cursor: &mut i64, seen: &mut Vec<i64>) {
    for row in store.visible_reads().system().outbox_after(*cursor, 1000).await.unwrap() {
        *cursor = row.id;
        seen.push(row.id);
    }
}

/// Outbox ids follow commit order even with two writers on one store (two nodes, or the CLI
/// beside a server): a subscriber following the outbox by id never passes a row that another
/// writer commits later. One writer takes an id and holds its transaction open while a second
/// store handle writes a row of its own; the follower, reading all along, must see both. On
/// PostgreSQL the second writer commits while the first is still open: writers do not take
/// turns, the follower waits instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_never_passes_a_row_another_writer_commits_later() {
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;
    for h in backends().await {
        let other = h.reopen().await.unwrap();
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap().id;
        let event =
            || vec![OutboxEvent { kind: clade_core::EventKind::TurnStarted, data: "{}".into() }];
        let mut cursor = h.store.outbox_head().await.unwrap();
        let mut seen = Vec::new();

        let (inserted, has_inserted) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let hooks = Arc::new(Mutex::new((Some(inserted), Some(released))));
        let first = {
            let (store, hooks) = (h.store.clone(), hooks.clone());
            tokio::spawn(async move {
                store
                    .transact(tenant, move |work| {
                        let hooks = hooks.clone();
                        Box::pin(async move {
                            work.announce(None, &event()).await?;
                            let (inserted, released) = {
                                let mut hooks = hooks.lock().unwrap();
                                (hooks.0.take(), hooks.1.take())
                            };
                            if let Some(inserted) = inserted {
                                let _ = inserted.send(());
                            }
                            if let Some(released) = released {
                                let _ = released.await;
                            }
                            Ok(())
                        })
                    })
                    .await
            })
        };
        has_inserted.await.unwrap();
        let mut second = tokio::spawn(async move {
            other
                .transact(tenant, move |work| {
                    Box::pin(async move { work.announce(None, &event()).await })
                })
                .await
        });
        // Time enough for the second writer to commit, if nothing holds it back; the follower
        // reads meanwhile.
        let early = tokio::time::timeout(std::time::Duration::from_secs(20), &mut second);
        let early = if h.name == "postgres" {
            Ok(early.await.expect("the second writer waited for the first to commit"))
        } else {
            // SQLite has one writer at a time: the second waits for the first.
            tokio::time::timeout(std::time::Duration::from_millis(300), &mut second).await
        };
        follow(&h.store, &mut cursor, &mut seen).await;
        assert!(
            seen.is_empty(),
            "{}: the follower read {seen:?} before the first committed",
            h.name
        );
        let _ = release.send(());
        first.await.unwrap().unwrap();
        match early {
            Ok(done) => done.unwrap().unwrap(),
            Err(_) => second.await.unwrap().unwrap(),
        };
        follow(&h.store, &mut cursor, &mut seen).await;

        let all: Vec<i64> = h
            .store
            .system()
            .outbox_after(0, 1000)
            .await
            .unwrap()
            .iter()
            .map(|row| row.id)
            .rev()
            .take(2)
            .rev()
            .collect();
        assert_eq!(seen, all, "{}: the follower saw {seen:?} of {all:?}", h.name);
    }
}

/// A subscriber seen for the first time starts at the outbox's head; started again (a restart),
/// it keeps its cursor, even one still at 0 with rows written since.
#[tokio::test]
async fn a_new_subscriber_starts_at_the_head_and_keeps_its_cursor_after() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let system = h.store.system();
        // An empty outbox: the cursor starts at 0.
        system.deliveries().start_at_head("fresh").await.unwrap();
        assert_eq!(system.deliveries().cursor("fresh").await.unwrap(), (0, 0), "{}", h.name);
        let first = started(&h.store, &tenant, &agent, "a").await;
        system.deliveries().start_at_head("fresh").await.unwrap();
        assert_eq!(system.deliveries().cursor("fresh").await.unwrap(), (0, 0), "{}: kept", h.name);
        // One seen first now starts past the row already there.
        system.deliveries().start_at_head("late").await.unwrap();
        assert_eq!(system.deliveries().cursor("late").await.unwrap(), (first, 0), "{}", h.name);
        system.deliveries().set_cursor("late", first, 2, None).await.unwrap();
        started(&h.store, &tenant, &agent, "b").await;
        system.deliveries().start_at_head("late").await.unwrap();
        assert_eq!(system.deliveries().cursor("late").await.unwrap(), (first, 2), "{}", h.name);
    }
}
