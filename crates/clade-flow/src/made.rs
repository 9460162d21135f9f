//! Agents made for one run from a persona template (`agents.NAME.template`).
//!
//! They are made when the run starts (for a scheduled run, when it is first driven), under a
//! handle derived from the run (`run-<8 hex>-<name>`), so a start repeated with the same id, or
//! a drive after a crash, finds them rather than making others. Each is made as `POST
//! /v1/agents` makes one: the template's persona, its tools granted within the tenant's
//! ceiling, counted against the tenant's `agents` quota. They are deleted, with their
//! sessions, memory and workspace, once the run has ended (completed, failed or cancelled); a
//! process stopped between a run's end and that deletion leaves them, under their `run-`
//! handles, for an operator to delete.

use clade_core::{Agent, ExecutionId, Handle, TemplateName, Tenant, TenantId};
use sha2::{Digest, Sha256};

use crate::flow::{AgentSource, Flow};
use crate::run::RunError;

/// Who the audit records name as making and deleting them.
const BY: &str = "flow runner";

/// The display name of the agent made for `name`: how a later drive tells it from an agent
/// someone made under the same handle, which it neither uses nor deletes.
fn display_name(name: &str) -> String {
    format!("{name} (made for a flow run)")
}

/// The handle of the agent made for `name` in `run`: the same at every drive of the run.
pub fn handle_of(run: ExecutionId, name: &str) -> String {
    let digest = Sha256::new().chain_update(b"flow_agent").chain_update(run.as_bytes()).finalize();
    format!("run-{:02x}{:02x}{:02x}{:02x}-{name}", digest[0], digest[1], digest[2], digest[3])
}

/// The flow's agents made from templates: (name, template).
fn templates(flow: &Flow) -> impl Iterator<Item = (&String, &String)> {
    flow.agents.iter().filter_map(|(name, source)| match source {
        AgentSource::Template(template) => Some((name, template)),
        AgentSource::Handle(_) => None,
    })
}

/// Why the agent for `name` cannot be made from `template`.
fn refusal(name: &str, template: &str, why: &dyn std::fmt::Display) -> RunError {
    RunError::TemplateAgent {
        name: name.to_owned(),
        template: template.to_owned(),
        why: why.to_string(),
    }
}

/// Whether the flow makes any agent for its runs.
pub fn makes_any(flow: &Flow) -> bool {
    templates(flow).next().is_some()
}

/// Checks, before anything is made, that each template agent can be: its handle is one and its
/// template exists, with readable tools.
pub(crate) fn check(
    agents: Option<&clade_store::Agents>,
    run: ExecutionId,
    flow: &Flow,
) -> Result<(), RunError> {
    for (name, template) in templates(flow) {
        let refused = |why: &dyn std::fmt::Display| refusal(name, template, why);
        let Some(agents) = agents else {
            return Err(refused(&"this runner makes no agents"));
        };
        Handle::parse(&handle_of(run, name)).map_err(|e| refused(&e))?;
        let parsed = TemplateName::parse(template).map_err(|e| refused(&e))?;
        clade_runtime::tools::template_tools(agents, &parsed).map_err(|e| refused(&e))?;
    }
    Ok(())
}

/// Makes (or finds, made by an earlier start or drive) the agents `flow` makes for `run`. When
/// one cannot be made (the tenant's agent quota), those this call made are deleted again.
pub(crate) async fn make(
    agents: &clade_store::Agents,
    engine: &clade_runtime::Engine,
    tenant: &Tenant,
    run: ExecutionId,
    flow: &Flow,
) -> Result<(), RunError> {
    let mut made: Vec<String> = Vec::new();
    for (name, template) in templates(flow) {
        match make_one(agents, engine, tenant, run, name, template).await {
            Ok(Some(agent)) => made.push(agent.handle.as_str().to_owned()),
            Ok(None) => {}
            Err(err) => {
                for handle in made {
                    if let Err(e) = agents.delete(tenant.id, &handle).await {
                        tracing::warn!(agent = %handle, error = %e, "an agent made for a run that could not start was not deleted");
                    }
                }
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Makes the agent for `name`, unless it exists: the agent made, or `None` when found.
async fn make_one(
    agents: &clade_store::Agents,
    engine: &clade_runtime::Engine,
    tenant: &Tenant,
    run: ExecutionId,
    name: &str,
    template: &str,
) -> Result<Option<Agent>, RunError> {
    let refused = |why: &dyn std::fmt::Display| refusal(name, template, why);
    let handle = Handle::parse(&handle_of(run, name)).map_err(|e| refused(&e))?;
    match engine.store().agents(tenant.id).get(handle.as_str()).await {
        Ok(found) if found.display_name == display_name(name) => return Ok(None),
        Ok(_) => {
            return Err(refused(&format!(
                "an agent {handle} exists already that was not made for this run"
            )));
        }
        Err(clade_store::Error::AgentNotFound(_)) => {}
        Err(other) => return Err(other.into()),
    }
    let template = TemplateName::parse(template).map_err(|e| refused(&e))?;
    let rules = clade_runtime::tools::template_tools(agents, &template).map_err(|e| refused(&e))?;
    let new = clade_store::NewAgent {
        handle,
        display_name: Some(display_name(name)),
        config: clade_core::AgentConfig { template },
    };
    let agents = agents.acting_as(BY);
    let agent = match agent_quota(engine, tenant) {
        Some((max, key)) => agents.create_within(tenant.id, new, max, &key).await,
        None => agents.create(tenant.id, new).await,
    };
    let agent = agent.map_err(|e| match e {
        clade_store::Error::QuotaExceeded(why) => refused(&why),
        other => other.into(),
    })?;
    // The tenant's ceiling bounds what the template gives, as for an agent its tokens make.
    let granted =
        engine.tools().grant_template_tools(&agent, rules, Some(tenant.name.as_str()), BY).await;
    if let Err(err) = granted {
        let _ = agents.delete(tenant.id, agent.handle.as_str()).await;
        return Err(refused(&err));
    }
    Ok(Some(agent))
}

/// The tenant's `agents` quota, with the clade.yaml key it comes from.
fn agent_quota(engine: &clade_runtime::Engine, tenant: &Tenant) -> Option<(u64, String)> {
    let tenants = engine.settings().tenants.clone();
    let name = tenant.name.as_str();
    let max = clade_config::Config::quotas_of(&tenants, name)?.agents?;
    let own = tenants.get(name).is_some_and(|t| t.quotas.is_some());
    let key = if own {
        format!("tenants.{name}.quotas.agents")
    } else {
        "tenants.\"*\".quotas.agents".into()
    };
    Some((max, key))
}

/// Deletes the agents `flow` made for `run` (the run has ended); a failure is logged.
pub(crate) async fn remove(
    agents: Option<&clade_store::Agents>,
    tenant: TenantId,
    run: ExecutionId,
    flow: &Flow,
) {
    let Some(agents) = agents else { return };
    for (name, _) in templates(flow) {
        let handle = handle_of(run, name);
        match agents.store().agents(tenant).get(&handle).await {
            Ok(found) if found.display_name == display_name(name) => {}
            _ => continue,
        }
        match agents.acting_as(BY).delete(tenant, &handle).await {
            Ok(_) | Err(clade_store::Error::AgentNotFound(_)) => {}
            Err(err) => {
                tracing::warn!(agent = %handle, error = %err, "an agent made for a flow run was not deleted when the run ended: delete it with `clade agents delete`");
            }
        }
    }
}
