//! The local chat model through the real loading and generation code: a tiny random-weight
//! llama written in the test (it loads, its Q4_1 weights are requantized, it streams tokens and
//! stops at `max_tokens`, a prompt past its context is refused as too long), clear errors for
//! a missing, cut or foreign file, and the real SmolLM2-135M-Instruct when its file is there
//! (`CLADE_TEST_SMOLLM2`, which `scripts/test` sets): it answers a question sensibly.

use clade_model::local_chat::{LoadError, LocalChat, write_test_model};
use clade_model::provider::Provider;
use clade_model::types::{Message, ModelRequest, ModelResponse, Params, StopReason};
use futures::StreamExt;

async fn answer(
    model: &LocalChat,
    text: &str,
    max_tokens: u32,
) -> Result<ModelResponse, clade_model::error::Error> {
    let messages = vec![Message::system("You are a helpful assistant."), Message::user(text)];
    answer_to(model, messages, max_tokens).await
}

/// The tiny test model's file, in a folder that lasts as long as the first value.
fn tiny_model() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.gguf");
    write_test_model(&file).unwrap();
    (tmp, file)
}

/// The model's answer after `messages`.
async fn answer_to(
    model: &LocalChat,
    messages: Vec<Message>,
    max_tokens: u32,
) -> Result<ModelResponse, clade_model::error::Error> {
    let request = ModelRequest {
        messages,
        tools: Vec::new().into(),
        params: Params { max_tokens, temperature: Some(0.0) },
        cache_scope: Some("one tenant".into()),
    };
    let mut stream = model.stream("local", &request).await?;
    let mut response = ModelResponse::default();
    let mut pieces = 0;
    while let Some(event) = stream.next().await {
        let event = event?;
        if matches!(event, clade_model::types::StreamEvent::TextDelta(_)) {
            pieces += 1;
        }
        response.apply(event);
    }
    assert!(pieces <= response.usage.output_tokens as usize);
    Ok(response)
}

#[tokio::test]
async fn a_tiny_llama_loads_streams_and_stops() {
    let (_tmp, file) = tiny_model();
    let model = LocalChat::load(&file).unwrap();
    assert_eq!(model.model_name(), "tiny");
    let response = answer(&model, "hello there", 12).await.unwrap();
    assert!(response.usage.input_tokens > 0, "{response:?}");
    assert!(response.usage.output_tokens <= 12, "{response:?}");
    // The same prompt, greedily, gives the same answer.
    let again = answer(&model, "hello there", 12).await.unwrap();
    assert_eq!(response.text, again.text);
    // A prompt past the model's context is refused before anything streams.
    let long = "hello ".repeat(model.context() + 10);
    let refused = answer(&model, &long, 4).await.unwrap_err();
    assert!(matches!(refused, clade_model::error::Error::ContextTooLong { .. }), "{refused}");
}

/// Answers generated at once, each on its own copy of the weights, are the answers generated
/// one after another: no answer sees another's attention cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_generated_at_once_are_those_generated_alone() {
    let (_tmp, file) = tiny_model();
    let model = LocalChat::load(&file).unwrap().with_concurrency(3);
    assert_eq!(model.concurrency(), 3);
    let prompts = ["hello there", "what is the time", "tell me a story", "a b c d e f", "zzz"];
    let mut alone = Vec::new();
    for prompt in prompts {
        alone.push(answer(&model, prompt, 24).await.unwrap().text);
    }
    for _ in 0..3 {
        let together =
            futures::future::join_all(prompts.iter().map(|prompt| answer(&model, prompt, 24)))
                .await;
        let together: Vec<String> = together.into_iter().map(|r| r.unwrap().text).collect();
        assert_eq!(together, alone);
    }
    assert_eq!(LocalChat::load(&file).unwrap().with_concurrency(0).concurrency(), 1);
}

/// A conversation's next prompt, read on the copy whose cache holds its beginning (and
/// prompts that part from it early, on the same copy), gets the answers a fresh copy gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_kept_between_answers_changes_no_answer() {
    let (_tmp, file) = tiny_model();
    let kept = LocalChat::load(&file).unwrap().with_concurrency(1);
    let fresh = || async { LocalChat::load(&file).unwrap().with_concurrency(1) };
    let mut messages = vec![Message::system("You are a helpful assistant.")];
    for (turn, said) in ["hello there", "tell me a story", "a b c d e f", "zzz"].iter().enumerate()
    {
        messages.push(Message::user(*said));
        let reused = answer_to(&kept, messages.clone(), 24).await.unwrap();
        let afresh = answer_to(&fresh().await, messages.clone(), 24).await.unwrap();
        assert_eq!(reused.text, afresh.text, "turn {turn}");
        assert_eq!(reused.usage, afresh.usage, "turn {turn}");
        // A prompt that parts from the conversation at its first message, in between.
        let other = vec![Message::system("Another persona."), Message::user(*said)];
        let reused = answer_to(&kept, other.clone(), 8).await.unwrap();
        assert_eq!(reused.text, answer_to(&fresh().await, other, 8).await.unwrap().text);
        messages.push(Message::Assistant { text: afresh.text, tool_calls: Vec::new() });
    }
}

#[test]
fn missing_cut_and_foreign_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("none.gguf");
    assert!(matches!(LocalChat::load(&missing), Err(LoadError::Missing(_))));
    let file = tmp.path().join("tiny.gguf");
    write_test_model(&file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = LocalChat::load(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.gguf") && err.contains("damaged"), "{err}");
    let text = tmp.path().join("text.gguf");
    std::fs::write(&text, "not a model").unwrap();
    assert!(LocalChat::load(&text).unwrap_err().to_string().contains("not a GGUF model"));
}

#[tokio::test]
async fn the_real_smollm2_answers_sensibly() {
    let Some(file) = std::env::var_os("CLADE_TEST_SMOLLM2").map(std::path::PathBuf::from) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CLADE_TEST_SMOLLM2 is not set");
        eprintln!("WARNING: SmolLM2 is not installed: the real local chat model test is SKIPPED");
        return;
    };
    let model = LocalChat::load(&file).unwrap();
    let response =
        answer(&model, "What is the capital of France? Answer in one word.", 16).await.unwrap();
    assert!(response.text.contains("Paris"), "{response:?}");
    // How fast it writes (the figure is `clade bench`'s to keep; this only shows it).
    let started = std::time::Instant::now();
    let long = answer(&model, "Write a short story about a lighthouse.", 64).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let tokens = long.usage.output_tokens;
    eprintln!(
        "SmolLM2: {tokens} tokens in {seconds:.2} s ({:.1} tokens/s)",
        tokens as f64 / seconds
    );
    // Fallen into a loop ("A: A: A: …"), it stops once the repeats show, long before
    // max_tokens.
    let looped = answer(&model, "Write the letter a two hundred times.", 400).await.unwrap();
    eprintln!("SmolLM2, asked to loop: {:?}", looped.text);
    assert!(looped.usage.output_tokens < 100, "{looped:?}");
    assert_eq!(looped.stop_reason, Some(StopReason::EndTurn), "{looped:?}");
    // A conversation's next turn reads only what follows the last answer (its beginning is in
    // the cache): the figure, against the same prompt read afresh.
    let mut messages = vec![
        Message::system("You are a helpful assistant."),
        Message::user("Write a short story about a lighthouse."),
        Message::Assistant { text: long.text.clone(), tool_calls: Vec::new() },
    ];
    for n in 1..=12 {
        messages.push(Message::user(format!("What comes after the number {n}?")));
        messages.push(Message::Assistant { text: format!("{}.", n + 1), tool_calls: Vec::new() });
    }
    messages.push(Message::user("And after that?"));
    let mut next = messages.clone();
    next.push(Message::Assistant { text: "14.".into(), tool_calls: Vec::new() });
    next.push(Message::user("And then?"));
    let timed = async |model: &LocalChat, messages: &[Message]| {
        let started = std::time::Instant::now();
        let response = answer_to(model, messages.to_vec(), 1).await.unwrap();
        (started.elapsed().as_secs_f64(), response.usage.input_tokens)
    };
    let (afresh, prompt) = timed(&LocalChat::load(&file).unwrap(), &next).await;
    timed(&model, &messages).await;
    let (kept, _) = timed(&model, &next).await;
    eprintln!(
        "SmolLM2: a {prompt}-token prompt's first token in {afresh:.2} s read afresh, {kept:.2} s after the same conversation's last turn"
    );
}

/// The provider the configuration makes loads the model once, with the concurrency it was
/// given, or the model's default.
#[tokio::test]
async fn the_provider_loads_the_model_with_its_configured_concurrency() {
    let (_tmp, file) = tiny_model();
    let two = clade_model::local_chat::LocalProvider::new(file.clone(), Some(2));
    assert_eq!(two.loaded().await.unwrap().concurrency(), 2);
    let default = clade_model::local_chat::LocalProvider::new(file.clone(), None);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(default.loaded().await.unwrap().concurrency(), (cores / 2).clamp(1, 4));
}

/// With tools, the prompt lists them in the system turn and shows an earlier call and its
/// result as the model writes and reads them (Hermes format); the tiny model's answer still
/// streams as text, the longer prompt counted.
#[tokio::test]
async fn tools_are_offered_in_the_prompt_and_past_calls_shown_as_written() {
    use clade_model::types::{ToolCall, ToolSpec};
    let tools: std::sync::Arc<[ToolSpec]> = vec![ToolSpec {
        name: "clock.now".into(),
        description: "The current time".into(),
        input_schema: serde_json::json!({"type": "object", "properties": {"zone": {"type": "string"}}}),
    }]
    .into();
    let messages = vec![
        Message::system("You are a helpful assistant."),
        Message::user("What time is it in Oslo?"),
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "clock.now".into(),
                arguments: r#"{"zone":"Europe/Oslo"}"#.into(),
            }],
        },
        Message::Tool { call_id: "call_1".into(), content: "12:00".into(), is_error: false },
    ];
    let prompt = clade_model::local_chat::chatml(&messages, &tools);
    let system = prompt.split("<|im_end|>").next().unwrap();
    assert!(system.starts_with("<|im_start|>system\nYou are a helpful assistant."), "{prompt}");
    assert!(system.contains("<tools>") && system.contains("\"name\":\"clock.now\""), "{prompt}");
    assert!(
        prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"arguments\":{\"zone\":\"Europe/Oslo\"},\"name\":\"clock.now\"}\n</tool_call><|im_end|>")
            || prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"name\":\"clock.now\",\"arguments\":{\"zone\":\"Europe/Oslo\"}}\n</tool_call><|im_end|>"),
        "{prompt}"
    );
    assert!(
        prompt.contains("<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>")
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"));
    // Without tools, nothing of them is said.
    assert!(!clade_model::local_chat::chatml(&messages[..2], &[]).contains("<tools>"));

    let (_tmp, file) = tiny_model();
    let model = LocalChat::load(&file).unwrap();
    let ask = |tools: std::sync::Arc<[ToolSpec]>| ModelRequest {
        messages: messages[..2].to_vec(),
        tools,
        params: Params { max_tokens: 8, temperature: Some(0.0) },
        cache_scope: None,
    };
    let collect = |request: ModelRequest| {
        let model = model.clone();
        async move {
            let mut stream = model.stream("local", &request).await.unwrap();
            let mut response = ModelResponse::default();
            while let Some(event) = stream.next().await {
                response.apply(event.unwrap());
            }
            response
        }
    };
    let plain = collect(ask(Vec::new().into())).await;
    let offered = collect(ask(tools.clone())).await;
    assert!(offered.usage.input_tokens > plain.usage.input_tokens + 20, "{offered:?} {plain:?}");
    assert!(offered.tool_calls.is_empty(), "{offered:?}");
    assert!(offered.usage.output_tokens > 0);
    // More tools than the context holds: the model answers without them, as it would have.
    let many: std::sync::Arc<[ToolSpec]> = (0..60)
        .map(|n| ToolSpec {
            name: format!("tool.number{n}"),
            description: "A tool with a long description ".repeat(4),
            input_schema: serde_json::json!({"type": "object"}),
        })
        .collect::<Vec<_>>()
        .into();
    let crowded = collect(ask(many)).await;
    assert_eq!(crowded.usage.input_tokens, plain.usage.input_tokens, "{crowded:?}");
    assert_eq!(crowded.text, plain.text);
}
