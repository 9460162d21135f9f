//! A unit of work: writes to several aggregates committed in one transaction, all within one
//! tenant ([`Store::transact`]). A new combination of writes that must commit together is a
//! closure over the repositories here, not a new store method.
//!
//! The closure is `Fn`, not `FnOnce`: a backend may run it again after a serialization failure
//! (PostgreSQL under concurrent writers), so it must build its writes from what it captured
//! each time it runs.

use clade_core::{SessionId, TenantId, Timestamp};
use futures::future::BoxFuture;

use crate::access::AuditEntry;
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::executions::ExecutionWrites;
use crate::store::Store;
use crate::turns::{Accepted, NewEvent, OutboxEvent, OutboxRow};

/// The open transaction of a unit of work, bound to its tenant: every repository it hands out
/// writes that tenant's rows and reads no other tenant's.
pub struct Work<'c> {
    conn: &'c mut Tx,
    tenant: TenantId,
    now: Timestamp,
    /// Lifecycle events announced so far, returned once committed.
    announced: Vec<OutboxRow>,
    /// What its turn and execution writes are fenced by.
    fence: crate::leases::Fence,
}

impl Work<'_> {
    /// The tenant this unit of work writes for.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// When it runs, by the store's clock: every row it writes carries this time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The transaction itself, for the store's own modules' statements.
    pub(crate) fn conn(&mut self) -> &mut Tx {
        self.conn
    }

    /// Durable executions and their steps.
    pub fn executions(&mut self) -> ExecutionWrites<'_> {
        ExecutionWrites::new(self.conn, self.tenant, self.now, self.fence.clone())
    }

    /// Scheduled jobs: create, settle a look at one (its fires commit with it).
    pub fn jobs(&mut self) -> crate::jobs::JobWrites<'_> {
        crate::jobs::JobWrites::new(self.conn, self.tenant, self.now)
    }

    /// Accepts an inbound event of this unit of work's tenant, as `crate::Turns::accept` does.
    pub async fn accept(&mut self, event: NewEvent) -> Result<Accepted> {
        if event.tenant != self.tenant {
            return Err(Error::InvalidInput("an event goes to its unit of work's tenant".into()));
        }
        Ok(crate::turns::accept_in(self.conn, self.now, event).await?.0)
    }

    /// A turn's writes: begin, append a step, finish. Their lifecycle events come back with the
    /// unit of work's, to publish once committed.
    pub fn turns(&mut self) -> crate::turns::TurnWrites<'_> {
        crate::turns::TurnWrites::new(
            self.conn,
            self.tenant,
            self.now,
            &mut self.announced,
            self.fence.clone(),
        )
    }

    /// Puts lifecycle events in the outbox, for `session` when they belong to one; they are
    /// delivered only if the unit of work commits.
    pub async fn announce(
        &mut self,
        session: Option<SessionId>,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let rows =
            crate::turns::insert_outbox(self.conn, self.now, self.tenant, session, None, events)
                .await?;
        self.announced.extend(rows);
        Ok(())
    }

    /// Appends a record to the tenant's audit chain; it exists only if the unit of work
    /// commits. A record for another tenant is refused.
    pub async fn audit(&mut self, entry: &AuditEntry) -> Result<()> {
        if entry.tenant != self.tenant {
            return Err(Error::InvalidInput(
                "an audit record goes to its unit of work's tenant's chain".into(),
            ));
        }
        crate::access::append_audit(self.conn, entry, self.now).await
    }
}

impl Store {
    /// Runs `work` in one transaction for `tenant`: everything it writes commits together, or
    /// nothing does (an `Err` from it rolls all of it back). Returns its value and the outbox
    /// rows it announced, which the caller publishes once this returns.
    pub async fn transact<T, F>(&self, tenant: TenantId, work: F) -> Result<(T, Vec<OutboxRow>)>
    where
        T: Send + 'static,
        F: for<'w, 'c> Fn(&'w mut Work<'c>) -> BoxFuture<'w, Result<T>> + Send + Sync + 'static,
    {
        let (now, fence) = (self.now(), self.shard_leases().fencing());
        let work = std::sync::Arc::new(work);
        self.write(move |conn| {
            let (work, fence) = (work.clone(), fence.clone());
            Box::pin(async move {
                let mut unit = Work { conn, tenant, now, announced: Vec::new(), fence };
                let value = work(&mut unit).await?;
                Ok((value, unit.announced))
            })
        })
        .await
    }
}
