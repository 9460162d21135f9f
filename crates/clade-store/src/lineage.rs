//! Agents made by agents (migration 27, `agent_lineage`): each child's parent and depth, so a
//! parent has at most [`MAX_CHILDREN`] children and no chain is deeper than [`MAX_DEPTH`].
//! Gone with either agent, or the tenant.

use clade_core::{AgentId, TenantId};

use crate::db::query;
use crate::error::{Error, Result};
use crate::store::{Store, id_bytes};

/// Children one agent may make.
pub const MAX_CHILDREN: i64 = 10;
/// How deep children of children go: a child of an agent people made is at depth 1.
pub const MAX_DEPTH: i64 = 3;

fn b(bytes: &[u8; 16]) -> Vec<u8> {
    bytes.to_vec()
}

/// One tenant's agent lineage: which agent created which, and how deep.
#[derive(Clone, Copy)]
pub struct Lineage<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s agent lineage (which agent made which).
    pub fn lineage(&self, tenant: TenantId) -> Lineage<'_> {
        Lineage { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's agent lineage (which agent made which).
    pub fn lineage(&self) -> Lineage<'_> {
        self.store().lineage(self.tenant())
    }
}

impl Lineage<'_> {
    /// The depth a new child of `parent` would have; refused past [`MAX_DEPTH`] or
    /// [`MAX_CHILDREN`].
    pub async fn next_child_depth(self, parent: AgentId) -> Result<i64> {
        let tenant = self.tenant;
        let own = self
            .store
            .maybe_row(
                query("SELECT depth FROM agent_lineage WHERE child_id = $1 AND tenant_id = $2")
                    .bind(b(parent.as_bytes()))
                    .bind(b(tenant.as_bytes())),
            )
            .await?;
        let depth = match own {
            Some(row) => row.try_get::<i64, _>("depth")? + 1,
            None => 1,
        };
        if depth > MAX_DEPTH {
            return Err(Error::InvalidInput(format!(
                "a child may not make children past depth {MAX_DEPTH}: do the work yourself, or ask your parent"
            )));
        }
        let children = self.store.lineage(tenant).children_count(parent).await?;
        if children >= MAX_CHILDREN {
            return Err(Error::InvalidInput(format!(
                "you have {children} child agents, the most one may make: ask one you made, or have the operator delete one"
            )));
        }
        Ok(depth)
    }

    /// How many agents `parent` made that still exist.
    pub async fn children_count(self, parent: AgentId) -> Result<i64> {
        let tenant = self.tenant;
        self.store.row(
            query(
                "SELECT COUNT(*) AS n FROM agent_lineage WHERE parent_id = $1 AND tenant_id = $2",
            )
            .bind(b(parent.as_bytes()))
            .bind(b(tenant.as_bytes())),
        )
        .await?
        .try_get::<i64, _>("n")
    }

    /// Records `child` as made by `parent`, at `depth` (a repeat changes nothing).
    pub async fn record_child(self, parent: AgentId, child: AgentId, depth: i64) -> Result<()> {
        let tenant = self.tenant;
        self.store
            .transact(tenant, move |work| {
                Box::pin(async move {
                    let now = work.now().as_millis();
                    query(
                    "INSERT INTO agent_lineage (child_id, parent_id, tenant_id, depth, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (child_id) DO NOTHING",
                )
                .bind(b(child.as_bytes()))
                .bind(b(parent.as_bytes()))
                .bind(b(tenant.as_bytes()))
                .bind(depth)
                .bind(now)
                .execute(work.conn())
                .await?;
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    /// The agents that made `agent`, nearest first (its parent, then its parent's, …), with
    /// their handles: whose budgets its spending also comes out of.
    pub async fn ancestors_of(self, agent: AgentId) -> Result<Vec<(AgentId, String)>> {
        let tenant = self.tenant;
        let mut ancestors: Vec<(AgentId, String)> = Vec::new();
        let mut child = agent;
        // Depth is bounded when children are made; the bound here guards a corrupt row.
        for _ in 0..16 {
            let row = self
                .store
                .maybe_row(
                    query(
                        "SELECT l.parent_id, a.handle FROM agent_lineage l \
                         JOIN agents a ON a.id = l.parent_id AND a.tenant_id = l.tenant_id \
                         WHERE l.child_id = $1 AND l.tenant_id = $2",
                    )
                    .bind(b(child.as_bytes()))
                    .bind(b(tenant.as_bytes())),
                )
                .await?;
            let Some(row) = row else { break };
            let parent = AgentId::from_bytes(id_bytes(&row, "parent_id")?);
            if parent == agent || ancestors.iter().any(|(a, _)| *a == parent) {
                break;
            }
            ancestors.push((parent, row.try_get("handle")?));
            child = parent;
        }
        Ok(ancestors)
    }

    /// The agents `parent` made that still exist, with their handles, oldest first.
    pub async fn children_of(self, parent: AgentId) -> Result<Vec<(AgentId, String)>> {
        let rows = self
            .store
            .rows(
                query(
                    "SELECT l.child_id, a.handle FROM agent_lineage l \
                     JOIN agents a ON a.id = l.child_id AND a.tenant_id = l.tenant_id \
                     WHERE l.parent_id = $1 AND l.tenant_id = $2 ORDER BY l.created_at, a.handle",
                )
                .bind(b(parent.as_bytes()))
                .bind(b(self.tenant.as_bytes())),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((AgentId::from_bytes(id_bytes(row, "child_id")?), row.try_get("handle")?))
            })
            .collect()
    }

    /// The agent that made `child`, if an agent did.
    pub async fn parent_of(self, child: AgentId) -> Result<Option<AgentId>> {
        let tenant = self.tenant;
        let row = self
            .store
            .maybe_row(
                query("SELECT parent_id FROM agent_lineage WHERE child_id = $1 AND tenant_id = $2")
                    .bind(b(child.as_bytes()))
                    .bind(b(tenant.as_bytes())),
            )
            .await?;
        row.as_ref().map(|r| Ok(AgentId::from_bytes(id_bytes(r, "parent_id")?))).transpose()
    }
}
