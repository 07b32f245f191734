//! Helpers shared by the unit tests of the search structures.

use crate::rng::Xoshiro256;

/// Blocks of `k` coordinates cut from uniformly random unit vectors of `R^d` (the source law
/// after the rotation, which the search structures are built for), `count` of them.
pub fn source_blocks(d: usize, k: usize, count: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256::new(seed);
    let mut out = Vec::with_capacity(count * k + d);
    while out.len() < count * k {
        let v: Vec<f64> = (0..d).map(|_| rng.next_gaussian()).collect();
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        out.extend(v.iter().map(|a| (a / norm) as f32));
    }
    out.truncate(count * k);
    out
}

/// Squared norms of `k`-coordinate codewords as the codebook computes them (`sum of c_j * c_j`
/// in f32, in order).
pub fn norms_of(codewords: &[f32], k: usize) -> Vec<f32> {
    codewords
        .chunks_exact(k)
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect()
}
