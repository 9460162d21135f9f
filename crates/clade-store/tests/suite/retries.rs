//! PostgreSQL may abort a write's transaction without changing anything (a deadlock victim, a
//! serialization failure): the store's writer then runs the write again, in a transaction of
//! its own, and its caller sees only that it succeeded.

use std::time::Duration;

use sqlx::{Connection, Executor, Row};

use super::harness::{accept, backends, eventually, tenant_and_agent};

/// What an audit record's append takes first on PostgreSQL, so that two nodes appending to
/// one tenant's chain take turns (`Tx::serialize`, keyed `audit <tenant>`).
const AUDIT_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ' ' || $1, 0))";

/// Opens a transaction on another connection that writes `tenant`'s next audit record and
/// would wait a minute before looking for a deadlock, so that in one it is the store's
/// transaction PostgreSQL aborts.
async fn hold_next_audit_record(url: &str, tenant: clade_core::TenantId) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    conn.execute("SET LOCAL deadlock_timeout = '60s'").await.unwrap();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, seq, at, agent_id, kind, tool, decision, detail, \
         prev_hash, hash) SELECT $1, COALESCE(MAX(seq), 0) + 1, 0, NULL, 'tool_decision', NULL, \
         NULL, '{}', '', '' FROM audit_log WHERE tenant_id = $1",
    )
    .bind(tenant.as_bytes().to_vec())
    .execute(&mut conn)
    .await
    .unwrap();
    conn
}

fn audit_entry(tenant: clade_core::TenantId) -> clade_store::access::AuditEntry {
    clade_store::access::AuditEntry {
        tenant,
        agent: None,
        kind: clade_core::AuditKind::ToolDecision,
        tool: Some("search".into()),
        decision: Some("allow".into()),
        detail: "{}".into(),
    }
}

/// Audit records this store holds for `tenant` from `tool`.
async fn audited(store: &clade_store::Store, tenant: clade_core::TenantId) -> usize {
    let all = store
        .access(tenant)
        .audit_records(&clade_store::access::AuditFilter { limit: 100, ..Default::default() })
        .await
        .unwrap();
    all.iter().filter(|r| r.tool.as_deref() == Some("search")).count()
}

#[tokio::test]
async fn a_write_postgres_aborts_as_a_deadlock_victim_runs_again() {
    for h in backends().await {
        if h.name != "postgres" {
            continue;
        }
        let tenant = h.store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await.unwrap().id;
        let retried_before = h.store.write_stats().retries;

        // Another client writes the tenant's next audit record and keeps its transaction open.
        let url = h.location.connect_url().unwrap();
        let mut other = hold_next_audit_record(&url, tenant).await;

        // The store's append takes the chain's lock, then waits for the other's record.
        let store = h.store.clone();
        let write = tokio::spawn(async move { store.audit(audit_entry(tenant)).await });
        wait_until_blocked_by(&mut other).await;

        // Now the other client waits for the chain's lock: a deadlock, broken by aborting the
        // store's transaction, which released the lock.
        sqlx::query(AUDIT_LOCK).bind(format!("audit {tenant}")).execute(&mut other).await.unwrap();
        other.execute("COMMIT").await.unwrap();

        write.await.unwrap().unwrap_or_else(|err| panic!("the write failed: {err}"));
        assert_eq!(audited(&h.store, tenant).await, 1, "the write was not stored once");
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
        let mut other = hold_next_audit_record(&url, tenant.id).await;
        let store = h.store.clone();
        let first = tokio::spawn(async move {
            store.sessions(tenant.id).set_queue_mode(stalled, Some("steer".into())).await
        });
        wait_until_blocked_by(&mut staller).await;
        let store = h.store.clone();
        let batch = tokio::spawn(async move {
            let one = store.tenants().create("one");
            let aborted = store.audit(audit_entry(tenant.id));
            let three = store.tenants().create("three");
            tokio::join!(one, aborted, three)
        });
        // Give the three writes time to reach the writer's queue behind the first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        staller.execute("COMMIT").await.unwrap();
        first.await.unwrap().unwrap();
        wait_until_blocked_by(&mut other).await;
        let key = format!("audit {}", tenant.id);
        sqlx::query(AUDIT_LOCK).bind(key).execute(&mut other).await.unwrap();
        other.execute("COMMIT").await.unwrap();

        let (one, aborted, three) = batch.await.unwrap();
        one.unwrap_or_else(|err| panic!("the first write of the batch failed: {err}"));
        three.unwrap_or_else(|err| panic!("the last write of the batch failed: {err}"));
        aborted.unwrap_or_else(|err| panic!("the aborted write failed: {err}"));
        assert_eq!(audited(&h.store, tenant.id).await, 1, "the aborted write was not stored once");
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
