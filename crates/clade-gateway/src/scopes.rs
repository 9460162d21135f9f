//! Which token scopes may call each `/v1` route: one table, checked on every request after the
//! token is authenticated, and read by the isolation matrix test, which fails when a route has
//! no row. A route missing from the table is refused (fail closed).

use clade_core::Scope::{self, Admin, Approve, Operate, Read, Send};

/// (method, path as routed, scopes any of which may call it).
pub const ROUTES: &[(&str, &str, &[Scope])] = &[
    ("GET", "/v1/agents", &[Read]),
    ("POST", "/v1/agents", &[Admin]),
    ("GET", "/v1/agents/{handle}", &[Read]),
    ("DELETE", "/v1/agents/{handle}", &[Admin]),
    ("GET", "/v1/agents/{handle}/tools", &[Read]),
    ("POST", "/v1/agents/{handle}/tools/{name}/call", &[Operate]),
    ("GET", "/v1/approvals", &[Read, Approve]),
    ("POST", "/v1/approvals/{id}", &[Approve]),
    ("GET", "/v1/grants", &[Read]),
    ("POST", "/v1/grants", &[Admin]),
    ("DELETE", "/v1/grants/{id}", &[Admin]),
    ("GET", "/v1/audit", &[Admin]),
    ("GET", "/v1/usage", &[Read]),
    ("POST", "/v1/events", &[Send]),
    ("GET", "/v1/sessions", &[Read]),
    ("GET", "/v1/sessions/{id}", &[Read]),
    ("PATCH", "/v1/sessions/{id}", &[Operate]),
    ("GET", "/v1/sessions/{id}/turns", &[Read]),
    ("GET", "/v1/sessions/{id}/events", &[Read]),
    ("POST", "/v1/sessions/{id}/resume", &[Operate]),
    ("POST", "/v1/sessions/{id}/cancel", &[Operate]),
    ("GET", "/v1/ws", &[Read]),
];

/// The scopes that may call `method path` (`path` as routed, with `{…}` parameters).
pub fn required(method: &str, path: &str) -> Option<&'static [Scope]> {
    ROUTES.iter().find(|(m, p, _)| *m == method && *p == path).map(|(_, _, scopes)| *scopes)
}
