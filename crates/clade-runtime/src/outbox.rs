//! Delivering the outbox to webhook subscribers: at least once, in outbox order (hence in
//! order per session), signed with HMAC-SHA256, retried with exponential backoff, and
//! dead-lettered after the configured attempts. Each subscriber has its own task and cursor, so
//! a slow or dead subscriber delays only itself, never a turn.

use std::sync::Arc;
use std::time::Duration;

use clade_store::{OutboxRow, Store};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::hmac::hmac_sha256;

/// A subscriber with its secret resolved.
#[derive(Clone)]
pub struct Subscriber {
    pub name: String,
    pub url: String,
    pub secret: Vec<u8>,
    /// Event types to deliver; empty means all.
    pub events: Vec<String>,
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

/// The JSON body a subscriber receives for an outbox row.
pub fn body(row: &OutboxRow) -> Value {
    json!({
        "id": row.event_id,
        "seq": row.id,
        "type": row.kind,
        "tenant": row.tenant_id.to_string(),
        "session": row.session_id.map(|s| s.to_string()),
        "turn": row.turn_id.map(|t| t.to_string()),
        "created_at": row.created_at.as_millis(),
        "data": serde_json::from_str::<Value>(&row.data).unwrap_or(Value::Null),
    })
}

/// `sha256=<hex>` of the body under the subscriber's secret.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
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
        .header("x-clade-event-type", &row.kind)
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
pub fn spawn(store: Store, subscribers: Vec<Subscriber>, signal: Arc<Notify>) {
    let client = reqwest::Client::new();
    for subscriber in subscribers {
        tokio::spawn(run(store.clone(), client.clone(), subscriber, signal.clone()));
    }
}

async fn run(store: Store, client: reqwest::Client, subscriber: Subscriber, signal: Arc<Notify>) {
    loop {
        let (mut cursor, mut attempts) = match store.subscriber_cursor(&subscriber.name).await {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the delivery cursor");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let notified = signal.notified();
        let rows = match store.outbox_after(cursor, BATCH).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if rows.is_empty() {
            // Wake on new rows, and poll now and then in case another process wrote them.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
            continue;
        }
        for row in rows {
            if !subscriber.events.is_empty() && !subscriber.events.contains(&row.kind) {
                cursor = row.id;
                continue;
            }
            match deliver(&client, &subscriber, &row).await {
                // The cursor is saved after the batch (or before a back-off): a crash in
                // between redelivers a few events, which at-least-once allows.
                Ok(()) => {
                    crate::failpoints::hit("mid_outbox_publish");
                    cursor = row.id;
                    attempts = 0;
                }
                Err(reason) => {
                    attempts += 1;
                    if attempts >= i64::from(subscriber.max_attempts) {
                        tracing::warn!(subscriber = %subscriber.name, outbox = row.id, %reason, "dead-lettering event");
                        let dead = Some((row.id, reason));
                        match store.set_subscriber_cursor(&subscriber.name, row.id, 0, dead).await {
                            Ok(()) => {
                                cursor = row.id;
                                attempts = 0;
                            }
                            Err(err) => {
                                tracing::error!(subscriber = %subscriber.name, error = %err, "cannot dead-letter")
                            }
                        }
                    } else {
                        // Keep the cursor before this row; remember the attempts across restarts.
                        let _ = store
                            .set_subscriber_cursor(&subscriber.name, cursor, attempts, None)
                            .await;
                        let backoff = Duration::from_millis(
                            100u64.saturating_mul(1 << attempts.clamp(0, 16)),
                        )
                        .min(MAX_BACKOFF);
                        tracing::debug!(subscriber = %subscriber.name, attempts, ?backoff, %reason, "delivery failed; backing off");
                        tokio::time::sleep(backoff).await;
                    }
                    break;
                }
            }
        }
        if let Err(err) =
            store.set_subscriber_cursor(&subscriber.name, cursor, attempts, None).await
        {
            tracing::error!(subscriber = %subscriber.name, error = %err, "cannot save the delivery cursor");
        }
    }
}
