-- What each API token may do (`admin,operate,send,read,approve`). Tokens made before scopes
-- existed keep what they could do then, apart from deciding approvals, which became a scope of
-- its own.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'admin';
