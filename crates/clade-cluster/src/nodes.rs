//! A cluster's nodes as the store's live leases show them, with what the nodes announce of
//! themselves (load, version) where a node has heard it: `clade node list` and
//! `GET /v1/cluster/nodes`.

use std::collections::BTreeMap;

use clade_protocol::ClusterNodeResponse;
use clade_store::LeaseRow;

use crate::{NodeHeard, Singleton};

/// A node of that name, holding nothing yet.
fn named(node: &str) -> ClusterNodeResponse {
    ClusterNodeResponse {
        node: node.to_owned(),
        shards: Vec::new(),
        duties: Vec::new(),
        expires_in_ms: None,
        load: None,
        version: None,
        role: None,
        heard_ms_ago: None,
    }
}

/// The live leases grouped by holder, in name order: each node's shards, duties and how soon
/// its first lease expires; with each node's load and version as `heard` (what a running
/// node's keeper heard; empty from a process that is no node), and the nodes heard that hold
/// no lease yet.
pub fn nodes_of(leases: Vec<LeaseRow>, heard: &[NodeHeard]) -> Vec<ClusterNodeResponse> {
    let mut nodes: BTreeMap<String, ClusterNodeResponse> = BTreeMap::new();
    for lease in leases.into_iter().filter(LeaseRow::is_live) {
        let node = nodes.entry(lease.holder.clone()).or_insert_with(|| named(&lease.holder));
        match Singleton::of_lease(lease.shard) {
            Some(duty) => node.duties.push(duty.name().to_owned()),
            None => node.shards.push(lease.shard),
        }
        if let Some(at) = lease.expires_at {
            let left = at.as_millis().saturating_sub(lease.now.as_millis());
            node.expires_in_ms = Some(node.expires_in_ms.map_or(left, |ms| ms.min(left)));
        }
    }
    for seen in heard {
        let node = nodes.entry(seen.node.clone()).or_insert_with(|| named(&seen.node));
        node.load = Some(seen.load);
        node.version = (!seen.version.is_empty()).then(|| seen.version.clone());
        node.heard_ms_ago = Some(seen.heard_ms_ago);
        node.role = (!seen.role.is_empty()).then(|| seen.role.clone());
    }
    nodes.into_values().collect()
}
