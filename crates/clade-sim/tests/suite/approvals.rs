//! Approvals across a crash: a call waiting for an operator is asked once, whatever happens to
//! the node in between.

use clade_core::TurnStatus;
use clade_sim::Sim;

use super::{decide, pending_approvals};

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
    let asked = pending_approvals(&sim).await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].tool, "ledger.append");
    assert!(sim.ledger().is_empty(), "the call ran before it was approved");
    sim.restart().await;

    let again = pending_approvals(&sim).await;
    assert_eq!(again.len(), 1, "the resumed turn asked a second time: {again:?}");
    assert_eq!(again[0].id, asked[0].id);
    decide(&sim, asked[0].id).await;
    let finished = sim.finished(&accepted).await;
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
    assert_eq!(sim.ledger().len(), 1, "the approved call ran once");
    let kinds: Vec<&'static str> =
        sim.outbox(accepted.session_id).await.iter().map(|row| row.kind.as_str()).collect();
    let at = |kind: &str| kinds.iter().position(|k| *k == kind);
    let (requested, decided) = (at("approval.requested"), at("approval.decided"));
    assert!(requested.is_some() && requested < decided, "{kinds:?}");
}
