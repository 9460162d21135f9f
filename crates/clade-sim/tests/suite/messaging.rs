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

/// ada spawns an ephemeral child, which answers and is deleted; the node dies before ada's turn
/// records the call's result. Run again, the call finds its sub-agent run ended and answers as
/// it did: the child is not made and asked a second time.
#[tokio::test]
async fn an_ephemeral_childs_answer_is_kept_across_a_kill_and_not_asked_again() {
    let mut sim = Sim::builder(
        "an_ephemeral_childs_answer_is_kept_across_a_kill_and_not_asked_again",
    )
    .config(
        &(super::slow_model_for("ada-temp", 1)
            + "tools:\n  policy:\n    - { effect: allow, tool: agent.spawn, resource: temp }\n"),
    )
    .start()
    .await;
    sim.create_agent("ada").await;
    sim.arm("after_tool_effect_before_result", 1);
    let spawn = r#"/tool agent.spawn {"name":"temp","task":"count to three","ephemeral":true}"#;
    let accepted = sim.submit(sim.envelope("ada", "desk", "pat", spawn).await).await.unwrap();
    assert_eq!(sim.crashed().await, "after_tool_effect_before_result");
    assert_eq!(super::model_calls(&sim), 1, "the child was asked once before the kill");
    sim.restart().await;

    let ended = |turns: &[clade_store::TurnRecord]| {
        turns.first().is_some_and(|t| t.turn.status != TurnStatus::Running)
    };
    let turns = sim.turns_until(accepted.session_id, ended).await;
    assert_eq!(turns[0].turn.status, TurnStatus::Completed, "{turns:#?}");
    let reply = turns[0].turn.reply.clone().unwrap_or_default();
    assert!(
        reply.contains(r#""child":"ada-temp""#) && reply.contains(r#""deleted":true"#),
        "{reply}"
    );
    assert_eq!(super::model_calls(&sim), 1, "the child was made and asked again");

    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let (runs, steps) = sim
        .on_node(async move |_| {
            let runs = store.executions(tenant).list(10).await?;
            let mut steps = Vec::new();
            for run in &runs {
                steps.push(store.executions(tenant).steps(run.id).await?);
            }
            Ok::<_, clade_store::Error>((runs, steps))
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (runs[0].kind, runs[0].status),
        (clade_core::ExecutionKind::SubAgent, clade_core::ExecutionStatus::Completed)
    );
    let keys: Vec<&str> = steps[0].iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["child", "ask", "delete"]);
    assert_eq!(runs[0].owner, clade_store::ExecutionOwner::Session(accepted.session_id));
}

/// ada's turn is cancelled while the child it spawned still thinks: the sub-agent run, which
/// nothing is left to finish, ends cancelled with the turn.
#[tokio::test]
async fn a_sub_agent_run_ends_with_the_turn_that_started_it() {
    let sim = Sim::builder("a_sub_agent_run_ends_with_the_turn_that_started_it")
        .config(
            &(super::slow_model_for("ada-slow", 4000)
                + "tools:\n  policy:\n    - { effect: allow, tool: agent.spawn, resource: slow }\n"),
        )
        .start()
        .await;
    sim.create_agent("ada").await;
    let spawn = r#"/tool agent.spawn {"name":"slow","task":"think hard"}"#;
    let accepted = sim.submit(sim.envelope("ada", "desk", "pat", spawn).await).await.unwrap();
    super::model_called(&sim, 1).await;
    let (store, tenant, session) = (sim.store(), sim.tenant().await.id, accepted.session_id);
    let runs = {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move { store.executions(tenant).list(10).await }
        }
    };
    let read = runs.clone();
    let open = sim.on_node(async move |_| read().await).await.unwrap();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].status, clade_core::ExecutionStatus::Running);

    let cancelled = sim.on_node(async move |engine| engine.cancel(tenant, session).await).await;
    assert!(cancelled.unwrap(), "ada's turn was cancelled");
    assert_eq!(sim.finished(&accepted).await.status, TurnStatus::Failed);
    let ended = sim.on_node(async move |_| runs().await).await.unwrap();
    assert_eq!(ended[0].status, clade_core::ExecutionStatus::Cancelled, "{ended:#?}");
    assert_eq!(ended[0].error.as_deref(), Some("the turn that started it ended first"));
}
