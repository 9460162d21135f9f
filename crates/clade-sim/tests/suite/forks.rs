//! Branches and workers: a worker that never ends times out on the clock, and a branch's
//! conclusion crosses a crash exactly once.

use std::time::Duration;

use clade_sim::Sim;
use serde_json::{Value, json};

use super::model_called;

/// Routes where branches and workers take `ms` of real time per model call; channels answer
/// at once (the scripted model).
fn slow_forks(ms: u64, extra: &str) -> String {
    format!(
        "models:\n  slow:\n    provider: openai\n    model: stub+latency={ms}\n    base_url: {{stub}}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [scripted]\n  branch: [slow]\n  worker: [slow]\n{extra}"
    )
}

fn tool(name: &str, args: Value) -> String {
    format!("/tool {name} {args}")
}

/// The JSON a start tool returned, from the scripted model's summary of it.
fn started(reply: &str) -> Value {
    let json = reply.split_once(" -> ").map(|(_, json)| json).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|_| panic!("no fork started: {reply}"))
}

/// The replies of a session's turns, oldest first, once one contains `needle`.
async fn replies_with(sim: &Sim, session: clade_core::SessionId, needle: &str) -> Vec<String> {
    let replies = |turns: &[clade_store::TurnRecord]| -> Vec<String> {
        turns.iter().map(|t| t.turn.reply.clone().unwrap_or_default()).collect()
    };
    let turns = sim.turns_until(session, |t| replies(t).iter().any(|r| r.contains(needle))).await;
    replies(&turns)
}

/// The data of the session's lifecycle events of type `kind`.
async fn events_of(sim: &Sim, session: clade_core::SessionId, kind: &str) -> Vec<Value> {
    let rows = sim.outbox(session).await;
    let of_kind = rows.into_iter().filter(|row| row.kind.as_str() == kind);
    of_kind.map(|row| serde_json::from_str(&row.data).unwrap()).collect()
}

/// A worker whose turn runs past `sessions.workers.timeout_secs` of the clock is stopped, and
/// its failure reaches the conversation that started it, naming the setting. Nothing waits
/// the hour out: the clock is moved past it.
#[tokio::test]
async fn a_worker_that_never_ends_times_out_and_says_so() {
    let config = slow_forks(60_000, "sessions:\n  workers:\n    timeout_secs: 3600\n");
    let sim = Sim::builder("a_worker_that_never_ends_times_out_and_says_so")
        .config(&config)
        .start()
        .await;
    sim.create_agent("ada").await;
    let (accepted, finished) = sim
        .say("ada", "desk", &tool("agent.spawn_worker", json!({ "task": "/reply too late" })))
        .await;
    let id =
        started(finished.reply.as_deref().unwrap_or_default())["id"].as_str().unwrap().to_owned();
    model_called(&sim, 1).await;
    sim.advance(Duration::from_secs(3600));
    let failed = format!("[Worker {id} failed:");
    let replies = replies_with(&sim, accepted.session_id, &failed).await;
    let failure = replies.iter().find(|r| r.contains(&failed)).expect("the worker's failure");
    assert!(failure.contains("sessions.workers.timeout_secs"), "{failure}");
    let ended = events_of(&sim, accepted.session_id, "execution.ended").await;
    assert_eq!(ended[0]["status"], "failed", "{ended:?}");
}

/// The node dies just after a branch's turn ended and before its conclusion was delivered;
/// started again, it delivers the conclusion once. Killed again while another branch's model
/// call runs, that branch runs again after the restart and concludes once.
#[tokio::test]
async fn a_branch_conclusion_crosses_a_crash_exactly_once() {
    let mut sim = Sim::builder("a_branch_conclusion_crosses_a_crash_exactly_once")
        .config(&slow_forks(300, ""))
        .start()
        .await;
    sim.create_agent("ada").await;
    sim.arm("before_fork_settled", 1);
    let branch = tool("agent.branch", json!({ "task": "/reply first thought" }));
    let (accepted, finished) = sim.say("ada", "desk", &branch).await;
    let session = accepted.session_id;
    let first =
        started(finished.reply.as_deref().unwrap_or_default())["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.crashed().await, "before_fork_settled");
    sim.restart().await;
    let concluded = format!("[Branch {first} concluded]");
    let replies = replies_with(&sim, session, &concluded).await;
    assert_eq!(replies.iter().filter(|r| r.contains(&concluded)).count(), 1, "{replies:?}");

    let branch = tool("agent.branch", json!({ "task": "/reply second thought" }));
    let (_, finished) = sim.say("ada", "desk", &branch).await;
    let second = started(finished.reply.as_deref().unwrap_or_default());
    let second = second["id"].as_str().unwrap().to_owned();
    // Killed while the branch's model call is under way.
    model_called(&sim, 2).await;
    sim.restart().await;
    let concluded = format!("[Branch {second} concluded]");
    let replies = replies_with(&sim, session, &concluded).await;
    assert_eq!(replies.iter().filter(|r| r.contains(&concluded)).count(), 1, "{replies:?}");
    let conclusion = replies.iter().find(|r| r.contains(&concluded)).unwrap();
    assert!(conclusion.ends_with("second thought"), "{conclusion}");
    let branch_session: clade_core::SessionId = second.parse().unwrap();
    assert_eq!(sim.turns(branch_session).await.len(), 1, "the branch's turn ran once to its end");
    let ended = events_of(&sim, session, "execution.ended").await;
    assert_eq!(ended.len(), 2, "{ended:?}");
}

/// A worker whose turn uses all its iterations yields: its parent is told once that it waits
/// (and how to go on), with `execution.progress`, and the run stays open rather than failed.
#[tokio::test]
async fn a_worker_out_of_iterations_is_reported_paused_once() {
    let sim = Sim::builder("a_worker_out_of_iterations_is_reported_paused_once")
        .config("sessions:\n  workers:\n    max_iterations: 1\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    let task = tool("time.now", json!({}));
    let (accepted, finished) =
        sim.say("ada", "desk", &tool("agent.spawn_worker", json!({ "task": task }))).await;
    let session = accepted.session_id;
    let reply = started(finished.reply.as_deref().unwrap_or_default());
    let id = reply["id"].as_str().unwrap().to_owned();
    let execution: clade_core::ExecutionId = reply["execution"].as_str().unwrap().parse().unwrap();
    let paused = format!("[Worker {id} paused:");
    let replies = replies_with(&sim, session, &paused).await;
    let note = replies.iter().find(|r| r.contains(&paused)).expect("the worker's pause");
    assert!(note.contains(&format!("clade sessions resume {id}")), "{note}");
    let progress = events_of(&sim, session, "execution.progress").await;
    assert!(
        progress.iter().any(|p| p["detail"].as_str().is_some_and(|d| d.contains("paused"))),
        "{progress:?}"
    );
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let run = sim.on_node(async move |_| store.executions(tenant).get(execution).await).await;
    assert_eq!(run.unwrap().status, clade_core::ExecutionStatus::Running);
    // Told once: a later turn of the parent brings no second note.
    sim.say("ada", "desk", "anything new?").await;
    let replies = replies_with(&sim, session, "anything new?").await;
    assert_eq!(replies.iter().filter(|r| r.contains(&paused)).count(), 1, "{replies:?}");
}
