//! Versioned schema migrations, run at open.
//!
//! Each migration runs in its own transaction together with the row that records it, so a
//! crash mid-migration leaves the previous version intact. A database whose version is newer
//! than the newest migration this binary knows is refused: an old binary must not write to a
//! schema it does not understand.

use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};

use crate::backend::{Backend, classify, dialect_sql};
use crate::error::{Error, Result};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") },
    Migration {
        version: 2,
        name: "usage_budgets",
        sql: include_str!("../migrations/0002_usage_budgets.sql"),
    },
    Migration {
        version: 3,
        name: "sessions_turns",
        sql: include_str!("../migrations/0003_sessions_turns.sql"),
    },
    Migration {
        version: 4,
        name: "grants_approvals_audit",
        sql: include_str!("../migrations/0004_grants_approvals_audit.sql"),
    },
    Migration {
        version: 5,
        name: "session_indexes",
        sql: include_str!("../migrations/0005_session_indexes.sql"),
    },
    Migration {
        version: 6,
        name: "events_by_turn_partial",
        sql: include_str!("../migrations/0006_events_by_turn_partial.sql"),
    },
];

/// Every migration's SQL as run on SQLite, for tests of the schema.
#[cfg(test)]
pub(crate) fn sqlite_schema() -> String {
    MIGRATIONS.iter().map(|m| dialect_sql(Backend::Sqlite, m.sql)).collect::<Vec<_>>().join("\n")
}

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 6;

pub(crate) async fn run(pool: &AnyPool, backend: Backend, shown: &str, now: i64) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(|e| classify(e, shown))?;
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(|e| classify(e, shown))?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get::<i64, _>(0))
        .map_err(|e| classify(e, shown))?;
    if current > SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            location: shown.to_owned(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(version = migration.version, name = migration.name, "applying migration");
        let begin = if backend == Backend::Sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
        conn.execute(begin).await?;
        let applied = async {
            // The SQL is compiled into the binary; only type names are rewritten.
            sqlx::raw_sql(AssertSqlSafe(dialect_sql(backend, migration.sql)))
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            conn.execute("COMMIT").await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(err) = applied {
            let _ = conn.execute("ROLLBACK").await;
            // Two processes may race to migrate a fresh database; the loser sees the winner's
            // tables and simply re-checks the version.
            let found: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| row.try_get::<i64, _>(0))
                .unwrap_or(0);
            if found >= migration.version {
                continue;
            }
            return Err(classify(err, shown));
        }
    }
    Ok(())
}
