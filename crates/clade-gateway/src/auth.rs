//! Bearer-token authentication: every `/v1` request names its tenant through its token.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clade_core::Tenant;

use crate::AppState;
use crate::error::{ApiError, Code};

/// The authenticated tenant, placed in request extensions for handlers.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Tenant);

pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return ApiError::new(
            Code::MissingToken,
            "missing Authorization header: send `Authorization: Bearer <token>` (create one with `clade tokens create`)",
        )
        .into_response();
    };
    let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
        return ApiError::new(Code::MissingToken, "Authorization header must be `Bearer <token>`")
            .into_response();
    };
    match state.store.authenticate(token).await {
        Ok(tenant) => {
            tracing::Span::current().record("tenant", tenant.name.as_str());
            request.extensions_mut().insert(Caller(tenant));
            next.run(request).await
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}
