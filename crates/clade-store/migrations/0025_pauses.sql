-- Operators' pauses: no new turn starts for a paused agent's sessions, or for one paused
-- session, until the pause is lifted; events sent meanwhile wait, stored.
CREATE TABLE pauses (
    -- The paused agent's id, or the paused session's.
    target BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    -- NULL: every session of the agent.
    session_id BLOB,
    reason TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX pauses_by_agent ON pauses (agent_id);
CREATE INDEX pauses_by_tenant ON pauses (tenant_id);
