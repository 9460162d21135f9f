-- Fewer B-trees touched per turn (SQLite; PostgreSQL runs its own version of this migration).
--
-- Every B-tree a commit changes costs at least one page in the WAL, its fsync and the
-- checkpoint that folds it back, however small the change. A table keyed by `id BLOB PRIMARY
-- KEY` is two B-trees in SQLite (the rows by rowid, and an index from id to rowid); WITHOUT
-- ROWID makes it one. The outbox's UNIQUE (event_id) was a third B-tree that nothing looks up:
-- event ids are generated fresh for each row. Together with the outbox's sqlite_sequence page
-- (below), a turn's two commits change nine fewer B-trees.
--
-- Each table is rebuilt: copied into its new shape, the old one dropped, the new one renamed
-- and its indexes made again. No foreign key points at these tables.

CREATE TABLE events_rebuilt (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    session_id BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    turn_id BLOB,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, idempotency_key),
    UNIQUE (session_id, seq)
) WITHOUT ROWID;
INSERT INTO events_rebuilt SELECT id, tenant_id, session_id, seq, idempotency_key, payload_hash,
    text, status, turn_id, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE INDEX events_open_by_session ON events (session_id, seq) WHERE status IN ('pending', 'running');
CREATE INDEX events_by_turn ON events (turn_id) WHERE turn_id IS NOT NULL;

CREATE TABLE turns_rebuilt (
    id BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    status TEXT NOT NULL,
    reply TEXT,
    error TEXT,
    model TEXT,
    config_revision INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    model_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO turns_rebuilt SELECT t.id, t.session_id, t.tenant_id, t.agent_id, t.status, t.reply,
    t.error, t.model, t.config_revision, t.started_at, t.finished_at,
    COUNT(u.turn_id), COALESCE(SUM(u.input_tokens + u.cached_tokens + u.cache_write_tokens), 0),
    COALESCE(SUM(u.output_tokens), 0), COALESCE(SUM(u.cost_micros), 0)
    FROM turns t LEFT JOIN model_usage u ON u.turn_id = t.id GROUP BY t.id;
DROP TABLE turns;
ALTER TABLE turns_rebuilt RENAME TO turns;
CREATE INDEX turns_by_session ON turns (session_id, id);

CREATE TABLE journal_rebuilt (
    turn_id BLOB NOT NULL,
    step TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (turn_id, step)
) WITHOUT ROWID;
INSERT INTO journal_rebuilt SELECT turn_id, step, kind, data, created_at FROM journal;
DROP TABLE journal;
ALTER TABLE journal_rebuilt RENAME TO journal;

-- Usage is read by tenant and time (`clade usage`), so rows are kept in that order and the
-- index that served those reads goes. A turn now carries its own usage totals (model calls,
-- input tokens counting cached and cache-write ones, output tokens, cost), so the index of
-- usage by turn goes too.
CREATE TABLE model_usage_rebuilt (
    id BLOB NOT NULL,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id BLOB,
    turn_id BLOB,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, created_at, id)
) WITHOUT ROWID;
INSERT INTO model_usage_rebuilt SELECT id, tenant_id, agent_id, turn_id, model, input_tokens,
    output_tokens, cached_tokens, cache_write_tokens, cost_micros, created_at FROM model_usage;
DROP TABLE model_usage;
ALTER TABLE model_usage_rebuilt RENAME TO model_usage;

-- The outbox keeps its ids: subscribers' cursors point into them. It loses AUTOINCREMENT,
-- which rewrote a page of sqlite_sequence in every commit that wrote to the outbox; the store
-- now numbers new rows past both the highest id left and the highest ever issued, kept in
-- meta whenever rows are deleted. The old sequence is that highest-ever-issued to start with.
INSERT INTO meta (key, value) SELECT 'outbox_ids_issued', CAST(seq AS TEXT) FROM sqlite_sequence
    WHERE name = 'outbox';
CREATE TABLE outbox_rebuilt (
    id INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL,
    tenant_id BLOB NOT NULL,
    session_id BLOB,
    turn_id BLOB,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO outbox_rebuilt SELECT id, event_id, tenant_id, session_id, turn_id, kind, data,
    created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_by_session ON outbox (session_id, id);
