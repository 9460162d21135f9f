use anyhow::{Context as _, Result};
use clade_gateway::{AppState, ServerOptions};

use clade_cluster::Singleton;

use crate::cli::ServeArgs;
use crate::context::Ctx;

/// What a server offers besides running sessions.
pub(super) enum Front {
    /// The API (HTTP, and gRPC if configured): `clade serve`.
    Api(ServeArgs),
    /// Nothing: a cluster's worker node (`clade node join`), which only runs its shards.
    Worker,
}

pub(super) async fn run(ctx: &Ctx, front: Front) -> Result<()> {
    let (args, node_role) = match front {
        Front::Api(args) => (Some(args), clade_cluster::NodeRole::Gateway),
        Front::Worker => (None, clade_cluster::NodeRole::Worker),
    };
    let role = super::serve_node::Role::of(ctx, node_role).await?;
    // Refuse to serve from a damaged store or with secrets we could not read.
    ctx.store.quick_check().await?;
    ctx.secrets().check().await?;
    let listener = match args {
        Some(args) => {
            ctx.ensure_cli_token().await?;
            let listen = args.listen.unwrap_or_else(|| ctx.config.server.listen.clone());
            Some(clade_gateway::bind(&listen).await.with_context(|| {
                format!("cannot listen on {listen}: pass another address with --listen or set server.listen in clade.yaml")
            })?)
        }
        None => None,
    };
    // Its port bound and its TLS files read before anything starts: a bad setting stops here.
    let grpc = match (&listener, &ctx.config.server.grpc) {
        (Some(_), Some(grpc)) => Some(super::serve_grpc::prepare(ctx, grpc).await?),
        _ => None,
    };
    let address = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(address) = address
        && !address.ip().is_loopback()
    {
        tracing::warn!(
            address = %address,
            "the gateway listens beyond this machine: other machines can reach it, and it speaks plain HTTP (tokens and messages unencrypted); put a TLS proxy in front or listen on 127.0.0.1"
        );
    }
    let mut subscribers = ctx.subscribers()?;
    let telegram_bots =
        crate::context::telegram_bots_of(&ctx.config).map_err(anyhow::Error::msg)?;
    let slack_apps = crate::context::slack_apps_of(&ctx.config).map_err(anyhow::Error::msg)?;
    let discord_bots = crate::context::discord_bots_of(&ctx.config).map_err(anyhow::Error::msg)?;
    match ctx.identity() {
        Ok(identity) => {
            subscribers.extend(crate::context::paired_subscribers(&ctx.store, identity).await?)
        }
        Err(err) => tracing::warn!(
            error = %format!("{err:#}"),
            "the gateway's key cannot be read: paired subscribers receive nothing"
        ),
    }
    let instance = crate::context::instance_name(&ctx.config);
    if let Some(options) =
        crate::context::traces_options_of(&ctx.config, &instance).map_err(anyhow::Error::msg)?
    {
        let endpoint = options.endpoint.clone();
        let exporter = clade_otlp::Exporter::new(ctx.store.clone(), options)
            .context("server.traces cannot be used: fix it in clade.yaml, then start again")?;
        subscribers.push(exporter.subscriber());
        tracing::info!(endpoint = %endpoint, "turns are traced to the OTLP collector");
    }
    let models = ctx.models();
    let sandbox = check_sandbox(ctx);
    let sources = ctx.tool_sources(sandbox.clone());
    let options = clade_runtime::EngineOptions {
        sessions: ctx.config.sessions.clone(),
        bindings: ctx.config.bindings.clone(),
        default_agent: ctx.config.default_agent.clone(),
        tools: ctx.tools_from(&sources, sandbox.clone()).await,
        tenants: ctx.config.tenants.clone(),
        failpoints: clade_runtime::Failpoints::process(),
    };
    let (store, agents) = (ctx.store.clone(), ctx.agents.clone());
    let engine =
        clade_runtime::Engine::start_on(store, agents, models.clone(), options, role.bus()).await?;
    sources.attach(&engine);
    engine.set_recall(clade_runtime::memory::recall_of(&ctx.config, sources.memory()));
    // Chat channels: each bot's replies go out through a sink of the outbox's dispatch.
    let channel_health = clade_channels::Health::default();
    let mut bots = Vec::new();
    for options in telegram_bots {
        let bot =
            clade_channels::telegram::Bot::new(options, engine.clone(), channel_health.clone());
        subscribers.push(bot.subscriber().await?);
        bots.push(bot);
    }
    let mut gateway_bots = Vec::new();
    for options in discord_bots {
        let bot =
            clade_channels::discord::Bot::new(&options, engine.clone(), channel_health.clone());
        subscribers.push(bot.subscriber().await?);
        gateway_bots.push(bot);
    }
    let mut apps = Vec::new();
    for options in slack_apps {
        let app = clade_channels::slack::App::new(options, engine.clone(), channel_health.clone());
        subscribers.push(app.subscriber().await?);
        apps.push(app);
    }
    // Alone, at once; on a cluster's node, after a tick listening for the other nodes.
    let joined = role.join(&engine).await?;
    let dispatchers = std::sync::Arc::new(clade_runtime::outbox::idle(
        ctx.store.clone(),
        subscribers,
        engine.outbox_signal(),
    ));
    let listeners = (bots.clone(), apps.clone(), gateway_bots.clone());
    let _duties = joined.duties.start(ctx, &engine, dispatchers.clone(), listeners);
    clade_sched::check_config(&ctx.config, ctx.store.now())
        .context("clade.yaml cannot be served: fix it, then start again")?;
    let beats = clade_sched::heartbeats::reconcile(&ctx.store, &ctx.config)
        .await
        .context("clade.yaml's heartbeats cannot be kept: fix them, then start again")?;
    if !beats.missing.is_empty() {
        tracing::warn!(
            agents = ?beats.missing,
            "heartbeats are declared for agents that do not exist: they beat from the next start after the agents are created"
        );
    }
    tracing::info!(
        created = beats.created.len(),
        replaced = beats.replaced.len(),
        kept = beats.kept.len(),
        removed = beats.removed.len(),
        "heartbeats as clade.yaml declares them"
    );
    let limits = std::sync::Arc::new(clade_gateway::quotas::TenantLimits::new(
        ctx.config.tenants.clone(),
        ctx.store.clock().clone(),
    ));
    joined.share_quotas(&limits);
    let flows = clade_flow::run::Runner::with_agents(engine.clone(), ctx.agents.clone());
    sources.attach_flows(&flows);
    let maintenance = std::sync::Arc::new(Maintenance {
        duties: joined.duties.clone(),
        store: ctx.store.clone(),
        engine: engine.clone(),
        flows: flows.clone(),
        fire_rate: std::sync::Arc::new(clade_gateway::quotas::FireRate::new(
            limits.clone(),
            ctx.store.clone(),
        )),
        running: tokio::sync::Mutex::default(),
        config: tokio::sync::Mutex::new(ctx.config.clone()),
    });
    maintenance.start(&ctx.config).await;
    let _maintenance_duties = maintenance.clone().follow_duties();
    let hooks = std::sync::Arc::new(clade_gateway::hooks::Hooks::new(
        crate::context::hooks_of(&ctx.config).map_err(anyhow::Error::msg)?,
    ));
    let reloader = Reloader::new(
        ctx,
        engine.clone(),
        (limits.clone(), hooks.clone()),
        sources.clone(),
        dispatchers,
        maintenance.clone(),
    )
    .await?;
    let _rejoin = AbortOnDrop(sources.rejoin(engine.clone()));
    let channels = std::sync::Arc::new(clade_channels::Channels::new(
        channel_health,
        bots,
        apps,
        gateway_bots.clone(),
    ));
    let admin_path = crate::admin_socket::path(ctx, None);
    let admin = crate::admin_socket::serve(
        &admin_path,
        admin_handler(
            ctx,
            engine.clone(),
            reloader.clone(),
            address,
            maintenance.fire_rate.clone(),
            joined.keeper(),
            flows.clone(),
        ),
    )?;
    let reloader = reloader.spawn();
    let stream_ids = clade_gateway::stream_ids::StreamIds::load(&ctx.store).await?;
    let max_body_bytes = usize::try_from(ctx.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let peers = match ctx.identity() {
        Ok(identity) => {
            Some(std::sync::Arc::new(clade_gateway::PeerAuth::new(identity, max_body_bytes)))
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "the gateway's key cannot be read: paired operators are refused");
            None
        }
    };
    // A write through the gateway that names no caller is not the CLI's operator.
    // What a leaving node drains once the server stops.
    let drained = engine.clone();
    // A node of a cluster does not take up runs it did not start: another node may be
    // driving them (runs do not move between nodes yet).
    let open = match ctx.config.cluster {
        None => flows.resume_open().await,
        Some(_) => Ok(0),
    };
    match open {
        Ok(0) => {}
        Ok(resumed) => tracing::info!(runs = resumed, "flow runs resumed where they stopped"),
        Err(err) => {
            tracing::warn!(error = %err, "open flow runs cannot be resumed now; they are tried again at the next start")
        }
    }
    let state = AppState {
        store: ctx.store.acting_as("gateway"),
        agents: ctx.agents.acting_as("gateway"),
        engine,
        limits,
        stream_ids,
        config_path: Some(ctx.config_path.clone()),
        settings: ctx.settings.clone(),
        smoke: Some(api_smoke_test(ctx)),
        environment: Some(std::sync::Arc::new(crate::context::environment_check)),
        peers,
        hooks: hooks.clone(),
        channels,
        keeper: joined.keeper(),
        flows: flows.clone(),
        console: std::sync::Arc::default(),
    };
    let options = ServerOptions { max_body_bytes };
    let descriptors = raise_descriptor_limit();
    let limits = clade_gateway::ConnectionLimits {
        max_body_bytes: Some(ctx.config.server.max_body_bytes),
        ..clade_gateway::ConnectionLimits::new(
            ctx.config
                .server
                .max_connections
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or_else(|| default_max_connections(descriptors)),
            std::time::Duration::from_secs(ctx.config.server.header_timeout_secs.max(1)),
        )
    };
    let grpc = grpc
        .map(|prepared| super::serve_grpc::start(prepared, state.clone(), max_body_bytes, limits));
    let metrics = start_metrics(ctx, &state.engine).await?;
    let app = clade_gateway::router(state, &options);
    let url_file = crate::context::gateway_url_file(&ctx.data_dir);
    let Some((listener, address)) = listener.zip(address) else {
        // A worker: no API, only its share of the sessions until it is stopped.
        println!(
            "clade worker node running its share of the sessions (store: {}; model: {}; no API)",
            ctx.store.location(),
            models.describe()
        );
        shutdown_signal().await;
        return stopped(maintenance, joined, &drained, (reloader, admin, &admin_path)).await;
    };
    tracing::info!(
        address = %address,
        admin_socket = %admin_path.display(),
        store = %ctx.store.location(),
        data_dir = %ctx.data_dir.root().display(),
        "clade listening"
    );
    // The CLI's commands find this gateway here, whatever --listen said.
    if let Err(err) = std::fs::write(&url_file, format!("http://{address}\n")) {
        tracing::warn!(path = %url_file.display(), error = %err, "cannot write the gateway's URL for the CLI; pass it with --server");
    }
    // A plain line for people and scripts waiting for readiness.
    println!(
        "clade listening on http://{address} (store: {}; CLI token: {}; model: {})",
        ctx.store.location(),
        ctx.data_dir.token_path().display(),
        models.describe()
    );
    // After the line above, which scripts read first for the HTTP address.
    if let Some(grpc) = &grpc {
        println!("AgentHub (gRPC) listening on {}", grpc.url());
    }
    if let Some(metrics) = &metrics {
        println!("metrics (Prometheus) listening on {}", metrics.url());
    }
    tracing::info!(
        max_connections = limits.max_connections,
        descriptors,
        header_timeout_secs = limits.header_timeout.as_secs(),
        "connection limits"
    );
    clade_gateway::serve(listener, app, shutdown_signal(), limits)
        .await
        .context("server failed")?;
    if let Some(grpc) = grpc {
        grpc.stop().await;
    }
    drop(metrics);
    let _ = std::fs::remove_file(&url_file);
    stopped(maintenance, joined, &drained, (reloader, admin, &admin_path)).await
}

/// The metrics listener: as configured (a port that cannot be had stops the server), or the
/// default one, which a gateway whose port another process holds runs without, saying so.
async fn start_metrics(
    ctx: &Ctx,
    engine: &clade_runtime::Engine,
) -> Result<Option<clade_gateway::metrics::MetricsServer>> {
    let Some(metrics) = ctx.config.server.metrics_listener() else { return Ok(None) };
    let (config, engine) = (metrics.config, engine.clone());
    match clade_gateway::metrics::serve(&config.listen, config.max_tenants, engine).await {
        Ok(server) => Ok(Some(server)),
        Err(err) if !metrics.required => {
            tracing::warn!(error = %err, "no metrics: the default port is taken (another gateway on this machine?); set server.metrics.listen to a free port, or server.metrics.enabled: false");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// What a server does once it stops taking requests: its background work ends and, on a
/// cluster's node, its shards go to the other nodes.
async fn stopped(
    maintenance: std::sync::Arc<Maintenance>,
    joined: super::serve_node::Joined,
    drained: &clade_runtime::Engine,
    (reloader, admin, admin_path): (
        tokio::task::JoinHandle<()>,
        tokio::task::JoinHandle<()>,
        &std::path::Path,
    ),
) -> Result<()> {
    reloader.abort();
    admin.abort();
    let _ = std::fs::remove_file(admin_path);
    maintenance.stop().await;
    joined.leave(drained).await;
    tracing::info!("clade stopped");
    Ok(())
}

/// Takes configuration revisions newer than the one this gateway runs (the newest at its
/// start): each one's sessions, bindings, default agent, tools, tenants and heartbeats are
/// swapped in; turns running finish on the settings they started with.
struct Reloader {
    store: clade_store::Store,
    path: std::path::PathBuf,
    engine: clade_runtime::Engine,
    limits: std::sync::Arc<clade_gateway::quotas::TenantLimits>,
    /// The tenants' inbound webhooks, replaced when `tenants` changes.
    hooks: std::sync::Arc<clade_gateway::hooks::Hooks>,
    settings: std::sync::Arc<clade_runtime::settings::Catalog>,
    /// The revision in force (0 before the first); held while one is taken, so the poll and an
    /// admin socket's `reload` never take one twice.
    running: tokio::sync::Mutex<i64>,
    /// The configuration in force, to tell which sections a new revision changes.
    config: tokio::sync::Mutex<clade_config::Config>,
    /// What the tool registry is built again from when a tool source changes.
    sources: crate::context::ToolSources,
    /// The webhook dispatchers, replaced when `subscribers` changes.
    dispatchers: std::sync::Arc<clade_runtime::outbox::Dispatchers>,
    /// The scheduler and the sweeps, started again when `scheduler` or `sessions` changes.
    maintenance: std::sync::Arc<Maintenance>,
}

impl Reloader {
    async fn new(
        ctx: &Ctx,
        engine: clade_runtime::Engine,
        (limits, hooks): (
            std::sync::Arc<clade_gateway::quotas::TenantLimits>,
            std::sync::Arc<clade_gateway::hooks::Hooks>,
        ),
        sources: crate::context::ToolSources,
        dispatchers: std::sync::Arc<clade_runtime::outbox::Dispatchers>,
        maintenance: std::sync::Arc<Maintenance>,
    ) -> Result<std::sync::Arc<Self>> {
        let store = ctx.store.acting_as("gateway (configuration reload)");
        let running = tokio::sync::Mutex::new(store.config_revisions().latest().await?);
        Ok(std::sync::Arc::new(Self {
            store,
            path: ctx.config_path.clone(),
            engine,
            limits,
            hooks,
            settings: ctx.settings.clone(),
            running,
            config: tokio::sync::Mutex::new(ctx.config.clone()),
            sources,
            dispatchers,
            maintenance,
        }))
    }

    /// Polls the store each second.
    fn spawn(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let reloader = self.clone();
        tokio::spawn(async move {
            let clock = reloader.store.clock().clone();
            loop {
                clock.sleep(std::time::Duration::from_secs(1)).await;
                reloader.take_newest().await;
            }
        })
    }

    /// Takes the newest revision if it is newer than the one in force; the one in force after.
    async fn take_newest(&self) -> i64 {
        let mut running = self.running.lock().await;
        let latest = match self.store.config_revisions().latest().await {
            Ok(latest) if latest > *running => latest,
            Ok(_) => return *running,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the configuration revisions; trying again");
                return *running;
            }
        };
        *running = latest;
        let config = match self
            .store
            .config_revisions()
            .get(latest)
            .await
            .map_err(|e| e.to_string())
            .and_then(|revision| {
                clade_gateway::config_flow::validate(&revision.yaml, &self.path, self.store.now())
                    .map_err(|e| e.to_string())
            }) {
            Ok(config) => config,
            Err(err) => {
                tracing::error!(revision = latest, error = %err, "configuration revision not taken: the gateway runs the one before; apply a fixed one");
                return latest;
            }
        };
        self.engine.reload(clade_runtime::Settings::new(
            config.sessions.clone(),
            config.bindings.clone(),
            config.default_agent.clone(),
            config.tenants.clone(),
        ));
        let tools = self.engine.tools();
        let mut before = self.config.lock().await;
        let changed = clade_gateway::config_flow::changed_sections(&before, &config);
        // A changed tool source: its tools are listed again (MCP servers started, hosts
        // reached); otherwise the same tools under the new rules.
        // Bindings say how their sessions' memory is isolated, so they renew memory too.
        if changed.iter().any(|(name, _)| *name == "memory" || *name == "bindings") {
            let memory = self.sources.set_memory(&config);
            self.engine.set_recall(clade_runtime::memory::recall_of(&config, memory));
        }
        let registry = if changed.iter().any(|(name, _)| TOOL_SOURCES.contains(name)) {
            self.sources.registry(&config).await
        } else {
            tools.tool_set().registry().clone()
        };
        tools.reload(registry, &config.tools, Some(&config.tenants));
        if changed.iter().any(|(name, _)| MODEL_SECTIONS.contains(name)) {
            let models = self.engine.models().succeed(&config, crate::context::env_hints(&config));
            tracing::info!(models = %models.describe(), "models of the new configuration in force");
            self.engine.reload_models(models);
        }
        if changed.iter().any(|(name, _)| *name == "subscribers") {
            match crate::context::subscribers_of(&config) {
                Ok(subscribers) => self.dispatchers.reload(subscribers),
                Err(err) => {
                    tracing::error!(error = %err, "webhook subscribers not changed: the ones before keep delivering")
                }
            }
        }
        if changed.iter().any(|(name, _)| matches!(*name, "scheduler" | "sessions")) {
            self.maintenance.start(&config).await;
        }
        *before = config.clone();
        self.limits.reload(config.tenants.clone());
        if changed.iter().any(|(name, _)| *name == "tenants") {
            match crate::context::hooks_of(&config) {
                Ok(hooks) => self.hooks.reload(hooks),
                Err(err) => {
                    tracing::error!(error = %err, "inbound hooks not changed: the ones before keep taking requests")
                }
            }
        }
        self.settings.reload(crate::context::declared_settings(&config));
        if let Err(err) = clade_sched::heartbeats::reconcile(&self.store, &config).await {
            tracing::warn!(error = %err, "heartbeats not updated to the new configuration");
        }
        tracing::info!(
            revision = latest,
            hot = ?clade_gateway::config_flow::hot().collect::<Vec<_>>(),
            "configuration revision in force (other sections take effect at the next start)"
        );
        latest
    }
}

/// The smoke test `POST /v1/config` runs: one call through the new configuration's channel
/// model for the operator's tenant.
fn api_smoke_test(ctx: &Ctx) -> clade_gateway::config_flow::SmokeFn {
    let store = ctx.store.clone();
    let secrets = ctx.secrets();
    std::sync::Arc::new(move |config: clade_config::Config| {
        let (store, secrets) = (store.clone(), secrets.clone());
        Box::pin(async move {
            let tenant = store.tenants().named(clade_core::Tenant::DEFAULT_NAME).await?;
            let models = crate::context::models_from(&config, &store, secrets);
            Ok(super::config::smoke_call(&tenant, models).await?)
        })
    })
}

/// The sections whose change makes a serving gateway list its tools again.
const TOOL_SOURCES: &[&str] = &["mcp", "tool_hosts", "openapi", "scheduler", "memory"];

/// The sections whose change gives turns new models.
const MODEL_SECTIONS: &[&str] = &["models", "routing", "budgets"];

/// What the admin socket's actions do in this gateway.
fn admin_handler(
    ctx: &Ctx,
    engine: clade_runtime::Engine,
    reloader: std::sync::Arc<Reloader>,
    listen: Option<std::net::SocketAddr>,
    fire_rate: std::sync::Arc<clade_gateway::quotas::FireRate>,
    keeper: Option<std::sync::Arc<clade_cluster::Keeper>>,
    flows: clade_flow::run::Runner,
) -> crate::admin_socket::Handler {
    use clade_protocol::admin::{AdminReply, AdminRequest, AdminStatus};
    let store = ctx.store.location().to_string();
    let operator = ctx.store.acting_as("operator (admin socket)");
    let identity = ctx.identity();
    let clock = ctx.store.clock().clone();
    let started = clock.now();
    std::sync::Arc::new(move |request| {
        let engine = engine.clone();
        let reloader = reloader.clone();
        let fire_rate = fire_rate.clone();
        let keeper = keeper.clone();
        let flows = flows.clone();
        let store = store.clone();
        let operator = operator.clone();
        let identity = identity.as_ref().map(Clone::clone).map_err(|e| format!("{e:#}"));
        let uptime = clock.now().as_millis().saturating_sub(started.as_millis()) / 1000;
        Box::pin(async move {
            match request {
                AdminRequest::Status {} => {
                    let revision = *reloader.running.lock().await;
                    AdminReply::Status(AdminStatus {
                        version: env!("CARGO_PKG_VERSION").into(),
                        pid: std::process::id(),
                        listen: listen
                            .map_or_else(|| "none (a worker node)".into(), |a| a.to_string()),
                        store,
                        active_sessions: engine.active_sessions() as u64,
                        config_revision: (revision > 0).then_some(revision),
                        running_turns: engine.running_turns() as u64,
                        draining: engine.draining(),
                        uptime_secs: u64::try_from(uptime).unwrap_or_default(),
                    })
                }
                AdminRequest::Reload {} => {
                    let revision = reloader.take_newest().await;
                    AdminReply::Reloaded { revision: (revision > 0).then_some(revision) }
                }
                AdminRequest::Pauses {} => match engine.reload_pauses().await {
                    Ok(woken) => {
                        AdminReply::Woken { sessions: u32::try_from(woken).unwrap_or(u32::MAX) }
                    }
                    Err(err) => AdminReply::Error { message: err.to_string() },
                },
                AdminRequest::Wake { sessions } => wake(&engine, &sessions).await,
                AdminRequest::Drain { wait_secs } => {
                    tracing::warn!(
                        "draining: no new event is taken; stop the gateway once its turns have ended"
                    );
                    let wait = std::time::Duration::from_secs(wait_secs.unwrap_or(60).min(3_600));
                    let running =
                        super::serve_node::hand_over(&engine, keeper.as_deref(), wait).await;
                    AdminReply::Drained { running_turns: running as u64 }
                }
                AdminRequest::TakeEvents { tenant, events } => {
                    take_events(&fire_rate, &tenant, events).await
                }
                AdminRequest::Nodes {} => nodes(&operator, keeper).await,
                AdminRequest::TakeUpRuns { runs } => take_up(&flows, &runs).await,
                AdminRequest::Identity {} => match identity {
                    Ok(identity) => AdminReply::Identity {
                        key: identity.public(),
                        peers: operator.peers().list().await.map(|p| p.len() as u32).unwrap_or(0),
                    },
                    Err(message) => AdminReply::Error { message },
                },
                AdminRequest::Pair { kind, endpoint, name, token, agents, leased, scopes } => {
                    let identity = match identity {
                        Ok(identity) => identity,
                        Err(message) => return AdminReply::Error { message },
                    };
                    let asked = Pairing { kind, endpoint, name, token, agents, leased, scopes };
                    pair(&operator, &engine, &reloader.dispatchers, identity, asked)
                        .await
                        .unwrap_or_else(|message| AdminReply::Error { message })
                }
            }
        })
    })
}

/// The cluster's nodes for the admin socket, as `GET /v1/cluster/nodes` shows them.
async fn nodes(
    store: &clade_store::Store,
    keeper: Option<std::sync::Arc<clade_cluster::Keeper>>,
) -> clade_protocol::admin::AdminReply {
    use clade_protocol::admin::AdminReply;
    match store.shard_leases().list().await {
        Ok(leases) => {
            let heard = keeper.map(|keeper| keeper.heard()).unwrap_or_default();
            AdminReply::Nodes { items: clade_cluster::nodes_of(leases, &heard) }
        }
        Err(err) => AdminReply::Error { message: err.to_string() },
    }
}

/// The admin socket's `wake`: runs what another process stored for these sessions (each of
/// its own tenant, which the signal names).
async fn wake(
    engine: &clade_runtime::Engine,
    sessions: &[String],
) -> clade_protocol::admin::AdminReply {
    use clade_protocol::admin::AdminReply;
    let mut woken = 0u32;
    for id in sessions {
        let session = match clade_core::SessionId::parse(id) {
            Ok(session) => session,
            Err(e) => {
                return AdminReply::Error {
                    message: format!("sessions: {id:?} is not a session id: {e}"),
                };
            }
        };
        match engine.store().system().session_any_tenant(session).await {
            Ok(row) => {
                engine.wake(row.tenant_id, session);
                woken += 1;
            }
            Err(err) => {
                return AdminReply::Error { message: format!("sessions: {id}: {err}") };
            }
        }
    }
    AdminReply::Woken { sessions: woken }
}

/// The admin socket's `take_events`: a separate scheduler's fires take from the tenant's
/// bucket here, the one its API events take from.
async fn take_events(
    fire_rate: &clade_gateway::quotas::FireRate,
    tenant: &str,
    events: u32,
) -> clade_protocol::admin::AdminReply {
    use clade_protocol::admin::AdminReply;
    use clade_sched::scheduler::FireGate as _;
    match clade_core::TenantId::parse(tenant) {
        Ok(id) => AdminReply::Taken { admitted: fire_rate.admit(id, events as usize).await },
        Err(e) => {
            AdminReply::Error { message: format!("tenant: {tenant:?} is not a tenant id: {e}") }
        }
    }
}

/// Drives the flow runs a look's fires started (a run not taken up now is at the next start).
fn take_up_soon(
    flows: &clade_flow::run::Runner,
    runs: &[(clade_core::TenantId, clade_core::ExecutionId)],
) {
    if runs.is_empty() {
        return;
    }
    let (flows, runs) = (flows.clone(), runs.to_vec());
    tokio::spawn(async move {
        for (tenant, run) in runs {
            if let Err(err) = flows.take_up(tenant, run).await {
                tracing::warn!(run = %run, error = %err, "a scheduled flow run waits for the next start");
            }
        }
    });
}

/// The admin socket's `take_up_runs`: drives the flow runs another process's fires started.
async fn take_up(
    flows: &clade_flow::run::Runner,
    runs: &[clade_protocol::admin::RunRef],
) -> clade_protocol::admin::AdminReply {
    use clade_protocol::admin::AdminReply;
    let mut taken = 0u32;
    for one in runs {
        let (tenant, run) = match (one.tenant.parse(), one.run.parse()) {
            (Ok(tenant), Ok(run)) => (tenant, run),
            _ => {
                return AdminReply::Error {
                    message: format!("{one:?} does not name a tenant and a run by their ids"),
                };
            }
        };
        match flows.take_up(tenant, run).await {
            Ok(()) => taken += 1,
            Err(err) => {
                tracing::debug!(run = %run, error = %err, "a flow run to take up was skipped")
            }
        }
    }
    AdminReply::TakenUp { runs: taken }
}

/// Stops a task when the gateway stops.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The gateway's scheduler (agents' jobs) and retention sweeps, as `scheduler.*` says: started
/// at the gateway's start and again with each configuration revision that changes it.
struct Maintenance {
    /// Which of the scheduler and the sweeps this gateway runs (on a cluster's node, what the
    /// keeper gave it).
    duties: super::serve_node::Duties,
    store: clade_store::Store,
    engine: clade_runtime::Engine,
    /// Drives the flow runs that jobs' fires start.
    flows: clade_flow::run::Runner,
    /// What admits each tenant's fires: its event rate, shared with its API events.
    fire_rate: std::sync::Arc<clade_gateway::quotas::FireRate>,
    running: tokio::sync::Mutex<Option<Running>>,
    /// The configuration it runs by, to start again when its duties change.
    config: tokio::sync::Mutex<clade_config::Config>,
}

/// What [`Maintenance`] runs now.
struct Running {
    /// Stops the scheduler; with its task, which ends once a look under way is settled.
    scheduler: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    sweeps: Option<tokio::task::JoinHandle<()>>,
}

impl Maintenance {
    /// Runs the scheduler (unless `scheduler.enabled` is off) and the sweeps as `config` says,
    /// after stopping those running: a look under way settles first, so no fire is taken twice.
    async fn start(&self, config: &clade_config::Config) {
        let mut running = self.running.lock().await;
        if let Some(before) = running.take() {
            stop(before).await;
        }
        *self.config.lock().await = config.clone();
        let scheduler = if !self.duties.runs(Singleton::Scheduler) {
            None
        } else if config.scheduler.enabled {
            let waker = self.engine.clone();
            let flows = self.flows.clone();
            let wake = std::sync::Arc::new(move |look: &clade_sched::scheduler::Look| {
                for (tenant, session) in &look.sessions {
                    waker.wake(*tenant, *session);
                }
                take_up_soon(&flows, &look.flow_runs);
            });
            let scheduler = clade_sched::scheduler::Scheduler::new(
                self.store.acting_as("scheduler"),
                look_options_of(config),
                wake,
            )
            .with_gate(self.fire_rate.clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(scheduler.run(async {
                let _ = stopped.await;
            }));
            tracing::info!("scheduler running");
            Some((stop, task))
        } else {
            tracing::warn!(
                "scheduler.enabled is false: no job fires from this gateway (run `clade cron-service` beside it)"
            );
            None
        };
        if !self.duties.runs(Singleton::Retention) {
            *running = Some(Running { scheduler, sweeps: None });
            return;
        }
        let settings = self.engine.clone();
        let tenants: clade_sched::retention::TenantsNow =
            std::sync::Arc::new(move || settings.settings().tenants.clone());
        let store = self.store.acting_as("retention sweep");
        let schedule = config.scheduler.retention_schedule.clone();
        let sweeps = tokio::spawn(async move {
            if let Err(err) =
                clade_sched::retention::run(store, &schedule, tenants, std::future::pending()).await
            {
                tracing::error!(error = %err, "scheduler.retention_schedule cannot be read: no retention sweep runs");
            }
        });
        *running = Some(Running { scheduler, sweeps: Some(sweeps) });
    }

    /// Starts again, on the configuration in force, each time the scheduler or the sweeps
    /// come to this gateway or leave it.
    fn follow_duties(self: std::sync::Arc<Self>) -> AbortOnDrop {
        let mut duties = self.duties.watch();
        let ours = |duties: &[Singleton]| {
            (duties.contains(&Singleton::Scheduler), duties.contains(&Singleton::Retention))
        };
        AbortOnDrop(tokio::spawn(async move {
            let mut before = ours(&duties.borrow_and_update());
            while duties.changed().await.is_ok() {
                let now = ours(&duties.borrow_and_update());
                if now != before {
                    before = now;
                    let config = self.config.lock().await.clone();
                    self.start(&config).await;
                }
            }
        }))
    }

    async fn stop(&self) {
        if let Some(running) = self.running.lock().await.take() {
            stop(running).await;
        }
    }
}

async fn stop(running: Running) {
    // A sweep is one transaction: stopping between them loses nothing.
    if let Some(sweeps) = running.sweeps {
        sweeps.abort();
    }
    if let Some((stop, task)) = running.scheduler {
        let _ = stop.send(());
        let _ = task.await;
    }
}

/// A pairing asked for over the admin socket.
struct Pairing {
    kind: String,
    endpoint: String,
    name: String,
    token: String,
    agents: Vec<String>,
    leased: bool,
    scopes: Vec<String>,
}

/// What a paired operator may do: one tenant (whole, or some of its agents) with `scopes`
/// (default `operate`), from its agent patterns (`tenant/*`, or `tenant/handle`s).
async fn operator_access(
    store: &clade_store::Store,
    agents: &[String],
    scopes: &[String],
) -> std::result::Result<
    (clade_core::Tenant, Vec<clade_core::Scope>, Option<Vec<clade_core::AgentId>>),
    String,
> {
    let scopes = if scopes.is_empty() {
        vec![clade_core::Scope::Operate]
    } else {
        clade_core::Scope::split(&scopes.join(",")).map_err(|e| format!("scopes: {e}"))?
    };
    let mut tenant_name: Option<String> = None;
    let mut handles = Vec::new();
    let mut whole = false;
    for pattern in agents {
        let (tenant, handle) = match pattern.split_once('/') {
            Some((tenant, handle)) => (tenant.to_owned(), handle.to_owned()),
            None if pattern == "*" => {
                return Err("an operator acts in one tenant: name it (`tenant/*`), not `*`".into());
            }
            None => (clade_core::Tenant::DEFAULT_NAME.to_owned(), pattern.clone()),
        };
        if tenant_name.as_ref().is_some_and(|t| *t != tenant) {
            return Err(format!(
                "an operator acts in one tenant, and these agents are of {} and {tenant}",
                tenant_name.unwrap_or_default()
            ));
        }
        tenant_name = Some(tenant);
        if handle == "*" {
            whole = true;
        } else {
            handles.push(handle);
        }
    }
    let tenant = store
        .tenants()
        .named(tenant_name.as_deref().unwrap_or(clade_core::Tenant::DEFAULT_NAME))
        .await
        .map_err(|e| e.to_string())?;
    let only = if whole {
        None
    } else {
        let mut ids = Vec::new();
        for handle in &handles {
            ids.push(store.agents(tenant.id).get(handle).await.map_err(|e| e.to_string())?.id);
        }
        Some(ids)
    };
    Ok((tenant, scopes, only))
}

/// Pairs with a component from this process and keeps its key: a tool host's tools are offered
/// at once, and a subscriber is sent events at once.
async fn pair(
    store: &clade_store::Store,
    engine: &clade_runtime::Engine,
    dispatchers: &clade_runtime::outbox::Dispatchers,
    identity: std::sync::Arc<clade_tools::remote::identity::Identity>,
    asked: Pairing,
) -> std::result::Result<clade_protocol::admin::AdminReply, String> {
    let Pairing { kind, endpoint, name, token, agents, leased, scopes } = asked;
    let (kind, endpoint, name) = (kind.as_str(), endpoint.as_str(), name.as_str());
    let operator = kind == clade_store::peers::OPERATOR;
    // A listener and a worker node are known by their key alone: they reach no agent.
    let listener =
        kind == clade_channels::LISTENER_PEER_KIND || kind == clade_cluster::NODE_PEER_KIND;
    if kind != "tool" && kind != clade_runtime::outbox::PEER_KIND && !operator && !listener {
        return Err(format!(
            "components of kind {kind:?} cannot be paired: `tool` (a tool host), `subscriber`, `operator` (a CLI), `listener` (a channel's listener) or `node` (a cluster's worker)"
        ));
    }
    if leased && kind != clade_runtime::outbox::PEER_KIND && !operator {
        return Err("only a subscriber or an operator is paired `leased`".into());
    }
    if !scopes.is_empty() && !operator {
        return Err("only an operator (a CLI) is paired with scopes".into());
    }
    if !clade_config::source_name(name) {
        return Err(format!("name {name:?}: names use 1-64 of a-z, 0-9, - and _"));
    }
    let agents = if agents.is_empty() {
        vec![format!("{}/*", clade_core::Tenant::DEFAULT_NAME)]
    } else {
        agents
    };
    // An operator's rights are checked before anything is sent: what it may reach must exist.
    let access =
        if operator { Some(operator_access(store, &agents, &scopes).await?) } else { None };
    let timeout = std::time::Duration::from_secs(30);
    let key = clade_tools::remote::pair(name, endpoint, &token, &identity, timeout)
        .await
        .map_err(|e| e.to_string())?;
    // An operator acts through a token of its own whose secret is never kept: its signature
    // is what authenticates it.
    let token = match &access {
        Some((tenant, scopes, only)) => {
            let (info, _) = store
                .tokens(tenant.id)
                .create(&format!("peer:{name}"), scopes, only.as_deref(), None)
                .await
                .map_err(|e| format!("paired, but its access cannot be given: {e}"))?;
            Some(info)
        }
        None => None,
    };
    let recorded = store
        .peers()
        .record(clade_store::NewPeer {
            kind: kind.to_owned(),
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            key: key.clone(),
            agents,
            leased,
            token: token.as_ref().map(|t| t.id),
        })
        .await;
    let peer = match recorded {
        Ok(peer) => peer,
        Err(err) => {
            if let Some(token) = &token {
                let _ = store.tokens(token.tenant_id).revoke(token.id).await;
            }
            return Err(err.to_string());
        }
    };
    if listener {
        tracing::info!(kind, name = %name, key = %key, "component paired");
        return Ok(clade_protocol::admin::AdminReply::Paired {
            name: name.to_owned(),
            key,
            tools: 0,
            left_out: Vec::new(),
        });
    }
    if operator {
        tracing::info!(operator = %name, key = %key, "operator paired");
        return Ok(clade_protocol::admin::AdminReply::Paired {
            name: name.to_owned(),
            key,
            tools: 0,
            left_out: Vec::new(),
        });
    }
    if kind == clade_runtime::outbox::PEER_KIND {
        let paired = crate::context::paired_subscribers(store, identity)
            .await
            .map_err(|e| format!("paired, but the paired subscribers cannot be read: {e}"))?;
        dispatchers.reload_paired(paired);
        tracing::info!(subscriber = %name, key = %key, leased, "subscriber paired");
        return Ok(clade_protocol::admin::AdminReply::Paired {
            name: name.to_owned(),
            key,
            tools: 0,
            left_out: Vec::new(),
        });
    }
    let tools = crate::context::connect_peer(store, &peer, identity).await.map_err(|e| {
        format!(
            "paired, but its tools cannot be listed now ({e}); they are offered from the next start"
        )
    })?;
    let count = tools.len();
    let left_out = engine.tools().add_tools(tools);
    tracing::info!(host = %name, key = %key, tools = count, "tool host paired");
    Ok(clade_protocol::admin::AdminReply::Paired {
        name: name.to_owned(),
        key,
        tools: u32::try_from(count - left_out.len()).unwrap_or(u32::MAX),
        left_out,
    })
}

/// How a look settles jobs, from `scheduler.*` and `sessions.max_queued`.
pub(super) fn look_options(ctx: &Ctx) -> clade_sched::scheduler::LookOptions {
    look_options_of(&ctx.config)
}

fn look_options_of(config: &clade_config::Config) -> clade_sched::scheduler::LookOptions {
    let sessions = &config.sessions;
    let config = &config.scheduler;
    clade_sched::scheduler::LookOptions {
        grace: std::time::Duration::from_secs(config.grace_secs),
        limit: 1_000,
        max_queued: sessions.max_queued,
        max_failures: config.max_failures,
        ..clade_sched::scheduler::LookOptions::default()
    }
}

/// Says loudly how tools will run: unsandboxed by the operator's choice, or, once the
/// self-check that starts here in the background has run, failing closed because bubblewrap
/// cannot set up a sandbox here. The gateway answers meanwhile; `/readyz` and tool calls report
/// the outcome.
fn check_sandbox(ctx: &Ctx) -> std::sync::Arc<clade_tools::sandbox::Sandbox> {
    let hardening = clade_tools::sandbox::harden_daemon();
    tracing::info!(
        non_dumpable = hardening.non_dumpable,
        no_core = hardening.no_core,
        "daemon hardened"
    );
    let sandbox = std::sync::Arc::new(ctx.sandbox());
    match sandbox.mode() {
        clade_config::SandboxMode::None => tracing::warn!(
            "tools.sandbox is `none`: host-touching tools run UNSANDBOXED with this process's rights; remove it to use bubblewrap"
        ),
        clade_config::SandboxMode::Bubblewrap => {
            let checked = sandbox.clone();
            tokio::spawn(async move {
                match checked.self_check().await {
                    Ok(()) => tracing::info!("sandbox self-check passed"),
                    Err(err) => tracing::warn!(
                        error = %err,
                        "host-touching tools will be refused until the sandbox works"
                    ),
                }
            });
        }
    }
    sandbox
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Raises this process's soft descriptor limit to its hard limit; the limit in force.
fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1024)
}

/// The default connection cap: the descriptor limit less room for the store, model calls and
/// tools.
fn default_max_connections(descriptor_limit: u64) -> usize {
    usize::try_from(descriptor_limit.saturating_sub(512).max(64)).unwrap_or(usize::MAX)
}
