-- PostgreSQL's version of 0007_fewer_btrees_per_turn.sql. Its tables are heaps with their
-- indexes beside them, so there is nothing to rebuild: only the indexes nothing needs go. The
-- outbox's UNIQUE (event_id) was never read (event ids are generated fresh for each row), and
-- a turn now carries its own usage totals, so usage needs no index by turn.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;

ALTER TABLE turns
    ADD COLUMN model_calls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
UPDATE turns SET model_calls = u.calls, input_tokens = u.input, output_tokens = u.output,
    cost_micros = u.cost
    FROM (SELECT turn_id, COUNT(*) AS calls,
                 SUM(input_tokens + cached_tokens + cache_write_tokens) AS input,
                 SUM(output_tokens) AS output, SUM(cost_micros) AS cost
          FROM model_usage WHERE turn_id IS NOT NULL GROUP BY turn_id) AS u
    WHERE turns.id = u.turn_id;
DROP INDEX IF EXISTS model_usage_by_turn;
