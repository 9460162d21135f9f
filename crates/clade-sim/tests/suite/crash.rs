//! Crash-exact turns in the simulator: the node dies at each of the engine's failpoints (the
//! seed picks which event it dies on), starts again on the same store, and the event's turn
//! ends once, with no side effect repeated.

use clade_core::TurnStatus;
use clade_sim::{Backend, Sim};

const POINTS: [&str; 3] = [
    // The event committed, the client never told: its retry (same key) gets the same event.
    "after_commit_before_ack",
    // The call's start journaled, the tool not run: never run after the restart.
    "after_journal_intent",
    // The tool ran, its result not journaled: not run again; the model is told.
    "after_tool_effect_before_result",
];

/// What the victim's turn did to the at-most-once ledger tool, across the crash: `effects`
/// lines written, and whether its reply says the call was interrupted.
fn check(point: &str, effects: usize, interrupted: bool, reply: &str) {
    match point {
        // The turn runs beside the acknowledgement: it may have started its call before the
        // node died (then the call is interrupted, run at most once), or not (then it runs
        // once after the restart).
        "after_commit_before_ack" => {
            assert!(effects <= 1, "{point}: the tool ran {effects} times");
            assert!(interrupted || effects == 1, "{point}: the call never ran: {reply}");
        }
        "after_journal_intent" => {
            assert!(interrupted, "{point}: {reply}");
            assert_eq!(effects, 0, "{point}: a call whose start was journaled ran after all");
        }
        _ => {
            assert!(interrupted, "{point}: {reply}");
            assert_eq!(effects, 1, "{point}: the call that ran once ran again (or not at all)");
        }
    }
}

async fn crash_at_each_point(backend: Backend) {
    for point in POINTS {
        let name = format!("crash_at_{point}_{backend:?}");
        let Some(mut sim) = Sim::builder(&name).backend(backend).start_on_backend().await else {
            return;
        };
        sim.create_agent("ada").await;
        // The seed decides which of three events the node dies on.
        let victim = (sim.seed() % 3) as usize;
        let mut victim_key = None;
        for n in 0..3 {
            let mut envelope = sim
                .envelope(
                    "ada",
                    &format!("c{n}"),
                    "u",
                    &format!("/tool ledger.append {{\"note\":\"{n}\"}}"),
                )
                .await;
            envelope.idempotency_key = Some(format!("event-{n}"));
            if n == victim {
                sim.arm(point, 1);
                victim_key = Some(envelope.clone());
                // The submit itself halts at the first point; the turn, later, at the others.
                tokio::select! {
                    _ = sim.submit(envelope) => {}
                    _ = sim.crashed() => {}
                }
                assert_eq!(sim.crashed().await, point);
                break;
            }
            let accepted = sim.submit(envelope).await.unwrap();
            let finished = sim.finished(&accepted).await;
            assert_eq!(finished.status, TurnStatus::Completed, "{point}: {finished:?}");
        }
        sim.restart().await;
        // The client retries the event it was never told about, with the same key.
        let retry = victim_key.expect("a victim");
        let accepted = sim.submit(retry).await.unwrap();
        let finished = sim.finished(&accepted).await;
        assert_eq!(finished.status, TurnStatus::Completed, "{point}: {finished:?}");
        let reply = finished.reply.unwrap_or_default();
        let turns = sim.turns(accepted.session_id).await;
        assert_eq!(turns.len(), 1, "{point}: one turn for the event: {turns:#?}");
        // The events before the victim's each wrote one line.
        let effects = sim.ledger().len() - victim;
        check(point, effects, reply.contains("interrupted by a restart"), &reply);
    }
}

#[tokio::test]
async fn a_crash_at_any_engine_failpoint_loses_no_turn_and_repeats_no_effect_on_sqlite() {
    crash_at_each_point(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_crash_at_any_engine_failpoint_loses_no_turn_and_repeats_no_effect_on_postgres() {
    crash_at_each_point(Backend::Postgres).await;
}
