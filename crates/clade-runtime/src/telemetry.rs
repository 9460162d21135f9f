//! What the runtime records for metrics, through the `metrics` facade: nothing until a
//! recorder is installed and [`start_recording`] says so (the gateway's `server.metrics`, or
//! `clade bench turns --metrics`), and then a few atomic adds a turn. Names are `clade_*`;
//! labels are bounded: a tenant is named by its name for the first `max_tenants` tenants a
//! process sees, and counted as `other` after that (`clade_metric_labels_capped_total` says
//! how often), so a million tenants cannot blow up a scrape. Tool names, which a tenant's paired
//! tool host chooses, are capped the same way ([`MAX_TOOLS`]). Agents are not labels at all,
//! for the same reason.
//!
//! A tenant's metric handles are made once and kept ([`TenantMetrics`]): recording is then an
//! atomic add on a handle, not a look-up of the name and labels in the recorder's registry
//! (which cost a turn about a tenth of its CPU).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clade_core::{TenantId, TurnStatus};
use clade_store::UsageRecord;
use metrics::{Counter, Histogram};

/// The label value of tenants past the cap.
pub const OTHER: &str = "other";

static RECORDING: AtomicBool = AtomicBool::new(false);
static MAX_TENANTS: AtomicUsize = AtomicUsize::new(1_000);

/// Records from now on, naming at most `max_tenants` tenants in labels (the tenants named so
/// far stay named). Call it once the process's recorder is installed: handles made before
/// would record nowhere.
pub fn start_recording(max_tenants: usize) {
    MAX_TENANTS.store(max_tenants.max(1), Ordering::Relaxed);
    RECORDING.store(true, Ordering::Release);
}

fn recording() -> bool {
    RECORDING.load(Ordering::Acquire)
}

/// The handles of one tenant's metrics (or of every tenant past the cap, as `other`).
pub(crate) struct TenantMetrics {
    label: String,
    turns: HashMap<TurnStatus, Counter>,
    turn_seconds: Histogram,
    queue_wait: Histogram,
    models: Mutex<HashMap<String, Arc<ModelMetrics>>>,
    tools: Mutex<HashMap<String, Arc<ToolMetrics>>>,
}

struct ModelMetrics {
    calls: Counter,
    input: Counter,
    output: Counter,
    cached: Counter,
    cost: Counter,
    first_token: Histogram,
}

struct ToolMetrics {
    ok: Counter,
    error: Counter,
    run: Histogram,
}

impl TenantMetrics {
    fn new(label: &str) -> Self {
        let tenant = ("tenant", label.to_owned());
        let turns = TurnStatus::ALL
            .iter()
            .map(|status| {
                let labels = [tenant.clone(), ("status", status.as_str().to_owned())];
                (*status, metrics::counter!("clade_turns_total", &labels))
            })
            .collect();
        Self {
            label: label.to_owned(),
            turns,
            turn_seconds: metrics::histogram!("clade_turn_seconds", "tenant" => label.to_owned()),
            queue_wait: metrics::histogram!("clade_queue_wait_seconds", "tenant" => label.to_owned()),
            models: Mutex::default(),
            tools: Mutex::default(),
        }
    }

    fn model(&self, model: &str) -> Arc<ModelMetrics> {
        // Models are the operator's configuration: a bounded label.
        kept(&self.models, model, |model| {
            let by = [("tenant", self.label.clone()), ("model", model.to_owned())];
            let tokens = |kind: &str| {
                let labels = [by[0].clone(), by[1].clone(), ("kind", kind.to_owned())];
                metrics::counter!("clade_model_tokens_total", &labels)
            };
            ModelMetrics {
                calls: metrics::counter!("clade_model_calls_total", &by),
                input: tokens("input"),
                output: tokens("output"),
                cached: tokens("cached"),
                cost: metrics::counter!("clade_model_cost_micros_total", &by),
                first_token: metrics::histogram!("clade_model_first_token_seconds", &by),
            }
        })
    }

    fn tool(&self, tool: &str) -> Arc<ToolMetrics> {
        kept(&self.tools, &tool_label(tool), |tool| {
            let by = [("tenant", self.label.clone()), ("tool", tool.to_owned())];
            let outcome = |outcome: &str| {
                let labels = [by[0].clone(), by[1].clone(), ("outcome", outcome.to_owned())];
                metrics::counter!("clade_tool_calls_total", &labels)
            };
            ToolMetrics {
                ok: outcome("ok"),
                error: outcome("error"),
                run: metrics::histogram!("clade_tool_run_seconds", &by),
            }
        })
    }

    /// A turn started on events the oldest of which waited `waited` since it was stored.
    pub(crate) fn queue_waited(&self, waited: Duration) {
        self.queue_wait.record(waited.as_secs_f64());
    }

    /// A turn ended with `status`, `took` after it started.
    pub(crate) fn turn_ended(&self, status: TurnStatus, took: Duration) {
        if let Some(turns) = self.turns.get(&status) {
            turns.increment(1);
        }
        self.turn_seconds.record(took.as_secs_f64());
    }

    /// A turn's model call answered, as its usage was recorded.
    pub(crate) fn model_answered(&self, usage: &UsageRecord) {
        let model = self.model(&usage.model);
        model.calls.increment(1);
        model.input.increment(usage.input_tokens);
        model.output.increment(usage.output_tokens);
        model.cached.increment(usage.cached_tokens);
        model.cost.increment(usage.cost_micros);
    }

    /// A model call's first streamed output (text or a tool call) came `took` after it was
    /// made.
    pub(crate) fn model_first_token(&self, model: &str, took: Duration) {
        self.model(model).first_token.record(took.as_secs_f64());
    }

    /// A turn's tool call returned (`is_error`: the model was told it failed).
    pub(crate) fn tool_returned(&self, tool: &str, is_error: bool) {
        let tool = self.tool(tool);
        if is_error { &tool.error } else { &tool.ok }.increment(1);
    }

    /// A tool ran for `took` (its effect only: policy, approval and journal writes are not in
    /// it).
    pub(crate) fn tool_ran(&self, tool: &str, took: Duration) {
        self.tool(tool).run.record(took.as_secs_f64());
    }
}

/// The tenants named so far, and the one set of handles every tenant past the cap shares.
type Kept = (HashMap<TenantId, Arc<TenantMetrics>>, Option<Arc<TenantMetrics>>);

/// The handles kept under `key` in `map`, made by `make` the first time.
fn kept<T>(
    map: &Mutex<HashMap<String, Arc<T>>>,
    key: &str,
    make: impl FnOnce(&str) -> T,
) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(kept) = map.get(key) {
        return kept.clone();
    }
    let made = Arc::new(make(key));
    map.insert(key.to_owned(), made.clone());
    made
}

/// The metric handles of `tenant` (named `name` while it is among the first tenants seen, else
/// counted as [`OTHER`]); `None` while nothing records.
pub(crate) fn tenant(tenant: TenantId, name: &str) -> Option<Arc<TenantMetrics>> {
    if !recording() {
        return None;
    }
    static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
    let mut kept = KEPT.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    let (named, other) = &mut *kept;
    if let Some(metrics) = named.get(&tenant) {
        return Some(metrics.clone());
    }
    if named.len() < MAX_TENANTS.load(Ordering::Relaxed) {
        let metrics = Arc::new(TenantMetrics::new(name));
        named.insert(tenant, metrics.clone());
        return Some(metrics);
    }
    metrics::counter!("clade_metric_labels_capped_total", "label" => "tenant").increment(1);
    Some(other.get_or_insert_with(|| Arc::new(TenantMetrics::new(OTHER))).clone())
}

/// The most tool names labels carry; the rest are counted as [`OTHER`].
pub const MAX_TOOLS: usize = 500;

/// `name`, while it is among the first [`MAX_TOOLS`] tool names seen, else [`OTHER`].
fn tool_label(name: &str) -> String {
    static NAMED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
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

/// How long from `from` to `to` (the store clock's milliseconds), never negative.
pub fn between(from: clade_core::Timestamp, to: clade_core::Timestamp) -> Duration {
    Duration::from_millis(to.as_millis().saturating_sub(from.as_millis()).max(0).unsigned_abs())
}

/// An outbox row reached the subscriber `subscriber` (a webhook, a paired subscriber or a
/// chat bot, all named by the operator: a bounded label) `lag` after it was committed.
pub(crate) fn outbox_delivered(subscriber: &str, lag: Duration) {
    if recording() {
        let histogram = metrics::histogram!("clade_outbox_delivery_lag_seconds", "subscriber" => subscriber.to_owned());
        histogram.record(lag.as_secs_f64());
    }
}

/// Memory recall for a turn took `took` (search and ranking; a failed one too).
pub(crate) fn recalled(took: Duration) {
    if recording() {
        metrics::histogram!("clade_memory_recall_seconds").record(took.as_secs_f64());
    }
}

/// A session's actor was evicted from memory after standing idle.
pub(crate) fn session_evicted() {
    if recording() {
        metrics::counter!("clade_sessions_evicted_total").increment(1);
    }
}
