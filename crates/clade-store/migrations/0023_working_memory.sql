-- Sessions' working memory: a scratchpad of small named values an agent keeps between turns.
-- Every write is a new version of its name, with the turn that wrote it; a cleared name is a
-- version without a value. The newest versions of each name are kept (see working.rs).
CREATE TABLE working_memory (
    session_id BLOB NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    -- NULL: the name was cleared.
    value TEXT,
    -- The turn whose tool call wrote it; NULL when written outside a turn.
    turn_id BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, name, version)
);
CREATE INDEX working_memory_by_agent ON working_memory (agent_id);
CREATE INDEX working_memory_by_tenant ON working_memory (tenant_id);
