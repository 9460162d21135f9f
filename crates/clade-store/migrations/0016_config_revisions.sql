-- Every configuration applied to the deployment (`clade config apply`, the API, a revert):
-- its text, who applied it and the diff from the one before. The newest revision is what a
-- serving gateway runs (it reloads when a newer one appears), and what a revert goes back to.
CREATE TABLE config_revisions (
    revision INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    yaml TEXT NOT NULL,
    applied_by TEXT NOT NULL,
    applied_at INTEGER NOT NULL,
    diff TEXT NOT NULL,
    -- The revision this one went back to, for a revert.
    reverts INTEGER
);
