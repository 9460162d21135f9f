mod approvals;
mod compaction;
mod crash;
mod cron;
mod faults;
mod forks;
mod memory;
mod messaging;
mod sessions;
mod turns;

/// A model on the stub that takes `ms` of real time before it answers, for agent `agent`
/// (every other agent keeps the offline scripted model).
pub fn slow_model_for(agent: &str, ms: u64) -> String {
    format!(
        "models:\n  slow:\n    provider: openai\n    model: stub+latency={ms}\n    base_url: {{stub}}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [scripted]\n  agents:\n    {agent}: {{ default: [slow] }}\n"
    )
}

/// A model on the stub that takes `ms` of real time before it answers, for every agent.
pub fn slow_model(ms: u64) -> String {
    format!(
        "models:\n  slow:\n    provider: openai\n    model: stub+latency={ms}\n    base_url: {{stub}}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [slow]\n"
    )
}

/// The chat completions the stub has been asked for.
pub fn model_calls(sim: &clade_sim::Sim) -> usize {
    sim.stub().captured().iter().filter(|c| c.path.ends_with("/chat/completions")).count()
}

/// Waits until the stub has been asked for `n` chat completions: a model call under way.
pub async fn model_called(sim: &clade_sim::Sim, n: usize) {
    let calls = async || (model_calls(sim) >= n).then_some(());
    clade_test_support::wait::eventually(calls).await.expect("the model was never called");
}

/// The texts of a turn's events, in the order they were accepted.
pub fn texts(turn: &clade_store::TurnRecord) -> Vec<&str> {
    turn.events.iter().map(|e| e.text.as_str()).collect()
}
