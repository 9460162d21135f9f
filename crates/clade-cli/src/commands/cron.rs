//! `clade cron`: agents' scheduled jobs, straight on the store (a serving gateway's scheduler
//! finds a new or re-enabled job within a second); `clade retention`, the sweep the gateway
//! schedules.

use anyhow::{Result, bail};
use clade_store::{JobRow, RunOutcome};

use crate::cli::{CronCommand, RetentionCommand};
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: CronCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    match cmd {
        CronCommand::List { json } => {
            let agent = match ctx.explicit_agent() {
                Some(handle) => Some(ctx.store.agents(tenant.id).get(handle).await?.id),
                None => None,
            };
            let jobs = ctx.store.jobs(tenant.id).list(agent).await?;
            if json {
                let items: Vec<_> = jobs.into_iter().map(clade_gateway::job_response).collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|job| {
                    vec![
                        job.agent.clone(),
                        job.name.clone(),
                        job.schedule.clone(),
                        job.zone.clone(),
                        job.target.to_string(),
                        state(job),
                        job.next_at.map(|t| t.to_string()).unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            output::table(&["AGENT", "NAME", "SCHEDULE", "ZONE", "TARGET", "STATE", "NEXT"], &rows);
        }
        CronCommand::Create {
            name,
            schedule,
            prompt,
            zone,
            misfire,
            target,
            inputs,
            jitter,
            json,
        } => {
            let agent = ctx.agent(None).await?;
            let prompt = prompt_of(ctx, tenant.id, target.as_deref(), prompt, &inputs).await?;
            let spec = clade_sched::JobSpec {
                name,
                schedule,
                zone: Some(zone),
                misfire: Some(misfire),
                target,
                jitter_secs: Some(u32::try_from(jitter.as_secs()).unwrap_or(u32::MAX)),
                prompt,
            };
            let new = clade_sched::new_job(&spec, tenant.id, agent.id, ctx.store.now())?;
            let job = match ctx.store.create_job(new).await {
                Err(clade_store::Error::JobExists(name)) => bail!(
                    "agent {} already has a job named {name:?}: choose another name, or remove it with `clade cron remove {name}`",
                    agent.handle
                ),
                Err(clade_store::Error::SessionNotFound(id)) => bail!(
                    "target session {id} is not a session of agent {}: list sessions with `clade sessions list`",
                    agent.handle
                ),
                Err(clade_store::Error::FlowNotFound(flow)) => bail!(
                    "no stored flow {flow}: save it first with `clade flow save FILE`, or list them with `clade flow list`"
                ),
                other => other?,
            };
            if json {
                return output::json(&clade_gateway::job_response(job));
            }
            let next = job.next_at.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
            println!("created job {} of {} (next fire: {next})", job.name, job.agent);
        }
        CronCommand::Remove { name } => {
            let job = named(ctx, &name).await?;
            ctx.store.jobs(tenant.id).delete(job.id).await?;
            println!("removed job {} of {}", job.name, job.agent);
        }
        CronCommand::Enable { name } => enable(ctx, &name, true).await?,
        CronCommand::Disable { name } => enable(ctx, &name, false).await?,
        CronCommand::Runs { name, limit, json } => {
            let job = named(ctx, &name).await?;
            let runs = ctx.store.jobs(tenant.id).runs(job.id, None, limit.max(1)).await?;
            if json {
                let items: Vec<_> = runs.into_iter().map(clade_gateway::run_response).collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = runs.iter().map(run_row).collect();
            output::table(&["SCHEDULED", "FIRED", "OUTCOME", "DETAIL"], &rows);
        }
    }
    Ok(())
}

/// A run as `clade cron runs` lists it.
fn run_row(run: &clade_store::JobRun) -> Vec<String> {
    let (outcome, detail) = match &run.outcome {
        RunOutcome::Refused(why) => ("refused".to_owned(), why.clone()),
        RunOutcome::Waiting => ("waiting".to_owned(), String::new()),
        RunOutcome::Gone => ("session deleted".to_owned(), String::new()),
        RunOutcome::Turn { id, status } => (format!("turn {}", status.as_str()), id.to_string()),
        RunOutcome::Flow { run, status: Some(status) } => {
            (format!("flow run {}", status.as_str()), run.to_string())
        }
        RunOutcome::Flow { run, status: None } => ("flow run deleted".to_owned(), run.to_string()),
    };
    vec![run.scheduled_at.to_string(), run.fired_at.to_string(), outcome, detail]
}

/// What a new job carries: the prompt given, or for a flow target, the `--input`s read as the
/// stored flow declares them, as a JSON object.
async fn prompt_of(
    ctx: &Ctx,
    tenant: clade_core::TenantId,
    target: Option<&str>,
    prompt: Option<String>,
    inputs: &[String],
) -> Result<String> {
    let flow = match target.map(clade_store::JobTarget::parse) {
        Some(Ok(clade_store::JobTarget::Flow { name, version })) => (name, version),
        _ => {
            if !inputs.is_empty() {
                bail!("--input is for a flow target (--target flow:NAME): give a prompt instead");
            }
            let Some(prompt) = prompt else {
                bail!(
                    "say what the agent is to be told at every fire: clade cron create NAME SCHEDULE PROMPT"
                );
            };
            return Ok(prompt);
        }
    };
    if prompt.is_some() {
        bail!("a flow target takes its run's inputs as --input NAME=VALUE, not a prompt");
    }
    let stored = match clade_store::StoredFlows::of(&ctx.store, tenant).get(&flow.0, flow.1).await {
        Err(clade_store::Error::FlowNotFound(flow)) => bail!(
            "no stored flow {flow}: save it first with `clade flow save FILE`, or list them with `clade flow list`"
        ),
        other => other?,
    };
    let parsed = clade_flow::parse(&stored.source, std::path::Path::new(&stored.name))?;
    let inputs = super::flow::parse_inputs(&parsed, inputs)?;
    Ok(serde_json::to_string(&inputs)?)
}

/// The selected agent's job `name`.
async fn named(ctx: &Ctx, name: &str) -> Result<JobRow> {
    let tenant = ctx.tenant().await?;
    let agent = ctx.agent(None).await?;
    match ctx.store.jobs(tenant.id).named(agent.id, name).await {
        Err(clade_store::Error::JobNotFound(_)) => bail!(
            "agent {} has no job {name:?}: list its jobs with `clade cron list --agent {}`",
            agent.handle,
            agent.handle
        ),
        other => Ok(other?),
    }
}

async fn enable(ctx: &Ctx, name: &str, enabled: bool) -> Result<()> {
    let tenant = ctx.tenant().await?;
    let job = named(ctx, name).await?;
    let job = ctx.store.jobs(tenant.id).set_enabled(job.id, enabled, None).await?;
    println!("job {} of {} is {}", job.name, job.agent, state(&job));
    Ok(())
}

fn state(job: &JobRow) -> String {
    match (&job.enabled, &job.disabled_reason) {
        (true, _) => "enabled".to_owned(),
        (false, Some(why)) => format!("disabled: {why}"),
        (false, None) => "disabled".to_owned(),
    }
}

/// `clade retention sweep`: one sweep of every tenant with a policy, now.
pub(super) async fn retention(ctx: &Ctx, cmd: RetentionCommand) -> Result<()> {
    let RetentionCommand::Sweep { json } = cmd;
    let store = ctx.store.acting_as("operator (cli): retention sweep");
    let swept = clade_sched::retention::sweep_all(&store, &ctx.config.tenants).await?;
    if json {
        let items: Vec<_> = swept
            .iter()
            .map(|(tenant, s)| {
                serde_json::json!({ "tenant": tenant, "sessions": s.sessions, "events": s.events,
                    "turns": s.turns, "runs": s.runs, "steps": s.steps, "outbox": s.outbox,
                    "dead_letters": s.dead_letters })
            })
            .collect();
        return output::json(&items);
    }
    if swept.is_empty() {
        println!(
            "no tenant has a retention policy (tenants.<name>.retention in clade.yaml): nothing swept"
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = swept
        .iter()
        .map(|(tenant, s)| {
            [s.sessions, s.events, s.turns, s.runs, s.steps, s.outbox, s.dead_letters]
                .iter()
                .map(u64::to_string)
                .fold(vec![tenant.clone()], |mut row, n| {
                    row.push(n);
                    row
                })
        })
        .collect();
    output::table(
        &["TENANT", "SESSIONS", "EVENTS", "TURNS", "RUNS", "STEPS", "OUTBOX", "DEAD LETTERS"],
        &rows,
    );
    Ok(())
}
