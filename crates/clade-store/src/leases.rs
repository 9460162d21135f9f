//! Leases with a fencing epoch: who may write a session's turns.
//!
//! Sessions map to shards; today there is one, [`SHARD`], so a node takes them all. Taking a
//! lease bumps its epoch and records it in the store handle ([`crate::ShardLeases::take`]); from then
//! on every turn and journal write through that handle (and its clones) checks, inside its own
//! transaction, that the row still carries that epoch, and fails with [`Error::Fenced`] once
//! another node has taken the lease. A handle that holds no lease (an operator's command)
//! writes no turns and is not checked.

use std::sync::atomic::Ordering;

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

/// Inside a write's transaction: refuses it unless the lease still carries `epoch`.
pub(crate) async fn check(conn: &mut Tx, epoch: Option<i64>) -> Result<()> {
    let Some(epoch) = epoch else { return Ok(()) };
    let row =
        query("SELECT epoch FROM leases WHERE shard = $1").bind(SHARD).fetch_optional(conn).await?;
    let current = row.map(|row| row.try_get::<i64, _>("epoch")).transpose()?;
    if current != Some(epoch) {
        return Err(Error::Fenced { held: epoch, current: current.unwrap_or(0) });
    }
    Ok(())
}

/// The shard a session maps to.
pub fn shard_of(_session: clade_core::SessionId) -> i64 {
    SHARD
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
        self.store.fence.store(lease.epoch, Ordering::SeqCst);
        Ok(vec![lease])
    }

    /// Whether this handle still holds the leases it took (true if it took none).
    pub async fn held(self) -> Result<bool> {
        let Some(epoch) = self.store.shard_leases().fence() else { return Ok(true) };
        let row = self
            .store
            .maybe_row(query("SELECT epoch FROM leases WHERE shard = $1").bind(SHARD))
            .await?;
        Ok(row.map(|row| row.try_get::<i64, _>("epoch")).transpose()? == Some(epoch))
    }

    /// The epoch this handle's turn writes are fenced by, if it took a lease.
    pub fn fence(self) -> Option<i64> {
        Some(self.store.fence.load(Ordering::SeqCst)).filter(|epoch| *epoch > 0)
    }
}
