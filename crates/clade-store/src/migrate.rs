//! Versioned schema migrations, run at open by the processes allowed to ([`Migrations`]).
//!
//! Each migration runs in its own transaction together with the row that records it, so a
//! crash mid-migration leaves the previous version intact. On PostgreSQL the whole run holds an
//! advisory lock, so two processes never migrate one schema at once. A database whose version
//! is newer than the newest migration this binary knows is refused: an old binary must not
//! write to a schema it does not understand. Only `clade serve` and `clade migrate` upgrade a
//! store; any other process refuses a store that needs upgrading (it may be serving under a
//! running gateway of the older version), though it may create a brand-new one.

use crate::backend::{Backend, Pool, PoolConn, classify, dialect_sql};
use crate::error::{Error, Result};

struct Migration {
    version: i64,
    name: &'static str,
    /// For both backends, with type names rewritten by [`dialect_sql`].
    sql: &'static str,
    /// PostgreSQL's own version, where the SQLite one cannot be rewritten into it (a table
    /// rebuild into a SQLite-only shape, say).
    postgres: Option<&'static str>,
}

impl Migration {
    /// A migration whose SQL serves both backends.
    const fn shared(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self { version, name, sql, postgres: None }
    }

    /// The same, with PostgreSQL's own version of it.
    const fn with_postgres(self, postgres: &'static str) -> Self {
        Self { postgres: Some(postgres), ..self }
    }
}

const MIGRATIONS: &[Migration] = &[
    Migration::shared(1, "init", include_str!("../migrations/0001_init.sql")),
    Migration::shared(2, "usage_budgets", include_str!("../migrations/0002_usage_budgets.sql")),
    Migration::shared(3, "sessions_turns", include_str!("../migrations/0003_sessions_turns.sql")),
    Migration::shared(
        4,
        "grants_approvals_audit",
        include_str!("../migrations/0004_grants_approvals_audit.sql"),
    ),
    Migration::shared(5, "session_indexes", include_str!("../migrations/0005_session_indexes.sql")),
    Migration::shared(
        6,
        "events_by_turn_partial",
        include_str!("../migrations/0006_events_by_turn_partial.sql"),
    ),
    Migration::shared(
        7,
        "fewer_btrees_per_turn",
        include_str!("../migrations/0007_fewer_btrees_per_turn.sql"),
    )
    .with_postgres(include_str!("../migrations/0007_fewer_btrees_per_turn.postgres.sql")),
    Migration::shared(
        8,
        "session_queue_mode",
        include_str!("../migrations/0008_session_queue_mode.sql"),
    ),
    Migration::shared(9, "token_scopes", include_str!("../migrations/0009_token_scopes.sql")),
    Migration::shared(10, "executions", include_str!("../migrations/0010_executions.sql")),
    Migration::shared(11, "token_agents", include_str!("../migrations/0011_token_agents.sql")),
    Migration::shared(12, "leases", include_str!("../migrations/0012_leases.sql")),
    Migration::shared(
        13,
        "turns_are_executions",
        include_str!("../migrations/0013_turns_are_executions.sql"),
    )
    .with_postgres(include_str!("../migrations/0013_turns_are_executions.postgres.sql")),
    Migration::shared(14, "jobs", include_str!("../migrations/0014_jobs.sql")),
    Migration::shared(
        15,
        "job_targets_runs",
        include_str!("../migrations/0015_job_targets_runs.sql"),
    ),
    Migration::shared(
        16,
        "config_revisions",
        include_str!("../migrations/0016_config_revisions.sql"),
    ),
    Migration::shared(17, "agent_settings", include_str!("../migrations/0017_agent_settings.sql")),
    Migration::shared(18, "peers", include_str!("../migrations/0018_peers.sql")),
    Migration::shared(19, "peer_leases", include_str!("../migrations/0019_peer_leases.sql")),
    Migration::shared(20, "host_calls", include_str!("../migrations/0020_host_calls.sql")),
    Migration::shared(21, "memories", include_str!("../migrations/0021_memories.sql"))
        .with_postgres(include_str!("../migrations/0021_memories.postgres.sql")),
    Migration::shared(
        22,
        "session_summaries",
        include_str!("../migrations/0022_session_summaries.sql"),
    ),
    Migration::shared(23, "working_memory", include_str!("../migrations/0023_working_memory.sql")),
    Migration::shared(24, "agent_messages", include_str!("../migrations/0024_agent_messages.sql")),
    Migration::shared(25, "pauses", include_str!("../migrations/0025_pauses.sql")),
    Migration::shared(
        26,
        "topic_subscriptions",
        include_str!("../migrations/0026_topic_subscriptions.sql"),
    ),
    Migration::shared(27, "agent_lineage", include_str!("../migrations/0027_agent_lineage.sql")),
    Migration::shared(28, "forks", include_str!("../migrations/0028_forks.sql")),
    Migration::shared(29, "memory_upkeep", include_str!("../migrations/0029_memory_upkeep.sql")),
    Migration::shared(30, "channel_chats", include_str!("../migrations/0030_channel_chats.sql")),
    Migration::shared(31, "token_expiry", include_str!("../migrations/0031_token_expiry.sql")),
    Migration::shared(32, "lease_expiry", include_str!("../migrations/0032_lease_expiry.sql")),
    Migration::shared(33, "flows", include_str!("../migrations/0033_flows.sql")),
    Migration::shared(34, "flow_fires", include_str!("../migrations/0034_flow_fires.sql")),
    Migration::shared(35, "debugging", include_str!("../migrations/0035_debugging.sql")),
];

/// Every migration's SQL as run on SQLite, for tests of the schema.
#[cfg(test)]
pub(crate) fn sqlite_schema() -> String {
    MIGRATIONS.iter().map(|m| dialect_sql(Backend::Sqlite, m.sql)).collect::<Vec<_>>().join("\n")
}

/// The schema version this binary writes: its newest migration's.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// What opening a store may do to its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migrations {
    /// Upgrade it to [`SCHEMA_VERSION`] (`clade serve`, `clade migrate`).
    Apply,
    /// Create a brand-new store, but refuse one at an older version with
    /// [`Error::NeedsMigration`]: upgrading is the server's job, not a side effect of any
    /// command run beside it.
    #[default]
    RequireCurrent,
}

/// The version a store was at and is at now, as [`run`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    pub from: i64,
    pub to: i64,
}

/// The version a store is at (0 for a new one).
const CURRENT_VERSION: &str =
    "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations";

/// The advisory lock every migration run on PostgreSQL holds, keyed by schema.
const PG_MIGRATION_LOCK: &str =
    "SELECT pg_advisory_lock(hashtextextended('clade migrate ' || current_schema(), 0))";
const PG_MIGRATION_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtextextended('clade migrate ' || current_schema(), 0))";

pub(crate) async fn run(
    pool: &Pool,
    backend: Backend,
    shown: &str,
    now: i64,
    policy: Migrations,
) -> Result<MigrationReport> {
    let mut conn = pool.acquire().await.map_err(|e| classify(e, shown))?;
    if backend == Backend::Postgres {
        conn.run(PG_MIGRATION_LOCK.into()).await.map_err(|e| classify(e, shown))?;
    }
    let outcome = migrate_locked(&mut conn, backend, shown, now, policy).await;
    if backend == Backend::Postgres {
        // Closing the connection would release it too; a pooled one stays open.
        let _ = conn.run(PG_MIGRATION_UNLOCK.into()).await;
    }
    outcome
}

async fn migrate_locked(
    conn: &mut PoolConn,
    backend: Backend,
    shown: &str,
    now: i64,
    policy: Migrations,
) -> Result<MigrationReport> {
    conn.run(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            .into(),
    )
    .await
    .map_err(|e| classify(e, shown))?;
    let current: i64 = conn.number(CURRENT_VERSION).await.map_err(|e| classify(e, shown))?;
    if current > SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            location: shown.to_owned(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if policy == Migrations::RequireCurrent && current != 0 && current < SCHEMA_VERSION {
        return Err(Error::NeedsMigration {
            location: shown.to_owned(),
            found: current,
            expected: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(version = migration.version, name = migration.name, "applying migration");
        let begin = if backend == Backend::Sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
        conn.run(begin.into()).await?;
        let applied = async {
            // The SQL is compiled into the binary; only type names are rewritten.
            let sql = match (backend, migration.postgres) {
                (Backend::Postgres, Some(own)) => own.to_owned(),
                _ => dialect_sql(backend, migration.sql),
            };
            conn.run(sql).await?;
            conn.run_with(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                now,
            )
            .await?;
            conn.run("COMMIT".into()).await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(err) = applied {
            let _ = conn.run("ROLLBACK".into()).await;
            // Two processes may race to migrate a fresh database; the loser sees the winner's
            // tables and simply re-checks the version.
            let found: i64 = conn.number(CURRENT_VERSION).await.unwrap_or(0);
            if found >= migration.version {
                continue;
            }
            return Err(classify(err, shown));
        }
    }
    Ok(MigrationReport { from: current, to: current.max(SCHEMA_VERSION) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrate_sqlite(conn: &rusqlite::Connection, versions: std::ops::RangeInclusive<i64>) {
        for migration in MIGRATIONS.iter().filter(|m| versions.contains(&m.version)) {
            conn.execute_batch(&dialect_sql(Backend::Sqlite, migration.sql)).unwrap();
        }
    }

    fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }

    /// Migration 7 rebuilds the turn tables of a live database: every row stays, a turn gets
    /// the usage totals of its model calls, the outbox never hands out an id it gave before
    /// (subscribers' cursors point into them), and the rebuilt tables keep their indexes and
    /// cascades.
    #[test]
    fn the_rebuild_for_fewer_btrees_keeps_rows_ids_and_cascades() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        migrate_sqlite(&conn, 1..=6);
        conn.execute_batch(
            "INSERT INTO tenants VALUES (x'01', 't', 0);
             INSERT INTO agents VALUES (x'02', x'01', 'a', NULL, 0, '{}');
             INSERT INTO sessions VALUES (x'03', x'01', x'02', 'p', 'c', 'u', 'c', 2, 0, 0);
             INSERT INTO events VALUES (x'04', x'01', x'03', 0, 'k0', 'h', 'hi', 'done', x'05', 0);
             INSERT INTO events VALUES (x'06', x'01', x'03', 1, 'k1', 'h', 'again', 'pending', NULL, 0);
             INSERT INTO turns VALUES (x'05', x'03', x'01', x'02', 'completed', 'hello', NULL, 'm', 1, 0, 1);
             INSERT INTO journal VALUES (x'05', '0001', 'model', '{}', 0);
             INSERT INTO model_usage VALUES (x'07', x'01', x'02', x'05', 'm', 1, 2, 0, 0, 3, 0);
             INSERT INTO outbox (event_id, tenant_id, session_id, turn_id, kind, data, created_at)
                 VALUES (x'10', x'01', x'03', x'05', 'turn.started', '{}', 0),
                        (x'11', x'01', x'03', x'05', 'turn.finished', '{}', 0),
                        (x'12', x'01', x'03', NULL, 'pruned', '{}', 0);
             DELETE FROM outbox WHERE id = 3;",
        )
        .unwrap();
        migrate_sqlite(&conn, 7..=7);

        for (table, rows) in
            [("events", 2), ("turns", 1), ("journal", 1), ("model_usage", 1), ("outbox", 2)]
        {
            assert_eq!(count(&conn, table), rows, "{table}");
        }
        let reply: String =
            conn.query_row("SELECT reply FROM turns WHERE id = x'05'", [], |r| r.get(0)).unwrap();
        assert_eq!(reply, "hello");
        let totals: (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT model_calls, input_tokens, output_tokens, cost_micros FROM turns \
                 WHERE id = x'05'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(totals, (1, 1, 2, 3), "the turn's usage totals were not carried over");
        for table in ["events", "turns", "journal", "model_usage"] {
            let err = conn.prepare(&format!("SELECT rowid FROM {table}")).err();
            assert!(err.is_some(), "{table} still has a rowid, so two B-trees per row");
        }
        let sequenced: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'outbox'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(sequenced, 0, "the outbox still rewrites sqlite_sequence on every insert");
        // As the store numbers rows: past the highest id ever issued, which the old sequence gave.
        let next: i64 =
            conn.query_row(crate::turns::NEXT_OUTBOX_ID_SQLITE, [], |r| r.get(0)).unwrap();
        assert_eq!(next, 4, "the outbox reused the id of a pruned row");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for index in
            ["events_open_by_session", "events_by_turn", "turns_by_session", "outbox_by_session"]
        {
            assert!(indexes.iter().any(|i| i == index), "{index} is gone: {indexes:?}");
        }
        for index in ["model_usage_by_tenant_time", "model_usage_by_turn"] {
            assert!(!indexes.iter().any(|i| i == index), "{index} is still written: {indexes:?}");
        }
        let duplicate = conn.execute(
            "INSERT INTO events VALUES (x'08', x'01', x'03', 2, 'k0', 'h', 'dup', 'pending', NULL, 0)",
            [],
        );
        assert!(duplicate.is_err(), "an idempotency key was accepted twice");
        conn.execute("DELETE FROM sessions WHERE id = x'03'", []).unwrap();
        assert_eq!(count(&conn, "events"), 0, "deleting a session no longer deletes its events");
        assert_eq!(count(&conn, "turns"), 0, "deleting a session no longer deletes its turns");
    }

    /// Migration 13 makes every turn an execution of kind `turn` owned by its session, and its
    /// journal that execution's steps, numbered in the order the engine wrote them (a model
    /// call, then each tool call's start and result, even within one millisecond), beside the
    /// executions already there; and a turn writes no more B-trees than it did.
    #[test]
    fn turns_become_executions_with_numbered_steps() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        migrate_sqlite(&conn, 1..=12);
        conn.execute_batch(
            "INSERT INTO tenants VALUES (x'01', 't', 0);
             INSERT INTO agents VALUES (x'02', x'01', 'a', NULL, 0, '{}');
             INSERT INTO sessions (id, tenant_id, agent_id, platform, channel, actor,
                 last_active_channel, next_seq, created_at, updated_at)
                 VALUES (x'03', x'01', x'02', 'p', 'c', 'u', 'c', 2, 0, 0);
             INSERT INTO turns VALUES (x'05', x'03', x'01', x'02', 'completed', 'hello', NULL,
                 'm', 4, 10, 20, 2, 30, 40, 50);
             INSERT INTO turns VALUES (x'06', x'03', x'01', x'02', 'yielded', NULL, 'budget',
                 NULL, 4, 30, 31, 1, 1, 1, 1);
             INSERT INTO journal VALUES (x'05', 'model/10', 'model_response', '\"m10\"', 12);
             INSERT INTO journal VALUES (x'05', 'tool/1/0/result', 'tool_result', '\"r\"', 11);
             INSERT INTO journal VALUES (x'05', 'model/1', 'model_response', '\"m1\"', 11);
             INSERT INTO journal VALUES (x'05', 'tool/1/0/start', 'tool_started', '\"s\"', 11);
             INSERT INTO journal VALUES (x'05', 'model/0', 'model_response', '\"m0\"', 10);
             INSERT INTO journal VALUES (x'05', 'model/2', 'model_response', '\"m2\"', 12);
             INSERT INTO journal VALUES (x'06', 'resume/0', 'resumed', '{}', 35);
             INSERT INTO executions VALUES (x'07', x'01', x'02', 'cron_fire', 'agent', x'02',
                 'running', '{}', NULL, NULL, 5, 6, NULL);
             INSERT INTO execution_steps VALUES (x'07', 1, 'fired', '1', 6);",
        )
        .unwrap();
        migrate_sqlite(&conn, 13..=13);

        let turn: (String, String, String, String, Option<String>, i64, i64, i64) = conn
            .query_row(
                "SELECT kind, owner_kind, hex(owner_id), status, output, config_revision, \
                 model_calls, cost_micros FROM executions WHERE id = x'05'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            turn,
            (
                "turn".into(),
                "session".into(),
                "03".into(),
                clade_core::ExecutionStatus::Completed.as_str().into(),
                Some("hello".into()),
                4,
                2,
                50
            )
        );
        let yielded: (String, Option<String>) = conn
            .query_row("SELECT status, error FROM executions WHERE id = x'06'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(yielded, ("paused".into(), Some("budget".into())), "a yielded turn is paused");
        let steps = |id: &str| -> Vec<(i64, String)> {
            conn.prepare(&format!(
                "SELECT seq, step_key FROM execution_steps WHERE execution_id = x'{id}' ORDER BY seq"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        let order: Vec<(i64, String)> =
            ["model/0", "model/1", "tool/1/0/start", "tool/1/0/result", "model/2", "model/10"]
                .iter()
                .enumerate()
                .map(|(i, key)| (i as i64 + 1, (*key).to_owned()))
                .collect();
        assert_eq!(steps("05"), order);
        assert_eq!(steps("06"), vec![(1, "resume/0".to_owned())]);
        assert_eq!(steps("07"), vec![(1, "fired".to_owned())], "an execution lost its steps");
        assert_eq!(count(&conn, "executions"), 3);
        for gone in ["turns", "journal"] {
            assert!(
                conn.prepare(&format!("SELECT 1 FROM {gone}")).is_err(),
                "{gone} is still there"
            );
        }
        for table in ["executions", "execution_steps"] {
            let err = conn.prepare(&format!("SELECT rowid FROM {table}")).err();
            assert!(err.is_some(), "{table} has a rowid, so two B-trees per row");
        }
        // A turn's row is in two B-trees, as it was: the table and the index by owner. The
        // partial indexes leave turns out.
        let turn_indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'executions' \
                 AND sql IS NOT NULL AND sql NOT LIKE '%WHERE%kind <> ''turn''%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(turn_indexes, vec!["executions_by_owner".to_owned()]);
    }
}
