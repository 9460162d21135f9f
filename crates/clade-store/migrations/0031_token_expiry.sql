-- When a token stops working (milliseconds since the epoch); NULL: never.
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
