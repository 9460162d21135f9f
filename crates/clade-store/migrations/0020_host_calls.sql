-- What a remote tool host backed by this store (`clade cron-service`) answered each
-- idempotency key with, so that a repeat after the host restarted gets the first outcome
-- instead of a second run (docs/specs/remote-tools.md §5).
CREATE TABLE host_calls (
    host TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- SHA-256 of the tool's name and arguments: a repeat with others is a conflict.
    fingerprint BLOB NOT NULL,
    -- The call's last frame, as the host sent it (JSON).
    frame TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (host, idempotency_key)
);
CREATE INDEX host_calls_by_age ON host_calls (host, created_at);
