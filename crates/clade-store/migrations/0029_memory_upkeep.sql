-- Cortex upkeep of agents' memories. An item pruned (decayed past use, or merged into the item
-- it repeats) stays, out of every search, listing and count, until it is purged: an operator
-- can restore it meanwhile.
ALTER TABLE memories ADD COLUMN pruned_at INTEGER;
ALTER TABLE memories ADD COLUMN pruned_why TEXT;
CREATE INDEX memories_pruned ON memories (tenant_id, agent_id, pruned_at)
    WHERE pruned_at IS NOT NULL;

-- Which agents' memories wait for upkeep, and from when: a row per agent that holds items, so
-- an idle agent costs nothing until its own `due_at` (the next time decay prunes or a purge is
-- due), and a write asks for an upkeep soon after it (`written_at`).
CREATE TABLE memory_upkeep (
    agent_id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    -- When decay next prunes one of its items, or a pruned one is purged (NULL: never).
    due_at INTEGER,
    -- The first write since the last upkeep (NULL: none since).
    written_at INTEGER,
    -- The latest write: a write during an upkeep leaves `written_at` set after it.
    last_write_at INTEGER,
    -- When the last upkeep began (NULL: never).
    ran_at INTEGER
);
CREATE INDEX memory_upkeep_due ON memory_upkeep (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX memory_upkeep_written ON memory_upkeep (written_at) WHERE written_at IS NOT NULL;
