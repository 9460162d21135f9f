//! `clade teams`: a team of agents made from a preset. Each member is an agent of its role's
//! built-in template (`<name>-<role>`); the coordinator may ask and tell each member
//! (`agent.ask`, `agent.send` grants naming it) and each member may tell the coordinator, and
//! their souls say who is on the team. The team's way of working is a flow stored under its
//! name (`clade flow run <name>`): the coordinator plans, the members work in turn, the
//! coordinator reports. Every handle, and the flow's name, is checked free before any is made.

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

/// A task of a team's flow: its id, the role asked, and the prompt.
type TeamTask = (&'static str, &'static str, &'static str);
/// A preset's flow: the preset, the flow's one input, and its tasks in order.
type Way = (&'static str, &'static str, &'static [TeamTask]);

/// How each preset's team works, as a flow stored under the team's name: its input, and its
/// tasks in order (id, role, prompt). The coordinator opens and closes; each member works on
/// what the one before produced.
const WAYS: [Way; 3] = [
    (
        "research",
        "question",
        &[
            (
                "plan",
                "coordinator",
                "Split this question into what to find out, for a researcher: {{ inputs.question }}",
            ),
            ("research", "researcher", "Find out, with sources: {{ tasks.plan.output }}"),
            (
                "review",
                "reviewer",
                "Check these findings and their sources; say what is weak: {{ tasks.research.output }}",
            ),
            (
                "answer",
                "coordinator",
                "Answer the question {{ inputs.question }} from the findings {{ tasks.research.output }} and the review {{ tasks.review.output }}",
            ),
        ],
    ),
    (
        "dev",
        "change",
        &[
            (
                "plan",
                "coordinator",
                "Plan this change in at most five steps, for a coder: {{ inputs.change }}",
            ),
            ("code", "coder", "Implement this plan: {{ tasks.plan.output }}"),
            (
                "review",
                "reviewer",
                "Review this change and say what must change: {{ tasks.code.output }}",
            ),
            (
                "report",
                "coordinator",
                "Report on the change {{ inputs.change }}: the work {{ tasks.code.output }} and its review {{ tasks.review.output }}",
            ),
        ],
    ),
    (
        "ops",
        "request",
        &[
            (
                "assess",
                "operator",
                "Assess what this needs on our systems, and the risks: {{ inputs.request }}",
            ),
            (
                "check",
                "reviewer",
                "Check this assessment for what could go wrong: {{ tasks.assess.output }}",
            ),
            (
                "report",
                "coordinator",
                "Report on {{ inputs.request }}: the assessment {{ tasks.assess.output }} and the second look {{ tasks.check.output }}",
            ),
        ],
    ),
];

/// The flow file of team `name` of `preset`, whose members are `<name>-<role>`.
fn team_flow(preset: &str, name: &str) -> Option<String> {
    let (_, input, tasks) = WAYS.iter().find(|(p, _, _)| *p == preset)?;
    let mut roles: Vec<&str> = tasks.iter().map(|(_, role, _)| *role).collect();
    roles.sort_unstable();
    roles.dedup();
    let mut text = format!(
        "# Team {name} ({preset}), made by `clade teams create`.\nname: {name}\ninputs:\n  {input}: {{ type: string }}\nagents:\n"
    );
    for role in roles {
        text.push_str(&format!("  {role}: {{ handle: {name}-{role} }}\n"));
    }
    text.push_str("tasks:\n");
    for (id, role, prompt) in *tasks {
        let prompt = serde_json::Value::String((*prompt).to_owned());
        text.push_str(&format!("  - id: {id}\n    agent: {role}\n    prompt: {prompt}\n"));
    }
    Some(text)
}

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
    // Its way of working, checked and its name free before anything is made.
    let (flows, flow) = checked_flow(ctx, tenant.id, preset, name).await?;
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
    flows.save(name, &flow).await?;
    let (_, input, _) = WAYS.iter().find(|(p, _, _)| *p == preset).copied().unwrap_or_default();
    println!("talk to it through {}", coordinator.handle);
    println!(
        "or run its way of working, the stored flow {name}: `clade flow run {name} --input {input}=\"…\" --watch`"
    );
    Ok(())
}

/// The flow of team `name`, checked, and the tenant's stored flows, where its name is free.
async fn checked_flow<'c>(
    ctx: &'c Ctx,
    tenant: clade_core::TenantId,
    preset: &str,
    name: &str,
) -> Result<(clade_store::StoredFlows<'c>, String)> {
    let flow = team_flow(preset, name).unwrap_or_default();
    let file = format!("{name}.flow.yaml");
    clade_flow::parse(&flow, std::path::Path::new(&file))
        .map_err(|e| anyhow::anyhow!("--name {name:?} makes no valid flow for the team: {e}"))?;
    if clade_flow::RESERVED_NAMES.contains(&name) {
        bail!(
            "--name {name:?}: the team's flow takes its name, and {name:?} is reserved; choose another"
        );
    }
    let flows = clade_store::StoredFlows::of(&ctx.store, tenant);
    match flows.get(name, None).await {
        Err(clade_store::Error::FlowNotFound(_)) => Ok((flows, flow)),
        Ok(_) => bail!(
            "a stored flow {name} exists already: choose another --name, or delete it with `clade flow delete {name} --yes`"
        ),
        Err(other) => Err(other.into()),
    }
}

fn append_to_soul(ctx: &Ctx, agent: &clade_core::Agent, text: &str) -> Result<()> {
    let path = ctx.agents.workspace(agent)?.join("SOUL.md");
    let mut soul = std::fs::read_to_string(&path).unwrap_or_default();
    soul.push_str(text);
    std::fs::write(&path, soul)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
