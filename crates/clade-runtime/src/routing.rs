//! Which agent an event that names none goes to: the first binding of its tenant whose
//! platform, channel and actor patterns match its source, else the default agent if that is
//! its tenant's. Patterns are policy's globs (`clade_tools::pattern`): `*` matches any run of
//! characters, anywhere in a pattern. Agents are configuration's references (`tenant/handle`,
//! a bare handle in the default tenant), checked when the configuration was loaded.

use clade_config::Binding;
use clade_core::AgentRef;
use clade_store::Source;
use clade_tools::pattern::matches;

/// The handle of the agent of `tenant` that an event from `source` goes to, if any.
pub(crate) fn route(
    bindings: &[Binding],
    default_agent: Option<&str>,
    tenant: &str,
    source: &Source,
) -> Option<String> {
    let ours = |reference: &str| {
        AgentRef::parse(reference)
            .ok()
            .filter(|agent| agent.tenant.as_str() == tenant)
            .map(|agent| agent.handle.as_str().to_owned())
    };
    matching(bindings, source).find_map(|b| ours(&b.agent)).or_else(|| default_agent.and_then(ours))
}

/// The agent, of any tenant, that an event from `source` goes to when the source alone
/// decides (a chat platform's bot serving many tenants): the first binding whose patterns match
/// it, else the default agent.
pub(crate) fn route_any(
    bindings: &[Binding],
    default_agent: Option<&str>,
    source: &Source,
) -> Option<AgentRef> {
    matching(bindings, source)
        .find_map(|b| AgentRef::parse(&b.agent).ok())
        .or_else(|| default_agent.and_then(|agent| AgentRef::parse(agent).ok()))
}

/// The bindings whose platform, channel and actor patterns all match `source`, in order.
fn matching<'a>(bindings: &'a [Binding], source: &'a Source) -> impl Iterator<Item = &'a Binding> {
    bindings.iter().filter(|b| {
        matches(&b.platform, source.platform.as_str())
            && matches(&b.channel, &source.channel)
            && matches(&b.actor, &source.actor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(platform: &str, channel: &str, agent: &str) -> Binding {
        Binding {
            platform: platform.into(),
            channel: channel.into(),
            actor: "*".into(),
            agent: agent.into(),
            isolation: None,
        }
    }

    fn source(platform: &str, channel: &str) -> Source {
        Source { platform: platform.into(), channel: channel.into(), actor: "u".into() }
    }

    #[test]
    fn the_first_binding_of_the_events_tenant_wins() {
        let bindings = [
            binding("telegram", "*", "acme/support"),
            binding("telegram", "team-*-ops", "ops"),
            binding("telegram", "*", "ada"),
        ];
        let route = |tenant, s: &Source| route(&bindings, Some("ada"), tenant, s);
        assert_eq!(route("acme", &source("telegram", "1")).as_deref(), Some("support"));
        // The default tenant skips acme's binding; a `*` inside a pattern matches too.
        let ops = source("telegram", "team-red-ops");
        assert_eq!(route("default", &ops).as_deref(), Some("ops"));
        assert_eq!(route("default", &source("telegram", "team-red")).as_deref(), Some("ada"));
        // No binding of its own and a default agent of another tenant: nowhere.
        assert_eq!(route("globex", &source("telegram", "1")), None);
        assert_eq!(route("acme", &source("slack", "1")), None);
        assert_eq!(route("default", &source("slack", "1")).as_deref(), Some("ada"));
    }

    #[test]
    fn a_source_alone_picks_the_tenant_of_the_first_binding_it_matches() {
        let bindings = [
            binding("telegram", "support:-100*", "acme/support"),
            binding("telegram", "support:*", "globex/desk"),
        ];
        let route = |s: &Source| route_any(&bindings, Some("ada"), s).map(|a| a.to_string());
        assert_eq!(route(&source("telegram", "support:-1001")).as_deref(), Some("acme/support"));
        assert_eq!(route(&source("telegram", "support:42")).as_deref(), Some("globex/desk"));
        // Nothing matches: the default agent, in the default tenant.
        assert_eq!(route(&source("telegram", "other:42")).as_deref(), Some("default/ada"));
        assert_eq!(route_any(&bindings, None, &source("slack", "1")), None);
    }
}
