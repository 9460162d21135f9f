//! The web console's sign-in: a token exchanged for an `HttpOnly` cookie and the CSRF token
//! the console sends with every request that changes something.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /console/session`: sign in with a token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSignIn {
    /// A tenant's token (`clade tokens create`), or the operator's (an admin token of the
    /// default tenant). It stays on the server: the browser holds only the cookie.
    #[schemars(length(min = 1, max = 512))]
    pub token: String,
}

/// A console sign-in in force.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleSessionResponse {
    /// The tenant the token is of.
    pub tenant: String,
    /// What the token may do (`read`, `send`, `operate`, `approve`, `admin`).
    pub scopes: Vec<String>,
    /// Whether this is the operator (an admin token of the default tenant, for its whole
    /// tenant), who sees every tenant.
    pub operator: bool,
    /// Sent back as the `X-Clade-Csrf` header with every request that is not a read.
    pub csrf: String,
    /// When the sign-in ends (Unix milliseconds); sign in again after.
    pub expires_at: i64,
    /// The tenant the operator is looking into (`PUT /console/session/tenant`): every `/v1`
    /// request of this sign-in acts in it. Absent: the token's own tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewing: Option<String>,
}

/// `PUT /console/session/tenant`: the operator looks into a tenant, or (`null`) back into its
/// own.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleViewTenant {
    #[schemars(pattern(clade_core::HANDLE_PATTERN), length(max = 64))]
    pub tenant: Option<String>,
}

/// `GET /console/tenants`: every tenant, for the operator.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleTenantsResponse {
    pub items: Vec<ConsoleTenant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleTenant {
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}
