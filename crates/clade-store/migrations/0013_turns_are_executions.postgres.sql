-- PostgreSQL's version of 0013_turns_are_executions.sql (read that one for why). Its tables
-- are heaps with their indexes beside them, so `executions` gains columns in place.
ALTER TABLE executions
    ALTER COLUMN input DROP NOT NULL,
    ADD COLUMN model TEXT,
    ADD COLUMN config_revision BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN model_calls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
-- Steps are deleted with their execution by the store, as the journal's were.
ALTER TABLE execution_steps DROP CONSTRAINT IF EXISTS execution_steps_execution_id_fkey;

INSERT INTO executions (id, tenant_id, agent_id, kind, owner_kind, owner_id, status, input,
    output, error, model, config_revision, model_calls, input_tokens, output_tokens,
    cost_micros, created_at, updated_at, finished_at)
    SELECT id, tenant_id, agent_id, 'turn', 'session', session_id,
    CASE status WHEN 'yielded' THEN 'paused' ELSE status END, NULL, reply, error, model,
    config_revision, model_calls, input_tokens, output_tokens, cost_micros, started_at,
    COALESCE(finished_at, started_at), finished_at FROM turns;

INSERT INTO execution_steps (execution_id, seq, step_key, data, created_at)
    SELECT turn_id, ROW_NUMBER() OVER (PARTITION BY turn_id ORDER BY created_at,
        CASE WHEN split_part(step, '/', 2) ~ '^[0-9]{1,9}$'
             THEN split_part(step, '/', 2)::bigint ELSE 0 END,
        CASE WHEN step LIKE 'tool/%' AND split_part(step, '/', 3) ~ '^[0-9]{1,9}$'
             THEN 1 + split_part(step, '/', 3)::bigint ELSE 0 END,
        CASE WHEN step LIKE '%/result' THEN 1 ELSE 0 END, step), step, data, created_at
    FROM journal;

DROP TABLE journal;
DROP TABLE turns;

DROP INDEX IF EXISTS executions_by_tenant;
DROP INDEX IF EXISTS executions_open;
CREATE INDEX executions_by_owner ON executions (owner_id, kind, id);
CREATE INDEX executions_by_tenant ON executions (tenant_id, created_at) WHERE kind <> 'turn';
-- Not `WHERE finished_at IS NULL` as on SQLite: a column an index's predicate names counts as
-- indexed, and would keep every turn's finish from being a HOT update (one that adds no index
-- entries). Finding the open executions at start reads past the ended ones instead.
CREATE INDEX executions_open ON executions (created_at) WHERE kind <> 'turn';
