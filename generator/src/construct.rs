//! Building one rate point `(d, k, N)`: source -> initial codebook -> multi-restart Lloyd ->
//! selection on a validation set -> measurement on a separate test set.

use crate::error::{Error, Result};
use crate::init::{initial_codebook, product_codebook};
use crate::lloyd::{block_mse, refine, transform};
use crate::scalar::lloyd_max;
use crate::source::{Method, Source};
use fibquant::codebook::{CodebookHeader, Construction};
use fibquant::util::rng::splitmix64;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Version of the construction. Bump it whenever a change alters the bytes of any codebook.
pub const CONSTRUCTION_VERSION: u32 = 1;
/// Base seed of the registry.
pub const BASE_SEED: u64 = 20_260_513;

/// Construction parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Training samples per codeword (M / N), before the floor below.
    pub samples_per_codeword: u32,
    /// Floor on the training set size M. With only 30 samples per cell, Lloyd on small codebooks
    /// is noisy and overfits (measured: d = 64, k = 4, N = 16 gives MSE 0.357 with M = 480 and
    /// 0.341 with M = 65536), so small-N points get at least this many samples.
    pub min_training_samples: u32,
    /// Lloyd restarts from the (rotated) initial codebook.
    pub restarts: u32,
    /// Lloyd iterations per restart.
    pub iterations: u32,
    /// Validation blocks (selection among candidates).
    pub validation_blocks: usize,
    /// Test blocks (the reported MSE).
    pub test_blocks: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            samples_per_codeword: 30,
            min_training_samples: 1 << 16,
            restarts: 4,
            iterations: 25,
            validation_blocks: 1 << 17,
            test_blocks: 1 << 18,
        }
    }
}

/// The seed of rate point `(d, k, n)`.
pub fn entry_seed(d: usize, k: usize, n: usize) -> u64 {
    let mut s = BASE_SEED ^ ((d as u64) << 40) ^ ((k as u64) << 32) ^ n as u64;
    splitmix64(&mut s)
}

/// A seed derived from an entry's seed for one purpose (`tag`: 1 training, 2 validation, 3 test).
pub fn sub_seed(seed: u64, tag: u64) -> u64 {
    let mut s = seed ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    splitmix64(&mut s)
}

/// Seed of the test set of an entry (used by `eval --seed` defaults too).
pub fn test_seed(seed: u64) -> u64 {
    sub_seed(seed, 3)
}

/// A built codebook and what was measured while building it.
#[derive(Debug, Clone)]
pub struct Built {
    /// File header.
    pub header: CodebookHeader,
    /// Codewords, codeword-major.
    pub codewords: Vec<f32>,
    /// Normalized vector MSE of the shipped codebook on the test set.
    pub mse: f64,
    /// Normalized vector MSE of the initial codebook on the test set (k >= 2), or the exact
    /// Lloyd-Max MSE (k = 1).
    pub mse_initial: f64,
    /// Normalized vector MSE of the scalar product code on the test set, where N = (2^b)^k.
    pub mse_scalar_product: Option<f64>,
    /// Exact MSE by integration (k = 1 only).
    pub mse_exact: Option<f64>,
    /// Which candidate was selected.
    pub selected: String,
    /// Test-set size in blocks.
    pub test_blocks: usize,
}

/// Checks a rate point before building.
pub fn validate(d: usize, k: usize, n: usize) -> Result<()> {
    if k == 0 || d == 0 {
        return Err(Error::InvalidArgument("d and k must be positive".into()));
    }
    if !d.is_multiple_of(k) {
        return Err(Error::InvalidArgument(format!(
            "k = {k} does not divide d = {d} (the codec never pads)"
        )));
    }
    if k >= d {
        return Err(Error::InvalidArgument(format!(
            "k = {k} must be smaller than d = {d}"
        )));
    }
    if n < 2 {
        return Err(Error::InvalidArgument(format!(
            "N must be at least 2, got {n}"
        )));
    }
    if n > 1 << 20 {
        return Err(Error::InvalidArgument(format!(
            "N = {n} is above the supported 2^20"
        )));
    }
    if k > crate::source::MAX_K {
        return Err(Error::InvalidArgument(format!(
            "k = {k} is above the supported {}",
            crate::source::MAX_K
        )));
    }
    Ok(())
}

/// Builds rate point `(d, k, n)` with `params`: `k = 1` exactly, `(k, N) = (8, 64497)` as the
/// E8 code ([`crate::e8`]), any other point by radial-angular initialization and Lloyd.
pub fn build(d: usize, k: usize, n: usize, params: Params) -> Result<Built> {
    validate(d, k, n)?;
    if (k, n) == (8, crate::e8::E8_N) {
        return crate::e8::build(d, params);
    }
    let seed = entry_seed(d, k, n);
    let src = Source::new(d, k)?;
    let samples_per_codeword = params
        .samples_per_codeword
        .max(params.min_training_samples.div_ceil(n as u32));
    let scale = (d / k) as f64;
    let test = src.sample(Method::RadiusDirection, params.test_blocks, test_seed(seed));
    let mut header = CodebookHeader {
        dim: d as u32,
        k: k as u32,
        n: n as u32,
        construction: Construction::RadialAngularLloyd,
        seed,
        samples_per_codeword,
        restarts: params.restarts,
        iterations: params.iterations,
        construction_version: CONSTRUCTION_VERSION,
    };
    if k == 1 {
        let q = lloyd_max(d, n);
        let codewords: Vec<f32> = q.levels.iter().map(|&v| v as f32).collect();
        let mse = block_mse(&codewords, 1, &test) * scale;
        header.construction = Construction::ScalarLloydMax;
        header.samples_per_codeword = 0;
        header.restarts = 0;
        header.iterations = q.iterations as u32;
        return Ok(Built {
            header,
            codewords,
            mse,
            mse_initial: q.vector_mse,
            mse_scalar_product: None,
            mse_exact: Some(q.vector_mse),
            selected: "exact Lloyd-Max".into(),
            test_blocks: params.test_blocks,
        });
    }

    let train = src.sample(
        Method::RadiusDirection,
        n * samples_per_codeword as usize,
        sub_seed(seed, 1),
    );
    let validation = src.sample(
        Method::RadiusDirection,
        params.validation_blocks,
        sub_seed(seed, 2),
    );
    let init = initial_codebook(d, k, n);

    let mut candidates: Vec<(String, Vec<f32>)> = vec![("initial".into(), init.clone())];
    for r in 0..params.restarts {
        let start = if r == 0 {
            init.clone()
        } else {
            transform(
                &init,
                k,
                &random_rotation(k, sub_seed(seed, 100 + r as u64)),
            )
        };
        let refined = refine(&start, k, &train, params.iterations as usize);
        trace(&format!("{d}/{k}/{n}: restart {r} done"));
        candidates.push((format!("lloyd restart {r}"), refined));
    }
    // Where N = L^k with L = 2^b levels, b = 1..4, the scalar product code is a candidate too (so
    // the vector code is never worse than the scalar one at the same rate, up to sampling error).
    let product = scalar_product_levels(k, n).map(|levels| {
        let p = product_codebook(&lloyd_max(d, levels).levels, k);
        (p.clone(), refine(&p, k, &train, params.iterations as usize))
    });
    if let Some((p, refined)) = &product {
        candidates.push(("scalar product".into(), p.clone()));
        candidates.push(("scalar product + lloyd".into(), refined.clone()));
    }
    trace(&format!(
        "{d}/{k}/{n}: {} candidates refined",
        candidates.len()
    ));
    let (selected, codewords) = candidates
        .into_iter()
        .map(|(name, cw)| (block_mse(&cw, k, &validation), name, cw))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name, cw)| (name, cw))
        .unwrap();
    let mse = block_mse(&codewords, k, &test) * scale;
    let mse_initial = block_mse(&init, k, &test) * scale;
    let mse_scalar_product = product.map(|(p, _)| block_mse(&p, k, &test) * scale);
    Ok(Built {
        header,
        codewords,
        mse,
        mse_initial,
        mse_scalar_product,
        mse_exact: None,
        selected,
        test_blocks: params.test_blocks,
    })
}

/// Progress lines on stderr when `FIBQUANT_TRACE` is set (long constructions).
fn trace(msg: &str) {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    if std::env::var_os("FIBQUANT_TRACE").is_some() {
        let t = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64();
        eprintln!("[{t:8.1}s] {msg}");
    }
}

/// Levels per coordinate `L = 2^b` when `n = L^k` for a whole rate `b` in 1..=4.
pub fn scalar_product_levels(k: usize, n: usize) -> Option<usize> {
    (1..=4usize)
        .map(|b| 1usize << b)
        .find(|&l| (l as u128).pow(k as u32) == n as u128)
}

/// A Haar-random `k x k` orthogonal matrix (row-major), from `seed`.
pub fn random_rotation(k: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..k).map(|_| StandardNormal.sample(&mut rng)).collect())
        .collect();
    for i in 0..k {
        for _ in 0..2 {
            for j in 0..i {
                let dot: f64 = rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum();
                let rj = rows[j].clone();
                for (a, b) in rows[i].iter_mut().zip(&rj) {
                    *a -= dot * b;
                }
            }
        }
        let norm = rows[i].iter().map(|a| a * a).sum::<f64>().sqrt();
        rows[i].iter_mut().for_each(|a| *a /= norm);
    }
    rows.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Params {
        Params {
            validation_blocks: 1 << 14,
            test_blocks: 1 << 15,
            ..Params::default()
        }
    }

    #[test]
    fn build_is_deterministic_and_never_worse_than_initial() {
        let a = build(64, 2, 16, small()).unwrap();
        let b = build(64, 2, 16, small()).unwrap();
        assert_eq!(a.codewords, b.codewords);
        // Selected on validation, measured on test: allow the sampling noise of the difference.
        assert!(
            a.mse <= a.mse_initial * 1.01,
            "{} vs {}",
            a.mse,
            a.mse_initial
        );
    }

    #[test]
    fn vector_code_beats_scalar_at_the_same_rate() {
        // k = 4, N = 16: b = 1. The scalar product code is a candidate, so the result can only
        // be better; with Lloyd it is clearly better.
        let built = build(64, 4, 16, small()).unwrap();
        let scalar = built.mse_scalar_product.unwrap();
        assert!(built.mse < scalar, "{} vs {scalar}", built.mse);
    }

    #[test]
    fn bad_rate_points_are_refused() {
        assert!(build(64, 3, 16, small()).is_err());
        assert!(build(64, 2, 1, small()).is_err());
        assert!(build(64, 64, 4, small()).is_err());
        assert!(build(0, 1, 4, small()).is_err());
    }

    #[test]
    fn product_levels() {
        assert_eq!(scalar_product_levels(2, 16), Some(4));
        assert_eq!(scalar_product_levels(4, 4096), Some(8));
        assert_eq!(scalar_product_levels(8, 256), Some(2));
        assert_eq!(scalar_product_levels(8, 16), None);
        assert_eq!(scalar_product_levels(2, 8), None);
    }
}
