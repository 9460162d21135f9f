//! What the runtime records for metrics, through the `metrics` facade: nothing until a
//! recorder is installed (the gateway's, with `server.metrics`), and then a few atomic adds a
//! turn. Names are `clade_*`; labels are bounded: a tenant is named by its name for the first
//! [`cap_tenants`] tenants a process sees, and counted as `other` after that
//! (`clade_metric_labels_capped_total` says how often), so a million tenants cannot blow up a
//! scrape. Tool names, which a tenant's paired tool host chooses, are capped the same way
//! ([`MAX_TOOLS`]). Agents are not labels at all, for the same reason.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use clade_core::{TenantId, TurnStatus};
use clade_store::UsageRecord;

/// The label value of tenants past the cap.
pub const OTHER: &str = "other";

static MAX_TENANTS: AtomicUsize = AtomicUsize::new(1_000);

fn named() -> &'static Mutex<HashSet<TenantId>> {
    static NAMED: OnceLock<Mutex<HashSet<TenantId>>> = OnceLock::new();
    NAMED.get_or_init(Mutex::default)
}

/// Names at most `max` tenants in labels from now on (the tenants named so far stay named).
pub fn cap_tenants(max: usize) {
    MAX_TENANTS.store(max.max(1), Ordering::Relaxed);
}

/// `name`, while `tenant` is among the first tenants named, else [`OTHER`].
pub fn tenant_label(tenant: TenantId, name: &str) -> String {
    let mut named = named().lock().unwrap_or_else(|e| e.into_inner());
    if named.contains(&tenant) {
        return name.to_owned();
    }
    if named.len() < MAX_TENANTS.load(Ordering::Relaxed) {
        named.insert(tenant);
        return name.to_owned();
    }
    drop(named);
    metrics::counter!("clade_metric_labels_capped_total", "label" => "tenant").increment(1);
    OTHER.to_owned()
}

/// The most tool names labels carry; the rest are counted as [`OTHER`].
pub const MAX_TOOLS: usize = 500;

/// `name`, while it is among the first [`MAX_TOOLS`] tool names seen, else [`OTHER`].
fn tool_label(name: &str) -> String {
    static NAMED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut named = NAMED.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if named.contains(name) {
        return name.to_owned();
    }
    if named.len() < MAX_TOOLS {
        named.insert(name.to_owned());
        return name.to_owned();
    }
    drop(named);
    metrics::counter!("clade_metric_labels_capped_total", "label" => "tool").increment(1);
    OTHER.to_owned()
}

/// A turn's tool call returned (`is_error`: the model was told it failed).
pub(crate) fn tool_returned(tenant: &str, tool: &str, is_error: bool) {
    let outcome = if is_error { "error" } else { "ok" };
    let labels = [
        ("tenant", tenant.to_owned()),
        ("tool", tool_label(tool)),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("clade_tool_calls_total", &labels).increment(1);
}

/// A turn ended with `status`, `took` after it started.
pub(crate) fn turn_ended(tenant: &str, status: TurnStatus, took: Duration) {
    let labels = [("tenant", tenant.to_owned()), ("status", status.as_str().to_owned())];
    metrics::counter!("clade_turns_total", &labels).increment(1);
    metrics::histogram!("clade_turn_seconds", "tenant" => tenant.to_owned())
        .record(took.as_secs_f64());
}

/// A turn started on events the oldest of which waited `waited` since it was stored.
pub(crate) fn queue_waited(tenant: &str, waited: Duration) {
    metrics::histogram!("clade_queue_wait_seconds", "tenant" => tenant.to_owned())
        .record(waited.as_secs_f64());
}

/// A turn's model call answered, as its usage was recorded.
pub(crate) fn model_answered(tenant: &str, usage: &UsageRecord) {
    let model = usage.model.clone();
    let by = [("tenant", tenant.to_owned()), ("model", model.clone())];
    metrics::counter!("clade_model_calls_total", &by).increment(1);
    for (kind, tokens) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cached", usage.cached_tokens),
    ] {
        let labels =
            [("tenant", tenant.to_owned()), ("model", model.clone()), ("kind", kind.to_owned())];
        metrics::counter!("clade_model_tokens_total", &labels).increment(tokens);
    }
    metrics::counter!("clade_model_cost_micros_total", &by).increment(usage.cost_micros);
}

/// How long from `from` to `to` (the store clock's milliseconds), never negative.
pub fn between(from: clade_core::Timestamp, to: clade_core::Timestamp) -> Duration {
    Duration::from_millis(to.as_millis().saturating_sub(from.as_millis()).max(0).unsigned_abs())
}

/// A model call's first streamed output (text or a tool call) came `took` after it was made.
pub(crate) fn model_first_token(tenant: &str, model: &str, took: Duration) {
    let labels = [("tenant", tenant.to_owned()), ("model", model.to_owned())];
    metrics::histogram!("clade_model_first_token_seconds", &labels).record(took.as_secs_f64());
}

/// A tool ran for `took` (its effect only: policy, approval and journal writes are not in it).
pub(crate) fn tool_ran(tenant: &str, tool: &str, took: Duration) {
    let labels = [("tenant", tenant.to_owned()), ("tool", tool_label(tool))];
    metrics::histogram!("clade_tool_run_seconds", &labels).record(took.as_secs_f64());
}

/// An outbox row reached the subscriber `subscriber` (a webhook, a paired subscriber or a
/// chat bot, all named by the operator: a bounded label) `lag` after it was committed.
pub(crate) fn outbox_delivered(subscriber: &str, lag: Duration) {
    metrics::histogram!("clade_outbox_delivery_lag_seconds", "subscriber" => subscriber.to_owned())
        .record(lag.as_secs_f64());
}

/// Memory recall for a turn took `took` (search and ranking; a failed one too).
pub(crate) fn recalled(took: Duration) {
    metrics::histogram!("clade_memory_recall_seconds").record(took.as_secs_f64());
}

/// A session's actor was evicted from memory after standing idle.
pub(crate) fn session_evicted() {
    metrics::counter!("clade_sessions_evicted_total").increment(1);
}
