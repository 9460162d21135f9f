-- Agents' scheduled jobs and the record of every scheduled time settled for them. When a job
-- fires is `clade-sched`'s to compute; the store keeps the schedule's text, the last scheduled
-- time settled and the next one, and commits a fire (its record, the envelope it produces and
-- the job's new settled time, compared with the old) in one transaction: a scheduled time
-- fires once, whoever tries it twice.
CREATE TABLE jobs (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    name TEXT NOT NULL,
    schedule TEXT NOT NULL,
    zone TEXT NOT NULL,
    misfire TEXT NOT NULL,
    prompt TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    -- The last scheduled time settled (fired or skipped), and when the job fires next.
    settled_at INTEGER NOT NULL,
    next_at INTEGER,
    -- Scheduled times passed over under the misfire policy, counted rather than listed.
    skipped INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, agent_id, name)
);

CREATE INDEX jobs_due ON jobs (next_at) WHERE enabled = 1;

CREATE TABLE job_runs (
    job_id BLOB NOT NULL,
    scheduled_at INTEGER NOT NULL,
    fired_at INTEGER NOT NULL,
    -- The envelope the fire produced.
    event_id BLOB NOT NULL,
    PRIMARY KEY (job_id, scheduled_at)
);
