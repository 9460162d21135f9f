//! What every command needs: the data dir, the configuration, the store, and which tenant and
//! agent the command acts on. This is the CLI's only reader of the process environment besides
//! clap's `env` attributes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clade_config::Config;
use clade_core::{Agent, SystemClock, Tenant};
use clade_store::{Agents, DataDir, Durability, Location, Secrets, Store, StoreOptions};

use crate::cli::Global;
use clade_gateway::config_flow::Unmet;

pub(crate) struct Ctx {
    pub(crate) data_dir: DataDir,
    /// Where the store lives (for `serve`'s owner lock).
    pub(crate) location: Location,
    pub(crate) config: Config,
    /// Where the configuration is read from, and applied to (`clade config apply`).
    pub(crate) config_path: PathBuf,
    pub(crate) store: Store,
    pub(crate) agents: Agents,
    /// The declared agent settings, shared by the settings tools and the API.
    pub(crate) settings: Arc<clade_runtime::settings::Catalog>,
    tenant: Option<String>,
    agent: Option<String>,
    master_key: Option<String>,
}

#[allow(clippy::disallowed_methods)] // The configuration edge: HOME locates the default data dir.
pub(crate) fn data_dir_path(global: &Global) -> Result<PathBuf> {
    if let Some(dir) = &global.data_dir {
        return Ok(dir.clone());
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".clade")),
        None => bail!("no data dir: HOME is not set; pass --data-dir or set CLADE_DATA_DIR"),
    }
}

/// A data dir that does not exist is made on first use, but not inside a folder that does not
/// exist either: that is most often a mistyped `--data-dir`, which would otherwise get a new,
/// empty store and answer as if everything were gone. `clade serve` and `clade migrate` make
/// the whole path.
pub(crate) fn refuse_mistyped_data_dir(path: &std::path::Path) -> Result<()> {
    // A folder that cannot be looked at is left to the open, which says why.
    if path.try_exists().unwrap_or(true) {
        return Ok(());
    }
    match path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) if !parent.try_exists().unwrap_or(true) => bail!(
            "there is no data dir at {} (nor a folder {}): check --data-dir or CLADE_DATA_DIR; `clade serve --data-dir {}` starts a new one there",
            path.display(),
            parent.display(),
            path.display()
        ),
        _ => Ok(()),
    }
}

/// The configuration: `--config` must exist; the data dir's clade.yaml is optional.
pub(crate) fn load_config(global: &Global, data_dir: &DataDir) -> Result<Config> {
    Ok(match &global.config {
        Some(path) => Config::load(path)?,
        None => Config::load_or_default(&data_dir.config_path())?,
    })
}

/// Where the store lives: `--store`, else the configuration's, else the data dir's SQLite file.
pub(crate) fn location(global: &Global, data_dir: &DataDir, config: &Config) -> Result<Location> {
    Ok(match global.store.as_deref().or(config.store.url.as_deref()) {
        Some(url) => Location::parse(url)?,
        None => Location::Sqlite(data_dir.sqlite_path()),
    })
}

/// The models `config` names over `store` and `secrets`, with the environment's quick-start
/// keys.
#[allow(clippy::disallowed_methods)] // The configuration edge: provider keys come from the environment.
/// The environment variables `config`'s models may read.
pub(crate) fn env_hints(config: &Config) -> clade_runtime::EnvHints {
    let mut vars: std::collections::HashMap<String, String> =
        clade_runtime::EnvHints::wanted(config)
            .into_iter()
            .filter_map(|name| std::env::var(&name).ok().map(|value| (name, value)))
            .collect();
    // Where local models are installed: not the environment's, the data dir's.
    if let Some(dir) = MODELS_DIR.get() {
        vars.insert(
            clade_runtime::models::MODELS_DIR_HINT.to_owned(),
            dir.to_string_lossy().into_owned(),
        );
    }
    clade_runtime::EnvHints { vars }
}

/// The data dir's `models` folder, set once the data dir is known.
static MODELS_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Remembers the data dir's `models` folder for the models this process sets up.
pub(crate) fn set_models_dir(data_dir: &DataDir) {
    let _ = MODELS_DIR.set(data_dir.models_dir());
}

pub(crate) fn models_from(
    config: &Config,
    store: &Store,
    secrets: Secrets,
) -> clade_runtime::Models {
    clade_runtime::Models::new(
        config,
        env_hints(config),
        store.clone(),
        secrets,
        Arc::new(SystemClock),
    )
}

/// `config`'s inbound webhooks with their signing secrets read from the environment.
pub(crate) fn hooks_of(
    config: &Config,
) -> std::result::Result<
    std::collections::HashMap<(String, String), clade_gateway::hooks::Hook>,
    Unmet,
> {
    let mut hooks = std::collections::HashMap::new();
    for (tenant, tenant_config) in &config.tenants {
        for (name, hook) in &tenant_config.hooks {
            let field = format!("tenants.{tenant}.hooks.{name}");
            let secret = env_value(&hook.secret_env).ok_or_else(|| {
                Unmet(format!(
                    "{field}: environment variable {} (its signing secret) is not set",
                    hook.secret_env
                ))
            })?;
            let resolved =
                clade_gateway::hooks::Hook::new(hook, secret.as_bytes()).map_err(|err| {
                    Unmet(format!("{field}: its secret in {}: {err}", hook.secret_env))
                })?;
            hooks.insert((tenant.clone(), name.clone()), resolved);
        }
    }
    Ok(hooks)
}

/// What `config` needs from this process's environment, as `clade serve` reads it at start:
/// the variables its channels, inbound hooks and webhook subscribers name. `Err` names the
/// first one missing.
pub(crate) fn environment_check(config: &Config) -> std::result::Result<(), Unmet> {
    telegram_bots_of(config)?;
    slack_apps_of(config)?;
    discord_bots_of(config)?;
    hooks_of(config)?;
    subscribers_of(config)?;
    traces_options_of(config, "")?;
    Ok(())
}

/// The OTLP exporter's options as `server.traces` sets them, its headers read from the
/// environment; `None` when traces are off. `instance` names this node in the resource.
pub(crate) fn traces_options_of(
    config: &Config,
    instance: &str,
) -> std::result::Result<Option<clade_otlp::Options>, Unmet> {
    let Some(traces) = &config.server.traces else { return Ok(None) };
    let headers = traces
        .headers_env
        .iter()
        .map(|(name, variable)| {
            let value = env_value(variable).ok_or_else(|| {
                Unmet(format!(
                    "server.traces.headers_env.{name}: environment variable {variable} (the header's value) is not set"
                ))
            })?;
            Ok((name.clone(), value))
        })
        .collect::<std::result::Result<_, Unmet>>()?;
    Ok(Some(clade_otlp::Options {
        endpoint: traces.endpoint.trim().to_owned(),
        protocol: match traces.protocol {
            clade_config::OtlpProtocol::Http => clade_otlp::Protocol::Http,
            clade_config::OtlpProtocol::Grpc => clade_otlp::Protocol::Grpc,
        },
        headers,
        content: if traces.content {
            clade_otlp::Content::Included
        } else {
            clade_otlp::Content::Omitted
        },
        service_name: traces.service_name.clone(),
        instance: instance.to_owned(),
        timeout: std::time::Duration::from_secs(traces.timeout_secs),
        max_attempts: traces.max_attempts,
    }))
}

/// This node's name in traces: the cluster's name for it, else the machine's.
pub(crate) fn instance_name(config: &Config) -> String {
    config
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.node_name(env_value(clade_config::NODE_ENV)).ok())
        .or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
            Some(host.trim().to_owned()).filter(|host| !host.is_empty())
        })
        .unwrap_or_else(|| "clade".into())
}

/// An environment variable a channel needs, or an error naming it and what it holds.
fn channel_variable(field: &str, variable: &str, what: &str) -> std::result::Result<String, Unmet> {
    env_value(variable).ok_or_else(|| {
        Unmet(format!("{field}: environment variable {variable} ({what}) is not set"))
    })
}

/// What every channel's entry says: its token read from `token_env`, its API's URL (the
/// platform's own, `public`, when not given).
pub(crate) fn channel_settings(
    field: &str,
    name: &str,
    (token_env, api_url, public): (&str, &Option<String>, &str),
    (stream, max_attempts, groups): (bool, u32, clade_config::GroupSessions),
) -> std::result::Result<clade_channels::channel::Settings, Unmet> {
    Ok(clade_channels::channel::Settings {
        name: name.to_owned(),
        api_url: api_url.clone().unwrap_or_else(|| public.to_owned()),
        token: channel_variable(field, token_env, "the bot's token")?,
        stream,
        max_attempts,
        shared_groups: groups == clade_config::GroupSessions::Shared,
    })
}

/// The Telegram bots `channels.telegram` declares, with their tokens and secrets read from
/// the environment; an unset variable is an error naming it.
pub(crate) fn telegram_bots_of(
    config: &Config,
) -> std::result::Result<Vec<clade_channels::telegram::BotOptions>, Unmet> {
    config
        .channels
        .telegram
        .iter()
        .map(|(name, bot)| {
            let field = format!("channels.telegram.{name}");
            let api = (bot.token_env.as_str(), &bot.api_url, clade_channels::telegram::PUBLIC_API);
            let settings = channel_settings(&field, name, api, (bot.stream, bot.max_attempts, bot.group_sessions))?;
            let webhook_secret = match (bot.mode, &bot.webhook_secret_env) {
                (clade_config::TelegramMode::Webhook, Some(variable)) => {
                    let secret = channel_variable(&field, variable, "the webhook's secret token")?;
                    let fits = (1..=256).contains(&secret.len())
                        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !fits {
                        return Err(Unmet(format!(
                            "{field}: the secret in {variable} must be 1-256 of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token)"
                        )));
                    }
                    Some(secret)
                }
                _ => None,
            };
            Ok(clade_channels::telegram::BotOptions {
                settings,
                webhook_secret,
                public_url: bot.public_url.clone(),
                poll_timeout: std::time::Duration::from_secs(bot.poll_timeout_secs.into()),
            })
        })
        .collect()
}

/// The Discord bots `channels.discord` declares, with their tokens read from the environment;
/// an unset variable is an error naming it.
pub(crate) fn discord_bots_of(
    config: &Config,
) -> std::result::Result<Vec<clade_channels::discord::BotOptions>, Unmet> {
    config
        .channels
        .discord
        .iter()
        .map(|(name, bot)| {
            let field = format!("channels.discord.{name}");
            let api = (bot.token_env.as_str(), &bot.api_url, clade_channels::discord::PUBLIC_API);
            let settings = channel_settings(
                &field,
                name,
                api,
                (bot.stream, bot.max_attempts, bot.group_sessions),
            )?;
            let relay_secret = match (bot.mode, &bot.relay_secret_env) {
                (clade_config::DiscordMode::Relay, Some(variable)) => {
                    let secret = channel_variable(&field, variable, "the relay's secret")?;
                    if !(16..=256).contains(&secret.len()) {
                        return Err(Unmet(format!(
                            "{field}: the secret in {variable} must be 16 to 256 bytes"
                        )));
                    }
                    Some(secret)
                }
                _ => None,
            };
            Ok(clade_channels::discord::BotOptions { settings, relay_secret })
        })
        .collect()
}

/// The Slack apps `channels.slack` declares, with their tokens and secrets read from the
/// environment; an unset variable is an error naming it.
pub(crate) fn slack_apps_of(
    config: &Config,
) -> std::result::Result<Vec<clade_channels::slack::AppOptions>, Unmet> {
    config
        .channels
        .slack
        .iter()
        .map(|(name, app)| {
            let field = format!("channels.slack.{name}");
            let api = (app.token_env.as_str(), &app.api_url, clade_channels::slack::PUBLIC_API);
            let settings = channel_settings(
                &field,
                name,
                api,
                (app.stream, app.max_attempts, app.group_sessions),
            )?;
            let mode = match (app.mode, &app.app_token_env, &app.signing_secret_env) {
                (clade_config::SlackMode::Socket, Some(variable), _) => {
                    clade_channels::slack::Mode::Socket {
                        app_token: channel_variable(&field, variable, "the app-level token")?,
                    }
                }
                (clade_config::SlackMode::Events, _, Some(variable)) => {
                    clade_channels::slack::Mode::Events {
                        signing_secret: channel_variable(&field, variable, "the signing secret")?,
                    }
                }
                _ => return Err(Unmet(format!("{field}: its mode lacks its token or secret"))),
            };
            Ok(clade_channels::slack::AppOptions { settings, mode })
        })
        .collect()
}

/// `config`'s webhook subscribers with their signing secrets read from the environment.
pub(crate) fn subscribers_of(
    config: &Config,
) -> std::result::Result<Vec<clade_runtime::outbox::Subscriber>, Unmet> {
    config
        .subscribers
        .iter()
        .map(|s| {
            let secret = env_value(&s.secret_env).ok_or_else(|| {
                Unmet(format!(
                    "subscriber {:?}: environment variable {} (its signing secret) is not set",
                    s.name, s.secret_env
                ))
            })?;
            // Each delivery is signed as Standard Webhooks too: a `whsec_` secret must decode.
            clade_runtime::signing::StandardKey::new(secret.as_bytes()).map_err(|err| {
                Unmet(format!("subscriber {:?}: its secret in {}: {err}", s.name, s.secret_env))
            })?;
            Ok(clade_runtime::outbox::Subscriber {
                name: s.name.clone(),
                url: s.url.clone(),
                signing: clade_runtime::outbox::Signing::Secret(secret.into_bytes()),
                events: s.events.clone(),
                // A tenant's events are its agents'.
                agents: s
                    .tenants
                    .iter()
                    .map(|t| if t == "*" { t.clone() } else { format!("{t}/*") })
                    .collect(),
                max_attempts: s.max_attempts,
                timeout: std::time::Duration::from_secs(s.timeout_secs),
            })
        })
        .collect()
}

/// `clade.yaml`'s `settings`, with each overriding environment variable's value as it is now.
pub(crate) fn declared_settings(
    config: &Config,
) -> std::collections::BTreeMap<String, clade_runtime::settings::Declared> {
    config
        .settings
        .iter()
        .map(|(key, setting)| {
            let env = setting.env.as_ref().map(|var| {
                (var.clone(), env_value(var).map(|text| clade_runtime::settings::env_value(&text)))
            });
            let declared = clade_runtime::settings::Declared {
                description: setting.description.clone(),
                default: setting.default.clone(),
                env,
                agent_writable: setting.agent_writable,
            };
            (key.clone(), declared)
        })
        .collect()
}

/// How many times a paired subscriber is sent an event before it is dead-lettered, and how
/// long each attempt waits: a configured webhook's defaults.
const PAIRED_MAX_ATTEMPTS: u32 = 8;
const PAIRED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The subscribers paired with the gateway (`clade pair subscriber`), whose deliveries
/// `identity` signs.
pub(crate) async fn paired_subscribers(
    store: &Store,
    identity: Arc<clade_tools::remote::identity::Identity>,
) -> clade_store::Result<Vec<clade_runtime::outbox::Subscriber>> {
    let peers = store.peers().list().await?;
    Ok(peers
        .into_iter()
        .filter(|peer| peer.kind == clade_runtime::outbox::PEER_KIND)
        .map(|peer| clade_runtime::outbox::Subscriber {
            name: format!("peer:{}", peer.name),
            url: peer.endpoint.clone(),
            signing: clade_runtime::outbox::Signing::Paired {
                peer: peer.name.clone(),
                keys: clade_tools::remote::Peer { identity: identity.clone(), host_key: peer.key },
                leased: peer.leased,
            },
            events: Vec::new(),
            agents: peer.agents,
            max_attempts: PAIRED_MAX_ATTEMPTS,
            timeout: PAIRED_TIMEOUT,
        })
        .collect())
}

/// A paired tool host's tools, its key checked; a host that does not prove the key it was
/// paired with is refused and the refusal audited.
pub(crate) async fn connect_peer(
    store: &Store,
    peer: &clade_store::PeerRow,
    identity: Arc<clade_tools::remote::identity::Identity>,
) -> std::result::Result<Vec<Arc<dyn clade_tools::Tool>>, clade_tools::remote::RemoteError> {
    let spec = clade_tools::remote::HostSpec {
        name: peer.name.clone(),
        url: peer.endpoint.clone(),
        token: None,
        agents: peer.agents.clone(),
        timeout: std::time::Duration::from_secs(60),
        peer: Some(clade_tools::remote::Peer { identity, host_key: peer.key.clone() }),
    };
    match clade_tools::remote::Host::connect(spec).await {
        Ok((_, tools)) => Ok(tools),
        Err(err) => {
            if err.key_changed
                && let Err(audit) =
                    store.peers().audit_refused(&peer.kind, &peer.name, &err.message).await
            {
                tracing::warn!(error = %audit, "the refusal of a peer could not be audited");
            }
            Err(err)
        }
    }
}

/// The value of the environment variable `name` (a token or secret the configuration names
/// by its variable), if set and not empty.
#[allow(clippy::disallowed_methods)] // The configuration edge: secrets come from the environment.
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

impl Ctx {
    pub(crate) async fn open(global: &Global, migrations: clade_store::Migrations) -> Result<Self> {
        let data_dir = DataDir::open(data_dir_path(global)?)?;
        let config = load_config(global, &data_dir)?;
        let location = location(global, &data_dir, &config)?;
        let durability = match config.store.durability {
            clade_config::Durability::Full => Durability::Full,
            clade_config::Durability::Normal => Durability::Normal,
        };
        let options =
            StoreOptions { migrations, ..StoreOptions::new(location.clone(), durability) };
        let store = Store::open(options).await?;
        // What this process changes, the operator changes through the CLI.
        let store = store.acting_as("operator (cli)");
        let agents = Agents::new(store.clone(), data_dir.clone());
        let config_path = global.config.clone().unwrap_or_else(|| data_dir.config_path());
        let settings = Arc::new(clade_runtime::settings::Catalog::new(declared_settings(&config)));
        Ok(Self {
            data_dir,
            location,
            config,
            config_path,
            store,
            agents,
            settings,
            tenant: global.tenant.clone(),
            agent: global.agent.clone(),
            master_key: global.master_key.clone(),
        })
    }

    pub(crate) fn tenant_name(&self) -> &str {
        self.tenant.as_deref().unwrap_or(Tenant::DEFAULT_NAME)
    }

    /// Whether `--tenant` (or `CLADE_TENANT`) named a tenant.
    pub(crate) fn tenant_named(&self) -> bool {
        self.tenant.is_some()
    }

    pub(crate) async fn tenant(&self) -> Result<Tenant> {
        Ok(self.store.tenants().named(self.tenant_name()).await?)
    }

    /// The agent named on the command line, else `--agent`, else the current one.
    pub(crate) async fn agent(&self, explicit: Option<&str>) -> Result<Agent> {
        let tenant = self.tenant().await?;
        let handle = match explicit.or(self.agent.as_deref()) {
            Some(handle) => handle.to_owned(),
            None => match self.data_dir.current_agent()? {
                Some((t, handle)) if t == tenant.name.as_str() => handle,
                _ => bail!(
                    "no agent selected: pass --agent <handle>, or choose one with `clade agents switch <handle>`"
                ),
            },
        };
        Ok(self.store.agents(tenant.id).get(&handle).await?)
    }

    /// `--agent` as given (not the current agent), for commands where it narrows a listing.
    pub(crate) fn explicit_agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// The models this process can call, with the environment's quick-start keys.
    #[allow(clippy::disallowed_methods)] // The configuration edge: provider keys come from the environment.
    pub(crate) fn models(&self) -> clade_runtime::Models {
        self.models_of(&self.config)
    }

    /// The models `config` names, with the environment's quick-start keys.
    #[allow(clippy::disallowed_methods)] // The configuration edge: provider keys come from the environment.
    pub(crate) fn models_of(&self, config: &Config) -> clade_runtime::Models {
        models_from(config, &self.store, self.secrets())
    }

    /// The sandbox tools run in, as clade.yaml configures it.
    pub(crate) fn sandbox(&self) -> clade_tools::sandbox::Sandbox {
        sandbox_of(&self.config)
    }

    /// The tool path agents' calls take: built-ins (plus the test ledger when configured) and
    /// the configured MCP servers' tools, behind policy, approvals, the sandbox and the audit
    /// log. An MCP server that cannot be reached is reported and left out.
    pub(crate) async fn tools(&self) -> Arc<clade_runtime::ToolRunner> {
        self.tools_in(Arc::new(self.sandbox())).await
    }

    /// [`Ctx::tools`] with host-touching tools in `sandbox`, whose health the runner reports.
    pub(crate) async fn tools_in(
        &self,
        sandbox: Arc<clade_tools::sandbox::Sandbox>,
    ) -> Arc<clade_runtime::ToolRunner> {
        self.tools_from(&self.tool_sources(sandbox.clone()), sandbox).await
    }

    /// A tool runner whose registry `sources` builds from this configuration.
    pub(crate) async fn tools_from(
        &self,
        sources: &ToolSources,
        sandbox: Arc<clade_tools::sandbox::Sandbox>,
    ) -> Arc<clade_runtime::ToolRunner> {
        let tools = sources.registry(&self.config).await;
        Arc::new(
            clade_runtime::ToolRunner::new(
                tools,
                self.store.clone(),
                self.agents.clone(),
                Some(self.secrets()),
                &self.config.tools,
            )
            .with_tenants(self.config.tenants.clone())
            .with_sandbox(sandbox),
        )
    }

    /// The gateway's own key pair (`identity.key` in the data dir, made at first use), which
    /// pairing and paired requests use.
    pub(crate) fn identity(&self) -> Result<Arc<clade_tools::remote::identity::Identity>> {
        identity_in(self.data_dir.root())
    }

    /// What the tool registry is built from, with host-touching tools in `sandbox`.
    pub(crate) fn tool_sources(&self, sandbox: Arc<clade_tools::sandbox::Sandbox>) -> ToolSources {
        ToolSources {
            store: self.store.clone(),
            data_dir: self.data_dir.root().to_path_buf(),
            config_path: self.config_path.clone(),
            settings: self.settings.clone(),
            sandbox,
            absent: Arc::default(),
            memory: Arc::new(std::sync::RwLock::new(clade_runtime::memory::memory_of(
                &self.config,
                &env_hints(&self.config),
                &self.data_dir.models_dir(),
            ))),
            postbox: clade_runtime::messaging::Postbox::new(),
            flows: clade_flow::tools::FlowTools::new(),
            agents: self.agents.clone(),
        }
    }

    /// Webhook subscribers with their signing secrets read from the environment.
    pub(crate) fn subscribers(&self) -> Result<Vec<clade_runtime::outbox::Subscriber>> {
        subscribers_of(&self.config).map_err(anyhow::Error::msg)
    }

    /// The gateway's URL: `--server`, else the one `clade serve` wrote into this data dir
    /// (it listens where `--listen` said) while something answers there, else `server.listen`.
    pub(crate) fn server_url(&self, url: Option<&str>) -> String {
        if let Some(url) = url {
            return url.to_owned();
        }
        let listen = format!("http://{}", self.config.server.listen);
        let file = gateway_url_file(&self.data_dir);
        let Some(written) = std::fs::read_to_string(&file)
            .ok()
            .map(|written| written.trim().to_owned())
            .filter(|written| written.starts_with("http://"))
        else {
            return listen;
        };
        // A gateway killed outright leaves its file behind: one that no longer answers is not
        // trusted, so the CLI neither waits on it nor blames the wrong address.
        if answers(&written) {
            return written;
        }
        tracing::warn!(
            file = %file.display(),
            url = %written,
            "the gateway that wrote this no longer answers (it stopped without removing it); trying server.listen instead"
        );
        listen
    }

    /// The running gateway's URL and the token to call it with: `CLADE_TOKEN` when set (as
    /// every command that calls the gateway reads it), else the data dir's token file.
    pub(crate) fn server(&self, url: Option<&str>) -> Result<(String, String)> {
        let url = self.server_url(url);
        if let Some(token) = env_value("CLADE_TOKEN") {
            return Ok((url, token));
        }
        let token = self.data_dir.read_token()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no token in {}: start the gateway once with `clade serve`, create one with `clade tokens create`, or set CLADE_TOKEN",
                self.data_dir.token_path().display()
            )
        })?;
        Ok((url, token))
    }

    pub(crate) fn secrets(&self) -> Secrets {
        Secrets::new(self.store.clone(), self.data_dir.master_key_path(), self.master_key.clone())
    }

    /// Makes sure the CLI has a token for the default tenant in `<data-dir>/token`.
    pub(crate) async fn ensure_cli_token(&self) -> Result<()> {
        if let Some(existing) = self.data_dir.read_token()? {
            if self.store.authenticate(&existing).await.is_err() {
                tracing::warn!(
                    path = %self.data_dir.token_path().display(),
                    "the token file is not valid for this store; delete it and restart to get a new one"
                );
            }
            return Ok(());
        }
        let tenant = self.store.tenants().named(Tenant::DEFAULT_NAME).await?;
        // The operator's own token: everything, deciding approvals included.
        let scopes = [clade_core::Scope::Admin, clade_core::Scope::Approve];
        let (_, secret) = self.store.tokens(tenant.id).create("cli", &scopes, None, None).await?;
        self.data_dir
            .write_token_if_absent(&secret)
            .with_context(|| "cannot write the CLI token file")?;
        Ok(())
    }
}

/// Whether something accepts connections at `url`'s address (`http://host:port`), within a
/// moment.
fn answers(url: &str) -> bool {
    use std::net::ToSocketAddrs as _;
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    address.to_socket_addrs().ok().and_then(|mut all| all.next()).is_some_and(|address| {
        std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_millis(300))
            .is_ok()
    })
}

/// Where `clade serve` writes the URL it listens on, so that the CLI finds the gateway of its
/// data dir whatever `--listen` said.
pub(crate) fn gateway_url_file(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("gateway.url")
}

/// The sandbox tools run in, as `config` configures it.
#[allow(clippy::disallowed_methods)] // The configuration edge: PATH locates bubblewrap.
pub(crate) fn sandbox_of(config: &Config) -> clade_tools::sandbox::Sandbox {
    let tools = &config.tools;
    let path = std::env::var("PATH").ok();
    let sandbox = clade_tools::sandbox::Sandbox::new(
        tools.sandbox,
        tools.bwrap.clone(),
        path.as_deref(),
        tools.limits,
    );
    // This binary is also the sandbox's init every tool run starts under, and the egress
    // bridge network-granted commands run beside them.
    match std::env::current_exe() {
        Ok(exe) => {
            let exe = exe.to_string_lossy().into_owned();
            sandbox
                .with_init(vec![exe.clone(), "__sandbox-init".into()])
                .with_egress_bridge(vec![exe, "__egress-bridge".into()])
        }
        Err(_) => sandbox,
    }
}

/// The key pair kept as `identity.key` in `data_dir`.
pub(crate) fn identity_in(
    data_dir: &std::path::Path,
) -> Result<Arc<clade_tools::remote::identity::Identity>> {
    let path = data_dir.join("identity.key");
    Ok(Arc::new(clade_tools::remote::identity::Identity::load_or_create(&path)?))
}

/// What the tool registry is built from besides the configuration, owned: a serving gateway
/// builds the registry again when a configuration revision changes a tool source (MCP servers,
/// tool hosts, OpenAPI documents).
#[derive(Clone)]
pub(crate) struct ToolSources {
    store: Store,
    data_dir: PathBuf,
    config_path: PathBuf,
    settings: Arc<clade_runtime::settings::Catalog>,
    sandbox: Arc<clade_tools::sandbox::Sandbox>,
    /// The sources the last registry built left out, which [`ToolSources::rejoin`] tries again.
    absent: Arc<std::sync::Mutex<Absent>>,
    /// Agents' memory, whose tools the registry holds (none when memory is off).
    memory: Arc<std::sync::RwLock<Option<Arc<clade_memory::Memory>>>>,
    /// Where the messaging tools find the engine, once `clade serve` started it.
    postbox: clade_runtime::messaging::Postbox,
    /// Where `flow.start` finds the flow runner, once `clade serve` made it.
    flows: clade_flow::tools::FlowTools,
    /// Where `agent.spawn` makes agents.
    agents: clade_store::Agents,
}

/// A tool source that could not be reached when the registry was built.
#[derive(Clone)]
enum LeftOut {
    Mcp(clade_tools::mcp::ServerSpec),
    Host(clade_tools::remote::HostSpec),
    Peer(clade_store::PeerRow),
}

impl LeftOut {
    fn name(&self) -> &str {
        match self {
            LeftOut::Mcp(spec) => &spec.name,
            LeftOut::Host(spec) => &spec.name,
            LeftOut::Peer(peer) => &peer.name,
        }
    }
}

/// The sources left out of the registry of one build (its `generation`).
#[derive(Default)]
struct Absent {
    generation: u64,
    sources: Vec<LeftOut>,
}

/// How long [`ToolSources::rejoin`] waits between tries: from the first to the longest.
const REJOIN_FIRST: std::time::Duration = std::time::Duration::from_secs(2);
const REJOIN_LONGEST: std::time::Duration = std::time::Duration::from_secs(60);

impl ToolSources {
    /// Agents' memory as the configuration last taken set it up.
    pub(crate) fn memory(&self) -> Option<Arc<clade_memory::Memory>> {
        self.memory.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lets the messaging tools deliver through `engine`.
    pub(crate) fn attach(&self, engine: &clade_runtime::Engine) {
        self.postbox.attach(engine);
    }

    /// Lets `flow.start` start runs on `runner`.
    pub(crate) fn attach_flows(&self, runner: &clade_flow::run::Runner) {
        self.flows.attach(runner);
    }

    /// Sets up memory as `config` says; the next registry built holds its tools.
    pub(crate) fn set_memory(&self, config: &Config) -> Option<Arc<clade_memory::Memory>> {
        let models = self.data_dir.join("models");
        let memory = clade_runtime::memory::memory_of(config, &env_hints(config), &models);
        *self.memory.write().unwrap_or_else(|e| e.into_inner()) = memory.clone();
        memory
    }

    fn identity(&self) -> Result<Arc<clade_tools::remote::identity::Identity>> {
        identity_in(&self.data_dir)
    }

    /// Every tool `config` gives agents: the built-ins (plus the test ledger when configured),
    /// the cron, settings, working memory, messaging, flow and memory tools, `config.apply`, and the tools of the MCP servers, tool
    /// hosts, paired hosts and OpenAPI documents that can be reached (each one that cannot is
    /// reported and left out).
    pub(crate) async fn registry(&self, config: &Config) -> clade_tools::Registry {
        use clade_tools::builtin::Ledger;
        let mut tools = clade_tools::Registry::new();
        let mut left_out = Vec::new();
        clade_tools::builtin::register_all(&mut tools, self.sandbox.clone());
        // With the scheduler elsewhere (`clade cron-service`), its host serves the cron tools.
        if config.scheduler.enabled {
            clade_sched::tools::register(&mut tools, self.store.clone(), config.tenants.clone());
        }
        clade_runtime::settings::register(&mut tools, self.store.clone(), self.settings.clone());
        clade_memory::working::register(&mut tools, self.store.clone());
        clade_runtime::messaging::register(&mut tools, self.postbox.clone(), self.agents.clone());
        clade_runtime::forks::register(&mut tools, self.postbox.clone());
        clade_flow::tools::register(&mut tools, self.flows.clone());
        clade_runtime::shared::register(&mut tools, self.data_dir.join("shared"));
        if let Some(memory) = self.memory() {
            clade_memory::tools::register(&mut tools, self.store.clone(), memory);
        }
        tools.register(Arc::new(clade_gateway::config_flow::ApplyTool::new(
            self.store.clone(),
            self.config_path.clone(),
            Arc::new(environment_check),
        )));
        if let Some(path) = &config.testing.ledger_file {
            tools.register(Arc::new(Ledger::at_most_once(path.clone())));
            tools.register(Arc::new(Ledger::idempotent(path.clone())));
        }
        for (name, server) in &config.mcp {
            let transport = match &server.url {
                Some(url) => clade_tools::mcp::Transport::Http { url: url.clone() },
                None => clade_tools::mcp::Transport::Stdio {
                    command: server.command.clone(),
                    env: server.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    sandbox: self.sandbox.clone(),
                    dir: self.data_dir.as_path().join("mcp").join(name),
                    network: server.network,
                },
            };
            let spec = clade_tools::mcp::ServerSpec {
                name: name.clone(),
                transport,
                agents: server.agents.clone(),
                timeout: std::time::Duration::from_secs(server.timeout_secs),
            };
            match clade_tools::mcp::Server::connect(spec.clone()).await {
                Ok((_, found)) => {
                    tracing::info!(server = %name, tools = found.len(), "MCP server connected");
                    for tool in found {
                        tools.register(tool);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "MCP server left out: its tools are offered once it can be reached");
                    left_out.push(LeftOut::Mcp(spec));
                }
            }
        }
        for (name, api) in &config.openapi {
            match self
                .openapi_spec(name, api)
                .and_then(|spec| clade_tools::openapi::tools(&spec).map_err(|e| e.to_string()))
            {
                Ok(found) => {
                    tracing::info!(api = %name, tools = found.len(), "OpenAPI document read");
                    for tool in found {
                        tools.register(tool);
                    }
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "OpenAPI tools left out: they are unavailable until the next start"
                ),
            }
        }
        for (name, host) in &config.tool_hosts {
            let token = match &host.token_env {
                Some(var) => match env_value(var) {
                    Some(token) => Some(token),
                    None => {
                        tracing::warn!(host = %name, variable = %var, "tool host left out: its token's environment variable is not set");
                        continue;
                    }
                },
                None => None,
            };
            let spec = clade_tools::remote::HostSpec {
                name: name.clone(),
                url: host.url.clone(),
                token,
                agents: host.agents.clone(),
                timeout: std::time::Duration::from_secs(host.timeout_secs),
                peer: None,
            };
            match clade_tools::remote::Host::connect(spec.clone()).await {
                Ok((_, found)) => {
                    let (taken, kept): (Vec<_>, Vec<_>) =
                        found.into_iter().partition(|tool| tools.get(tool.name()).is_some());
                    if !taken.is_empty() {
                        let names: Vec<&str> = taken.iter().map(|t| t.name()).collect();
                        tracing::warn!(host = %name, tools = ?names, "a tool host's tools left out: another tool has the name");
                    }
                    tracing::info!(host = %name, tools = kept.len(), "tool host connected");
                    for tool in kept {
                        tools.register(tool);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "tool host left out: its tools are offered once it can be reached");
                    left_out.push(LeftOut::Host(spec));
                }
            }
        }
        let peers = match self.store.peers().list().await {
            Ok(peers) => peers,
            Err(err) => {
                tracing::warn!(error = %err, "the paired components cannot be read: their tools are left out");
                Vec::new()
            }
        };
        let peers: Vec<_> = peers.into_iter().filter(|p| p.kind == "tool").collect();
        if !peers.is_empty() {
            match self.identity() {
                Ok(identity) => {
                    for peer in &peers {
                        match connect_peer(&self.store, peer, identity.clone()).await {
                            Ok(found) => {
                                tracing::info!(host = %peer.name, tools = found.len(), "paired tool host connected");
                                for tool in found {
                                    if tools.get(tool.name()).is_none() {
                                        tools.register(tool);
                                    }
                                }
                            }
                            Err(err) if err.key_changed => tracing::warn!(
                                error = %err,
                                "paired tool host refused: its tools are unavailable until it is paired again"
                            ),
                            Err(err) => {
                                tracing::warn!(
                                    error = %err,
                                    "paired tool host left out: its tools are offered once it can be reached"
                                );
                                left_out.push(LeftOut::Peer(peer.clone()));
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "paired tool hosts left out")
                }
            }
        }
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        absent.generation += 1;
        absent.sources = left_out;
        tools
    }

    /// Tries the sources the last registry left out again, waiting 2 s and then twice as long
    /// each time (at most a minute), and offers the tools of each one that answers at once:
    /// a tool host or MCP server down when the gateway starts joins when it comes up. A paired
    /// host that answers with another key is refused (and audited) and not tried again.
    pub(crate) fn rejoin(&self, engine: clade_runtime::Engine) -> tokio::task::JoinHandle<()> {
        let sources = self.clone();
        let clock = self.store.clock().clone();
        tokio::spawn(async move {
            let (mut wait, mut seen) = (REJOIN_FIRST, 0);
            loop {
                clock.sleep(wait).await;
                let (generation, pending) = {
                    let absent = sources.absent.lock().unwrap_or_else(|e| e.into_inner());
                    (absent.generation, absent.sources.clone())
                };
                if generation != seen {
                    (wait, seen) = (REJOIN_FIRST, generation);
                }
                if pending.is_empty() {
                    continue;
                }
                let mut settled = Vec::new();
                for source in &pending {
                    match sources.connect(source).await {
                        Ok(tools) => settled.push((source.name().to_owned(), Some(tools))),
                        Err((message, for_good)) => {
                            tracing::debug!(source = %source.name(), error = %message, "tool source still left out");
                            if for_good {
                                settled.push((source.name().to_owned(), None));
                            }
                        }
                    }
                }
                let mut absent = sources.absent.lock().unwrap_or_else(|e| e.into_inner());
                // A registry built meanwhile tried them itself.
                if absent.generation != generation {
                    continue;
                }
                for (name, tools) in settled {
                    absent.sources.retain(|s| s.name() != name);
                    if let Some(tools) = tools {
                        let count = tools.len();
                        let taken = engine.tools().add_tools(tools);
                        tracing::info!(source = %name, tools = count - taken.len(), left_out = ?taken, "tool source joined: its tools are offered now");
                    }
                }
                wait = (wait * 2).min(REJOIN_LONGEST);
            }
        })
    }

    /// One left-out source's tools; `Err` says why not, and whether it is not worth trying
    /// again (a paired host that is no longer paired, or that proves another key).
    async fn connect(
        &self,
        source: &LeftOut,
    ) -> std::result::Result<Vec<Arc<dyn clade_tools::Tool>>, (String, bool)> {
        match source {
            LeftOut::Mcp(spec) => clade_tools::mcp::Server::connect(spec.clone())
                .await
                .map(|(_, tools)| tools)
                .map_err(|e| (e.to_string(), false)),
            LeftOut::Host(spec) => clade_tools::remote::Host::connect(spec.clone())
                .await
                .map(|(_, tools)| tools)
                .map_err(|e| (e.to_string(), false)),
            LeftOut::Peer(peer) => {
                let paired = self.store.peer(&peer.kind, &peer.name).await;
                if !matches!(&paired, Ok(Some(now)) if now.key == peer.key) {
                    return Err(("no longer paired with this key".into(), true));
                }
                let identity = self.identity().map_err(|e| (format!("{e:#}"), false))?;
                connect_peer(&self.store, peer, identity)
                    .await
                    .map_err(|e| (e.message.clone(), e.key_changed))
            }
        }
    }

    /// `openapi.<name>` with its document read (relative to the configuration file) and its
    /// headers' values taken from the environment.
    fn openapi_spec(
        &self,
        name: &str,
        api: &clade_config::OpenApiConfig,
    ) -> std::result::Result<clade_tools::openapi::ApiSpec, String> {
        const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;
        let base = self.config_path.parent().unwrap_or(std::path::Path::new("."));
        let path = base.join(&api.document);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("openapi.{name}.document: cannot read {}: {e}", path.display()))?
            .len();
        if size > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "openapi.{name}.document: {} is over {MAX_DOCUMENT_BYTES} bytes",
                path.display()
            ));
        }
        let document = std::fs::read_to_string(&path)
            .map_err(|e| format!("openapi.{name}.document: cannot read {}: {e}", path.display()))?;
        let headers = api
            .headers_env
            .iter()
            .map(|(header, var)| {
                env_value(var).map(|value| (header.clone(), value)).ok_or_else(|| {
                    format!(
                        "openapi.{name}.headers_env.{header}: environment variable {var} is not set"
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(clade_tools::openapi::ApiSpec {
            name: name.to_owned(),
            document,
            base_url: api.base_url.clone(),
            agents: api.agents.clone(),
            headers,
            operations: api.operations.clone(),
            timeout: std::time::Duration::from_secs(api.timeout_secs),
        })
    }
}
