//! The ids streams show (SSE `id:`, the WebSocket's `id`): each lifecycle event's outbox
//! position, turned by a keyed permutation per tenant into a number that reveals neither the
//! shared counter nor how many events other tenants caused in between. A client hands one
//! back as `Last-Event-ID` (or `?after=`) and the gateway turns it back.
//!
//! The permutation is a four-round Feistel network over 64 bits whose round function is
//! SHA-256 of a key kept in the store (so ids survive restarts), the tenant, the round and the
//! half-block. It is a bijection: every id maps back to exactly one position.

use clade_core::TenantId;
use sha2::{Digest, Sha256};

/// The store's `meta` key holding the permutation's key.
pub const META_KEY: &str = "stream_id_key";

/// Encodes and decodes stream ids.
#[derive(Clone)]
pub struct StreamIds {
    key: [u8; 32],
}

impl StreamIds {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The store's key, made on first use.
    pub async fn load(store: &clade_store::Store) -> clade_store::Result<Self> {
        let existing = store.meta().get(META_KEY).await?;
        let decoded = existing.as_deref().and_then(|text| hex::decode(text).ok());
        let key = match decoded.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
            Some(key) => key,
            None => {
                #[allow(clippy::disallowed_methods)] // A secret key: the OS's generator.
                let key: [u8; 32] = rand::random();
                store.meta().set(META_KEY, &hex::encode(key)).await?;
                key
            }
        };
        Ok(Self::new(key))
    }

    fn round(&self, tenant: TenantId, round: u8, half: u32) -> u32 {
        let mut digest = Sha256::new();
        digest.update(self.key);
        digest.update(tenant.as_bytes());
        digest.update([round]);
        digest.update(half.to_le_bytes());
        let out = digest.finalize();
        u32::from_le_bytes([out[0], out[1], out[2], out[3]])
    }

    /// The id `tenant`'s streams show for outbox position `position`.
    pub fn encode(&self, tenant: TenantId, position: i64) -> u64 {
        let block = position as u64;
        let (mut left, mut right) = ((block >> 32) as u32, block as u32);
        for round in 0..4 {
            (left, right) = (right, left ^ self.round(tenant, round, right));
        }
        (u64::from(left) << 32) | u64::from(right)
    }

    /// The outbox position of an id `tenant`'s streams showed.
    pub fn decode(&self, tenant: TenantId, id: u64) -> i64 {
        let (mut left, mut right) = ((id >> 32) as u32, id as u32);
        for round in (0..4).rev() {
            (left, right) = (right ^ self.round(tenant, round, left), left);
        }
        ((u64::from(left) << 32) | u64::from(right)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_back_and_hide_the_shared_counter() {
        let ids = StreamIds::new([7; 32]);
        let (a, b) = (TenantId::from_bytes([1; 16]), TenantId::from_bytes([2; 16]));
        for position in [1, 2, 3, 1_000, i64::MAX] {
            assert_eq!(ids.decode(a, ids.encode(a, position)), position);
        }
        // Consecutive positions do not give consecutive ids, and tenants see different ids.
        let (one, two) = (ids.encode(a, 41), ids.encode(a, 42));
        assert!(one.abs_diff(two) > 1_000_000, "{one} {two}");
        assert_ne!(ids.encode(a, 42), ids.encode(b, 42));
        // Another key, other ids.
        assert_ne!(StreamIds::new([8; 32]).encode(a, 42), ids.encode(a, 42));
    }
}
