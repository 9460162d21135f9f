//! Sessions to shards: a fixed number of shards, each session in one of them by a stable hash
//! of its id, so every node, of every version, puts a session in the same shard.

use clade_core::SessionId;

/// One of a cluster's shards, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard(pub u32);

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a cluster's sessions are spread over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    shards: u32,
}

/// Why a shard count was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cluster has 1 to {most} shards, not {count}", most = ShardMap::MOST, count = .0)]
pub struct BadShardCount(pub u32);

impl ShardMap {
    /// The shards of a cluster that sets none.
    pub const DEFAULT: u32 = 256;
    /// The most shards a cluster may have: each is a lease to renew.
    pub const MOST: u32 = 65_536;

    pub fn new(shards: u32) -> Result<Self, BadShardCount> {
        if (1..=Self::MOST).contains(&shards) {
            Ok(Self { shards })
        } else {
            Err(BadShardCount(shards))
        }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Every shard, in order.
    pub fn all(&self) -> impl Iterator<Item = Shard> + use<> {
        (0..self.shards).map(Shard)
    }

    /// The shard `session` belongs to ([`clade_core::shard::shard_of`], which the store's
    /// fencing uses too).
    pub fn shard_of(&self, session: SessionId) -> Shard {
        Shard(clade_core::shard::shard_of(session.as_bytes(), self.shards))
    }
}

impl Default for ShardMap {
    fn default() -> Self {
        Self { shards: Self::DEFAULT }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map is part of the cluster's protocol: these values may never change, or nodes of
    /// two versions would run one session twice. (Computed apart, with Python's integers.)
    #[test]
    fn a_session_is_in_the_same_shard_on_every_version() {
        let map = ShardMap::default();
        let session = |byte: u8| SessionId::from_bytes([byte; 16]);
        let shards = [0u8, 1, 0x42, 0xff].map(|b| map.shard_of(session(b)).0);
        assert_eq!(shards, [101, 117, 37, 85]);
        let real = SessionId::parse("0190a6f2-3b1c-7d4e-8f00-123456789abc").unwrap();
        assert_eq!(map.shard_of(real), Shard(213));
        assert_eq!(ShardMap::new(16).unwrap().shard_of(real), Shard(5));
    }

    #[test]
    fn sessions_spread_evenly_over_the_shards() {
        let map = ShardMap::new(16).unwrap();
        let mut counts = [0u32; 16];
        for n in 0u64..16_000 {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(n * 7919).to_be_bytes());
            bytes[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            counts[map.shard_of(SessionId::from_bytes(bytes)).0 as usize] += 1;
        }
        let (least, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*least > 800 && *most < 1200, "uneven: {counts:?}");
    }

    #[test]
    fn a_shard_count_out_of_range_is_refused_by_name() {
        assert_eq!(ShardMap::new(0), Err(BadShardCount(0)));
        let err = ShardMap::new(70_000).unwrap_err().to_string();
        assert!(err.contains("1 to 65536") && err.contains("70000"), "{err}");
        assert_eq!(ShardMap::new(1).unwrap().all().count(), 1);
    }
}
