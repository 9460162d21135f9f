//! Opens a fresh store per backend; PostgreSQL gets a throwaway schema (see clade-test-support).

use std::sync::Arc;

use clade_core::SystemClock;
use clade_store::{Agents, DataDir, Durability, Location, Store, StoreOptions};
use clade_test_support::PgSchema;

pub struct Harness {
    pub name: &'static str,
    pub store: Store,
    pub agents: Agents,
    pub data_dir: DataDir,
    pub location: Location,
    _schema: Option<PgSchema>,
    _tmp: tempfile::TempDir,
}

impl Harness {
    pub async fn reopen(&self) -> Result<Store, clade_store::Error> {
        open(self.location.clone()).await
    }
}

pub async fn open(location: Location) -> Result<Store, clade_store::Error> {
    Store::open(StoreOptions {
        location,
        durability: Durability::Full,
        clock: Arc::new(SystemClock),
    })
    .await
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
