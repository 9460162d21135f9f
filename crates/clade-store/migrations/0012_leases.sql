-- Sessions are owned through leases with a fencing epoch. Sessions map to shards (one today,
-- shard 0); a node that starts takes every shard's lease, which bumps its epoch, and each turn
-- and journal write checks, in its own transaction, that the epoch its store took is still the
-- row's: a node that lost its lease (paused, cut off, or replaced) can no longer write.
CREATE TABLE leases (
    shard INTEGER PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL
);
