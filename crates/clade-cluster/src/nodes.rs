//! A cluster's nodes as the store's live leases show them: `clade node list` and
//! `GET /v1/cluster/nodes`.

use std::collections::BTreeMap;

use clade_protocol::ClusterNodeResponse;
use clade_store::LeaseRow;

use crate::Singleton;

/// The live leases grouped by holder, in name order: each node's shards, duties and how soon
/// its first lease expires.
pub fn nodes_of(leases: Vec<LeaseRow>) -> Vec<ClusterNodeResponse> {
    let mut nodes: BTreeMap<String, ClusterNodeResponse> = BTreeMap::new();
    for lease in leases.into_iter().filter(LeaseRow::is_live) {
        let node = nodes.entry(lease.holder.clone()).or_insert_with(|| ClusterNodeResponse {
            node: lease.holder.clone(),
            shards: Vec::new(),
            duties: Vec::new(),
            expires_in_ms: None,
        });
        match Singleton::of_lease(lease.shard) {
            Some(duty) => node.duties.push(duty.name().to_owned()),
            None => node.shards.push(lease.shard),
        }
        if let Some(at) = lease.expires_at {
            let left = at.as_millis().saturating_sub(lease.now.as_millis());
            node.expires_in_ms = Some(node.expires_in_ms.map_or(left, |ms| ms.min(left)));
        }
    }
    nodes.into_values().collect()
}
