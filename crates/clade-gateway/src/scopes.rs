//! Which token scopes may call each `/v1` route: read from the route table
//! ([`crate::routes::OPERATIONS`]), checked on every request after the token is authenticated,
//! and read by the isolation matrix test. A route missing from the table is refused (fail
//! closed).

use clade_core::Scope;

/// (method, path as routed, scopes any of which may call it), for every `/v1` route.
pub fn routes() -> Vec<(&'static str, &'static str, &'static [Scope])> {
    crate::routes::OPERATIONS
        .iter()
        .filter(|op| op.path.starts_with("/v1/"))
        .map(|op| (op.method, op.path, op.scopes))
        .collect()
}

/// The scopes that may call `method path` (`path` as routed, with `{…}` parameters).
pub fn required(method: &str, path: &str) -> Option<&'static [Scope]> {
    crate::routes::OPERATIONS
        .iter()
        .find(|op| op.method == method && op.path == path && !op.scopes.is_empty())
        .map(|op| op.scopes)
}
