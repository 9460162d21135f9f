-- Cluster nodes hold shards' leases for a time, timed by the database's clock: a lease whose
-- `expires_at` (Unix milliseconds) has passed may be taken by another node. NULL never
-- expires: the lease a single node takes of every shard when it starts.
ALTER TABLE leases ADD COLUMN expires_at INTEGER;
