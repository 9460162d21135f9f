//! Bearer-token authentication: every `/v1` request names its tenant through its token.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clade_core::{AgentId, Tenant};

use crate::AppState;
use crate::error::{ApiError, Code};

/// The authenticated tenant, placed in request extensions for handlers, with the token it
/// proved itself with (streams check it again while they run) and the agents it may reach.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Tenant, pub(crate) Credential, pub(crate) Reach);

/// The agents a caller's token may reach: all of its tenant's, or only some (a token made
/// with `--only-agent`). What it cannot reach answers as if it did not exist, as another
/// tenant's would.
#[derive(Debug, Clone)]
pub(crate) struct Reach(Option<std::sync::Arc<[AgentId]>>);

impl Reach {
    pub(crate) fn of(access: clade_store::TokenAccess) -> Self {
        Self(access.agents.map(Into::into))
    }

    pub(crate) fn allows(&self, agent: AgentId) -> bool {
        self.0.as_ref().is_none_or(|agents| agents.contains(&agent))
    }

    /// Whether the token reaches every agent of its tenant.
    pub(crate) fn is_whole_tenant(&self) -> bool {
        self.0.is_none()
    }

    /// `Ok` if the token reaches `agent`; else not found, by the name the caller used.
    pub(crate) fn agent(&self, agent: &clade_core::Agent) -> Result<(), ApiError> {
        if self.allows(agent.id) {
            Ok(())
        } else {
            Err(clade_store::Error::AgentNotFound(agent.handle.to_string()).into())
        }
    }

    /// `Ok` if the token reaches the session's agent; else the session is not found.
    pub(crate) fn session(&self, session: &clade_store::SessionRow) -> Result<(), ApiError> {
        if self.allows(session.agent_id) {
            Ok(())
        } else {
            Err(clade_store::Error::SessionNotFound(session.id.to_string()).into())
        }
    }

    /// What a listing reads: the whole tenant in one read (`[None]`), or each agent the token
    /// reaches; `named` (a listing's agent filter) narrows it to that agent, which is not found
    /// when the token does not reach it.
    pub(crate) fn listing(
        &self,
        named: Option<&clade_core::Agent>,
    ) -> Result<Vec<Option<AgentId>>, ApiError> {
        match (named, &self.0) {
            (Some(agent), _) => self.agent(agent).map(|()| vec![Some(agent.id)]),
            (None, None) => Ok(vec![None]),
            (None, Some(agents)) => Ok(agents.iter().copied().map(Some).collect()),
        }
    }
}

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
        Ok((tenant, access)) => {
            let mut scopes = access.scopes.clone();
            // The store makes no such token; should one exist, admin (the whole tenant) is
            // not among what a token limited to some agents may do.
            if access.agents.is_some() {
                scopes.retain(|s| *s != clade_core::Scope::Admin);
            }
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
            request.extensions_mut().insert(Caller(tenant, credential, Reach::of(access)));
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
