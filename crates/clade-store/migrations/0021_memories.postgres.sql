-- Agents' long-term memory (see the SQLite version): full text through a generated tsvector
-- and a GIN index instead of FTS5.
CREATE TABLE memories (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id BYTEA NOT NULL UNIQUE,
    tenant_id BYTEA NOT NULL,
    agent_id BYTEA NOT NULL,
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    importance DOUBLE PRECISION NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    provenance TEXT NOT NULL,
    untrusted BIGINT NOT NULL,
    strength DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    accessed_at BIGINT NOT NULL,
    embedding BYTEA,
    embedding_model TEXT,
    content_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED
);
CREATE INDEX memories_by_owner ON memories (tenant_id, agent_id, scope, updated_at);
CREATE INDEX memories_text ON memories USING GIN (content_tsv);

CREATE TABLE memory_links (
    tenant_id BYTEA NOT NULL,
    agent_id BYTEA NOT NULL,
    from_id BYTEA NOT NULL,
    to_id BYTEA NOT NULL,
    kind TEXT NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (from_id, to_id, kind)
);
CREATE INDEX memory_links_to ON memory_links (to_id);
CREATE INDEX memory_links_by_agent ON memory_links (agent_id);
