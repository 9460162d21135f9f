//! The tools and rules in force ([`ToolSet`]): a generation-numbered snapshot a turn runs with, the model's view of the tools, and their arguments checked against their schemas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clade_config::ToolsConfig;
use clade_tools::Registry;
use clade_tools::policy::SourcedRule;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The tools and the operator's rules at one generation. A [`ToolRunner`] swaps its set whole
/// ([`ToolRunner::reload`]); whoever took a set ([`ToolRunner::tool_set`]) keeps it, so a turn
/// finishes on the tools and rules it started with.
pub struct ToolSet {
    pub(super) generation: u64,
    pub(super) registry: Registry,
    pub(super) rules: Vec<SourcedRule>,
    pub(super) approval_timeout: Duration,
    /// Every tool's spec for the model, with a digest of all of them; a set never changes, so
    /// schemas are generated once rather than on every turn.
    pub(super) specs: std::sync::OnceLock<(Arc<[clade_model::ToolSpec]>, String)>,
    /// The tool lists of agents that lack some tools, by which tools they have.
    pub(super) spec_lists: Mutex<HashMap<Vec<bool>, Arc<[clade_model::ToolSpec]>>>,
    /// The operator's per-tenant settings (`tenants:` in clade.yaml): what each tenant's own
    /// token may grant (`ceiling`), and what its agents' workspaces may hold together.
    pub(super) tenants: Arc<std::collections::BTreeMap<String, clade_config::TenantConfig>>,
    /// Each tool's argument validator, compiled on its first call (`None`: unreadable schema).
    pub(super) validators: Mutex<HashMap<String, Option<Arc<jsonschema::Validator>>>>,
}

impl ToolSet {
    /// The bytes `tenant`'s agents' workspaces may hold together (`quotas.workspace_mib` of
    /// its own quotas, else of `"*"`'s, as every quota is read), if set.
    pub(super) fn workspace_quota(&self, tenant: &str) -> Option<u64> {
        let quotas = |name: &str| self.tenants.get(name).and_then(|t| t.quotas);
        let mib = quotas(tenant).or_else(|| quotas("*"))?.workspace_mib?;
        Some(mib.saturating_mul(1024 * 1024))
    }

    pub(super) fn new(generation: u64, registry: Registry, config: &ToolsConfig) -> Self {
        let rules = config
            .policy
            .iter()
            .enumerate()
            .map(|(index, rule)| SourcedRule {
                rule: rule.clone(),
                source: format!("clade.yaml tools.policy[{index}]"),
            })
            .collect();
        Self {
            generation,
            registry,
            rules,
            approval_timeout: Duration::from_secs(config.approval_timeout_secs),
            specs: std::sync::OnceLock::new(),
            spec_lists: Mutex::default(),
            tenants: Arc::default(),
            validators: Mutex::default(),
        }
    }

    /// 1 for the set the process started with, one more for each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn all_specs(&self) -> &(Arc<[clade_model::ToolSpec]>, String) {
        self.specs.get_or_init(|| {
            let specs: Vec<clade_model::ToolSpec> = self
                .registry
                .iter()
                .map(|t| clade_model::ToolSpec {
                    name: t.name().to_owned(),
                    description: t.description().to_owned(),
                    input_schema: t.input_schema(),
                })
                .collect();
            let mut digest = Sha256::new();
            for spec in &specs {
                digest.update(spec.name.as_bytes());
                digest.update(spec.description.as_bytes());
                digest.update(spec.input_schema.to_string().as_bytes());
                digest.update([0]);
            }
            (specs.into(), hex::encode(digest.finalize()))
        })
    }

    /// The specs of the tools the agent `handle` of the tenant named `tenant` has, as the model
    /// sees them.
    pub fn specs_for(&self, tenant: &str, handle: &str) -> Arc<[clade_model::ToolSpec]> {
        self.specs_offered(tenant, handle, |_| true)
    }

    /// [`ToolSet::specs_for`], of the tools `offered` keeps (a branch's or worker's narrower
    /// set).
    pub fn specs_offered(
        &self,
        tenant: &str,
        handle: &str,
        offered: impl Fn(&str) -> bool,
    ) -> Arc<[clade_model::ToolSpec]> {
        let (specs, _) = self.all_specs();
        let has = |s: &clade_model::ToolSpec| {
            offered(&s.name) && self.registry.get_for(&s.name, tenant, handle).is_some()
        };
        // Most agents have every tool (only MCP servers are per agent); agents with the same
        // tools share one list, so a turn clones no schema.
        if specs.iter().all(has) {
            return specs.clone();
        }
        let has: Vec<bool> = specs.iter().map(has).collect();
        let mut lists = self.spec_lists.lock().unwrap_or_else(|e| e.into_inner());
        lists
            .entry(has)
            .or_insert_with_key(|has| {
                specs.iter().zip(has).filter(|(_, has)| **has).map(|(s, _)| s.clone()).collect()
            })
            .clone()
    }

    /// A digest of every tool's name, description and schema.
    pub fn specs_digest(&self) -> &str {
        &self.all_specs().1
    }

    /// `Err` naming what is wrong when `args` do not fit `tool`'s JSON Schema: what the model
    /// (or caller) is told, so it can call again. A schema the validator cannot read (a tool
    /// host's, say) checks nothing; the tool still reads its arguments itself.
    pub fn check_arguments(
        &self,
        tool: &dyn clade_tools::Tool,
        args: &Value,
    ) -> Result<(), InvalidArguments> {
        let validator = {
            let mut validators = self.validators.lock().unwrap_or_else(|e| e.into_inner());
            validators
                .entry(tool.name().to_owned())
                .or_insert_with(|| {
                    let schema = tool.input_schema();
                    match jsonschema::validator_for(&schema) {
                        Ok(validator) => Some(Arc::new(validator)),
                        Err(err) => {
                            tracing::warn!(tool = tool.name(), error = %err, "the tool's argument schema cannot be read; its calls are not checked against it");
                            None
                        }
                    }
                })
                .clone()
        };
        let Some(validator) = validator else { return Ok(()) };
        let problems: Vec<String> = validator
            .iter_errors(args)
            .take(3)
            .map(|error| {
                let at = error.instance_path().to_string();
                if at.is_empty() { error.to_string() } else { format!("{at}: {error}") }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(InvalidArguments {
            tool: tool.name().to_owned(),
            problems,
            parameters: tool.input_schema(),
        })
    }
}

/// A call's arguments do not fit its tool's schema: the validator's first problems, and the
/// parameters the tool takes, which is what the model needs to call again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid arguments for {tool}: {}; its parameters are {parameters}", problems.join("; "))]
pub struct InvalidArguments {
    pub tool: String,
    pub problems: Vec<String>,
    pub parameters: Value,
}

impl From<InvalidArguments> for clade_tools::Error {
    fn from(invalid: InvalidArguments) -> Self {
        let reason =
            format!("{}; its parameters are {}", invalid.problems.join("; "), invalid.parameters);
        clade_tools::Error::InvalidArguments { tool: invalid.tool, reason }
    }
}
