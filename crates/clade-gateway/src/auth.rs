//! Authentication: every `/v1` request names its tenant through its bearer token, or, from an
//! operator paired with `clade pair cli`, through its signature (the key, the time and a
//! signature over the method, path, time and body digest, as the remote tool protocol's §8
//! signs; the operator's own token, never sent, says what it may do). A signed request is taken
//! once within 5 minutes of the gateway's clock, and one that sends a challenge gets the
//! gateway's signature of it back, so the CLI knows it reached the gateway it paired with.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clade_core::{AgentId, Tenant};

use clade_protocol::remote_tools::{
    CHALLENGE_HEADER, HOST_SIGNATURE_HEADER, PEER_HEADER, PEER_SIGNATURE_HEADER, PEER_TIME_HEADER,
};

use crate::AppState;
use crate::error::{ApiError, Code};

/// The authenticated tenant, placed in request extensions for handlers, with the token it
/// proved itself with (streams check it again while they run) and the agents it may reach.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Tenant, pub(crate) Credential, pub(crate) Reach);

/// The scopes the caller's token holds, for the routes that check more than the route's own
/// scopes (MCP's methods, each of which needs its own).
#[derive(Debug, Clone)]
pub(crate) struct Granted(pub(crate) std::sync::Arc<[clade_core::Scope]>);

impl Granted {
    pub(crate) fn allows(&self, needed: &[clade_core::Scope]) -> bool {
        clade_core::Scope::allows(&self.0, needed)
    }
}

/// The agents a caller's token may reach: all of its tenant's, or only some (a token made
/// with `--only-agent`), and for an operator paired `leased`, what its live leases name, down
/// to single sessions. What it cannot reach answers as if it did not exist, as another
/// tenant's would.
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    agents: Option<std::sync::Arc<[AgentId]>>,
    /// Sessions reached beyond `agents` (a leased operator's session leases).
    sessions: std::sync::Arc<[clade_store::LeasedSession]>,
    /// The leased operator's name.
    leased: Option<std::sync::Arc<str>>,
}

impl Reach {
    pub(crate) fn of(access: clade_store::TokenAccess) -> Self {
        Self {
            agents: access.agents.map(Into::into),
            sessions: access.sessions.into(),
            leased: access.leased.map(Into::into),
        }
    }

    /// Whether the caller reaches `agent` as a whole (all its sessions).
    pub(crate) fn allows(&self, agent: AgentId) -> bool {
        self.agents.as_ref().is_none_or(|agents| agents.contains(&agent))
    }

    /// Whether the caller reaches the session `id` of `agent`.
    pub(crate) fn allows_session(&self, id: clade_core::SessionId, agent: AgentId) -> bool {
        self.allows(agent) || self.sessions.iter().any(|s| s.id == id)
    }

    /// The session an event of `agent` from `source` goes to, if the caller reaches it only
    /// through a session lease.
    pub(crate) fn leased_session_for(
        &self,
        agent: AgentId,
        source: &clade_store::Source,
    ) -> Option<clade_core::SessionId> {
        self.sessions.iter().find(|s| s.agent_id == agent && s.source == *source).map(|s| s.id)
    }

    /// Whether the token reaches every agent of its tenant.
    pub(crate) fn is_whole_tenant(&self) -> bool {
        self.agents.is_none()
    }

    /// Whether what the caller reaches comes from leases (an operator paired `leased`).
    pub(crate) fn is_leased(&self) -> bool {
        self.leased.is_some()
    }

    /// The name of the leased operator calling, if it is one.
    pub(crate) fn leased_operator(&self) -> Option<&str> {
        self.leased.as_deref()
    }

    /// Whether this reach still covers all of `before`: a stream opened under `before` stays
    /// open while it does (a leased operator's lease may have ended meanwhile).
    pub(crate) fn covers(&self, before: &Reach) -> bool {
        let agents = match (&self.agents, &before.agents) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(now), Some(then)) => then.iter().all(|a| now.contains(a)),
        };
        agents
            && before
                .sessions
                .iter()
                .all(|s| self.allows(s.agent_id) || self.sessions.iter().any(|now| now.id == s.id))
    }

    /// `Ok` if the token reaches `agent`; else not found, by the name the caller used.
    pub(crate) fn agent(&self, agent: &clade_core::Agent) -> Result<(), ApiError> {
        if self.allows(agent.id) {
            Ok(())
        } else {
            Err(clade_store::Error::AgentNotFound(agent.handle.to_string()).into())
        }
    }

    /// `Ok` if the token reaches the session; else the session is not found.
    pub(crate) fn session(&self, session: &clade_store::SessionRow) -> Result<(), ApiError> {
        if self.allows_session(session.id, session.agent_id) {
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
        match (named, &self.agents) {
            (Some(agent), _) => self.agent(agent).map(|()| vec![Some(agent.id)]),
            (None, None) => Ok(vec![None]),
            (None, Some(agents)) => Ok(agents.iter().copied().map(Some).collect()),
        }
    }
}

/// What a request authenticated with: a bearer token, a paired operator's key, or the
/// operator's token acting in another tenant (its console looking into it).
#[derive(Clone)]
pub(crate) enum Credential {
    Token(std::sync::Arc<str>),
    Peer(std::sync::Arc<str>),
    Operator(std::sync::Arc<str>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    /// A stable stand-in for the credential, for counting what it holds open without keeping it.
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match self {
            Self::Token(token) => ("token", token.as_ref()).hash(&mut hasher),
            Self::Peer(peer) => ("peer", peer.as_ref()).hash(&mut hasher),
            Self::Operator(token) => ("operator", token.as_ref()).hash(&mut hasher),
        }
        hasher.finish()
    }

    /// Whether the token (or the operator's pairing) still authenticates the same tenant, and
    /// reaches all it reached (`reach`): a long-lived stream asks this every [`RECHECK_EVERY`]
    /// and closes once the token is revoked, the operator unpaired or its lease ended, or its
    /// tenant deleted.
    pub(crate) async fn still_valid(
        &self,
        store: &clade_store::Store,
        tenant: &Tenant,
        reach: &Reach,
    ) -> bool {
        let current = match self {
            Credential::Token(token) => store.authenticate_scoped(token).await,
            Credential::Peer(key) => store.peers().authenticate(key).await,
            Credential::Operator(token) => {
                return operator_still_in(store, token, tenant).await;
            }
        };
        match current {
            Ok((current, access)) => current.id == tenant.id && Reach::of(access).covers(reach),
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

/// Whether `token` is still the operator's and `tenant` (which its console looks into) still
/// exists; a store hiccup keeps the stream.
async fn operator_still_in(store: &clade_store::Store, token: &str, tenant: &Tenant) -> bool {
    let own = match store.authenticate_scoped(token).await {
        Ok((own, access)) => {
            crate::config::operator_only(&own, &Reach::of(access.clone())).is_ok()
                && scopes_of(&access).contains(&clade_core::Scope::Admin)
        }
        Err(clade_store::Error::BadToken | clade_store::Error::TenantNotFound(_)) => false,
        Err(_) => true,
    };
    own && !matches!(
        store.tenants().by_id(tenant.id).await,
        Err(clade_store::Error::TenantNotFound(_))
    )
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
    request: Request,
    next: Next,
) -> Response {
    if request.headers().contains_key(PEER_HEADER) {
        return signed_by_peer(state, request, next).await;
    }
    // The web console's cookie stands for its sign-in's token, when no other credential is
    // sent (`console.rs`: same origin, CSRF token on changes).
    let console = match request.headers().get(AUTHORIZATION) {
        None => {
            let now = state.store.clock().now().as_millis();
            state.console.credential(request.method(), request.headers(), now)
        }
        Some(_) => None,
    };
    let (token, viewing) = match console {
        Some(Ok(signed)) => (signed.token, signed.viewing),
        Some(Err(err)) => return err.into_response(),
        None => match token_of(request.headers().get(AUTHORIZATION)) {
            Ok(token) => (token, None),
            Err(err) => return err.into_response(),
        },
    };
    let (tenant, access) = match state.store.authenticate_scoped(&token).await {
        Ok(found) => found,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let (tenant, credential) = match viewing {
        None => (tenant, Credential::Token(token)),
        // The operator's console looking into another tenant: the token is checked to be the
        // operator's on every request, and the tenant to exist.
        Some(name) => match crate::console::viewed_tenant(&state, &tenant, &access, &name).await {
            Ok(viewed) => (viewed, Credential::Operator(token)),
            Err(err) => return err.into_response(),
        },
    };
    admit(request, next, (tenant, &state.limits), access, credential).await
}

/// The bearer token an `Authorization` header carries, or the error naming what is wrong.
fn token_of(header: Option<&axum::http::HeaderValue>) -> Result<std::sync::Arc<str>, ApiError> {
    let Some(header) = header else {
        return Err(ApiError::new(
            Code::MissingToken,
            "missing Authorization header: send `Authorization: Bearer <token>` (create one with `clade tokens create`)",
        ));
    };
    bearer_token(header).map(std::sync::Arc::<str>::from).ok_or_else(|| {
        ApiError::new(
            Code::InvalidToken,
            "the Authorization header is not `Bearer <token>`: send the token after the word Bearer and one space",
        )
    })
}

/// The caller a bearer token proves, if its scopes allow one of `needed`; `what` names the
/// call in a refusal. The AgentHub's gRPC calls are checked by this, each needing the scopes
/// of the `/v1` route it stands for, as [`require_token`] checks the routes.
pub(crate) async fn bearer_caller(
    state: &AppState,
    header: Option<&axum::http::HeaderValue>,
    needed: Option<&[clade_core::Scope]>,
    what: &str,
) -> Result<Caller, ApiError> {
    let token = token_of(header)?;
    let (tenant, access) = state.store.authenticate_scoped(&token).await?;
    let scopes = scopes_of(&access);
    permitted(&scopes, needed, what)?;
    Ok(Caller(tenant, Credential::Token(token), Reach::of(access)))
}

/// Whether `header` carries the operator's token (an admin token of the default tenant, for
/// its whole tenant): what the public health routes show in detail only to the operator.
pub(crate) async fn is_operator(
    state: &AppState,
    header: Option<&axum::http::HeaderValue>,
) -> bool {
    let admin = [clade_core::Scope::Admin];
    match bearer_caller(state, header, Some(&admin), "the readiness details").await {
        Ok(Caller(tenant, _, reach)) => crate::config::operator_only(&tenant, &reach).is_ok(),
        Err(_) => false,
    }
}

/// The scopes a token's access gives.
pub(crate) fn scopes_of(access: &clade_store::TokenAccess) -> Vec<clade_core::Scope> {
    let mut scopes = access.scopes.clone();
    // The store makes no such token; should one exist, admin (the whole tenant) is not among
    // what a token limited to some agents may do.
    if access.agents.is_some() {
        scopes.retain(|s| *s != clade_core::Scope::Admin);
    }
    scopes
}

/// `Ok` if `scopes` give one of `needed` (none: nothing does), else `forbidden` naming `what`.
fn permitted(
    scopes: &[clade_core::Scope],
    needed: Option<&[clade_core::Scope]>,
    what: &str,
) -> Result<(), ApiError> {
    if needed.is_some_and(|needed| clade_core::Scope::allows(scopes, needed)) {
        return Ok(());
    }
    let needed = needed.map(clade_core::Scope::join).unwrap_or_default();
    Err(ApiError::new(
        Code::Forbidden,
        format!(
            "this token's scopes ({}) do not allow {what}, which needs {}: create a token with `clade tokens create --scope …`",
            clade_core::Scope::join(scopes),
            if needed.is_empty() {
                "a scope no token has".to_owned()
            } else {
                needed.replace(',', " or ")
            },
        ),
    ))
}

/// Lets an authenticated request through if its scopes allow the route.
async fn admit(
    mut request: Request,
    next: Next,
    (tenant, limits): (Tenant, &crate::quotas::TenantLimits),
    access: clade_store::TokenAccess,
    credential: Credential,
) -> Response {
    let scopes = scopes_of(&access);
    tracing::Span::current().record("tenant", tenant.name.as_str());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let needed = crate::scopes::required(request.method().as_str(), &route);
    let what = format!("{} {route}", request.method());
    if let Err(refused) = permitted(&scopes, needed, &what) {
        return refused.into_response();
    }
    // Its connection keeps its place when strangers fill the gateway's, within its tenant's
    // share.
    if let Some(trust) = request.extensions().get::<crate::server::ConnectionTrust>()
        && let Err(refused) = limits.trust_connection(trust, &tenant, &credential)
    {
        return refused.into_response();
    }
    request.extensions_mut().insert(Granted(scopes.into()));
    request.extensions_mut().insert(Caller(tenant, credential, Reach::of(access)));
    next.run(request).await
}

/// How far a signed request's time may be from the gateway's clock.
const SIGNED_WITHIN_MS: i64 = 5 * 60 * 1000;
/// The most signatures remembered to refuse a replay.
const REMEMBERED_SIGNATURES: usize = 100_000;

/// The signatures taken lately, and when each was made, oldest first.
type Seen = (std::collections::HashSet<String>, std::collections::VecDeque<(i64, String)>);

/// What checks paired operators' signed requests: the gateway's key (to answer a challenge),
/// the signatures taken lately (a replay is refused), and the largest body read.
pub struct PeerAuth {
    identity: std::sync::Arc<clade_tools::remote::identity::Identity>,
    seen: std::sync::Mutex<Seen>,
    max_body_bytes: usize,
}

impl PeerAuth {
    pub fn new(
        identity: std::sync::Arc<clade_tools::remote::identity::Identity>,
        max_body_bytes: usize,
    ) -> Self {
        Self { identity, seen: std::sync::Mutex::default(), max_body_bytes }
    }

    /// Remembers `signature` made at `time`; false if it was taken already.
    fn first_use(&self, signature: &str, time: i64, now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *seen;
        // A signature older than twice the window can no longer pass the time check.
        while order.front().is_some_and(|(at, _)| *at < now - 2 * SIGNED_WITHIN_MS)
            || order.len() >= REMEMBERED_SIGNATURES
        {
            if let Some((_, old)) = order.pop_front() {
                set.remove(&old);
            }
        }
        if !set.insert(signature.to_owned()) {
            return false;
        }
        order.push_back((time, signature.to_owned()));
        true
    }
}

fn refused(message: impl Into<String>) -> Response {
    ApiError::new(Code::InvalidToken, message).into_response()
}

/// Why a signed request was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadSignature {
    #[error("a signed request needs {PEER_HEADER}, {PEER_TIME_HEADER} and {PEER_SIGNATURE_HEADER}")]
    Headers,
    #[error("{PEER_TIME_HEADER} must be Unix milliseconds")]
    Time,
    #[error(
        "the request was signed {} s from the gateway's clock; at most {} s are taken (set the clock right)",
        .off_ms / 1000,
        SIGNED_WITHIN_MS / 1000
    )]
    Skewed { off_ms: i64 },
    #[error("this gateway takes no signed requests")]
    NotTaken,
    #[error("the request's signature is not its key's")]
    NotItsKey,
    #[error("this signed request was taken already: sign each request anew")]
    Replayed,
}

/// The key, time and signature a signed request's headers carry, its time checked against the
/// gateway's clock (`now`, Unix milliseconds).
fn signature_of(
    headers: &axum::http::HeaderMap,
    now: i64,
) -> Result<(String, i64, String), BadSignature> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(key), Some(time), Some(signature)) =
        (text(PEER_HEADER), text(PEER_TIME_HEADER), text(PEER_SIGNATURE_HEADER))
    else {
        return Err(BadSignature::Headers);
    };
    let Ok(time) = time.parse::<i64>() else {
        return Err(BadSignature::Time);
    };
    if (now - time).abs() > SIGNED_WITHIN_MS {
        return Err(BadSignature::Skewed { off_ms: (now - time).abs() });
    }
    Ok((key, time, signature))
}

/// Whether a request carries a paired component's signature (rather than a secret).
pub(crate) fn is_signed(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(PEER_HEADER)
}

/// Checks a signed request to a channel's route (`route`: its path and query, as sent): the
/// signature over method, route, time and body, made within 5 minutes and not taken before.
/// The signer's key; who it is paired as is the caller's to check.
pub(crate) fn verify_signed(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    method: &str,
    route: &str,
    body: &[u8],
) -> Result<String, BadSignature> {
    use clade_tools::remote::identity;
    let Some(auth) = state.peers.as_ref() else {
        return Err(BadSignature::NotTaken);
    };
    let now = state.store.clock().now().as_millis();
    let (key, time, signature) = signature_of(headers, now)?;
    let signed = identity::request_text(method, route, time, body);
    if !identity::verify(&key, &[identity::REQUEST, &signed], &signature) {
        return Err(BadSignature::NotItsKey);
    }
    if !auth.first_use(&signature, time, now) {
        return Err(BadSignature::Replayed);
    }
    Ok(key)
}

/// A request signed with a paired operator's key.
async fn signed_by_peer(state: AppState, request: Request, next: Next) -> Response {
    use clade_tools::remote::identity;
    let Some(auth) = state.peers.clone() else {
        return refused("this gateway takes no signed requests: send a bearer token");
    };
    let headers = request.headers().clone();
    let now = state.store.clock().now().as_millis();
    let (key, time, signature) = match signature_of(&headers, now) {
        Ok(signed) => signed,
        Err(why) => return refused(why.to_string()),
    };
    let target = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|uri| uri.0.clone())
        .unwrap_or_else(|| request.uri().clone());
    let route = target.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let (parts, body) = request.into_parts();
    // Capped at the server's body limit (`server.max_body_bytes`), as every other route's.
    #[allow(clippy::disallowed_methods)]
    let read = axum::body::to_bytes(body, auth.max_body_bytes).await;
    let Ok(body) = read else {
        return ApiError::new(Code::PayloadTooLarge, "the body is over the server's limit")
            .into_response();
    };
    let signed = identity::request_text(&method, &route, time, &body);
    if !identity::verify(&key, &[identity::REQUEST, &signed], &signature) {
        return refused("the request's signature is not its key's");
    }
    // From here on the answer, refusals included, proves the gateway's key: the CLI can tell
    // "this gateway unpaired me" from "this is not my gateway".
    let mut response = if !auth.first_use(&signature, time, now) {
        refused("this signed request was taken already: sign each request anew")
    } else {
        match state.store.peers().authenticate(&key).await {
            Ok((tenant, access)) => {
                let request = Request::from_parts(parts, axum::body::Body::from(body));
                admit(request, next, (tenant, &state.limits), access, Credential::Peer(key.into()))
                    .await
            }
            Err(clade_store::Error::BadToken) => refused(format!(
                "the key {}… is not paired with this gateway as an operator (or was unpaired): pair it with `clade pair cli`",
                identity::fingerprint(&key)
            )),
            Err(err) => ApiError::from(err).into_response(),
        }
    };
    prove(&state, &headers, &mut response);
    response
}

/// Signs the request's challenge, if it sent one, into the answer: the caller can tell this
/// gateway (the key it paired with) from any other.
pub(crate) fn prove(state: &AppState, headers: &axum::http::HeaderMap, response: &mut Response) {
    use clade_tools::remote::identity;
    let Some(auth) = state.peers.as_ref() else { return };
    let Some(challenge) = headers.get(CHALLENGE_HEADER).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let proof = auth.identity.sign(&[identity::HOST_PROOF, challenge.as_bytes()]);
    if let Ok(value) = axum::http::HeaderValue::from_str(&proof) {
        response.headers_mut().insert(HOST_SIGNATURE_HEADER, value);
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
