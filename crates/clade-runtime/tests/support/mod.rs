//! Set-up shared by the runtime's integration suites; each suite uses part of it.
#![allow(dead_code)]

use clade_store::{DataDir, Durability, Location, Store, StoreOptions};

/// How often the polls below look, in real time.
const TICK: std::time::Duration = std::time::Duration::from_millis(25);

/// Runs `step` every [`TICK`] until it answers true, for at most 20 s: whether it did.
async fn ticks(step: impl AsyncFnMut() -> bool) -> bool {
    let limit = std::time::Duration::from_secs(20);
    clade_test_support::wait::polled_within(limit, TICK, step, |&done| done).await
}

/// Polls (in real time, briefly) until `check` holds: at most 20 s, for a machine loaded by the
/// rest of the suite.
pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(ticks(check).await, "{what} did not happen within 20 s of real time");
}

/// Asserts `check` holds throughout `span` of real time, looking every [`TICK`]: for what must
/// not happen (the manual clock stopped short of a deadline, no wake-up sent), which no event
/// announces, so only real time can show it.
pub async fn holds_for(
    what: &str,
    span: std::time::Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let looks = span.as_millis() / TICK.as_millis() + 1;
    let mut looked = 0;
    ticks(async || {
        assert!(check().await, "{what}");
        looked += 1;
        looked >= looks
    })
    .await;
}

/// A data dir at `dir` and its SQLite store (`durability: normal`: tests need no fsync).
pub async fn sqlite_store(dir: &std::path::Path) -> (Store, DataDir) {
    sqlite_store_on(dir, std::sync::Arc::new(clade_core::SystemClock)).await
}

/// Like [`sqlite_store`], on `clock`: what the store stamps and everything built on it sleeps on.
pub async fn sqlite_store_on(
    dir: &std::path::Path,
    clock: std::sync::Arc<dyn clade_core::Clock>,
) -> (Store, DataDir) {
    let data = DataDir::open(dir).unwrap();
    let location = Location::Sqlite(data.sqlite_path());
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        clock,
        ..StoreOptions::new(location, Durability::Normal)
    };
    let store = Store::open(options).await.unwrap();
    (store, data)
}

// Not every test binary sharing this module uses it.
#[allow(unused_imports)]
pub use clade_sim::TestTool;

/// An engine on `store` with the offline model, the tools of `registry` under the default
/// tools settings, and `sessions`, everything on the store's clock.
pub async fn engine(
    store: &Store,
    data: &DataDir,
    registry: clade_tools::Registry,
    sessions: clade_config::SessionsConfig,
) -> clade_runtime::Engine {
    engine_with(store, data, registry, &clade_config::ToolsConfig::default(), sessions).await
}

/// [`engine`] under the tools settings `tools_config` (policy, approval timeout).
pub async fn engine_with(
    store: &Store,
    data: &DataDir,
    registry: clade_tools::Registry,
    tools_config: &clade_config::ToolsConfig,
    sessions: clade_config::SessionsConfig,
) -> clade_runtime::Engine {
    let bus = std::sync::Arc::new(clade_runtime::LocalBus::default());
    engine_on_bus(store, data, registry, tools_config, sessions, bus).await
}

/// [`engine_with`] on `bus`.
pub async fn engine_on_bus(
    store: &Store,
    data: &DataDir,
    registry: clade_tools::Registry,
    tools_config: &clade_config::ToolsConfig,
    sessions: clade_config::SessionsConfig,
    bus: std::sync::Arc<dyn clade_runtime::Bus>,
) -> clade_runtime::Engine {
    let agents = clade_store::Agents::new(store.clone(), data.clone());
    engine_on(store, data, registry, tools_config, sessions, bus, agents).await
}

/// [`engine_on_bus`] with agents' files where `workspaces` keeps them.
pub async fn engine_on(
    store: &Store,
    data: &DataDir,
    registry: clade_tools::Registry,
    tools_config: &clade_config::ToolsConfig,
    sessions: clade_config::SessionsConfig,
    bus: std::sync::Arc<dyn clade_runtime::Bus>,
    workspaces: impl clade_store::Workspaces + Clone,
) -> clade_runtime::Engine {
    clade_runtime::Bare::new(store, data)
        .registry(registry)
        .tools(tools_config)
        .sessions(sessions)
        .bus(bus)
        .workspaces(workspaces)
        .start()
        .await
        .unwrap()
}

/// Creates the agent `ada` in the default tenant, which it returns.
pub async fn create_ada(store: &Store, data: &DataDir) -> clade_core::Tenant {
    let tenant = store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await.unwrap();
    let new = clade_store::NewAgent {
        handle: clade_core::Handle::parse("ada").unwrap(),
        display_name: None,
        config: clade_core::AgentConfig::default(),
    };
    clade_store::Agents::new(store.clone(), data.clone()).create(tenant.id, new).await.unwrap();
    tenant
}
