//! Dispatchers of the rotation kernels: dense rotations and the fast Walsh-Hadamard
//! transform ([`crate::codec::rotation`] uses them).

use super::{portable, usable, Isa};
#[cfg(target_arch = "x86_64")]
use super::x86_64;

/// Dense rotation `out = M x` (row-major `dim x dim`, see [`portable::dense_rotate`]). Panics
/// unless the lengths fit.
pub fn dense_rotate(isa: Isa, matrix: &[f32], dim: usize, x: &[f32], out: &mut [f32]) {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned `Isa::Avx2` or up, so AVX2 was detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_64::dense_rotate_avx2(matrix, dim, x, out) },
        _ => portable::dense_rotate(matrix, dim, x, out),
    }
}

/// Transposed dense rotation `out = M^T y` (see [`portable::dense_rotate_transposed`]). Panics
/// unless the lengths fit.
pub fn dense_rotate_transposed(isa: Isa, matrix: &[f32], dim: usize, y: &[f32], out: &mut [f32]) {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned `Isa::Avx2` or up, so AVX2 was detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::dense_rotate_transposed_avx2(matrix, dim, y, out)
        },
        _ => portable::dense_rotate_transposed(matrix, dim, y, out),
    }
}

/// In-place unnormalized fast Walsh-Hadamard transform. Panics unless `v.len()` is a power of two
/// (or zero).
#[inline]
pub fn fwht(isa: Isa, v: &mut [f32]) {
    assert!(
        v.is_empty() || v.len().is_power_of_two(),
        "the Walsh-Hadamard transform needs a power-of-two length, got {}",
        v.len()
    );
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 if v.len() >= 8 => unsafe { x86_64::fwht_avx2(v) },
        _ => portable::fwht(v),
    }
}
