-- Flow files stored in the gateway (`clade flow save`, `POST /v1/flows`): every version of
-- each, so a run started from a stored flow keeps the version it started with, whatever is
-- saved after.
CREATE TABLE flows (
    tenant_id BLOB NOT NULL,
    -- The flow file's `name`.
    name TEXT NOT NULL,
    -- 1, 2, …: a save whose text differs from the newest version's makes the next.
    version INTEGER NOT NULL,
    -- Of the text, hex.
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    saved_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
