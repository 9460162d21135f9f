//! Agents' messages across a crash.

use clade_core::TurnStatus;
use clade_sim::Sim;

/// The messages bo sent or received, once `done` holds for them.
async fn bos_messages(
    sim: &Sim,
    done: impl Fn(&[clade_store::MessageRow]) -> bool,
) -> Vec<clade_store::MessageRow> {
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let read = async || {
        let store = store.clone();
        sim.on_node(async move |_| {
            let bo = store.agents(tenant).get("bo").await?;
            store.messages(tenant).of_agent(bo.id, None, 100).await
        })
        .await
        .unwrap()
    };
    clade_test_support::wait::polled(read, |m| done(m)).await
}

/// ada asks bo, whose model is slow; the node dies while ada waits and starts again. bo's turn
/// resumes, and ada's ask, run again, finds the message it delivered: one message, one turn
/// of bo's, one answer in ada's turn.
#[tokio::test]
async fn an_ask_across_a_kill_is_delivered_and_answered_once() {
    let mut sim = Sim::builder("an_ask_across_a_kill_is_delivered_and_answered_once")
        .config(
            &(super::slow_model_for("bo", 2500)
                + "tools:\n  policy:\n    - { effect: allow, tool: agent.ask, resource: bo }\n"),
        )
        .start()
        .await;
    sim.create_agent("ada").await;
    sim.create_agent("bo").await;
    let ask = r#"/tool agent.ask {"to":"bo","message":"what is the plan?"}"#;
    let accepted = sim.submit(sim.envelope("ada", "desk", "pat", ask).await).await.unwrap();
    let delivered = bos_messages(&sim, |m| !m.is_empty()).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let bo_session = delivered[0].to_session;
    super::model_called(&sim, 1).await;
    assert!(sim.turns(bo_session).await.is_empty(), "bo answered before the kill");
    sim.restart().await;

    let ended = |turns: &[clade_store::TurnRecord]| {
        turns.first().is_some_and(|t| t.turn.status != TurnStatus::Running)
    };
    let ada_turns = sim.turns_until(accepted.session_id, ended).await;
    assert_eq!(ada_turns.len(), 1, "{ada_turns:#?}");
    assert_eq!(ada_turns[0].turn.status, TurnStatus::Completed);
    assert_eq!(
        ada_turns[0].turn.reply.as_deref(),
        Some("tool results: agent.ask -> echo: what is the plan?")
    );
    let bo_turns = sim.turns_until(bo_session, ended).await;
    assert_eq!(bo_turns.len(), 1, "{bo_turns:#?}");
    assert_eq!(bo_turns[0].events.len(), 1);
    assert_eq!(bo_turns[0].turn.status, TurnStatus::Completed);
    assert_eq!(bos_messages(&sim, |_| true).await.len(), 1, "one message");
    let results = ada_turns[0]
        .steps
        .iter()
        .filter(|s| {
            s.step.to_string().starts_with("tool/") && s.step.to_string().ends_with("/result")
        })
        .count();
    assert_eq!(results, 1, "{:?}", ada_turns[0].steps);
}
