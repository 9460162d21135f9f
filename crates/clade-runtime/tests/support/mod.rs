//! Set-up shared by the runtime's integration suites.

use clade_store::{DataDir, Durability, Location, Store, StoreOptions};

/// A data dir at `dir` and its SQLite store (`durability: normal`: tests need no fsync).
pub async fn sqlite_store(dir: &std::path::Path) -> (Store, DataDir) {
    let data = DataDir::open(dir).unwrap();
    let location = Location::Sqlite(data.sqlite_path());
    let options = StoreOptions {
        migrations: clade_store::Migrations::Apply,
        ..StoreOptions::new(location, Durability::Normal)
    };
    let store = Store::open(options).await.unwrap();
    (store, data)
}
