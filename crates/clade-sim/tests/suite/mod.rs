mod approvals;
mod bindings;
mod compaction;
mod crash;
mod cron;
mod faults;
mod forks;
mod memory;
mod messaging;
mod reload;
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

pub use clade_sim::TestTool;

/// The approvals of the default tenant waiting for an operator, once there is one.
pub async fn pending_approvals(sim: &clade_sim::Sim) -> Vec<clade_store::ApprovalRow> {
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    let read = async || {
        let store = store.clone();
        sim.on_node(async move |_| {
            let pending = Some(clade_core::ApprovalStatus::Pending);
            store.access(tenant).approvals(None, pending, 10).await
        })
        .await
        .unwrap()
    };
    clade_test_support::wait::polled(read, |rows| !rows.is_empty()).await
}

/// Decides the approval `id` of the default tenant as the operator would.
pub async fn decide(sim: &clade_sim::Sim, id: clade_core::ApprovalId) {
    let tenant = sim.tenant().await.id;
    let decided = sim
        .on_node(async move |engine| {
            let verdict = clade_runtime::Verdict::Approve;
            engine.tools().decide(tenant, id, verdict, "operator", None).await
        })
        .await;
    decided.unwrap();
}
