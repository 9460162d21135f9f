//! The chats each chat channel has taken messages in, with the newest message it took in each
//! (migration 30, `channel_chats`): after a restart, a listener on a platform that keeps
//! history (Discord) fetches what was sent meanwhile from there. Chats are the platform's,
//! not a tenant's (one bot serves many tenants), so these are [`SystemStore`] methods.

use clade_core::Timestamp;

use crate::db::query;
use crate::error::Result;
use crate::scoped::SystemStore;

/// A chat a channel has taken messages in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSeen {
    pub chat: String,
    /// The platform's word for the chat's kind.
    pub kind: String,
    /// The newest message taken in it.
    pub last_id: i64,
    pub updated_at: Timestamp,
}

/// The most chats one channel lists for a catch-up.
pub const MAX_CHATS: u32 = 10_000;

impl SystemStore {
    /// Notes that `channel` took message `id` in `chat` (of `kind`): the chat's newest message
    /// moves to `id` unless it was past it already.
    pub async fn saw_in_chat(&self, channel: &str, chat: &str, kind: &str, id: i64) -> Result<()> {
        let (channel, chat, kind) = (channel.to_owned(), chat.to_owned(), kind.to_owned());
        let now = self.now();
        self.write(move |conn| {
            let (channel, chat, kind) = (channel.clone(), chat.clone(), kind.clone());
            Box::pin(async move {
                query(
                    "INSERT INTO channel_chats (channel, chat, kind, last_id, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel, chat) DO UPDATE SET \
                     kind = excluded.kind, updated_at = excluded.updated_at, \
                     last_id = CASE WHEN excluded.last_id > channel_chats.last_id \
                     THEN excluded.last_id ELSE channel_chats.last_id END",
                )
                .bind(channel)
                .bind(chat)
                .bind(kind)
                .bind(id)
                .bind(now.as_millis())
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Forgets `chat` of `channel` (the platform refuses the bot there now: it left, or the
    /// chat is gone), so no catch-up asks for it again; a new message there notes it anew.
    pub async fn forget_chat(&self, channel: &str, chat: &str) -> Result<()> {
        let (channel, chat) = (channel.to_owned(), chat.to_owned());
        self.write(move |conn| {
            let (channel, chat) = (channel.clone(), chat.clone());
            Box::pin(async move {
                query("DELETE FROM channel_chats WHERE channel = $1 AND chat = $2")
                    .bind(channel)
                    .bind(chat)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// The chats `channel` has taken messages in, the most recently active first, at most
    /// [`MAX_CHATS`].
    pub async fn chats_seen(&self, channel: &str) -> Result<Vec<ChatSeen>> {
        let rows = self
            .rows(
                query(
                    "SELECT chat, kind, last_id, updated_at FROM channel_chats WHERE channel = $1 \
                     ORDER BY updated_at DESC LIMIT $2",
                )
                .bind(channel.to_owned())
                .bind(i64::from(MAX_CHATS)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ChatSeen {
                    chat: row.try_get("chat")?,
                    kind: row.try_get("kind")?,
                    last_id: row.try_get("last_id")?,
                    updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }
}
