//! The canonical source: one k-block of a uniformly random unit vector in `R^d`.
//!
//! Its squared radius is `Beta(k/2, (d-k)/2)`, its direction uniform on `S^{k-1}` and independent
//! of the radius. Two independent samplers, which the tests show agree:
//! - [`Method::GaussianProjection`]: the first `k` coordinates of a normalized `d`-dim Gaussian;
//! - [`Method::RadiusDirection`]: `R * u` with `R^2 = X / (X + Y)`, `X ~ Gamma(k/2)`,
//!   `Y ~ Gamma((d-k)/2)`, and `u` a normalized `k`-dim Gaussian (cheaper: `k` normals, not `d`).
//!
//! Samples are drawn in fixed chunks of [`CHUNK`] blocks, chunk `c` from ChaCha8 stream `c` of the
//! seed, so the same seed gives the same samples whatever the thread count.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};
use rayon::prelude::*;

/// Blocks per independently seeded chunk.
pub const CHUNK: usize = 4096;

/// How to draw blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// First k coordinates of a normalized d-dim Gaussian.
    GaussianProjection,
    /// Beta radius times a uniform direction.
    RadiusDirection,
}

/// The spherical-Beta source for `(d, k)`.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Ambient dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
}

impl Source {
    /// The source of k-blocks of uniform unit vectors in `R^dim`; needs `1 <= k < dim`.
    pub fn new(dim: usize, k: usize) -> Result<Source> {
        if k == 0 || k >= dim || k > MAX_K {
            return Err(Error::InvalidArgument(format!(
                "the source needs 1 <= k < d and k <= {MAX_K}, got d={dim}, k={k}"
            )));
        }
        Ok(Source { dim, k })
    }

    /// Draws one block into `out` (length `k`).
    pub fn draw<R: Rng>(&self, method: Method, rng: &mut R, out: &mut [f32]) {
        let (d, k) = (self.dim, self.k);
        match method {
            Method::GaussianProjection => {
                let mut head = [0f64; 64];
                let mut total = 0.0;
                for h in head[..k].iter_mut() {
                    *h = StandardNormal.sample(rng);
                    total += *h * *h;
                }
                for _ in k..d {
                    let g: f64 = StandardNormal.sample(rng);
                    total += g * g;
                }
                let inv = 1.0 / total.sqrt();
                for (o, h) in out.iter_mut().zip(&head[..k]) {
                    *o = (h * inv) as f32;
                }
            }
            Method::RadiusDirection => {
                let x = Gamma::new(k as f64 / 2.0, 1.0).unwrap().sample(rng);
                let y = Gamma::new((d - k) as f64 / 2.0, 1.0).unwrap().sample(rng);
                let r = (x / (x + y)).sqrt();
                let mut dir = [0f64; 64];
                let mut nsq = 0.0;
                for v in dir[..k].iter_mut() {
                    *v = StandardNormal.sample(rng);
                    nsq += *v * *v;
                }
                let scale = r / nsq.sqrt();
                for (o, v) in out.iter_mut().zip(&dir[..k]) {
                    *o = (v * scale) as f32;
                }
            }
        }
    }

    /// Draws `count` blocks (flat, `count * k` values) from `seed`, in parallel, reproducibly.
    pub fn sample(&self, method: Method, count: usize, seed: u64) -> Vec<f32> {
        let k = self.k;
        let mut out = vec![0f32; count * k];
        out.par_chunks_mut(CHUNK * k)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(c as u64);
                for block in chunk.chunks_exact_mut(k) {
                    self.draw(method, &mut rng, block);
                }
            });
        out
    }
}

/// Largest block size the samplers support (stack buffers).
pub const MAX_K: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::special::beta_cdf;

    fn radii_sq(samples: &[f32], k: usize) -> Vec<f64> {
        samples
            .chunks_exact(k)
            .map(|b| b.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect()
    }

    /// Kolmogorov-Smirnov statistic of `xs` against the CDF `cdf`.
    fn ks(mut xs: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as f64;
        xs.iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = cdf(x);
                (f - i as f64 / n).abs().max((f - (i + 1) as f64 / n).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn both_methods_follow_the_beta_radius_law() {
        // KS critical value at alpha = 0.001 is 1.95 / sqrt(n).
        let n = 40_000;
        let crit = 1.95 / (n as f64).sqrt();
        for &(d, k) in &[(64, 1), (64, 2), (64, 4), (128, 8), (96, 3)] {
            let src = Source::new(d, k).unwrap();
            for (m, method) in [Method::GaussianProjection, Method::RadiusDirection]
                .into_iter()
                .enumerate()
            {
                let s = src.sample(method, n, 11 + m as u64);
                let r2 = radii_sq(&s, k);
                let mean = r2.iter().sum::<f64>() / n as f64;
                // E R^2 = k/d; sd of R^2 is below sqrt(2k)/d, so 5 standard errors:
                let tol = 5.0 * (2.0 * k as f64).sqrt() / d as f64 / (n as f64).sqrt();
                assert!(
                    (mean - k as f64 / d as f64).abs() < tol,
                    "d={d} k={k} {method:?} mean {mean}"
                );
                let stat = ks(r2, |x| beta_cdf(x, k as f64 / 2.0, (d - k) as f64 / 2.0));
                assert!(stat < crit, "d={d} k={k} {method:?}: KS {stat} >= {crit}");
            }
        }
    }

    #[test]
    fn the_two_methods_agree_on_direction_and_coordinates() {
        // Two-sample KS on the first coordinate, and uniformity of the direction (each coordinate
        // of the unit direction has E u_i^2 = 1/k, E u_i u_j = 0).
        let (d, k, n) = (64, 4, 40_000);
        let src = Source::new(d, k).unwrap();
        let a = src.sample(Method::GaussianProjection, n, 1);
        let b = src.sample(Method::RadiusDirection, n, 2);
        let mut xa: Vec<f64> = a.chunks_exact(k).map(|c| c[0] as f64).collect();
        let mut xb: Vec<f64> = b.chunks_exact(k).map(|c| c[0] as f64).collect();
        xa.sort_by(f64::total_cmp);
        xb.sort_by(f64::total_cmp);
        let mut stat: f64 = 0.0;
        let (mut i, mut j) = (0, 0);
        while i < n && j < n {
            if xa[i] <= xb[j] {
                i += 1;
            } else {
                j += 1;
            }
            stat = stat.max((i as f64 - j as f64).abs() / n as f64);
        }
        // Two-sample KS critical value at alpha = 0.001: 1.95 * sqrt(2/n).
        assert!(
            stat < 1.95 * (2.0 / n as f64).sqrt(),
            "two-sample KS {stat}"
        );
        for s in [&a, &b] {
            let mut second = [[0f64; 4]; 4];
            for c in s.chunks_exact(k) {
                let r = c.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                for p in 0..k {
                    for q in 0..k {
                        second[p][q] += (c[p] as f64 / r) * (c[q] as f64 / r) / n as f64;
                    }
                }
            }
            for (p, row) in second.iter().enumerate() {
                for (q, &v) in row.iter().enumerate() {
                    let want = if p == q { 1.0 / k as f64 } else { 0.0 };
                    // sd of u_p u_q is at most 1/sqrt(k(k+2)) < 0.2; 5 standard errors.
                    assert!(
                        (v - want).abs() < 5.0 * 0.2 / (n as f64).sqrt() * 2.0,
                        "{p},{q}: {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn sampling_is_reproducible_and_independent_of_threads() {
        let src = Source::new(64, 4).unwrap();
        let a = src.sample(Method::RadiusDirection, 3 * CHUNK + 17, 5);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| src.sample(Method::RadiusDirection, 3 * CHUNK + 17, 5));
        assert_eq!(a, b);
        let c = src.sample(Method::RadiusDirection, 3 * CHUNK + 17, 6);
        assert_ne!(a, c);
    }
}
