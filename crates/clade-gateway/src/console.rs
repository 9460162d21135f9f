//! The web console at `/console`: a page and its script and style, embedded in the binary (no
//! Node build, no files to install), and its sign-in.
//!
//! A person signs in with a token; the gateway keeps the token and gives the browser an
//! `HttpOnly`, `SameSite=Strict` cookie naming the sign-in, and a CSRF token. Everything the
//! console shows or does goes through the same `/v1` routes, scopes and tenant checks as any
//! client: the cookie stands for the token there ([`Logins::credential`]), a request that
//! changes something must carry the CSRF token, and one from another origin is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clade_protocol::console::{
    ConsoleSessionResponse, ConsoleSignIn, ConsoleTenant, ConsoleTenantsResponse, ConsoleViewTenant,
};

use crate::AppState;
use crate::agents::JsonBody;
use crate::error::{ApiError, Code};

/// The cookie naming a console sign-in.
pub(crate) const COOKIE: &str = "clade_console";
/// The header carrying the sign-in's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-clade-csrf";
/// How long a sign-in lasts.
const SIGNED_IN_FOR: Duration = Duration::from_secs(12 * 3600);
/// Sign-ins held at most (a flood of sign-ins cannot fill memory); past it new ones are
/// refused, never others' ended.
const MAX_LOGINS: usize = 10_000;
/// Sign-ins one tenant holds at most; past it its own oldest ends, so no tenant can take the
/// table from the others (tenants are the operator's to make).
const MAX_LOGINS_PER_TENANT: usize = 100;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// What the page may load and where it may connect: itself only, no inline script, and no
/// framing (clickjacking).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The console's sign-ins in force, in memory: a restart signs everyone out.
#[derive(Default)]
pub struct Logins {
    held: Mutex<HashMap<String, Login>>,
}

struct Login {
    tenant: clade_core::TenantId,
    token: Arc<str>,
    csrf: String,
    /// Unix milliseconds, by the store's clock.
    expires_at: i64,
    /// The tenant the operator looks into, by name.
    viewing: Option<String>,
}

/// What a console cookie stands for on a `/v1` request.
#[derive(Clone)]
pub(crate) struct Signed {
    pub(crate) token: Arc<str>,
    pub(crate) csrf: String,
    pub(crate) expires_at: i64,
    /// The tenant the operator looks into; `None`: the token's own.
    pub(crate) viewing: Option<String>,
}

impl Login {
    fn ended(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at
    }
}

impl Logins {
    /// A new sign-in of `tenant` with `token`: its id, CSRF token and end; `None` when the
    /// gateway holds as many as it takes.
    fn start(
        &self,
        tenant: clade_core::TenantId,
        token: Arc<str>,
        now_ms: i64,
    ) -> Option<(String, String, i64)> {
        let (id, csrf) = (secret(), secret());
        let expires_at = now_ms.saturating_add(SIGNED_IN_FOR.as_millis() as i64);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, login| !login.ended(now_ms));
        let ours = held.iter().filter(|(_, login)| login.tenant == tenant);
        if ours.clone().count() >= MAX_LOGINS_PER_TENANT
            && let Some(oldest) =
                ours.min_by_key(|(_, login)| login.expires_at).map(|(id, _)| id.clone())
        {
            held.remove(&oldest);
        }
        if held.len() >= MAX_LOGINS {
            return None;
        }
        let login = Login { tenant, token, csrf: csrf.clone(), expires_at, viewing: None };
        held.insert(id.clone(), login);
        Some((id, csrf, expires_at))
    }

    /// The sign-in `id` names, while it lasts.
    fn get(&self, id: &str, now_ms: i64) -> Option<Signed> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(id).filter(|login| !login.ended(now_ms)).map(|login| Signed {
            token: login.token.clone(),
            csrf: login.csrf.clone(),
            expires_at: login.expires_at,
            viewing: login.viewing.clone(),
        })
    }

    fn view(&self, id: &str, tenant: Option<String>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(login) = held.get_mut(id) {
            login.viewing = tenant;
        }
    }

    fn end(&self, id: &str) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// The token a request's console cookie stands for, when it carries one and no other
    /// credential: `None` without the cookie. Refused: a sign-in that ended, a request from
    /// another origin (or a WebSocket upgrade naming none), and one that changes something
    /// without the sign-in's CSRF token.
    pub(crate) fn credential(
        &self,
        method: &Method,
        headers: &HeaderMap,
        now_ms: i64,
    ) -> Option<Result<Signed, ApiError>> {
        let id = cookie(headers, COOKIE)?;
        Some(self.check(&id, method, headers, now_ms))
    }

    fn check(
        &self,
        id: &str,
        method: &Method,
        headers: &HeaderMap,
        now_ms: i64,
    ) -> Result<Signed, ApiError> {
        let Some(signed) = self.get(id, now_ms) else {
            return Err(ApiError::new(
                Code::InvalidToken,
                "the console's sign-in has ended (or the gateway restarted): sign in again at /console",
            ));
        };
        same_origin(headers)?;
        let reads = matches!(*method, Method::GET | Method::HEAD);
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !reads && !same_secret(sent, &signed.csrf) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "a request that changes something must carry the console's CSRF token in the {CSRF_HEADER} header (the sign-in's answer holds it): reload the console"
                ),
            ));
        }
        Ok(signed)
    }
}

/// `Ok` if the token is the operator's: an admin token of the default tenant, for its whole
/// tenant; else the route is not found, as the operator's routes answer anyone else.
fn operator(
    tenant: &clade_core::Tenant,
    access: &clade_store::TokenAccess,
) -> Result<(), ApiError> {
    crate::config::operator_only(tenant, &crate::auth::Reach::of(access.clone()))?;
    if crate::auth::scopes_of(access).contains(&clade_core::Scope::Admin) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::RouteNotFound,
            "no such route for this token: looking into other tenants is the operator's (an admin token of the default tenant)",
        ))
    }
}

/// The tenant a request of the operator's console sign-in acts in: `viewing`, if the token is
/// still the operator's (checked on every request) and the tenant still exists.
pub(crate) async fn viewed_tenant(
    state: &AppState,
    own: &clade_core::Tenant,
    access: &clade_store::TokenAccess,
    viewing: &str,
) -> Result<clade_core::Tenant, ApiError> {
    operator(own, access)?;
    match state.store.tenants().named(viewing).await {
        Ok(tenant) => Ok(tenant),
        Err(clade_store::Error::TenantNotFound(_)) => Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "the console looks into tenant {viewing:?}, which no longer exists: pick another"
            ),
        )),
        Err(err) => Err(err.into()),
    }
}

/// 32 bytes from the operating system's generator, as hex.
fn secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    // A secret: the thread's generator, seeded by the operating system, never a seeded jitter.
    #[allow(clippy::disallowed_methods)]
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares in time that does not depend on where the two differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` among the request's cookies.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// `Ok` unless the request names an origin other than the host it was sent to; a WebSocket
/// upgrade must name one (browsers always do, and no CORS guards a socket).
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |why: &str| {
        Err(ApiError::new(
            Code::Forbidden,
            format!("{why}: the console's cookie is taken only from the console's own pages"),
        ))
    };
    let Some(origin) = text(header::ORIGIN) else {
        if text(header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return refused("a WebSocket upgrade with no Origin");
        }
        return Ok(());
    };
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let hosts = [text(header::HOST), headers.get("x-forwarded-host").and_then(|v| v.to_str().ok())];
    if hosts.into_iter().flatten().any(|host| host.eq_ignore_ascii_case(authority)) {
        Ok(())
    } else {
        refused(&format!("a request from another origin ({origin})"))
    }
}

/// The headers every console page and asset carries.
fn hardened(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /console`: the page (it signs in, then shows what the token reaches).
pub(crate) async fn page() -> Response {
    hardened(INDEX_HTML.into_response(), "text/html; charset=utf-8")
}

/// `GET /console/assets/console.js`: the page's script.
pub(crate) async fn script() -> Response {
    // The replay page refuses a trace from a newer gateway, so it is told which it is.
    static SCRIPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        CONSOLE_JS.replace("__CLADE_VERSION__", env!("CARGO_PKG_VERSION"))
    });
    hardened(SCRIPT.as_str().into_response(), "text/javascript; charset=utf-8")
}

/// `GET /console/assets/console.css`: the page's style.
pub(crate) async fn style() -> Response {
    hardened(CONSOLE_CSS.into_response(), "text/css; charset=utf-8")
}

/// `POST /console/session`: signs in with a token, which must at least read.
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ConsoleSignIn>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let token: Arc<str> = body.token.trim().into();
    let (tenant, access) = match state.store.authenticate_scoped(&token).await {
        Ok(found) => found,
        Err(clade_store::Error::BadToken) => {
            return Err(ApiError::new(
                Code::InvalidToken,
                "not a token of this gateway, or a revoked one: paste a token from `clade tokens create` (the operator's is in the data dir's `token` file)",
            ));
        }
        Err(err) => return Err(err.into()),
    };
    if !clade_core::Scope::allows(&crate::auth::scopes_of(&access), &[clade_core::Scope::Read]) {
        return Err(ApiError::new(
            Code::Forbidden,
            "this token cannot read, and the console shows what a token reads: sign in with a token that has the read scope (`clade tokens create --scope read,…`)",
        ));
    }
    let now = state.store.clock().now().as_millis();
    let Some((id, csrf, expires_at)) = state.console.start(tenant.id, token.clone(), now) else {
        return Err(ApiError::new(
            Code::RateLimited,
            format!(
                "the gateway holds {MAX_LOGINS} console sign-ins, as many as it takes: sign out of one, or try again when one ends"
            ),
        ));
    };
    let answer = answer(&tenant, &access, Signed { token, csrf, expires_at, viewing: None });
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SIGNED_IN_FOR.as_secs(),
        if served_over_https(&headers) { "; Secure" } else { "" }
    );
    let mut response = (StatusCode::OK, Json(answer)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn answer(
    tenant: &clade_core::Tenant,
    access: &clade_store::TokenAccess,
    signed: Signed,
) -> ConsoleSessionResponse {
    let scopes = crate::auth::scopes_of(access);
    ConsoleSessionResponse {
        tenant: tenant.name.as_str().to_owned(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        operator: operator(tenant, access).is_ok(),
        csrf: signed.csrf,
        expires_at: signed.expires_at,
        viewing: signed.viewing,
    }
}

/// The sign-in the cookie names, its token checked again: a revoked token ends it.
async fn signed_in(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(String, Signed, clade_core::Tenant, clade_store::TokenAccess), ApiError> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Err(ApiError::new(Code::MissingToken, "not signed in: sign in with a token"));
    };
    let now = state.store.clock().now().as_millis();
    let signed = state.console.check(&id, method, headers, now)?;
    match state.store.authenticate_scoped(&signed.token).await {
        Ok((tenant, access)) => Ok((id, signed, tenant, access)),
        Err(err) => {
            state.console.end(&id);
            Err(err.into())
        }
    }
}

/// `PUT /console/session/tenant`: the operator looks into another tenant (or, `null`, its
/// own); to anyone else the route is not found.
pub(crate) async fn view_tenant(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ConsoleViewTenant>,
) -> Result<Json<ConsoleSessionResponse>, ApiError> {
    let (id, mut signed, tenant, access) = signed_in(&state, &method, &headers).await?;
    let viewing = match body.tenant {
        Some(name) if name != tenant.name.as_str() => {
            Some(viewed_tenant(&state, &tenant, &access, &name).await?.name.as_str().to_owned())
        }
        _ => None,
    };
    state.console.view(&id, viewing.clone());
    signed.viewing = viewing;
    Ok(Json(answer(&tenant, &access, signed)))
}

/// `GET /console/tenants`: every tenant, for the operator; to anyone else the route is not
/// found.
pub(crate) async fn tenants(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<ConsoleTenantsResponse>, ApiError> {
    let (_, _, tenant, access) = signed_in(&state, &method, &headers).await?;
    operator(&tenant, &access)?;
    let items = state.store.tenants().list().await?;
    Ok(Json(ConsoleTenantsResponse {
        items: items
            .into_iter()
            .map(|t| ConsoleTenant {
                name: t.name.as_str().to_owned(),
                created_at: t.created_at.as_millis(),
            })
            .collect(),
    }))
}

/// Whether the browser reached the gateway over HTTPS (through a proxy that says so): the
/// cookie is then never sent over plain HTTP.
fn served_over_https(headers: &HeaderMap) -> bool {
    let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || origin.is_some_and(|o| o.starts_with("https://"))
}

/// `GET /console/session`: the sign-in the cookie names, its token checked again (a revoked
/// token signs the console out).
pub(crate) async fn current(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, signed, tenant, access) = signed_in(&state, &method, &headers).await?;
    let mut response = Json(answer(&tenant, &access, signed)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /console/session`: signs out (with the CSRF token, so no other page can).
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(id) = cookie(&headers, COOKIE) else {
        return Err(ApiError::new(Code::MissingToken, "not signed in"));
    };
    let now = state.store.clock().now().as_millis();
    state.console.check(&id, &method, &headers, now)?;
    state.console.end(&id);
    let mut response = StatusCode::NO_CONTENT.into_response();
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&gone) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};

    use super::{Logins, cookie, same_origin};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; clade_console=abc ; b=2")]);
        assert_eq!(cookie(&h, "clade_console").as_deref(), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "clade_console=")]), "clade_console"), None);
        assert_eq!(cookie(&headers(&[("cookie", "xclade_console=1")]), "clade_console"), None);
    }

    #[test]
    fn another_origin_and_an_unnamed_socket_are_refused() {
        assert!(same_origin(&headers(&[("host", "gw:8080")])).is_ok());
        let ours = headers(&[("host", "gw:8080"), ("origin", "http://gw:8080")]);
        assert!(same_origin(&ours).is_ok());
        let theirs = headers(&[("host", "gw:8080"), ("origin", "http://gw:9999")]);
        assert!(same_origin(&theirs).is_err());
        let socket = headers(&[("host", "gw:8080"), ("upgrade", "websocket")]);
        assert!(same_origin(&socket).is_err());
    }

    #[test]
    fn one_tenant_cannot_end_anothers_sign_ins() {
        let logins = Logins::default();
        let at = clade_core::Timestamp::from_millis(0);
        let (ours, theirs) =
            (clade_core::TenantId::generate(at), clade_core::TenantId::generate(at));
        let (kept, _, _) = logins.start(ours, "ours".into(), 0).unwrap();
        let flood: Vec<String> = (0..super::MAX_LOGINS_PER_TENANT + 50)
            .map(|i| logins.start(theirs, "theirs".into(), i as i64).unwrap().0)
            .collect();
        assert!(logins.get(&kept, 1).is_some(), "the other tenant's sign-ins left ours alone");
        assert!(logins.get(&flood[0], 1).is_none(), "the flood ended its own oldest");
        assert!(logins.get(flood.last().unwrap(), 1).is_some());
    }

    #[test]
    fn a_change_needs_the_csrf_token_and_a_read_does_not() {
        let logins = Logins::default();
        let tenant = clade_core::TenantId::generate(clade_core::Timestamp::from_millis(0));
        let (id, csrf, _) = logins.start(tenant, "t".into(), 0).unwrap();
        let plain = headers(&[("host", "gw")]);
        assert!(logins.check(&id, &Method::GET, &plain, 1).is_ok());
        assert!(logins.check(&id, &Method::POST, &plain, 1).is_err());
        let mut with = plain.clone();
        with.insert("x-clade-csrf", HeaderValue::from_str(&csrf).unwrap());
        assert!(logins.check(&id, &Method::POST, &with, 1).is_ok());
        with.insert("x-clade-csrf", HeaderValue::from_static("0000"));
        assert!(logins.check(&id, &Method::DELETE, &with, 1).is_err());
        let ends = super::SIGNED_IN_FOR.as_millis() as i64;
        assert!(logins.check(&id, &Method::GET, &plain, ends - 1).is_ok());
        assert!(logins.check(&id, &Method::GET, &plain, ends).is_err(), "12 h later");
        logins.end(&id);
        assert!(logins.check(&id, &Method::GET, &plain, 1).is_err(), "signed out");
    }
}
