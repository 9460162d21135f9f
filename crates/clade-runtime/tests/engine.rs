//! The turn engine in-process, against the offline scripted model: what a turn's context holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod support;

use support::TestTool;

use std::sync::Arc;
use std::time::Duration;

use clade_core::Tenant;
use clade_runtime::{Engine, Envelope, ToolRunner};
use clade_store::{Agents, DataDir, Source, Store};

async fn open(dir: &std::path::Path) -> (Store, DataDir, Tenant) {
    let (store, data) = support::sqlite_store(dir).await;
    let tenant = support::create_ada(&store, &data).await;
    (store, data, tenant)
}

/// An engine on `store`; several may run one after another on the same store.
async fn start(store: &Store, data: &DataDir) -> Engine {
    start_with(store, data, |sessions| {
        // A short window, so the test sees turns leave it; one model call per turn, so a turn
        // that calls a tool yields instead of completing. Compaction is off: turns leave the
        // window without being folded into a summary (`clade-sim` `suite::compaction` tests it).
        sessions.history_turns = 3;
        sessions.compaction.enabled = false;
        sessions.max_iterations = 1;
    })
    .await
}

/// An engine on `store` with session settings changed by `tweak`.
async fn start_with(
    store: &Store,
    data: &DataDir,
    tweak: impl FnOnce(&mut clade_config::SessionsConfig),
) -> Engine {
    start_with_tools(store, data, clade_tools::Registry::new(), tweak).await
}

/// An engine on `store` whose agents have the tools of `registry`.
async fn start_with_tools(
    store: &Store,
    data: &DataDir,
    registry: clade_tools::Registry,
    tweak: impl FnOnce(&mut clade_config::SessionsConfig),
) -> Engine {
    let mut sessions = clade_config::SessionsConfig::default();
    tweak(&mut sessions);
    support::engine(store, data, registry, sessions).await
}

/// Sends `text` on `channel` and waits for its turn: the session and how the turn ended.
async fn send(
    engine: &Engine,
    tenant: &Tenant,
    channel: &str,
    text: &str,
) -> (clade_core::SessionId, clade_runtime::Finished) {
    let source = Source { platform: "test".into(), channel: channel.into(), actor: "u".into() };
    let envelope = Envelope {
        tenant: tenant.clone(),
        agent: Some("ada".into()),
        text: text.into(),
        source,
        idempotency_key: None,
    };
    let accepted = engine.submit(envelope).await.unwrap();
    let finished = engine
        .wait(tenant.id, accepted.event_id, accepted.session_id, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the turn ended");
    (accepted.session_id, finished)
}

/// A tool every agent has, or (with an `owner`) only that agent, as an MCP server configured
/// for one agent gives.
/// Each agent is offered exactly its own tools, and agents with the same tools share one list,
/// so a turn clones no schema.
#[tokio::test]
async fn each_agent_is_offered_its_own_tools_from_a_shared_list() {
    let dir = tempfile::tempdir().unwrap();
    let (store, data, _) = open(dir.path()).await;
    let mut registry = clade_tools::Registry::new();
    registry.register(Arc::new(TestTool::answering("all.echo")));
    registry
        .register(Arc::new(TestTool { owner: Some("alice"), ..TestTool::answering("alice.only") }));
    let runner = ToolRunner::new(
        registry,
        store.clone(),
        Agents::new(store.clone(), data.clone()),
        None,
        &clade_config::ToolsConfig::default(),
    );
    let names = |handle: &str| -> Vec<String> {
        let mut names: Vec<String> =
            runner.tool_set().specs_for("default", handle).iter().map(|s| s.name.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(names("alice"), vec!["alice.only".to_owned(), "all.echo".to_owned()]);
    assert_eq!(names("bob"), vec!["all.echo".to_owned()]);
    assert!(Arc::ptr_eq(
        &runner.tool_set().specs_for("default", "bob"),
        &runner.tool_set().specs_for("default", "carol")
    ));
    assert!(!Arc::ptr_eq(
        &runner.tool_set().specs_for("default", "alice"),
        &runner.tool_set().specs_for("default", "bob")
    ));
}

/// What compaction reads when more turns wait than it reads at once: the oldest first, from
/// after the turn its last summary covers, in order (the history a turn shows reads the newest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_turns_after_a_summary_read_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data, tenant) = open(tmp.path()).await;
    let engine = start(&store, &data).await;
    let mut session = None;
    for text in ["one", "two", "three", "four", "five"] {
        session = Some(send(&engine, &tenant, "c", text).await.0);
    }
    let session = session.unwrap();
    let system = store.system();
    let users = |turns: Vec<clade_store::PastTurn>| -> Vec<String> {
        turns.into_iter().map(|t| t.user).collect()
    };
    let oldest = system.oldest_turns(session, None, 2).await.unwrap();
    let first = oldest[0].id;
    assert_eq!(users(oldest), ["one", "two"]);
    assert_eq!(
        users(system.oldest_turns(session, Some(first), 2).await.unwrap()),
        ["two", "three"]
    );
    let end = clade_core::TurnId::from_bytes([0xff; 16]);
    assert_eq!(users(system.history(session, None, end, 2).await.unwrap()), ["four", "five"]);
}
