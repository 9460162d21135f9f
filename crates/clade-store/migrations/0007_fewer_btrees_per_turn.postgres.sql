-- PostgreSQL's version of 0007_fewer_btrees_per_turn.sql. Its tables are heaps with their
-- indexes beside them, so only the index nothing looks up goes: the outbox's UNIQUE (event_id)
-- (event ids are generated fresh for each row).
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;
