//! `clade teams`: a team of agents made from a preset. Each member is an agent of its role's
//! built-in template (`<name>-<role>`); the coordinator may ask and tell each member
//! (`agent.ask`, `agent.send` grants naming it) and each member may tell the coordinator, and
//! their souls say who is on the team. Every handle is checked free before any is made.

use anyhow::{Result, bail};
use clade_config::{Constraints, PolicyEffect, PolicyRule};
use clade_core::{AgentConfig, Handle, TemplateName};
use clade_store::NewAgent;

use crate::cli::TeamsCommand;
use crate::context::Ctx;
use crate::output;

/// A preset: its name, what it is for, and its members' roles (each a built-in template) after
/// the coordinator.
const PRESETS: [(&str, &str, &[&str]); 3] = [
    ("research", "find things out and check them", &["researcher", "reviewer"]),
    ("dev", "write code and review it", &["coder", "reviewer"]),
    ("ops", "keep systems running, with a second pair of eyes", &["operator", "reviewer"]),
];

/// The coordinator's role and template.
const COORDINATOR: (&str, &str) = ("coordinator", "assistant");

pub(super) async fn run(ctx: &Ctx, cmd: TeamsCommand) -> Result<()> {
    match cmd {
        TeamsCommand::Presets => {
            let rows: Vec<Vec<String>> = PRESETS
                .iter()
                .map(|(name, what, roles)| {
                    let mut all = vec![COORDINATOR.0];
                    all.extend(roles.iter());
                    vec![(*name).to_owned(), all.join(", "), (*what).to_owned()]
                })
                .collect();
            output::table(&["PRESET", "ROLES", "FOR"], &rows);
        }
        TeamsCommand::Create { preset, name } => create(ctx, &preset, &name).await?,
    }
    Ok(())
}

async fn create(ctx: &Ctx, preset: &str, name: &str) -> Result<()> {
    let Some((_, _, roles)) = PRESETS.iter().find(|(p, _, _)| *p == preset) else {
        let known: Vec<&str> = PRESETS.iter().map(|(p, _, _)| *p).collect();
        bail!("no preset {preset:?}: choose one of {} (`clade teams presets`)", known.join(", "));
    };
    let tenant = ctx.tenant().await?;
    // (role, template, handle), the coordinator first.
    let mut members = vec![(COORDINATOR.0, COORDINATOR.1)];
    members.extend(roles.iter().map(|role| (*role, *role)));
    let mut planned = Vec::new();
    for (role, template) in members {
        let handle = Handle::parse(&format!("{name}-{role}")).map_err(|e| {
            anyhow::anyhow!("--name {name:?} makes a bad handle for its {role}: {e}")
        })?;
        match ctx.store.agents(tenant.id).get(handle.as_str()).await {
            Err(clade_store::Error::AgentNotFound(_)) => {}
            Ok(_) => bail!(
                "agent {handle} exists already: choose another --name, or delete it with `clade agents delete {handle} --yes`"
            ),
            Err(other) => return Err(other.into()),
        }
        planned.push((role, TemplateName::parse(template)?, handle));
    }
    let mut rules = Vec::new();
    for (_, template, _) in &planned {
        rules.push(clade_runtime::tools::template_tools(&ctx.agents, template)?);
    }
    let mut made = Vec::new();
    for (role, template, handle) in &planned {
        let spec = NewAgent {
            handle: handle.clone(),
            display_name: None,
            config: AgentConfig { template: template.clone() },
        };
        let agent = ctx.agents.create(tenant.id, spec).await?;
        made.push((*role, agent));
    }
    let tools = ctx.tools().await;
    let allow = |tool: &str, resource: &Handle| PolicyRule {
        effect: PolicyEffect::Allow,
        tool: tool.to_owned(),
        resource: resource.to_string(),
        constraints: Constraints::default(),
    };
    let by = "operator (cli, teams create)";
    for ((_, agent), rules) in made.iter().zip(rules) {
        if !rules.is_empty() {
            tools.grant_template_tools(agent, rules, None, by).await?;
        }
    }
    let (coordinator_role, coordinator) = &made[0];
    let mut roster = Vec::new();
    for (role, member) in &made[1..] {
        for tool in ["agent.ask", "agent.send"] {
            tools.add_grant(coordinator, allow(tool, &member.handle), None, None, by).await?;
        }
        tools.add_grant(member, allow("agent.send", &coordinator.handle), None, None, by).await?;
        roster.push(format!("- {} ({role})", member.handle));
    }
    // Each soul says who is on the team and how to reach them.
    let team = format!(
        "\n## Your team, {name}\n\nYou coordinate it. Ask a member with agent.ask (`to`: its handle), tell one with agent.send, and answer the person from what they found:\n\n{}\n",
        roster.join("\n")
    );
    append_to_soul(ctx, coordinator, &team)?;
    for (role, member) in &made[1..] {
        let note = format!(
            "\n## Your team, {name}\n\nYou are its {role}. {} ({coordinator_role}) asks you for work; your reply is your answer. Tell it something unasked with agent.send.\n",
            coordinator.handle
        );
        append_to_soul(ctx, member, &note)?;
    }
    println!("created team {name} ({preset}):");
    for (role, agent) in &made {
        println!("  {} ({role}, template {})", agent.handle, agent.config.template);
    }
    println!("talk to it through {}", coordinator.handle);
    Ok(())
}

fn append_to_soul(ctx: &Ctx, agent: &clade_core::Agent, text: &str) -> Result<()> {
    let path = ctx.agents.workspace(agent)?.join("SOUL.md");
    let mut soul = std::fs::read_to_string(&path).unwrap_or_default();
    soul.push_str(text);
    std::fs::write(&path, soul)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
