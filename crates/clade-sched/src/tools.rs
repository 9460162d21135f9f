//! The agents' own tools for their jobs: `cron.list`, `cron.create`, `cron.enable`,
//! `cron.remove`. A call
//! acts on the calling agent's jobs only (tenant and agent come from the call's context, never
//! from the model's arguments); the policy decides each call like any tool's (the job's name
//! is what a rule's resource pattern matches), and the tool path audits it.

use std::collections::BTreeMap;
use std::sync::Arc;

use clade_config::TenantConfig;
use clade_store::{JobRow, JobTarget, Store};
use clade_tools::{CallContext, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::jobs::{JobLimits, JobSpec, new_job};

/// Registers the cron tools, acting on `store`; `tenants` (clade.yaml's, as applied) says how
/// often and how many jobs each tenant's agents may give themselves ([`JobLimits`]).
pub fn register(registry: &mut Registry, store: Store, tenants: BTreeMap<String, TenantConfig>) {
    let store = store.acting_as("agent (cron tools)");
    registry.register(Arc::new(CronList(store.clone())));
    registry.register(Arc::new(CronCreate { store: store.clone(), tenants }));
    registry.register(Arc::new(CronEnable(store.clone())));
    registry.register(Arc::new(CronRemove(store)));
}

fn describe(job: &JobRow) -> serde_json::Value {
    serde_json::json!({
        "name": job.name,
        "schedule": job.schedule,
        "zone": job.zone,
        "misfire": job.misfire,
        "target": job.target.to_string(),
        "prompt": job.prompt,
        "enabled": job.enabled,
        "disabled_reason": job.disabled_reason,
        "next_at": job.next_at.map(|t| t.to_string()),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

pub struct CronList(Store);

impl TypedTool for CronList {
    type Args = NoArgs;
    const NAME: &'static str = "cron.list";
    const DESCRIPTION: &'static str = "Your scheduled jobs: name, schedule, time zone, target, prompt, whether enabled, next fire.";
    const EFFECT: EffectClass = EffectClass::Pure;
    fn run<'a>(&'a self, _args: NoArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let jobs =
                self.0.jobs(caller.tenant).list(Some(caller.agent)).await.map_err(Error::relied)?;
            Ok(serde_json::Value::Array(jobs.iter().map(describe).collect()).to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// A name for the job, unique among yours: a-z, 0-9, `_`, `.`, `-`.
    pub name: String,
    /// A cron expression ("0 9 * * MON-FRI"; 6 fields for seconds), an alias (@hourly, @daily,
    /// @weekly) or "@every 30m".
    pub schedule: String,
    /// What you will be told at each fire: write it as an instruction to yourself.
    pub prompt: String,
    /// The IANA time zone the schedule is read in (the user's, e.g. "Europe/Berlin"); UTC if
    /// absent.
    #[serde(default)]
    pub zone: Option<String>,
    /// Where each fire goes: "origin" (the default: where the user you are talking to last
    /// spoke), "new" (a fresh session each time) or "session:<name>".
    #[serde(default)]
    pub target: Option<String>,
    /// Missed times (the gateway was down): "skip", "run_once" (the default) or "catch_up:<n>".
    #[serde(default)]
    pub misfire: Option<String>,
}

pub struct CronCreate {
    store: Store,
    tenants: BTreeMap<String, TenantConfig>,
}

impl TypedTool for CronCreate {
    type Args = CreateArgs;
    const NAME: &'static str = "cron.create";
    const DESCRIPTION: &'static str = "Schedule a job for yourself: at each time its schedule gives, you are sent its prompt. By default it answers where the user you are talking to last spoke.";
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("name");
    fn resource(&self, args: &CreateArgs) -> Result<String, Error> {
        Ok(args.name.clone())
    }
    fn run<'a>(&'a self, args: CreateArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            // `origin` is this call's session: a job made for a user answers where they speak.
            let target = match args.target.as_deref() {
                None | Some("origin") => match caller.session {
                    Some(session) => JobTarget::Origin(session).to_string(),
                    None => "new".to_owned(),
                },
                Some(other) => other.to_owned(),
            };
            let spec = JobSpec {
                name: args.name,
                schedule: args.schedule,
                zone: args.zone,
                misfire: args.misfire,
                target: Some(target),
                jitter_secs: None,
                prompt: args.prompt,
            };
            let new = new_job(&spec, caller.tenant, caller.agent, self.store.now())
                .map_err(Error::relied)?;
            // Starting a flow is flow.start's, under its own grant: a schedule is no way round it.
            if let JobTarget::Flow { .. } = new.target {
                return Err(Error::failed(
                    "a job of yours fires into a conversation (origin, new or session:<name>); to run a flow, use flow.start",
                ));
            }
            let found = async {
                let tenant = self.store.tenants().by_id(caller.tenant).await?;
                let agent = self.store.agents(caller.tenant).by_id(caller.agent).await?;
                let owned = self.store.jobs(caller.tenant).list(Some(caller.agent)).await?;
                Ok::<_, clade_store::Error>((tenant, agent, owned))
            };
            let (tenant, agent, owned) = found.await.map_err(Error::relied)?;
            JobLimits::of(&self.tenants, tenant.name.as_str(), agent.handle.as_str())
                .check(&new, owned.len())
                .map_err(Error::relied)?;
            let job = self.store.create_job(new).await.map_err(|e| match e {
                clade_store::Error::JobExists(name) => format!(
                    "you already have a job named {name:?}: choose another name, or remove it with cron.remove"
                ),
                other => other.to_string(),
            })?;
            Ok(describe(&job).to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// The job's name, as cron.list shows it.
    pub name: String,
}

pub struct CronRemove(Store);

impl TypedTool for CronRemove {
    type Args = RemoveArgs;
    const NAME: &'static str = "cron.remove";
    const DESCRIPTION: &'static str = "Remove one of your scheduled jobs by name.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("name");
    fn resource(&self, args: &RemoveArgs) -> Result<String, Error> {
        Ok(args.name.clone())
    }
    fn run<'a>(&'a self, args: RemoveArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            if args.name == crate::heartbeats::HEARTBEAT_JOB {
                return Err(Error::failed(
                    "your heartbeat is the operator's (clade.yaml's `heartbeats`): it cannot be removed from here",
                ));
            }
            let job = match self.0.jobs(caller.tenant).named(caller.agent, &args.name).await {
                Ok(job) => job,
                // Removed already (a retried call): the outcome asked for holds.
                Err(clade_store::Error::JobNotFound(_)) => {
                    return Ok(format!("you have no job named {:?}", args.name));
                }
                Err(other) => return Err(Error::relied(other)),
            };
            self.0.jobs(caller.tenant).delete(job.id).await.map_err(Error::relied)?;
            Ok(format!("removed job {:?}", job.name))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableArgs {
    /// The job's name, as cron.list shows it.
    pub name: String,
    /// False to pause it; true (the default) to start it again, after it was paused or
    /// disabled for failing (fix the cause first).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

pub struct CronEnable(Store);

impl TypedTool for CronEnable {
    type Args = EnableArgs;
    const NAME: &'static str = "cron.enable";
    const DESCRIPTION: &'static str = "Enable one of your jobs again (after it was paused, or disabled for failing runs), or pause it with enabled=false.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("name");
    fn resource(&self, args: &EnableArgs) -> Result<String, Error> {
        Ok(args.name.clone())
    }
    fn run<'a>(&'a self, args: EnableArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            if args.name == crate::heartbeats::HEARTBEAT_JOB {
                return Err(Error::failed(
                    "your heartbeat is the operator's (clade.yaml's `heartbeats`)",
                ));
            }
            let job =
                self.0.jobs(caller.tenant).named(caller.agent, &args.name).await.map_err(|e| {
                    match e {
                        clade_store::Error::JobNotFound(_) => {
                            format!("you have no job named {:?}: cron.list shows yours", args.name)
                        }
                        other => other.to_string(),
                    }
                })?;
            let job = self
                .0
                .jobs(caller.tenant)
                .set_enabled(job.id, args.enabled, None)
                .await
                .map_err(Error::relied)?;
            Ok(describe(&job).to_string())
        })
    }
}
