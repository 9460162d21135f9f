//! Deciding one call: allow, ask or deny, from the operator's rules and the agent's grants.
//!
//! Precedence: an explicit `deny` always wins. Otherwise the most specific matching rule (most
//! literal characters in tool and resource patterns) decides between `allow` and `ask`, `ask`
//! winning a tie. With no matching rule, tools that touch the host are denied and others
//! allowed. So "approve always" (an exact allow) overrides a broad `ask`, and nothing
//! overrides a `deny`.

use clade_config::{Constraints, GrantCeiling, PolicyEffect, PolicyRule};

use crate::argv::ArgvPattern;
use crate::pattern;

/// Tools whose rules' resources are argv patterns ([`crate::argv`]), not globs on a line.
pub const ARGV_TOOLS: &[&str] = &["shell.exec"];

/// Whether rules for `tool` (a name, or a pattern of names) may be read as argv patterns.
pub fn may_be_argv_tool(tool_pattern: &str) -> bool {
    ARGV_TOOLS.iter().any(|t| pattern::matches(tool_pattern, t))
}

/// What a call touches, as its tool's rules read it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A path, a host, a URL: rules match it with globs.
    Text(&'a str),
    /// A command's argument list: rules match it as argv patterns.
    Argv(&'a [String]),
}

fn resource_matches(rule: &PolicyRule, target: Target<'_>) -> bool {
    match target {
        Target::Text(text) => pattern::matches(&rule.resource, text),
        Target::Argv(argv) => match ArgvPattern::parse(&rule.resource) {
            // An allow matches exactly what it names; a deny or ask also catches other
            // spellings of what it names (see `argv`).
            Ok(pattern) if rule.effect == PolicyEffect::Allow => pattern.matches(argv),
            Ok(pattern) => pattern.catches(argv),
            // A pattern that cannot be read never allows anything, and a deny still denies.
            Err(_) => rule.effect == PolicyEffect::Deny,
        },
    }
}

fn resource_specificity(rule: &PolicyRule, target: Target<'_>) -> usize {
    match target {
        Target::Text(_) => pattern::specificity(&rule.resource),
        Target::Argv(_) => ArgvPattern::parse(&rule.resource).map_or(0, |p| p.specificity()),
    }
}

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

/// Decides a call of `tool` on `target`.
pub fn decide(
    rules: &[SourcedRule],
    tool: &str,
    target: Target<'_>,
    needs_grant: bool,
) -> Decision {
    let resource = match target {
        Target::Text(text) => text.to_owned(),
        Target::Argv(argv) => crate::argv::quote(argv),
    };
    let matching: Vec<&SourcedRule> = rules
        .iter()
        .filter(|r| pattern::matches(&r.rule.tool, tool) && resource_matches(&r.rule, target))
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
        pattern::specificity(&r.rule.tool) + resource_specificity(&r.rule, target)
    };
    let best = matching.iter().map(|r| (specificity(r), r.rule.effect == PolicyEffect::Ask)).max();
    match best {
        None if needs_grant => Decision {
            effect: PolicyEffect::Deny,
            reason: format!(
                "{tool} needs a rule or grant that allows it, and none allows it on {resource:?}; an operator can allow it with a grant of {tool} to this agent"
            ),
            constraints: Constraints::default(),
        },
        None => Decision {
            effect: PolicyEffect::Allow,
            reason: format!("{tool} needs no grant"),
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
            // Hosts of the deciding rules that grant the network, unless one grants any host.
            let mut any_host = false;
            for rule in &deciding {
                let c = &rule.rule.constraints;
                constraints.network |= c.network;
                constraints.private_network |= c.private_network;
                if c.network {
                    any_host |= c.hosts.is_empty();
                    constraints.hosts.extend(c.hosts.iter().cloned());
                }
                for name in &c.env {
                    if !constraints.env.contains(name) {
                        constraints.env.push(name.clone());
                    }
                }
            }
            if any_host {
                constraints.hosts.clear();
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

/// Why a tenant may not give itself `rule`, if it may not: an `allow` beyond the operator's
/// `ceiling` for that tenant. Deny and ask rules only narrow, and are always within it.
pub fn ceiling_error(ceiling: &GrantCeiling, rule: &PolicyRule) -> Option<String> {
    // A deny only narrows. An ask is an allow with a question, and where nothing else matches
    // it turns the default deny into one: bounded like an allow.
    if rule.effect == PolicyEffect::Deny {
        return None;
    }
    if !ceiling.tools.iter().any(|allowed| pattern::covers(allowed, &rule.tool)) {
        return Some(format!(
            "tool {:?} is not within the tools it may grant ({})",
            rule.tool,
            if ceiling.tools.is_empty() { "none".to_owned() } else { ceiling.tools.join(", ") }
        ));
    }
    let c = &rule.constraints;
    if c.network && !ceiling.network {
        return Some("it may not grant network".into());
    }
    if c.private_network && !ceiling.private_network {
        return Some("it may not grant private_network".into());
    }
    if !c.env.is_empty() && !ceiling.secrets {
        return Some("it may not pass secrets into commands (env)".into());
    }
    None
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
    // A child naming exactly an argv tool is compared as argv patterns only; one whose tool
    // pattern may reach other tools as well must narrow both ways.
    let argv_only = ARGV_TOOLS.contains(&child.tool.as_str());
    let text_ok = argv_only || pattern::covers(&parent.resource, &child.resource);
    let argv_ok = !may_be_argv_tool(&child.tool)
        || match (ArgvPattern::parse(&parent.resource), ArgvPattern::parse(&child.resource)) {
            (Ok(parent), Ok(child)) => parent.covers(&child),
            _ => false,
        };
    if !(text_ok && argv_ok) {
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
    if !p.hosts.is_empty() {
        if c.hosts.is_empty() {
            return Some(format!("the parent reaches only {:?}; name hosts within them", p.hosts));
        }
        if let Some(host) =
            c.hosts.iter().find(|h| !p.hosts.iter().any(|ph| pattern::covers(ph, h)))
        {
            return Some(format!("host {host:?} is not within the parent's {:?}", p.hosts));
        }
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

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    fn shell(rules: &[SourcedRule], line: &str) -> PolicyEffect {
        decide(rules, "shell.exec", Target::Argv(&argv(line)), true).effect
    }

    /// The option-spelling corpus: with `rm`, `cp`, `chmod`, `chown` and an unknown program
    /// allowed and their dangerous options denied (each deny written one way), every other
    /// spelling of a denied option is denied too; the allowed forms stay allowed.
    #[test]
    fn a_deny_holds_however_its_option_is_spelled() {
        use PolicyEffect::{Allow, Deny};
        let rules = [
            rule(Allow, "shell.exec", "rm **"),
            rule(Deny, "shell.exec", "rm --recursive **"),
            rule(Allow, "shell.exec", "cp **"),
            rule(Deny, "shell.exec", "cp -r **"),
            rule(Allow, "shell.exec", "chmod **"),
            rule(Deny, "shell.exec", "chmod -R **"),
            rule(Allow, "shell.exec", "chown **"),
            rule(Deny, "shell.exec", "chown --recursive **"),
            rule(Allow, "shell.exec", "ln **"),
            rule(Deny, "shell.exec", "ln -s **"),
            rule(Allow, "shell.exec", "tool **"),
            rule(Deny, "shell.exec", "tool --dangerous **"),
        ];
        let denied = [
            "rm -r victim",
            "rm -R victim",
            "rm -rf victim",
            "rm -fR victim",
            "rm -f -r victim",
            "rm --recursive victim",
            "rm --recursiv victim",
            "rm --recursi victim",
            "rm --rec victim",
            "rm --re victim",
            "rm --r victim",
            "rm --force --recursive victim",
            "rm victim --rec",
            "/bin/rm --rec victim",
            "/usr/bin/rm -R victim",
            "cp -r a b",
            "cp -R a b",
            "cp --recursive a b",
            "cp --rec a b",
            "cp -aR a b",
            "chmod -R 777 x",
            "chmod --recursive 777 x",
            "chmod --recur 777 x",
            "chmod -vR 777 x",
            "chown -R me x",
            "chown --recursive me x",
            "chown --rec me x",
            "chown -hR me x",
            "ln -s a b",
            "ln --symbolic a b",
            "ln --sym a b",
            "ln -sf a b",
            "tool --dangerous x",
            "tool --dangerous=yes x",
            "tool --dangerou x",
            "tool --dang x",
            "tool --d x",
            "tool x --dang",
        ];
        for line in denied {
            assert_eq!(shell(&rules, line), Deny, "{line} got through");
        }
        let allowed = [
            "rm victim",
            "rm -f victim",
            "rm --force victim",
            "rm -- --recursive",
            "cp a b",
            "chmod 600 x",
            "chown me x",
            "ln a b",
            "tool --safe x",
            "tool -- --dangerous",
        ];
        for line in allowed {
            assert_eq!(shell(&rules, line), Allow, "{line} was refused");
        }
    }

    #[test]
    fn host_tools_are_denied_without_a_rule() {
        assert_eq!(shell(&[], "ls"), PolicyEffect::Deny);
        assert_eq!(decide(&[], "time.now", Target::Text(""), false).effect, PolicyEffect::Allow);
    }

    #[test]
    fn deny_wins_then_specificity_then_ask() {
        use PolicyEffect::*;
        let rules = vec![rule(Allow, "shell.exec", "*"), rule(Ask, "shell.exec", "rm **")];
        assert_eq!(shell(&rules, "ls -la"), Allow);
        assert_eq!(shell(&rules, "rm -rf x"), Ask);
        let mut always = rules.clone();
        always.push(rule(Allow, "shell.exec", "rm -rf x"));
        assert_eq!(shell(&always, "rm -rf x"), Allow);
        assert_eq!(shell(&always, "rm -fr x"), Allow, "the same flags, clustered otherwise");
        always.push(rule(Deny, "*", "*"));
        assert_eq!(shell(&always, "rm -rf x"), Deny);
        let tie = vec![rule(Allow, "fs.*", "*"), rule(Ask, "fs.*", "*")];
        assert_eq!(decide(&tie, "fs.read", Target::Text("a"), true).effect, Ask);
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
        // Argv tools narrow by argv patterns, not by text.
        let git = rule(Allow, "shell.exec", "git **").rule;
        assert_eq!(narrowing_error(&git, &rule(Allow, "shell.exec", "git status **").rule), None);
        let text_only = rule(Allow, "shell.exec", "rm -f *").rule;
        assert!(
            narrowing_error(&text_only, &rule(Allow, "shell.exec", "rm -f -r x").rule).is_some()
        );
        let any = rule(Allow, "*", "git status **").rule;
        assert!(narrowing_error(&any, &rule(Allow, "*", "git *").rule).is_some());
        assert_eq!(narrowing_error(&any, &rule(Allow, "*", "git status -s").rule), None);
    }

    #[test]
    fn an_unreadable_argv_pattern_allows_nothing_and_still_denies() {
        use PolicyEffect::*;
        assert_eq!(shell(&[rule(Allow, "shell.exec", "git 'status")], "git status"), Deny);
        let rules = vec![rule(Allow, "shell.exec", "*"), rule(Deny, "shell.exec", "rm 'oops")];
        assert_eq!(shell(&rules, "ls"), Deny);
    }

    /// The README's policy example, read from the README itself, against the lines people use
    /// to slip past rules written as globs on a command line.
    #[test]
    fn the_readme_policy_does_what_its_words_say() {
        use PolicyEffect::*;
        let readme = include_str!("../../../README.md");
        let start = readme.find("```yaml\ntools:\n").expect("README has a tools: block");
        let block = &readme[start + 8..];
        let block = &block[..block.find("```").expect("closed block")];
        let config = clade_config::Config::parse(block, std::path::Path::new("README.md"))
            .unwrap_or_else(|e| panic!("the README's tools block must parse: {e}"));
        let rules: Vec<SourcedRule> = config
            .tools
            .policy
            .iter()
            .map(|rule| SourcedRule { rule: rule.clone(), source: "config".into() })
            .collect();
        let run = |argv: &[&str]| {
            let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
            decide(&rules, "shell.exec", Target::Argv(&argv), true).effect
        };
        let line = |command: &str| run(&["/bin/sh", "-c", command]);
        // Allowed: git status, as a program with its arguments.
        for argv in [
            &["git", "status"][..],
            &["git", "status", "--short"],
            &["/usr/bin/git", "status", "-s", "src"],
        ] {
            assert_eq!(run(argv), Allow, "{argv:?}");
        }
        // Anything else that starts like it is not allowed: it waits for an operator.
        for argv in [
            &["git", "statusX"][..],
            &["git", "status;", "id"],
            &["./git", "status"],
            &["git", "-c", "core.pager=id", "status"],
            &["gitx", "status"],
        ] {
            assert_eq!(run(argv), Ask, "{argv:?}");
        }
        for command in [
            "git status; id",
            "git status || id",
            "git status | id",
            "git status $(touch x)",
            "git status\nid",
            "git statusX; id",
            "git status",
        ] {
            assert_eq!(line(command), Ask, "a shell line is never `git status`: {command:?}");
        }
        // rm with -r, however spelled, run directly: denied.
        for argv in [
            &["rm", "-rf", "x"][..],
            &["rm", "-r", "-f", "x"],
            &["rm", "-fr", "x"],
            &["rm", "-Rf", "x"],
            &["/bin/rm", "-rf", "/"],
            &["rm", "x", "-r"],
            &["rm", "--recursive", "x"],
            &["rm", "-rfv", "--", "x"],
        ] {
            assert_eq!(run(argv), Deny, "{argv:?}");
        }
        // Through a shell, a deny cannot see the program: the README says so, and these fall
        // to the shell line's own rule (ask), never to an allow.
        for command in ["RM=rm; $RM -rf x", "rm  -rf x", "r''m -rf x", "command rm -rf x"] {
            assert_eq!(line(command), Ask, "{command:?}");
        }
        assert_eq!(run(&["rm", "x"]), Ask, "rm without -r is not denied, only not allowed");
    }

    #[test]
    fn a_ceiling_bounds_allow_and_ask_grants() {
        use PolicyEffect::*;
        let ceiling = GrantCeiling {
            tools: vec!["fs.*".into()],
            network: false,
            private_network: false,
            secrets: false,
        };
        assert_eq!(ceiling_error(&ceiling, &rule(Allow, "fs.read", "*").rule), None);
        assert!(ceiling_error(&ceiling, &rule(Allow, "*", "*").rule).is_some());
        assert!(ceiling_error(&ceiling, &rule(Allow, "shell.exec", "*").rule).is_some());
        let mut networked = rule(Allow, "fs.read", "*").rule;
        networked.constraints.network = true;
        assert!(ceiling_error(&ceiling, &networked).unwrap().contains("network"));
        assert_eq!(ceiling_error(&GrantCeiling::default(), &rule(Deny, "*", "*").rule), None);
        assert!(
            ceiling_error(&GrantCeiling::default(), &rule(Ask, "shell.exec", "*").rule).is_some()
        );
        assert_eq!(ceiling_error(&ceiling, &rule(Ask, "fs.write", "*").rule), None);
        assert!(
            ceiling_error(&GrantCeiling::default(), &rule(Allow, "fs.read", "*").rule).is_some()
        );
    }
}
