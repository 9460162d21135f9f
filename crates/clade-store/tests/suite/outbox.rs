//! The outbox's numbering: subscribers keep a cursor into it, so an id is never issued twice.

use clade_core::{Agent, Tenant};
use clade_store::{OutboxEvent, Store};

use super::harness::{accept, backends, new_turn, tenant_and_agent};

/// Starts a turn for `agent` from `channel`; returns the id of its one outbox row.
async fn started(store: &Store, tenant: &Tenant, agent: &Agent, channel: &str) -> i64 {
    let accepted = accept(store, tenant, agent, channel).await;
    let turn = new_turn(store, &accepted, tenant, agent);
    let outbox = vec![OutboxEvent { kind: clade_core::EventKind::TurnStarted, data: "{}".into() }];
    let rows = store.begin_turn(&turn, vec![accepted.event_id], outbox, None, None).await;
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
        h.store.delete_agent(tenant.id, "gone").await.unwrap();
        // A later delete sees a lower highest id left, and must not lower the mark.
        tenant_and_agent(&h.store, &h.agents, "idle").await;
        h.store.delete_agent(tenant.id, "idle").await.unwrap();

        let next = started(&h.store, &tenant, &kept, "c").await;
        assert!(next > newest, "{}: outbox id {next} issued again (newest was {newest})", h.name);
        let again = h.reopen().await.unwrap();
        let (tenant, kept) = (again.tenant(Tenant::DEFAULT_NAME).await.unwrap(), kept);
        let after_restart = started(&again, &tenant, &kept, "d").await;
        assert!(after_restart > next, "{}: {after_restart} after a restart", h.name);
    }
}
