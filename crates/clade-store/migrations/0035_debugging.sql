-- Step-through debugging. A breakpoint pauses an agent's turns (or one session's) before each
-- model call, before a tool call, or on an error; a stop is one turn paused there. A stop is
-- durable: a turn resumed after a restart reaches the same step, finds its stop and waits for
-- it again, or does what it was told.
CREATE TABLE breakpoints (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    -- NULL: every session of the agent.
    session_id BLOB,
    -- `model`, `tool` or `error`.
    at TEXT NOT NULL,
    -- For `tool`: the tool it pauses before; NULL: every tool.
    tool TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX breakpoints_by_agent ON breakpoints (agent_id);
CREATE INDEX breakpoints_by_tenant ON breakpoints (tenant_id);
CREATE TABLE debug_stops (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    session_id BLOB NOT NULL,
    turn_id BLOB NOT NULL,
    -- Where in the turn: `model/<iteration>`, `tool/<iteration>/<index>`, or either after
    -- `error/`. One stop per turn and place.
    place TEXT NOT NULL,
    at TEXT NOT NULL,
    -- What the turn holds there (the composed context, the pending call, the error), as JSON.
    detail TEXT NOT NULL,
    -- NULL while it waits; then what the person said, with its data (arguments, a result).
    action TEXT,
    action_data TEXT,
    decided_by TEXT,
    created_at INTEGER NOT NULL,
    decided_at INTEGER,
    UNIQUE (turn_id, place)
);
CREATE INDEX debug_stops_by_tenant ON debug_stops (tenant_id, decided_at);
CREATE INDEX debug_stops_by_agent ON debug_stops (agent_id);
