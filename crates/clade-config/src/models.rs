//! Models (`models`), which of them each kind of call uses (`routing`), and spending limits (`budgets`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// One named model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: ProviderKind,
    /// The provider's model id; defaults to this entry's name.
    #[serde(default)]
    pub model: Option<String>,
    /// API base URL, e.g. `http://127.0.0.1:11434/v1` for Ollama; defaults to the provider's.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key. Keys never go in this file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Name of the calling agent's secret holding the API key (`clade secrets set`).
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Subscription credentials refreshed with OAuth2.
    #[serde(default)]
    pub oauth: Option<OAuthModelConfig>,
    /// Stream responses (default) or wait for complete ones.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Prices in US dollars per million tokens, for cost accounting and cost budgets.
    #[serde(default)]
    pub price: PriceConfig,
    /// Longest reply, in tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The model's context window in tokens (prompt and reply), which a turn's prompt is
    /// fitted to and compaction keeps a session's context within [default: 4096 for
    /// `provider: local`, else 128000].
    #[serde(default)]
    pub context_window: Option<u32>,
    /// The most tokens of tool schemas one call offers: the tools the turn's messages point
    /// at, ranked, and `tools.find` for the rest [default: an eighth of the window, at most
    /// 2000].
    #[serde(default)]
    pub tool_tokens: Option<u32>,
    /// Speak HTTP/2 to an `http://` base URL from the first byte (h2c with prior knowledge),
    /// for a local server that supports it: concurrent calls then share one connection instead
    /// of holding one each. Over `https://` HTTP/2 is negotiated by itself when the server
    /// offers it (OpenAI and Anthropic do), so this is rarely needed.
    #[serde(default)]
    pub http2: bool,
    /// `provider: local` only: answers the model generates at once, each on its own copy of
    /// the attention cache (1 to 16) [default: one per two cores, at most 4].
    #[serde(default)]
    #[schemars(range(min = 1, max = 16))]
    pub concurrency: Option<u32>,
}

/// Which wire protocol a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions and every compatible server.
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// The offline scripted provider (not a language model).
    Scripted,
    /// A small chat model run in process (a GGUF file; `model` names its folder under the
    /// data dir's `models`, as `clade models fetch local` installs it, or is a file's path).
    Local,
}

/// OAuth2 credentials: the tokens live in an agent secret (JSON with `access_token`,
/// `refresh_token`, `expires_at` in Unix milliseconds) and are refreshed in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthModelConfig {
    pub token_url: String,
    pub client_id: String,
    /// Name of the agent secret holding the tokens.
    pub secret: String,
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    #[serde(default)]
    pub input_per_mtok: f64,
    #[serde(default)]
    pub output_per_mtok: f64,
    #[serde(default)]
    pub cached_input_per_mtok: f64,
    #[serde(default)]
    pub cache_write_per_mtok: f64,
}

/// Model chains per kind of call; each list is tried in order (fallbacks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Used when a kind has no chain of its own.
    #[serde(default)]
    pub default: Vec<String>,
    #[serde(flatten)]
    pub kinds: RouteKinds,
    /// Per-agent overrides, keyed by agent reference (`tenant/handle`, or a bare handle in the
    /// default tenant).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRouting>,
    /// Per-template chains, keyed by persona template (`coder`, `researcher`, a folder under
    /// `<data-dir>/templates/`): the agents made from it use them unless `agents` names their
    /// own, so a role brings its models (a coder's larger model, a reviewer's careful one).
    #[serde(default)]
    pub templates: BTreeMap<String, AgentRouting>,
    /// Retries on one model before falling back (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Seconds a rate-limited model is skipped (default 30).
    #[serde(default)]
    pub cooldown_secs: Option<u64>,
}

/// A chain per process type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteKinds {
    #[serde(default)]
    pub channel: Vec<String>,
    #[serde(default)]
    pub branch: Vec<String>,
    #[serde(default)]
    pub worker: Vec<String>,
    #[serde(default)]
    pub compactor: Vec<String>,
    #[serde(default)]
    pub cortex: Vec<String>,
}

/// An agent's own chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRouting {
    #[serde(default)]
    pub default: Vec<String>,
    #[serde(flatten)]
    pub kinds: RouteKinds,
}

/// Spending limits per tenant and per agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Keyed by tenant name.
    #[serde(default)]
    pub tenants: BTreeMap<String, Limits>,
    /// Keyed by `tenant/handle`, or a bare handle for the default tenant.
    #[serde(default)]
    pub agents: BTreeMap<String, Limits>,
}

/// Limits over UTC calendar days and months; any subset may be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
}

/// The chains of each process type, with their names.
pub fn kinds(kinds: &RouteKinds) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
    [
        ("channel", &kinds.channel),
        ("branch", &kinds.branch),
        ("worker", &kinds.worker),
        ("compactor", &kinds.compactor),
        ("cortex", &kinds.cortex),
    ]
    .into_iter()
}

impl Config {
    /// Each model's provider, key, concurrency and the local model's settings.
    pub(crate) fn check_models(&self) -> Result<(), Invalid> {
        for (name, model) in &self.models {
            if let Some(n) = model.concurrency {
                if model.provider != ProviderKind::Local {
                    return fail(format!(
                        "models.{name}.concurrency: only a local model (provider: local) takes it; a remote provider limits its own calls"
                    ));
                }
                if !(1..=16).contains(&n) {
                    return fail(format!(
                        "models.{name}.concurrency: {n} answers at once; give 1 to 16"
                    ));
                }
            }
            if !matches!(model.provider, ProviderKind::Scripted | ProviderKind::Local)
                && model.api_key_env.is_none()
                && model.api_key_secret.is_none()
                && model.oauth.is_none()
                && model.base_url.is_none()
            {
                return fail(format!(
                    "models.{name}: set api_key_env, api_key_secret or oauth (or base_url for a local server without keys)"
                ));
            }
            if model.api_key_env.is_some() as u8
                + model.api_key_secret.is_some() as u8
                + model.oauth.is_some() as u8
                > 1
            {
                return fail(format!(
                    "models.{name}: use only one of api_key_env, api_key_secret, oauth"
                ));
            }
            let p = model.price;
            if [
                p.input_per_mtok,
                p.output_per_mtok,
                p.cached_input_per_mtok,
                p.cache_write_per_mtok,
            ]
            .iter()
            .any(|v| !v.is_finite() || *v < 0.0)
            {
                return fail(format!("models.{name}.price: prices must be zero or positive"));
            }
            if model.max_tokens == Some(0) {
                return fail(format!("models.{name}.max_tokens: must be at least 1"));
            }
            if model.context_window.is_some_and(|w| w < 1024) {
                return fail(format!("models.{name}.context_window: must be at least 1024 tokens"));
            }
            if let (Some(tools), window) = (model.tool_tokens, model.context_window)
                && tools > window.unwrap_or(u32::MAX) / 2
            {
                return fail(format!(
                    "models.{name}.tool_tokens: {tools} is more than half the context_window; lower it so that the conversation fits"
                ));
            }
        }
        if let Some(local) =
            self.memory.embeddings.as_deref().and_then(|n| n.strip_prefix(LOCAL_PREFIX))
        {
            let fits = !local.is_empty()
                && local.len() <= 64
                && local.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !local.starts_with('.');
            if !fits {
                return fail(format!(
                    "memory.embeddings: {local:?} is not a local model's name (a folder under the data dir's models/: letters, digits, '-', '_', '.')"
                ));
            }
        } else if let Some(name) = &self.memory.embeddings {
            match self.models.get(name) {
                None => {
                    return fail(format!(
                        "memory.embeddings: model {name:?} is not defined under models"
                    ));
                }
                Some(model) if model.provider != ProviderKind::Openai => {
                    return fail(format!(
                        "memory.embeddings: model {name:?} must have provider openai (an OpenAI-compatible /embeddings endpoint)"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Every routing chain names declared models.
    pub(crate) fn check_routing(&self) -> Result<(), Invalid> {
        let known = |m: &String| self.models.contains_key(m) || m == "scripted";
        let r = &self.routing;
        let mut chains: Vec<(String, &Vec<String>)> = vec![("routing.default".into(), &r.default)];
        chains.extend(kinds(&r.kinds).map(|(k, v)| (format!("routing.{k}"), v)));
        for (section, entries) in [("agents", &r.agents), ("templates", &r.templates)] {
            for (name, routes) in entries {
                chains.push((format!("routing.{section}.{name}.default"), &routes.default));
                chains.extend(
                    kinds(&routes.kinds).map(|(k, v)| (format!("routing.{section}.{name}.{k}"), v)),
                );
            }
        }
        for (field, chain) in chains {
            if let Some(missing) = chain.iter().find(|m| !known(m)) {
                return fail(format!("{field}: model {missing:?} is not defined under models"));
            }
        }
        Ok(())
    }

    /// Budget limits are zero or positive.
    pub(crate) fn check_budgets(&self) -> Result<(), Invalid> {
        for (scope, limits) in self
            .budgets
            .tenants
            .iter()
            .map(|(k, v)| (format!("budgets.tenants.{k}"), v))
            .chain(self.budgets.agents.iter().map(|(k, v)| (format!("budgets.agents.{k}"), v)))
        {
            if [limits.usd_per_day, limits.usd_per_month]
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return fail(format!("{scope}: dollar limits must be zero or positive"));
            }
        }
        Ok(())
    }
}
