//! Subscribers' delivery cursors over the outbox, and their dead letters.

use crate::db::query;
use crate::error::Result;
use crate::store::Store;

use super::*;

/// Where each outbox subscriber (a webhook) has got to, and the dead letters it gave up on.
#[derive(Clone, Copy)]
pub struct Deliveries<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The webhook subscribers' delivery cursors and dead letters.
    pub fn deliveries(&self) -> Deliveries<'_> {
        Deliveries { store: self }
    }
}

impl Deliveries<'_> {
    /// `(last delivered outbox id, attempts on the next one)` of a subscriber.
    pub async fn cursor(self, subscriber: &str) -> Result<(i64, i64)> {
        let row = self
            .store
            .maybe_row(
                query("SELECT last_id, attempts FROM subscriber_cursors WHERE subscriber = $1")
                    .bind(subscriber),
            )
            .await?;
        Ok(match row {
            Some(row) => (row.try_get("last_id")?, row.try_get("attempts")?),
            None => (0, 0),
        })
    }

    /// Gives a subscriber seen for the first time a cursor at the outbox's head, in one
    /// statement, so it is sent only what comes after; one that has a cursor keeps it.
    pub async fn start_at_head(self, subscriber: &str) -> Result<()> {
        let subscriber = subscriber.to_owned();
        let horizon = self.store.outbox_horizon().await?;
        self.store
            .write(move |conn| {
                let subscriber = subscriber.clone();
                Box::pin(async move {
                    // The `WHERE` also keeps SQLite from reading ON CONFLICT as part of the
                    // SELECT.
                    query(
                        "INSERT INTO subscriber_cursors (subscriber, last_id, attempts) \
                     SELECT $1, COALESCE(MAX(id), 0), 0 FROM outbox WHERE id <= $2 \
                     ON CONFLICT (subscriber) DO NOTHING",
                    )
                    .bind(subscriber)
                    .bind(horizon)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Moves a subscriber's cursor (`attempts`: failed deliveries of the row after it); with
    /// `dead` a row given up on is dead-lettered in the same transaction.
    pub async fn set_cursor(
        self,
        subscriber: &str,
        last_id: i64,
        attempts: i64,
        dead: Option<GivenUp>,
    ) -> Result<()> {
        let now = self.store.now();
        let subscriber = subscriber.to_owned();
        self.store.write(move |conn| {
            let dead = dead.clone();
            let subscriber = subscriber.clone();
            Box::pin(async move {
                query(
                    "INSERT INTO subscriber_cursors (subscriber, last_id, attempts) VALUES ($1, $2, $3) \
                     ON CONFLICT (subscriber) DO UPDATE SET last_id = excluded.last_id, attempts = excluded.attempts \
                     WHERE subscriber_cursors.last_id <= excluded.last_id",
                )
                .bind(subscriber.clone())
                .bind(last_id)
                .bind(attempts)
                .execute(&mut *conn)
                .await?;
                if let Some(GivenUp { outbox_id, reason, attempts }) = dead {
                    query(
                        "INSERT INTO dead_letters (subscriber, outbox_id, reason, attempts, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscriber, outbox_id) DO NOTHING",
                    )
                    .bind(subscriber)
                    .bind(outbox_id)
                    .bind(reason)
                    .bind(attempts)
                    .bind(now.as_millis())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn delete_dead_letter(self, subscriber: &str, outbox_id: i64) -> Result<()> {
        let subscriber = subscriber.to_owned();
        self.store
            .write(move |conn| {
                let subscriber = subscriber.clone();
                Box::pin(async move {
                    query("DELETE FROM dead_letters WHERE subscriber = $1 AND outbox_id = $2")
                        .bind(subscriber)
                        .bind(outbox_id)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await
    }
}
