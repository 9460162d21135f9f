//! Randomness that need not be secret (retry jitter, sampling), from a seed, so that a test or
//! the simulator replays it exactly. Secrets (tokens, keys, nonces) never come from here: they
//! take the operating system's generator.

use std::sync::atomic::{AtomicU64, Ordering};

/// A seeded source of non-secret random numbers (SplitMix64), cheap to share: each draw is
/// one atomic add, so callers on many tasks need no lock, and one seed gives one sequence of
/// draws.
#[derive(Debug)]
pub struct Jitter {
    seed: u64,
    state: AtomicU64,
}

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self { seed, state: AtomicU64::new(seed) }
    }

    /// The seed it started from, to print so a run can be replayed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u64(&self) -> u64 {
        let mut z = self.state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[low, high)`, uniform.
    pub fn between(&self, low: f64, high: f64) -> f64 {
        // The top 53 bits make every f64 in [0, 1) equally likely.
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_sequence_and_draws_stay_in_range() {
        let (a, b, c) = (Jitter::seeded(7), Jitter::seeded(7), Jitter::seeded(8));
        let draws = |j: &Jitter| (0..64).map(|_| j.next_u64()).collect::<Vec<_>>();
        let first = draws(&a);
        assert_eq!(first, draws(&b), "the same seed drew differently");
        assert_ne!(first, draws(&c), "another seed drew the same");
        let j = Jitter::seeded(1);
        let fractions: Vec<f64> = (0..10_000).map(|_| j.between(0.5, 1.0)).collect();
        assert!(fractions.iter().all(|f| (0.5..1.0).contains(f)));
        // Spread over the range, not stuck at one end.
        let low = fractions.iter().filter(|f| **f < 0.75).count();
        assert!((4_000..6_000).contains(&low), "{low} of 10000 below the middle");
    }
}
