//! The models an agent's calls can use: `clade.yaml`'s models and routes (or the quick-start
//! environment variables, or the offline scripted provider), turned into a [`Router`] with
//! credentials from the environment or the agent's encrypted secrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use clade_config::{Config, ModelConfig, ProviderKind, RoutingConfig};
use clade_core::{Agent, Clock, SecretName};
use clade_model::anthropic::Anthropic;
use clade_model::oauth::{OAuth2, OAuthConfig, OAuthTokens, TokenStore};
use clade_model::openai::OpenAi;
use clade_model::{
    CredentialProvider, Error, HttpOptions, ModelEntry, Price, Provider, Router, RouterOptions,
    Scripted,
};
use clade_store::{Secrets, Store, UsageRecord};
use futures::future::BoxFuture;

/// The context window assumed for a model whose entry gives none, in tokens.
pub const DEFAULT_CONTEXT_WINDOW: u32 = 128_000;

/// The context window of a local model whose entry gives none: the most candle's llama runs
/// (its rotary tables' length), which SmolLM2's own 8,192 is cut to.
pub const LOCAL_CONTEXT_WINDOW: u32 = 4096;

/// The most tokens of tool schemas a call offers by default, however large the window.
pub const DEFAULT_TOOL_TOKENS: u32 = 2000;

/// A model's window: its entry's, else what its provider is known to hold.
fn window_of(model: &ModelConfig) -> u32 {
    model.context_window.unwrap_or(match model.provider {
        ProviderKind::Local => LOCAL_CONTEXT_WINDOW,
        _ => DEFAULT_CONTEXT_WINDOW,
    })
}

/// The name of the built-in offline model, usable in any route.
pub const SCRIPTED: &str = "scripted";

/// The environment variables model set-up may read, collected by the binary (the only place
/// that reads the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvHints {
    pub vars: HashMap<String, String>,
}

impl EnvHints {
    /// Variables to collect: the quick-start ones plus every `api_key_env` in the config.
    pub fn wanted(config: &Config) -> Vec<String> {
        let mut names: Vec<String> = [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "CLADE_MODEL",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        names.extend(config.models.values().filter_map(|m| m.api_key_env.clone()));
        names
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

pub use clade_core::ProcessKind;

/// The configured route of `kind`.
fn route_of(kind: ProcessKind, kinds: &clade_config::RouteKinds) -> &Vec<String> {
    match kind {
        ProcessKind::Channel => &kinds.channel,
        ProcessKind::Branch => &kinds.branch,
        ProcessKind::Worker => &kinds.worker,
        ProcessKind::Compactor => &kinds.compactor,
        ProcessKind::Cortex => &kinds.cortex,
    }
}

/// Resolved model configuration for a process.
#[derive(Clone)]
pub struct Models {
    models: BTreeMap<String, ModelConfig>,
    routing: RoutingConfig,
    budgets: clade_config::BudgetsConfig,
    store: Store,
    env: EnvHints,
    client: reqwest::Client,
    /// For models with `http2: true` (HTTP/2 with prior knowledge).
    client_h2: reqwest::Client,
    secrets: Secrets,
    clock: Arc<dyn Clock>,
    /// Where the routers' back-off jitter comes from; `None`: each router seeds its own.
    jitter: Option<Arc<clade_core::Jitter>>,
    /// Routers by credential scope (see [`Models::router_for`]), built once: their providers,
    /// credentials (decrypted secrets, OAuth tokens refreshed one at a time) and cooldowns
    /// outlive a call.
    routers: Arc<std::sync::Mutex<HashMap<Option<clade_core::AgentId>, Arc<Router>>>>,
    /// The agents that made each agent (see [`Models::ancestors`]), read once: an agent's
    /// parent never changes.
    ancestors: Arc<std::sync::Mutex<HashMap<clade_core::AgentId, Ancestors>>>,
}

/// The agents that made an agent, nearest first, with their handles.
type Ancestors = Arc<[(clade_core::AgentId, String)]>;

/// Routers kept at most (one per agent whose models use its own secrets); past it the cache
/// starts over, which only costs rebuilding them.
const MAX_ROUTERS: usize = 4096;

/// Who a model call is routed for: the agent's tenant, handle and persona template.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    pub tenant: &'a str,
    pub handle: &'a str,
    pub template: &'a str,
}

impl<'a> Routed<'a> {
    pub fn of(tenant: &'a clade_core::Tenant, agent: &'a Agent) -> Self {
        Self {
            tenant: tenant.name.as_str(),
            handle: agent.handle.as_str(),
            template: agent.config.template.as_str(),
        }
    }
}

impl Models {
    pub fn new(
        config: &Config,
        env: EnvHints,
        store: Store,
        secrets: Secrets,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (models, routing) = resolve(config, &env);
        Self {
            models,
            routing,
            budgets: config.budgets.clone(),
            store,
            env,
            client: reqwest::Client::new(),
            client_h2: reqwest::Client::builder().http2_prior_knowledge().build().unwrap_or_else(
                |err| {
                    tracing::warn!(error = %err, "cannot set up HTTP/2 with prior knowledge; models with `http2: true` use HTTP/1.1");
                    reqwest::Client::new()
                },
            ),
            secrets,
            clock,
            jitter: None,
            routers: Arc::default(),
            ancestors: Arc::default(),
        }
    }

    /// The models of a new configuration revision, succeeding these: the HTTP clients (and
    /// their open connections) carry over, and so do the routers, with their cooldowns, when
    /// the models and the retry settings are unchanged (a change of routes or budgets only).
    /// A swap then opens no new connection to a provider.
    pub fn succeed(&self, config: &Config, env: EnvHints) -> Self {
        let (models, routing) = resolve(config, &env);
        let same_routers = models == self.models
            && env == self.env
            && routing.retries == self.routing.retries
            && routing.cooldown_secs == self.routing.cooldown_secs;
        Self {
            models,
            routing,
            budgets: config.budgets.clone(),
            store: self.store.clone(),
            env,
            client: self.client.clone(),
            client_h2: self.client_h2.clone(),
            secrets: self.secrets.clone(),
            clock: self.clock.clone(),
            jitter: self.jitter.clone(),
            routers: if same_routers { self.routers.clone() } else { Arc::default() },
            ancestors: self.ancestors.clone(),
        }
    }

    /// The same models with every router's back-off jitter drawn from `jitter` (seeded by a
    /// test or the simulator, so retries replay exactly).
    pub fn with_jitter(self, jitter: Arc<clade_core::Jitter>) -> Self {
        Self { jitter: Some(jitter), ..self }
    }

    /// The fallback chain for a kind of call by an agent: the agent's own chain for the kind
    /// (`routing.agents`, by agent reference), else its own default, else its template's chain
    /// for the kind (`routing.templates`), else the template's default, else the deployment's
    /// chain for the kind, else the default.
    pub fn chain(&self, kind: ProcessKind, agent: Option<Routed<'_>>) -> Vec<String> {
        let own =
            agent.and_then(|a| clade_config::for_agent(&self.routing.agents, a.tenant, a.handle));
        let role = agent.and_then(|a| self.routing.templates.get(a.template));
        [
            own.map(|a| route_of(kind, &a.kinds)),
            own.map(|a| &a.default),
            role.map(|a| route_of(kind, &a.kinds)),
            role.map(|a| &a.default),
            Some(route_of(kind, &self.routing.kinds)),
            Some(&self.routing.default),
        ]
        .into_iter()
        .flatten()
        .find(|chain| !chain.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![SCRIPTED.to_owned()])
    }

    /// Whether every call would go to the offline scripted provider.
    pub fn offline_only(&self) -> bool {
        self.models.values().all(|m| m.provider == ProviderKind::Scripted)
            && self.routing.default.iter().all(|m| m == SCRIPTED || self.models.contains_key(m))
    }

    /// One line for `clade serve`'s start-up message.
    pub fn describe(&self) -> String {
        if self.offline_only() {
            return "scripted offline provider (no model configured; it echoes and is not a language model)".into();
        }
        let chain = &self.routing.default;
        let first = chain.first().and_then(|name| self.models.get(name).map(|m| (name, m)));
        match first {
            Some((name, m)) => format!(
                "{name} ({:?} {}){}",
                m.provider,
                m.model.as_deref().unwrap_or(name),
                if chain.len() > 1 {
                    format!(", falling back to {}", chain[1..].join(", "))
                } else {
                    String::new()
                }
            )
            .to_lowercase(),
            None => chain.join(", "),
        }
    }

    /// Configured models as (name, provider, model id, base URL).
    pub fn list(&self) -> Vec<(String, String, String, String)> {
        let mut out: Vec<_> = self
            .models
            .iter()
            .map(|(name, m)| {
                (
                    name.clone(),
                    format!("{:?}", m.provider).to_lowercase(),
                    m.model.clone().unwrap_or_else(|| name.clone()),
                    m.base_url.clone().unwrap_or_else(|| default_base(m.provider).to_owned()),
                )
            })
            .collect();
        if !self.models.contains_key(SCRIPTED) {
            out.push((
                SCRIPTED.into(),
                SCRIPTED.into(),
                SCRIPTED.into(),
                "(built in, offline)".into(),
            ));
        }
        out
    }

    /// Calls the route for `kind` on behalf of `tenant` (and `agent`): budgets are reserved
    /// before each attempt, and the usage of the successful call is recorded.
    pub async fn call(
        &self,
        tenant: &clade_core::Tenant,
        agent: Option<&Agent>,
        kind: ProcessKind,
        request: &clade_model::ModelRequest,
        on_event: &mut (dyn FnMut(&clade_model::StreamEvent) + Send),
    ) -> Result<clade_model::CallOutcome, clade_model::CallError> {
        let outcome = self.call_unrecorded(tenant, agent, kind, request, on_event).await?;
        let record = usage_record(tenant, agent, None, &outcome);
        if let Err(err) = self.store.record_usage(record).await {
            tracing::error!(error = %err, "could not record model usage");
        }
        Ok(outcome)
    }

    /// Like [`Models::call`], leaving the usage for the caller to record (the turn engine
    /// writes it in the same transaction as the journal entry).
    pub async fn call_unrecorded(
        &self,
        tenant: &clade_core::Tenant,
        agent: Option<&Agent>,
        kind: ProcessKind,
        request: &clade_model::ModelRequest,
        on_event: &mut (dyn FnMut(&clade_model::StreamEvent) + Send),
    ) -> Result<clade_model::CallOutcome, clade_model::CallError> {
        let chain = self.chain(kind, agent.map(|a| Routed::of(tenant, a)));
        let router = self.router_for(agent);
        let ancestors = match agent {
            Some(agent) => self.ancestors(tenant, agent).await,
            None => Arc::from(Vec::new()),
        };
        let budget = crate::StoreBudget::for_descendant(
            self.store.clone(),
            self.clock.clone(),
            &self.budgets,
            tenant,
            agent.map(|a| (a.id, a.handle.as_str())),
            &ancestors,
        );
        router
            .call(&chain, request, budget.as_ref().map(|b| b as &dyn clade_model::Budget), on_event)
            .await
    }

    /// The agents that made `agent` (whose budgets its calls count against too): read from the
    /// store only when agents have budgets, and then once per agent.
    async fn ancestors(&self, tenant: &clade_core::Tenant, agent: &Agent) -> Ancestors {
        if self.budgets.agents.is_empty() {
            return Arc::from(Vec::new());
        }
        if let Some(known) = self.ancestors.lock().ok().and_then(|m| m.get(&agent.id).cloned()) {
            return known;
        }
        let read = match self.store.lineage(tenant.id).ancestors_of(agent.id).await {
            Ok(read) => Arc::<[_]>::from(read),
            Err(err) => {
                // Not kept: the next call reads again.
                tracing::warn!(agent = %agent.handle, error = %err, "cannot read which agents made this one; its calls count against its own budget only");
                return Arc::from(Vec::new());
            }
        };
        if let Ok(mut known) = self.ancestors.lock() {
            if known.len() >= MAX_ROUTERS {
                known.clear();
            }
            known.insert(agent.id, read.clone());
        }
        read
    }

    /// The context window of the first model of `kind`'s chain for `agent`: what compaction
    /// keeps that agent's turns within.
    pub fn context_window(&self, kind: ProcessKind, agent: Option<Routed<'_>>) -> u32 {
        let chain = self.chain(kind, agent);
        chain
            .first()
            .and_then(|name| self.models.get(name))
            .map_or(DEFAULT_CONTEXT_WINDOW, window_of)
    }

    /// What a prompt of `kind` for `agent` may fill, in tokens: the first model's window less
    /// its longest answer ([`Models::answer_tokens`]) and its tool schemas' budget.
    pub fn prompt_room(&self, kind: ProcessKind, agent: Option<Routed<'_>>) -> u32 {
        let chain = self.chain(kind, agent);
        let Some(model) = chain.first().and_then(|name| self.models.get(name)) else {
            return DEFAULT_CONTEXT_WINDOW;
        };
        let answer = self.answer_tokens(kind, agent);
        let tools = self.tool_tokens(kind, agent);
        // However small the window, a prompt keeps a quarter of it.
        let window = window_of(model);
        window.saturating_sub(answer).saturating_sub(tools).max(window / 4)
    }

    /// The tokens of tool schemas a call of `kind` for `agent` may offer: the first model's
    /// `tool_tokens`, else an eighth of its window up to [`DEFAULT_TOOL_TOKENS`].
    pub fn tool_tokens(&self, kind: ProcessKind, agent: Option<Routed<'_>>) -> u32 {
        let chain = self.chain(kind, agent);
        let Some(model) = chain.first().and_then(|name| self.models.get(name)) else {
            return DEFAULT_TOOL_TOKENS;
        };
        model.tool_tokens.unwrap_or_else(|| (window_of(model) / 8).min(DEFAULT_TOOL_TOKENS))
    }

    /// The longest answer a turn's call of `kind` for `agent` asks for: the first model's
    /// `max_tokens`, else 1024.
    pub fn answer_tokens(&self, kind: ProcessKind, agent: Option<Routed<'_>>) -> u32 {
        let chain = self.chain(kind, agent);
        chain
            .first()
            .and_then(|name| self.models.get(name))
            .and_then(|model| model.max_tokens)
            .unwrap_or(clade_model::Params::default().max_tokens)
    }

    /// The router whose providers carry `agent`'s credentials: one for the whole deployment
    /// when no model takes its key from an agent's secrets, else one per agent, each built
    /// once and kept, so a rate limit's cooldown holds for every call with that credential.
    pub fn router_for(&self, agent: Option<&Agent>) -> Arc<Router> {
        let per_agent =
            self.models.values().any(|m| m.api_key_secret.is_some() || m.oauth.is_some());
        let scope = if per_agent { agent.map(|a| a.id) } else { None };
        if let Some(router) = self.routers.lock().ok().and_then(|r| r.get(&scope).cloned()) {
            return router;
        }
        let router = Arc::new(self.build_router(agent));
        if let Ok(mut routers) = self.routers.lock() {
            if routers.len() >= MAX_ROUTERS {
                routers.clear();
            }
            // Another call may have built it meanwhile: keep the first, so all share one.
            return routers.entry(scope).or_insert(router).clone();
        }
        router
    }

    fn build_router(&self, agent: Option<&Agent>) -> Router {
        let mut entries = HashMap::new();
        entries.insert(
            SCRIPTED.to_owned(),
            ModelEntry {
                provider: Arc::new(Scripted),
                model: SCRIPTED.into(),
                price: Price::default(),
            },
        );
        for (name, config) in &self.models {
            entries.insert(name.clone(), self.entry(name, config, agent));
        }
        let options = RouterOptions {
            max_retries: self.routing.retries.unwrap_or(2),
            cooldown: Duration::from_secs(self.routing.cooldown_secs.unwrap_or(30)),
            ..RouterOptions::default()
        };
        let router = Router::new(entries, options).on_clock(self.clock.clone());
        match &self.jitter {
            Some(jitter) => router.with_jitter(jitter.clone()),
            None => router,
        }
    }

    fn entry(&self, name: &str, config: &ModelConfig, agent: Option<&Agent>) -> ModelEntry {
        let price = price_of(&config.price);
        let mut options = HttpOptions::new(
            config.base_url.clone().unwrap_or_else(|| default_base(config.provider).to_owned()),
        );
        options.stream = config.stream;
        options.headers = config.headers.clone().into_iter().collect();
        options.credentials = self.credentials(name, config, agent);
        let client = if config.http2 { self.client_h2.clone() } else { self.client.clone() };
        let provider: Arc<dyn Provider> = match config.provider {
            ProviderKind::Openai => Arc::new(OpenAi::new(name, client, options)),
            ProviderKind::Anthropic => {
                let adapter = Anthropic::new(name, client, options);
                Arc::new(if config.oauth.is_some() { adapter.with_bearer_auth() } else { adapter })
            }
            ProviderKind::Scripted => Arc::new(Scripted),
            ProviderKind::Local => local_provider(
                config.model.as_deref().unwrap_or(name),
                config.concurrency,
                &self.env,
            ),
        };
        ModelEntry {
            provider,
            model: config.model.clone().unwrap_or_else(|| name.to_owned()),
            price,
        }
    }

    fn credentials(
        &self,
        name: &str,
        config: &ModelConfig,
        agent: Option<&Agent>,
    ) -> Option<Arc<dyn CredentialProvider>> {
        if let Some(var) = &config.api_key_env {
            return Some(match self.env.get(var) {
                Some(key) => Arc::new(clade_model::StaticKey::new(key)),
                None => Arc::new(Missing(format!(
                    "models.{name}: environment variable {var} is not set; export it and restart"
                ))),
            });
        }
        let secret_credentials = |secret: &str,
                                  oauth: Option<&clade_config::OAuthModelConfig>|
         -> Arc<dyn CredentialProvider> {
            let Some(agent) = agent else {
                return Arc::new(Missing(format!(
                    "models.{name}: its key is an agent secret, so it needs an agent (pass --agent)"
                )));
            };
            let Ok(secret) = SecretName::parse(secret) else {
                return Arc::new(Missing(format!(
                    "models.{name}: {secret:?} is not a valid secret name"
                )));
            };
            let source = SecretSource {
                secrets: self.secrets.clone(),
                agent: agent.clone(),
                name: secret,
                cached: Arc::default(),
                clock: self.clock.clone(),
            };
            match oauth {
                None => Arc::new(source),
                Some(oauth) => Arc::new(LazyOAuth {
                    source,
                    config: OAuthConfig {
                        token_url: oauth.token_url.clone(),
                        client_id: oauth.client_id.clone(),
                        margin: Duration::from_secs(120),
                    },
                    client: self.client.clone(),
                    clock: self.clock.clone(),
                    inner: tokio::sync::OnceCell::new(),
                }),
            }
        };
        if let Some(secret) = &config.api_key_secret {
            return Some(secret_credentials(secret, None));
        }
        if let Some(oauth) = &config.oauth {
            return Some(secret_credentials(&oauth.secret, Some(oauth)));
        }
        None
    }
}

/// The usage row of a finished call.
pub fn usage_record(
    tenant: &clade_core::Tenant,
    agent: Option<&Agent>,
    turn: Option<clade_core::TurnId>,
    outcome: &clade_model::CallOutcome,
) -> UsageRecord {
    let usage = outcome.response.usage;
    UsageRecord {
        tenant: tenant.id,
        agent: agent.map(|a| a.id),
        turn,
        model: outcome.model.clone(),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_tokens: usage.cached_input_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        cost_micros: outcome.cost_micros,
    }
}

pub(crate) fn default_base(provider: ProviderKind) -> &'static str {
    match provider {
        ProviderKind::Openai => "https://api.openai.com/v1",
        ProviderKind::Anthropic => "https://api.anthropic.com",
        ProviderKind::Scripted | ProviderKind::Local => "",
    }
}

/// The folder, under the data dir's `models`, that `clade models fetch local` installs the
/// default chat model into (as `model.gguf`): SmolLM2-135M-Instruct.
pub const DEFAULT_LOCAL_CHAT: &str = "smollm2-135m-instruct";

/// The hint naming the data dir's `models` folder, where local models are installed.
pub const MODELS_DIR_HINT: &str = "CLADE_MODELS_DIR";

/// The file of the local model `model`: a path to a `.gguf` file, or a folder under the data
/// dir's `models` holding `model.gguf`.
fn local_model_file(model: &str, env: &EnvHints) -> std::path::PathBuf {
    let path = std::path::Path::new(model);
    if path.is_absolute() || model.ends_with(".gguf") {
        return path.to_owned();
    }
    let dir = env.get(MODELS_DIR_HINT).unwrap_or("models");
    std::path::Path::new(dir).join(model).join("model.gguf")
}

#[cfg(feature = "local-models")]
fn local_provider(model: &str, concurrency: Option<u32>, env: &EnvHints) -> Arc<dyn Provider> {
    let concurrency = concurrency.map(|n| n as usize);
    Arc::new(clade_model::local_chat::LocalProvider::new(local_model_file(model, env), concurrency))
}

#[cfg(not(feature = "local-models"))]
fn local_provider(model: &str, _concurrency: Option<u32>, env: &EnvHints) -> Arc<dyn Provider> {
    let _ = local_model_file(model, env);
    Arc::new(NoLocalModels)
}

/// Stands in for a local model in a build without them.
#[cfg(not(feature = "local-models"))]
struct NoLocalModels;

#[cfg(not(feature = "local-models"))]
impl Provider for NoLocalModels {
    fn name(&self) -> &str {
        "local"
    }

    fn stream<'a>(
        &'a self,
        _model: &'a str,
        _request: &'a clade_model::ModelRequest,
    ) -> futures::future::BoxFuture<'a, Result<clade_model::EventStream, clade_model::Error>> {
        Box::pin(async {
            Err(clade_model::Error::InvalidRequest {
                provider: "local".into(),
                message: "this build has no local models: build clade with the cargo feature `local-models`".into(),
            })
        })
    }
}

/// Credentials that cannot be had; the message says why and what to do.
struct Missing(String);

impl CredentialProvider for Missing {
    fn token(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move { Err(Error::Credentials(self.0.clone())) })
    }
}

/// An API key kept as an agent secret.
#[derive(Clone)]
struct SecretSource {
    secrets: Secrets,
    agent: Agent,
    name: SecretName,
    /// The key as last decrypted, and when: read again after [`SECRET_TTL`], so a changed
    /// secret is used within that long.
    cached: Arc<std::sync::Mutex<Option<(clade_core::Timestamp, String)>>>,
    clock: Arc<dyn Clock>,
}

/// How long a decrypted model key is used before the secret is read again.
const SECRET_TTL: Duration = Duration::from_secs(60);

impl SecretSource {
    async fn read(&self) -> Result<String, Error> {
        let bytes = self.secrets.get(&self.agent, &self.name).await.map_err(|e| {
            Error::Credentials(format!("secret {} of agent {}: {e}", self.name, self.agent.handle))
        })?;
        String::from_utf8(bytes)
            .map_err(|_| Error::Credentials(format!("secret {} is not UTF-8 text", self.name)))
    }
}

impl CredentialProvider for SecretSource {
    fn token(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move {
            let fresh = self.cached.lock().ok().and_then(|cached| {
                cached
                    .as_ref()
                    .filter(|(at, _)| self.clock.now() < at.plus(SECRET_TTL))
                    .map(|(_, key)| key.clone())
            });
            if let Some(key) = fresh {
                return Ok(key);
            }
            let key = self.read().await?.trim().to_owned();
            if let Ok(mut cached) = self.cached.lock() {
                *cached = Some((self.clock.now(), key.clone()));
            }
            Ok(key)
        })
    }
}

impl TokenStore for SecretSource {
    fn save<'a>(&'a self, tokens: &'a OAuthTokens) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let json = serde_json::to_vec(tokens).map_err(|e| Error::Credentials(e.to_string()))?;
            self.secrets.set(&self.agent, &self.name, &json).await.map_err(|e| {
                Error::Credentials(format!(
                    "cannot store refreshed tokens in secret {}: {e}",
                    self.name
                ))
            })
        })
    }
}

/// OAuth2 whose tokens are read from the secret on first use.
struct LazyOAuth {
    source: SecretSource,
    config: OAuthConfig,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    inner: tokio::sync::OnceCell<OAuth2>,
}

impl LazyOAuth {
    async fn inner(&self) -> Result<&OAuth2, Error> {
        self.inner
            .get_or_try_init(|| async {
                let text = self.source.read().await?;
                let tokens: OAuthTokens = serde_json::from_str(&text).map_err(|e| {
                    Error::Credentials(format!(
                        "secret {} must hold JSON with access_token, refresh_token and expires_at: {e}",
                        self.source.name
                    ))
                })?;
                Ok(OAuth2::new(self.client.clone(), self.config.clone(), tokens, Arc::new(self.source.clone()), self.clock.clone()))
            })
            .await
    }
}

impl CredentialProvider for LazyOAuth {
    fn token(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move { self.inner().await?.token().await })
    }

    fn rejected<'a>(&'a self, token: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.inner().await {
                Ok(inner) => inner.rejected(token).await,
                Err(_) => false,
            }
        })
    }
}

/// The configured models and routing, with the quick start applied: no model configured and
/// a provider key in the environment selects that provider.
fn resolve(config: &Config, env: &EnvHints) -> (BTreeMap<String, ModelConfig>, RoutingConfig) {
    let mut models = config.models.clone();
    let mut routing = config.routing.clone();
    if models.is_empty() {
        // Quick start: a provider key in the environment selects that provider.
        let quick = |provider, key: &str, base: &str, fallback_model: &str| ModelConfig {
            provider,
            model: Some(env.get("CLADE_MODEL").unwrap_or(fallback_model).to_owned()),
            base_url: env.get(base).map(str::to_owned),
            api_key_env: Some(key.to_owned()),
            api_key_secret: None,
            oauth: None,
            stream: true,
            headers: BTreeMap::new(),
            price: clade_config::PriceConfig::default(),
            max_tokens: None,
            context_window: None,
            tool_tokens: None,
            http2: false,
            concurrency: None,
        };
        if env.get("OPENAI_API_KEY").is_some() {
            models.insert(
                "default".into(),
                quick(ProviderKind::Openai, "OPENAI_API_KEY", "OPENAI_BASE_URL", "gpt-4o-mini"),
            );
        } else if env.get("ANTHROPIC_API_KEY").is_some() {
            models.insert(
                "default".into(),
                quick(
                    ProviderKind::Anthropic,
                    "ANTHROPIC_API_KEY",
                    "ANTHROPIC_BASE_URL",
                    "claude-sonnet-4-5",
                ),
            );
        } else if cfg!(feature = "local-models")
            && local_model_file(DEFAULT_LOCAL_CHAT, env).is_file()
        {
            // No key, no configuration: the small model `clade models fetch local` installed.
            let mut local = quick(ProviderKind::Local, "", "", DEFAULT_LOCAL_CHAT);
            local.model = Some(DEFAULT_LOCAL_CHAT.to_owned());
            local.api_key_env = None;
            local.max_tokens = Some(512);
            local.context_window = Some(LOCAL_CONTEXT_WINDOW);
            models.insert("local".into(), local);
        }
    }
    if routing.default.is_empty() {
        routing.default =
            vec![models.keys().next().cloned().unwrap_or_else(|| SCRIPTED.to_owned())];
    }
    (models, routing)
}

/// The price a model's configuration states, as calls are charged.
pub fn price_of(price: &clade_config::PriceConfig) -> Price {
    Price {
        input: price.input_per_mtok,
        output: price.output_per_mtok,
        cached_input: price.cached_input_per_mtok,
        cache_write: price.cache_write_per_mtok,
    }
}
