//! Bearer-token authentication: every `/v1` request names its tenant through its token.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clade_core::Tenant;

use crate::AppState;
use crate::error::{ApiError, Code};

/// The authenticated tenant, placed in request extensions for handlers, with the token it
/// proved itself with (streams check it again while they run).
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Tenant, pub(crate) Credential);

/// The bearer token a request authenticated with.
#[derive(Clone)]
pub(crate) struct Credential(std::sync::Arc<str>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    /// Whether the token still authenticates the same tenant: a long-lived stream asks this
    /// every [`RECHECK_EVERY`] and closes once the token is revoked or its tenant deleted.
    pub(crate) async fn still_valid(&self, store: &clade_store::Store, tenant: &Tenant) -> bool {
        match store.authenticate(&self.0).await {
            Ok(current) => current.id == tenant.id,
            // Only a definite "no" ends a stream; a store hiccup is retried at the next check.
            Err(clade_store::Error::BadToken) => false,
            Err(clade_store::Error::TenantNotFound(_)) => false,
            Err(err) => {
                tracing::warn!(error = %err, "cannot re-check a stream's token");
                true
            }
        }
    }
}

/// How often an open stream re-checks its token.
pub(crate) const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The token of an `Authorization` header: the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(header: &axum::http::HeaderValue) -> Option<&str> {
    let text = header.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(header) = request.headers().get(AUTHORIZATION) else {
        return ApiError::new(
            Code::MissingToken,
            "missing Authorization header: send `Authorization: Bearer <token>` (create one with `clade tokens create`)",
        )
        .into_response();
    };
    let Some(token) = bearer_token(header) else {
        return ApiError::new(
            Code::InvalidToken,
            "the Authorization header is not `Bearer <token>`: send the token after the word Bearer and one space",
        )
        .into_response();
    };
    match state.store.authenticate_scoped(token).await {
        Ok((tenant, scopes)) => {
            tracing::Span::current().record("tenant", tenant.name.as_str());
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let needed = crate::scopes::required(request.method().as_str(), &route);
            if !needed.is_some_and(|needed| clade_core::Scope::allows(&scopes, needed)) {
                let needed = needed.map(clade_core::Scope::join).unwrap_or_default();
                return ApiError::new(
                    Code::Forbidden,
                    format!(
                        "this token's scopes ({}) do not allow {} {route}, which needs {}: create a token with `clade tokens create --scope …`",
                        clade_core::Scope::join(&scopes),
                        request.method(),
                        if needed.is_empty() { "a scope no token has".to_owned() } else { needed.replace(',', " or ") },
                    ),
                )
                .into_response();
            }
            let credential = Credential(token.into());
            request.extensions_mut().insert(Caller(tenant, credential));
            next.run(request).await
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_required() {
        for good in ["Bearer t1", "bearer t1", "BEARER  t1 ", "BeArEr t1"] {
            assert_eq!(bearer_token(&HeaderValue::from_static(good)), Some("t1"), "{good}");
        }
        for bad in ["Basic dTpw", "Bearer", "Bearer  ", "Bearert1", "t1"] {
            assert_eq!(bearer_token(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }
}
