-- The chats a chat channel has taken messages in, and the newest message it took in each:
-- what a listener fetches again after a restart, on platforms that keep history (Discord).
CREATE TABLE channel_chats (
    -- `<platform>:<channel name>`.
    channel TEXT NOT NULL,
    -- The platform's chat id.
    chat TEXT NOT NULL,
    -- The platform's word for the chat's kind (Discord: `dm` or `guild`).
    kind TEXT NOT NULL,
    -- The newest message taken, as the platform numbers them.
    last_id INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (channel, chat)
);
