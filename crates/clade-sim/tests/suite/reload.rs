//! Live reloads: new turns take the new tools, rules and settings, while a running turn
//! finishes on the ones it started with.

use clade_core::TurnStatus;
use clade_sim::Sim;

use super::{TestTool, decide, pending_approvals};

/// A registry of test tools named `names`.
fn registry(names: &[&'static str]) -> clade_tools::Registry {
    let mut registry = clade_tools::Registry::new();
    for name in names {
        registry.register(std::sync::Arc::new(TestTool::answering(name)));
    }
    registry
}

/// The tools settings with `policy` as their rules.
fn tools_config(policy: serde_json::Value) -> clade_config::ToolsConfig {
    serde_json::from_value(serde_json::json!({ "approval_timeout_secs": 600, "policy": policy }))
        .unwrap()
}

/// The one approval waiting, once there is one.
async fn next_pending(sim: &Sim) -> clade_store::ApprovalRow {
    let mut pending = pending_approvals(sim).await;
    assert_eq!(pending.len(), 1, "more than one approval waits: {pending:?}");
    pending.remove(0)
}

#[tokio::test]
async fn a_reload_reaches_new_turns_while_a_running_turn_keeps_its_tools_and_rules() {
    // Generation 1: `old.tool` needs an operator's approval.
    let sim = Sim::builder(
        "a_reload_reaches_new_turns_while_a_running_turn_keeps_its_tools_and_rules",
    )
    .config(
        "tools:\n  approval_timeout_secs: 600\n  policy:\n    - { effect: ask, tool: old.tool }\n",
    )
    .tool(std::sync::Arc::new(TestTool::answering("old.tool")))
    .start()
    .await;
    sim.create_agent("ada").await;
    let generation = sim.on_node(async |engine| engine.tools().tool_set().generation()).await;
    assert_eq!(generation, 1);

    // A turn starts on generation 1 with two calls and waits for the approval of the first.
    let text = "/tool old.tool {\"n\":1}\n/tool old.tool {\"n\":2}";
    let running = sim.submit(sim.envelope("ada", "c1", "u", text).await).await.unwrap();
    let asked = next_pending(&sim).await;

    // Generation 2 drops `old.tool`, adds `new.tool` and denies it.
    let reloaded = sim
        .on_node(async |engine| {
            let runner = engine.tools().clone();
            let second =
                tools_config(serde_json::json!([{ "effect": "deny", "tool": "new.tool" }]));
            let taken = runner.tool_set();
            let generation = runner.reload(registry(&["new.tool"]), &second, None);
            (
                generation,
                runner.tool_set().generation(),
                taken.registry().get("old.tool").is_some(),
                runner.tool_set().registry().get("old.tool").is_none(),
            )
        })
        .await;
    assert_eq!(reloaded, (2, 2, true, true), "a taken set changed under its holder, or none came");

    // The running turn finishes on its own set: its second call, dispatched after the reload,
    // still finds `old.tool` and is asked about under generation 1's rule.
    decide(&sim, asked.id).await;
    let asked_again = clade_test_support::wait::polled(
        async || pending_approvals(&sim).await,
        |pending| pending.iter().all(|p| p.id != asked.id),
    )
    .await;
    assert_eq!(asked_again.len(), 1, "{asked_again:?}");
    decide(&sim, asked_again[0].id).await;
    let finished = sim.finished(&running).await;
    assert_eq!(finished.status, TurnStatus::Completed);
    let reply = finished.reply.unwrap_or_default();
    assert_eq!(reply.matches("old.tool -> it ran").count(), 2, "{reply}");

    // New turns get generation 2: the old tool is gone, the new one is denied by the new rule.
    let (_, gone) = sim.say("ada", "c2", "/tool old.tool").await;
    let gone = gone.reply.unwrap_or_default();
    assert!(gone.contains("unknown tool \"old.tool\"") && gone.contains("new.tool"), "{gone}");
    let (_, denied) = sim.say("ada", "c3", "/tool new.tool").await;
    assert!(denied.reply.unwrap_or_default().contains("denied"));
}

/// The engine's settings are a snapshot too: a reload reaches the turns (and events) that come
/// after it, while a running turn finishes under the settings it started with.
#[tokio::test]
async fn a_settings_reload_reaches_new_turns_while_a_running_turn_keeps_its_own() {
    let sim = Sim::builder(
        "a_settings_reload_reaches_new_turns_while_a_running_turn_keeps_its_own",
    )
    .config(
        "tools:\n  approval_timeout_secs: 600\n  policy:\n    - { effect: ask, tool: slow.tool }\n",
    )
    .tool(std::sync::Arc::new(TestTool::answering("slow.tool")))
    .start()
    .await;
    sim.create_agent("ada").await;
    let first = sim.on_node(async |engine| engine.settings()).await;
    assert_eq!(first.generation(), 1);
    assert!(first.sessions.max_iterations > 1);
    // Calling the tool and then answering takes two model calls.
    let text = "/tool slow.tool {\"n\":1}";

    // A turn starts under generation 1 and waits for its approval.
    let running = sim.submit(sim.envelope("ada", "c1", "u", text).await).await.unwrap();
    let asked = next_pending(&sim).await;

    // Generation 2: one model call per turn, and events that name no agent go to `ada`.
    let mut next = (*first).clone();
    next.sessions.max_iterations = 1;
    next.default_agent = Some("ada".into());
    let mut unrouted = sim.envelope("ada", "c9", "u", "who?").await;
    unrouted.agent = None;
    let routed = sim
        .on_node(async move |engine| {
            let before = engine.route(&unrouted).is_err();
            let generation = engine.reload(next);
            (before, generation, engine.route(&unrouted).ok())
        })
        .await;
    assert_eq!(routed, (true, 2, Some("ada".to_owned())), "generation 1 had no default agent");
    assert_eq!(
        first.sessions.max_iterations,
        clade_config::SessionsConfig::default().max_iterations,
        "a taken snapshot changed"
    );

    // The running turn keeps generation 1's budget: it answers after its tool call.
    decide(&sim, asked.id).await;
    let finished = sim.finished(&running).await;
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");

    // A turn that starts now runs under generation 2: it yields after its one model call; so
    // does one of a session whose actor was already in memory under generation 1.
    for channel in ["c2", "c1"] {
        let later = sim.submit(sim.envelope("ada", channel, "u", text).await).await.unwrap();
        decide(&sim, next_pending(&sim).await.id).await;
        let yielded = sim.finished(&later).await;
        assert_eq!(yielded.status, TurnStatus::Yielded, "{channel}: {yielded:?}");
    }
}
