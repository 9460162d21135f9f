-- Grants: policy rules held by one agent (allow, ask or deny a tool on a resource pattern),
-- optionally delegated from a parent grant, expiring, revocable. A grant counts only while it
-- and every ancestor are unrevoked and unexpired.
CREATE TABLE grants (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id BLOB NOT NULL,
    effect TEXT NOT NULL,
    tool TEXT NOT NULL,
    resource TEXT NOT NULL,
    constraints TEXT NOT NULL,
    parent_id BLOB,
    granted_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);

CREATE INDEX grants_by_agent ON grants (tenant_id, agent_id);

-- One approval per tool call (call_key is the call's effect key), so a resumed turn finds the
-- request it made before a restart instead of asking twice.
CREATE TABLE approvals (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id BLOB NOT NULL,
    call_key TEXT NOT NULL,
    tool TEXT NOT NULL,
    resource TEXT NOT NULL,
    arguments TEXT NOT NULL,
    arguments_hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    session_id BLOB,
    turn_id BLOB,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER,
    decided_by TEXT,
    note TEXT
);

CREATE UNIQUE INDEX approvals_by_call ON approvals (tenant_id, call_key);
CREATE INDEX approvals_by_status ON approvals (tenant_id, status, created_at);

-- The audit log: per tenant, a chain where each record's hash covers the previous record's
-- hash and its own fields, so an edited, removed or reordered record breaks the chain.
CREATE TABLE audit_log (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    agent_id BLOB,
    kind TEXT NOT NULL,
    tool TEXT,
    decision TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE INDEX audit_by_time ON audit_log (tenant_id, at);
