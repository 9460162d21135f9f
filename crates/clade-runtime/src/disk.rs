//! What each tenant's agents' workspaces hold, as this process last measured them, against the
//! tenant's total (`tenants.<name>.quotas.workspace_mib`): a host-touching call is given the
//! room its workspace has under that total ([`clade_tools::WorkspaceRoom`]), which the sandbox
//! and `fs.write` enforce as they enforce the workspace's own quota.
//!
//! A workspace grows only through its agent's tool calls, so each call measures its own
//! workspace before (for the room) and after; the others are measured all again once a
//! minute, which also forgets deleted agents. Nothing is measured for a tenant without a
//! total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{AgentId, TenantId, Timestamp};
use clade_store::{Store, Workspaces};

/// How long the tenant's other workspaces' sizes are trusted before they are measured again.
const REMEASURE: Duration = Duration::from_secs(60);

/// Agents listed a page at a time when a tenant's workspaces are measured.
const PAGE: u32 = 500;

#[derive(Default)]
pub(crate) struct DiskLedger {
    tenants: Mutex<HashMap<TenantId, TenantDisk>>,
}

#[derive(Default)]
struct TenantDisk {
    /// Bytes each agent's workspace held when last measured.
    agents: HashMap<AgentId, u64>,
    /// When every workspace of the tenant was last measured.
    measured_at: Option<Timestamp>,
}

impl DiskLedger {
    /// Bytes the workspaces of `tenant`'s agents other than `agent` hold, every one of them
    /// measured again first when the last full count is older than [`REMEASURE`].
    pub(crate) async fn others(
        &self,
        (store, workspaces): (&Store, &Arc<dyn Workspaces>),
        tenant: TenantId,
        agent: AgentId,
    ) -> clade_store::Result<u64> {
        let now = store.now();
        let fresh = self.with(tenant, |disk| {
            disk.measured_at
                .is_some_and(|at| now.as_millis() - at.as_millis() < REMEASURE.as_millis() as i64)
        });
        if !fresh {
            let measured = measure_all(store, workspaces, tenant).await?;
            self.with(tenant, |disk| {
                disk.agents = measured;
                disk.measured_at = Some(now);
            });
        }
        Ok(self.others_now(tenant, agent))
    }

    /// Bytes the workspaces of `tenant`'s agents other than `agent` hold, as last recorded.
    fn others_now(&self, tenant: TenantId, agent: AgentId) -> u64 {
        self.with(tenant, |disk| {
            let others = disk.agents.iter().filter(|(id, _)| **id != agent);
            others.fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes))
        })
    }

    /// Records what `agent`'s workspace holds now.
    pub(crate) fn record(&self, tenant: TenantId, agent: AgentId, bytes: u64) {
        self.with(tenant, |disk| {
            disk.agents.insert(agent, bytes);
        });
    }

    fn with<T>(&self, tenant: TenantId, act: impl FnOnce(&mut TenantDisk) -> T) -> T {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        act(tenants.entry(tenant).or_default())
    }
}

/// One agent's share of its tenant's total, as its runs see it while they write: the total less
/// what the tenant's other workspaces hold now, including what their own runs record as they
/// write.
pub(crate) struct AgentDisk {
    pub(crate) ledger: Arc<DiskLedger>,
    pub(crate) tenant: TenantId,
    pub(crate) agent: AgentId,
    /// The tenant's total, in bytes.
    pub(crate) total: u64,
}

impl clade_tools::TenantDisk for AgentDisk {
    fn room(&self) -> u64 {
        self.total.saturating_sub(self.ledger.others_now(self.tenant, self.agent))
    }

    fn record(&self, used: u64) {
        self.ledger.record(self.tenant, self.agent, used);
    }
}

/// No room at all: the tenant's other workspaces could not be measured (closed, not open).
pub(crate) struct NoRoom;

impl clade_tools::TenantDisk for NoRoom {
    fn room(&self) -> u64 {
        0
    }

    fn record(&self, _: u64) {}
}

/// The size of the workspace of each of `tenant`'s agents that has one.
async fn measure_all(
    store: &Store,
    workspaces: &Arc<dyn Workspaces>,
    tenant: TenantId,
) -> clade_store::Result<HashMap<AgentId, u64>> {
    let mut paths = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.agents(tenant).list(after.as_deref(), PAGE).await?;
        paths.extend(page.iter().map(|agent| (agent.id, workspaces.locate(agent.id))));
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.handle.to_string()),
            _ => break,
        }
    }
    let sizes = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .filter(|(_, path)| path.is_dir())
            .map(|(id, path)| (id, clade_tools::workspace::usage(&path)))
            .collect()
    })
    .await
    .unwrap_or_default();
    Ok(sizes)
}
