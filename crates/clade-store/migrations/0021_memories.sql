-- Agents' long-term memory: typed items with provenance, scoped to an agent and an isolation
-- key ('' for the agent's global memory), searched by full text (FTS5 here, tsvector on
-- PostgreSQL), by their embedding (ranked in Rust) and along their links.
CREATE TABLE memories (
    -- The row's number: FTS5's external content needs a rowid that VACUUM keeps.
    n INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    -- The isolation key ('' = the agent's global memory).
    scope TEXT NOT NULL,
    -- One token naming agent and scope, indexed beside the content so a full-text search
    -- intersects with its owner inside the index.
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    importance REAL NOT NULL,
    confidence REAL NOT NULL,
    -- JSON: who or what wrote it (session, turn, tool, operator).
    provenance TEXT NOT NULL,
    -- Whether it came from content nobody vouches for (tool output, web pages).
    untrusted INTEGER NOT NULL,
    -- Decay: 1 when written or used, falling as it goes unused.
    strength REAL NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    accessed_at INTEGER NOT NULL,
    -- Little-endian f32s, and the model that made them.
    embedding BLOB,
    embedding_model TEXT
);
CREATE INDEX memories_by_owner ON memories (tenant_id, agent_id, scope, updated_at);

CREATE TABLE memory_links (
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    from_id BLOB NOT NULL,
    to_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    weight REAL NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (from_id, to_id, kind)
);
CREATE INDEX memory_links_to ON memory_links (to_id);
CREATE INDEX memory_links_by_agent ON memory_links (agent_id);

CREATE VIRTUAL TABLE memories_fts USING fts5(
    owner, content, content='memories', content_rowid='n', tokenize='porter unicode61'
);
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, owner, content) VALUES (new.n, new.owner, new.content);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, owner, content)
    VALUES ('delete', old.n, old.owner, old.content);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF owner, content ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, owner, content)
    VALUES ('delete', old.n, old.owner, old.content);
    INSERT INTO memories_fts (rowid, owner, content) VALUES (new.n, new.owner, new.content);
END;
