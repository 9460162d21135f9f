//! Tenants and agents.

use crate::id::{AgentId, TenantId};
use crate::name::{Handle, TemplateName};
use crate::time::Timestamp;

/// An isolation boundary: its agents, tokens, secrets and workspaces are invisible to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: Handle,
    pub created_at: Timestamp,
}

impl Tenant {
    /// The tenant that exists from the start and that the CLI uses when none is named.
    pub const DEFAULT_NAME: &'static str = "default";
}

/// An identity inside a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub handle: Handle,
    /// Shown to people; defaults to the handle.
    pub display_name: String,
    pub created_at: Timestamp,
    pub config: AgentConfig,
}

/// The per-agent settings stored with the agent's row.
///
/// Grows with later layers (model route, tools, limits); fields added later must have
/// defaults so older rows keep loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The persona template the workspace is seeded from when it is first used.
    pub template: TemplateName,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { template: TemplateName::builtin_default() }
    }
}

impl AgentConfig {
    pub const DEFAULT_TEMPLATE: &'static str = "default";
}

/// Display names are free text, but bounded and single-line.
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// Checks a display name; the error says what is wrong.
pub fn validate_display_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("display name must not be empty".into());
    }
    if name.chars().count() > MAX_DISPLAY_NAME_LEN {
        return Err(format!("display name is longer than {MAX_DISPLAY_NAME_LEN} characters"));
    }
    if name.chars().any(crate::name::is_spoofing_char) {
        return Err("display name must not contain control, bidirectional-override or zero-width characters (newlines included)".into());
    }
    Ok(())
}

/// An agent named across tenants, as configuration names one: `tenant/handle`, or a bare
/// `handle` for the default tenant's agent. A bare handle never means "this handle in every
/// tenant": settings, tools and routes reach exactly the agent named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentRef {
    pub tenant: Handle,
    pub handle: Handle,
}

impl AgentRef {
    /// Parses `tenant/handle` or `handle`; the error names the part that is wrong.
    pub fn parse(text: &str) -> Result<Self, crate::name::Error> {
        let (tenant, handle) = text.split_once('/').unwrap_or((Tenant::DEFAULT_NAME, text));
        Ok(Self { tenant: Handle::parse(tenant)?, handle: Handle::parse(handle)? })
    }

    /// Whether this names the agent `handle` of the tenant named `tenant`.
    pub fn is(&self, tenant: &str, handle: &str) -> bool {
        self.tenant.as_str() == tenant && self.handle.as_str() == handle
    }
}

impl std::fmt::Display for AgentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_reference_names_one_agent_of_one_tenant() {
        let bare = AgentRef::parse("ada").unwrap();
        assert!(bare.is("default", "ada") && !bare.is("acme", "ada"));
        assert_eq!(bare.to_string(), "default/ada");
        let qualified = AgentRef::parse("acme/ada").unwrap();
        assert!(qualified.is("acme", "ada") && !qualified.is("default", "ada"));
        for bad in ["", "/ada", "acme/", "acme/ada/x", "Acme/ada", "acme/*", "*"] {
            assert!(AgentRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
