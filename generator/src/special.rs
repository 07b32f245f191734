//! Special functions for the source law: log-gamma, the regularized incomplete beta function and
//! its inverse, and the standard normal quantile.
//!
//! Kept rather than `statrs`: statrs 0.17's `ln_beta`, `beta_reg`, `inv_beta_reg` and normal
//! quantile differ from these in the last bits over the ranges the constructions use
//! (`ln_beta(0.5, 31.5)` by 1088 ulp, `beta_reg` by up to 2173 ulp, `inv_beta_reg` by up to
//! 2.3e6 ulp, the quantile by 1 to 5 ulp at most points), and these values feed the constructions
//! whose codebook bytes the registry pins.

/// Natural log of the gamma function (Lanczos, g = 7, 9 terms; relative error about 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection formula.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Natural log of the beta function `B(a, b)`.
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Continued fraction for the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One Lentz step with coefficient `aa`: updates c and d, returns the factor for h.
    let step = |aa: f64, c: &mut f64, d: &mut f64| -> f64 {
        *d = 1.0 + aa * *d;
        if d.abs() < TINY {
            *d = TINY;
        }
        *c = 1.0 + aa / *c;
        if c.abs() < TINY {
            *c = TINY;
        }
        *d = 1.0 / *d;
        *d * *c
    };
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)), &mut c, &mut d);
        let del = step(
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            &mut c,
            &mut d,
        );
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// Regularized incomplete beta function `I_x(a, b)`, the CDF of `Beta(a, b)` at `x`.
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() - ln_beta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Inverse of [`beta_cdf`] in `x` for `p` in [0, 1], by bisection to full double precision.
pub fn beta_inv(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_cdf(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Standard normal quantile (Wichura's AS241, PPND16; relative accuracy about 1e-16).
// The coefficients are quoted as published.
#[allow(clippy::excessive_precision)]
pub fn probit(p: f64) -> f64 {
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        let num = (((((((2_509.080_928_730_122_7 * r + 33_430.575_583_588_128) * r
            + 67_265.770_927_008_7)
            * r
            + 45_921.953_931_549_87)
            * r
            + 13_731.693_765_509_461)
            * r
            + 1_971.590_950_306_551_3)
            * r
            + 133.141_667_891_784_38)
            * r
            + 3.387_132_872_796_366_5)
            * q;
        let den = ((((((5_226.495_278_852_545 * r + 28_729.085_735_721_943) * r
            + 39_307.895_800_092_71)
            * r
            + 21_213.794_301_586_597)
            * r
            + 5_394.196_021_424_751)
            * r
            + 687.187_007_492_057_9)
            * r
            + 42.313_330_701_600_91)
            * r
            + 1.0;
        return num / den;
    }
    let mut r = if q < 0.0 { p } else { 1.0 - p };
    r = (-r.ln()).sqrt();
    let val = if r <= 5.0 {
        let r = r - 1.6;
        let num = ((((((7.745_450_142_783_414e-4 * r + 2.272_384_498_926_918_4e-2) * r
            + 2.417_807_251_774_506e-1)
            * r
            + 1.270_458_252_452_368_4)
            * r
            + 3.647_848_324_763_204_5)
            * r
            + 5.769_497_221_460_691)
            * r
            + 4.630_337_846_156_546)
            * r
            + 1.423_437_110_749_683_5;
        let den = ((((((1.050_750_071_644_416_9e-9 * r + 5.475_938_084_995_345e-4) * r
            + 1.519_866_656_361_645_7e-2)
            * r
            + 1.481_039_764_274_800_7e-1)
            * r
            + 6.897_673_349_851e-1)
            * r
            + 1.676_384_830_183_803_8)
            * r
            + 2.053_191_626_637_759)
            * r
            + 1.0;
        num / den
    } else {
        let r = r - 5.0;
        let num = ((((((2.010_334_399_292_288_1e-7 * r + 2.711_555_568_743_487_6e-5) * r
            + 1.242_660_947_388_078_4e-3)
            * r
            + 2.653_218_952_657_612_4e-2)
            * r
            + 2.965_605_718_285_048_7e-1)
            * r
            + 1.784_826_539_917_291_3)
            * r
            + 5.463_784_911_164_114)
            * r
            + 6.657_904_643_501_103;
        let den = ((((((2.044_263_103_389_939_7e-15 * r + 1.421_511_758_316_446e-7) * r
            + 1.846_318_317_510_054_8e-5)
            * r
            + 7.868_691_311_456_133e-4)
            * r
            + 1.487_536_129_085_061_5e-2)
            * r
            + 1.369_298_809_227_358e-1)
            * r
            + 5.998_322_065_558_88e-1)
            * r
            + 1.0;
        num / den
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-14);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(100.5) - 361.435_540_467_777_6).abs() < 1e-9);
    }

    #[test]
    fn beta_cdf_closed_forms() {
        // Beta(1, b): 1 - (1 - x)^b.
        for &b in &[1.0, 2.5, 16.0, 63.0] {
            for &x in &[0.001, 0.1, 0.5, 0.9] {
                let want = 1.0 - (1.0f64 - x).powf(b);
                assert!((beta_cdf(x, 1.0, b) - want).abs() < 1e-13, "b={b} x={x}");
            }
        }
        // Beta(a, 1): x^a.
        for &a in &[0.5, 3.0] {
            assert!((beta_cdf(0.3, a, 1.0) - 0.3f64.powf(a)).abs() < 1e-13);
        }
        // Symmetry I_x(a,b) = 1 - I_{1-x}(b,a).
        let v = beta_cdf(0.2, 2.5, 30.5) + beta_cdf(0.8, 30.5, 2.5);
        assert!((v - 1.0).abs() < 1e-13);
    }

    #[test]
    fn beta_inv_inverts() {
        for &(a, b) in &[(0.5, 31.5), (1.0, 16.0), (2.0, 29.0), (4.0, 56.0)] {
            for &p in &[1e-6, 0.01, 0.3, 0.5, 0.99] {
                let x = beta_inv(p, a, b);
                assert!((beta_cdf(x, a, b) - p).abs() < 1e-12, "a={a} b={b} p={p}");
            }
        }
        // The k = 2 closed form of the notes: r^2 = 1 - (1 - q)^(4/d).
        let d = 64.0;
        let q: f64 = 0.37;
        let beta = (2.0 / 4.0) * (d - 2.0 - 2.0) / 2.0 + 1.0;
        assert!((beta_inv(q, 1.0, beta) - (1.0 - (1.0 - q).powf(4.0 / d))).abs() < 1e-13);
    }

    #[test]
    fn probit_known_values() {
        assert!(probit(0.5).abs() < 1e-15);
        assert!((probit(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
        assert!((probit(0.001) + 3.090_232_306_167_814).abs() < 1e-12);
        assert!((probit(1e-10) + 6.361_340_902_404_056).abs() < 1e-10);
    }
}
