-- The agents an API token may reach: NULL for every agent of its tenant, or a comma-separated
-- list of agent ids (ids, not handles, so an agent deleted and made again with the same handle
-- is not reached by an old token).
ALTER TABLE api_tokens ADD COLUMN agents TEXT;
