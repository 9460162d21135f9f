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

/// Everything the model was sent in its last call, and its messages.
fn last_call(sim: &Sim) -> Vec<serde_json::Value> {
    let captured = sim.stub().captured();
    let last = captured.iter().rev().find(|c| c.path.ends_with("/chat/completions")).unwrap();
    last.body["messages"].as_array().cloned().unwrap_or_default()
}

/// An agent keeps values in its conversation's working memory with the scratchpad tools: every
/// later turn of that conversation, and of no other, shows them to the model, just before the
/// turn's message; a value over the limit is the tool's error; a cleared value is shown no
/// more.
#[tokio::test]
async fn working_memory_carries_values_between_the_turns_of_one_conversation() {
    let sim = Sim::builder("working_memory_carries_values_between_the_turns_of_one_conversation")
        .config("models:\n  main: { provider: openai, base_url: \"{stub}/v1\", model: stub }\nrouting:\n  default: [main]\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    let say = async |channel: &str, text: &str| {
        let (_, finished) = sim.say("ada", channel, text).await;
        finished.reply.unwrap_or_default()
    };
    let set =
        say("trip", r#"/tool scratchpad.set {"name":"plan","value":"1. book flights\n2. pack"}"#)
            .await;
    assert!(set.contains("kept"), "{set}");
    say("trip", "what next?").await;
    let messages = last_call(&sim);
    let context = serde_json::Value::Array(messages.clone()).to_string();
    // The history shows the tool call too: the block is what says the value is held.
    assert!(
        context.contains("Your working memory") && context.contains("- plan: 1. book flights"),
        "{context}"
    );
    // After the history, just before this turn's message.
    assert_eq!(messages[messages.len() - 1]["content"], "what next?");
    let block = messages[messages.len() - 2]["content"].as_str().unwrap();
    assert!(block.starts_with("Your working memory"), "{block}");
    say("elsewhere", "what next?").await;
    let elsewhere = serde_json::Value::Array(last_call(&sim)).to_string();
    assert!(!elsewhere.contains("book flights"), "another conversation saw it");

    let big = format!(r#"/tool scratchpad.set {{"name":"notes","value":"{}"}}"#, "x".repeat(3000));
    assert!(say("trip", &big).await.contains("2048 bytes"));
    assert!(say("trip", r#"/tool scratchpad.clear {"name":"plan"}"#).await.contains("cleared"));
    say("trip", "and now?").await;
    let after = serde_json::Value::Array(last_call(&sim)).to_string();
    assert!(!after.contains("- plan: "), "a cleared value is still shown");
}
