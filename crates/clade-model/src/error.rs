//! Classified model-call failures: the router decides retries and fallbacks from the class.

use std::time::Duration;

/// A model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("rate limited by {provider}{}", retry_hint(*retry_after))]
    RateLimited { provider: String, retry_after: Option<Duration> },
    #[error("{provider} is overloaded{}", retry_hint(*retry_after))]
    Overloaded { provider: String, retry_after: Option<Duration> },
    #[error("{provider} server error (HTTP {status}): {message}")]
    Server { provider: String, status: u16, message: String },
    #[error("{provider} rejected the credentials: {message}; check the API key or token")]
    Auth { provider: String, message: String },
    #[error("{provider} rejected the request: {message}")]
    InvalidRequest { provider: String, message: String },
    #[error("the conversation is too long for the model's context window: {message}")]
    ContextTooLong { provider: String, message: String },
    #[error("cannot reach {provider}: {message}")]
    Transport { provider: String, message: String },
    #[error("{provider} did not answer within {timeout:?}")]
    Timeout { provider: String, timeout: Duration },
    #[error("malformed response: {0}")]
    MalformedResponse(String),
    #[error("{0}")]
    BudgetExceeded(String),
    #[error("no usable model: {0}")]
    NoModel(String),
    #[error("credentials unavailable: {0}")]
    Credentials(String),
}

fn retry_hint(after: Option<Duration>) -> String {
    after.map(|d| format!(" (retry after {:.1} s)", d.as_secs_f64())).unwrap_or_default()
}

impl Error {
    /// Worth retrying on the same model (after a pause): 429, 529, 502/503/504, transport
    /// failures and timeouts. A 500 is a bug on the other side; retrying rarely helps.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Overloaded { .. }
                | Error::Server { status: 502..=504, .. }
                | Error::Transport { .. }
                | Error::Timeout { .. }
        )
    }

    /// Worth trying the next model of a fallback chain.
    pub fn allows_fallback(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                Error::Server { .. }
                    | Error::MalformedResponse(_)
                    | Error::Auth { .. }
                    | Error::Credentials(_)
            )
    }

    /// What the provider asked us to wait, if anything.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Overloaded { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// A short stable name of the class, for journals and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::Server { .. } => "server_error",
            Error::Auth { .. } => "auth",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::ContextTooLong { .. } => "context_too_long",
            Error::Transport { .. } => "transport",
            Error::Timeout { .. } => "timeout",
            Error::MalformedResponse(_) => "malformed_response",
            Error::BudgetExceeded(_) => "budget_exceeded",
            Error::NoModel(_) => "no_model",
            Error::Credentials(_) => "credentials",
        }
    }
}

/// The part of a failure's text fit to show a caller: its first line, without a backtrace,
/// source paths or anything past 300 characters. What providers and libraries put after the
/// first line (a backtrace, a dump of the request) is for the operator's log.
pub fn public_text(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let line = line.split(" at /").next().unwrap_or(line);
    let mut shown: String = line.chars().take(300).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    shown
}

/// Parses a `Retry-After` header (seconds, at most an hour; HTTP dates are treated as absent).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}
