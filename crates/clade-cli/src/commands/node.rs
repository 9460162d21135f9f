//! `clade node`: a cluster's nodes as the shared store's leases show them.

use anyhow::Result;

use crate::cli::NodeCommand;
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::List { json } => {
            let nodes = nodes(ctx).await?;
            if json {
                return output::json(&nodes);
            }
            if nodes.is_empty() {
                println!(
                    "no node holds a lease: no `clade serve` runs on this store (or every one stopped)"
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|node| {
                    vec![
                        node.node.clone(),
                        node.role.clone().unwrap_or_else(|| "-".into()),
                        node.shards.len().to_string(),
                        ranges(&node.shards),
                        node.duties.join(","),
                        node.expires_in_ms.map_or_else(
                            || "never (one gateway alone)".into(),
                            |ms| format!("{ms} ms"),
                        ),
                        node.load.map_or_else(|| "-".into(), |load| format!("{load:.1}/min")),
                        node.version.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let header =
                ["NODE", "ROLE", "SHARDS", "WHICH", "DUTIES", "EXPIRES IN", "LOAD", "VERSION"];
            output::table(&header, &rows);
            Ok(())
        }
        // Run before any store is opened (`commands::run`): its store is the cluster's.
        NodeCommand::Join { .. } => Ok(()),
        NodeCommand::Drain(args) => {
            super::tool_host::drain(ctx, &args).await?;
            println!(
                "drained: this node runs no turn and its shards and duties went to the other nodes (`clade node list`); stop it now"
            );
            Ok(())
        }
    }
}

/// `0-3,8,10-11`: sorted shard numbers, runs folded.
fn ranges(shards: &[i64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    for &shard in shards {
        run = match run {
            Some((start, end)) if shard == end + 1 => Some((start, shard)),
            Some(done) => {
                parts.push(range(done));
                Some((shard, shard))
            }
            None => Some((shard, shard)),
        };
    }
    parts.extend(run.map(range));
    parts.join(",")
}

fn range((start, end): (i64, i64)) -> String {
    if start == end { start.to_string() } else { format!("{start}-{end}") }
}

/// The nodes as this data dir's running gateway sees them (its keeper heard their load and
/// version), or, with no gateway running here, as the store's leases show them.
async fn nodes(ctx: &Ctx) -> Result<Vec<clade_protocol::ClusterNodeResponse>> {
    use clade_protocol::admin::{AdminReply, AdminRequest};
    let path = crate::admin_socket::path(ctx, None);
    if let Ok(AdminReply::Nodes { items }) =
        crate::admin_socket::request(&path, &AdminRequest::Nodes {}).await
    {
        return Ok(items);
    }
    Ok(clade_cluster::nodes_of(ctx.store.shard_leases().list().await?, &[]))
}
