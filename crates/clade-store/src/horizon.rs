//! How far a reader following the outbox by id may read without passing a row that commits
//! later.
//!
//! Subscribers, streams and the event history follow the outbox by id, so ids must become
//! visible in order: a reader that saw id 8 must never find id 7 afterwards. SQLite has one
//! writer at a time, so its ids commit in order. PostgreSQL writers commit concurrently (the
//! nodes of a cluster), and an id taken from the identity column may commit after a higher
//! one. Rather than make every writer wait for every other, a writer *registers* before it
//! takes outbox ids, and readers stop below the lowest registration still open:
//!
//! - A writer, inside its transaction and before its first outbox id, takes a shared
//!   transaction-scoped advisory lock keyed by the outbox sequence's current value
//!   ([`REGISTER`]). Every id it then takes is above that key; the lock goes when it commits or
//!   rolls back, after its rows became visible. Shared locks never wait on each other.
//! - A reader first reads the sequence's value `last`, then the lowest key still locked, and
//!   reads no id above `min(last, key - 1)` ([`HORIZON`]), in a statement that starts after.
//!   An id at or below that bound was taken before the reader looked, by a writer that had
//!   registered (its key is below the id), so it has committed, rolled back, or holds a key
//!   the reader saw, which the bound stays below.
//!
//! Keys live in a range of their own per schema (the top bits hash the schema's name), so two
//! stores in one database only ever make each other's readers wait, never read past a row.

use crate::db::{Tx, query};
use crate::error::Result;
use crate::store::Store;

/// The first key of this schema's range: 23 bits of the schema's hash above 40 bits of ids.
macro_rules! range {
    () => {
        "((hashtext('clade outbox ' || current_schema())::bigint & 8388607) << 40)"
    };
}

/// The outbox sequence's current value (0 before its first id).
macro_rules! last_id {
    () => {
        "COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'id')::regclass), 0)"
    };
}

/// Run by a writer inside its transaction before it takes outbox ids (PostgreSQL only).
const REGISTER: &str =
    concat!("SELECT pg_advisory_xact_lock_shared(", range!(), " + ", last_id!(), ")");

/// `last`, then the lowest registration still open (`NULL` when none is). The sequence is read
/// in the subquery, the locks in a subplan that depends on its row, so in that order.
const HORIZON: &str = concat!(
    "SELECT v.last, (SELECT MIN((l.classid::bigint << 32) | l.objid::bigint) FROM pg_locks l \
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND v.last IS NOT NULL \
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND ((l.classid::bigint << 32) | l.objid::bigint) \
     BETWEEN v.first AND v.first + 1099511627775) - v.first AS registered FROM (SELECT ",
    last_id!(),
    " AS last, ",
    range!(),
    " AS first OFFSET 0) AS v"
);

/// Registers the transaction on `conn` as about to take outbox ids (see the module's doc).
/// Nothing to do on SQLite, whose writer holds the database's one write lock.
pub(crate) async fn register(conn: &mut Tx) -> Result<()> {
    match conn {
        Tx::Postgres(_) => conn.batch(REGISTER).await,
        Tx::Sqlite(_) => Ok(()),
    }
}

impl Store {
    /// The highest outbox id a reader may read up to now: every id at or below it has
    /// committed or never will. Read it in a statement of its own, before the read it bounds.
    pub(crate) async fn outbox_horizon(&self) -> Result<i64> {
        if self.backend() == crate::Backend::Sqlite {
            return Ok(i64::MAX);
        }
        let row = self.row(query(HORIZON)).await?;
        let last: i64 = row.try_get("last")?;
        let registered: Option<i64> = row.try_get("registered")?;
        Ok(registered.map_or(last, |key| last.min(key - 1)))
    }
}
