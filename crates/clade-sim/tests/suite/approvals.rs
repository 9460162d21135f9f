//! Approvals across a crash: a call waiting for an operator is asked once, whatever happens to
//! the node in between.

use clade_core::{ApprovalStatus, TurnStatus};
use clade_sim::Sim;

/// The pending approvals of the default tenant.
async fn pending(sim: &Sim) -> Vec<clade_store::ApprovalRow> {
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let read = async || {
        let store = store.clone();
        sim.on_node(async move |_| {
            store.access(tenant).approvals(None, Some(ApprovalStatus::Pending), 10).await
        })
        .await
        .unwrap()
    };
    clade_test_support::wait::polled(read, |rows| !rows.is_empty()).await
}

/// A turn waiting for an approval when the node dies waits for the same approval after the
/// restart (not a second request); approved, its call runs once and the turn completes, and
/// the request and the decision are in the session's durable event stream, in order.
#[tokio::test]
async fn a_turn_waiting_for_approval_survives_a_restart() {
    let mut sim = Sim::builder("a_turn_waiting_for_approval_survives_a_restart")
        .config("tools:\n  approval_timeout_secs: 60\n  policy:\n    - { effect: ask, tool: ledger.append }\n")
        .start()
        .await;
    sim.create_agent("alice").await;
    let envelope = sim.envelope("alice", "c", "u", r#"/tool ledger.append {"note":"once"}"#).await;
    let accepted = sim.submit(envelope).await.unwrap();
    let asked = pending(&sim).await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].tool, "ledger.append");
    assert!(sim.ledger().is_empty(), "the call ran before it was approved");
    sim.restart().await;

    let again = pending(&sim).await;
    assert_eq!(again.len(), 1, "the resumed turn asked a second time: {again:?}");
    assert_eq!(again[0].id, asked[0].id);
    let (tenant, id) = (sim.tenant().await.id, asked[0].id);
    let decided = sim
        .on_node(async move |engine| {
            let verdict = clade_runtime::Verdict::Approve;
            engine.tools().decide(tenant, id, verdict, "operator", None).await
        })
        .await;
    assert_eq!(decided.unwrap().status, ApprovalStatus::Approved);
    let finished = sim.finished(&accepted).await;
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
    assert_eq!(sim.ledger().len(), 1, "the approved call ran once");
    let kinds: Vec<&'static str> =
        sim.outbox(accepted.session_id).await.iter().map(|row| row.kind.as_str()).collect();
    let at = |kind: &str| kinds.iter().position(|k| *k == kind);
    let (requested, decided) = (at("approval.requested"), at("approval.decided"));
    assert!(requested.is_some() && requested < decided, "{kinds:?}");
}
