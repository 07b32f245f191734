//! Compute kernels behind the codec, with runtime CPU feature dispatch.
//!
//! Every kernel has a portable implementation in [`portable`] (the reference; written so that the
//! compiler vectorizes it for the baseline target, which on aarch64 means NEON) and, on x86_64, an
//! AVX2 implementation in [`x86_64`] (hand-written intrinsics, or the portable body compiled
//! with AVX2 enabled) chosen at run time, plus AVX-512 versions in [`avx512`] where they measured
//! faster. The SIMD kernels perform the same floating-point operations in the same order as the
//! portable ones (no fused multiply-add), so they return bit-identical results: codebooks
//! generated on any x86_64 machine are byte-identical, and the tests compare every path the CPU
//! supports ([`supported`]) for exact equality.
//!
//! The attention kernels follow the data: [`norms_f16`] (norms of a chunk of slots), then the
//! indices, read in place ([`IndexRows`] over the slot bytes, 8- and 16-bit codes) or unpacked
//! ([`unpack_slots`]), then [`table_dots`], [`gather_dots`] / [`gather_accumulate`], or the
//! in-register scalar-code kernels [`scalar_dots`] / [`scalar_accumulate`]. Codes whose indices
//! fill whole bytes skip the indices altogether: [`byte_table_dots`] and [`byte_histogram`] work
//! on the index bytes of the slots.
//!
//! There is no hand-written NEON module: this project's machines cannot compile or test aarch64
//! code, and NEON is part of the aarch64 baseline, so the portable kernels are vectorized with it
//! by the compiler.

mod attend;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod portable;
mod rotate;
mod search;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use attend::*;
pub use rotate::*;
pub use search::*;

/// Largest vector the kernels' stack scratch buffers hold, and so the codec's largest head dim.
pub const MAX_DIM: usize = 512;

/// Codewords per group of the lane layouts that the search kernels scan (coordinate `j` of a
/// group's codewords is contiguous, so their distances are computed in independent lanes).
pub const LANES: usize = 8;

/// Which implementation the dispatcher picked. Ordered from the portable one up. Every
/// dispatcher below lowers an `Isa` this CPU lacks to the best one it has, so passing any value
/// is safe (only the `unsafe` kernels in the per-architecture modules trust their caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (auto-vectorized for the compile target's baseline).
    Portable,
    /// x86_64 AVX2 (with F16C and POPCNT, which every AVX2 CPU has).
    Avx2,
    /// x86_64 AVX-512 (F, DQ, BW, VL) on top of AVX2: 512-bit versions of the scalar-code
    /// attention kernels and of the `k = 2` ones (codebooks of up to 64 codewords in registers);
    /// every other kernel uses its AVX2 version.
    Avx512,
}

/// The best implementation this CPU supports. `FIBQUANT_ISA=portable`, `avx2` or `avx512` caps
/// the choice (for comparisons; `FIBQUANT_FORCE_PORTABLE=1` is the same as `portable`).
pub fn detect() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var("FIBQUANT_ISA").unwrap_or_default().as_str() {
            "portable" => Isa::Portable,
            "avx2" => Isa::Avx2,
            _ => Isa::Avx512,
        };
        if std::env::var_os("FIBQUANT_FORCE_PORTABLE").is_some_and(|v| v != "0") {
            return Isa::Portable;
        }
        usable(cap)
    })
}

/// `isa`, or the best implementation this CPU has if it lacks `isa` (the hardware's limit, not
/// the `FIBQUANT_ISA` cap, so that tests can compare every supported path).
#[inline]
pub(crate) fn usable(isa: Isa) -> Isa {
    use std::sync::OnceLock;
    static BEST: OnceLock<Isa> = OnceLock::new();
    isa.min(*BEST.get_or_init(|| supported().into_iter().max().unwrap_or(Isa::Portable)))
}

/// Every implementation this CPU can run, from the portable one up (what tests compare).
pub fn supported() -> Vec<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let mut v = vec![Isa::Portable];
        if has!("avx2") && has!("f16c") && has!("popcnt") {
            v.push(Isa::Avx2);
            if has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl") {
                v.push(Isa::Avx512);
            }
        }
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    vec![Isa::Portable]
}

