-- Where a job's envelopes go, why a job was disabled, and fires that were refused.
--
-- A target is `new` (a session of its own per fire), `session:<name>` (the named session of
-- the job's agent on platform `cron`; every job so far went to `session:<its name>`) or
-- `origin:<session id>` (the channel that session was last active on: a job an agent made for
-- a user answers where the user last spoke).
ALTER TABLE jobs ADD COLUMN target TEXT NOT NULL DEFAULT '';
UPDATE jobs SET target = 'session:' || name;
-- Why the job was disabled, when not by a person (a schedule that cannot be read, too many
-- failures in a row); cleared when it is enabled again.
ALTER TABLE jobs ADD COLUMN disabled_reason TEXT;
-- Up to this many seconds added to each scheduled time, the same for the same time on every
-- node, so that many jobs of one schedule (`0 9 * * *`) do not all fire in the same instant.
ALTER TABLE jobs ADD COLUMN jitter_secs INTEGER NOT NULL DEFAULT 0;
-- When it was last enabled: the failures in a row that disable a job are counted from there.
ALTER TABLE jobs ADD COLUMN enabled_at INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET enabled_at = created_at;

-- A fire the store refused (the target session gone, too many events waiting in it) is a run
-- with its error and no envelope: the scheduled time is accounted for, never silently lost.
CREATE TABLE job_runs_v2 (
    job_id BLOB NOT NULL,
    scheduled_at INTEGER NOT NULL,
    fired_at INTEGER NOT NULL,
    event_id BLOB,
    error TEXT,
    PRIMARY KEY (job_id, scheduled_at)
);
INSERT INTO job_runs_v2 (job_id, scheduled_at, fired_at, event_id)
    SELECT job_id, scheduled_at, fired_at, event_id FROM job_runs;
DROP TABLE job_runs;
ALTER TABLE job_runs_v2 RENAME TO job_runs;
