//! Compaction, with `clade-stub` as the models (its captured requests show what each call
//! held): facts planted early in a long session are still in the model's context after two
//! compactions whose summary drops them; a prompt the provider refuses as too long is
//! compacted and tried once more; and while a slow compactor works, no turn waits for it and
//! none sends more than the window.

use clade_core::TurnStatus;
use clade_sim::Sim;
use serde_json::{Value, json};

/// The model calls the stub received for `model` (as named in the request body).
fn calls_to(sim: &Sim, model: &str) -> Vec<Value> {
    sim.stub()
        .captured()
        .into_iter()
        .filter(|c| c.path.ends_with("/chat/completions") && c.body["model"] == model)
        .map(|c| c.body)
        .collect()
}

/// A request's prompt size as the stub counts it: one token per 4 bytes of each message.
fn prompt_tokens(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().len().div_ceil(4))
        .sum()
}

/// A simulation named `name` with agent `ada` and `config` as its clade.yaml.
async fn sim(name: &str, config: &str) -> Sim {
    let sim = Sim::builder(name).config(config).start().await;
    sim.create_agent("ada").await;
    sim
}

/// Says `text` to ada on the trip channel; the turn must complete. Its session.
async fn say(sim: &Sim, text: &str) -> clade_core::SessionId {
    let (accepted, finished) = sim.say("ada", "trip", text).await;
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
    accepted.session_id
}

/// Small talk with no fact in it, distinct per turn, about 700 bytes.
fn filler(topic: &str) -> String {
    let clause = format!(
        "tell me more about {topic} clouds, how they form and how they look at dusk over the sea"
    );
    format!("Please {}.", vec![clause; 8].join(", and again "))
}

const TOPICS: [&str; 14] = [
    "cumulus",
    "stratus",
    "cirrus",
    "nimbus",
    "altocumulus",
    "altostratus",
    "cirrostratus",
    "cirrocumulus",
    "stratocumulus",
    "cumulonimbus",
    "lenticular",
    "mammatus",
    "noctilucent",
    "shelf",
];

#[tokio::test]
async fn facts_planted_early_survive_two_compactions_that_drop_them_from_the_summary() {
    // The compactor's summary is fixed and lossy: the facts can only come through memory, and
    // only compaction saves to it here (ingestion is off).
    let lossy = "stub+fixed=They_talked_about_clouds_at_length.";
    let sim = sim(
        "facts_planted_early_survive_two_compactions_that_drop_them_from_the_summary",
        &format!(
            "models:\n  main: {{ provider: openai, base_url: \"{{stub}}/v1\", model: stub, context_window: 2048 }}\n  squeeze: {{ provider: openai, base_url: \"{{stub}}/v1\", model: \"{lossy}\" }}\nrouting:\n  default: [main]\n  compactor: [squeeze]\nmemory:\n  ingest: off\n"
        ),
    )
    .await;
    let session =
        say(&sim, "My sister's name is Ingrid Solberg. The project budget is 48,250 euros.").await;
    say(
        &sim,
        "We decided to fly to Lisbon on the 14th of March. TODO: renew the passport before the trip.",
    )
    .await;
    for topic in TOPICS {
        say(&sim, &filler(topic)).await;
    }
    // Compactions run beside the session: wait until two have committed.
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let summaries = async || {
        let store = store.clone();
        sim.on_node(async move |_| store.sessions(tenant).summaries(session, 100).await)
            .await
            .unwrap()
    };
    let items = clade_test_support::wait::polled(summaries, |s| s.len() >= 2).await;
    assert!(items.len() >= 2, "fewer than two compactions: {items:?}");
    assert_eq!(items[0].text, "They talked about clouds at length.");
    assert_eq!(items[0].model.as_deref(), Some("squeeze"));
    assert!(items[0].turns > items[1].turns);
    assert!(items.iter().map(|i| i.memories).sum::<u32>() >= 4, "{items:?}");
    assert!(calls_to(&sim, lossy).len() >= 2);

    say(
        &sim,
        "Remind me: what is my sister's name, the project budget, where did we decide to fly, and what is on my todo list?",
    )
    .await;
    let last = calls_to(&sim, "stub").pop().unwrap();
    let context = last["messages"].to_string();
    for fact in ["Ingrid Solberg", "48,250 euros", "fly to Lisbon", "renew the passport"] {
        assert!(context.contains(fact), "{fact:?} was lost to compaction: {context}");
    }
    // They are there through memory, not because the planted turns were still shown.
    let history: Vec<&Value> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["content"].as_str().unwrap_or_default().contains("Memories recalled"))
        .collect();
    assert!(!json!(history).to_string().contains("Ingrid"), "the planted turn is still shown");
    assert!(context.contains("They talked about clouds at length."), "no summary: {context}");
    // The transcript is archived whole.
    assert_eq!(sim.turns(session).await.len(), 2 + TOPICS.len() + 1);
    let memories = sim.memories("ada", None).await;
    let compacted = memories.iter().filter(|m| m.provenance.by == "compaction").count();
    assert!(compacted >= 4, "{memories:?}");
    // Small talk was not mined.
    assert!(memories.iter().all(|m| !m.content.contains("clouds")), "{memories:?}");
}

#[tokio::test]
async fn a_prompt_the_provider_refuses_as_too_long_is_compacted_and_tried_once_more() {
    // The configured window is wrong (too large): only the provider's refusal says so.
    let sim = sim(
        "a_prompt_the_provider_refuses_as_too_long_is_compacted_and_tried_once_more",
        "models:\n  main: { provider: openai, base_url: \"{stub}/v1\", model: \"stub+max-context=1500\", context_window: 100000 }\nrouting:\n  default: [main]\nmemory:\n  enabled: false\n",
    )
    .await;
    let mut session = None;
    for topic in &TOPICS[..6] {
        session = Some(say(&sim, &filler(topic)).await);
    }
    let refused = sim
        .stub()
        .captured()
        .iter()
        .filter(|c| c.path.ends_with("/chat/completions") && prompt_tokens(&c.body) > 1500)
        .count();
    assert!(refused >= 1, "the provider never refused a prompt; the test proves nothing");
    let (store, tenant, session) = (sim.store(), sim.tenant().await.id, session.unwrap());
    let summaries = sim
        .on_node(async move |_| store.sessions(tenant).summaries(session, 100).await)
        .await
        .unwrap();
    assert!(!summaries.is_empty(), "the refused prompt was not compacted");
}

#[tokio::test]
async fn while_a_slow_compactor_works_turns_go_on_within_the_window() {
    let sim = sim(
        "while_a_slow_compactor_works_turns_go_on_within_the_window",
        "models:\n  main: { provider: openai, base_url: \"{stub}/v1\", model: stub, context_window: 4096, max_tokens: 256 }\n  slow: { provider: openai, base_url: \"{stub}/v1\", model: \"stub+latency=20000\" }\nrouting:\n  default: [main]\n  compactor: [slow]\nmemory:\n  enabled: false\n",
    )
    .await;
    for topic in &TOPICS[..8] {
        say(&sim, &format!("{} {}", filler(topic), filler(topic))).await;
    }
    let calls = calls_to(&sim, "stub");
    assert_eq!(calls.len(), 8);
    // The history outgrew the window several times over; no call was sent past it, its
    // answer (max_tokens) included.
    let largest = calls.iter().map(prompt_tokens).max().unwrap();
    assert!(
        largest + 256 <= 4096,
        "a prompt of {largest} tokens and 256 of answer went to a 4096-token model"
    );
    let last = calls.last().unwrap()["messages"].as_array().unwrap().len();
    assert!(last >= 3, "the newest turns were dropped too: {last} messages");
}
