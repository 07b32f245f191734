//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use fibquant::util::rng::Xoshiro256;

/// `count` Gaussian vectors of dim `d` with norms spread over four orders of magnitude.
pub fn gaussian_rows(count: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256::new(seed);
    let mut out = Vec::with_capacity(count * d);
    for _ in 0..count {
        let scale = 10f64.powf(rng.next_open01() * 4.0 - 2.0);
        out.extend((0..d).map(|_| (rng.next_gaussian() * scale) as f32));
    }
    out
}

/// Per-row normalized squared errors `||x - y||^2 / ||x||^2`.
pub fn normalized_errors(x: &[f32], y: &[f32], d: usize) -> Vec<f64> {
    x.chunks(d)
        .zip(y.chunks(d))
        .map(|(a, b)| {
            let e: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
            let n: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum();
            e / n
        })
        .collect()
}

/// Mean and standard error.
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}
