//! Components paired with the gateway and what they are leased: `clade pair`, `clade lease`,
//! and `clade subscriber-service`, the reference subscriber.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clade_protocol::admin::{AdminReply, AdminRequest};
use clade_store::peer_leases::{LeaseRow, LeaseScope};

use crate::admin_socket;
use crate::cli::{LeaseCommand, PairCommand, SubscriberServiceArgs};
use crate::context::{Ctx, env_value};
use crate::output;

/// Event ids the subscriber service remembers, to drop repeated deliveries.
const REMEMBERED_EVENTS: usize = 10_000;

pub(super) async fn pair(ctx: &Ctx, cmd: PairCommand) -> Result<()> {
    match cmd {
        PairCommand::Test { admin_socket: flag } => {
            let path = admin_socket::path(ctx, flag.as_deref());
            match admin_socket::request(&path, &AdminRequest::Identity {}).await? {
                AdminReply::Identity { key, peers } => {
                    println!("the gateway answers on {}", path.display());
                    println!("its key: {key}");
                    println!("paired components: {peers}");
                }
                AdminReply::Error { message } => bail!("the gateway refused: {message}"),
                other => bail!("the gateway answered {other:?}"),
            }
        }
        PairCommand::Tool { endpoint, name, token_env, agents, admin_socket: flag } => {
            let asked = Asked { agents, ..Asked::keyed("tool", endpoint, name, token_env) };
            let (name, key, tools, left_out) = ask_to_pair(ctx, asked, flag.as_deref()).await?;
            println!("paired tool host {name} (key {key}); {tools} tools offered now");
            if let Some(said) = left_out_note(&left_out) {
                println!("{said}");
            }
        }
        PairCommand::Subscriber {
            endpoint,
            name,
            token_env,
            agents,
            leased,
            admin_socket: flag,
        } => {
            let kind = clade_runtime::outbox::PEER_KIND;
            let asked =
                Asked { kind, endpoint, name, token_env, agents, leased, scopes: Vec::new() };
            let (name, key, _, _) = ask_to_pair(ctx, asked, flag.as_deref()).await?;
            if leased {
                println!(
                    "paired subscriber {name} (key {key}); it is sent what tenants lease to it (`clade lease grant {name}`)"
                );
            } else {
                println!("paired subscriber {name} (key {key}); it is sent its agents' events now");
            }
        }
        PairCommand::Cli {
            endpoint,
            name,
            token_env,
            agents,
            scopes,
            leased,
            admin_socket: flag,
        } => {
            let kind = clade_store::peers::OPERATOR;
            let asked = Asked { kind, endpoint, name, token_env, agents, leased, scopes };
            let (name, key, _, _) = ask_to_pair(ctx, asked, flag.as_deref()).await?;
            if leased {
                println!(
                    "paired operator {name} (key {key}); it reaches what a tenant leases to it (`clade lease grant {name} --kind operator --session …`)"
                );
            } else {
                println!(
                    "paired operator {name} (key {key}); it calls the API with its key (`clade remote` on its machine)"
                );
            }
        }
        PairCommand::Node { endpoint, name, token_env, admin_socket: flag } => {
            let asked = Asked::keyed(clade_cluster::NODE_PEER_KIND, endpoint, name, token_env);
            let (name, key, _, _) = ask_to_pair(ctx, asked, flag.as_deref()).await?;
            println!(
                "paired worker node {name} (key {key}); it joins the cluster now (`clade node list`)"
            );
        }
        PairCommand::Listener { endpoint, channel, platform, token_env, admin_socket: flag } => {
            let name = clade_channels::listener_name(&platform, &channel);
            let kind = clade_channels::LISTENER_PEER_KIND;
            let asked = Asked::keyed(kind, endpoint, name, token_env);
            let (name, key, _, _) = ask_to_pair(ctx, asked, flag.as_deref()).await?;
            println!(
                "paired listener {name} (key {key}); run `clade channels listen {channel} --paired` on its machine"
            );
        }
        PairCommand::List { json } => list(ctx, json).await?,
        PairCommand::Remove { name, kind } => remove(ctx, &name, kind.as_deref()).await?,
    }
    Ok(())
}

/// `clade pair list`: the paired components, with their keys' fingerprints.
async fn list(ctx: &Ctx, json: bool) -> Result<()> {
    let peers = ctx.store.peers().list().await?;
    if json {
        let items: Vec<_> = peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "kind": p.kind, "name": p.name, "endpoint": p.endpoint, "key": p.key,
                    "agents": p.agents, "leased": p.leased,
                    "paired_at": p.paired_at.as_millis(), "paired_by": p.paired_by,
                })
            })
            .collect();
        return output::json(&items);
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let agents = p.agents.join(",");
            vec![
                p.kind.clone(),
                p.name.clone(),
                p.endpoint.clone(),
                clade_tools::remote::identity::fingerprint(&p.key),
                if p.leased { format!("{agents} (leased)") } else { agents },
                p.paired_at.to_string(),
            ]
        })
        .collect();
    output::table(&["KIND", "NAME", "ENDPOINT", "KEY", "AGENTS", "PAIRED"], &rows);
    Ok(())
}

/// `clade pair remove`: forgets a pairing, of the kind given when several share the name.
async fn remove(ctx: &Ctx, name: &str, kind: Option<&str>) -> Result<()> {
    let peers = ctx.store.peers().list().await?;
    let named: Vec<_> =
        peers.iter().filter(|p| p.name == name && kind.is_none_or(|k| k == p.kind)).collect();
    let peer = match named.as_slice() {
        [] => bail!(
            "no component named {name:?}{} is paired: list them with `clade pair list`",
            kind.map(|k| format!(" of kind {k}")).unwrap_or_default()
        ),
        [one] => *one,
        _ => bail!(
            "several kinds of component are named {name:?}: say which with --kind tool, subscriber, operator or listener"
        ),
    };
    ctx.store.peers().remove(&peer.kind, &peer.name).await?;
    match peer.kind.as_str() {
        "tool" => {
            println!("forgot tool host {name}; its tools go at the gateway's next start")
        }
        clade_store::peers::OPERATOR => {
            println!("forgot operator {name}; its key is refused from now on")
        }
        clade_channels::LISTENER_PEER_KIND => {
            println!("forgot listener {name}; what it relays is refused from now on")
        }
        _ => println!("forgot subscriber {name}; it is sent nothing more, and its leases ended"),
    }
    Ok(())
}

/// What `clade pair tool|subscriber` asks the gateway.
struct Asked {
    kind: &'static str,
    endpoint: String,
    name: String,
    token_env: String,
    agents: Vec<String>,
    leased: bool,
    scopes: Vec<String>,
}

impl Asked {
    /// A component known by its key alone: no agents named, not leased, no scopes.
    fn keyed(kind: &'static str, endpoint: String, name: String, token_env: String) -> Self {
        Self {
            kind,
            endpoint,
            name,
            token_env,
            agents: Vec::new(),
            leased: false,
            scopes: Vec::new(),
        }
    }
}

/// Asks the gateway over its socket to pair: the component's name, key, tools offered and
/// tools left out.
async fn ask_to_pair(
    ctx: &Ctx,
    asked: Asked,
    socket: Option<&std::path::Path>,
) -> Result<(String, String, u32, Vec<String>)> {
    let Some(token) = env_value(&asked.token_env) else {
        bail!(
            "{} is not set: it must hold the component's token, which authorizes the pairing (or pass --token-env)",
            asked.token_env
        );
    };
    for pattern in &asked.agents {
        if !clade_config::is_agent_pattern(pattern) {
            bail!(
                "--agents {pattern:?} is not an agent reference (tenant/handle, or a bare handle in the default tenant), tenant/* or *"
            );
        }
    }
    let path = admin_socket::path(ctx, socket);
    let request = AdminRequest::Pair {
        kind: asked.kind.into(),
        endpoint: asked.endpoint,
        name: asked.name,
        token,
        agents: asked.agents,
        leased: asked.leased,
        scopes: asked.scopes,
    };
    match admin_socket::request(&path, &request).await? {
        AdminReply::Paired { name, key, tools, left_out } => Ok((name, key, tools, left_out)),
        AdminReply::Error { message } => bail!("not paired: {message}"),
        other => bail!("the gateway answered {other:?}"),
    }
}

pub(super) async fn lease(ctx: &Ctx, cmd: LeaseCommand) -> Result<()> {
    let tenant = ctx.tenant().await?;
    match cmd {
        LeaseCommand::Grant { peer, kind, agent, session, ttl } => {
            let ttl = clade_sched::parse_interval(&ttl).map_err(|e| match e {
                clade_sched::ScheduleError::Every { problem, .. } => {
                    anyhow::anyhow!("--ttl {ttl:?}: {problem}")
                }
                other => anyhow::anyhow!("--ttl {ttl:?}: {other}"),
            })?;
            let scope = match (agent, session) {
                (Some(handle), _) => LeaseScope::Agent(ctx.agent(Some(&handle)).await?.id),
                (None, Some(id)) => LeaseScope::Session(
                    clade_core::SessionId::parse(&id)
                        .map_err(|e| anyhow::anyhow!("--session {id:?}: {e}"))?,
                ),
                (None, None) => LeaseScope::Tenant,
            };
            let lease = clade_runtime::outbox::grant_lease(
                &ctx.store.tenant_scope(tenant.id),
                &tenant,
                &kind,
                &peer,
                scope,
                ttl,
            )
            .await?;
            println!(
                "lease {} to {kind} {peer}: {} until {}",
                lease.id,
                scope_text(&lease),
                lease.expires_at
            );
        }
        LeaseCommand::List { json } => {
            let leases = ctx.store.leases(tenant.id).list(200).await?;
            let now = ctx.store.now();
            if json {
                let items: Vec<_> = leases.iter().map(|l| lease_json(l, now)).collect();
                return output::json(&items);
            }
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    let state = match (&l.ended_why, l.live(now)) {
                        (Some(why), _) => format!("ended: {why}"),
                        (None, true) => "live".to_owned(),
                        (None, false) => "expired".to_owned(),
                    };
                    vec![
                        l.id.to_string(),
                        format!("{}/{}", l.peer_kind, l.peer_name),
                        scope_text(l),
                        l.expires_at.to_string(),
                        state,
                    ]
                })
                .collect();
            output::table(&["ID", "PEER", "SCOPE", "EXPIRES", "STATE"], &rows);
        }
        LeaseCommand::Revoke { id } => {
            let id = clade_core::LeaseId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let lease = ctx.store.leases(tenant.id).end(id, "revoked").await?;
            println!(
                "lease {} ended ({})",
                lease.id,
                lease.ended_why.as_deref().unwrap_or("revoked")
            );
        }
    }
    Ok(())
}

fn scope_text(lease: &LeaseRow) -> String {
    match lease.scope {
        LeaseScope::Tenant => "the whole tenant".into(),
        LeaseScope::Agent(id) => format!("agent {id}"),
        LeaseScope::Session(id) => format!("session {id}"),
    }
}

fn lease_json(lease: &LeaseRow, now: clade_core::Timestamp) -> serde_json::Value {
    let (scope, id) = match lease.scope {
        LeaseScope::Tenant => ("tenant", None),
        LeaseScope::Agent(id) => ("agent", Some(id.to_string())),
        LeaseScope::Session(id) => ("session", Some(id.to_string())),
    };
    serde_json::json!({
        "id": lease.id.to_string(),
        "peer": lease.peer_name,
        "kind": lease.peer_kind,
        "scope": scope,
        "scope_id": id,
        "granted_at": lease.granted_at.as_millis(),
        "expires_at": lease.expires_at.as_millis(),
        "granted_by": lease.granted_by,
        "live": lease.live(now),
        "ended_at": lease.ended_at.map(|t| t.as_millis()),
        "ended_why": lease.ended_why,
    })
}

/// Serves a subscriber that writes each event it is sent as one JSON line.
pub(super) async fn subscriber_service(
    data_dir: &clade_store::DataDir,
    args: SubscriberServiceArgs,
) -> Result<()> {
    let Some(token) = env_value(&args.token_env) else {
        bail!(
            "{} is not set: give the subscriber the token that authorizes pairing (`clade pair subscriber` reads the same variable), or pass --token-env",
            args.token_env
        );
    };
    let identity_path = args.identity.unwrap_or_else(|| data_dir.root().join("subscriber.key"));
    let identity = Arc::new(
        clade_tools::remote::identity::Identity::load_or_create(&identity_path)
            .with_context(|| format!("cannot use the key pair {}", identity_path.display()))?,
    );
    let events_to_file = args.out.is_some();
    let out: Arc<tokio::sync::Mutex<Box<dyn std::io::Write + Send>>> = match &args.out {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {} to append events", path.display()))?;
            Arc::new(tokio::sync::Mutex::new(Box::new(file)))
        }
        None => Arc::new(tokio::sync::Mutex::new(Box::new(std::io::stdout()))),
    };
    let sink: clade_gateway::subscriber_host::Sink = Arc::new(move |event| {
        let out = out.clone();
        Box::pin(async move {
            let mut line = event.to_string();
            line.push('\n');
            let mut out = out.lock().await;
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        })
    });
    let app = clade_gateway::subscriber_host::router(
        sink,
        clade_gateway::subscriber_host::SubscriberOptions {
            name: "clade subscriber-service".into(),
            token: Some(token),
            identity: Some(identity.clone()),
            peers_file: Some(
                args.peers.unwrap_or_else(|| data_dir.root().join("subscriber.peers.json")),
            ),
            remembered: REMEMBERED_EVENTS,
        },
    )?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| {
        format!("cannot listen on {}: pass another address with --listen", args.listen)
    })?;
    let address = listener.local_addr()?;
    tracing::info!(address = %address, key = %identity.public(), "subscriber listening");
    // For people and scripts, where events do not go: where to pair it from.
    let banner = format!(
        "clade subscriber-service listening on http://{address} (key {}); pair it with: clade pair subscriber http://{address}/ <name>",
        identity.public()
    );
    if events_to_file {
        println!("{banner}");
    } else {
        eprintln!("{banner}");
    }
    let limits = clade_gateway::ConnectionLimits::new(1_024, std::time::Duration::from_secs(10));
    clade_gateway::serve(listener, app, super::serve::shutdown_signal(), limits)
        .await
        .context("the subscriber service's server failed")?;
    Ok(())
}

/// What `clade pair tool` says of a host's tools left out because the gateway has tools of
/// those names already, and how to offer the host's instead.
fn left_out_note(left_out: &[String]) -> Option<String> {
    if left_out.is_empty() {
        return None;
    }
    let mut said =
        format!("left out, their names taken by the gateway's own tools: {}", left_out.join(", "));
    if left_out.iter().any(|name| name.starts_with("cron.")) {
        said.push_str(
            "; the cron.* tools are the built-in scheduler's: to offer the host's instead, turn it off with `scheduler: { enabled: false }` (`clade config apply`), then pair again",
        );
    }
    Some(said)
}

#[cfg(test)]
mod tests {
    use super::left_out_note;

    #[test]
    fn tools_left_out_are_named_with_how_to_offer_them() {
        assert_eq!(left_out_note(&[]), None);
        let said = left_out_note(&["cron.list".to_owned(), "cron.create".to_owned()]).unwrap();
        assert!(said.contains("cron.list, cron.create"), "{said}");
        assert!(said.contains("scheduler: { enabled: false }"), "{said}");
        let said = left_out_note(&["echo".to_owned()]).unwrap();
        assert!(said.contains("echo") && !said.contains("scheduler"), "{said}");
    }
}
