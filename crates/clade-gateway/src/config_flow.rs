//! Applying a configuration to the deployment: the one flow `clade config apply`, its revert
//! and the API run. Each step either passes or stops the flow with nothing changed, saying
//! which step failed and why: parse (YAML and types: unknown keys are errors), check (what
//! types cannot say, heartbeats checked as jobs), write (the new file beside the old, not yet
//! in its place), record (the revision, its audit record and `config.applied` event in one
//! transaction), then the new file takes the old one's place. A serving gateway reloads when it
//! sees the new revision ([`hot`] says which sections it takes at once).

use std::path::{Path, PathBuf};

use clade_config::Config;
use clade_store::{ConfigRevision, NewConfigRevision, Store};

/// A step of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Parse,
    Check,
    Smoke,
    Write,
    Record,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Parse => "parse",
            Step::Check => "check",
            Step::Smoke => "smoke test",
            Step::Write => "write",
            Step::Record => "record",
        })
    }
}

/// Why a configuration was not applied; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("not applied: the {step} step failed: {why}")]
pub struct ApplyError {
    pub step: Step,
    pub why: String,
}

fn failed(step: Step) -> impl FnOnce(String) -> ApplyError {
    move |why| ApplyError { step, why }
}

/// What applying did.
#[derive(Debug, Clone)]
pub enum Applied {
    /// The text is the one in force already: no revision.
    Unchanged,
    Revision {
        revision: ConfigRevision,
        /// Sections that changed and take effect only at the next start.
        at_restart: Vec<&'static str>,
    },
}

/// The top-level sections, and whether a serving gateway takes a change to each at once.
const SECTIONS: &[(&str, bool)] = &[
    ("server", false),
    ("store", false),
    ("log", false),
    ("models", true),
    ("routing", true),
    ("budgets", true),
    ("sessions", true),
    ("bindings", true),
    ("default_agent", true),
    ("subscribers", true),
    ("tools", true),
    ("mcp", true),
    ("tool_hosts", true),
    ("openapi", true),
    ("settings", true),
    ("tenants", true),
    ("scheduler", true),
    ("heartbeats", true),
    ("memory", true),
    ("channels", false),
    ("cluster", false),
    // Read by `clade tui` at its own start; the gateway has no use for it.
    ("tui", true),
    ("testing", false),
];

/// The sections that differ between `old` and `new`, each with whether it is taken at once.
pub fn changed_sections(old: &Config, new: &Config) -> Vec<(&'static str, bool)> {
    let (old, new) = match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(old), Ok(new)) => (old, new),
        _ => return SECTIONS.to_vec(),
    };
    SECTIONS.iter().copied().filter(|(name, _)| old.get(name) != new.get(name)).collect()
}

/// The sections a serving gateway takes at once (the rest at its next start).
pub fn hot() -> impl Iterator<Item = &'static str> {
    SECTIONS.iter().filter(|(_, hot)| *hot).map(|(name, _)| *name)
}

/// Parses and checks `text` as the configuration at `path`, as apply does.
pub fn validate(text: &str, path: &Path, now: clade_core::Timestamp) -> Result<Config, ApplyError> {
    let config = Config::parse(text, path).map_err(|e| failed(Step::Parse)(e.to_string()))?;
    config.check(path).map_err(|e| failed(Step::Check)(e.to_string()))?;
    clade_sched::check_config(&config, now).map_err(|e| failed(Step::Check)(e.to_string()))?;
    Ok(config)
}

/// Why a trial of a new configuration failed (its smoke test's own error).
pub type TrialError = Box<dyn std::error::Error + Send + Sync>;

/// An optional step between check and write: tries the new configuration (say, one call to
/// its model) and says why it will not do.
pub type SmokeTest<'a> =
    Box<dyn FnOnce(&Config) -> futures::future::BoxFuture<'a, Result<(), TrialError>> + Send + 'a>;

/// What a configuration needs from the environment of the gateway that runs it and did not
/// find there: a variable that is not set (a channel's token, a hook's or subscriber's secret),
/// or a secret that is not one. It names the field and the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unmet(pub String);

/// Checks what a configuration needs from the environment: `Err` names what is missing, which
/// would keep `clade serve` from starting.
pub type EnvironmentCheck = std::sync::Arc<dyn Fn(&Config) -> Result<(), Unmet> + Send + Sync>;

/// What applying tries besides parsing and checking the text.
#[derive(Default)]
pub struct Trials<'a> {
    /// The environment the configuration will run in: refused as the next start would be.
    pub environment: Option<EnvironmentCheck>,
    /// A call through the new configuration's model.
    pub smoke: Option<SmokeTest<'a>>,
}

/// A smoke test a serving gateway can run for a configuration the API applies (owned, as the
/// gateway keeps it).
pub type SmokeFn = std::sync::Arc<
    dyn Fn(Config) -> futures::future::BoxFuture<'static, Result<(), TrialError>> + Send + Sync,
>;

/// Applies `text` as the configuration at `path` (see the module's documentation), recorded
/// as applied by `store`'s actor; `named` is where the text came from, which its errors name
/// (the file given to `clade config apply`, say); `reverts` names the revision a revert goes
/// back to; `trials` run after the check.
pub async fn apply(
    store: &Store,
    path: &Path,
    named: &Path,
    text: &str,
    reverts: Option<i64>,
    trials: Trials<'_>,
) -> Result<Applied, ApplyError> {
    let config = validate(text, named, store.now())?;
    if let Some(environment) = &trials.environment {
        environment(&config).map_err(|missing| {
            failed(Step::Check)(format!(
                "{}: {missing}; `clade serve` would refuse to start with it: set the variable where the gateway runs, then apply again",
                named.display()
            ))
        })?;
    }
    if let Some(smoke) = trials.smoke {
        smoke(&config).await.map_err(|e| failed(Step::Smoke)(e.to_string()))?;
    }
    let before = match std::fs::read_to_string(path) {
        Ok(before) => before,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            return Err(failed(Step::Write)(format!("cannot read {}: {err}", path.display())));
        }
    };
    if before == text && reverts.is_none() {
        return Ok(Applied::Unchanged);
    }
    let old = Config::parse(&before, path).unwrap_or_default();
    let at_restart = changed_sections(&old, &config)
        .into_iter()
        .filter(|(_, hot)| !hot)
        .map(|(name, _)| name)
        .collect();
    let latest =
        store.config_revisions().latest().await.map_err(|e| failed(Step::Record)(e.to_string()))?;
    let diff = similar::TextDiff::from_lines(before.as_str(), text)
        .unified_diff()
        .context_radius(3)
        .header(&format!("revision {latest}"), &format!("revision {}", latest + 1))
        .to_string();
    let staged = staged_path(path);
    write_staged(&staged, text).map_err(|e| {
        failed(Step::Write)(format!(
            "cannot write {} beside {}: {e}",
            staged.display(),
            path.display()
        ))
    })?;
    let recorded = store
        .config_revisions()
        .record(NewConfigRevision { yaml: text.to_owned(), diff, reverts })
        .await;
    let revision = match recorded {
        Ok(revision) => revision,
        Err(err) => {
            let _ = std::fs::remove_file(&staged);
            return Err(failed(Step::Record)(err.to_string()));
        }
    };
    std::fs::rename(&staged, path).map_err(|e| {
        failed(Step::Write)(format!(
            "revision {} was recorded (the gateway runs it) but {} could not be replaced: {e}; copy it from `clade config diff {}`",
            revision.revision,
            path.display(),
            revision.revision
        ))
    })?;
    Ok(Applied::Revision { revision, at_restart })
}

fn staged_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.applying"))
}

/// Writes `text` to `staged`, durable, private like the data dir.
fn write_staged(staged: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(staged)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// `config.apply`: an agent applies a whole configuration through this same flow. It touches
/// the host (the deployment's file), so policy denies it unless a rule allows it for the agent;
/// and only the operator's agents (the default tenant's) may, whatever another tenant grants
/// its own. The revision records the agent as who applied it.
pub struct ApplyTool {
    store: Store,
    path: PathBuf,
    environment: EnvironmentCheck,
}

impl ApplyTool {
    /// Applies to the configuration at `path`, refusing what `environment` says the gateway's
    /// next start would refuse.
    pub fn new(store: Store, path: PathBuf, environment: EnvironmentCheck) -> Self {
        Self { store, path, environment }
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyArgs {
    /// The whole configuration, as clade.yaml's text.
    pub yaml: String,
}

impl clade_tools::TypedTool for ApplyTool {
    type Args = ApplyArgs;
    const NAME: &'static str = "config.apply";
    const DESCRIPTION: &'static str = "Apply a whole new configuration (clade.yaml's text) to the deployment: it is parsed, checked, written and recorded as a revision, and the gateway takes it within a second. Denied unless the operator allows it.";
    const TOUCHES_HOST: bool = true;
    fn run<'a>(
        &'a self,
        args: ApplyArgs,
        ctx: &'a clade_tools::CallContext,
    ) -> futures::future::BoxFuture<'a, clade_tools::ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            // Whatever a tenant may grant its agents, the deployment is the operator's.
            let operator = self.store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await;
            if operator.map(|t| t.id).ok() != Some(caller.tenant) {
                return Err(clade_tools::Error::failed(
                    "config.apply is the operator's: only agents of the default tenant may apply the deployment's configuration",
                ));
            }
            let who = match self.store.agents(caller.tenant).by_id(caller.agent).await {
                Ok(agent) => format!("agent {}", agent.handle),
                Err(_) => format!("agent {}", caller.agent),
            };
            let store = self.store.acting_as(who);
            let trials = Trials { environment: Some(self.environment.clone()), smoke: None };
            match apply(&store, &self.path, &self.path, &args.yaml, None, trials).await {
                Ok(Applied::Unchanged) => {
                    Ok("nothing applied: the configuration already says this".into())
                }
                Ok(Applied::Revision { revision, at_restart }) => Ok(format!(
                    "applied revision {}{}",
                    revision.revision,
                    if at_restart.is_empty() {
                        String::new()
                    } else {
                        format!("; at the next start: {}", at_restart.join(", "))
                    }
                )),
                Err(err) => Err(clade_tools::Error::Failed(err.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every section of the configuration is listed, so `apply` says whether a change to it is
    /// taken at once or waits for a restart, and none goes unmentioned.
    #[test]
    fn every_section_is_listed() {
        let Ok(serde_json::Value::Object(config)) = serde_json::to_value(Config::default()) else {
            panic!("the configuration is a map");
        };
        let listed: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
        let missing: Vec<&String> =
            config.keys().filter(|k| !listed.contains(&k.as_str())).collect();
        assert!(missing.is_empty(), "sections missing from SECTIONS: {missing:?}");
    }
}
