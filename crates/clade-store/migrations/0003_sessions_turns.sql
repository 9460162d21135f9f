-- Sessions, inbound events (envelopes), turns, the turn journal, the outbox and delivery state.

CREATE TABLE sessions (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    actor TEXT NOT NULL,
    last_active_channel TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, agent_id, platform, channel, actor)
);

-- status: pending -> running -> done | failed | yielded
CREATE TABLE events (
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
);

CREATE INDEX events_open ON events (status, session_id, seq);
CREATE INDEX events_by_session ON events (session_id, status, seq);
CREATE INDEX events_by_turn ON events (turn_id);

-- status: running -> completed | failed | yielded
CREATE TABLE turns (
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
    finished_at INTEGER
);

CREATE INDEX turns_by_session ON turns (session_id, started_at);

-- One row per step; `step` is a stable name such as `model/0` or `tool/1/0/result`.
CREATE TABLE journal (
    turn_id BLOB NOT NULL,
    step TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (turn_id, step)
);

-- Lifecycle events, written in the transaction of the state change that causes them.
CREATE TABLE outbox (
    id SERIAL_PK,
    event_id BLOB NOT NULL UNIQUE,
    tenant_id BLOB NOT NULL,
    session_id BLOB,
    turn_id BLOB,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX outbox_by_session ON outbox (session_id, id);

CREATE TABLE subscriber_cursors (
    subscriber TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT
);

CREATE TABLE dead_letters (
    subscriber TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (subscriber, outbox_id)
);
