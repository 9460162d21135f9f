-- Agents' settings: a JSON value stored under a key per agent, which the agent's tools
-- (`settings.*`), the API and the CLI read and write. What an agent reads is an environment
-- variable the configuration names for the key, else the value stored here, else the
-- configuration's default.
CREATE TABLE agent_settings (
    tenant_id BLOB NOT NULL,
    agent_id BLOB NOT NULL,
    key TEXT NOT NULL,
    -- JSON text.
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
