//! The arithmetic of recall, free of I/O: similarity of texts and vectors, and reciprocal rank
//! fusion.

use std::collections::HashMap;
use std::hash::Hash;

/// RRF's constant: a hit at rank `r` (from 1) in one list scores `1 / (K + r)`.
pub const RRF_K: f64 = 60.0;

/// Reciprocal rank fusion of ranked lists (best first): each item's summed `1 / (K + rank)`,
/// best first; ties keep the order items were first seen in.
pub fn fuse<T: Copy + Eq + Hash>(lists: &[&[T]]) -> Vec<(T, f64)> {
    let mut scores: HashMap<T, (f64, usize)> = HashMap::new();
    let mut seen = 0;
    for list in lists {
        for (rank, item) in list.iter().enumerate() {
            let entry = scores.entry(*item).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            entry.0 += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(T, f64, usize)> =
        scores.into_iter().map(|(item, (score, first))| (item, score, first)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.into_iter().map(|(item, score, _)| (item, score)).collect()
}

/// The cosine of two vectors; 0 when either is all zero or their lengths differ. One pass,
/// in eight lanes the compiler keeps in vector registers.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for lane in 0..8 {
            dot[lane] += x[lane] * y[lane];
            aa[lane] += x[lane] * x[lane];
            bb[lane] += y[lane] * y[lane];
        }
    }
    let (mut dot, mut aa, mut bb) =
        (dot.iter().sum::<f32>(), aa.iter().sum::<f32>(), bb.iter().sum::<f32>());
    for (x, y) in rest_a.iter().zip(rest_b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { dot / (aa.sqrt() * bb.sqrt()) }
}

/// The lowercased words of a text, each once.
pub fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How much two texts share their words (Jaccard over word sets): 1 for the same words.
pub fn overlap(a: &str, b: &str) -> f32 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.iter().filter(|w| b.binary_search(w).is_ok()).count();
    shared as f32 / (a.len() + b.len() - shared) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement_and_keeps_first_seen_order_on_ties() {
        let text = [1, 2, 3];
        let vector = [3, 4];
        let fused = fuse(&[&text, &vector]);
        assert_eq!(fused[0].0, 3, "{fused:?}");
        assert_eq!(fused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [3, 1, 2, 4]);
        assert!(fuse::<u8>(&[]).is_empty());
    }

    #[test]
    fn similarities() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        let long: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let other: Vec<f32> = (0..19).map(|i| (i * i) as f32).collect();
        let plain = long.iter().zip(&other).map(|(x, y)| x * y).sum::<f32>()
            / (long.iter().map(|x| x * x).sum::<f32>().sqrt()
                * other.iter().map(|x| x * x).sum::<f32>().sqrt());
        assert!((cosine(&long, &other) - plain).abs() < 1e-5);
        assert_eq!(overlap("The cat, the mat.", "the MAT the cat"), 1.0);
        assert!(overlap("a b c d", "a b c e") < 0.7);
    }
}
