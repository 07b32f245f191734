//! x86_64 AVX2 kernels. Each performs exactly the floating-point operations of its portable
//! counterpart, in the same order, so results are bit-identical (tests check this).

use std::arch::x86_64::*;

/// AVX2 version of [`super::portable::nearest_lanes`].
///
/// # Safety
/// The CPU must support AVX2. `lanes.len()` must be `groups * k * 8`, `norms.len()` `groups * 8`
/// and `x.len() >= k`.
#[target_feature(enable = "avx2")]
pub unsafe fn nearest_lanes_avx2(
    lanes: &[f32],
    norms: &[f32],
    k: usize,
    x: &[f32],
) -> ([f32; 8], [u32; 8]) {
    let groups = norms.len() / 8;
    debug_assert_eq!(lanes.len(), groups * k * 8);
    debug_assert!(x.len() >= k);
    let mut best = _mm256_set1_ps(f32::INFINITY);
    let mut best_group = _mm256_setzero_si256();
    let two = _mm256_set1_ps(2.0);
    let lp = lanes.as_ptr();
    let np = norms.as_ptr();
    for g in 0..groups {
        let mut acc = _mm256_setzero_ps();
        for (j, &xj) in x.iter().enumerate().take(k) {
            // SAFETY: (g * k + j) * 8 + 8 <= groups * k * 8 = lanes.len().
            let row = unsafe { _mm256_loadu_ps(lp.add((g * k + j) * 8)) };
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(xj), row));
        }
        // SAFETY: g * 8 + 8 <= norms.len().
        let n = unsafe { _mm256_loadu_ps(np.add(g * 8)) };
        let s = _mm256_sub_ps(n, _mm256_mul_ps(two, acc));
        let better = _mm256_cmp_ps::<_CMP_LT_OQ>(s, best);
        best = _mm256_blendv_ps(best, s, better);
        best_group = _mm256_blendv_epi8(
            best_group,
            _mm256_set1_epi32(g as i32),
            _mm256_castps_si256(better),
        );
    }
    let mut out_s = [0f32; 8];
    let mut out_g = [0u32; 8];
    // SAFETY: both arrays hold 8 32-bit values.
    unsafe {
        _mm256_storeu_ps(out_s.as_mut_ptr(), best);
        _mm256_storeu_si256(out_g.as_mut_ptr() as *mut __m256i, best_group);
    }
    (out_s, out_g)
}

/// AVX2 fast Walsh-Hadamard transform, bit-identical to [`super::portable::fwht`].
///
/// # Safety
/// The CPU must support AVX2; `v.len()` must be a power of two and at least 8.
#[target_feature(enable = "avx2")]
pub unsafe fn fwht_avx2(v: &mut [f32]) {
    let n = v.len();
    debug_assert!(n >= 8 && n.is_power_of_two());
    let p = v.as_mut_ptr();
    // Stages h = 1, 2, 4 inside each register of 8.
    for i in (0..n).step_by(8) {
        // SAFETY: i + 8 <= n.
        let mut r = unsafe { _mm256_loadu_ps(p.add(i)) };
        // h = 1: pairs (0,1), (2,3), ...: even lanes x + y, odd lanes x - y.
        let s = _mm256_permute_ps::<0b1011_0001>(r);
        r = _mm256_blend_ps::<0b1010_1010>(_mm256_add_ps(r, s), _mm256_sub_ps(s, r));
        // h = 2.
        let s = _mm256_permute_ps::<0b0100_1110>(r);
        r = _mm256_blend_ps::<0b1100_1100>(_mm256_add_ps(r, s), _mm256_sub_ps(s, r));
        // h = 4: swap the 128-bit halves.
        let s = _mm256_permute2f128_ps::<1>(r, r);
        r = _mm256_blend_ps::<0b1111_0000>(_mm256_add_ps(r, s), _mm256_sub_ps(s, r));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(p.add(i), r) };
    }
    let mut h = 8;
    while h < n {
        for start in (0..n).step_by(2 * h) {
            for i in (start..start + h).step_by(8) {
                // SAFETY: i + h + 8 <= start + 2h <= n.
                unsafe {
                    let a = _mm256_loadu_ps(p.add(i));
                    let b = _mm256_loadu_ps(p.add(i + h));
                    _mm256_storeu_ps(p.add(i), _mm256_add_ps(a, b));
                    _mm256_storeu_ps(p.add(i + h), _mm256_sub_ps(a, b));
                }
            }
        }
        h *= 2;
    }
}
