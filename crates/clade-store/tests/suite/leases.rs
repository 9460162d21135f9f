//! Leases with a fencing epoch: once another node takes the lease, the node that held it can
//! write no turn or journal step, though its handle still works for everything else.

use clade_core::{StepKey, TurnStatus};
use clade_store::{Error, JournalEntry, TurnOutcome};

use super::harness::{accept, backends, new_turn, tenant_and_agent};

fn step(iteration: u32) -> JournalEntry {
    JournalEntry { step: StepKey::Model { iteration }, data: "{}".into() }
}

#[tokio::test]
async fn a_node_whose_lease_was_taken_writes_no_more_turns() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let first = h.reopen().await.unwrap();
        let second = h.reopen().await.unwrap();
        assert_eq!(
            first.shard_leases().fence(),
            None,
            "{}: a handle holds no lease until it takes one",
            h.name
        );

        // The first node takes the lease and starts a turn.
        let taken = first.shard_leases().take("first").await.unwrap();
        assert_eq!(first.shard_leases().fence(), Some(taken[0].epoch), "{}", h.name);
        assert!(first.shard_leases().held().await.unwrap(), "{}", h.name);
        let accepted = accept(&first, &tenant, &agent, "c").await;
        let turn = new_turn(&first, &accepted, &tenant, &agent);
        first
            .turns()
            .begin(&turn, vec![accepted.event_id], Vec::new(), Some((step(0), None)), None)
            .await
            .unwrap();

        // The second takes it over: a higher epoch, and the first is fenced off.
        let over = second.shard_leases().take("second").await.unwrap();
        assert!(over[0].epoch > taken[0].epoch, "{}: {over:?} after {taken:?}", h.name);
        assert!(!first.shard_leases().held().await.unwrap(), "{}", h.name);
        let fenced = first.turns().append_journal(&turn, step(1), Vec::new(), None, None).await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{}: {fenced:?}", h.name);
        let outcome = TurnOutcome {
            status: TurnStatus::Completed,
            reply: Some("late".into()),
            error: None,
            model: None,
        };
        let fenced = first.turns().finish(&turn, outcome.clone(), Vec::new()).await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{}: {fenced:?}", h.name);
        let later = accept(&first, &tenant, &agent, "d").await;
        let fenced = first
            .turns()
            .begin(
                &new_turn(&first, &later, &tenant, &agent),
                vec![later.event_id],
                Vec::new(),
                None,
                None,
            )
            .await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{}: {fenced:?}", h.name);
        // Nothing it tried is there: the turn is still running with its one step.
        let journal = second.system().journal(turn.id).await.unwrap();
        assert_eq!(journal.len(), 1, "{}", h.name);
        assert_eq!(second.system().turn(turn.id).await.unwrap().status, TurnStatus::Running);

        // The new holder writes on; a handle that took no lease (an operator's command) is not
        // fenced, and the old node still reads.
        second.turns().append_journal(&turn, step(1), Vec::new(), None, None).await.unwrap();
        second.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
        let done = first.system().turn(turn.id).await.unwrap();
        assert_eq!(done.status, TurnStatus::Completed, "{}", h.name);
        assert!(h.store.shard_leases().held().await.unwrap(), "{}", h.name);
    }
}
