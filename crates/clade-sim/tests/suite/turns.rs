//! Turns: what the engine does with a model's mistakes.

use clade_core::TurnStatus;
use clade_sim::Sim;

/// An unknown tool or arguments that are not JSON are the model's mistakes: it is told, and the
/// turn goes on to an answer. A reply that is not the provider's protocol fails the turn with
/// the reason, and the session stays usable.
#[tokio::test]
async fn model_mistakes_continue_the_turn_and_garbage_fails_it() {
    let sim = Sim::builder("model_mistakes_continue_the_turn_and_garbage_fails_it")
        .config(
            "models:\n  broken:\n    provider: openai\n    model: stub+malformed\n    base_url: {stub}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [scripted]\n  agents:\n    bob: { default: [broken] }\n",
        )
        .start()
        .await;
    sim.create_agent("ada").await;
    sim.create_agent("bob").await;
    for (text, needle) in
        [("/tool no_such_tool {}", "unknown tool"), ("/tool echo {not json", "not valid JSON")]
    {
        let (_, finished) = sim.say("ada", "mistakes", text).await;
        assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
        assert!(finished.reply.as_deref().unwrap_or_default().contains(needle), "{finished:?}");
    }
    let (_, finished) = sim.say("bob", "garbage", "hi").await;
    assert_eq!(finished.status, TurnStatus::Failed, "{finished:?}");
    assert!(finished.error.as_deref().unwrap_or_default().contains("malformed"), "{finished:?}");
    let (_, again) = sim.say("bob", "garbage", "again").await;
    assert_eq!(again.status, TurnStatus::Failed, "the session is not stuck: {again:?}");
}

/// An event waited for gets its own turn's answer, though another turn of its session ended
/// first; the same idempotency key again gets the same answer from the store, and no new turn.
#[tokio::test]
async fn a_waiting_event_gets_its_own_turn_and_a_repeated_key_the_same_answer() {
    let sim = Sim::builder("a_waiting_event_gets_its_own_turn_and_a_repeated_key_the_same_answer")
        .config(&super::slow_model(400))
        .start()
        .await;
    sim.create_agent("ada").await;
    // A slow turn first; the waited event queues behind it in the same session, so the first
    // turn to end there is not its own.
    let first = sim.submit(sim.envelope("ada", "c", "u", "/reply first").await).await.unwrap();
    let mut waiting = sim.envelope("ada", "c", "u", "/reply second").await;
    waiting.idempotency_key = Some("k-second".into());
    let accepted = sim.submit(waiting.clone()).await.unwrap();
    assert_eq!(accepted.session_id, first.session_id);
    let answer = sim.finished(&accepted).await;
    assert_eq!((answer.status, answer.reply.as_deref()), (TurnStatus::Completed, Some("second")));
    let turns = sim.turns(accepted.session_id).await;
    assert_eq!(turns.len(), 2, "{turns:#?}");
    let own = turns.iter().find(|t| t.turn.id == answer.turn_id).expect("the answer's turn");
    assert_eq!(own.turn.reply.as_deref(), Some("second"));

    let again = sim.submit(waiting).await.unwrap();
    assert!(again.duplicate, "the key was seen before");
    assert_eq!(again.event_id, accepted.event_id);
    assert_eq!(sim.finished(&again).await, answer);
    assert_eq!(sim.turns(accepted.session_id).await.len(), 2, "no new turn");
}

/// Each turn records the configuration revision it ran with: editing the agent's `SOUL.md`
/// changes it (once the engine's one-second trust in its last look has passed on the clock),
/// and an unchanged configuration keeps it.
#[tokio::test]
async fn each_turn_records_the_config_revision_it_ran_with() {
    let sim = Sim::builder("each_turn_records_the_config_revision_it_ran_with").start().await;
    sim.create_agent("ada").await;
    let ws = sim.workspace("ada").await;
    let mut revisions = Vec::new();
    for (n, edit) in [None, Some("You are terse."), None].into_iter().enumerate() {
        if let Some(text) = edit {
            std::fs::write(ws.join("SOUL.md"), text).unwrap();
            sim.advance(std::time::Duration::from_millis(1_001));
        }
        let (accepted, _) = sim.say("ada", "rev", &format!("turn {n}")).await;
        let turns = sim.turns(accepted.session_id).await;
        revisions.push(turns.last().unwrap().turn.config_revision);
    }
    assert_ne!(revisions[0], revisions[1], "editing SOUL.md must change the revision");
    assert_eq!(revisions[1], revisions[2], "an unchanged config keeps its revision");
}

/// A panic inside a turn fails that turn only: its event is answered as failed, the actor
/// stays, and the session's next message runs as usual.
#[tokio::test]
async fn a_panicking_turn_fails_alone_and_the_session_goes_on() {
    let sim = Sim::builder("a_panicking_turn_fails_alone_and_the_session_goes_on")
        .tool(std::sync::Arc::new(super::TestTool {
            run: || panic!("a bug in a tool"),
            ..super::TestTool::answering("bug.panic")
        }))
        .start()
        .await;
    sim.create_agent("ada").await;
    let (accepted, failed) = sim.say("ada", "c1", "/tool bug.panic {}").await;
    assert_eq!(failed.status, TurnStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("internal error while running the turn"));
    let turns = sim.turns(accepted.session_id).await;
    assert_eq!(turns[0].turn.error.as_deref(), Some("internal error while running the turn"));
    assert_eq!(sim.say("ada", "c1", "after").await.1.status, TurnStatus::Completed);
    assert_eq!(sim.say("ada", "c2", "elsewhere").await.1.status, TurnStatus::Completed);
}

/// A session's actor keeps its history between turns instead of reading it each time. Its
/// turns must see exactly what a fresh actor, reading the store, would: the same messages give
/// the same context size in a session whose actor stays and in one whose every turn runs on a
/// node started afresh (and, on the way, a turn that does not complete stays out of both).
#[tokio::test]
async fn a_kept_history_matches_the_stored_one() {
    // A short window, so turns leave it; one model call per turn, so a turn that calls a tool
    // yields instead of completing; no compaction (`suite::compaction` has it) and no memory,
    // whose recall would differ between the two sessions.
    let mut sim = Sim::builder("a_kept_history_matches_the_stored_one")
        .config("sessions:\n  history_turns: 3\n  max_iterations: 1\n  compaction:\n    enabled: false\nmemory:\n  enabled: false\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    let script = [
        "hello",
        "/reply a much longer answer than the others",
        "/tool none.such {}",
        "three",
        "four",
        "five",
        "six",
    ];
    async fn turn(sim: &Sim, channel: &str, text: &str) -> (TurnStatus, u64) {
        let (accepted, finished) = sim.say("ada", channel, text).await;
        let turns = sim.turns(accepted.session_id).await;
        let record = turns.iter().find(|r| r.turn.id == finished.turn_id).unwrap();
        (finished.status, record.usage.input_tokens)
    }
    let mut kept = Vec::new();
    for text in script {
        kept.push(turn(&sim, "c1", text).await);
    }
    let mut fresh = Vec::new();
    for text in script {
        // A new node, whose actor for the session starts from the store.
        sim.restart().await;
        fresh.push(turn(&sim, "c2", text).await);
    }
    assert_eq!(kept[2].0, TurnStatus::Yielded, "{kept:?}");
    assert!(
        kept.iter().enumerate().all(|(n, t)| n == 2 || t.0 == TurnStatus::Completed),
        "{kept:?}"
    );
    assert_eq!(kept, fresh, "a kept history differs from the stored one");
    // The window is full by the fifth turn: the context stops growing with the session, but
    // changes as the long reply leaves it.
    let tokens: Vec<u64> = kept.iter().map(|t| t.1).collect();
    assert!(tokens[1] < tokens[3], "{tokens:?}");
    assert!(tokens[6] < tokens[5], "the long reply must have left the window: {tokens:?}");
}
