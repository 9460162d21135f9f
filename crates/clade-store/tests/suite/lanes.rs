//! The writer's lanes: a store handle from `Store::writes_first` (the scheduler's) has its
//! writes committed ahead of everything other handles queued before them, so a scheduled fire
//! does not wait behind the turns it starts.

use std::sync::{Arc, Mutex};

use sqlx::{Connection, Executor};

use super::harness::{Harness, backends};

/// What every write on PostgreSQL takes first (`turns::WRITERS_LOCK_POSTGRES`).
const WRITERS_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('clade writers ' || current_schema(), 0))";

/// Another client holding the database's write lock: the store's writer waits behind it.
enum Block {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

impl Block {
    async fn hold(h: &Harness) -> Self {
        if h.name == "sqlite" {
            let conn = rusqlite::Connection::open(h.data_dir.sqlite_path()).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            Block::Sqlite(conn)
        } else {
            let url = h.location.connect_url().unwrap();
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            conn.execute("BEGIN").await.unwrap();
            sqlx::query(WRITERS_LOCK).execute(&mut conn).await.unwrap();
            Block::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            Block::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            Block::Postgres(mut conn) => {
                conn.execute("ROLLBACK").await.unwrap();
            }
        }
    }
}

/// Yields until `count` reaches `n`: the spawned writes are then queued (nothing awaits
/// before a write is sent, and a send into a queue with room never waits).
async fn until(count: &Mutex<usize>, n: usize) {
    while *count.lock().unwrap() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn writes_that_go_first_commit_ahead_of_those_queued_before_them() {
    const QUEUED: usize = 3_000;
    for h in backends().await {
        let block = Block::hold(&h).await;
        // The writer takes this one and waits behind the lock with it.
        let blocked = tokio::spawn({
            let store = h.store.clone();
            async move { store.tenants().create("blocked").await.unwrap() }
        });
        h.store.clock().sleep(std::time::Duration::from_millis(200)).await;

        let (done, started) = (Arc::new(Mutex::new(0usize)), Arc::new(Mutex::new(0usize)));
        let mut tasks = Vec::new();
        for i in 0..QUEUED {
            let (store, done, started) = (h.store.clone(), done.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                *started.lock().unwrap() += 1;
                store.tenants().create(&format!("queued-{i}")).await.unwrap();
                *done.lock().unwrap() += 1;
            }));
        }
        until(&started, QUEUED).await;
        let first = tokio::spawn({
            let (store, done, started) = (h.store.writes_first(), done.clone(), started.clone());
            async move {
                *started.lock().unwrap() += 1;
                store.tenants().create("first").await.unwrap();
                *done.lock().unwrap()
            }
        });
        until(&started, QUEUED + 1).await;
        assert_eq!(*done.lock().unwrap(), 0, "{}: a write passed the lock", h.name);
        block.release().await;

        let ahead = first.await.unwrap();
        // In order, it would commit with the last batch (at most 512 writes): after at least
        // 2,488 of the others. Going first, it joins the batch after the blocked one.
        assert!(ahead <= 600, "{}: {ahead} of {QUEUED} queued writes finished first", h.name);
        blocked.await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*done.lock().unwrap(), QUEUED, "{}", h.name);
        assert!(h.store.tenants().named("first").await.is_ok(), "{}", h.name);
    }
}
