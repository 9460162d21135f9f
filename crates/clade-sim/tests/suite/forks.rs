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
    assert!(note.contains(&format!("resume session {id}")), "{note}");
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

/// A channel starts a branch and a worker, answers the next message while both still run
/// (their route is slow), and then answers each outcome, which arrives as a message of its own:
/// the branch's conclusion, the worker's report after its status line. A follow-up to the
/// worker continues it; a worker given one tool has no other; a third running branch is over
/// the limit; a cancelled worker never reports; and bad input is refused, naming the problem.
#[tokio::test]
async fn a_channel_keeps_answering_while_its_branch_and_worker_run_then_uses_their_results() {
    let sim = Sim::builder(
        "a_channel_keeps_answering_while_its_branch_and_worker_run_then_uses_their_results",
    )
    .config(&slow_forks(1500, "sessions:\n  branches:\n    max_per_session: 2\n"))
    .start()
    .await;
    sim.create_agent("ada").await;
    sim.create_agent("bo").await;
    let say = async |agent: &str, text: &str| {
        let (accepted, finished) = sim.say(agent, "desk", text).await;
        (accepted.session_id, finished.reply.unwrap_or_default())
    };

    let (session, reply) =
        say("ada", &tool("agent.branch", json!({ "task": "/reply the answer is 42" }))).await;
    let branch = started(&reply);
    assert_eq!(
        (branch["kind"].as_str(), branch["status"].as_str()),
        (Some("branch"), Some("running"))
    );
    let branch_id = branch["id"].as_str().unwrap().to_owned();
    let set_status = tool("worker.set_status", json!({ "status": "halfway there" }));
    let (_, reply) = say("ada", &tool("agent.spawn_worker", json!({ "task": set_status }))).await;
    let worker_id = started(&reply)["id"].as_str().unwrap().to_owned();

    // The channel answers at once while both are still on their slow model calls.
    let (_, hello) = say("ada", "hello").await;
    assert_eq!(hello, "echo: hello");
    assert_eq!(events_of(&sim, session, "execution.ended").await, Vec::<Value>::new());
    let running = events_of(&sim, session, "execution.started").await;
    assert_eq!(running.len(), 2, "{running:?}");

    // Their outcomes arrive as messages, and the channel answers each.
    let concluded = format!("[Branch {branch_id} concluded]");
    let reported = format!("[Worker {worker_id} reports]");
    replies_with(&sim, session, &concluded).await;
    let replies = replies_with(&sim, session, &reported).await;
    let conclusion =
        replies.iter().find(|r| r.contains(&concluded)).expect("the branch's conclusion");
    assert!(conclusion.contains("\n\nthe answer is 42"), "{conclusion}");
    // Two messages came after the branch started (the worker's start and "hello"): marked.
    assert!(conclusion.contains("(Stale: 2 messages arrived"), "{conclusion}");
    let report = replies.iter().find(|r| r.contains(&reported)).expect("the worker's report");
    // (The stub's OpenAI wire spells tool names with underscores.)
    assert!(report.contains("set_status -> status set"), "{report}");
    assert!(!report.contains("Stale"), "a worker's report is not a forked thought: {report}");
    assert_eq!(replies.iter().filter(|r| r.contains(&concluded)).count(), 1, "{replies:?}");
    let progress = events_of(&sim, session, "execution.progress").await;
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert_eq!(progress[0]["detail"], "halfway there");
    assert_eq!(progress[0]["fork"], worker_id.as_str());
    let ended = events_of(&sim, session, "execution.ended").await;
    assert!(ended.iter().all(|e| e["status"] == "completed"), "{ended:?}");
    let branch_session: clade_core::SessionId = branch_id.parse().unwrap();
    let branch_turns = sim.turns(branch_session).await;
    assert_eq!(branch_turns.len(), 1, "{branch_turns:?}");
    assert_eq!(branch_turns[0].turn.reply.as_deref(), Some("the answer is 42"));
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let fork =
        sim.on_node(async move |_| store.sessions(tenant).get(branch_session).await).await.unwrap();
    assert_eq!(fork.source.platform, clade_core::Origin::Branch, "{fork:?}");

    // A follow-up continues the same worker, in the same session, as a new run.
    let follow = json!({ "worker": worker_id, "task": "/reply all done" });
    let (_, reply) = say("ada", &tool("agent.spawn_worker", follow)).await;
    assert_eq!(started(&reply)["id"], worker_id.as_str());
    let twice = |turns: &[clade_store::TurnRecord]| {
        let replies = turns.iter().filter_map(|t| t.turn.reply.as_deref());
        replies.filter(|r| r.contains(&reported)).count() == 2
    };
    let turns = sim.turns_until(session, twice).await;
    assert!(
        turns
            .iter()
            .filter_map(|t| t.turn.reply.as_deref())
            .any(|r| r.contains(&reported) && r.ends_with("all done")),
        "{turns:#?}"
    );
    let worker_session: clade_core::SessionId = worker_id.parse().unwrap();
    assert_eq!(sim.turns_until(worker_session, |t| t.len() == 2).await.len(), 2);

    // A worker given `time.now` alone cannot read files, nor start branches.
    let read = tool("fs.read", json!({ "path": "SOUL.md" }));
    let narrow = json!({ "task": format!("{read}\n{}", tool("agent.branch", json!({ "task": "x" }))), "tools": ["time.now"] });
    let (_, reply) = say("ada", &tool("agent.spawn_worker", narrow)).await;
    let narrow_id = started(&reply)["id"].as_str().unwrap().to_owned();
    let narrow_report = format!("[Worker {narrow_id} reports]");
    let replies = replies_with(&sim, session, &narrow_report).await;
    let report = replies.iter().find(|r| r.contains(&narrow_report)).unwrap();
    assert!(report.contains("read -> ") && report.contains("branch -> "), "{report}");
    assert_eq!(report.matches("unknown tool").count(), 2, "{report}");
    // What it is told it has is what it was given, not all its agent's tools.
    assert!(report.contains("time.now") && !report.contains("ledger.append"), "{report}");

    // Two branches at once is the limit here; a third is refused while they run.
    let slow_task = json!({ "task": "/reply slow thoughts" });
    for _ in 0..2 {
        let (_, reply) = say("ada", &tool("agent.branch", slow_task.clone())).await;
        started(&reply);
    }
    let (_, refused) = say("ada", &tool("agent.branch", slow_task)).await;
    assert!(refused.contains("2 branches of this conversation run already"), "{refused}");

    // A cancelled worker stops, and never reports.
    let (_, reply) =
        say("ada", &tool("agent.spawn_worker", json!({ "task": "/reply never seen" }))).await;
    let doomed = started(&reply)["id"].as_str().unwrap().to_owned();
    // Another agent of the tenant cannot cancel it.
    let (_, theirs) = say("bo", &tool("agent.cancel", json!({ "id": doomed }))).await;
    assert!(theirs.contains("you started no branch or worker"), "{theirs}");
    let (_, cancelled) = say("ada", &tool("agent.cancel", json!({ "id": doomed }))).await;
    assert!(cancelled.contains(&format!("cancelled worker {doomed}")), "{cancelled}");
    let cancelled_end = async || {
        let ended = events_of(&sim, session, "execution.ended").await;
        ended.into_iter().find(|e| e["fork"] == doomed.as_str())
    };
    let end = clade_test_support::wait::eventually(cancelled_end).await.expect("its end");
    assert_eq!(end["status"], "cancelled", "{end}");
    let reported = format!("Worker {doomed}");
    clade_test_support::wait::holds_for(
        std::time::Duration::from_millis(2500),
        "a cancelled worker reported back",
        async || sim.turns(session).await,
        |turns| {
            !turns.iter().filter_map(|t| t.turn.reply.as_deref()).any(|r| r.contains(&reported))
        },
    )
    .await;

    // Bad input: each a clear refusal.
    for (args, expected) in [
        (json!({ "task": "" }), "task: empty"),
        (
            json!({ "task": "x", "tools": ["agent.branch"] }),
            "not one of your tools a worker can be given",
        ),
        (
            json!({ "task": "x", "tools": ["no.such"] }),
            "not one of your tools a worker can be given",
        ),
        (json!({ "task": "x", "worker": "not-an-id" }), "is not a worker's id"),
        (json!({ "task": "x", "worker": branch_id }), "started no worker"),
    ] {
        let (_, refused) = say("ada", &tool("agent.spawn_worker", args)).await;
        assert!(refused.contains(expected), "{expected}: {refused}");
    }
}
