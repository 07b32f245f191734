//! The E8 code: `k = 8`, `N = 64497` codewords, 16-bit indices (1.997 bits per coordinate).
//!
//! The codewords are the points of the E8 lattice (`D8` plus `D8 + 1/2`, even coordinate sum)
//! of squared norm at most 10 (56881 points), plus two whole orbits of the norm-12 shell,
//! `(3/2^5, 1/2^3)` and `(2^3, 0^5)` (7616 points): 21 signed-permutation orbits
//! ([`fibquant::search::orbits`]), each scaled by its own factor. Integer orbits hold every sign
//! pattern; in a half-integer orbit the coordinate sum must be even, which fixes the parity of
//! the number of negative coordinates.
//!
//! Construction: source -> orbits at one common scale -> Lloyd's centroid step restricted to
//! one scale per orbit (each scale becomes the mean of `<x, u>/|u|^2` over the training blocks
//! whose nearest codeword `a u` lies in the orbit), [`FIT_ITERATIONS`] times -> file. The
//! runtime then encodes with the exact orbit search instead of scanning 64497 codewords.
//! Measured against the Lloyd codebook of 65536 codewords on the same vectors, it has lower
//! MSE (`docs/experiments/e8_shaped_codebook.py`, and the manifest's `mse` of both points).

use crate::construct::{entry_seed, sub_seed, test_seed, Built, Params, CONSTRUCTION_VERSION};
use crate::error::{Error, Result};
use crate::source::{Method, Source};
use fibquant::codebook::{CodebookHeader, Construction};
use fibquant::search::orbits::{orbit_codewords, OrbitIndex, SignRule};
use rayon::prelude::*;

/// Codewords of the E8 code.
pub const E8_N: usize = 64497;
/// Block size of the E8 code.
pub const K: usize = 8;
/// Rounds of the scale fit. From a common scale, the MSE stops moving (changes below 1e-5
/// relative) after about 8.
pub const FIT_ITERATIONS: u32 = 12;
/// Training blocks of the scale fit (21 scales to fit).
pub const TRAINING_BLOCKS: usize = 1 << 21;
/// Blocks per parallel work item.
const CHUNK: usize = 4096;

/// One orbit: its leader in lattice units (magnitudes, largest first) and its sign rule.
pub type Leader = ([f64; K], SignRule);

/// The 21 orbits in codebook order: by squared norm, integer before half-integer, then larger
/// leaders (lexicographically) first.
pub fn leaders() -> Vec<Leader> {
    fn walk(values: &[f64; 4], cur: &mut Vec<f64>, out: &mut Vec<[f64; K]>) {
        if cur.len() == K {
            out.push(cur.as_slice().try_into().unwrap());
            return;
        }
        for &v in values.iter().rev() {
            if cur.last().is_none_or(|&l| v <= l) {
                cur.push(v);
                walk(values, cur, out);
                cur.pop();
            }
        }
    }
    let norm2 = |l: &[f64; K]| l.iter().map(|v| v * v).sum::<f64>();
    let extra: [[f64; K]; 2] = [
        [1.5, 1.5, 1.5, 1.5, 1.5, 0.5, 0.5, 0.5],
        [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ];
    let mut out: Vec<Leader> = Vec::new();
    for (values, half) in [([0.0, 1.0, 2.0, 3.0], false), ([0.5, 1.5, 2.5, 3.5], true)] {
        let mut all = Vec::new();
        walk(&values, &mut Vec::new(), &mut all);
        for l in all {
            let sum = l.iter().sum::<f64>() as i64;
            // Integer points need an even sum whatever their signs; half-integer ones get it
            // from the parity of their negative coordinates.
            if !half && sum % 2 != 0 {
                continue;
            }
            if norm2(&l) > 10.0 && !extra.contains(&l) {
                continue;
            }
            let rule = match (half, sum % 2) {
                (false, _) => SignRule::All,
                (true, 0) => SignRule::EvenNegatives,
                (true, _) => SignRule::OddNegatives,
            };
            out.push((l, rule));
        }
    }
    out.sort_by(|a, b| {
        let half = |l: &[f64; K]| l[0].fract() != 0.0;
        norm2(&a.0)
            .total_cmp(&norm2(&b.0))
            .then(half(&a.0).cmp(&half(&b.0)))
            .then(b.0.partial_cmp(&a.0).unwrap())
    });
    out
}

/// The codewords with orbit `o` scaled by `scales[o]`, in codebook order.
pub fn codewords(leaders: &[Leader], scales: &[f64]) -> Vec<f32> {
    leaders
        .iter()
        .zip(scales)
        .flat_map(|((l, rule), &a)| {
            let scaled: Vec<f32> = l.iter().map(|&v| (a * v) as f32).collect();
            orbit_codewords(&scaled, *rule).expect("E8 leaders are valid orbit leaders")
        })
        .collect()
}

/// Per orbit: the sum of `<x, u>` (the block against its codeword in lattice units) and the
/// number of blocks, over `blocks`; and the total squared distance.
fn assign(
    cw: &[f32],
    index: &OrbitIndex,
    scales: &[f64],
    blocks: &[f32],
) -> (Vec<f64>, Vec<u64>, f64) {
    let orbits = index.orbits();
    let firsts: Vec<u32> = orbits.iter().map(|o| o.first()).collect();
    let parts: Vec<(Vec<f64>, Vec<u64>, f64)> = blocks
        .par_chunks(CHUNK * K)
        .map(|chunk| {
            let mut dots = vec![0f64; orbits.len()];
            let mut hits = vec![0u64; orbits.len()];
            let mut dist = 0f64;
            for x in chunk.chunks_exact(K) {
                let (i, score) = index.nearest(x);
                let o = firsts.partition_point(|&f| f <= i) - 1;
                let c = &cw[i as usize * K..][..K];
                let dot: f64 = x.iter().zip(c).map(|(a, b)| (a * b) as f64).sum();
                if scales[o] > 0.0 {
                    dots[o] += dot / scales[o];
                }
                hits[o] += 1;
                let xsq: f32 = x.iter().map(|v| v * v).sum();
                dist += ((xsq + score) as f64).max(0.0);
            }
            (dots, hits, dist)
        })
        .collect();
    let mut dots = vec![0f64; orbits.len()];
    let mut hits = vec![0u64; orbits.len()];
    let mut dist = 0f64;
    for (d, h, s) in parts {
        dots.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        hits.iter_mut().zip(&h).for_each(|(a, b)| *a += b);
        dist += s;
    }
    (dots, hits, dist)
}

fn not_orbits() -> Error {
    Error::Construction("E8 codewords do not form whole orbits".into())
}

/// Normalized vector MSE of the code with `scales` on `test` blocks of head dim `d`.
fn vector_mse(d: usize, cw: &[f32], scales: &[f64], test: &[f32]) -> Result<f64> {
    let index = OrbitIndex::new(cw, K).ok_or_else(not_orbits)?;
    let (_, _, dist) = assign(cw, &index, scales, test);
    Ok(dist / (test.len() / K) as f64 * (d / K) as f64)
}

/// Builds the E8 code for head dim `d` (a multiple of 8); `params` gives the test-set size.
pub fn build(d: usize, params: Params) -> Result<Built> {
    if !d.is_multiple_of(K) || d <= K {
        return Err(Error::InvalidArgument(format!(
            "the E8 code needs d a multiple of 8 above 8, got {d}"
        )));
    }
    let seed = entry_seed(d, K, E8_N);
    let src = Source::new(d, K)?;
    let train = src.sample(Method::RadiusDirection, TRAINING_BLOCKS, sub_seed(seed, 1));
    let test = src.sample(Method::RadiusDirection, params.test_blocks, test_seed(seed));
    let leaders = leaders();
    let norm2: Vec<f64> = leaders
        .iter()
        .map(|(l, _)| l.iter().map(|v| v * v).sum())
        .collect();
    // The common scale of `docs/experiments/e8_shaped_codebook.py`, tried by hand there.
    let common = 0.086 * (128.0 / d as f64).sqrt();
    let mut scales = vec![common; leaders.len()];
    let mse_initial = vector_mse(d, &codewords(&leaders, &scales), &scales, &test)?;
    for _ in 0..FIT_ITERATIONS {
        let cw = codewords(&leaders, &scales);
        let index = OrbitIndex::new(&cw, K).ok_or_else(not_orbits)?;
        let (dots, hits, _) = assign(&cw, &index, &scales, &train);
        for o in 0..leaders.len() {
            if hits[o] > 0 && norm2[o] > 0.0 && dots[o] > 0.0 {
                scales[o] = dots[o] / (hits[o] as f64 * norm2[o]);
            }
        }
    }
    let codewords = codewords(&leaders, &scales);
    let mse = vector_mse(d, &codewords, &scales, &test)?;
    Ok(Built {
        header: CodebookHeader {
            dim: d as u32,
            k: K as u32,
            n: E8_N as u32,
            construction: Construction::E8Orbits,
            seed,
            samples_per_codeword: (TRAINING_BLOCKS / E8_N) as u32,
            restarts: 0,
            iterations: FIT_ITERATIONS,
            construction_version: CONSTRUCTION_VERSION,
        },
        codewords,
        mse,
        mse_initial,
        mse_scalar_product: None,
        mse_exact: None,
        selected: "E8 orbits, one fitted scale per orbit".into(),
        test_blocks: params.test_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_orbits_hold_64497_codewords() {
        let l = leaders();
        assert_eq!(l.len(), 21);
        let cw = codewords(&l, &vec![0.1; l.len()]);
        assert_eq!(cw.len(), E8_N * K);
        // Every codeword is an E8 point (times 0.1): all integer or all half-integer
        // coordinates with an even sum.
        for c in cw.chunks_exact(K) {
            let u: Vec<f64> = c
                .iter()
                .map(|&v| (v as f64 / 0.1 * 2.0).round() / 2.0)
                .collect();
            let half = u[0].fract() != 0.0;
            assert!(u.iter().all(|v| (v.fract() != 0.0) == half), "{u:?}");
            assert_eq!(u.iter().sum::<f64>().rem_euclid(2.0), 0.0, "{u:?}");
        }
        let index = OrbitIndex::new(&cw, K).expect("whole orbits");
        assert_eq!(index.orbits().len(), 21);
    }
}
