//! A small deterministic random number generator (SplitMix64 seeding, xoshiro256** stream) and a
//! Box-Muller Gaussian. Used only to build rotations from a seed, so that the same seed gives the
//! same rotation on every platform without a dependency.

/// SplitMix64 step: a good 64-bit mixer, also used to derive seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** generator.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// Seeds the generator from one `u64` through SplitMix64.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Xoshiro256 { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in the open interval (0, 1).
    pub fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal variate (Box-Muller, one of the pair).
    pub fn next_gaussian(&mut self) -> f64 {
        let u1 = self.next_open01();
        let u2 = self.next_open01();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniformly random sign, +1 or -1.
    pub fn next_sign(&mut self) -> f32 {
        if self.next_u64() >> 63 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// Blocks of `k` coordinates cut from uniformly random unit vectors of `R^d` (normalized
/// Gaussian vectors, in f64): the law of rotated blocks that the codebooks and search
/// structures are built for, `count` of them, from `seed`. For tests, examples and tuning.
pub fn unit_vector_blocks(d: usize, k: usize, count: usize, seed: u64) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_moments_are_standard() {
        let mut rng = Xoshiro256::new(7);
        let n = 200_000;
        let (mut s1, mut s2, mut s4) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let g = rng.next_gaussian();
            s1 += g;
            s2 += g * g;
            s4 += g * g * g * g;
        }
        let nf = n as f64;
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032, 4th moment
        // sqrt(96/n) = 0.022; allow about 5 standard errors.
        assert!((s1 / nf).abs() < 0.011);
        assert!((s2 / nf - 1.0).abs() < 0.016);
        assert!((s4 / nf - 3.0).abs() < 0.11);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Xoshiro256::new(42);
        let mut b = Xoshiro256::new(42);
        let mut c = Xoshiro256::new(43);
        let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }
}
