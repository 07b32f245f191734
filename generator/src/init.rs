//! The initial radial-angular codebook: codeword `n` (1..N) is `r_n * u_n`.
//!
//! - Radii: `r_n = sqrt(BetaInv((n - 1/2) / N; k/2, beta))` with
//!   `beta = (k / (k + 2)) * (d - k - 2) / 2 + 1`: quantiles of the high-rate optimal point density
//!   (proportional to `f^(k/(k+2))`) of the squared radius.
//! - Directions (index `i = n - 1`): golden-angle spiral for k = 2; Fibonacci sphere for k = 3;
//!   Roberts-Kronecker sequence through the inverse normal CDF, normalized, for k >= 4.

use crate::special::{beta_inv, probit};

/// Radii of the initial codebook for `(d, k, n)`, ascending.
pub fn radii(d: usize, k: usize, n: usize) -> Vec<f64> {
    let (df, kf) = (d as f64, k as f64);
    let beta = (kf / (kf + 2.0)) * (df - kf - 2.0) / 2.0 + 1.0;
    (1..=n)
        .map(|i| beta_inv((i as f64 - 0.5) / n as f64, kf / 2.0, beta).sqrt())
        .collect()
}

/// The positive root of `x^(k+1) = x + 1` (the generalized golden ratio).
pub fn harmonious_root(k: usize) -> f64 {
    let mut x: f64 = 1.5;
    for _ in 0..100 {
        let f = x.powi(k as i32 + 1) - x - 1.0;
        let df = (k as f64 + 1.0) * x.powi(k as i32) - 1.0;
        x -= f / df;
    }
    x
}

/// Unit direction `i` of `n` in `R^k` (`k >= 2`).
pub fn direction(k: usize, i: usize, n: usize) -> Vec<f64> {
    let golden_angle = std::f64::consts::TAU * (1.0 - 1.0 / ((1.0 + 5f64.sqrt()) / 2.0));
    match k {
        2 => {
            let t = golden_angle * i as f64;
            vec![t.cos(), t.sin()]
        }
        3 => {
            let z = 1.0 - (2.0 * i as f64 + 1.0) / n as f64;
            let rho = (1.0 - z * z).max(0.0).sqrt();
            let t = golden_angle * i as f64;
            vec![rho * t.cos(), rho * t.sin(), z]
        }
        _ => {
            let g = harmonious_root(k);
            let mut v: Vec<f64> = (1..=k)
                .map(|j| {
                    let xi = ((i as f64 + 0.5) * g.powi(-(j as i32))).fract();
                    probit(xi)
                })
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter_mut().for_each(|a| *a /= norm);
            v
        }
    }
}

/// The initial codebook for `(d, k, n)`, `k >= 2`, codeword-major.
pub fn initial_codebook(d: usize, k: usize, n: usize) -> Vec<f32> {
    let r = radii(d, k, n);
    let mut out = Vec::with_capacity(n * k);
    for (i, &ri) in r.iter().enumerate() {
        out.extend(direction(k, i, n).into_iter().map(|u| (ri * u) as f32));
    }
    out
}

/// The product of a scalar codebook with itself `k` times (`levels.len()^k` codewords), the
/// scalar code seen as a vector code. Codeword index `sum_j i_j * L^j`.
pub fn product_codebook(levels: &[f64], k: usize) -> Vec<f32> {
    let l = levels.len();
    let n = l.pow(k as u32);
    let mut out = Vec::with_capacity(n * k);
    for idx in 0..n {
        let mut rest = idx;
        for _ in 0..k {
            out.push(levels[rest % l] as f32);
            rest /= l;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k2_radii_match_the_closed_form() {
        let (d, n) = (64, 32);
        for (i, r) in radii(d, 2, n).iter().enumerate() {
            let q = (i as f64 + 0.5) / n as f64;
            let want = (1.0 - (1.0 - q).powf(4.0 / d as f64)).sqrt();
            assert!((r - want).abs() < 1e-12);
        }
    }

    #[test]
    fn harmonious_roots() {
        // k = 1: golden ratio; k = 2: plastic number.
        assert!((harmonious_root(1) - 1.618_033_988_749_895).abs() < 1e-12);
        assert!((harmonious_root(2) - 1.324_717_957_244_746).abs() < 1e-12);
    }

    #[test]
    fn directions_are_unit_and_spread() {
        for k in [2, 3, 4, 8] {
            let n = 512;
            let dirs: Vec<Vec<f64>> = (0..n).map(|i| direction(k, i, n)).collect();
            let mut mean = vec![0.0; k];
            for v in &dirs {
                let norm: f64 = v.iter().map(|a| a * a).sum();
                assert!((norm - 1.0).abs() < 1e-12);
                for (m, a) in mean.iter_mut().zip(v) {
                    *m += a / n as f64;
                }
            }
            // A well-spread direction set has a mean near zero (a random one: about 1/sqrt(n k)).
            let mnorm = mean.iter().map(|a| a * a).sum::<f64>().sqrt();
            assert!(mnorm < 0.1, "k={k} mean norm {mnorm}");
        }
    }

    #[test]
    fn product_codebook_enumerates_all_combinations() {
        let p = product_codebook(&[-1.0, 1.0], 3);
        assert_eq!(p.len(), 8 * 3);
        assert_eq!(&p[0..3], &[-1.0, -1.0, -1.0]);
        assert_eq!(&p[3..6], &[1.0, -1.0, -1.0]);
        assert_eq!(&p[21..24], &[1.0, 1.0, 1.0]);
    }
}
