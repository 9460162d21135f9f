//! Remote tool hosts and the gateway's admin socket: `clade cron-service`, `clade tool-host
//! check` and `clade gateway status|reload`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clade_protocol::admin::{AdminReply, AdminRequest};

use crate::admin_socket;
use crate::cli::{CronServiceArgs, GatewayCommand, ToolHostCommand};
use crate::context::{Ctx, env_value};
use crate::output;

/// How long a call may stay silent before the cron service sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Idempotency keys the cron service remembers.
const REMEMBERED_KEYS: usize = 10_000;

pub(super) async fn cron_service(ctx: &Ctx, args: CronServiceArgs) -> Result<()> {
    let Some(token) = env_value(&args.token_env) else {
        bail!(
            "{} is not set: give the cron service the token gateways will send (the gateway's tool_hosts.<name>.token_env names the same variable), or pass --token-env",
            args.token_env
        );
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| {
        format!("cannot listen on {}: pass another address with --listen", args.listen)
    })?;
    let address = listener.local_addr()?;
    let mut registry = clade_tools::Registry::new();
    clade_sched::tools::register(&mut registry, ctx.store.clone(), ctx.config.tenants.clone());
    let app = clade_gateway::tool_host::router(
        registry,
        clade_gateway::tool_host::HostOptions {
            name: "clade cron-service".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            token: Some(token),
            heartbeat: HEARTBEAT,
            remembered: REMEMBERED_KEYS,
            identity: Some(std::sync::Arc::new(
                clade_tools::remote::identity::Identity::load_or_create(
                    &args
                        .identity
                        .clone()
                        .unwrap_or_else(|| ctx.data_dir.root().join("cron-service.key")),
                )?,
            )),
            peers_file: Some(
                args.peers
                    .clone()
                    .unwrap_or_else(|| ctx.data_dir.root().join("cron-service.peers.json")),
            ),
            // Kept in the store it serves, so a restart forgets no key.
            memory: Some(ctx.store.clone()),
        },
    )?;
    // The gateway runs what a fire stored once it is told: over its admin socket, else at its
    // next start (it resumes every session with work waiting).
    let socket = admin_socket::path(ctx, args.admin_socket.as_deref());
    let wake_path = socket.clone();
    let wake = Arc::new(move |look: &clade_sched::scheduler::Look| {
        take_up_remotely(&wake_path, &look.flow_runs);
        if look.sessions.is_empty() {
            return;
        }
        let sessions = look.sessions.iter().map(|(_, session)| session.to_string()).collect();
        tell_gateway(&wake_path, AdminRequest::Wake { sessions }, "the sessions jobs fired into");
    });
    let limits = std::sync::Arc::new(clade_gateway::quotas::TenantLimits::new(
        ctx.config.tenants.clone(),
        ctx.store.clock().clone(),
    ));
    let gate = GatewayFireRate {
        socket: socket.clone(),
        own: clade_gateway::quotas::FireRate::new(limits, ctx.store.clone()),
    };
    let scheduler = clade_sched::scheduler::Scheduler::new(
        ctx.store.acting_as("cron service"),
        super::serve::look_options(ctx),
        wake,
    )
    .with_gate(std::sync::Arc::new(gate));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let jobs = tokio::spawn(scheduler.run(async {
        let _ = stopped.await;
    }));
    tracing::info!(address = %address, admin_socket = %socket.display(), "cron service serving");
    println!(
        "clade cron-service listening on http://{address}/ (remote tool protocol; store: {}; waking sessions through {})",
        ctx.store.location(),
        socket.display()
    );
    let limits = clade_gateway::ConnectionLimits::new(1_024, Duration::from_secs(10));
    clade_gateway::serve(listener, app, super::serve::shutdown_signal(), limits)
        .await
        .context("the cron service's server failed")?;
    let _ = stop.send(());
    let _ = jobs.await;
    Ok(())
}

/// Fires take from each tenant's event rate in the gateway, asked over its admin socket, so
/// the API and a scheduler in another process together stay within `events_per_second`.
/// With no gateway to ask (stopped, or one that does not know the request), they take from
/// this process's own bucket: the gateway takes no API event then either.
struct GatewayFireRate {
    socket: std::path::PathBuf,
    own: clade_gateway::quotas::FireRate,
}

impl clade_sched::scheduler::FireGate for GatewayFireRate {
    fn admit(
        &self,
        tenant: clade_core::TenantId,
        fires: usize,
    ) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            let events = u32::try_from(fires).unwrap_or(u32::MAX);
            let asked = AdminRequest::TakeEvents { tenant: tenant.to_string(), events };
            match admin_socket::request(&self.socket, &asked).await {
                Ok(AdminReply::Taken { admitted }) => admitted,
                Ok(other) => {
                    tracing::debug!(answer = ?other, "the gateway keeps no rate for fires: counted here");
                    self.own.admit(tenant, fires).await
                }
                Err(_) => self.own.admit(tenant, fires).await,
            }
        })
    }
}

/// Asks the gateway at `socket` to drive the flow runs a look's fires started: they run when it
/// can be reached, else at its next start.
fn take_up_remotely(
    socket: &std::path::Path,
    runs: &[(clade_core::TenantId, clade_core::ExecutionId)],
) {
    if runs.is_empty() {
        return;
    }
    let runs = runs
        .iter()
        .map(|(tenant, run)| clade_protocol::admin::RunRef {
            tenant: tenant.to_string(),
            run: run.to_string(),
        })
        .collect();
    tell_gateway(socket, AdminRequest::TakeUpRuns { runs }, "the flow runs jobs started");
}

/// Tells the gateway at `socket` of work a look stored for it (`what`); unanswered, the work
/// waits for it: it runs when the gateway can be reached, else at its next start.
fn tell_gateway(socket: &std::path::Path, request: AdminRequest, what: &'static str) {
    let path = socket.to_path_buf();
    tokio::spawn(async move {
        match admin_socket::request(&path, &request).await {
            Ok(AdminReply::Error { message }) => {
                tracing::warn!(error = %message, "the gateway refused to run {what}")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                error = %format!("{err:#}"),
                "{what} wait for the gateway: they run when it can be reached or starts"
            ),
        }
    });
}

pub(super) async fn gateway(ctx: &Ctx, cmd: GatewayCommand) -> Result<()> {
    match cmd {
        GatewayCommand::Status { admin_socket: flag, json } => {
            let path = admin_socket::path(ctx, flag.as_deref());
            match admin_socket::request(&path, &AdminRequest::Status {}).await? {
                AdminReply::Status(status) if json => output::json(&status)?,
                AdminReply::Status(status) => {
                    println!(
                        "clade {} (pid {}) on http://{}",
                        status.version, status.pid, status.listen
                    );
                    println!("store: {}", status.store);
                    println!("active sessions: {}", status.active_sessions);
                    println!("running turns: {}", status.running_turns);
                    if status.draining {
                        println!("draining: it takes no new events");
                    }
                    match status.config_revision {
                        Some(revision) => println!("configuration revision: {revision}"),
                        None => {
                            println!("configuration revision: none applied (the file as at start)")
                        }
                    }
                    println!("up {} s", status.uptime_secs);
                }
                other => bail!("the gateway answered {other:?}"),
            }
        }
        GatewayCommand::Drain(args) => {
            drain(ctx, &args).await?;
            println!("drained: it takes no new events and runs no turn; stop it now");
        }
        GatewayCommand::Reload { admin_socket: flag } => {
            let path = admin_socket::path(ctx, flag.as_deref());
            match admin_socket::request(&path, &AdminRequest::Reload {}).await? {
                AdminReply::Reloaded { revision: Some(revision) } => {
                    println!("the gateway runs configuration revision {revision}");
                }
                AdminReply::Reloaded { revision: None } => {
                    println!(
                        "no configuration revision applied: the gateway runs the file as at its start"
                    );
                }
                AdminReply::Error { message } => bail!("the gateway refused: {message}"),
                other => bail!("the gateway answered {other:?}"),
            }
        }
    }
    Ok(())
}

pub(super) async fn run(cmd: ToolHostCommand) -> Result<()> {
    let ToolHostCommand::Check { url, token_env, call, args, timeout_secs, json } = cmd;
    let token = match &token_env {
        Some(var) => {
            Some(env_value(var).with_context(|| format!("{var} (the host's token) is not set"))?)
        }
        None => None,
    };
    let sample = match call {
        Some(tool) => {
            let arguments: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| format!("--args is not JSON: {args}"))?;
            if !arguments.is_object() {
                bail!("--args must be a JSON object, such as '{{}}'");
            }
            Some((tool, arguments))
        }
        None => None,
    };
    // A caller no store has: a tool acting for an agent finds nothing of this one's.
    let caller = clade_protocol::remote_tools::Caller {
        tenant: "00000000-0000-7000-8000-000000000001".into(),
        agent: "00000000-0000-7000-8000-000000000002".into(),
        session: None,
    };
    let target = clade_tools::remote::conformance::Target {
        url: url.clone(),
        token,
        sample,
        caller: Some(caller),
        timeout: Duration::from_secs(timeout_secs.max(1)),
    };
    let checks = clade_tools::remote::conformance::run(&target).await;
    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    if json {
        let items: Vec<_> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "check": c.name,
                    "what": c.what,
                    "passed": c.outcome.is_ok(),
                    "error": c.outcome.as_ref().err().map(ToString::to_string),
                })
            })
            .collect();
        output::json(&items)?;
    } else {
        for check in &checks {
            match &check.outcome {
                Ok(()) => println!("pass  {:<18} {}", check.name, check.what),
                Err(e) => println!("FAIL  {:<18} {}: {e}", check.name, check.what),
            }
        }
    }
    if failed > 0 {
        bail!("{url} failed {failed} of {} conformance checks", checks.len());
    }
    if !json {
        println!("{url} passed all {} conformance checks", checks.len());
    }
    Ok(())
}

/// Drains the gateway answering on the admin socket (`--admin-socket`, else this data dir's):
/// it takes no new events, its turns end within `--wait`, and a cluster's node hands its shards over.
pub(super) async fn drain(ctx: &Ctx, args: &crate::cli::DrainArgs) -> Result<()> {
    let (wait, path) = (args.wait, admin_socket::path(ctx, args.admin_socket.as_deref()));
    let request = AdminRequest::Drain { wait_secs: Some(wait.as_secs()) };
    let within = wait + Duration::from_secs(10);
    match admin_socket::request_within(&path, &request, within).await? {
        AdminReply::Drained { running_turns: 0 } => Ok(()),
        AdminReply::Drained { running_turns } => bail!(
            "draining, but {running_turns} turn(s) still run after {} s: drain again to wait longer, or stop it anyway (they resume at its next start, or on another node)",
            wait.as_secs()
        ),
        AdminReply::Error { message } => bail!("the gateway refused: {message}"),
        other => bail!("the gateway answered {other:?}"),
    }
}
