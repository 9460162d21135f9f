//! Compaction through the real binary, with `clade-stub` as the models (its captured requests
//! show what each call held): the contract that facts planted early in a long session are
//! still in the model's context after two compactions, with a compactor whose summary drops
//! them; a prompt the provider refuses as too long is compacted and tried once more; and
//! while a slow compactor works, no turn waits for it and none sends more than the window.

use serde_json::{Value, json};

use super::support::{Env, Server, polled, write};

/// The model calls the stub received for `model` (as named in the request body).
fn calls_to(stub: &clade_stub::Stub, model: &str) -> Vec<Value> {
    stub.captured()
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

/// A gateway with agent `ada` and `clade.yaml` as `config` writes it for the stub's URL, and
/// the stub it talks to.
async fn gateway(config: impl Fn(&str) -> String) -> (clade_stub::Stub, Env, Server) {
    let stub =
        clade_stub::Stub::start("127.0.0.1:0", clade_stub::StubOptions::default()).await.unwrap();
    let env = Env::new();
    env.run(&["agents", "create", "ada"]).ok();
    write(&env.data_dir().join("clade.yaml"), &config(stub.url()));
    let server = env.serve(&[]);
    (stub, env, server)
}

async fn say(server: &Server, text: &str) -> Value {
    let body = json!({ "agent": "ada", "text": text, "wait": true,
        "source": { "platform": "http", "channel": "trip", "actor": "alice" } });
    let (status, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "completed", "{answer}");
    answer
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_planted_early_survive_two_compactions_that_drop_them_from_the_summary() {
    // The compactor's summary is fixed and lossy: the facts can only come through memory, and
    // only compaction saves to it here (ingestion is off).
    let lossy = "stub+fixed=They_talked_about_clouds_at_length.";
    let (stub, env, server) = gateway(|url| {
        format!(
            "models:\n  main: {{ provider: openai, base_url: \"{url}/v1\", model: stub, context_window: 2048 }}\n  squeeze: {{ provider: openai, base_url: \"{url}/v1\", model: \"{lossy}\" }}\nrouting:\n  default: [main]\n  compactor: [squeeze]\nmemory:\n  ingest: off\n"
        )
    })
    .await;
    let first =
        say(&server, "My sister's name is Ingrid Solberg. The project budget is 48,250 euros.")
            .await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    say(
        &server,
        "We decided to fly to Lisbon on the 14th of March. TODO: renew the passport before the trip.",
    )
    .await;
    for topic in TOPICS {
        say(&server, &filler(topic)).await;
    }
    // Compactions run beside the session: wait until two have committed.
    let path = format!("/v1/sessions/{session}/summaries");
    let two = |summaries: &Value| summaries["items"].as_array().is_some_and(|s| s.len() >= 2);
    let summaries = polled(async || server.get_json(&path).await, two).await;
    let items = summaries["items"].as_array().unwrap().clone();
    if items.len() < 2 {
        panic!("fewer than two compactions: {summaries}\n{}", server.stop());
    }
    assert_eq!(items[0]["text"], "They talked about clouds at length.");
    assert_eq!(items[0]["model"], "squeeze");
    assert!(items[0]["turns"].as_u64().unwrap() > items[1]["turns"].as_u64().unwrap());
    assert!(items.iter().map(|i| i["memories"].as_u64().unwrap()).sum::<u64>() >= 4, "{summaries}");
    assert!(calls_to(&stub, lossy).len() >= 2);
    let listed = env.run(&["sessions", "summaries", &session, "--json"]).ok().stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(listed.as_array().unwrap().len() >= 2, "{listed}");

    say(
        &server,
        "Remind me: what is my sister's name, the project budget, where did we decide to fly, and what is on my todo list?",
    )
    .await;
    let last = calls_to(&stub, "stub").pop().unwrap();
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
    assert_eq!(server.all_turns(&session).await.len(), 2 + TOPICS.len() + 1);
    let memories = server.get_json("/v1/agents/ada/memories?limit=100").await;
    let compacted = memories["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["provenance"]["by"] == "compaction")
        .count();
    assert!(compacted >= 4, "{memories}");
    // Small talk was not mined.
    assert!(!memories.to_string().contains("clouds"), "{memories}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_the_provider_refuses_as_too_long_is_compacted_and_tried_once_more() {
    // The configured window is wrong (too large): only the provider's refusal says so.
    let (stub, _env, server) = gateway(|url| {
        format!(
            "models:\n  main: {{ provider: openai, base_url: \"{url}/v1\", model: \"stub+max-context=1500\", context_window: 100000 }}\nrouting:\n  default: [main]\nmemory:\n  enabled: false\n"
        )
    })
    .await;
    let mut session = String::new();
    for topic in &TOPICS[..6] {
        let body = json!({ "agent": "ada", "text": filler(topic), "wait": true,
            "source": { "platform": "http", "channel": "trip", "actor": "alice" } });
        let (_, answer) = server.send("POST", "/v1/events", None, Some(body)).await;
        if answer["status"] != "completed" {
            panic!("{answer}\n{}", server.stop());
        }
        session = answer["session_id"].as_str().unwrap().to_owned();
    }
    let refused = stub
        .captured()
        .iter()
        .filter(|c| c.path.ends_with("/chat/completions") && prompt_tokens(&c.body) > 1500)
        .count();
    assert!(refused >= 1, "the provider never refused a prompt; the test proves nothing");
    let summaries = server.get_json(&format!("/v1/sessions/{session}/summaries")).await;
    assert!(!summaries["items"].as_array().unwrap().is_empty(), "{summaries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_slow_compactor_works_turns_go_on_within_the_window() {
    let (stub, _env, server) = gateway(|url| {
        format!(
            "models:\n  main: {{ provider: openai, base_url: \"{url}/v1\", model: stub, context_window: 4096, max_tokens: 256 }}\n  slow: {{ provider: openai, base_url: \"{url}/v1\", model: \"stub+latency=20000\" }}\nrouting:\n  default: [main]\n  compactor: [slow]\nmemory:\n  enabled: false\n"
        )
    })
    .await;
    for topic in &TOPICS[..8] {
        say(&server, &format!("{} {}", filler(topic), filler(topic))).await;
    }
    let calls = calls_to(&stub, "stub");
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
