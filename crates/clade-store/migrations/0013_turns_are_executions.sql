-- A turn is one kind of execution (SQLite; PostgreSQL runs its own version of this migration).
--
-- `executions` becomes the one record of every durable run: a turn is the execution of kind
-- `turn` owned by its session, under the turn's own id. What a turn kept besides (its model,
-- the configuration revision it ran under, its usage totals) any execution that calls models
-- has too, so those become columns of every execution; a turn's reply is its output, and its
-- events are its input (`events.turn_id`), so a turn's `input` is NULL. A yielded turn is a
-- paused execution. The journal becomes `execution_steps`: every step numbered from 1 in the
-- order it was written, under the key it was written with.
--
-- A turn costs the B-trees it did before: the executions' primary key and the index by owner
-- replace the turns' and `turns_by_session`; the indexes by tenant and of open executions leave
-- turns out (a session lists its turns, and turns resume through their open events).

CREATE TABLE executions_rebuilt (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    owner_kind TEXT NOT NULL,
    owner_id BLOB NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    error TEXT,
    model TEXT,
    config_revision INTEGER NOT NULL DEFAULT 0,
    model_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
) WITHOUT ROWID;
INSERT INTO executions_rebuilt (id, tenant_id, agent_id, kind, owner_kind, owner_id, status,
    input, output, error, created_at, updated_at, finished_at)
    SELECT id, tenant_id, agent_id, kind, owner_kind, owner_id, status, input, output, error,
    created_at, updated_at, finished_at FROM executions;
INSERT INTO executions_rebuilt (id, tenant_id, agent_id, kind, owner_kind, owner_id, status,
    input, output, error, model, config_revision, model_calls, input_tokens, output_tokens,
    cost_micros, created_at, updated_at, finished_at)
    SELECT id, tenant_id, agent_id, 'turn', 'session', session_id,
    CASE status WHEN 'yielded' THEN 'paused' ELSE status END, NULL, reply, error, model,
    config_revision, model_calls, input_tokens, output_tokens, cost_micros, started_at,
    COALESCE(finished_at, started_at), finished_at FROM turns;

CREATE TABLE execution_steps_rebuilt (
    execution_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    step_key TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
INSERT INTO execution_steps_rebuilt SELECT execution_id, seq, step_key, data, created_at
    FROM execution_steps;
-- The journal had no number, only a time and a key: steps of one millisecond go in the order
-- the engine writes them (a model call, then each of its tool calls' start and result).
INSERT INTO execution_steps_rebuilt (execution_id, seq, step_key, data, created_at)
    SELECT turn_id, ROW_NUMBER() OVER (PARTITION BY turn_id ORDER BY created_at, iteration,
        call, phase, step), step, data, created_at
    FROM (SELECT turn_id, step, data, created_at,
              CAST(CASE WHEN step LIKE 'tool/%' THEN substr(step, 6)
                        WHEN step LIKE 'model/%' THEN substr(step, 7)
                        ELSE substr(step, 8) END AS INTEGER) AS iteration,
              CASE WHEN step LIKE 'tool/%'
                   THEN 1 + CAST(substr(substr(step, 6), instr(substr(step, 6), '/') + 1)
                                 AS INTEGER)
                   ELSE 0 END AS call,
              CASE WHEN step LIKE '%/result' THEN 1 ELSE 0 END AS phase
          FROM journal) AS steps;

DROP TABLE execution_steps;
DROP TABLE executions;
DROP TABLE journal;
DROP TABLE turns;
ALTER TABLE executions_rebuilt RENAME TO executions;
ALTER TABLE execution_steps_rebuilt RENAME TO execution_steps;

CREATE INDEX executions_by_owner ON executions (owner_id, kind, id);
CREATE INDEX executions_by_tenant ON executions (tenant_id, created_at) WHERE kind <> 'turn';
CREATE INDEX executions_open ON executions (created_at) WHERE finished_at IS NULL AND kind <> 'turn';
