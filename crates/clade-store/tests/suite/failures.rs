//! Bad databases and unreachable servers: one clear error, no partial state.

use std::time::Duration;

use clade_store::{DataDir, Error, Location, SCHEMA_VERSION};
use sqlx::Executor;

use super::harness::{backends, eventually, open};

#[tokio::test]
async fn newer_schema_is_refused() {
    for h in backends().await {
        let pool = sqlx::AnyPool::connect(&h.location.connect_url().unwrap()).await.unwrap();
        pool.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, 'future', 0)",
            SCHEMA_VERSION + 1
        )))
        .await
        .unwrap();
        pool.close().await;
        let err = h.reopen().await.err().unwrap();
        assert!(matches!(err, Error::NewerSchema { .. }), "{}: {err}", h.name);
        // What went wrong, in the store's words; the CLI adds what to do (`advice.rs`).
        let text = err.to_string();
        assert!(text.contains(&format!("schema version {}", SCHEMA_VERSION + 1)), "{text}");
        assert!(!text.contains("--") && !text.contains("`clade"), "{text}");
    }
}

#[tokio::test]
async fn data_survives_reopen() {
    for h in backends().await {
        h.store.tenants().create("kept").await.unwrap();
        let again = h.reopen().await.unwrap();
        assert!(again.tenants().named("kept").await.is_ok(), "{}", h.name);
    }
}

#[tokio::test]
async fn corrupted_sqlite_file_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    let garbage = b"this is not a database, just some bytes that happen to be here....".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = open(Location::Sqlite(path.clone())).await.err().unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file must not be touched");
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    let err =
        open(Location::Postgres("postgres://nobody@127.0.0.1:1/none".into())).await.err().unwrap();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[test]
fn unwritable_data_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = DataDir::open(file.join("data")).unwrap_err();
    assert!(matches!(err, Error::DataDir { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("a-file/data") && text.contains("not usable"), "{text}");
    assert!(!text.contains("--"), "CLI wording in a store error: {text}");
}

/// The SQLite writer does not checkpoint inside its commits; a thread beside it folds the WAL
/// back into the database file. Without it the data would stay in the WAL forever.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    let store = open(Location::Sqlite(path.clone())).await.unwrap();
    // The file grows in chunks, so its length says little: its header counts its pages.
    let pages = || {
        let bytes = std::fs::read(&path).unwrap();
        u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]])
    };
    let before = pages();
    for n in 0..300 {
        store.tenants().create(&format!("tenant-{n}")).await.unwrap();
    }
    let (within, every) = (Duration::from_secs(5), Duration::from_millis(100));
    let grown = eventually(within, every, async || pages() > before).await;
    assert!(grown, "the database file never received the WAL's pages ({before} pages)");
    assert!(store.tenants().named("tenant-299").await.is_ok());
}

/// Runs `writers` tasks that each accept `events` events of 16 KiB back to back, each in a
/// session of its own (channels named after `tag`), and returns the largest the WAL file was
/// seen after a write.
async fn write_hard(
    store: &clade_store::Store,
    wal: &std::path::Path,
    tag: &'static str,
    writers: usize,
    events: usize,
) -> u64 {
    let tenant = store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await.unwrap();
    let new = clade_store::NewAgent {
        handle: clade_core::Handle::parse("wal").unwrap(),
        display_name: None,
        config: clade_core::AgentConfig::default(),
    };
    let agent = match store.agents(tenant.id).create_many(vec![new]).await {
        Ok(mut created) => created.remove(0),
        Err(_) => store.agents(tenant.id).get("wal").await.unwrap(),
    };
    let text = "x".repeat(16 * 1024);
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (store, text, wal, largest, handle) = (
            store.clone(),
            text.clone(),
            wal.to_owned(),
            largest.clone(),
            agent.handle.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0..events {
                let source = clade_store::Source {
                    platform: "test".into(),
                    channel: format!("{tag}{writer}-{n}"),
                    actor: "a".into(),
                };
                let event = clade_store::NewEvent {
                    tenant: tenant.id,
                    agent: handle.clone(),
                    source,
                    text: text.clone(),
                    idempotency_key: None,
                    payload_hash: String::new(),
                    max_open_per_session: 1000,
                };
                store.turns().accept(event).await.unwrap();
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                largest.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    largest.load(std::sync::atomic::Ordering::Relaxed)
}

/// Under writes that never pause, a checkpoint running beside the writer never finds the WAL
/// wholly folded back, so SQLite would never start it over: it grew without bound (100 MB in
/// a 6,000-turn benchmark). The writer's catch-up checkpoint starts it over past 128 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_writes_that_never_pause() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(Location::Sqlite(tmp.path().join("clade.db"))).await.unwrap();
    // 16 writers × 3,000 events of 16 KiB: about 780 MiB through the WAL, in batches that
    // follow each other without a pause.
    let largest = write_hard(&store, &tmp.path().join("clade.db-wal"), "c", 16, 3000).await;
    // Without the catch-up it takes in every write (some 870 MiB: the events' text alone is
    // 750 MiB); with it, 128 MiB plus what these writers (over 100 MB/s) add until the
    // checkpointer notices and chases, which takes longer on a slow or busy machine (290–440
    // MiB seen on this project's 2-core test machine, page checksums or not).
    assert!(largest < 576 << 20, "the WAL grew to {} MiB", largest >> 20);
    assert!(store.write_stats().catch_ups >= 1, "the writer never caught up");
}

/// A burst leaves the WAL file at its high-water mark; once the store has been idle for a
/// while, the file is folded back and cut to nothing, and later writes still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_store_cuts_its_wal_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(Location::Sqlite(tmp.path().join("clade.db"))).await.unwrap();
    let wal = tmp.path().join("clade.db-wal");
    let largest = write_hard(&store, &wal, "burst", 16, 50).await;
    assert!(largest > 4 << 20, "the burst left only {largest} bytes of WAL: nothing to cut");
    let wal_bytes = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let (within, every) = (Duration::from_secs(10), Duration::from_millis(100));
    let cut = eventually(within, every, async || wal_bytes() == 0).await;
    assert!(cut, "the WAL is still {} bytes after 10 s idle", wal_bytes());
    write_hard(&store, &wal, "after", 1, 1).await;
    let tenant = store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await.unwrap();
    let sessions = store.sessions(tenant.id).list(None, 2000).await.unwrap();
    assert_eq!(sessions.len(), 16 * 50 + 1, "every event's session is still there");
}
