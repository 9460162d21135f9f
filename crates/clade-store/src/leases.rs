//! Leases with a fencing epoch: who may write a session's turns.
//!
//! Sessions map to shards; today there is one, [`SHARD`], so a node takes them all. Taking a
//! lease bumps its epoch and records it in the store handle ([`crate::ShardLeases::take`]); from then
//! on every turn and journal write through that handle (and its clones) checks, inside its own
//! transaction, that the row still carries that epoch, and fails with [`Error::Fenced`] once
//! another node has taken the lease. A handle that holds no lease (an operator's command)
//! writes no turns and is not checked.
//!
//! In a cluster, nodes hold shards for a time instead ([`ShardLeases::acquire`], `renew`,
//! `release`), timed by the database's clock, never a node's: a node whose clock is off
//! cannot keep a lease past its time, nor take one early.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clade_core::Timestamp;

use crate::backend::Backend;
use crate::db::{Tx, query};
use crate::error::{Error, Result};
use crate::store::Store;

/// The one shard every session maps to today.
pub const SHARD: i64 = 0;

/// A lease this store handle took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: i64,
    /// Bumped by every taking: a write under a lower epoch is refused.
    pub epoch: i64,
    pub holder: String,
}

/// A shard's lease as the table holds it, read at the database's time `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub shard: i64,
    pub holder: String,
    pub epoch: i64,
    pub acquired_at: Timestamp,
    /// `None`: never (a single node's lease of every shard).
    pub expires_at: Option<Timestamp>,
    /// The database's clock when this was read.
    pub now: Timestamp,
}

impl LeaseRow {
    /// Whether the lease still holds at the time it was read.
    pub fn is_live(&self) -> bool {
        self.expires_at.is_none_or(|at| at > self.now)
    }
}

/// The database's clock in Unix milliseconds, as SQL of `backend`.
fn database_now(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// What a store handle's turn and execution writes are fenced by, shared by its clones.
#[derive(Debug, Clone, Default)]
pub(crate) enum Fence {
    /// Nothing: a handle that took no lease (an operator's command) writes no turns and is not
    /// checked.
    #[default]
    Open,
    /// The lease of every shard, which a single node takes as it starts.
    Whole(i64),
    /// The shards of `count` this cluster node holds, each with its epoch: a write for a shard
    /// it does not hold is refused.
    Shards { count: u32, held: Arc<HashMap<i64, i64>> },
}

impl Fence {
    /// The lease (its shard) and the epoch a write for `owner` (a session's id, or an
    /// execution's) must find; `None` when it is not checked.
    pub(crate) fn of(&self, owner: &[u8; 16]) -> Option<(i64, i64)> {
        match self {
            Fence::Open => None,
            Fence::Whole(epoch) => Some((SHARD, *epoch)),
            Fence::Shards { count, held } => {
                let shard = i64::from(clade_core::shard::shard_of(owner, *count));
                Some((shard, held.get(&shard).copied().unwrap_or(0)))
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self, Fence::Open)
    }
}

/// Inside a write's transaction: refuses it unless `lease`'s row (its shard) still carries
/// its epoch. On PostgreSQL the row is read `FOR SHARE`, so no lease can be taken between this
/// read and the commit: a taker's update waits for it, and a write that comes after the taker
/// finds the new epoch. (SQLite's writer holds the one write lock throughout.)
pub(crate) async fn check(conn: &mut Tx, lease: Option<(i64, i64)>) -> Result<()> {
    let Some((shard, epoch)) = lease else { return Ok(()) };
    let sql = match conn {
        Tx::Postgres(_) => "SELECT epoch FROM leases WHERE shard = $1 FOR SHARE",
        Tx::Sqlite(_) => "SELECT epoch FROM leases WHERE shard = $1",
    };
    let row = query(sql).bind(shard).fetch_optional(conn).await?;
    let current = row.map(|row| row.try_get::<i64, _>("epoch")).transpose()?;
    if epoch == 0 || current != Some(epoch) {
        return Err(Error::Fenced { held: epoch, current: current.unwrap_or(0) });
    }
    Ok(())
}

/// The leases of session shards this node holds, and the fencing epoch its turn writes carry.
#[derive(Clone, Copy)]
pub struct ShardLeases<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The leases of session shards this node holds.
    pub fn shard_leases(&self) -> ShardLeases<'_> {
        ShardLeases { store: self }
    }
}

impl ShardLeases<'_> {
    /// Takes the lease of every shard for `holder` (a node's name): whoever held it is fenced
    /// off from the next write it tries. The epoch applies to this handle and its clones.
    pub async fn take(self, holder: &str) -> Result<Vec<Lease>> {
        let now = self.store.now();
        let holder = holder.to_owned();
        let lease = self.store
            .write(move |conn| {
                let holder = holder.clone();
                Box::pin(async move {
                    let row = query(
                        "INSERT INTO leases (shard, holder, epoch, acquired_at) VALUES ($1, $2, 1, $3) \
                         ON CONFLICT (shard) DO UPDATE SET holder = excluded.holder, \
                         epoch = leases.epoch + 1, acquired_at = excluded.acquired_at \
                         RETURNING epoch",
                    )
                    .bind(SHARD)
                    .bind(holder.clone())
                    .bind(now.as_millis())
                    .fetch_one(conn)
                    .await?;
                    Ok(Lease { shard: SHARD, epoch: row.try_get("epoch")?, holder })
                })
            })
            .await?;
        self.set_fence(Fence::Whole(lease.epoch));
        Ok(vec![lease])
    }

    /// Whether this handle still holds the leases it took (true if it took none): each lease
    /// row still carries the epoch it took.
    pub async fn held(self) -> Result<bool> {
        let taken: Vec<(i64, i64)> = match self.fencing() {
            Fence::Open => return Ok(true),
            Fence::Whole(epoch) => vec![(SHARD, epoch)],
            Fence::Shards { held, .. } => held.iter().map(|(s, e)| (*s, *e)).collect(),
        };
        for (shard, epoch) in taken {
            let row = self
                .store
                .maybe_row(query("SELECT epoch FROM leases WHERE shard = $1").bind(shard))
                .await?;
            if row.map(|row| row.try_get::<i64, _>("epoch")).transpose()? != Some(epoch) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether this handle still holds the lease `session`'s writes are fenced by (true when
    /// they are not fenced).
    pub async fn holds(self, session: clade_core::SessionId) -> Result<bool> {
        let Some((shard, epoch)) = self.fencing().of(session.as_bytes()) else { return Ok(true) };
        if epoch == 0 {
            return Ok(false);
        }
        let row = self
            .store
            .maybe_row(query("SELECT epoch FROM leases WHERE shard = $1").bind(shard))
            .await?;
        Ok(row.map(|row| row.try_get::<i64, _>("epoch")).transpose()? == Some(epoch))
    }

    /// Whether this handle is fenced by shards ([`ShardLeases::fence_by_shards`]): a cluster
    /// node's.
    pub fn by_shards(self) -> bool {
        matches!(self.fencing(), Fence::Shards { .. })
    }

    /// The epoch this handle's turn writes are fenced by, if it took the lease of every shard.
    pub fn fence(self) -> Option<i64> {
        match self.fencing() {
            Fence::Whole(epoch) => Some(epoch),
            Fence::Open | Fence::Shards { .. } => None,
        }
    }

    /// Fences this handle's turn and execution writes (and its clones') by the shards, of
    /// `count`, that it acquires from now on: a write for a session (or an execution) of a
    /// shard it does not hold is refused with [`Error::Fenced`]. A cluster node calls it once,
    /// before it acquires any.
    pub fn fence_by_shards(self, count: u32) {
        self.set_fence(Fence::Shards { count: count.max(1), held: Arc::default() });
    }

    pub(crate) fn fencing(self) -> Fence {
        self.store.fence.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_fence(self, fence: Fence) {
        *self.store.fence.write().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    /// Records (`Some`) or forgets (`None`) the epoch this handle holds `shard` under, when it
    /// is fenced by shards.
    fn hold(self, shard: i64, epoch: Option<i64>) {
        let mut fence = self.store.fence.write().unwrap_or_else(|e| e.into_inner());
        if let Fence::Shards { held, .. } = &mut *fence {
            let held = Arc::make_mut(held);
            match epoch {
                Some(epoch) => held.insert(shard, epoch),
                None => held.remove(&shard),
            };
        }
    }

    /// Takes `shard` for `holder` for `ttl` of the database's time, if it is free, expired, or
    /// `holder`'s already; `None` while another holder's lease lives. Taken anew (from
    /// another holder, or after it expired) its epoch goes up, fencing off the writes of
    /// whoever held it; `holder`'s own live lease keeps its epoch and gains time.
    pub async fn acquire(self, holder: &str, shard: i64, ttl: Duration) -> Result<Option<Lease>> {
        let now = database_now(self.store.backend());
        let sql = format!(
            "INSERT INTO leases (shard, holder, epoch, acquired_at, expires_at) \
             VALUES ($1, $2, 1, {now}, {now} + $3) \
             ON CONFLICT (shard) DO UPDATE SET \
             epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > {now} \
                 THEN leases.epoch ELSE leases.epoch + 1 END, \
             acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > {now} \
                 THEN leases.acquired_at ELSE excluded.acquired_at END, \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder \
                 OR (leases.expires_at IS NOT NULL AND leases.expires_at <= {now}) \
             RETURNING epoch"
        );
        let (holder, ttl) = (holder.to_owned(), millis(ttl));
        let lease = self
            .store
            .write(move |conn| {
                let (sql, holder) = (sql.clone(), holder.clone());
                Box::pin(async move {
                    let row = query(sql)
                        .bind(shard)
                        .bind(holder.clone())
                        .bind(ttl)
                        .fetch_optional(conn)
                        .await?;
                    let epoch = row.map(|row| row.try_get::<i64, _>("epoch")).transpose()?;
                    Ok(epoch.map(|epoch| Lease { shard, epoch, holder }))
                })
            })
            .await?;
        if let Some(lease) = &lease {
            self.hold(shard, Some(lease.epoch));
        }
        Ok(lease)
    }

    /// Extends `lease` by `ttl` of the database's time; `false` when it is no longer held
    /// (expired, or taken by another node): its holder must stop writing for the shard.
    pub async fn renew(self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let renewed = self.set_expiry(lease, millis(ttl), true).await? == 1;
        if !renewed {
            self.hold(lease.shard, None);
        }
        Ok(renewed)
    }

    /// Gives `lease` up at once (a node handing its shards over as it drains): the next node
    /// to ask takes it without waiting for it to expire.
    pub async fn release(self, lease: &Lease) -> Result<()> {
        // Its writes stop before its successor's may start.
        self.hold(lease.shard, None);
        self.set_expiry(lease, 0, false).await.map(drop)
    }

    /// Sets `lease`'s expiry `after` ms past the database's time, if it is still that
    /// holder's under that epoch (and still live, when `live`); the rows changed.
    async fn set_expiry(self, lease: &Lease, after: i64, live: bool) -> Result<u64> {
        let now = database_now(self.store.backend());
        let live = if live { format!(" AND expires_at > {now}") } else { String::new() };
        let sql = format!(
            "UPDATE leases SET expires_at = {now} + $4 \
             WHERE shard = $1 AND holder = $2 AND epoch = $3{live}"
        );
        let lease = lease.clone();
        self.store
            .write(move |conn| {
                let (sql, lease) = (sql.clone(), lease.clone());
                Box::pin(async move {
                    query(sql)
                        .bind(lease.shard)
                        .bind(lease.holder)
                        .bind(lease.epoch)
                        .bind(after)
                        .execute(conn)
                        .await
                })
            })
            .await
    }

    /// The database's time now: what leases are timed by, for a node to compare its own clock
    /// with.
    pub async fn database_time(self) -> Result<Timestamp> {
        let now = database_now(self.store.backend());
        let rows = self.store.rows(query(format!("SELECT {now} AS now"))).await?;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        Ok(Timestamp::from_millis(row.try_get("now")?))
    }

    /// Every shard's lease, in shard order, read at the database's time.
    pub async fn list(self) -> Result<Vec<LeaseRow>> {
        let now = database_now(self.store.backend());
        let sql = format!(
            "SELECT shard, holder, epoch, acquired_at, expires_at, {now} AS now \
             FROM leases ORDER BY shard"
        );
        let rows = self.store.rows(query(sql)).await?;
        rows.iter()
            .map(|row| {
                Ok(LeaseRow {
                    shard: row.try_get("shard")?,
                    holder: row.try_get("holder")?,
                    epoch: row.try_get("epoch")?,
                    acquired_at: Timestamp::from_millis(row.try_get("acquired_at")?),
                    expires_at: row
                        .try_get::<Option<i64>, _>("expires_at")?
                        .map(Timestamp::from_millis),
                    now: Timestamp::from_millis(row.try_get("now")?),
                })
            })
            .collect()
    }
}
