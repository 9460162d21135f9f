-- Components paired with the gateway through its admin socket (`clade pair tool`): each one's
-- kind, name, endpoint and public key, which it must prove it holds at every connection, and
-- the agents it serves.
CREATE TABLE peers (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    peer_key TEXT NOT NULL,
    -- JSON array of agent patterns.
    agents TEXT NOT NULL,
    paired_at INTEGER NOT NULL,
    paired_by TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
