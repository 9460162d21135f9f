//! Which shard of a cluster an id belongs to: the one hash every node and the store compute
//! alike, part of the cluster's protocol.

/// The shard, of `shards`, that the id `bytes` (a session's, an execution's) belongs to:
/// FNV-1a (64 bits) of its 16 bytes, modulo the count (taken as 1 when 0). Written out here,
/// not taken from a hasher whose output may change between versions: nodes of two versions
/// must agree during a rolling upgrade, so these values may never change.
pub fn shard_of(bytes: &[u8; 16], shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes.iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    (hash % u64::from(shards.max(1))) as u32
}
