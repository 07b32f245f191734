//! x86_64 AVX-512 (F, DQ) kernels: 16-lane versions of the scalar-code attention kernels. A
//! 512-bit register holds two consecutive groups of 8 coordinates (even group in the low half,
//! odd group in the high half), which is exactly the even/odd accumulator order of
//! [`super::portable::dot_lanes`], so results are bit-identical to the portable and AVX2 paths
//! (tests check this). With 16 levels in one register, 4-bit codes need no blend.

use super::x86_64::group_word;
use std::arch::x86_64::*;

/// The 16 levels (before the norm) of index groups `2h` and `2h + 1` of a scalar-code slot.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn scalar_pair<const BITS: u32>(
    packed: &[u8],
    h: usize,
    levels: __m512,
    shifts: __m512i,
    mask: __m512i,
) -> __m512 {
    let b = BITS as usize;
    let v = _mm512_inserti32x8::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi32(group_word(packed, 2 * h * b, b))),
        _mm256_set1_epi32(group_word(packed, (2 * h + 1) * b, b)),
    );
    let idx = _mm512_and_si512(_mm512_srlv_epi32(v, shifts), mask);
    _mm512_permutexvar_ps(idx, levels)
}

/// Per-lane shifts `[0, b, .., 7b, 0, b, .., 7b]` and the index mask.
#[inline]
#[target_feature(enable = "avx512f")]
fn shifts_and_mask<const BITS: u32>() -> (__m512i, __m512i) {
    let b = BITS as i32;
    let shifts = _mm512_setr_epi32(
        0,
        b,
        2 * b,
        3 * b,
        4 * b,
        5 * b,
        6 * b,
        7 * b,
        0,
        b,
        2 * b,
        3 * b,
        4 * b,
        5 * b,
        6 * b,
        7 * b,
    );
    (shifts, _mm512_set1_epi32((1 << BITS) - 1))
}

/// Scalar (`k = 1`) code scores, 16 coordinates per step: `out[i] = <q, C[idx_i]>`,
/// bit-identical to [`super::portable::gather_dots`] with `K = 1`.
///
/// # Safety
/// The CPU must support AVX-512 F and DQ. `BITS` is 1 to 4, `levels` holds the `2^BITS` levels
/// padded to 16, `q.len()` is a multiple of 16 and each slot holds
/// `offset + q.len() * BITS / 8` bytes.
#[target_feature(enable = "avx512f,avx512dq,avx2")]
pub unsafe fn scalar_dots<const BITS: u32>(
    levels: &[f32; 16],
    q: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    debug_assert!(q.len().is_multiple_of(16) && (1..=4).contains(&BITS));
    // SAFETY: `levels` holds 16 floats.
    let lv = unsafe { _mm512_loadu_ps(levels.as_ptr()) };
    let (shifts, mask) = shifts_and_mask::<BITS>();
    for (i, o) in out.iter_mut().enumerate() {
        // Indices from this slot to the end of `slots`: word loads may run into the next slot.
        let Some(packed) = slots.get(i * slot_bytes + offset..) else {
            return;
        };
        let mut acc = _mm512_setzero_ps();
        for (h, q16) in q.chunks_exact(16).enumerate() {
            // SAFETY: `q16` holds 16 floats.
            let qv = unsafe { _mm512_loadu_ps(q16.as_ptr()) };
            let c = scalar_pair::<BITS>(packed, h, lv, shifts, mask);
            acc = _mm512_add_ps(acc, _mm512_mul_ps(qv, c));
        }
        let even = _mm512_castps512_ps256(acc);
        let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
        *o = super::x86_64::finish_pair([even, odd]);
    }
}

/// Scalar (`k = 1`) code weighted sum, 16 coordinates per step: `acc += sum_i w[i] * C[idx_i]`,
/// two values per pass (`(a + w0 c0) + w1 c1`, the roundings of two passes); bit-identical to
/// [`super::portable::gather_accumulate`] with `K = 1`.
///
/// # Safety
/// As [`scalar_dots`], with `acc.len()` in place of `q.len()`.
#[target_feature(enable = "avx512f,avx512dq,avx2")]
pub unsafe fn scalar_accumulate<const BITS: u32>(
    levels: &[f32; 16],
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    acc: &mut [f32],
) {
    debug_assert!(acc.len().is_multiple_of(16) && (1..=4).contains(&BITS));
    // SAFETY: `levels` holds 16 floats.
    let lv = unsafe { _mm512_loadu_ps(levels.as_ptr()) };
    let (shifts, mask) = shifts_and_mask::<BITS>();
    let view = |i: usize| slots.get(i * slot_bytes + offset..).unwrap_or(&[]);
    let mut w2 = w.chunks_exact(2);
    for (p, w2) in w2.by_ref().enumerate() {
        let (p0, p1) = (view(2 * p), view(2 * p + 1));
        let (w0, w1) = (_mm512_set1_ps(w2[0]), _mm512_set1_ps(w2[1]));
        for (h, a16) in acc.chunks_exact_mut(16).enumerate() {
            let c0 = scalar_pair::<BITS>(p0, h, lv, shifts, mask);
            let c1 = scalar_pair::<BITS>(p1, h, lv, shifts, mask);
            // SAFETY: `a16` holds 16 floats.
            unsafe {
                let a = _mm512_add_ps(_mm512_loadu_ps(a16.as_ptr()), _mm512_mul_ps(w0, c0));
                _mm512_storeu_ps(a16.as_mut_ptr(), _mm512_add_ps(a, _mm512_mul_ps(w1, c1)));
            }
        }
    }
    let done = w.len() - w2.remainder().len();
    for (i, &wi) in w2.remainder().iter().enumerate() {
        let packed = view(done + i);
        let wv = _mm512_set1_ps(wi);
        for (h, a16) in acc.chunks_exact_mut(16).enumerate() {
            let c = scalar_pair::<BITS>(packed, h, lv, shifts, mask);
            // SAFETY: `a16` holds 16 floats.
            unsafe {
                let a = _mm512_loadu_ps(a16.as_ptr());
                _mm512_storeu_ps(a16.as_mut_ptr(), _mm512_add_ps(a, _mm512_mul_ps(wv, c)));
            }
        }
    }
}
