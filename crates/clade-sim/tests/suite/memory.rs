//! Memory the engine keeps by itself: completed turns mined beside the session.

use std::time::Duration;

use clade_sim::Sim;

/// The items of ada mined by ingestion under the isolation key `scope`.
async fn mined(sim: &Sim, scope: &str) -> Vec<clade_store::MemoryRow> {
    let items = sim.memories("ada", Some(scope)).await;
    items.into_iter().filter(|m| m.provenance.by == "ingestion").collect()
}

/// What a person says about themselves lands in the agent's memory under that person's
/// isolation key, with the session and turn it came from; questions and small talk do not; a
/// restart mines nothing twice (the miner goes on from its durable cursor); and another
/// person's key holds none of it.
#[tokio::test]
async fn completed_turns_are_mined_into_memory() {
    let mut sim = Sim::builder("completed_turns_are_mined_into_memory")
        .config("memory:\n  isolation: actor\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    let told = "My sister's name is Ingrid. I prefer window seats. How are you?";
    let envelope = sim.envelope("ada", "dm-1", "alice", told).await;
    let accepted = sim.submit(envelope).await.unwrap();
    let finished = sim.finished(&accepted).await;
    let items =
        clade_test_support::wait::polled(async || mined(&sim, "sim:alice").await, |i| i.len() >= 2)
            .await;
    let contents: Vec<&str> = items.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(items.len(), 2, "{contents:?}");
    assert!(
        contents.contains(&"My sister's name is Ingrid.")
            && contents.contains(&"I prefer window seats."),
        "{contents:?}"
    );
    assert!(items.iter().all(|m| m.provenance.session == Some(accepted.session_id)
        && m.provenance.turn == Some(finished.turn_id)));
    assert!(items.iter().all(|m| m.scope == "sim:alice"), "{items:?}");

    sim.restart().await;
    let hello = sim.envelope("ada", "dm-2", "bob", "hello there").await;
    let hello = sim.submit(hello).await.unwrap();
    sim.finished(&hello).await;
    clade_test_support::wait::holds_for(
        Duration::from_millis(500),
        "mined again after a restart",
        async || mined(&sim, "sim:alice").await.len(),
        |n| *n == 2,
    )
    .await;
    let bobs = mined(&sim, "sim:bob").await;
    assert!(bobs.iter().all(|m| !m.content.contains("Ingrid")), "{bobs:?}");
}
