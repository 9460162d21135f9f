-- What compaction made of a session's older turns: a summary of every completed turn up to
-- and including `through_turn`. The turns themselves stay (the transcript is archived, never
-- replaced); a turn's context shows the newest summary and the turns after it.
CREATE TABLE session_summaries (
    session_id BLOB NOT NULL,
    -- The last turn the summary covers (turn ids grow with time).
    through_turn BLOB NOT NULL,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    text TEXT NOT NULL,
    -- Turns folded into it, the earlier summaries' included.
    turns INTEGER NOT NULL,
    -- The model that wrote it; NULL when it was written without one.
    model TEXT,
    -- Memory items the compaction saved from the folded turns.
    memories INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, through_turn)
);
CREATE INDEX session_summaries_by_agent ON session_summaries (agent_id);
CREATE INDEX session_summaries_by_tenant ON session_summaries (tenant_id);
