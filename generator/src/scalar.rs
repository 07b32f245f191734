//! k = 1: the exact Lloyd-Max quantizer of one rotated coordinate, by numerical integration.
//!
//! A coordinate of a uniform unit vector in `R^d` has density proportional to
//! `(1 - t^2)^m` on `[-1, 1]`, `m = (d - 3) / 2` (so `t^2 ~ Beta(1/2, (d-1)/2)`). Cell masses come
//! from the regularized incomplete beta function and first moments in closed form:
//! `int t (1 - t^2)^m dt = -(1 - t^2)^(m+1) / (2 (m + 1))`. This is TurboQuant's codebook.

use crate::special::{beta_cdf, beta_inv, ln_beta};

/// The coordinate law for head dim `d`.
#[derive(Debug, Clone, Copy)]
pub struct Marginal {
    d: f64,
    m: f64,
    ln_norm: f64,
}

impl Marginal {
    /// The marginal of one coordinate of a uniform unit vector in `R^d` (`d >= 2`).
    pub fn new(d: usize) -> Marginal {
        let df = d as f64;
        let m = (df - 3.0) / 2.0;
        Marginal {
            d: df,
            m,
            ln_norm: ln_beta(0.5, m + 1.0),
        }
    }

    /// CDF at `t`.
    pub fn cdf(&self, t: f64) -> f64 {
        let t = t.clamp(-1.0, 1.0);
        let half = 0.5 * beta_cdf(t * t, 0.5, self.m + 1.0);
        if t >= 0.0 {
            0.5 + half
        } else {
            0.5 - half
        }
    }

    /// Quantile at probability `p`.
    pub fn quantile(&self, p: f64) -> f64 {
        let q = (2.0 * p - 1.0).abs();
        let t = beta_inv(q, 0.5, self.m + 1.0).sqrt();
        if p >= 0.5 {
            t
        } else {
            -t
        }
    }

    /// `int_a^b t f(t) dt`.
    pub fn first_moment(&self, a: f64, b: f64) -> f64 {
        let prim = |t: f64| {
            let t = t.clamp(-1.0, 1.0);
            -((self.m + 1.0) * (1.0 - t * t).max(0.0).ln() - self.ln_norm).exp()
                / (2.0 * (self.m + 1.0))
        };
        prim(b) - prim(a)
    }
}

/// A scalar quantizer: sorted reconstruction levels and its exact MSE.
#[derive(Debug, Clone)]
pub struct LloydMax {
    /// Reconstruction levels, ascending.
    pub levels: Vec<f64>,
    /// Exact `E (t - q(t))^2` for one coordinate.
    pub coordinate_mse: f64,
    /// Exact normalized vector MSE `d * coordinate_mse` (= E ||u - u_hat||^2).
    pub vector_mse: f64,
    /// Iterations until convergence.
    pub iterations: usize,
}

/// Exact Lloyd-Max quantizer with `n` levels for head dim `d`.
pub fn lloyd_max(d: usize, n: usize) -> LloydMax {
    let f = Marginal::new(d);
    // Start from the centroids of equal-mass cells.
    let mut levels: Vec<f64> = (0..n)
        .map(|i| f.quantile((i as f64 + 0.5) / n as f64))
        .collect();
    let mut iterations = 0;
    let mut mse = f64::INFINITY;
    for it in 0..100_000 {
        iterations = it + 1;
        let mut edges = Vec::with_capacity(n + 1);
        edges.push(-1.0);
        for w in levels.windows(2) {
            edges.push(0.5 * (w[0] + w[1]));
        }
        edges.push(1.0);
        let mut new_levels = Vec::with_capacity(n);
        let mut captured = 0.0;
        for w in edges.windows(2) {
            let mass = f.cdf(w[1]) - f.cdf(w[0]);
            let m1 = f.first_moment(w[0], w[1]);
            let c = m1 / mass;
            captured += m1 * c;
            new_levels.push(c);
        }
        // E t^2 = 1/d; distortion at centroids = E t^2 - sum M1^2 / M0.
        mse = 1.0 / f.d - captured;
        let change = levels
            .iter()
            .zip(&new_levels)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        levels = new_levels;
        if change < 1e-15 {
            break;
        }
    }
    LloydMax {
        coordinate_mse: mse,
        vector_mse: mse * f.d,
        levels,
        iterations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_turboquant_values() {
        // TurboQuant's table (4 significant digits), notes section 4.
        let published = [
            (64, [0.3584, 0.1145, 0.0334, 0.0091]),
            (128, [0.3609, 0.1160, 0.0340, 0.0093]),
        ];
        for (d, values) in published {
            for (b, want) in values.iter().enumerate() {
                let q = lloyd_max(d, 1 << (b + 1));
                // Published to 4 decimals: half a unit of the last digit.
                assert!(
                    (q.vector_mse - want).abs() <= 0.00005 + 1e-9,
                    "d={d} b={} got {} want {want}",
                    b + 1,
                    q.vector_mse
                );
            }
        }
    }

    #[test]
    fn centroids_match_published_values() {
        let s = (64f64).sqrt();
        let q1 = lloyd_max(64, 2);
        // b = 1: the centroid is E|t| = 1 / ((m + 1) B(1/2, m + 1)) exactly. The notes quote
        // 0.798 = sqrt(2/pi), the Gaussian limit; at d = 64 the exact value is 0.8010.
        let m = (64.0 - 3.0) / 2.0;
        let exact = 1.0 / ((m + 1.0) * crate::special::ln_beta(0.5, m + 1.0).exp());
        assert!(
            (q1.levels[1] - exact).abs() < 1e-13,
            "{} vs {exact}",
            q1.levels[1]
        );
        assert!((q1.levels[1] * s - 0.801).abs() < 0.0005);
        assert!(
            (lloyd_max(4096, 2).levels[1] * 64.0 - (2.0 / std::f64::consts::PI).sqrt()).abs()
                < 1e-4
        );
        assert!((q1.levels[0] + q1.levels[1]).abs() < 1e-14);
        // b = 2: the notes' "about 0.453 and 1.51" are the Gaussian Lloyd-Max levels (0.4528,
        // 1.5104); they are approached at large d, and at d = 64 they are within 1%.
        let q2 = lloyd_max(64, 4);
        assert!(
            (q2.levels[2] * s - 0.453).abs() < 0.005,
            "{}",
            q2.levels[2] * s
        );
        assert!(
            (q2.levels[3] * s - 1.51).abs() < 0.015,
            "{}",
            q2.levels[3] * s
        );
        let g = lloyd_max(4096, 4);
        assert!((g.levels[2] * 64.0 - 0.4528).abs() < 0.001);
        assert!((g.levels[3] * 64.0 - 1.5104).abs() < 0.001);
    }

    #[test]
    fn gaussian_limit_is_approached() {
        let gaussian = [0.3634, 0.1175, 0.0345, 0.0095];
        for (b, g) in gaussian.iter().enumerate() {
            let q = lloyd_max(4096, 1 << (b + 1));
            assert!(
                (q.vector_mse - g).abs() < 0.0003,
                "b={} {}",
                b + 1,
                q.vector_mse
            );
        }
    }

    #[test]
    fn marginal_is_a_density() {
        let f = Marginal::new(64);
        assert!((f.cdf(1.0) - 1.0).abs() < 1e-14);
        assert!(f.cdf(-1.0).abs() < 1e-14);
        assert!((f.cdf(0.0) - 0.5).abs() < 1e-14);
        assert!((f.quantile(f.cdf(0.1)) - 0.1).abs() < 1e-12);
        // Mean over the whole line is zero; over [0, 1] it is E|t| / 2.
        assert!(f.first_moment(-1.0, 1.0).abs() < 1e-14);
    }
}
