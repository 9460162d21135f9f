-- A paired subscriber paired with `--leased` receives only what a lease gives it.
ALTER TABLE peers ADD COLUMN leased INTEGER NOT NULL DEFAULT 0;
-- A paired operator (`clade pair cli`) acts with this API token's tenant, scopes and agents;
-- the token's secret was never kept, so only the peer's signature uses it.
ALTER TABLE peers ADD COLUMN token_id BLOB;

-- Temporary grants to a paired component: a tenant's events (or one agent's, or one
-- session's) for a while. A lease ends at its expiry, when its tenant revokes it, when its
-- session or agent is deleted, when the component stops answering (its deliveries were given
-- up), or when the component is unpaired; the row stays, with when and why it ended.
CREATE TABLE peer_leases (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    peer_kind TEXT NOT NULL,
    peer_name TEXT NOT NULL,
    -- At most one of these narrows the lease; neither means the whole tenant.
    agent_id BLOB,
    session_id BLOB,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    granted_by TEXT NOT NULL,
    ended_at INTEGER,
    ended_why TEXT
);
CREATE INDEX peer_leases_by_peer ON peer_leases (peer_kind, peer_name, expires_at);
CREATE INDEX peer_leases_by_tenant ON peer_leases (tenant_id, granted_at);
