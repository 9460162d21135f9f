-- A session's own queue mode (`queue`, `coalesce`, `steer`); NULL follows its agent's, or the
-- deployment's, setting.
ALTER TABLE sessions ADD COLUMN queue_mode TEXT;
