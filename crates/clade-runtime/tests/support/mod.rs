//! Set-up shared by the runtime's integration suites.

use std::sync::Arc;

use clade_core::SystemClock;
use clade_store::{DataDir, Durability, Location, Store, StoreOptions};

/// A data dir at `dir` and its SQLite store (`durability: normal`: tests need no fsync).
pub async fn sqlite_store(dir: &std::path::Path) -> (Store, DataDir) {
    let data = DataDir::open(dir).unwrap();
    let store = Store::open(StoreOptions {
        location: Location::Sqlite(data.sqlite_path()),
        durability: Durability::Normal,
        clock: Arc::new(SystemClock),
        migrations: clade_store::Migrations::Apply,
    })
    .await
    .unwrap();
    (store, data)
}
