//! x86_64 AVX-512 (F, DQ) kernels: 16-lane versions of the scalar-code attention kernels, and
//! `k = 2` attention kernels that keep a codebook of up to 64 codewords in registers. A 512-bit
//! register holds two consecutive groups of 8 coordinates (even group in the low half, odd group
//! in the high half), which is exactly the even/odd accumulator order of
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

/// The horizontal sum of a 512-bit accumulator whose low and high halves are the even and odd
/// 8-lane accumulators of the 256-bit kernels, in their order ([`super::x86_64::finish_pair`]).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx2")]
fn finish_halves(acc: __m512) -> f32 {
    let even = _mm512_castps512_ps256(acc);
    let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    super::x86_64::finish_pair([even, odd])
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
        *o = finish_halves(acc);
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

// ---------------------------------------------------------------------------------------------
// `k = 2` codes of at most 64 codewords: codewords looked up in registers.

/// Most codewords of a `k = 2` codebook that [`pair_dots`] and [`pair_accumulate`] hold in
/// registers (two coordinates of 64 entries: eight 512-bit registers).
pub const PAIR_CODEWORDS: usize = 64;

/// The two coordinate tables of a `k = 2` codebook, 64 entries each (zero-padded): entries
/// `16 r..16 r + 16` of coordinate `c` in `tables[c][r]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_tables(codewords: &[f32]) -> [[__m512; 4]; 2] {
    let mut t = [[0f32; PAIR_CODEWORDS]; 2];
    for (c, cw) in codewords.chunks_exact(2).take(PAIR_CODEWORDS).enumerate() {
        t[0][c] = cw[0];
        t[1][c] = cw[1];
    }
    // SAFETY: each table holds 64 floats, so the four 16-float loads are in bounds.
    t.map(|tc| [0, 16, 32, 48].map(|o| unsafe { _mm512_loadu_ps(tc.as_ptr().add(o)) }))
}

/// `table[idx & 63]` per lane: two two-register permutes (index bits 0 to 4) and a blend on
/// bit 5.
#[inline]
#[target_feature(enable = "avx512f")]
fn lookup64(idx: __m512i, table: &[__m512; 4]) -> __m512 {
    let lo = _mm512_permutex2var_ps(table[0], idx, table[1]);
    let hi = _mm512_permutex2var_ps(table[2], idx, table[3]);
    let upper = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
    _mm512_mask_blend_ps(upper, lo, hi)
}

/// Permute controls that interleave two coordinate vectors into codeword order: blocks 0 to 7
/// (`lo`) and 8 to 15 (`hi`).
#[inline]
#[target_feature(enable = "avx512f")]
fn interleave_controls() -> (__m512i, __m512i) {
    (
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
    )
}

/// The 32 reconstruction values (before the norm) of the 16 blocks whose indices are `idx`, in
/// coordinate order: blocks 0 to 7 in the first register, 8 to 15 in the second.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_group(idx: __m512i, tables: &[[__m512; 4]; 2], ctrl: (__m512i, __m512i)) -> [__m512; 2] {
    let x0 = lookup64(idx, &tables[0]);
    let x1 = lookup64(idx, &tables[1]);
    [
        _mm512_permutex2var_ps(x0, ctrl.0, x1),
        _mm512_permutex2var_ps(x0, ctrl.1, x1),
    ]
}

/// [`pair_group`] of indices `16 s..16 s + 16` of `ids`, folded into the running maximum
/// `worst`.
///
/// # Safety
/// AVX-512 F; `ids` holds at least `16 s + 16` indices.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn row_group(
    ids: &[u32],
    s: usize,
    worst: &mut __m512i,
    tables: &[[__m512; 4]; 2],
    ctrl: (__m512i, __m512i),
) -> [__m512; 2] {
    // SAFETY: the caller guarantees the 16 indices.
    let idx = unsafe { _mm512_loadu_si512(ids.as_ptr().add(16 * s) as *const __m512i) };
    *worst = _mm512_max_epu32(*worst, idx);
    pair_group(idx, tables, ctrl)
}

/// Panics unless every lane of `worst` (a running maximum of indices) is below `n`.
#[inline]
#[target_feature(enable = "avx512f")]
fn check_worst(worst: __m512i, n: usize) {
    assert!(
        (_mm512_reduce_max_epu32(worst) as usize) < n,
        "block index out of range for a codebook of {n} codewords"
    );
}

/// `k = 2` scores with the codebook in registers: `out[i] = <q, concat_j C[rows[i][j]]>`,
/// bit-identical to [`super::portable::gather_dots`] with `K = 2` (a 512-bit accumulator's
/// halves are the even and odd 8-lane accumulators of the 256-bit kernels). Panics (after
/// computing) if an index is not below `codewords.len() / 2`.
///
/// # Safety
/// The CPU must support AVX-512 F, DQ and AVX2; `codewords.len() / 2 <= PAIR_CODEWORDS`; `q.len()`
/// is a multiple of 32 and equals twice the rows' block count.
#[target_feature(enable = "avx512f,avx512dq,avx2")]
pub unsafe fn pair_dots(
    q: &[f32],
    codewords: &[f32],
    rows: super::IndexRows<u32>,
    out: &mut [f32],
) {
    debug_assert!(q.len().is_multiple_of(32) && codewords.len() <= 2 * PAIR_CODEWORDS);
    debug_assert_eq!(q.len(), 2 * rows.blocks);
    let tables = pair_tables(codewords);
    let ctrl = interleave_controls();
    let mut worst = _mm512_setzero_si512();
    for (o, ids) in out.iter_mut().zip(rows.iter()) {
        let mut acc = _mm512_setzero_ps();
        for (s, q32) in q.chunks_exact(32).enumerate() {
            // SAFETY: rows hold `q.len() / 2` indices (the contract), so `16 s + 16` of them for
            // `s < q.len() / 32`; `q32` holds 32 floats.
            let ([a, b], qa, qb) = unsafe {
                (
                    row_group(ids, s, &mut worst, &tables, ctrl),
                    _mm512_loadu_ps(q32.as_ptr()),
                    _mm512_loadu_ps(q32.as_ptr().add(16)),
                )
            };
            acc = _mm512_add_ps(acc, _mm512_mul_ps(qa, a));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(qb, b));
        }
        *o = finish_halves(acc);
    }
    check_worst(worst, codewords.len() / 2);
}

/// `k = 2` weighted sum with the codebook in registers: `acc += sum_i w[i] * concat_j
/// C[rows[i][j]]`, four values per pass (`a + ((w0 c0 + w1 c1) + (w2 c2 + w3 c3))`), as
/// [`super::x86_64::codeword_accumulate_avx2`] and bit-identical to it and to
/// [`super::portable::gather_accumulate`]. Panics (after accumulating) if an index is not below
/// `codewords.len() / 2`.
///
/// # Safety
/// As [`pair_dots`], with `acc.len()` in place of `q.len()`.
#[target_feature(enable = "avx512f,avx512dq,avx2")]
pub unsafe fn pair_accumulate(
    w: &[f32],
    codewords: &[f32],
    rows: super::IndexRows<u32>,
    acc: &mut [f32],
) {
    debug_assert!(acc.len().is_multiple_of(32) && codewords.len() <= 2 * PAIR_CODEWORDS);
    debug_assert_eq!(acc.len(), 2 * rows.blocks);
    let tables = pair_tables(codewords);
    let ctrl = interleave_controls();
    let mut worst = _mm512_setzero_si512();
    let mut w4 = w.chunks_exact(4);
    let mut it = rows.iter();
    for w4 in w4.by_ref() {
        let (Some(i0), Some(i1), Some(i2), Some(i3)) = (it.next(), it.next(), it.next(), it.next())
        else {
            break;
        };
        let ws = [
            _mm512_set1_ps(w4[0]),
            _mm512_set1_ps(w4[1]),
            _mm512_set1_ps(w4[2]),
            _mm512_set1_ps(w4[3]),
        ];
        for (s, a32) in acc.chunks_exact_mut(32).enumerate() {
            // SAFETY: rows hold `acc.len() / 2` indices, so `16 s + 16` of them for `s <
            // acc.len() / 32`.
            let (c0, c1, c2, c3) = unsafe {
                (
                    row_group(i0, s, &mut worst, &tables, ctrl),
                    row_group(i1, s, &mut worst, &tables, ctrl),
                    row_group(i2, s, &mut worst, &tables, ctrl),
                    row_group(i3, s, &mut worst, &tables, ctrl),
                )
            };
            for h in 0..2 {
                let s01 = _mm512_add_ps(_mm512_mul_ps(ws[0], c0[h]), _mm512_mul_ps(ws[1], c1[h]));
                let s23 = _mm512_add_ps(_mm512_mul_ps(ws[2], c2[h]), _mm512_mul_ps(ws[3], c3[h]));
                // SAFETY: `a32` holds 32 floats.
                unsafe {
                    let p = a32.as_mut_ptr().add(16 * h);
                    _mm512_storeu_ps(
                        p,
                        _mm512_add_ps(_mm512_loadu_ps(p), _mm512_add_ps(s01, s23)),
                    );
                }
            }
        }
    }
    for (&wi, ids) in w4.remainder().iter().zip(it) {
        let wv = _mm512_set1_ps(wi);
        for (s, a32) in acc.chunks_exact_mut(32).enumerate() {
            // SAFETY: as above.
            let c = unsafe { row_group(ids, s, &mut worst, &tables, ctrl) };
            for (h, ch) in c.iter().enumerate() {
                // SAFETY: `a32` holds 32 floats.
                unsafe {
                    let p = a32.as_mut_ptr().add(16 * h);
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), _mm512_mul_ps(wv, *ch)));
                }
            }
        }
    }
    check_worst(worst, codewords.len() / 2);
}
