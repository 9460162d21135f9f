//! Delivering the outbox to webhook subscribers: at least once, in order per session, signed
//! with HMAC-SHA256, retried with exponential backoff, and dead-lettered after the configured
//! attempts. Each subscriber has its own task and cursor, so a slow or dead subscriber delays
//! only itself, never a turn; a failing delivery holds back only its own session.

use std::sync::Arc;
use std::time::Duration;

use clade_store::{GivenUp, OutboxRow, Store};
use serde_json::{Value, json};
use tokio::sync::Notify;

use hmac::{KeyInit as _, Mac as _};

/// A subscriber with its secret resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub name: String,
    pub url: String,
    pub secret: Vec<u8>,
    /// Event types to deliver; empty means all.
    pub events: Vec<String>,
    /// The tenants whose events it receives, by name; `*` for every tenant.
    pub tenants: Vec<String>,
    pub max_attempts: u32,
    pub timeout: Duration,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

const BATCH: u32 = 200;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Which tenants' rows a subscriber receives, with tenant names read once per tenant.
struct TenantFilter {
    every: bool,
    named: Vec<String>,
    known: std::collections::HashMap<clade_core::TenantId, bool>,
}

impl TenantFilter {
    fn new(tenants: &[String]) -> Self {
        Self {
            every: tenants.iter().any(|t| t == "*"),
            named: tenants.to_vec(),
            known: Default::default(),
        }
    }

    /// Whether rows of `tenant` go to this subscriber: a deleted tenant's do not. `Err` when
    /// the store could not say; the row waits for the next pass rather than being skipped.
    async fn covers(
        &mut self,
        store: &Store,
        tenant: clade_core::TenantId,
    ) -> Result<bool, clade_store::Error> {
        if self.every {
            return Ok(true);
        }
        if let Some(&covered) = self.known.get(&tenant) {
            return Ok(covered);
        }
        let covered = match store.tenant_by_id(tenant).await {
            Ok(t) => self.named.iter().any(|n| n == t.name.as_str()),
            Err(clade_store::Error::TenantNotFound(_)) => false,
            Err(err) => return Err(err),
        };
        self.known.insert(tenant, covered);
        Ok(covered)
    }
}

/// The body a subscriber receives for an outbox row: a `clade_protocol::WebhookEvent` (the
/// envelope, the event's `type` and its `data`). Rows are written through
/// `clade_protocol::LifecycleEvent`, so their data is already the typed data; it is passed on
/// as stored rather than read and written again.
pub fn body(row: &OutboxRow) -> Value {
    json!({
        "id": row.event_id,
        "seq": row.id,
        "type": row.kind.as_str(),
        "tenant": row.tenant_id.to_string(),
        "session": row.session_id.map(|s| s.to_string()),
        "turn": row.turn_id.map(|t| t.to_string()),
        "created_at": row.created_at.as_millis(),
        "data": serde_json::from_str::<Value>(&row.data).unwrap_or(Value::Null),
    })
}

/// `sha256=<hex>`: HMAC-SHA256 (RFC 2104) of the body under the subscriber's secret.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .map(|mac| mac.chain_update(body).finalize().into_bytes());
    match mac {
        Ok(bytes) => format!("sha256={}", hex::encode(bytes)),
        Err(_) => String::new(),
    }
}

/// Posts one row to the subscriber; `Err` says why it failed.
pub async fn deliver(
    client: &reqwest::Client,
    subscriber: &Subscriber,
    row: &OutboxRow,
) -> Result<(), String> {
    let payload = body(row).to_string();
    let response = client
        .post(&subscriber.url)
        .timeout(subscriber.timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", &row.event_id)
        .header("x-clade-event-id", &row.event_id)
        .header("x-clade-event-type", row.kind.as_str())
        .header("x-clade-signature", signature(&subscriber.secret, payload.as_bytes()))
        .body(payload)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("subscriber answered HTTP {}", status.as_u16()))
    }
}

/// Starts one delivery task per subscriber.
#[must_use = "dropping the dispatchers stops them"]
pub fn spawn(store: Store, subscribers: Vec<Subscriber>, signal: Arc<Notify>) -> Dispatchers {
    let dispatchers = Dispatchers {
        store,
        signal,
        client: reqwest::Client::new(),
        running: std::sync::Mutex::default(),
    };
    dispatchers.reload(subscribers);
    dispatchers
}

/// The running dispatchers, one per subscriber, which a new configuration replaces.
pub struct Dispatchers {
    store: Store,
    signal: Arc<Notify>,
    client: reqwest::Client,
    running: std::sync::Mutex<Vec<(Subscriber, tokio::task::JoinHandle<()>)>>,
}

impl Dispatchers {
    /// Makes the dispatchers `subscribers`: an unchanged one keeps running, a changed or
    /// removed one stops (delivery is at least once from its durable cursor, so what it was
    /// sending is sent again by its successor), and a new or changed one starts.
    pub fn reload(&self, subscribers: Vec<Subscriber>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (kept, stopped): (Vec<_>, Vec<_>) =
            running.drain(..).partition(|(old, _)| subscribers.contains(old));
        for (old, task) in stopped {
            task.abort();
            tracing::info!(subscriber = %old.name, "webhook subscriber stopped by a new configuration");
        }
        *running = kept;
        for subscriber in subscribers {
            if running.iter().any(|(old, _)| *old == subscriber) {
                continue;
            }
            let task = tokio::spawn(run(
                self.store.clone(),
                self.client.clone(),
                subscriber.clone(),
                self.signal.clone(),
            ));
            running.push((subscriber, task));
        }
    }
}

impl Drop for Dispatchers {
    fn drop(&mut self) {
        for (_, task) in self.running.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// A session whose oldest undelivered row failed: its later rows wait behind it.
struct Blocked {
    row: i64,
    attempts: i64,
    retry_at: clade_core::Timestamp,
}

/// How many pages past the cursor one pass may read, so a long-blocked session cannot starve
/// the others of delivery.
const MAX_PAGES: usize = 20;

/// Delivers in order per session: a failing row holds back only later rows of its own session
/// (retried with exponential backoff), while other sessions' rows go on. The durable cursor is
/// the low watermark below which everything was delivered or dead-lettered; rows delivered
/// beyond it are remembered in memory and, after a restart, delivered again (at least once;
/// receivers drop repeats by the idempotency key).
async fn run(store: Store, client: reqwest::Client, subscriber: Subscriber, signal: Arc<Notify>) {
    // Delivery reads the outbox of every tenant the subscriber names.
    let store = store.system();
    let mut delivered_beyond: std::collections::BTreeSet<i64> = Default::default();
    let mut blocked: std::collections::HashMap<Option<clade_core::SessionId>, Blocked> =
        Default::default();
    let mut restored = false;
    let mut tenants = TenantFilter::new(&subscriber.tenants);
    let clock = store.clock().clone();
    loop {
        let (mut cursor, saved_attempts) = match store.subscriber_cursor(&subscriber.name).await {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the delivery cursor");
                clock.sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let notified = signal.notified();
        let mut rows = Vec::new();
        let mut after = cursor;
        let mut read_failed = false;
        for _ in 0..MAX_PAGES {
            match store.outbox_after(after, BATCH).await {
                Ok(page) => {
                    let full = page.len() == BATCH as usize;
                    after = page.last().map_or(after, |r| r.id);
                    rows.extend(page);
                    // Read further only while the pages so far are all held back.
                    let now = clock.now();
                    let pending = rows
                        .iter()
                        .any(|r| !delivered_beyond.contains(&r.id) && !is_held(&blocked, r, now));
                    if !full || pending {
                        break;
                    }
                }
                Err(err) => {
                    tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the outbox");
                    read_failed = true;
                    break;
                }
            }
        }
        if read_failed {
            clock.sleep(Duration::from_secs(1)).await;
            continue;
        }
        if rows.is_empty() {
            // Wake on new rows, and poll now and then in case another process wrote them.
            nap(clock.as_ref(), Duration::from_secs(1), notified).await;
            continue;
        }
        let mut progressed = false;
        for row in &rows {
            if delivered_beyond.contains(&row.id) {
                continue;
            }
            let unwanted_kind = !subscriber.events.is_empty()
                && !subscriber.events.iter().any(|e| e == row.kind.as_str());
            let wanted_tenant = match tenants.covers(&store, row.tenant_id).await {
                Ok(covered) => covered,
                Err(err) => {
                    tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read a row's tenant");
                    break;
                }
            };
            if unwanted_kind || !wanted_tenant {
                delivered_beyond.insert(row.id);
                progressed = true;
                continue;
            }
            let now = clock.now();
            if is_held(&blocked, row, now) {
                continue;
            }
            match deliver(&client, &subscriber, row).await {
                Ok(()) => {
                    crate::failpoints::hit("mid_outbox_publish");
                    delivered_beyond.insert(row.id);
                    blocked.remove(&row.session_id);
                    progressed = true;
                }
                Err(reason) => {
                    let mut attempts = blocked.get(&row.session_id).map_or(0, |b| b.attempts) + 1;
                    // The attempts of the cursor's row survive a restart.
                    if !restored && row.id == rows[0].id {
                        attempts = attempts.max(saved_attempts + 1);
                        restored = true;
                    }
                    if attempts >= i64::from(subscriber.max_attempts) {
                        tracing::warn!(subscriber = %subscriber.name, outbox = row.id, %reason, "dead-lettering event");
                        let dead = Some(GivenUp { outbox_id: row.id, reason, attempts });
                        match store.set_subscriber_cursor(&subscriber.name, cursor, 0, dead).await {
                            Ok(()) => {
                                delivered_beyond.insert(row.id);
                                blocked.remove(&row.session_id);
                                progressed = true;
                            }
                            Err(err) => {
                                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot dead-letter")
                            }
                        }
                    } else {
                        let backoff = Duration::from_millis(
                            100u64.saturating_mul(1 << attempts.clamp(0, 16)),
                        )
                        .min(MAX_BACKOFF);
                        tracing::debug!(subscriber = %subscriber.name, attempts, ?backoff, %reason, "delivery failed; backing off");
                        blocked.insert(
                            row.session_id,
                            Blocked { row: row.id, attempts, retry_at: now.plus(backoff) },
                        );
                    }
                }
            }
        }
        // Advance the low watermark over the delivered prefix.
        for row in &rows {
            if !delivered_beyond.remove(&row.id) {
                break;
            }
            cursor = row.id;
        }
        let head_attempts = rows
            .iter()
            .find(|r| r.id > cursor)
            .and_then(|r| blocked.get(&r.session_id).filter(|b| b.row == r.id))
            .map_or(0, |b| b.attempts);
        if let Err(err) =
            store.set_subscriber_cursor(&subscriber.name, cursor, head_attempts, None).await
        {
            tracing::error!(subscriber = %subscriber.name, error = %err, "cannot save the delivery cursor");
        }
        if !progressed {
            // Everything readable waits for a retry: sleep until the first one (or new rows).
            let next = blocked.values().map(|b| b.retry_at).min();
            let wait = next.map_or(Duration::from_secs(1), |at| {
                let left = at.as_millis().saturating_sub(clock.now().as_millis()).max(0);
                Duration::from_millis(left.unsigned_abs()).min(Duration::from_secs(1))
            });
            nap(clock.as_ref(), wait, notified).await;
        }
    }
}

/// Whether `row` cannot be sent now: behind a failing row of its session, or that row itself
/// before its retry time.
fn is_held(
    blocked: &std::collections::HashMap<Option<clade_core::SessionId>, Blocked>,
    row: &OutboxRow,
    now: clade_core::Timestamp,
) -> bool {
    blocked.get(&row.session_id).is_some_and(|b| b.row != row.id || b.retry_at > now)
}

/// Waits until `notified` (new rows) or for `wait` on `clock`, whichever comes first.
async fn nap(clock: &dyn clade_core::Clock, wait: Duration, notified: impl Future<Output = ()>) {
    tokio::select! {
        () = notified => {}
        () = clock.sleep(wait) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    /// RFC 4231's HMAC-SHA256 vectors, as webhook signatures.
    #[test]
    fn rfc4231_test_vectors() {
        // Test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            signature(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
