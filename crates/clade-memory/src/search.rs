//! The arithmetic of recall, free of I/O: similarity of texts and vectors, and the fusion of
//! scored lists.

use std::collections::HashMap;
use std::hash::Hash;

/// Relative score fusion of scored lists (higher is better), each with a weight: within each
/// list the scores are scaled to 0..1 (its best 1, its worst 0; all 1 when they are equal), and
/// an item's fused score is the weighted sum over the lists it is in, best first; ties keep the
/// order items were first seen in. Unlike rank fusion, a list whose best hit stands out counts
/// for more than one whose hits are all alike, so a noisy list (full text matching common
/// words) does not bury the clear winner of the other.
pub fn fuse_scores<T: Copy + Eq + Hash>(lists: &[(&[(T, f64)], f64)]) -> Vec<(T, f64)> {
    let mut scores: HashMap<T, (f64, usize)> = HashMap::new();
    let mut seen = 0;
    for (list, weight) in lists {
        let best = list.iter().map(|(_, s)| *s).fold(f64::NEG_INFINITY, f64::max);
        let worst = list.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
        let span = best - worst;
        for (item, score) in list.iter() {
            let scaled = if span > 0.0 { (score - worst) / span } else { 1.0 };
            let entry = scores.entry(*item).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            entry.0 += weight * scaled;
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
    fn fusion_scales_each_list_and_weighs_them() {
        // Full text finds 1, 2 and 3 about equally; vectors find 4 clearly best.
        let text = [(1, 10.0), (2, 9.9), (3, 9.8)];
        let vector = [(4, 0.9), (3, 0.5), (5, 0.3)];
        let fused = fuse_scores(&[(&text, 0.3), (&vector, 0.7)]);
        let order: Vec<i32> = fused.iter().map(|(i, _)| *i).collect();
        // 4: 0.7 (vectors' best); 1: 0.3 (text's best); 3: 0 + 0.7 * 1/3; 2: 0.3 * 1/2; 5: 0.
        assert_eq!(order, [4, 1, 3, 2, 5], "{fused:?}");
        assert!((fused[2].1 - 0.7 / 3.0).abs() < 1e-9, "{fused:?}");
        // A list of one (or of equal scores) counts fully; an empty one not at all.
        let alone = fuse_scores(&[(&[(7, 0.2)], 0.7), (&[], 0.3)]);
        assert_eq!(alone, [(7, 0.7)]);
        assert!(fuse_scores::<u8>(&[]).is_empty());
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
