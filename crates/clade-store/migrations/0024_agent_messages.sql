-- Messages between agents of one tenant. Each is delivered as an event of the receiver (in
-- its session with the sender), written in the same transaction as that event; this row says
-- who sent it, from which turn, how (`send` or `ask`) and how deep in a chain of messages it
-- is, so a turn a message started knows where it stands.
CREATE TABLE agent_messages (
    id BLOB PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    from_agent BLOB NOT NULL,
    -- The sender's session and turn; NULL when sent outside a turn.
    from_session BLOB,
    from_turn BLOB,
    to_agent BLOB NOT NULL,
    to_session BLOB NOT NULL,
    event_id BLOB NOT NULL,
    -- 1 for a message an agent sent of its own accord, one more for each message before it.
    depth INTEGER NOT NULL,
    -- The asks waiting upstream, `<from handle>><to handle>` separated by spaces: an ask along
    -- one of them again would wait on itself.
    chain TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_messages_by_event ON agent_messages (event_id);
CREATE INDEX agent_messages_from ON agent_messages (from_agent, created_at);
CREATE INDEX agent_messages_to ON agent_messages (to_agent, created_at);
CREATE INDEX agent_messages_by_tenant ON agent_messages (tenant_id);
