-- A job whose target is a stored flow (`flow:<name>`) starts a flow run at each fire, in the
-- transaction that records the fire: `flow_run` is that run's execution id (NULL for a fire
-- that delivered an envelope, or was refused).
ALTER TABLE job_runs ADD COLUMN flow_run BLOB;
