//! Routing: named models, fallback chains, retries with backoff and jitter (honouring
//! `Retry-After`), a cooldown for rate-limited models, budgets checked before every call, and
//! a record of every decision for the turn's journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_core::{Clock, Jitter, SystemClock, Timestamp};
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::error::Error;
use crate::provider::Provider;
use crate::script;
use crate::types::{Message, ModelRequest, ModelResponse, StreamEvent, Usage};

/// Price per million tokens, in US dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
    pub cache_write: f64,
}

impl Price {
    /// Cost of `usage` in millionths of a dollar (integers add up exactly).
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let dollars_per_mtok_to_micros =
            |tokens: u64, price: f64| (tokens as f64 * price).round() as u64;
        dollars_per_mtok_to_micros(usage.input_tokens, self.input)
            + dollars_per_mtok_to_micros(usage.output_tokens, self.output)
            + dollars_per_mtok_to_micros(usage.cached_input_tokens, self.cached_input)
            + dollars_per_mtok_to_micros(usage.cache_write_tokens, self.cache_write)
    }
}

/// A named model: which provider serves it, under which model id, at which price.
#[derive(Clone)]
pub struct ModelEntry {
    pub provider: Arc<dyn Provider>,
    pub model: String,
    pub price: Price,
}

/// Tokens and cost of a call, as reserved beforehand or measured afterwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub tokens: u64,
    pub cost_micros: u64,
}

/// A budget reservation handed back when the call's real spend is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub reserved: Spend,
}

/// Enforces spending limits. `reserve` must be atomic with respect to concurrent callers: two
/// reservations that together exceed a limit must not both succeed.
pub trait Budget: Send + Sync {
    fn reserve(&self, estimate: Spend) -> BoxFuture<'_, Result<Reservation, Error>>;
    fn settle(&self, reservation: Reservation, actual: Spend) -> BoxFuture<'_, ()>;
}

/// One routing decision, for the turn's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    Attempt { model: String, attempt: u32 },
    Failed { model: String, class: &'static str, message: String },
    Retry { model: String, after_ms: u64 },
    CoolingDown { model: String, remaining_ms: u64 },
    Fallback { from: String, to: String },
    Succeeded { model: String, usage: Usage, cost_micros: u64 },
}

/// One line a person reads in a turn's steps (`attempt 1 of gpt-4o`).
impl std::fmt::Display for RouteEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteEvent::Attempt { model, attempt } => write!(f, "attempt {attempt} of {model}"),
            RouteEvent::Failed { model, class, message } => {
                write!(f, "{model} failed ({class}): {}", crate::error::public_text(message))
            }
            RouteEvent::Retry { model, after_ms } => {
                write!(f, "retry {model} after {after_ms} ms")
            }
            RouteEvent::CoolingDown { model, remaining_ms } => {
                write!(f, "{model} is cooling down for {remaining_ms} ms more")
            }
            RouteEvent::Fallback { from, to } => write!(f, "fall back from {from} to {to}"),
            RouteEvent::Succeeded { model, usage, cost_micros } => write!(
                f,
                "{model} answered ({} tokens in, {} out, {cost_micros} micro-dollars)",
                usage.input_tokens + usage.cached_input_tokens,
                usage.output_tokens
            ),
        }
    }
}

/// Retry and cooldown settings.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Retries on the same model before falling back.
    pub max_retries: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a rate-limited model is skipped.
    pub cooldown: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The outcome of [`Router::call`].
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The named model that answered.
    pub model: String,
    pub response: ModelResponse,
    pub cost_micros: u64,
    pub events: Vec<RouteEvent>,
}

/// A failed call, with the routing decisions made on the way.
#[derive(Debug, Clone)]
pub struct CallError {
    pub error: Error,
    pub events: Vec<RouteEvent>,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CallError {}

/// Picks and calls models. Cheap to share behind an `Arc`.
pub struct Router {
    models: HashMap<String, ModelEntry>,
    options: RouterOptions,
    /// Model name -> when its cooldown ends, on `clock`.
    cooldowns: Mutex<HashMap<String, Timestamp>>,
    /// What back-off sleeps on and cooldowns are timed by.
    clock: Arc<dyn Clock>,
    /// Where back-off jitter comes from: seeded, so a test replays a schedule exactly.
    jitter: Arc<Jitter>,
}

impl Router {
    /// A router on the system clock.
    #[allow(clippy::disallowed_methods)] // A fresh seed from the OS; tests give their own.
    pub fn new(models: HashMap<String, ModelEntry>, options: RouterOptions) -> Self {
        Self {
            models,
            options,
            cooldowns: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
            jitter: Arc::new(Jitter::seeded(rand::random())),
        }
    }

    /// The same router drawing its back-off jitter from `jitter`.
    pub fn with_jitter(self, jitter: Arc<Jitter>) -> Self {
        Self { jitter, ..self }
    }

    /// The same router on `clock` (a test's manual clock, say).
    pub fn on_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Calls the first usable model of `chain`, forwarding stream events to `on_event` as they
    /// arrive. Failures before anything was forwarded are retried and then fall back to the
    /// next model; a failure after output was forwarded ends the call (the caller has shown
    /// part of an answer and must decide).
    pub async fn call(
        &self,
        chain: &[String],
        request: &ModelRequest,
        budget: Option<&dyn Budget>,
        on_event: &mut (dyn FnMut(&StreamEvent) + Send),
    ) -> Result<CallOutcome, CallError> {
        let mut events = Vec::new();
        let mut last_error = Error::NoModel(format!("the route [{}] is empty", chain.join(", ")));
        for (position, name) in chain.iter().enumerate() {
            if position > 0 {
                events.push(RouteEvent::Fallback {
                    from: chain[position - 1].clone(),
                    to: name.clone(),
                });
            }
            let Some(entry) = self.models.get(name) else {
                last_error = Error::NoModel(format!(
                    "model {name:?} is not configured under models in clade.yaml"
                ));
                events.push(RouteEvent::Failed {
                    model: name.clone(),
                    class: last_error.class(),
                    message: last_error.to_string(),
                });
                continue;
            };
            if let Some(remaining) = self.cooldown_remaining(name) {
                events.push(RouteEvent::CoolingDown {
                    model: name.clone(),
                    remaining_ms: remaining.as_millis() as u64,
                });
                last_error = Error::RateLimited {
                    provider: entry.provider.name().to_owned(),
                    retry_after: Some(remaining),
                };
                continue;
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                events.push(RouteEvent::Attempt { model: name.clone(), attempt });
                match self.attempt(entry, request, budget, on_event).await {
                    Ok((response, cost_micros)) => {
                        events.push(RouteEvent::Succeeded {
                            model: name.clone(),
                            usage: response.usage,
                            cost_micros,
                        });
                        return Ok(CallOutcome {
                            model: name.clone(),
                            response,
                            cost_micros,
                            events,
                        });
                    }
                    Err(Attempt { error, forwarded }) => {
                        events.push(RouteEvent::Failed {
                            model: name.clone(),
                            class: error.class(),
                            message: error.to_string(),
                        });
                        if forwarded || matches!(error, Error::BudgetExceeded(_)) {
                            return Err(CallError { error, events });
                        }
                        // A server that asks for a longer pause than we would back off is
                        // better left alone: skip straight to the cooldown and the next model.
                        let patient = error
                            .retry_after()
                            .is_none_or(|after| after <= self.options.max_backoff);
                        if error.is_retryable() && attempt <= self.options.max_retries && patient {
                            let wait = self.backoff(attempt, error.retry_after());
                            events.push(RouteEvent::Retry {
                                model: name.clone(),
                                after_ms: wait.as_millis() as u64,
                            });
                            self.clock.sleep(wait).await;
                            continue;
                        }
                        if matches!(error, Error::RateLimited { .. }) {
                            self.start_cooldown(name, error.retry_after());
                        }
                        let fall_back = error.allows_fallback();
                        last_error = error;
                        if !fall_back {
                            return Err(CallError { error: last_error, events });
                        }
                        break;
                    }
                }
            }
        }
        Err(CallError { error: last_error, events })
    }

    async fn attempt(
        &self,
        entry: &ModelEntry,
        request: &ModelRequest,
        budget: Option<&dyn Budget>,
        on_event: &mut (dyn FnMut(&StreamEvent) + Send),
    ) -> Result<(ModelResponse, u64), Attempt> {
        let reservation = match budget {
            Some(budget) => {
                let estimate = estimate(entry, request);
                Some(
                    budget
                        .reserve(estimate)
                        .await
                        .map_err(|error| Attempt { error, forwarded: false })?,
                )
            }
            None => None,
        };
        let result = self.stream_into(entry, request, on_event).await;
        let spent = match &result {
            Ok(response) => Spend {
                tokens: response.usage.total(),
                cost_micros: entry.price.cost_micros(&response.usage),
            },
            Err(_) => Spend::default(),
        };
        if let (Some(budget), Some(reservation)) = (budget, reservation) {
            budget.settle(reservation, spent).await;
        }
        result.map(|response| (response, spent.cost_micros))
    }

    async fn stream_into(
        &self,
        entry: &ModelEntry,
        request: &ModelRequest,
        on_event: &mut (dyn FnMut(&StreamEvent) + Send),
    ) -> Result<ModelResponse, Attempt> {
        let mut stream = entry
            .provider
            .stream(&entry.model, request)
            .await
            .map_err(|error| Attempt { error, forwarded: false })?;
        let mut response = ModelResponse::default();
        let mut forwarded = false;
        while let Some(event) = stream.next().await {
            let event = event.map_err(|error| Attempt { error, forwarded })?;
            if matches!(event, StreamEvent::TextDelta(_) | StreamEvent::ToolCallStart { .. }) {
                forwarded = true;
            }
            on_event(&event);
            response.apply(event);
        }
        if response.stop_reason.is_none() {
            return Err(Attempt {
                error: Error::MalformedResponse("stream ended without a stop reason".into()),
                forwarded,
            });
        }
        Ok(response)
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.options.max_backoff);
        }
        let capped = clade_core::Backoff::new(self.options.base_backoff, self.options.max_backoff)
            .after(attempt);
        // Full jitter: spread retries of many callers over the whole window.
        let jitter = self.jitter.between(0.5, 1.0);
        capped.mul_f64(jitter)
    }

    fn cooldown_remaining(&self, name: &str) -> Option<Duration> {
        let cooldowns = self.cooldowns.lock().ok()?;
        let left = cooldowns.get(name)?.as_millis() - self.clock.now().as_millis();
        (left > 0).then(|| Duration::from_millis(left.unsigned_abs()))
    }

    fn start_cooldown(&self, name: &str, retry_after: Option<Duration>) {
        let period = retry_after.unwrap_or(self.options.cooldown).max(Duration::from_millis(1));
        if let Ok(mut cooldowns) = self.cooldowns.lock() {
            cooldowns.insert(name.to_owned(), self.clock.now().plus(period));
        }
    }
}

struct Attempt {
    error: Error,
    forwarded: bool,
}

/// The most a call to `entry` can spend: the prompt's estimated tokens plus `max_tokens` of
/// output, priced at the model's rates. Reserved before the call, settled after.
pub fn estimate(entry: &ModelEntry, request: &ModelRequest) -> Spend {
    let input = input_tokens(request);
    let output = u64::from(request.params.max_tokens);
    let usage = Usage { input_tokens: input, output_tokens: output, ..Usage::default() };
    Spend { tokens: input + output, cost_micros: entry.price.cost_micros(&usage) }
}

/// The tokens `request`'s messages and tool schemas come to, estimated from their text (no
/// tokenizer: about four bytes a token).
pub fn input_tokens(request: &ModelRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|m| match m {
            Message::System { text } | Message::User { text } => script::tokens(text),
            Message::Assistant { text, tool_calls } => {
                script::tokens(text)
                    + tool_calls.iter().map(|c| script::tokens(&c.arguments) + 4).sum::<u64>()
            }
            Message::Tool { content, .. } => script::tokens(content),
        })
        .sum::<u64>()
        + request
            .tools
            .iter()
            .map(|t| script::tokens(&t.input_schema.to_string()) + script::tokens(&t.description))
            .sum::<u64>()
}
