//! One module per command group.

mod admin;
mod agents;
mod bench;
mod bench_cluster;
mod bench_flows;
mod bench_gateway;
mod bench_memory;
mod bench_messages;
mod bench_neighbours;
mod bench_openai;
mod bench_sched;
mod bench_siege;
mod bench_turns;
mod channels;
mod config;
mod cron;
mod debug;
mod demo_cloud;
mod doctor;
mod flow;
mod ingest_service;
mod mcp;
mod memory;
mod models;
mod node;
mod node_join;
mod peers;
mod remote;
mod serve;
mod serve_grpc;
mod serve_node;
mod sessions;
mod teams;
mod tool_host;
mod tools;
mod trace;
#[cfg(feature = "tui")]
mod tui;
mod usage;

use anyhow::Result;
use clade_config::LogFormat;

use crate::cli::{Cli, Command, LogFormatArg};
use crate::context::{self, Ctx};
use crate::logging;

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    // Commands that need no store are handled before one is opened.
    if let Command::Config(cmd) = &cli.command
        && !config::needs_store(cmd)
    {
        logging::init(LogFormat::Human, None, "warn");
        return config::run(global, cmd);
    }
    if let Command::Doctor = &cli.command {
        logging::init(LogFormat::Human, None, "error");
        return doctor::run(global).await;
    }
    if let Command::Version = &cli.command {
        println!("clade {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        // Into memory first: the generator panics on a failed write, and a reader that stops
        // early (`| head`) is no error.
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut command, "clade", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            written => Ok(written?),
        };
    }
    if let Command::Flow(crate::cli::FlowCommand::Check { file }) = &cli.command {
        logging::init(LogFormat::Human, None, "warn");
        return flow::check(file);
    }
    if let Command::EgressBridge { listen, socket } = cli.command {
        return Ok(clade_tools::egress::bridge(listen, socket).await?);
    }
    if let Command::ToolHost(cmd) = cli.command {
        logging::init(LogFormat::Human, None, "warn");
        return tool_host::run(cmd).await;
    }
    if let Command::Stub(args) = cli.command {
        logging::init(LogFormat::Human, None, "warn");
        return Ok(clade_stub::standalone::run(args).await?);
    }
    let data_dir_path = context::data_dir_path(global)?;
    if !matches!(cli.command, Command::Serve(_) | Command::Migrate(_)) {
        context::refuse_mistyped_data_dir(&data_dir_path)?;
    }
    let data_dir = clade_store::DataDir::open(data_dir_path)?;
    context::set_models_dir(&data_dir);
    let file_config = context::load_config(global, &data_dir)?;
    let format = match global.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Human) => LogFormat::Human,
        None => file_config.log.format,
    };
    let default_filter = if matches!(
        cli.command,
        Command::Serve(_)
            | Command::CronService(_)
            | Command::SubscriberService(_)
            | Command::Memory(crate::cli::MemoryCommand::IngestService(_))
            | Command::Channels(crate::cli::ChannelsCommand::Listen { .. })
            | Command::Node(crate::cli::NodeCommand::Join { .. })
    ) {
        "info"
    } else {
        "warn"
    };
    logging::init(format, file_config.log.filter.as_deref(), default_filter);
    if let Command::SubscriberService(args) = cli.command {
        // A subscriber keeps only its key and peers in the data dir: no store.
        return peers::subscriber_service(&data_dir, args).await;
    }
    if let Command::Memory(crate::cli::MemoryCommand::IngestService(args)) = cli.command {
        // It reaches memory through the gateway's API: no store.
        let url = args
            .server
            .server
            .clone()
            .unwrap_or_else(|| format!("http://{}", file_config.server.listen));
        return ingest_service::run(&data_dir, url, global.agent.clone(), args).await;
    }
    if let Command::Channels(crate::cli::ChannelsCommand::Listen {
        name,
        platform,
        server,
        paired,
    }) = &cli.command
    {
        // A listener reaches the gateway over HTTP only: no store.
        let (server, platform) = (server.server.clone(), platform.as_deref());
        return channels::listen(&data_dir, &file_config, name, platform, server, *paired).await;
    }
    if let Command::Node(crate::cli::NodeCommand::Join { hub, listen, token_env }) = &cli.command {
        // The store and configuration are the cluster's, which the gateway names once paired.
        return node_join::run(global, &data_dir, (hub, listen, token_env)).await;
    }
    if let Command::Remote(cmd) = cli.command {
        // A remote CLI keeps only its key and profile in the data dir: no store.
        return remote::run(&data_dir, cmd).await;
    }

    if let Command::Migrate(args) = &cli.command
        && args.rewrite_checksums
    {
        // Before the store is opened: opening refuses the pages this accepts.
        admin::rewrite_checksums(&context::location(global, &data_dir, &file_config)?)?;
    }
    // Only the server and `clade migrate` upgrade a store's schema: any other command may run
    // beside a server of the version the store is at.
    let migrations = match cli.command {
        Command::Serve(_) | Command::Migrate(_) => clade_store::Migrations::Apply,
        _ => clade_store::Migrations::RequireCurrent,
    };
    let ctx = Ctx::open(global, migrations).await?;
    match cli.command {
        Command::Serve(args) => serve::run(&ctx, serve::Front::Api(args)).await,
        Command::Migrate(_) => admin::migrate(&ctx),
        Command::Agents(cmd) => agents::run(&ctx, cmd).await,
        Command::Teams(cmd) => teams::run(&ctx, cmd).await,
        Command::Tenants(cmd) => admin::tenants(&ctx, cmd).await,
        Command::Tokens(cmd) => admin::tokens(&ctx, cmd).await,
        Command::Secrets(cmd) => admin::secrets(&ctx, cmd).await,
        Command::Chat(args) => sessions::chat(&ctx, args).await,
        Command::Event(cmd) => sessions::event(&ctx, cmd).await,
        Command::Sessions(cmd) => sessions::run(&ctx, cmd).await,
        Command::Runs(cmd) => sessions::runs(&ctx, cmd).await,
        Command::Flow(cmd) => flow::run(&ctx, cmd).await,
        Command::Deadletters(cmd) => sessions::deadletters(&ctx, cmd).await,
        Command::Hooks(cmd) => config::hooks(&ctx, cmd),
        Command::Channels(cmd) => channels::run(&ctx, cmd).await,
        Command::Models(cmd) => models::run(&ctx, cmd).await,
        Command::Usage(args) => usage::run(&ctx, args).await,
        Command::Trace(command) => trace::run(&ctx, command).await,
        Command::Debug(command) => debug::run(&ctx, command).await,
        #[cfg(feature = "tui")]
        Command::Tui(args) => tui::run(&ctx, args).await,
        Command::Tools(cmd) => tools::run(&ctx, cmd).await,
        Command::Approvals(cmd) => tools::approvals(&ctx, cmd).await,
        Command::Grants(cmd) => tools::grants(&ctx, cmd).await,
        Command::Audit(args) => tools::audit(&ctx, args).await,
        Command::Cron(cmd) => cron::run(&ctx, cmd).await,
        Command::Retention(cmd) => cron::retention(&ctx, cmd).await,
        Command::Settings(cmd) => tools::settings(&ctx, cmd).await,
        Command::Memory(cmd) => memory::run(&ctx, cmd).await,
        Command::Bench(cmd) => bench::run(&ctx, cmd).await,
        Command::Demo(cmd) => demo_cloud::run(&ctx, cmd).await,
        Command::Mcp(cmd) => mcp::run(&ctx, cmd).await,
        Command::CronService(args) => tool_host::cron_service(&ctx, args).await,
        Command::Gateway(cmd) => tool_host::gateway(&ctx, cmd).await,
        Command::Status { admin_socket, json } => {
            tool_host::gateway(&ctx, crate::cli::GatewayCommand::Status { admin_socket, json })
                .await
        }
        Command::Pair(cmd) => peers::pair(&ctx, cmd).await,
        Command::Lease(cmd) => peers::lease(&ctx, cmd).await,
        Command::Node(cmd) => node::run(&ctx, cmd).await,
        Command::Config(cmd) => config::revisions(&ctx, cmd).await,
        Command::Stub(_)
        | Command::Doctor
        | Command::Version
        | Command::Completions { .. }
        | Command::EgressBridge { .. }
        | Command::ToolHost(_)
        | Command::SubscriberService(_)
        | Command::Remote(_) => Ok(()),
    }
}
