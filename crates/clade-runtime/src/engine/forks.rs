//! Branches and workers as the engine runs them: starting one (its session's actor takes its
//! task), settling one once its session has nothing left to run (its outcome goes to the
//! session that started it, whose actor is woken), cancelling one, and settling after a
//! restart those a crash left unsettled. What is stored, and in which transaction, is
//! `clade_store::forks`'s.

use std::sync::Arc;

use clade_core::{SessionId, TenantId};
use clade_store::{ForkRow, Forked, NewFork, OutboxRow};

use super::{Engine, Error, Inner};
use crate::bus::Signal;

impl Inner {
    /// Publishes rows announced outside a session's actor, and counts a change to forks (which
    /// the channels' status blocks read again).
    fn announce_forks(&self, agent: clade_core::AgentId, rows: &[OutboxRow]) {
        self.bus.hub().publish_aside(agent, rows);
        if !rows.is_empty() {
            self.outbox_written();
        }
        self.fork_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Settles the fork whose session is `session`, if it is one with nothing left to run,
    /// and wakes its parent for the outcome delivered there. A failure is logged: settling is
    /// tried again after the fork's next turn, and at the next start.
    pub(super) async fn settle_fork(self: &Arc<Self>, tenant: TenantId, session: SessionId) {
        self.failpoints.hit("before_fork_settled");
        match self.store.forks(tenant).settle(session).await {
            Ok(Some(settled)) => {
                self.announce_forks(settled.fork.agent, &settled.announced);
                if let Some(delivered) = settled.delivered
                    && !delivered.duplicate
                {
                    self.bus.signal(tenant, Signal::Wake(delivered.session_id));
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(session = %session, error = %err, "cannot settle the fork; it is tried again after its next turn and at the next start")
            }
        }
    }
}

impl Engine {
    /// Starts a branch or a worker ([`clade_store::Store::start_fork`]) and wakes its session.
    /// A worker may be given only tools its agent has, and none that starts or stops forks.
    pub async fn fork(&self, new: NewFork) -> Result<Forked, Error> {
        self.check_accepting()?;
        if !new.tools.is_empty() {
            let store = &self.inner.store;
            let agent = store.agents(new.tenant).by_id(new.agent).await?;
            let tenant = store.tenants().by_id(new.tenant).await?;
            let set = self.inner.tools.tool_set();
            for name in &new.tools {
                let known =
                    set.registry().get_for(name, tenant.name.as_str(), agent.handle.as_str());
                if known.is_none()
                    || crate::forks::STARTERS.contains(&name.as_str())
                    || name == crate::forks::SET_STATUS
                {
                    return Err(Error::Store(clade_store::Error::InvalidInput(format!(
                        "tools: {name:?} is not one of your tools a worker can be given"
                    ))));
                }
            }
        }
        let forked = self.inner.store.start_fork(new).await?;
        self.started(&forked);
        Ok(forked)
    }

    /// Tells a worker more ([`clade_store::Forks::continue_worker`]) and wakes its session.
    pub async fn continue_worker(
        &self,
        tenant: TenantId,
        fork: SessionId,
        parent: SessionId,
        message: String,
        key: String,
    ) -> Result<Forked, Error> {
        self.check_accepting()?;
        let forked =
            self.inner.store.forks(tenant).continue_worker(fork, parent, message, key).await?;
        self.started(&forked);
        Ok(forked)
    }

    fn started(&self, forked: &Forked) {
        self.inner.announce_forks(forked.fork.agent, &forked.announced);
        if !forked.accepted.duplicate {
            self.inner.bus.signal(forked.fork.tenant, Signal::Wake(forked.fork.session));
        }
    }

    /// Cancels a branch's or worker's run (by its execution's id or its session's): it ends
    /// `cancelled`, its running turn is stopped, and what it would have concluded is never
    /// delivered. Returns the fork and whether this call ended it.
    pub async fn cancel_run(
        &self,
        tenant: TenantId,
        id: [u8; 16],
    ) -> Result<(ForkRow, bool), Error> {
        let (fork, changed, announced) = self.inner.store.forks(tenant).cancel(id).await?;
        self.inner.announce_forks(fork.agent, &announced);
        if changed {
            self.inner.bus.signal(tenant, Signal::Cancel(fork.session));
        }
        Ok((fork, changed))
    }

    /// Sets a worker's status line, which its parent's context shows.
    pub async fn set_progress(
        &self,
        tenant: TenantId,
        session: SessionId,
        text: String,
    ) -> Result<ForkRow, Error> {
        let (fork, announced) = self.inner.store.forks(tenant).set_progress(session, text).await?;
        self.inner.announce_forks(fork.agent, &announced);
        Ok(fork)
    }

    fn check_accepting(&self) -> Result<(), Error> {
        if self.lease_lost() {
            return Err(Error::LeaseLost);
        }
        if self.draining() {
            return Err(Error::Draining);
        }
        Ok(())
    }

    /// Settles the forks a crash left between their last turn and their report: those whose
    /// sessions this node runs (a cluster's other nodes settle theirs) and have nothing left
    /// to run (the others settle after their next turn).
    pub(super) async fn settle_after_restart(&self, open: &[SessionId]) -> Result<(), Error> {
        let unsettled = self.inner.store.system().unsettled_forks(10_000).await?;
        let ours = |s: &SessionId| self.inner.bus.runs_here(*s) && !open.contains(s);
        for (tenant, session) in unsettled.into_iter().filter(|(_, s)| ours(s)) {
            self.inner.settle_fork(tenant, session).await;
        }
        Ok(())
    }
}
