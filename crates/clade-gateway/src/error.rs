//! The one table that maps every error leaving the gateway to a stable public code and an
//! HTTP status. Each code is documented in `docs/errors.md` (a test checks that).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorResponse};

macro_rules! codes {
    ($($variant:ident => ($code:literal, $status:ident)),* $(,)?) => {
        /// Stable public error codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status),* }
            }
        }
    };
}

codes! {
    InvalidRequest => ("invalid_request", BAD_REQUEST),
    InvalidHandle => ("invalid_handle", BAD_REQUEST),
    MissingToken => ("missing_token", UNAUTHORIZED),
    InvalidToken => ("invalid_token", UNAUTHORIZED),
    Forbidden => ("forbidden", FORBIDDEN),
    AgentNotFound => ("agent_not_found", NOT_FOUND),
    SessionNotFound => ("session_not_found", NOT_FOUND),
    EventNotFound => ("event_not_found", NOT_FOUND),
    TurnNotFound => ("turn_not_found", NOT_FOUND),
    ToolNotFound => ("tool_not_found", NOT_FOUND),
    JobNotFound => ("job_not_found", NOT_FOUND),
    SettingNotFound => ("setting_not_found", NOT_FOUND),
    MemoryNotFound => ("memory_not_found", NOT_FOUND),
    LeaseNotFound => ("lease_not_found", NOT_FOUND),
    RevisionNotFound => ("revision_not_found", NOT_FOUND),
    RunNotFound => ("run_not_found", NOT_FOUND),
    GrantNotFound => ("grant_not_found", NOT_FOUND),
    ApprovalNotFound => ("approval_not_found", NOT_FOUND),
    ApprovalDecided => ("approval_decided", CONFLICT),
    BreakpointNotFound => ("breakpoint_not_found", NOT_FOUND),
    StopNotFound => ("stop_not_found", NOT_FOUND),
    StopNotWaiting => ("stop_not_waiting", CONFLICT),
    IdempotencyConflict => ("idempotency_conflict", CONFLICT),
    SessionBusy => ("session_busy", TOO_MANY_REQUESTS),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS),
    QuotaExceeded => ("quota_exceeded", TOO_MANY_REQUESTS),
    NoAgent => ("no_agent", NOT_FOUND),
    RouteNotFound => ("route_not_found", NOT_FOUND),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED),
    HandleTaken => ("handle_taken", CONFLICT),
    JobExists => ("job_exists", CONFLICT),
    JobDeclared => ("job_declared", CONFLICT),
    RunNotCancellable => ("run_not_cancellable", CONFLICT),
    InvalidJob => ("invalid_job", UNPROCESSABLE_ENTITY),
    InvalidConfig => ("invalid_config", UNPROCESSABLE_ENTITY),
    InvalidSetting => ("invalid_setting", UNPROCESSABLE_ENTITY),
    InvalidMemory => ("invalid_memory", UNPROCESSABLE_ENTITY),
    MemoryFull => ("memory_full", UNPROCESSABLE_ENTITY),
    MemoryOff => ("memory_off", UNPROCESSABLE_ENTITY),
    InvalidLease => ("invalid_lease", UNPROCESSABLE_ENTITY),
    InvalidFork => ("invalid_fork", UNPROCESSABLE_ENTITY),
    InvalidFlow => ("invalid_flow", UNPROCESSABLE_ENTITY),
    RunEnded => ("run_ended", CONFLICT),
    RunUnderWay => ("run_under_way", CONFLICT),
    FlowNotFound => ("flow_not_found", NOT_FOUND),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
    TemplateNotFound => ("template_not_found", NOT_FOUND),
    PeerNotFound => ("peer_not_found", NOT_FOUND),
    StoreUnavailable => ("store_unavailable", SERVICE_UNAVAILABLE),
    LeaseLost => ("lease_lost", SERVICE_UNAVAILABLE),
    Draining => ("draining", SERVICE_UNAVAILABLE),
    PromptUnsent => ("prompt_unsent", UNPROCESSABLE_ENTITY),
    TurnFailed => ("turn_failed", BAD_GATEWAY),
    TurnRunning => ("turn_running", GATEWAY_TIMEOUT),
    InvalidSignature => ("invalid_signature", UNAUTHORIZED),
    NotACluster => ("not_a_cluster", CONFLICT),
    Internal => ("internal", INTERNAL_SERVER_ERROR),
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// When to try again (`Retry-After`), for a limit that lifts by itself.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    /// A failure on the server's side: `detail` goes to the log, the client gets a generic
    /// message (the detail may name stored data).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "request failed");
        Self::new(Code::Internal, "internal error; the server log has details")
    }

    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Back-pressure: the session's queue is full; a second is a fair first wait. A store
        // out of reach (a database restarting, failing over) is back within seconds or not
        // soon: a client retrying every two seconds finds out.
        let retry = match (self.code, self.retry_after) {
            (_, Some(wait)) => Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            (Code::SessionBusy, None) => Some(1),
            (Code::StoreUnavailable, None) => Some(2),
            _ => None,
        };
        if self.code.status().is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let body = ErrorResponse {
            error: ErrorBody { code: self.code.as_str().to_owned(), message: self.message },
        };
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if let Some(seconds) = retry {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<clade_store::Error> for ApiError {
    fn from(err: clade_store::Error) -> Self {
        use clade_store::Error as E;
        let code = match &err {
            E::AgentNotFound(_) => Code::AgentNotFound,
            E::SessionNotFound(_) => Code::SessionNotFound,
            E::EventNotFound(_) => Code::EventNotFound,
            E::TurnNotFound(_) => Code::TurnNotFound,
            E::GrantNotFound(_) => Code::GrantNotFound,
            E::ApprovalNotFound(_) => Code::ApprovalNotFound,
            E::ApprovalDecided { .. } => Code::ApprovalDecided,
            E::BreakpointNotFound(_) => Code::BreakpointNotFound,
            E::StopNotFound(_) => Code::StopNotFound,
            E::StopDecided { .. } | E::StopEnded(_) => Code::StopNotWaiting,
            E::IdempotencyConflict(_) => Code::IdempotencyConflict,
            E::SessionBusy { .. } => Code::SessionBusy,
            E::QuotaExceeded(_) => Code::QuotaExceeded,
            E::HandleTaken(_) => Code::HandleTaken,
            E::JobNotFound(_) => Code::JobNotFound,
            E::JobExists(_) => Code::JobExists,
            E::SettingNotFound(_) => Code::SettingNotFound,
            E::InvalidSetting(_) => Code::InvalidSetting,
            E::MemoryNotFound(_) => Code::MemoryNotFound,
            E::InvalidMemory(_) => Code::InvalidMemory,
            E::MemoryFull { .. } => Code::MemoryFull,
            E::LeaseNotFound(_) => Code::LeaseNotFound,
            E::InvalidLease(_) => Code::InvalidLease,
            E::PeerNotFound(_) | E::LeaseeNotFound { .. } => Code::PeerNotFound,
            E::TemplateNotFound(_) => Code::TemplateNotFound,
            E::ExecutionNotFound(_) => Code::RunNotFound,
            E::FlowNotFound(_) => Code::FlowNotFound,
            E::InvalidInput(_) => Code::InvalidRequest,
            E::BadToken => Code::InvalidToken,
            E::Unreachable { .. } | E::WriterGone | E::CommitFailed(_) => Code::StoreUnavailable,
            E::Fenced { .. } => Code::LeaseLost,
            _ => Code::Internal,
        };
        // What to do, in the API's terms: the store says only what went wrong.
        let advice = match &err {
            E::AgentNotFound(_) => Some("list agents with GET /v1/agents"),
            E::SessionNotFound(_) => Some("list sessions with GET /v1/sessions"),
            E::GrantNotFound(_) => Some("list grants with GET /v1/grants"),
            E::ApprovalNotFound(_) => Some("list approvals with GET /v1/approvals"),
            E::BreakpointNotFound(_) => Some("list breakpoints with GET /v1/breakpoints"),
            E::StopNotFound(_) | E::StopDecided { .. } | E::StopEnded(_) => {
                Some("list the turns waiting at breakpoints with GET /v1/debug/stops")
            }
            E::LeaseNotFound(_) => Some("list leases with GET /v1/leases"),
            E::FlowNotFound(_) => Some("list stored flows with GET /v1/flows"),
            E::ExecutionNotFound(_) => {
                Some("list an agent's runs with GET /v1/agents/{handle}/runs")
            }
            E::BadToken => Some("send a valid token as `Authorization: Bearer <token>`"),
            E::MemoryFull { .. } => {
                Some("forget items with DELETE /v1/agents/{handle}/memories/{id}")
            }
            E::LeaseeNotFound { .. } => {
                Some("the gateway's operator pairs the components that lease")
            }
            _ => None,
        };
        // Internal details stay in the log; the client gets a message it can act on.
        let message = if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
            "internal error; the server log has details".to_owned()
        } else if code == Code::StoreUnavailable {
            // The store's error names the database's host, user and name: the operator's to
            // read in the log, not any caller's.
            tracing::error!(error = %err, "the store is unavailable");
            "the store is unavailable for now; try again after Retry-After".to_owned()
        } else if let Some(advice) = advice {
            format!("{err}; {advice}")
        } else {
            err.to_string()
        };
        ApiError::new(code, message)
    }
}

/// Turns a handler panic into a JSON 500 instead of a dropped connection.
pub(crate) fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ApiError::new(Code::Internal, "internal error; the server log has details").into_response()
}

impl From<clade_runtime::engine::Error> for ApiError {
    fn from(err: clade_runtime::engine::Error) -> Self {
        match err {
            clade_runtime::engine::Error::Store(err) => err.into(),
            clade_runtime::engine::Error::NoAgent => ApiError::new(Code::NoAgent, err.to_string()),
            clade_runtime::engine::Error::LeaseLost => ApiError::new(
                Code::LeaseLost,
                format!("{err}; send it to the node that holds the sessions now"),
            ),
            clade_runtime::engine::Error::Unsent(_) => {
                ApiError::new(Code::PromptUnsent, err.to_string())
            }
            clade_runtime::engine::Error::Draining => ApiError {
                retry_after: Some(std::time::Duration::from_secs(5)),
                ..ApiError::new(
                    Code::Draining,
                    format!("{err}; send it again once it is back (or to another node)"),
                )
            },
        }
    }
}

impl From<clade_runtime::tools::AccessError> for ApiError {
    fn from(err: clade_runtime::tools::AccessError) -> Self {
        match err {
            clade_runtime::tools::AccessError::Store(err) => err.into(),
            clade_runtime::tools::AccessError::Invalid(message) => {
                ApiError::new(Code::InvalidRequest, message)
            }
            clade_runtime::tools::AccessError::Forbidden(message) => {
                ApiError::new(Code::Forbidden, message)
            }
        }
    }
}
