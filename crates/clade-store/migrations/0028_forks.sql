-- Branches and workers of a session: each is a session of its own (platform `branch` or
-- `worker`) that runs its agent's turns under its process kind's route and limits, and reports
-- back into the session that started it (`parent_session`). Each run is an execution of kind
-- `branch` or `worker` (`execution_id`: the current one; a worker asked again runs anew).
CREATE TABLE forks (
    session_id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    parent_session BLOB NOT NULL,
    -- The parent's turn that started it, whose context a branch forks.
    parent_turn BLOB,
    -- The parent's last event when it started: messages after it arrived meanwhile.
    forked_seq INTEGER NOT NULL,
    task TEXT NOT NULL,
    -- The tools a worker may use, separated by spaces; empty: every tool of its agent.
    tools TEXT NOT NULL,
    execution_id BLOB NOT NULL,
    -- The worker's latest status line (`worker.set_status`) and when it was set.
    progress TEXT,
    progress_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX forks_by_parent ON forks (parent_session, created_at);
CREATE INDEX forks_by_execution ON forks (execution_id);
CREATE INDEX forks_by_tenant ON forks (tenant_id);
