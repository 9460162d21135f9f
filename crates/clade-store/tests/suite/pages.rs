//! What a turn costs the disk: the pages its commits write to SQLite's WAL. Every fsync,
//! checkpoint and WAL restart scales with this, so an index added on the turn's path shows up
//! here before it shows up as latency.

use clade_core::{Agent, EventKind, StepKey, Tenant, TurnStatus};
use clade_store::{
    Agents, DataDir, JournalEntry, Location, OutboxEvent, Store, TurnOutcome, UsageRecord,
};
use sqlx::{Connection, Row};

use super::harness::{accept, new_turn, open, tenant_and_agent};

/// One turn as the engine writes it when the model answers at once: the event is accepted
/// (one commit), then the turn begins and ends with its model step (a second).
async fn one_turn(store: &Store, tenant: &Tenant, agent: &Agent, channel: &str) {
    let accepted = accept(store, tenant, agent, channel).await;
    let turn = new_turn(store, &accepted, tenant, agent);
    let outbox = |kind| OutboxEvent { kind, data: "{}".into() };
    let step = JournalEntry {
        step: StepKey::Model { iteration: 0 },
        data: r#"{"text":"hi there"}"#.into(),
    };
    let usage = UsageRecord {
        tenant: tenant.id,
        agent: Some(agent.id),
        turn: Some(turn.id),
        model: "offline".into(),
        input_tokens: 10,
        output_tokens: 3,
        cached_tokens: 0,
        cache_write_tokens: 0,
        cost_micros: 0,
    };
    let outcome = TurnOutcome {
        status: TurnStatus::Completed,
        reply: Some("hi there".into()),
        error: None,
        model: Some("offline".into()),
    };
    store
        .turns()
        .begin(
            &turn,
            vec![accepted.event_id],
            vec![outbox(EventKind::TurnStarted)],
            Some((step, Some(usage))),
            Some((outcome, vec![outbox(EventKind::TurnFinished)])),
        )
        .await
        .unwrap();
}

/// Frames (one page each) in the WAL. Run while a reader holds an older snapshot, so the WAL
/// cannot start over and the count only grows.
async fn wal_frames(conn: &mut sqlx::SqliteConnection) -> i64 {
    let mut frames = None;
    let every = std::time::Duration::from_millis(5);
    let read = super::harness::eventually(std::time::Duration::from_secs(30), every, async || {
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await;
        // The store's own checkpointer may hold the checkpoint lock for a moment.
        frames = row.ok().filter(|row| row.get::<i64, _>(0) == 0).map(|row| row.get(1));
        frames.is_some()
    });
    assert!(read.await, "the WAL stayed locked for 30 s");
    frames.unwrap_or_default()
}

/// A turn whose commits each stand alone (a quiet deployment, or turns too far apart to share
/// a group commit) writes at most this many pages. It was 25.8 before migration 7 made the turn
/// tables one B-tree each, dropped two indexes of usage and the outbox's `sqlite_sequence`
/// page, 19.3 after; raise it only for a reason worth the disk.
const MAX_PAGES_PER_TURN: f64 = 20.5;

#[tokio::test]
async fn a_turn_writes_few_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    let store = open(Location::Sqlite(path.clone())).await.unwrap();
    let agents = Agents::new(store.clone(), DataDir::open(tmp.path().join("data")).unwrap());
    let (tenant, agent) = tenant_and_agent(&store, &agents, "pages").await;
    // Sessions with some history first, so each session's index entries sit on leaves of
    // their own as in a store that has run for a while.
    let sessions = 20;
    for _ in 0..10 {
        for s in 0..sessions {
            one_turn(&store, &tenant, &agent, &format!("c{s}")).await;
        }
    }

    let url = Location::Sqlite(path.clone()).connect_url().unwrap();
    let mut pinned = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut pinned).await.unwrap();
    sqlx::query("SELECT COUNT(*) FROM tenants").fetch_one(&mut pinned).await.unwrap();
    let mut counter = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let before = wal_frames(&mut counter).await;
    let turns = 2 * sessions;
    for n in 0..turns {
        one_turn(&store, &tenant, &agent, &format!("c{}", n % sessions)).await;
    }
    let after = wal_frames(&mut counter).await;
    sqlx::query("ROLLBACK").execute(&mut pinned).await.unwrap();

    let per_turn = (after - before) as f64 / turns as f64;
    eprintln!("pages written to the WAL per turn: {per_turn:.1}");
    assert!(
        per_turn <= MAX_PAGES_PER_TURN,
        "a turn wrote {per_turn:.1} pages to the WAL, over {MAX_PAGES_PER_TURN}: which table or \
         index did it add?"
    );
    assert!(per_turn >= 2.0, "{per_turn} pages per turn: the count is broken");
}
