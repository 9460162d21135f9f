//! `clade node join --hub URL`: this machine as a cluster's worker node. It waits to be paired
//! with the cluster's gateway (`clade pair node` there) the first time, asks it, signed with
//! its key, for the configuration the cluster runs and where the store is, and then runs its
//! share of the sessions like any node, serving no API. Credentials never travel: the store's
//! password (`PGPASSWORD`, or `--store`/`CLADE_STORE` whole), NATS's and the secrets' master
//! key come from this machine's environment.

use anyhow::{Context as _, Result, bail};
use clade_protocol::ClusterJoinResponse;

use crate::cli::Global;
use crate::context::{Ctx, env_value};

/// The configuration the gateway gave, kept where this node's store-less commands find it.
const JOINED_CONFIG: &str = "node.clade.yaml";

pub(super) async fn run(
    global: &Global,
    data_dir: &clade_store::DataDir,
    (hub, listen, token_env): (&str, &str, &str),
) -> Result<()> {
    let hub = hub.trim_end_matches('/');
    if !(hub.starts_with("http://") || hub.starts_with("https://")) {
        bail!("--hub {hub:?} is not an http:// or https:// URL");
    }
    let name = match super::remote::paired_with(data_dir, hub) {
        Some(name) => name,
        None => super::remote::listen_for_pairing(data_dir, (listen, hub, token_env), "node")
            .await
            .context("this node is not paired with the cluster yet")?,
    };
    let route = format!("/cluster/join/{name}");
    let (status, answer) =
        super::remote::ask_paired(data_dir, reqwest::Method::GET, &route).await?;
    let refused = answer["error"]["message"].as_str().unwrap_or("no reason given");
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "the gateway at {hub} does not know this machine as node {name} ({refused}): if it was paired as something else, or unpaired, delete {} and run this again to pair it as a node",
            super::remote::profile_path(data_dir).display()
        );
    }
    if !status.is_success() {
        bail!("the gateway at {hub} did not let node {name} join: {refused} (HTTP {status})");
    }
    let joined: ClusterJoinResponse = serde_json::from_value(answer).with_context(|| {
        format!("the gateway at {hub} answered what is not a cluster's settings")
    })?;
    if let Some(env) = env_value(clade_config::NODE_ENV).filter(|n| !n.is_empty())
        && env != joined.node
    {
        bail!(
            "{}={env}, but this machine was paired as node {}: unset {0}, or pair it again under that name",
            clade_config::NODE_ENV,
            joined.node
        );
    }
    let path = data_dir.root().join(JOINED_CONFIG);
    std::fs::write(&path, &joined.config).with_context(|| {
        format!("cannot keep the cluster's configuration in {}", path.display())
    })?;
    let mut global = global.clone();
    global.config = Some(path);
    // A store given here (with its password) wins over the gateway's, which carries none.
    global.store.get_or_insert(joined.store);
    // The hub migrates the store: a worker of another version waits for it rather than
    // changing the schema under the running gateways.
    let mut ctx = Ctx::open(&global, clade_store::Migrations::RequireCurrent).await?;
    let Some(cluster) = ctx.config.cluster.as_mut() else {
        bail!(
            "the gateway at {hub} runs alone (no cluster: in its clade.yaml): it has no nodes to join"
        );
    };
    cluster.node = Some(joined.node.clone());
    println!("joining the cluster {:?} as worker node {}", cluster.name, joined.node);
    super::serve::run(&ctx, super::serve::Front::Worker).await
}
