-- Tenants, agents, API tokens, encrypted secrets and small key/value metadata.
-- Written once for both backends: the migration runner maps BLOB to BYTEA and
-- INTEGER to BIGINT for PostgreSQL. Ids are 16-byte UUIDv7, times are Unix milliseconds.

CREATE TABLE tenants (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE agents (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    handle TEXT NOT NULL,
    display_name TEXT,
    created_at INTEGER NOT NULL,
    config TEXT NOT NULL,
    UNIQUE (tenant_id, handle)
);

CREATE TABLE api_tokens (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id);

CREATE TABLE secrets (
    agent_id BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, name)
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
