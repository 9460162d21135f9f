//! Clade's cluster side: what lets several `clade serve` nodes share one store. It owns the
//! map of sessions to shards ([`ShardMap`], a stable hash every node computes alike) and the
//! engine's [`clade_runtime::Bus`] over NATS ([`NatsBus`]): a wake-up or cancel for a session
//! goes to the subject of its shard, which only the node holding that shard listens to.
//!
//! What it must not do: hold state of its own that the store does not (a lost signal delays
//! work, never loses it: the holder's own scan of the store finds what was stored), carry a
//! tenant's credential to NATS, or depend on the gateway or the CLI.
//!
//! [`Keeper`] holds this node's share of the shards as nodes come and go: it renews its
//! leases, announces the node, spreads the shards over the nodes it hears by a pluggable
//! [`Assignment`] ([`EvenSpread`], or [`BinPack`] by load), hands over
//! what is no longer its share and takes over what a node that left or died held; and it
//! spreads the work a cluster does once ([`Singleton`]: outbox delivery, the scheduler, …)
//! the same way.
//!
//! Live events cross nodes through the hub's relay (`live.rs`): a node streaming a session
//! announces it, and the node running it publishes its events while someone elsewhere
//! watches.
//!
//! See `docs/internals/cluster.md`.

mod assign;
mod bus;
mod clock;
mod keeper;
mod live;
mod nodes;
mod shard;

pub use assign::{Assignment, BinPack, EvenSpread, View};
pub use bus::{BusCounts, BusError, NatsBus, NatsOptions};
pub use clock::{ClockSkew, MAX_CLOCK_SKEW_MS};
/// The kind a worker node is paired as (`clade pair node`): it may fetch the cluster's
/// configuration from a gateway (`clade node join --hub`).
pub const NODE_PEER_KIND: &str = "node";

pub use keeper::{
    HAND_OVER_WAIT, Keeper, KeeperError, KeeperOptions, NodeHeard, NodeRole, Singleton,
};
pub use live::LiveCounts;
pub use nodes::nodes_of;
pub use shard::{Shard, ShardMap};
