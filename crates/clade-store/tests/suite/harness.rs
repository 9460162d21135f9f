//! Opens a fresh store per backend. PostgreSQL tests use a schema of their own in the database
//! named by `CLADE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`); when that
//! server is unreachable the PostgreSQL half is skipped loudly, and fails under `CI=true`.

use std::sync::Arc;

use clade_core::SystemClock;
use clade_store::{Agents, DataDir, Durability, Location, Store, StoreOptions};
use sqlx::Executor;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct Harness {
    pub name: &'static str,
    pub store: Store,
    pub agents: Agents,
    pub data_dir: DataDir,
    pub location: Location,
    _tmp: tempfile::TempDir,
}

impl Harness {
    pub async fn reopen(&self) -> Result<Store, clade_store::Error> {
        open(self.location.clone()).await
    }
}

pub async fn open(location: Location) -> Result<Store, clade_store::Error> {
    Store::open(StoreOptions { location, durability: Durability::Full, clock: Arc::new(SystemClock) })
        .await
}

pub fn pg_admin_url() -> String {
    std::env::var("CLADE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// A PostgreSQL URL whose search_path is a new, empty schema.
pub async fn fresh_pg_schema() -> Option<String> {
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
    let conn = sqlx::AnyPool::connect(&admin).await;
    let pool = match conn {
        Ok(pool) => pool,
        Err(err) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL at {admin} is unreachable under CI=true: {err}");
            }
            eprintln!("WARNING: skipping PostgreSQL half: {admin} unreachable: {err}");
            return None;
        }
    };
    let schema = format!("t_{}", uuid_like());
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).await.unwrap();
    pool.close().await;
    let sep = if admin.contains('?') { '&' } else { '?' };
    Some(format!("{admin}{sep}options=-c%20search_path%3D{schema}"))
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// One harness per available backend.
pub async fn backends() -> Vec<Harness> {
    let mut out = Vec::new();
    for name in ["sqlite", "postgres"] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(tmp.path().join("data")).unwrap();
        let location = match name {
            "sqlite" => Location::Sqlite(data_dir.sqlite_path()),
            _ => match fresh_pg_schema().await {
                Some(url) => Location::Postgres(url),
                None => continue,
            },
        };
        let store = open(location.clone()).await.unwrap();
        let agents = Agents::new(store.clone(), data_dir.clone());
        out.push(Harness { name, store, agents, data_dir, location, _tmp: tmp });
    }
    out
}
