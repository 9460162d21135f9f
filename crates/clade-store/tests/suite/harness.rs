//! Opens a fresh store per backend; PostgreSQL gets a throwaway schema (see clade-test-support).

use clade_core::{Agent, AgentConfig, Handle, Tenant, TurnId};
use clade_store::{
    Accepted, Agents, DataDir, Durability, Location, NewAgent, NewEvent, Source, Store,
    StoreOptions, TurnRow,
};
use clade_test_support::PgSchema;

pub struct Harness {
    pub name: &'static str,
    pub store: Store,
    pub agents: Agents,
    pub data_dir: DataDir,
    pub location: Location,
    /// Kept until the harness is dropped: the schema and the directory go with it.
    pub _schema: Option<PgSchema>,
    pub _tmp: tempfile::TempDir,
}

impl Harness {
    pub async fn reopen(&self) -> Result<Store, clade_store::Error> {
        open(self.location.clone()).await
    }
}

pub async fn open(location: Location) -> Result<Store, clade_store::Error> {
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..StoreOptions::new(location, Durability::Full)
    };
    Store::open(options).await
}

/// Polls `check` every `every`, in real time, until it holds or `within` has passed: whether it
/// held.
pub async fn eventually(
    within: std::time::Duration,
    every: std::time::Duration,
    check: impl AsyncFnMut() -> bool,
) -> bool {
    clade_test_support::wait::polled_within(within, every, check, |&held| held).await
}

/// One harness per available backend.
pub async fn backends() -> Vec<Harness> {
    let mut out = Vec::new();
    for name in ["sqlite", "postgres"] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
        let (location, schema) = match name {
            "sqlite" => (Location::Sqlite(data_dir.sqlite_path()), None),
            _ => match PgSchema::create().await {
                Some(schema) => (Location::Postgres(schema.url().to_owned()), Some(schema)),
                None => continue,
            },
        };
        let store = open(location.clone()).await.unwrap();
        let agents = Agents::new(store.clone(), data_dir.clone());
        out.push(Harness { name, store, agents, data_dir, location, _schema: schema, _tmp: tmp });
    }
    out
}

/// The default tenant, with agent `handle` created in it.
pub async fn tenant_and_agent(store: &Store, agents: &Agents, handle: &str) -> (Tenant, Agent) {
    let tenant = store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
    let spec = NewAgent {
        handle: Handle::parse(handle).unwrap(),
        display_name: None,
        config: AgentConfig::default(),
    };
    let agent = agents.create(tenant.id, spec).await.unwrap();
    (tenant, agent)
}

/// Accepts a message for `agent` from `channel` (a session per channel).
pub async fn accept(store: &Store, tenant: &Tenant, agent: &Agent, channel: &str) -> Accepted {
    store
        .turns()
        .accept(NewEvent {
            tenant: tenant.id,
            agent: agent.handle.to_string(),
            source: Source { platform: "test".into(), channel: channel.into(), actor: "a".into() },
            text: "hello".into(),
            idempotency_key: None,
            payload_hash: "h".into(),
            max_open_per_session: 100,
        })
        .await
        .unwrap()
}

/// A turn about to start for the session of `accepted`.
pub fn new_turn(store: &Store, accepted: &Accepted, tenant: &Tenant, agent: &Agent) -> TurnRow {
    let now = store.now();
    TurnRow {
        id: TurnId::generate(now),
        session_id: accepted.session_id,
        tenant_id: tenant.id,
        agent_id: agent.id,
        status: clade_core::TurnStatus::Running,
        reply: None,
        error: None,
        model: None,
        config_revision: 1,
        started_at: now,
        finished_at: None,
    }
}
