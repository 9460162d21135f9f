//! The `cluster:` section: a node of several on one PostgreSQL store, signalled over NATS.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Invalid, fail};

/// This gateway as a node of a cluster: several `clade serve` on one PostgreSQL store, each
/// running the sessions of its share of the shards, and signalling the others over NATS.
/// Without this section a gateway runs every session itself, on SQLite or PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (1 to 64 of `a-z`, `0-9`, `_`, `-`): part of every NATS subject, so
    /// clusters sharing a NATS server never hear each other. Every node of one cluster names
    /// the same.
    #[serde(default = "default_name")]
    pub name: String,
    /// This node's name, unique in the cluster (1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`): its
    /// leases' holder. `CLADE_NODE` in the environment overrides it (a pod's name, say).
    #[serde(default)]
    pub node: Option<String>,
    /// The NATS server, `nats://host:port` (or `tls://host:port`).
    #[serde(default = "default_nats_url")]
    pub nats_url: String,
    /// The environment variable holding this node's NATS user, if the server wants one.
    #[serde(default)]
    pub nats_user_env: Option<String>,
    /// The environment variable holding this node's NATS password.
    #[serde(default)]
    pub nats_password_env: Option<String>,
    /// How many shards the sessions are spread over (1 to 65,536). Every node of a cluster
    /// must say the same; changing it means stopping every node first.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Seconds a node's leases last unrenewed (1 to 300): a node that dies loses its shards,
    /// and its sessions run on the others, this long after its last renewal.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// How the shards are spread over the nodes; every node of a cluster must say the same.
    #[serde(default)]
    pub assignment: ShardAssignment,
}

/// How a cluster spreads its shards over its nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShardAssignment {
    /// Every `n`-th shard to each of `n` nodes, whatever runs in them.
    #[default]
    Even,
    /// By load: each shard weighs the turns its sessions ran lately, and the nodes carry about
    /// the same weight; shards move only when the nodes are more than 10 % apart.
    BinPack,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: default_name(),
            node: None,
            nats_url: default_nats_url(),
            nats_user_env: None,
            nats_password_env: None,
            shards: default_shards(),
            lease_ttl_secs: default_lease_ttl(),
            assignment: ShardAssignment::default(),
        }
    }
}

/// The environment variable that names a node, over `cluster.node`.
pub const NODE_ENV: &str = "CLADE_NODE";

impl ClusterConfig {
    /// What is wrong with the section, naming the field; `None` when nothing is.
    pub(crate) fn problem(&self) -> Option<String> {
        if !token(&self.name, false) {
            return Some(format!(
                "cluster.name: {:?} cannot be part of a NATS subject; use 1 to 64 of a-z, 0-9, _ and -",
                self.name
            ));
        }
        if let Some(node) = &self.node
            && !token(node, true)
        {
            return Some(format!(
                "cluster.node: {node:?} is not a node name; use 1 to 64 of a-z, 0-9, ., _ and -"
            ));
        }
        let scheme = self.nats_url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("nats" | "tls")) {
            return Some(format!(
                "cluster.nats_url: {:?} is not a NATS address; write nats://host:4222 (or tls://host:4222)",
                self.nats_url
            ));
        }
        if !(1..=65_536).contains(&self.shards) {
            return Some(format!("cluster.shards: {} shards; give 1 to 65536", self.shards));
        }
        if !(1..=300).contains(&self.lease_ttl_secs) {
            return Some(format!(
                "cluster.lease_ttl_secs: {} s; give 1 to 300",
                self.lease_ttl_secs
            ));
        }
        for (field, name) in
            [("nats_user_env", &self.nats_user_env), ("nats_password_env", &self.nats_password_env)]
        {
            if name.as_deref().is_some_and(|n| n.is_empty() || n.contains('=')) {
                return Some(format!(
                    "cluster.{field}: {name:?} is not an environment variable's name"
                ));
            }
        }
        None
    }

    /// This node's name: `CLADE_NODE` over `cluster.node`. An error says how to give one.
    pub fn node_name(&self, from_env: Option<String>) -> Result<String, NodeNameError> {
        match from_env.filter(|n| !n.is_empty()).or_else(|| self.node.clone()) {
            Some(node) if token(&node, true) => Ok(node),
            Some(node) => Err(NodeNameError::Invalid(node)),
            None => Err(NodeNameError::Missing),
        }
    }
}

/// Why a node has no usable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("{NODE_ENV}: {0:?} is not a node name; use 1 to 64 of a-z, 0-9, ., _ and -")]
    Invalid(String),
    #[error(
        "this node has no name: set cluster.node in clade.yaml or {NODE_ENV} in the environment (unique in the cluster)"
    )]
    Missing,
}

/// 1 to 64 of `a-z`, `0-9`, `_`, `-` (and `.` when `dots`).
fn token(name: &str, dots: bool) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || (dots && c == '.')
        })
}

fn default_name() -> String {
    "clade".into()
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}

fn default_shards() -> u32 {
    256
}

fn default_lease_ttl() -> u64 {
    5
}

impl crate::Config {
    /// The cluster's names, NATS address, shards and leases.
    pub(crate) fn check_cluster(&self) -> Result<(), Invalid> {
        match self.cluster.as_ref().and_then(ClusterConfig::problem) {
            Some(problem) => fail(problem),
            None => Ok(()),
        }
    }
}
