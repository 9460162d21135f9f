//! Model faults drawn from the seed: the router retries them on the simulated clock, and one
//! seed fails the same calls in every run.

use std::time::Duration;

use clade_core::TurnStatus;
use clade_sim::Sim;

const MODEL: &str = "models:\n  flaky:\n    provider: openai\n    model: stub\n    base_url: {stub}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [flaky]\n";

/// Runs eight turns against a model that answers 429 to about half of the calls (the ones
/// the seed picks), moving the clock while each turn waits out its back-off: the calls the stub
/// saw, and how each turn ended (its reply, or its error).
async fn eight_turns(seed_name: &str) -> (usize, Vec<(TurnStatus, String)>) {
    let sim = Sim::builder(seed_name).config(MODEL).model_faults(500, 429).start().await;
    sim.create_agent("ada").await;
    let mut ends = Vec::new();
    for n in 0..8 {
        let envelope = sim.envelope("ada", "c", "u", &format!("question {n}")).await;
        let accepted = sim.submit(envelope).await.unwrap();
        let finished = loop {
            tokio::select! {
                finished = sim.finished(&accepted) => break finished,
                () = sim.run_for(Duration::from_secs(1)) => {}
            }
        };
        let said = finished.reply.or(finished.error).unwrap_or_default();
        ends.push((finished.status, said));
        // The next question comes later, when a cooldown the refusals began has ended.
        sim.run_for(Duration::from_secs(5)).await;
    }
    (super::model_calls(&sim), ends)
}

/// Refused calls are retried after their back-off: a turn completes unless every try the
/// router makes is refused, and then it fails saying the model is rate limited. The same seed
/// refuses the same calls: the runs match call for call and turn for turn.
#[tokio::test]
async fn seeded_model_faults_are_retried_and_replay_the_same() {
    let name = "seeded_model_faults_are_retried_and_replay_the_same";
    let (calls, ends) = eight_turns(name).await;
    // Each completed turn made one call that was answered: the others were refused.
    let completed = ends.iter().filter(|(status, _)| *status == TurnStatus::Completed).count();
    assert!(calls > completed, "the seed refused none of the {calls} calls: {ends:?}");
    for (status, said) in &ends {
        assert!(
            *status == TurnStatus::Completed || said.contains("rate limited"),
            "{status:?}: {said}"
        );
    }
    assert!(completed > 0, "{ends:?}");
    assert_eq!((calls, ends), eight_turns(name).await, "one seed, one run");
}
