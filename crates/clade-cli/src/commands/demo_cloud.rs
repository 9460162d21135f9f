//! `clade demo cloud`: a cluster to watch on this machine. Three `clade serve` nodes on a
//! schema of their own in the PostgreSQL database given and the NATS server given, with the
//! offline model; people talk to an agent through any node, the agent messages another, then
//! the node running most of the conversations is killed (SIGKILL) and each of them carries on
//! through the others once its lease expires. Printed as it happens; the schema and the nodes'
//! folders are removed at the end.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::bench::{now, wall_sleep};
use super::bench_cluster::{NodeDirs, Schema, ask_as, in_shards, redacted, until_spread};
use super::bench_neighbours::clade;
use super::bench_turns::GatewayProcess;
use crate::cli::{DemoCloudArgs, DemoCommand};
use crate::context::Ctx;

const NODES: usize = 3;
const SHARDS: u32 = 12;
/// People talking to the agent, each in a conversation of their own.
const DESKS: usize = 6;

pub(super) async fn run(ctx: &Ctx, cmd: DemoCommand) -> Result<()> {
    match cmd {
        DemoCommand::Cloud(args) => cloud(ctx, &args).await,
    }
}

async fn cloud(ctx: &Ctx, args: &DemoCloudArgs) -> Result<()> {
    if !args.database.starts_with("postgres://") && !args.database.starts_with("postgresql://") {
        bail!("--database: a cluster's nodes share a PostgreSQL database; give postgres://…");
    }
    if args.lease_ttl_secs == 0 {
        bail!("--lease-ttl-secs must be above 0");
    }
    let name = format!("clade_demo_{}", std::process::id());
    let schema = Schema::create(&args.database, &name).await?;
    let scratch = ctx.data_dir.root().join(format!("demo-cloud-{}", std::process::id()));
    println!(
        "demo cloud: {NODES} nodes of one cluster, PostgreSQL {} (schema {name}), NATS {}, {SHARDS} shards, leases of {} s, the offline model",
        redacted(&args.database),
        args.nats,
        args.lease_ttl_secs
    );
    let outcome = demo(&scratch, &schema, args).await;
    schema.drop_it().await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

/// A node of the demo: its name and, until it is killed, its process.
struct Node {
    name: String,
    process: Option<GatewayProcess>,
}

impl Node {
    fn gateway(&self) -> Result<&GatewayProcess> {
        self.process.as_ref().with_context(|| format!("{} is not running", self.name))
    }
}

async fn demo(scratch: &Path, schema: &Schema, args: &DemoCloudArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary to start the nodes")?;
    let cluster = NodeDirs {
        cluster: &format!("demo-{}", std::process::id()),
        store: &schema.url,
        nats: &args.nats,
        shards: SHARDS,
        lease_ttl_secs: args.lease_ttl_secs,
    };
    let dirs = cluster.make(scratch, NODES)?;
    for agent in ["ada", "bo"] {
        clade(&exe, &dirs[0], &["agents", "create", agent]).await?;
    }
    let grant = ["--agent", "ada", "grants", "add", "--tool", "agent.send", "--resource", "bo"];
    clade(&exe, &dirs[0], &grant).await?;
    println!("agents ada and bo created; ada may message bo");
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let process = GatewayProcess::start(dir).await?;
        println!("n{i} answers at {} (pid {})", process.url, process.pid);
        nodes.push(Node { name: format!("n{i}"), process: Some(process) });
    }
    let held = until_spread(&exe, &dirs[0], NODES, SHARDS).await?;
    let mut spread: Vec<String> = held.iter().map(|(n, s)| format!("{n} {}", s.len())).collect();
    spread.sort();
    println!("shards spread over the nodes: {}", spread.join(", "));

    let client = reqwest::Client::new();
    let mut desks = Vec::new();
    for k in 0..DESKS {
        let via = &nodes[k % NODES];
        let (channel, text) = (format!("desk-{k}"), format!("hello from desk {k}"));
        let answer = ask_as(&client, via.gateway()?, "ada", &channel, &text).await?;
        let session = answer["session_id"].as_str().unwrap_or_default().to_owned();
        let runner = holder(&held, &session);
        println!(
            "[via {}] {channel} -> ada: {text:?}; ada, running on {runner}: {:?}",
            via.name,
            short(&answer["reply"]["text"])
        );
        desks.push((channel, session, runner));
    }

    let note = "bo, a person at desk 0 says hello";
    let send = format!("/tool agent.send {}", serde_json::json!({ "to": "bo", "message": note }));
    ask_as(&client, nodes[1].gateway()?, "ada", "desk-0", &send).await?;
    let heard = heard_by(&client, nodes[2].gateway()?, "bo").await?;
    println!("[ada -> bo] {note:?}; bo's turn ran and it answered: {:?}", short(&heard));

    // The node running most of the conversations.
    let victim = (0..NODES)
        .max_by_key(|i| desks.iter().filter(|(_, _, on)| *on == nodes[*i].name).count())
        .unwrap_or(0);
    let orphans: Vec<&(String, String, String)> =
        desks.iter().filter(|(_, _, on)| *on == nodes[victim].name).collect();
    let names: Vec<&str> = orphans.iter().map(|(channel, _, _)| channel.as_str()).collect();
    println!(
        "killing {} (SIGKILL), which runs {}; its sessions move once its lease expires",
        nodes[victim].name,
        names.join(", ")
    );
    drop(nodes[victim].process.take());
    let killed = now();
    let mut longest = Duration::ZERO;
    for (i, (channel, _, _)) in orphans.iter().enumerate() {
        let via = &nodes[(victim + 1 + i % (NODES - 1)) % NODES];
        let answer = carried_on(&client, via.gateway()?, channel).await?;
        let waited = killed.elapsed();
        longest = longest.max(waited);
        let session = answer["session_id"].as_str().unwrap_or_default();
        let runner = holder(
            &until_spread(&exe, &dirs[(victim + 1) % NODES], NODES - 1, SHARDS).await?,
            session,
        );
        println!(
            "[via {}] {channel} -> ada: \"are you still there?\"; ada, now on {runner}, {:.1} s after the kill: {:?}",
            via.name,
            waited.as_secs_f64(),
            short(&answer["reply"]["text"])
        );
    }
    println!(
        "every conversation carried on: {} of {}'s answered again through the others, the last {:.1} s after the kill (leases of {} s)",
        orphans.len(),
        nodes[victim].name,
        longest.as_secs_f64(),
        args.lease_ttl_secs
    );
    Ok(())
}

/// The node whose shards hold `session`.
fn holder(held: &HashMap<String, Vec<u32>>, session: &str) -> String {
    held.iter()
        .find(|(_, shards)| in_shards(session, shards, SHARDS))
        .map_or_else(|| "?".to_owned(), |(node, _)| node.clone())
}

/// A reply, cut for one line.
fn short(text: &serde_json::Value) -> String {
    let text = text.as_str().unwrap_or_default().replace('\n', " ");
    match text.char_indices().nth(70) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Asks again on `channel` until a survivor answers (each try waits for the turn).
async fn carried_on(
    client: &reqwest::Client,
    via: &GatewayProcess,
    channel: &str,
) -> Result<serde_json::Value> {
    within_30s(&format!("{channel} did not carry on"), async || {
        ask_as(client, via, "ada", channel, "are you still there?").await.ok()
    })
    .await
}

/// The reply of `agent`'s first turn for a message from another agent, once it ended, read
/// through `via`.
async fn heard_by(
    client: &reqwest::Client,
    via: &GatewayProcess,
    agent: &str,
) -> Result<serde_json::Value> {
    within_30s(&format!("{agent} got no message from another agent"), async || {
        let sessions = get(client, via, &format!("/v1/sessions?agent={agent}")).await.ok()?;
        let id = sessions["items"].as_array()?.first()?["id"].as_str()?.to_owned();
        let turns = get(client, via, &format!("/v1/sessions/{id}/turns")).await.ok()?;
        let turn = turns["items"].as_array()?.first()?.clone();
        (turn["status"].as_str() != Some(clade_core::TurnStatus::Running.as_str()))
            .then(|| turn["reply"].clone())
    })
    .await
}

/// Tries `attempt` until it gives something, 30 s at most; past that, fails saying `what`.
async fn within_30s<T>(what: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let started = now();
    loop {
        if let Some(found) = attempt().await {
            return Ok(found);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{what} within 30 s");
        }
        wall_sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` on `via`, as its operator.
async fn get(
    client: &reqwest::Client,
    via: &GatewayProcess,
    path: &str,
) -> Result<serde_json::Value> {
    let response = client.get(format!("{}{path}", via.url)).bearer_auth(&via.token).send().await?;
    Ok(response.error_for_status()?.json().await?)
}
