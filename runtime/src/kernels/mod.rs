//! Compute kernels behind the codec, with runtime CPU feature dispatch.
//!
//! Every kernel has a portable implementation in [`portable`] (the reference; written so that the
//! compiler vectorizes it for the baseline target, which on aarch64 means NEON) and, on x86_64, an
//! AVX2 implementation in [`x86_64`] chosen at run time when the CPU has AVX2. The AVX2 kernels
//! perform the same floating-point operations in the same order as the portable ones (no fused
//! multiply-add), so they return bit-identical results: codebooks generated on any x86_64 machine
//! are byte-identical, and the tests compare the paths for exact equality.
//!
//! There is no hand-written NEON module: this project's machines cannot compile or test aarch64
//! code, and NEON is part of the aarch64 baseline, so the portable kernels are vectorized with it
//! by the compiler.

pub mod portable;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

/// Which implementation the dispatcher picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (auto-vectorized for the compile target's baseline).
    Portable,
    /// x86_64 AVX2.
    Avx2,
}

/// The best implementation this CPU supports. Set `FIBQUANT_FORCE_PORTABLE=1` to force the
/// portable kernels (for comparisons).
pub fn detect() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var_os("FIBQUANT_FORCE_PORTABLE").is_some_and(|v| v != "0") {
            return Isa::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

/// Nearest codeword in a lane-grouped layout (see [`crate::codebook::SearchIndex`]): returns, for
/// each of the `LANES` lanes, the best score and the group it came from.
#[inline]
pub fn nearest_lanes(
    isa: Isa,
    lanes: &[f32],
    norms: &[f32],
    k: usize,
    x: &[f32],
) -> ([f32; 8], [u32; 8]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `detect` after checking AVX2 is available.
        Isa::Avx2 => unsafe { x86_64::nearest_lanes_avx2(lanes, norms, k, x) },
        _ => portable::nearest_lanes(lanes, norms, k, x),
    }
}

/// In-place unnormalized fast Walsh-Hadamard transform (`v.len()` a power of two).
#[inline]
pub fn fwht(isa: Isa, v: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `detect` after checking AVX2 is available.
        Isa::Avx2 if v.len() >= 8 => unsafe { x86_64::fwht_avx2(v) },
        _ => portable::fwht(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Xoshiro256;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push(Isa::Avx2);
        } else {
            eprintln!("AVX2 not available: only the portable kernels are tested");
        }
        v
    }

    #[test]
    fn every_fwht_path_is_bit_identical_to_portable() {
        let mut rng = Xoshiro256::new(1);
        for log in 0..=12 {
            let n = 1usize << log;
            let x: Vec<f32> = (0..n).map(|_| rng.next_gaussian() as f32).collect();
            let mut want = x.clone();
            portable::fwht(&mut want);
            for isa in isas() {
                let mut got = x.clone();
                fwht(isa, &mut got);
                assert_eq!(got, want, "{isa:?} n={n}");
            }
        }
    }

    #[test]
    fn every_nearest_path_is_bit_identical_to_portable() {
        let mut rng = Xoshiro256::new(2);
        for k in [1, 2, 3, 4, 8, 16] {
            for groups in [1, 2, 5, 64] {
                let lanes: Vec<f32> = (0..groups * k * 8)
                    .map(|_| rng.next_gaussian() as f32)
                    .collect();
                let mut norms: Vec<f32> =
                    (0..groups * 8).map(|_| rng.next_open01() as f32).collect();
                norms[groups * 8 - 1] = f32::INFINITY; // padding lane
                for _ in 0..50 {
                    let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
                    let want = portable::nearest_lanes(&lanes, &norms, k, &x);
                    for isa in isas() {
                        assert_eq!(
                            nearest_lanes(isa, &lanes, &norms, k, &x),
                            want,
                            "{isa:?} k={k}"
                        );
                    }
                }
            }
        }
    }
}
