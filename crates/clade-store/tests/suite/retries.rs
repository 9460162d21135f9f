//! PostgreSQL may abort a write's transaction without changing anything (a deadlock victim, a
//! serialization failure): the store's writer then runs the write again, in a transaction of
//! its own, and its caller sees only that it succeeded.

use std::time::Duration;

use sqlx::{Connection, Executor, Row};

use super::harness::{accept, backends, eventually, tenant_and_agent};

/// What every write on PostgreSQL takes first (`turns::WRITERS_LOCK_POSTGRES`).
const WRITERS_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('clade writers ' || current_schema(), 0))";

#[tokio::test]
async fn a_write_postgres_aborts_as_a_deadlock_victim_runs_again() {
    for h in backends().await {
        if h.name != "postgres" {
            continue;
        }
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let accepted = accept(&h.store, &tenant, &agent, "c").await;
        let retried_before = h.store.write_stats().retries;

        // Another client holds the session's row, and would wait a minute before looking for
        // a deadlock: the store's transaction is the one PostgreSQL aborts.
        let url = h.location.connect_url().unwrap();
        let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
        other.execute("BEGIN").await.unwrap();
        other.execute("SET LOCAL deadlock_timeout = '60s'").await.unwrap();
        sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
            .bind(accepted.session_id.as_bytes().to_vec())
            .fetch_one(&mut other)
            .await
            .unwrap();

        // The store's write takes the writers' lock, then waits for the row.
        let store = h.store.clone();
        let (tenant_id, session) = (tenant.id, accepted.session_id);
        let write = tokio::spawn(async move {
            store.sessions(tenant_id).set_queue_mode(session, Some("steer".into())).await
        });
        wait_until_blocked_by(&mut other).await;

        // Now the other client waits for the writers' lock: a deadlock, broken by aborting the
        // store's transaction, which released the lock.
        sqlx::query(WRITERS_LOCK).execute(&mut other).await.unwrap();
        other.execute("COMMIT").await.unwrap();

        let row = write.await.unwrap().unwrap_or_else(|err| panic!("the write failed: {err}"));
        assert_eq!(row.queue_mode.as_deref(), Some("steer"));
        let stored = h.store.sessions(tenant.id).get(session).await.unwrap();
        assert_eq!(stored.queue_mode.as_deref(), Some("steer"), "the write was not stored");
        assert!(h.store.write_stats().retries > retried_before, "nothing was run again");
    }
}

/// A write aborted inside a batch of several runs again alone: the batch's other writes
/// committed once, and are not run a second time (a tenant created twice would fail).
#[tokio::test]
async fn only_the_aborted_write_of_a_batch_runs_again() {
    for h in backends().await {
        if h.name != "postgres" {
            continue;
        }
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let stalled = accept(&h.store, &tenant, &agent, "stalled").await.session_id;
        let victim = accept(&h.store, &tenant, &agent, "victim").await.session_id;
        let retried_before = h.store.write_stats().retries;
        let url = h.location.connect_url().unwrap();
        let hold = |session: clade_core::SessionId| {
            let url = url.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                conn.execute("BEGIN").await.unwrap();
                conn.execute("SET LOCAL deadlock_timeout = '60s'").await.unwrap();
                sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
                    .bind(session.as_bytes().to_vec())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                conn
            }
        };
        // One client keeps the writer busy on a first write, so the next ones queue up and
        // go into one batch; another holds the row one of those will wait for.
        let mut staller = hold(stalled).await;
        let mut other = hold(victim).await;
        let store = h.store.clone();
        let first = tokio::spawn(async move {
            store.sessions(tenant.id).set_queue_mode(stalled, Some("steer".into())).await
        });
        wait_until_blocked_by(&mut staller).await;
        let store = h.store.clone();
        let batch = tokio::spawn(async move {
            let one = store.tenants().create("one");
            let aborted = store.sessions(tenant.id).set_queue_mode(victim, Some("steer".into()));
            let three = store.tenants().create("three");
            tokio::join!(one, aborted, three)
        });
        // Give the three writes time to reach the writer's queue behind the first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        staller.execute("COMMIT").await.unwrap();
        first.await.unwrap().unwrap();
        wait_until_blocked_by(&mut other).await;
        sqlx::query(WRITERS_LOCK).execute(&mut other).await.unwrap();
        other.execute("COMMIT").await.unwrap();

        let (one, aborted, three) = batch.await.unwrap();
        one.unwrap_or_else(|err| panic!("the first write of the batch failed: {err}"));
        three.unwrap_or_else(|err| panic!("the last write of the batch failed: {err}"));
        let row = aborted.unwrap_or_else(|err| panic!("the aborted write failed: {err}"));
        assert_eq!(row.queue_mode.as_deref(), Some("steer"));
        let names: Vec<String> =
            h.store.tenants().list().await.unwrap().iter().map(|t| t.name.to_string()).collect();
        assert!(names.contains(&"one".into()) && names.contains(&"three".into()), "{names:?}");
        assert!(h.store.write_stats().retries > retried_before, "nothing was run again");
    }
}

/// Waits until some backend waits for a lock `holder` holds.
async fn wait_until_blocked_by(holder: &mut sqlx::PgConnection) {
    let blocked = async || {
        let blocked: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
        )
        .fetch_one(&mut *holder)
        .await
        .unwrap()
        .get(0);
        blocked > 0
    };
    let waited = eventually(Duration::from_secs(30), Duration::from_millis(10), blocked).await;
    assert!(waited, "the store's write never waited");
}
