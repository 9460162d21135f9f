//! What the runtime does when time passes, on a [`ManualClock`] the test moves: nothing here
//! waits for the time it tests. (Real time is waited only to show that nothing happened early.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clade_core::{ApprovalStatus, ManualClock, Tenant, Timestamp};
use clade_runtime::{CallOrigin, Envelope, ToolRunner};
use clade_store::{Agents, DataDir, Source, Store};

const START: Timestamp = Timestamp::from_millis(1_795_338_294_000);

/// A store on a manual clock with the agent `ada`.
async fn open(dir: &std::path::Path) -> (Arc<ManualClock>, Store, DataDir, Tenant) {
    let clock = Arc::new(ManualClock::new(START));
    let (store, data) = support::sqlite_store_on(dir, clock.clone()).await;
    let tenant = support::create_ada(&store, &data).await;
    (clock, store, data, tenant)
}

/// Polls (in real time, briefly) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not happen within 5 s of real time");
}

/// An approval nobody answers expires when the clock passes its timeout, not before, and the
/// call is denied; nothing waited the hour it was given.
#[tokio::test]
async fn an_unanswered_approval_expires_when_the_clock_passes_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, store, data, tenant) = open(dir.path()).await;
    let config: clade_config::ToolsConfig = serde_json::from_value(serde_json::json!({
        "approval_timeout_secs": 3600,
        "policy": [{ "effect": "ask", "tool": "noop" }],
    }))
    .unwrap();
    let mut registry = clade_tools::Registry::new();
    registry.register(Arc::new(support::TestTool::answering("noop")));
    let agents = Agents::new(store.clone(), data.clone());
    let runner = Arc::new(ToolRunner::new(registry, store.clone(), agents, None, &config));
    let agent = store.agent(tenant.id, "ada").await.unwrap();

    let call = {
        let (runner, agent, origin) = (runner.clone(), agent.clone(), CallOrigin::operator(START));
        tokio::spawn(async move {
            let tool = runner.tool_set().registry().get("noop").unwrap().clone();
            runner.authorize(&agent, tool.as_ref(), &serde_json::json!({}), &origin).await.err()
        })
    };
    let pending = async || {
        store.approvals(tenant.id, None, Some(ApprovalStatus::Pending), 10).await.unwrap().len()
            == 1
    };
    eventually("the approval request", pending).await;

    clock.advance(Duration::from_secs(3599));
    tokio::time::sleep(Duration::from_millis(800)).await; // More than a poll of real time.
    assert!(!call.is_finished(), "the approval expired before its time");
    assert!(pending().await);

    clock.advance(Duration::from_secs(1));
    let refused = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert!(refused.unwrap_or_default().contains("not given before its timeout"));
    let expired =
        store.approvals(tenant.id, None, Some(ApprovalStatus::Expired), 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].decided_at, Some(START.plus(Duration::from_secs(3600))));
}

/// A session's actor leaves memory once the clock has passed `sessions.idle_secs` without a
/// message for it, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_leaves_memory_when_the_clock_passes_its_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, store, data, tenant) = open(dir.path()).await;
    let sessions = clade_config::SessionsConfig { idle_secs: 600, ..Default::default() };
    let engine = support::engine(&store, &data, clade_tools::Registry::new(), sessions).await;
    let envelope = Envelope {
        tenant: tenant.clone(),
        agent: Some("ada".into()),
        text: "hello".into(),
        source: Source { platform: "test".into(), channel: "c".into(), actor: "u".into() },
        idempotency_key: None,
    };
    let (_, watch) = engine.submit_and_watch(envelope).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), watch.ended(Duration::from_secs(30)));
    let finished = ended.await.unwrap().unwrap().unwrap();
    assert_eq!(finished.reply.as_deref(), Some("echo: hello"));
    assert_eq!(engine.active_sessions(), 1);

    clock.advance(Duration::from_secs(599));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.active_sessions(), 1, "the session left memory early");

    clock.advance(Duration::from_secs(1));
    eventually("the idle exit", async || engine.active_sessions() == 0).await;
}
