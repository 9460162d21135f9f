//! The idempotency memory of a remote tool host backed by this store (`clade cron-service`):
//! each key's fingerprint (the tool and its arguments) and last frame, kept for
//! [`REMEMBERED_FOR`], so a repeat after the host restarted is answered with the first
//! outcome rather than run again. The frame is the host's to read; this layer keeps text.

use std::time::Duration;

use clade_core::Tenant;

use crate::db::query;
use crate::error::Result;
use crate::store::Store;

/// How long a key is kept: the protocol asks for at least 24 hours.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What a host answered a key with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCall {
    pub fingerprint: Vec<u8>,
    pub frame: String,
}

/// The calls tool hosts (`clade tool-host`) have answered, remembered so that a call retried
/// under the same key is answered as it was the first time.
#[derive(Clone, Copy)]
pub struct HostCalls<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The calls tool hosts have answered, kept so a retried call is answered the same.
    pub fn host_calls(&self) -> HostCalls<'_> {
        HostCalls { store: self }
    }
}

impl HostCalls<'_> {
    /// What the host `host` answered `key` with, if it is remembered.
    pub async fn get(self, host: &str, key: &str) -> Result<Option<HostCall>> {
        let since = self.store.now().as_millis() - REMEMBERED_FOR.as_millis() as i64;
        let row = self
            .store
            .maybe_row(
                query(
                    "SELECT fingerprint, frame FROM host_calls \
                     WHERE host = $1 AND idempotency_key = $2 AND created_at >= $3",
                )
                .bind(host.to_owned())
                .bind(key.to_owned())
                .bind(since),
            )
            .await?;
        row.map(|row| {
            Ok(HostCall { fingerprint: row.try_get("fingerprint")?, frame: row.try_get("frame")? })
        })
        .transpose()
    }

    /// Remembers that the host `host` answered `key` with `call` (the first answer stays), and
    /// forgets its keys older than [`REMEMBERED_FOR`].
    pub async fn remember(self, host: &str, key: &str, call: HostCall) -> Result<()> {
        // The operator's, as every write outside a tenant's is.
        let operator = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        let (host, key) = (host.to_owned(), key.to_owned());
        self.store.transact(operator.id, move |work| {
            let (host, key, call) = (host.clone(), key.clone(), call.clone());
            Box::pin(async move {
                let now = work.now().as_millis();
                query(
                    "INSERT INTO host_calls (host, idempotency_key, fingerprint, frame, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host, idempotency_key) DO NOTHING",
                )
                .bind(host.clone())
                .bind(key)
                .bind(call.fingerprint)
                .bind(call.frame)
                .bind(now)
                .execute(work.conn())
                .await?;
                query("DELETE FROM host_calls WHERE host = $1 AND created_at < $2")
                    .bind(host)
                    .bind(now - REMEMBERED_FOR.as_millis() as i64)
                    .execute(work.conn())
                    .await?;
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}
