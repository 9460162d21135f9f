-- Model usage per call, and budget counters with reservations.

CREATE TABLE model_usage (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id BLOB,
    turn_id BLOB,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX model_usage_by_tenant_time ON model_usage (tenant_id, created_at);
CREATE INDEX model_usage_by_turn ON model_usage (turn_id);

-- One row per (scope, period, unit): scope is `tenant:<id>` or `agent:<id>`, period a UTC day
-- (`d2026-11-22`) or month (`m2026-11`), unit `tokens` or `micro_usd`. A reservation raises
-- `reserved` only if spent + reserved + amount stays within the limit, in one conditional
-- UPDATE, so concurrent callers (even on several nodes) cannot overspend.
CREATE TABLE budget_counters (
    scope TEXT NOT NULL,
    period TEXT NOT NULL,
    unit TEXT NOT NULL,
    spent INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    PRIMARY KEY (scope, period, unit)
);
