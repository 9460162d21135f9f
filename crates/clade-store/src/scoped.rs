//! Two narrower handles on the store. A [`TenantStore`] is bound to one tenant: everything it
//! reads filters by that tenant, and the table groups' handles it gives out (`memories()`,
//! `sessions()`, `jobs()`, …) are bound to that tenant too, so the API edge, which holds one per
//! request, cannot reach another tenant's rows whatever ids a caller hands it. A [`SystemStore`] holds the reads that
//! cross tenants (recovering sessions after a restart, the engine's own session reads, outbox
//! delivery, dead letters); only the engine, the delivery tasks and operator commands take one,
//! and the gateway never does (tidy test `the_gateway_never_reads_across_tenants`).

use clade_core::{SessionId, TenantId, TurnId};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::turns::{JournalEntry, TurnRow};

/// The store's reads that cross tenants. It derefs to [`Store`], of which it is a superset.
#[derive(Clone)]
pub struct SystemStore(pub(crate) Store);

impl std::ops::Deref for SystemStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.0
    }
}

/// The store as one tenant sees it.
#[derive(Clone)]
pub struct TenantStore {
    store: Store,
    tenant: TenantId,
}

impl Store {
    /// The handle for reads across tenants: recovery, delivery, operator commands.
    pub fn system(&self) -> SystemStore {
        SystemStore(self.clone())
    }

    /// The handle bound to `tenant`.
    pub fn tenant_scope(&self, tenant: TenantId) -> TenantStore {
        TenantStore { store: self.clone(), tenant }
    }
}

impl TenantStore {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The whole store, for this crate's tenant-bound handles.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The store's clock's time.
    pub fn now(&self) -> clade_core::Timestamp {
        self.store.now()
    }

    /// A paired component (the operator's, shared by every tenant; a lease names one).
    pub async fn peer(&self, kind: &str, name: &str) -> Result<Option<crate::PeerRow>> {
        self.store.peer(kind, name).await
    }

    /// A turn of `session`: another session's turn, or another tenant's, is not found.
    pub async fn turn(&self, session: SessionId, id: TurnId) -> Result<TurnRow> {
        let turn = self.store.system().turn(id).await?;
        if turn.tenant_id != self.tenant || turn.session_id != session {
            return Err(Error::TurnNotFound(id.to_string()));
        }
        Ok(turn)
    }

    /// What the model calls of this tenant's turn `id` consumed; another tenant's turn is not
    /// found.
    pub async fn turn_usage(&self, id: TurnId) -> Result<crate::TurnUsage> {
        self.store.system().turn_usage(self.tenant, id).await
    }

    /// The journal of a turn of `session`, in the order it was written.
    pub async fn journal(&self, session: SessionId, turn: TurnId) -> Result<Vec<JournalEntry>> {
        self.turn(session, turn).await?;
        self.store.system().journal(turn).await
    }

    /// What people wrote in one turn of `session` (see [`crate::Sessions::turn_texts`]).
    pub async fn turn_texts(&self, session: SessionId, turn: TurnId) -> Result<Vec<String>> {
        self.store.sessions(self.tenant).turn_texts(session, turn).await
    }

    /// Creates a job in this tenant (audited); one for another tenant is refused.
    pub async fn create_job(&self, new: crate::NewJob) -> Result<crate::JobRow> {
        if new.tenant != self.tenant {
            return Err(Error::InvalidInput("a job is created in its own tenant".into()));
        }
        self.store.create_job(new).await
    }
}
