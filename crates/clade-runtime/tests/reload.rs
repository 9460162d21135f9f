//! What a running turn may rely on while things change around it: the tools, rules and settings
//! are swapped snapshots (a reload reaches the turns that start after it, while a turn already
//! running finishes on what it started with), a node that lost its sessions' lease writes
//! nothing more, wake-ups and cancels reach a session's node over the bus, and agents' files
//! are wherever the engine's `Workspaces` keeps them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clade_core::{ApprovalStatus, Tenant, TurnStatus};
use clade_runtime::{Engine, Envelope, Finished, Verdict};
use clade_store::{Source, Store, Workspaces};
use support::TestTool;

fn registry(names: &[&'static str]) -> clade_tools::Registry {
    let mut registry = clade_tools::Registry::new();
    for name in names {
        registry.register(Arc::new(TestTool::answering(name)));
    }
    registry
}

fn tools_config(policy: serde_json::Value) -> clade_config::ToolsConfig {
    serde_json::from_value(serde_json::json!({ "approval_timeout_secs": 600, "policy": policy }))
        .unwrap()
}

async fn send(engine: &Engine, tenant: &Tenant, channel: &str, text: &str) -> Finished {
    let envelope = Envelope {
        tenant: tenant.clone(),
        agent: Some("ada".into()),
        text: text.into(),
        source: Source { platform: "test".into(), channel: channel.into(), actor: "u".into() },
        idempotency_key: None,
    };
    let (_, watch) = engine.submit_and_watch(envelope).await.unwrap();
    watch.ended(Duration::from_secs(20)).await.unwrap().expect("the turn ended")
}

/// The one approval waiting, once there is one.
async fn next_pending(store: &Store, tenant: &Tenant) -> clade_store::ApprovalRow {
    let mut found = None;
    support::eventually("a call asking for an approval", async || {
        let mut pending = store
            .access(tenant.id)
            .approvals(None, Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap();
        found = pending.pop();
        assert!(pending.is_empty(), "more than one approval waits");
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// A node that lost its sessions' lease writes nothing more: the node that took the lease over
/// resumes the session, and the turn ends once, by the new holder, with its tool called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_lease_leaves_its_sessions_to_the_new_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (store, data) = support::sqlite_store(dir.path()).await;
    let tenant = support::create_ada(&store, &data).await;
    let rules = tools_config(serde_json::json!([{ "effect": "ask", "tool": "slow.tool" }]));
    let sessions = clade_config::SessionsConfig::default;
    let old =
        support::engine_with(&store, &data, registry(&["slow.tool"]), &rules, sessions()).await;
    assert!(store.shard_leases().fence().is_some(), "an engine takes the lease when it starts");

    // A turn on the old node calls a tool and waits for its approval.
    let envelope = Envelope {
        tenant: tenant.clone(),
        agent: Some("ada".into()),
        text: "/tool slow.tool {\"n\":1}".into(),
        source: Source { platform: "test".into(), channel: "c1".into(), actor: "u".into() },
        idempotency_key: None,
    };
    let accepted = old.submit(envelope).await.unwrap();
    let asked = next_pending(&store, &tenant).await;

    // Another node starts on the same store: it takes the lease and resumes the session, whose
    // turn finds the same approval (by the call's key) and waits on it too.
    let (taken_over, _) = support::sqlite_store(dir.path()).await;
    let new =
        support::engine_with(&taken_over, &data, registry(&["slow.tool"]), &rules, sessions())
            .await;
    assert!(!store.shard_leases().held().await.unwrap(), "the old node still holds the lease");
    let asked_again = "a second approval was asked";
    support::holds_for(asked_again, Duration::from_millis(300), async || {
        next_pending(&store, &tenant).await.id == asked.id
    })
    .await;

    // Approved: both nodes' turns go on; only the new holder's may write.
    new.tools().decide(tenant.id, asked.id, Verdict::Approve, "operator", None).await.unwrap();
    let finished = new
        .wait(tenant.id, accepted.event_id, accepted.session_id, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the turn ended");
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
    let turns =
        store.sessions(tenant.id).turn_records(accepted.session_id, None, 10).await.unwrap();
    assert_eq!(turns.len(), 1, "one turn, not one per node");
    let kinds: Vec<clade_core::StepKind> = turns[0].steps.iter().map(|s| s.step.kind()).collect();
    assert_eq!(
        kinds,
        [
            clade_core::StepKind::ModelResponse,
            clade_core::StepKind::ToolStarted,
            clade_core::StepKind::ToolResult,
            clade_core::StepKind::ModelResponse,
        ],
        "the tool was started once, by the new holder"
    );
    // The old node gives the session up rather than retrying writes it may not make.
    support::eventually("the old node letting the session's actor go", async || {
        old.active_sessions() == 0
    })
    .await;
    // And takes no more events: they would wait for a turn it may not write.
    assert!(old.lease_lost() && !new.lease_lost());
    let refused = old
        .submit(Envelope {
            tenant: tenant.clone(),
            agent: Some("ada".into()),
            text: "hello?".into(),
            source: Source { platform: "test".into(), channel: "c2".into(), actor: "u".into() },
            idempotency_key: None,
        })
        .await;
    assert!(matches!(refused, Err(clade_runtime::engine::Error::LeaseLost)), "{refused:?}");
}

/// A bus that records the signals it carries, as a cluster's would carry them between nodes.
#[derive(Default)]
struct RecordingBus {
    local: clade_runtime::LocalBus,
    sent: std::sync::Mutex<Vec<clade_runtime::Addressed>>,
}

impl clade_runtime::Bus for RecordingBus {
    fn hub(&self) -> &clade_runtime::Hub {
        self.local.hub()
    }
    fn signal(&self, tenant: clade_core::TenantId, signal: clade_runtime::Signal) {
        self.sent.lock().unwrap().push((tenant, signal));
        self.local.signal(tenant, signal);
    }
    fn take_signals(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<clade_runtime::Addressed>> {
        self.local.take_signals()
    }
}

/// Wake-ups and cancels go over the bus: work another node stored waits until a wake-up
/// arrives on the bus, then runs; the engine's own resume and cancel send theirs over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_and_cancels_reach_the_session_over_the_bus() {
    use clade_runtime::{Bus, Signal};
    let dir = tempfile::tempdir().unwrap();
    let (store, data) = support::sqlite_store(dir.path()).await;
    let tenant = support::create_ada(&store, &data).await;
    let bus = Arc::new(RecordingBus::default());
    let engine = support::engine_on_bus(
        &store,
        &data,
        registry(&[]),
        &clade_config::ToolsConfig::default(),
        clade_config::SessionsConfig::default(),
        bus.clone(),
    )
    .await;

    // An event stored by another node (straight into the store): nothing here runs it yet.
    let accepted = store
        .turns()
        .accept(clade_store::NewEvent {
            tenant: tenant.id,
            agent: "ada".into(),
            source: Source { platform: "test".into(), channel: "c1".into(), actor: "u".into() },
            text: "from afar".into(),
            idempotency_key: None,
            payload_hash: "h".into(),
            max_open_per_session: 100,
        })
        .await
        .unwrap();
    support::holds_for(
        "the event ran before any wake-up",
        Duration::from_millis(300),
        async || store.system().pending_events(accepted.session_id).await.unwrap().len() == 1,
    )
    .await;

    // The wake-up that node sends over the bus runs it.
    bus.signal(tenant.id, Signal::Wake(accepted.session_id));
    let finished = engine
        .wait(tenant.id, accepted.event_id, accepted.session_id, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the woken session ran its event");
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");

    // The engine's own resume and cancel go over the bus too.
    bus.sent.lock().unwrap().clear();
    engine.resume(tenant.id, accepted.session_id).await.unwrap();
    engine.cancel(tenant.id, accepted.session_id).await.unwrap();
    assert_eq!(
        *bus.sent.lock().unwrap(),
        [
            (tenant.id, Signal::Wake(accepted.session_id)),
            (tenant.id, Signal::Cancel(accepted.session_id))
        ]
    );
}

/// Agents' files kept somewhere of a test's choosing, counting how often they are asked for.
#[derive(Clone)]
struct Elsewhere {
    root: std::path::PathBuf,
    opened: Arc<std::sync::atomic::AtomicU32>,
}

impl clade_store::Workspaces for Elsewhere {
    fn open(&self, agent: &clade_core::Agent) -> clade_store::Result<std::path::PathBuf> {
        self.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = self.locate(agent.id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SOUL.md"), "Kept elsewhere.").unwrap();
        Ok(dir)
    }

    fn locate(&self, agent: clade_core::AgentId) -> std::path::PathBuf {
        self.root.join(format!("agent-{agent}"))
    }
}

/// A tool that answers with the directory it was given to work in.
struct WhereAmI;

impl clade_tools::Tool for WhereAmI {
    fn name(&self) -> &str {
        "where.am_i"
    }
    fn description(&self) -> &str {
        "the directory this call works in"
    }
    fn input_schema(&self) -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }
    fn call<'a>(
        &'a self,
        _args: serde_json::Value,
        ctx: &'a clade_tools::CallContext,
    ) -> futures::future::BoxFuture<'a, clade_tools::ToolResult> {
        Box::pin(async move { Ok(ctx.workspace()?.display().to_string()) })
    }
}

/// The engine finds an agent's files through its `Workspaces`, never by a path of its own into
/// the data dir: persona files are read, and tools run, where the implementation keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_files_are_where_the_workspaces_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, data) = support::sqlite_store(&dir.path().join("data")).await;
    let tenant = support::create_ada(&store, &data).await;
    let elsewhere = Elsewhere {
        root: dir.path().join("elsewhere"),
        opened: Arc::new(std::sync::atomic::AtomicU32::new(0)),
    };
    let mut tools = clade_tools::Registry::new();
    tools.register(Arc::new(WhereAmI));
    let engine = support::engine_on(
        &store,
        &data,
        tools,
        &clade_config::ToolsConfig::default(),
        clade_config::SessionsConfig::default(),
        Arc::new(clade_runtime::LocalBus::default()),
        elsewhere.clone(),
    )
    .await;
    let finished = send(&engine, &tenant, "c1", "/tool where.am_i").await;
    assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
    let ada = store.agents(tenant.id).get("ada").await.unwrap();
    let kept = elsewhere.locate(ada.id);
    let reply = finished.reply.unwrap_or_default();
    assert!(reply.contains(&kept.display().to_string()), "{reply}");
    // Persona files and the tool's directory were both asked of the implementation, and the
    // data dir's own workspaces were never made.
    assert!(elsewhere.opened.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert!(!data.workspaces_dir().join(ada.id.to_string()).exists());
}

/// What a tenant's own token may grant is part of the tool set: a reload with new ceilings
/// applies to the grants asked after it, and one that names none keeps the current ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_what_a_tenant_may_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (store, data) = support::sqlite_store(dir.path()).await;
    let rules = tools_config(serde_json::json!([]));
    let sessions = clade_config::SessionsConfig::default();
    let engine = support::engine_with(&store, &data, registry(&[]), &rules, sessions).await;
    let runner = engine.tools().clone();
    let allow: clade_config::PolicyRule =
        serde_json::from_value(serde_json::json!({ "effect": "allow", "tool": "fs.read" }))
            .unwrap();
    // A tenant without a ceiling may grant no allow.
    assert!(runner.check_ceiling("acme", &allow).is_err());

    let tenants: std::collections::BTreeMap<String, clade_config::TenantConfig> =
        serde_json::from_value(serde_json::json!({ "acme": { "ceiling": { "tools": ["fs.*"] } } }))
            .unwrap();
    runner.reload(registry(&[]), &rules, Some(&tenants));
    runner.check_ceiling("acme", &allow).unwrap();
    let wider: clade_config::PolicyRule =
        serde_json::from_value(serde_json::json!({ "effect": "allow", "tool": "shell.exec" }))
            .unwrap();
    assert!(runner.check_ceiling("acme", &wider).is_err(), "beyond the new ceiling");

    runner.reload(registry(&[]), &rules, None);
    runner.check_ceiling("acme", &allow).unwrap();
    assert_eq!(runner.tool_set().generation(), 3);
}
