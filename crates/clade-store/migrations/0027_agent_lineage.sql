-- Agents made by agents (`agent.spawn`): each child's parent and how deep it is (1 for a child
-- of an agent people made), so depth and count stay bounded.
CREATE TABLE agent_lineage (
    child_id BLOB PRIMARY KEY,
    parent_id BLOB NOT NULL,
    tenant_id BLOB NOT NULL,
    depth INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_lineage_by_parent ON agent_lineage (parent_id);
CREATE INDEX agent_lineage_by_tenant ON agent_lineage (tenant_id);
