//! The default rotation on adversarial inputs: block radii follow the Beta law and the MSE stays
//! within a few percent of the MSE on uniformly random directions.

mod common;
use common::*;
use fibquant::codec::rotation::{Rotation, RotationKind};
use fibquant::util::rng::Xoshiro256;
use fibquant::{Codec, CodecConfig};

/// CDF of Beta(a, b) for half-integer parameters by numerical integration (Simpson on a fine
/// grid of the substitution x = s^2 to tame the a = 1/2 endpoint singularity).
fn beta_cdf_table(a: f64, b: f64) -> impl Fn(f64) -> f64 {
    let steps = 200_000;
    // density of s where x = s^2: 2 s f(s^2) ~ s^(2a-1) (1 - s^2)^(b-1).
    let g = |s: f64| s.powf(2.0 * a - 1.0) * (1.0 - s * s).max(0.0).powf(b - 1.0);
    let h = 1.0 / steps as f64;
    let mut cum = vec![0.0; steps + 1];
    for i in 0..steps {
        let (s0, s1) = (i as f64 * h, (i + 1) as f64 * h);
        let seg = (s1 - s0) / 6.0 * (g(s0.max(1e-12)) + 4.0 * g(0.5 * (s0 + s1)) + g(s1));
        cum[i + 1] = cum[i] + seg;
    }
    let total = cum[steps];
    move |x: f64| {
        let s = x.clamp(0.0, 1.0).sqrt();
        let pos = s / h;
        let i = (pos as usize).min(steps - 1);
        let frac = pos - i as f64;
        (cum[i] + frac * (cum[i + 1] - cum[i])) / total
    }
}

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

fn block_radii(rot: &Rotation, x: &[f32], k: usize) -> Vec<f64> {
    let d = rot.dim();
    let norm: f32 = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    let u: Vec<f32> = x.iter().map(|v| v / norm).collect();
    let mut y = vec![0f32; d];
    rot.apply(&u, &mut y);
    y.chunks(k)
        .map(|b| b.iter().map(|v| (*v as f64).powi(2)).sum())
        .collect()
}

#[test]
fn block_radii_follow_the_beta_law_on_random_inputs() {
    let (d, k) = (64, 4);
    let cdf = beta_cdf_table(k as f64 / 2.0, (d - k) as f64 / 2.0);
    // One block per vector (blocks of one vector are not independent).
    for kind in [RotationKind::Auto, RotationKind::Haar] {
        let rot = Rotation::new(kind, d, 3).unwrap();
        let x = gaussian_rows(20_000, d, 8);
        let radii: Vec<f64> = x
            .chunks(d)
            .enumerate()
            .map(|(i, row)| block_radii(&rot, row, k)[i % (d / k)])
            .collect();
        let n = radii.len() as f64;
        let stat = ks(radii, &cdf);
        // Critical value at alpha = 0.001: 1.95 / sqrt(n).
        assert!(stat < 1.95 / n.sqrt(), "{kind:?}: KS {stat}");
    }
}

/// Adversarial families: one-hot, constant, sparse, a few huge channels.
fn adversarial(d: usize, rng: &mut Xoshiro256) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for i in 0..d {
        let mut v = vec![0f32; d];
        v[i] = 1.0;
        out.push(v);
    }
    out.push(vec![1.0; d]);
    let mut alt = vec![1.0f32; d];
    alt.iter_mut().step_by(2).for_each(|v| *v = -1.0);
    out.push(alt);
    for _ in 0..d {
        let mut v = vec![0f32; d];
        for _ in 0..3 {
            v[(rng.next_u64() % d as u64) as usize] = rng.next_gaussian() as f32;
        }
        out.push(v);
        let mut v: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32 * 0.01).collect();
        v[(rng.next_u64() % 4) as usize] = 100.0;
        v[(rng.next_u64() % 4 + 30) as usize] = -60.0;
        out.push(v);
    }
    out
}

#[test]
fn default_rotation_mse_on_adversarial_inputs_matches_random_inputs() {
    let (d, k, n) = (64, 4, 256);
    let mut rng = Xoshiro256::new(99);
    let (mut adv, mut rand) = (Vec::new(), Vec::new());
    // Many rotation seeds: with one fixed rotation the d one-hot inputs are only d samples.
    for seed in 0..24u64 {
        let codec = Codec::new(CodecConfig::new(d, k, n).with_seed(seed)).unwrap();
        let mut slot = vec![0u8; codec.slot_bytes()];
        let mut y = vec![0f32; d];
        let mut err = |x: &[f32]| {
            codec.encode(x, &mut slot).unwrap();
            codec.decode(&slot, &mut y).unwrap();
            normalized_errors(x, &y, d)[0]
        };
        for x in adversarial(d, &mut rng) {
            adv.push(err(&x));
        }
        for x in gaussian_rows(200, d, seed + 500).chunks(d) {
            rand.push(err(x));
        }
    }
    let (ma, sa) = mean_se(&adv);
    let (mr, sr) = mean_se(&rand);
    // "Within a few percent": 5% relative, which is more than 4 combined standard errors here.
    let rel = (ma - mr).abs() / mr;
    assert!(
        4.0 * (sa * sa + sr * sr).sqrt() / mr < 0.05,
        "test too noisy to decide"
    );
    assert!(
        rel < 0.05,
        "adversarial MSE {ma:.5} vs random {mr:.5} ({:.1}%)",
        rel * 100.0
    );
}

#[test]
fn one_round_hadamard_fails_on_one_hot_inputs_and_three_rounds_pass() {
    // The pitfall: one round maps e_i to a vector of equal magnitudes, so every block radius is
    // exactly k/d. The goodness-of-fit test must catch that, and must pass the default.
    let (d, k) = (64, 4);
    let cdf = beta_cdf_table(k as f64 / 2.0, (d - k) as f64 / 2.0);
    let radii_of = |kind: RotationKind| -> Vec<f64> {
        let mut out = Vec::new();
        for seed in 0..64u64 {
            let rot = Rotation::new(kind, d, seed).unwrap();
            let mut e = vec![0f32; d];
            e[(seed as usize * 7) % d] = 1.0;
            out.push(block_radii(&rot, &e, k)[seed as usize % (d / k)]);
        }
        out
    };
    let crit = 1.95 / 64f64.sqrt();
    let one = ks(radii_of(RotationKind::Hadamard { rounds: 1 }), &cdf);
    assert!(one > crit, "one round unexpectedly passes: KS {one}");
    let three = ks(radii_of(RotationKind::Auto), &cdf);
    assert!(three < crit, "three rounds fail: KS {three}");
}
