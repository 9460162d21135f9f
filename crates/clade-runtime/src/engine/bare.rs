//! An engine with nothing configured but what its caller says: the offline scripted model (no
//! provider in its configuration), the tools of one registry, default settings otherwise. What
//! tests, benchmarks and in-process runners start; `clade serve` builds its engine from
//! clade.yaml instead.

use std::sync::Arc;

use clade_config::{SessionsConfig, ToolsConfig};
use clade_core::Clock;
use clade_store::{DataDir, Store, Workspaces};

use super::{Engine, EngineOptions, Error};
use crate::bus::{Bus, LocalBus};
use crate::models::{EnvHints, Models};
use crate::tools::ToolRunner;

/// Starts an [`Engine`] on a store with the offline model: `Bare::new(&store, &data).start()`,
/// with tools, sessions' settings, a bus or a clock of the caller's where it says so.
pub struct Bare<W = clade_store::Agents> {
    store: Store,
    data: DataDir,
    workspaces: W,
    registry: clade_tools::Registry,
    tools: ToolsConfig,
    sessions: SessionsConfig,
    bus: Arc<dyn Bus>,
    /// The models' clock (the store's unless told).
    clock: Arc<dyn Clock>,
}

impl Bare {
    /// No tools, default settings, agents' files in `data`, everything on the store's clock.
    pub fn new(store: &Store, data: &DataDir) -> Self {
        Self {
            store: store.clone(),
            data: data.clone(),
            workspaces: clade_store::Agents::new(store.clone(), data.clone()),
            registry: clade_tools::Registry::new(),
            tools: ToolsConfig::default(),
            sessions: SessionsConfig::default(),
            bus: Arc::new(LocalBus::default()),
            clock: store.clock().clone(),
        }
    }
}

impl<W: Workspaces + Clone + 'static> Bare<W> {
    /// The tools agents have.
    pub fn registry(self, registry: clade_tools::Registry) -> Self {
        Self { registry, ..self }
    }

    /// The tools' settings (policy, approval timeout).
    pub fn tools(self, tools: &ToolsConfig) -> Self {
        Self { tools: tools.clone(), ..self }
    }

    pub fn sessions(self, sessions: SessionsConfig) -> Self {
        Self { sessions, ..self }
    }

    /// The bus whose signals the engine takes (a local one unless told).
    pub fn bus(self, bus: Arc<dyn Bus>) -> Self {
        Self { bus, ..self }
    }

    /// The clock the models run on.
    pub fn model_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Agents' files where `workspaces` keeps them.
    pub fn workspaces<V: Workspaces + Clone + 'static>(self, workspaces: V) -> Bare<V> {
        let Self { store, data, registry, tools, sessions, bus, clock, .. } = self;
        Bare { store, data, workspaces, registry, tools, sessions, bus, clock }
    }

    pub async fn start(self) -> Result<Engine, Error> {
        let config = clade_config::Config::default();
        let secrets =
            clade_store::Secrets::new(self.store.clone(), self.data.master_key_path(), None);
        let models =
            Models::new(&config, EnvHints::default(), self.store.clone(), secrets, self.clock);
        let tools = Arc::new(ToolRunner::new(
            self.registry,
            self.store.clone(),
            self.workspaces.clone(),
            None,
            &self.tools,
        ));
        let options = EngineOptions {
            sessions: self.sessions,
            bindings: Vec::new(),
            default_agent: None,
            tools,
            tenants: Default::default(),
            failpoints: crate::Failpoints::none(),
        };
        Engine::start_on(self.store, self.workspaces, models, options, self.bus).await
    }
}
