//! Deciding one call: allow, ask or deny, from the operator's rules and the agent's grants.
//!
//! Precedence: an explicit `deny` always wins. Otherwise the most specific matching rule (most
//! literal characters in tool and resource patterns) decides between `allow` and `ask`, `ask`
//! winning a tie. With no matching rule, tools that touch the host are denied and others
//! allowed. So "approve always" (an exact allow) overrides a broad `ask`, and nothing
//! overrides a `deny`.

use clade_config::{Constraints, PolicyEffect, PolicyRule};

use crate::pattern;

/// A rule with where it came from, for the decision's reason and the audit log.
#[derive(Debug, Clone)]
pub struct SourcedRule {
    pub rule: PolicyRule,
    /// `config` or `grant <id>`.
    pub source: String,
}

/// What the policy said about one call, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: PolicyEffect,
    pub reason: String,
    /// Capabilities of the deciding allow rules (their union), when allowed.
    pub constraints: Constraints,
}

/// Decides a call of `tool` on `resource`.
pub fn decide(rules: &[SourcedRule], tool: &str, resource: &str, host_access: bool) -> Decision {
    let matching: Vec<&SourcedRule> = rules
        .iter()
        .filter(|r| {
            pattern::matches(&r.rule.tool, tool) && pattern::matches(&r.rule.resource, resource)
        })
        .collect();
    if let Some(deny) = matching.iter().find(|r| r.rule.effect == PolicyEffect::Deny) {
        return Decision {
            effect: PolicyEffect::Deny,
            reason: format!(
                "denied by {} ({} on {})",
                deny.source, deny.rule.tool, deny.rule.resource
            ),
            constraints: Constraints::default(),
        };
    }
    let specificity = |r: &SourcedRule| {
        pattern::specificity(&r.rule.tool) + pattern::specificity(&r.rule.resource)
    };
    let best = matching.iter().map(|r| (specificity(r), r.rule.effect == PolicyEffect::Ask)).max();
    match best {
        None if host_access => Decision {
            effect: PolicyEffect::Deny,
            reason: format!(
                "{tool} touches the host and no rule allows it on {resource:?}; an operator can allow it with `clade grants add --agent <handle> --tool {tool}`"
            ),
            constraints: Constraints::default(),
        },
        None => Decision {
            effect: PolicyEffect::Allow,
            reason: format!("{tool} does not touch the host"),
            constraints: Constraints::default(),
        },
        Some((top, true)) => {
            let ask = matching
                .iter()
                .find(|r| specificity(r) == top && r.rule.effect == PolicyEffect::Ask)
                .map(|r| r.source.clone())
                .unwrap_or_default();
            Decision {
                effect: PolicyEffect::Ask,
                reason: format!("{ask} asks for approval"),
                constraints: Constraints::default(),
            }
        }
        Some((top, false)) => {
            let deciding: Vec<&&SourcedRule> =
                matching.iter().filter(|r| specificity(r) == top).collect();
            let mut constraints = Constraints::default();
            for rule in &deciding {
                let c = &rule.rule.constraints;
                constraints.network |= c.network;
                constraints.private_network |= c.private_network;
                for name in &c.env {
                    if !constraints.env.contains(name) {
                        constraints.env.push(name.clone());
                    }
                }
            }
            let sources: Vec<&str> = deciding.iter().map(|r| r.source.as_str()).collect();
            Decision {
                effect: PolicyEffect::Allow,
                reason: format!("allowed by {}", sources.join(", ")),
                constraints,
            }
        }
    }
}

/// Why a delegated rule is not a narrowing of its parent, if it is not.
pub fn narrowing_error(parent: &PolicyRule, child: &PolicyRule) -> Option<String> {
    if parent.effect != PolicyEffect::Allow || child.effect != PolicyEffect::Allow {
        return Some("only allow grants can be delegated".into());
    }
    if !pattern::covers(&parent.tool, &child.tool) {
        return Some(format!(
            "tool pattern {:?} is wider than the parent's {:?}",
            child.tool, parent.tool
        ));
    }
    if !pattern::covers(&parent.resource, &child.resource) {
        return Some(format!(
            "resource pattern {:?} is wider than the parent's {:?}",
            child.resource, parent.resource
        ));
    }
    let (p, c) = (&parent.constraints, &child.constraints);
    if c.network && !p.network {
        return Some("network is not granted to the parent".into());
    }
    if c.private_network && !p.private_network {
        return Some("private_network is not granted to the parent".into());
    }
    if let Some(name) = c.env.iter().find(|n| !p.env.contains(n)) {
        return Some(format!("secret {name} is not granted to the parent"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(effect: PolicyEffect, tool: &str, resource: &str) -> SourcedRule {
        SourcedRule {
            rule: PolicyRule {
                effect,
                tool: tool.into(),
                resource: resource.into(),
                constraints: Constraints::default(),
            },
            source: format!("{}:{tool}:{resource}", effect.as_str()),
        }
    }

    #[test]
    fn host_tools_are_denied_without_a_rule() {
        assert_eq!(decide(&[], "shell.exec", "ls", true).effect, PolicyEffect::Deny);
        assert_eq!(decide(&[], "time.now", "", false).effect, PolicyEffect::Allow);
    }

    #[test]
    fn deny_wins_then_specificity_then_ask() {
        use PolicyEffect::*;
        let rules = vec![rule(Allow, "shell.exec", "*"), rule(Ask, "shell.exec", "rm *")];
        assert_eq!(decide(&rules, "shell.exec", "ls -la", true).effect, Allow);
        assert_eq!(decide(&rules, "shell.exec", "rm -rf x", true).effect, Ask);
        let mut always = rules.clone();
        always.push(rule(Allow, "shell.exec", "rm -rf x"));
        assert_eq!(decide(&always, "shell.exec", "rm -rf x", true).effect, Allow);
        always.push(rule(Deny, "*", "*"));
        assert_eq!(decide(&always, "shell.exec", "rm -rf x", true).effect, Deny);
        let tie = vec![rule(Allow, "fs.*", "*"), rule(Ask, "fs.*", "*")];
        assert_eq!(decide(&tie, "fs.read", "a", true).effect, Ask);
    }

    #[test]
    fn delegation_only_narrows() {
        use PolicyEffect::*;
        let parent = rule(Allow, "fs.*", "notes/*").rule;
        assert_eq!(narrowing_error(&parent, &rule(Allow, "fs.read", "notes/a*").rule), None);
        assert!(narrowing_error(&parent, &rule(Allow, "*", "notes/*").rule).is_some());
        assert!(narrowing_error(&parent, &rule(Allow, "fs.read", "*").rule).is_some());
        let mut wider = rule(Allow, "fs.read", "notes/x").rule;
        wider.constraints.network = true;
        assert!(narrowing_error(&parent, &wider).is_some());
    }
}
