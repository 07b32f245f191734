//! Lloyd (k-means) refinement of a codebook on source samples, and codebook evaluation.
//!
//! Assignment runs in parallel over fixed chunks of samples whose partial sums are reduced in chunk
//! order, so results are identical for any thread count.

use crate::source::CHUNK;
use fibquant::search::exhaustive::SearchIndex;
use fibquant::search::ivf::IvfIndex;
use fibquant::search::plan::{ivf_cells, TRAINING_IVF_THRESHOLD, TRAINING_PROBES};
use rayon::prelude::*;

/// The search used by the Lloyd assignment step: exhaustive, or for codebooks of at least
/// [`TRAINING_IVF_THRESHOLD`] codewords the runtime's inverted-file index (approximate; the
/// validation and test MSEs are always measured with exhaustive search).
enum Searcher {
    Exact(SearchIndex),
    Ivf(IvfIndex),
}

impl Searcher {
    fn new(codewords: &[f32], k: usize) -> Searcher {
        let n = codewords.len() / k;
        if n >= TRAINING_IVF_THRESHOLD {
            Searcher::Ivf(IvfIndex::new(codewords, k, ivf_cells(n), TRAINING_PROBES))
        } else {
            Searcher::Exact(SearchIndex::new(codewords, k))
        }
    }

    #[inline]
    fn nearest(&self, x: &[f32]) -> (u32, f64) {
        let (i, score) = match self {
            Searcher::Exact(s) => s.nearest(x),
            Searcher::Ivf(s) => s.nearest(x),
        };
        let xsq: f32 = x.iter().map(|v| v * v).sum();
        (i, ((xsq + score) as f64).max(0.0))
    }
}

/// Squared distance from `x` to its nearest codeword, and that codeword's index.
#[inline]
fn nearest(index: &SearchIndex, x: &[f32]) -> (u32, f64) {
    let (i, score) = index.nearest(x);
    let xsq: f32 = x.iter().map(|v| v * v).sum();
    (i, ((xsq + score) as f64).max(0.0))
}

/// Mean squared distance per block from `samples` (flat, `k` per block) to their nearest
/// codewords. Multiply by `d / k` for the normalized vector MSE.
pub fn block_mse(codewords: &[f32], k: usize, samples: &[f32]) -> f64 {
    let index = SearchIndex::new(codewords, k);
    let partial: Vec<f64> = samples
        .par_chunks(CHUNK * k)
        .map(|chunk| chunk.chunks_exact(k).map(|x| nearest(&index, x).1).sum())
        .collect();
    partial.iter().sum::<f64>() / (samples.len() / k) as f64
}

/// [`block_mse`] and the sample variance of the per-block squared distances (for the standard
/// error of the mean: `sqrt(variance / blocks)`). The mean is bit-identical to [`block_mse`]'s.
pub fn block_mse_and_variance(codewords: &[f32], k: usize, samples: &[f32]) -> (f64, f64) {
    let index = SearchIndex::new(codewords, k);
    let partial: Vec<(f64, f64)> = samples
        .par_chunks(CHUNK * k)
        .map(|chunk| {
            chunk.chunks_exact(k).fold((0.0, 0.0), |(s, q), x| {
                let e = nearest(&index, x).1;
                (s + e, q + e * e)
            })
        })
        .collect();
    let blocks = (samples.len() / k) as f64;
    let sum = partial.iter().map(|p| p.0).sum::<f64>();
    let sum_sq = partial.iter().map(|p| p.1).sum::<f64>();
    let mean = sum / blocks;
    let variance = if blocks > 1.0 {
        ((sum_sq - sum * mean) / (blocks - 1.0)).max(0.0)
    } else {
        0.0
    };
    (mean, variance)
}

/// Family-wise false-alarm rate of the sampling tolerances of `eval` and `verify --deep`: with
/// every codebook's fresh MSE equal in law to its manifest MSE, all of them fall within
/// [`tolerance_z`] with probability at least 99%.
pub const FAMILY_FALSE_ALARM: f64 = 0.01;

/// The `|z|` limit that keeps `tests` comparisons within it with probability at least
/// `1 - family_false_alarm` when nothing changed (Bonferroni: each two-sided test at
/// `family_false_alarm / tests`; valid whatever the dependence between the tests).
pub fn tolerance_z(family_false_alarm: f64, tests: usize) -> f64 {
    crate::special::probit(1.0 - family_false_alarm / (2.0 * tests.max(1) as f64))
}

/// A codebook's normalized MSE measured on fresh source blocks, compared with a recorded one
/// (a manifest's) measured on `recorded_blocks` other blocks of the same source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Remeasured {
    /// Normalized vector MSE on the fresh blocks (`d / k` times the per-block mean).
    pub mse: f64,
    /// Sample variance of the per-block squared distances (before the `d / k` scale).
    pub block_variance: f64,
    /// Standard error of `mse`, from the fresh blocks' per-block spread.
    pub std_error: f64,
    /// Standard error of the recorded MSE: the same per-block spread over `recorded_blocks`.
    pub recorded_std_error: f64,
    /// `(mse - recorded) / sqrt(std_error^2 + recorded_std_error^2)`: the difference in standard
    /// errors of the difference of the two means (0 for equal means of zero spread, infinite for
    /// different ones).
    pub z: f64,
}

/// Measures `codewords` (blocks of `k` of a `d`-dim code) on the fresh source `blocks` (flat,
/// `k` per block, at least 2) and compares the normalized MSE with `recorded_mse`, measured on
/// `recorded_blocks` independent blocks.
pub fn remeasure(
    codewords: &[f32],
    d: usize,
    k: usize,
    blocks: &[f32],
    recorded_mse: f64,
    recorded_blocks: usize,
) -> Remeasured {
    let samples = blocks.len() / k;
    let scale = (d / k) as f64;
    let (block_mean, block_variance) = block_mse_and_variance(codewords, k, blocks);
    let mse = block_mean * scale;
    let std_error = scale * (block_variance / samples as f64).sqrt();
    let recorded_std_error = scale * (block_variance / recorded_blocks.max(1) as f64).sqrt();
    let combined = std_error.hypot(recorded_std_error);
    let z = if combined > 0.0 {
        (mse - recorded_mse) / combined
    } else if mse == recorded_mse {
        0.0
    } else {
        f64::INFINITY
    };
    Remeasured {
        mse,
        block_variance,
        std_error,
        recorded_std_error,
        z,
    }
}

/// Per-chunk assignment statistics.
struct Partial {
    sums: Vec<f64>,
    counts: Vec<u64>,
    distortion: Vec<f64>,
    /// Per cell: the largest distance seen and the global index of that sample.
    farthest: Vec<(f64, usize)>,
}

fn assign(codewords: &[f32], k: usize, samples: &[f32]) -> Partial {
    let n = codewords.len() / k;
    let searcher = Searcher::new(codewords, k);
    let partials: Vec<Partial> = samples
        .par_chunks(CHUNK * k)
        .enumerate()
        .map(|(c, chunk)| {
            let mut p = Partial {
                sums: vec![0.0; n * k],
                counts: vec![0; n],
                distortion: vec![0.0; n],
                farthest: vec![(-1.0, 0); n],
            };
            for (s, x) in chunk.chunks_exact(k).enumerate() {
                let (i, dist) = searcher.nearest(x);
                let i = i as usize;
                p.counts[i] += 1;
                p.distortion[i] += dist;
                for (a, v) in p.sums[i * k..(i + 1) * k].iter_mut().zip(x) {
                    *a += *v as f64;
                }
                if dist > p.farthest[i].0 {
                    p.farthest[i] = (dist, c * CHUNK + s);
                }
            }
            p
        })
        .collect();
    let mut it = partials.into_iter();
    let mut total = it.next().expect("at least one chunk of samples");
    for p in it {
        for (a, b) in total.sums.iter_mut().zip(&p.sums) {
            *a += b;
        }
        for i in 0..n {
            total.counts[i] += p.counts[i];
            total.distortion[i] += p.distortion[i];
            if p.farthest[i].0 > total.farthest[i].0 {
                total.farthest[i] = p.farthest[i];
            }
        }
    }
    total
}

/// Runs `iterations` Lloyd steps from `init` on `samples`. An empty cell is re-seeded by splitting
/// the cell with the largest total distortion: the empty codeword moves to that cell's farthest
/// sample (each split cell's distortion is then halved so that several empty cells split
/// different cells).
pub fn refine(init: &[f32], k: usize, samples: &[f32], iterations: usize) -> Vec<f32> {
    let n = init.len() / k;
    let mut cw = init.to_vec();
    for it in 0..iterations {
        let t = std::time::Instant::now();
        let mut p = assign(&cw, k, samples);
        if std::env::var_os("FIBQUANT_TRACE").is_some() {
            let empty = p.counts.iter().filter(|&&c| c == 0).count();
            eprintln!(
                "  lloyd iteration {it}: assign {:.2}s, {empty} empty cells",
                t.elapsed().as_secs_f64()
            );
        }
        for i in 0..n {
            if p.counts[i] > 0 {
                for j in 0..k {
                    cw[i * k + j] = (p.sums[i * k + j] / p.counts[i] as f64) as f32;
                }
            }
        }
        for i in 0..n {
            if p.counts[i] == 0 {
                let worst = (0..n)
                    .max_by(|&a, &b| p.distortion[a].total_cmp(&p.distortion[b]).then(b.cmp(&a)))
                    .unwrap();
                let s = p.farthest[worst].1;
                cw[i * k..(i + 1) * k].copy_from_slice(&samples[s * k..(s + 1) * k]);
                p.distortion[worst] *= 0.5;
            }
        }
    }
    cw
}

/// Applies a `k x k` row-major matrix to every codeword.
pub fn transform(codewords: &[f32], k: usize, matrix: &[f64]) -> Vec<f32> {
    let mut out = Vec::with_capacity(codewords.len());
    for c in codewords.chunks_exact(k) {
        for row in matrix.chunks_exact(k) {
            out.push(row.iter().zip(c).map(|(a, &b)| a * b as f64).sum::<f64>() as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Method, Source};

    #[test]
    fn lloyd_reduces_distortion_and_is_thread_independent() {
        let src = Source::new(64, 2).unwrap();
        let train = src.sample(Method::RadiusDirection, 30 * 64, 1);
        let init = crate::init::initial_codebook(64, 2, 64);
        let before = block_mse(&init, 2, &train);
        let after_cw = refine(&init, 2, &train, 10);
        let after = block_mse(&after_cw, 2, &train);
        assert!(after < before, "{after} >= {before}");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = pool.install(|| refine(&init, 2, &train, 10));
        assert_eq!(after_cw, single);
    }

    #[test]
    fn empty_cells_are_reseeded() {
        // All codewords start far away but one: every other cell is empty at first.
        let src = Source::new(64, 2).unwrap();
        let train = src.sample(Method::RadiusDirection, 2000, 3);
        let mut init = vec![10.0f32; 16 * 2];
        init[0] = 0.0;
        init[1] = 0.0;
        let cw = refine(&init, 2, &train, 15);
        assert!(
            cw.iter().all(|v| v.abs() < 1.0),
            "a codeword stayed far away"
        );
        assert!(block_mse(&cw, 2, &train) < block_mse(&init, 2, &train) * 0.5);
    }
}
