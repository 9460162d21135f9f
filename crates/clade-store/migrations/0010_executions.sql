-- Durable executions below turns: a sub-agent run, a flow step or a cron fire journals numbered
-- steps and resumes from them without pretending to be a chat turn.
CREATE TABLE executions (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    -- What the execution belongs to: `session`, `agent` or `execution` (its parent), and its id.
    owner_kind TEXT NOT NULL,
    owner_id BLOB NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);

-- Reads are by tenant (listings) and, for resumption, of open executions only.
CREATE INDEX executions_by_tenant ON executions (tenant_id, created_at);
CREATE INDEX executions_open ON executions (status, created_at) WHERE finished_at IS NULL;

CREATE TABLE execution_steps (
    execution_id BLOB NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    step_key TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
