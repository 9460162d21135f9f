//! Schedules an agent keeps for itself, fired by the scheduler on the simulated clock.

use std::time::Duration;

use clade_core::{ExecutionKind, ExecutionStatus, TurnStatus};
use clade_sim::Sim;
use clade_store::ExecutionOwner;

/// An agent schedules itself with `cron.create` in a conversation; the job answers in that
/// conversation's session (its origin) when the clock reaches its time, and the agent lists,
/// pauses, starts again and removes it with its tools, each call decided and audited on the
/// tool path. No test waits for a fire: the clock is moved to it.
#[tokio::test]
async fn an_agent_schedules_itself_and_the_job_answers_where_the_user_spoke() {
    // Every second, for the test's pace (the default is at least a minute apart).
    let sim = Sim::builder("an_agent_schedules_itself_and_the_job_answers_where_the_user_spoke")
        .config("tenants:\n  \"*\":\n    quotas: { cron_min_interval_secs: 1 }\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    let create = r#"/tool cron.create {"name":"remind","schedule":"* * * * * *","prompt":"/reply time to stretch"}"#;
    let (accepted, answer) = sim.say("ada", "dm", create).await;
    let session = accepted.session_id;
    let reply = answer.reply.unwrap_or_default();
    assert!(reply.contains("\"remind\"") && !reply.contains("error"), "{reply}");
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let job = {
        let store = store.clone();
        sim.on_node(async move |_| {
            let ada = store.agents(tenant).get("ada").await?;
            store.jobs(tenant).named(ada.id, "remind").await
        })
        .await
        .unwrap()
    };
    assert_eq!(job.target.to_string(), format!("origin:{session}"));
    let stretched = |turns: &[clade_store::TurnRecord]| {
        turns.iter().any(|t| {
            t.turn.reply.as_deref() == Some("time to stretch")
                && t.turn.status == TurnStatus::Completed
        })
    };
    assert!(!stretched(&sim.turns(session).await), "fired before its time");
    sim.run_for(Duration::from_secs(2)).await;
    sim.turns_until(session, stretched).await;
    // Each fire ran as an execution of its own, ended with the envelope it delivered into the
    // conversation.
    let fires = move |store: clade_store::Store| async move {
        let runs = store.executions(tenant).list(1000).await?;
        let fires = runs.into_iter().filter(|run| run.kind == ExecutionKind::CronFire);
        Ok::<_, clade_store::Error>(fires.collect::<Vec<_>>())
    };
    let fired = sim.on_node({
        let store = store.clone();
        async move |_| fires(store).await
    });
    let fired = fired.await.unwrap();
    assert!(!fired.is_empty(), "no fire's execution");
    for run in &fired {
        assert_eq!(
            (run.status, run.owner),
            (ExecutionStatus::Completed, ExecutionOwner::Session(session)),
            "{run:?}"
        );
        assert!(run.output.as_deref().unwrap_or_default().contains(&session.to_string()));
    }

    let (_, listed) = sim.say("ada", "dm", "/tool cron.list").await;
    assert!(listed.reply.unwrap_or_default().contains("remind"));
    let (_, paused) =
        sim.say("ada", "dm", r#"/tool cron.enable {"name":"remind","enabled":false}"#).await;
    assert!(paused.reply.unwrap_or_default().contains("\"enabled\":false"));
    let (_, resumed) = sim.say("ada", "dm", r#"/tool cron.enable {"name":"remind"}"#).await;
    assert!(resumed.reply.unwrap_or_default().contains("\"enabled\":true"));
    let (_, removed) = sim.say("ada", "dm", r#"/tool cron.remove {"name":"remind"}"#).await;
    assert!(removed.reply.unwrap_or_default().contains("removed"));
    let audit = sim
        .on_node(async move |_| {
            let ada = store.agents(tenant).get("ada").await?;
            let left = store.jobs(tenant).named(ada.id, "remind").await.is_ok();
            let filter = clade_store::AuditFilter { limit: 1000, ..Default::default() };
            Ok::<_, clade_store::Error>((left, store.access(tenant).audit_records(&filter).await?))
        })
        .await
        .unwrap();
    assert!(!audit.0, "the removed job is gone");
    let store = sim.store();
    let left = sim.on_node(async move |_| fires(store).await).await.unwrap();
    assert!(left.is_empty(), "its fires' executions outlived the job: {left:?}");
    let tools: Vec<&str> = audit.1.iter().filter_map(|r| r.tool.as_deref()).collect();
    let used = ["cron.create", "cron.list", "cron.enable", "cron.remove"];
    assert!(used.iter().all(|t| tools.contains(t)), "{tools:?}");
}
