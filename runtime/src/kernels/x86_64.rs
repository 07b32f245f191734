//! x86_64 AVX2 kernels. Each performs exactly the floating-point operations of its portable
//! counterpart, in the same order, so results are bit-identical (tests check this).

use super::portable::{IndexCell, IndexRows};
use std::arch::x86_64::*;

/// AVX2 version of [`super::portable::nearest_lanes`].
///
/// # Safety
/// The CPU must support AVX2. Panics unless `lanes.len() >= groups * k * 8`, where `groups =
/// norms.len() / 8`; a shorter `x` uses its first `x.len()` coordinates, as the portable kernel.
#[target_feature(enable = "avx2")]
pub unsafe fn nearest_lanes_avx2(
    lanes: &[f32],
    norms: &[f32],
    k: usize,
    x: &[f32],
) -> ([f32; 8], [u32; 8]) {
    let groups = norms.len() / 8;
    // The loads below rely on this (checked in release builds too: the function is reachable
    // from the safe dispatcher with any `k`).
    assert!(
        groups
            .checked_mul(k)
            .and_then(|v| v.checked_mul(8))
            .is_some_and(|v| lanes.len() >= v),
        "lane layout shorter than its norms"
    );
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

/// A `K`-coordinate query broadcast once, scoring lane groups of codewords as every fixed-`K`
/// search kernel does (the operations of the portable `group_scores`, in its order).
#[derive(Clone, Copy)]
struct LaneQuery<const K: usize> {
    xs: [__m256; K],
    two: __m256,
}

impl<const K: usize> LaneQuery<K> {
    /// Broadcasts `x[..K]` (`x.len() >= K`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(x: &[f32]) -> LaneQuery<K> {
        assert!(x.len() >= K);
        let mut xs = [_mm256_setzero_ps(); K];
        for (v, &xj) in xs.iter_mut().zip(x) {
            *v = _mm256_set1_ps(xj);
        }
        LaneQuery {
            xs,
            two: _mm256_set1_ps(2.0),
        }
    }

    /// Scores `||c||^2 - 2 <x, c>` of the 8 codewords of group `g` of a lane layout: `lanes`
    /// holds `K` rows of 8 coordinates per group, `norms` 8 squared norms per group.
    ///
    /// # Safety
    /// AVX2; `lanes` holds at least `(g + 1) * K * 8` floats and `norms` `(g + 1) * 8` (no
    /// bounds check: this is the inner loop of every search).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn score(&self, lanes: &[f32], norms: &[f32], g: usize) -> __m256 {
        debug_assert!(lanes.len() >= (g + 1) * K * 8 && norms.len() >= (g + 1) * 8);
        let mut acc = _mm256_setzero_ps();
        for (j, xj) in self.xs.iter().enumerate() {
            // SAFETY: the caller guarantees `(g + 1) * K * 8` floats and j < K.
            let row = unsafe { _mm256_loadu_ps(lanes.as_ptr().add((g * K + j) * 8)) };
            acc = _mm256_add_ps(acc, _mm256_mul_ps(*xj, row));
        }
        // SAFETY: the caller guarantees `(g + 1) * 8` norms.
        let n = unsafe { _mm256_loadu_ps(norms.as_ptr().add(g * 8)) };
        _mm256_sub_ps(n, _mm256_mul_ps(self.two, acc))
    }
}

/// [`nearest_lanes_avx2`] for a block size `K` known at compile time: the query's coordinates
/// are broadcast once, the running minimum is kept with `vminps` (which returns its second
/// operand on ties and NaN, exactly like the compare-and-blend it replaces), and only the group
/// index needs a blend. Same operations in the same order as the portable kernel: bit-identical.
///
/// # Safety
/// The CPU must support AVX2. `lanes.len()` must be `groups * K * 8`, `norms.len()` `groups * 8`
/// and `x.len() >= K`.
#[target_feature(enable = "avx2")]
pub unsafe fn nearest_lanes_fixed_avx2<const K: usize>(
    lanes: &[f32],
    norms: &[f32],
    x: &[f32],
) -> ([f32; 8], [u32; 8]) {
    let groups = norms.len() / 8;
    assert!(lanes.len() >= groups * K * 8);
    let query = LaneQuery::<K>::new(x);
    // SAFETY (every call): `rows` and `n8` are whole chunks of `K * 8` and 8 floats.
    let score = |rows: &[f32], n8: &[f32]| unsafe { query.score(rows, n8, 0) };
    // Two running minima, over even and over odd groups, so that consecutive groups do not wait
    // on each other's minimum; merged at the end keeping the lower group on ties, which is what
    // one sequential scan keeps.
    let mut best = [_mm256_set1_ps(f32::INFINITY); 2];
    let mut best_group = [_mm256_setzero_si256(); 2];
    let mut group = [_mm256_setzero_si256(), _mm256_set1_epi32(1)];
    let step = _mm256_set1_epi32(2);
    let mut pairs = lanes[..groups * K * 8]
        .chunks_exact(2 * K * 8)
        .zip(norms.chunks_exact(16));
    for (rows, n16) in pairs.by_ref() {
        for h in 0..2 {
            let s = score(&rows[h * K * 8..(h + 1) * K * 8], &n16[h * 8..h * 8 + 8]);
            let better = _mm256_cmp_ps::<_CMP_LT_OQ>(s, best[h]);
            best[h] = _mm256_min_ps(s, best[h]);
            best_group[h] =
                _mm256_blendv_epi8(best_group[h], group[h], _mm256_castps_si256(better));
            group[h] = _mm256_add_epi32(group[h], step);
        }
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        let s = score(&lanes[g * K * 8..(g + 1) * K * 8], &norms[g * 8..g * 8 + 8]);
        let better = _mm256_cmp_ps::<_CMP_LT_OQ>(s, best[0]);
        best[0] = _mm256_min_ps(s, best[0]);
        best_group[0] = _mm256_blendv_epi8(best_group[0], group[0], _mm256_castps_si256(better));
    }
    // Merge: the odd-group minimum wins if strictly smaller, or equal with a lower group.
    let odd_smaller = _mm256_cmp_ps::<_CMP_LT_OQ>(best[1], best[0]);
    let tie = _mm256_cmp_ps::<_CMP_EQ_OQ>(best[1], best[0]);
    let lower = _mm256_cmpgt_epi32(best_group[0], best_group[1]);
    let take_odd = _mm256_or_si256(
        _mm256_castps_si256(odd_smaller),
        _mm256_and_si256(_mm256_castps_si256(tie), lower),
    );
    let best_s = _mm256_blendv_ps(best[0], best[1], _mm256_castsi256_ps(take_odd));
    let best_g = _mm256_blendv_epi8(best_group[0], best_group[1], take_odd);
    let mut out_s = [0f32; 8];
    let mut out_g = [0u32; 8];
    // SAFETY: both arrays hold 8 32-bit values.
    unsafe {
        _mm256_storeu_ps(out_s.as_mut_ptr(), best_s);
        _mm256_storeu_si256(out_g.as_mut_ptr() as *mut __m256i, best_g);
    }
    (out_s, out_g)
}

/// [`super::portable::nearest_ids`] for a block size `K` known at compile time, with two
/// running minima (groups alternate between them) merged at the end: each lane's lowest
/// `(score, id)` pair does not depend on the order, so the result is the portable kernel's bit
/// for bit.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn nearest_ids_fixed_avx2<const K: usize>(
    list: super::portable::IdLanes<'_>,
    x: &[f32],
    ranges: &[(u32, u32)],
    best: &mut super::portable::LaneBest,
) {
    let super::portable::IdLanes { lanes, norms, ids } = list;
    let groups = norms.len() / 8;
    assert!(lanes.len() >= groups * K * 8 && ids.len() >= groups * 8);
    let query = LaneQuery::<K>::new(x);
    // Unsigned comparison of ids through a signed one on biased values.
    let bias = _mm256_set1_epi32(i32::MIN);
    // `b` takes `(s, id)` lane by lane where `s < b.0`, or `s == b.0` and `id < b.1`.
    let merge = |b: &mut (__m256, __m256i), s: __m256, id: __m256i| {
        let lower_id = _mm256_cmpgt_epi32(_mm256_xor_si256(b.1, bias), _mm256_xor_si256(id, bias));
        let tie = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(s, b.0));
        let less = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(s, b.0));
        let better = _mm256_or_si256(less, _mm256_and_si256(tie, lower_id));
        b.0 = _mm256_blendv_ps(b.0, s, _mm256_castsi256_ps(better));
        b.1 = _mm256_blendv_epi8(b.1, id, better);
    };
    let score = |g: usize| {
        assert!(g < groups, "group {g} out of range");
        // SAFETY: `g < groups`, so `lanes`, `norms` and `ids` hold group `g` (asserted above).
        unsafe {
            let s = query.score(lanes, norms, g);
            let id = _mm256_loadu_si256(ids.as_ptr().add(g * 8) as *const __m256i);
            (s, id)
        }
    };
    // SAFETY: `LaneBest` holds 8 f32 and 8 u32.
    let mut even = unsafe {
        (
            _mm256_loadu_ps(best.scores.as_ptr()),
            _mm256_loadu_si256(best.ids.as_ptr() as *const __m256i),
        )
    };
    let mut odd = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_epi32(-1));
    for &(start, end) in ranges {
        let (mut g, end) = (start as usize, end as usize);
        while g + 1 < end {
            let (s, id) = score(g);
            merge(&mut even, s, id);
            let (s, id) = score(g + 1);
            merge(&mut odd, s, id);
            g += 2;
        }
        if g < end {
            let (s, id) = score(g);
            merge(&mut even, s, id);
        }
    }
    merge(&mut even, odd.0, odd.1);
    // SAFETY: as above.
    unsafe {
        _mm256_storeu_ps(best.scores.as_mut_ptr(), even.0);
        _mm256_storeu_si256(best.ids.as_mut_ptr() as *mut __m256i, even.1);
    }
}

/// [`super::portable::ball_marks`], four balls per step in f64 (the same operations in the
/// same order, so the same marks).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn ball_marks_avx2(
    scores: &[f32],
    radii: &[f64],
    x_sq: f64,
    err: f64,
    t: f64,
    scale: f64,
) -> [u64; 4] {
    let n = scores.len().min(radii.len()).min(256);
    let (vx, verr, vt, vscale) = (
        _mm256_set1_pd(x_sq),
        _mm256_set1_pd(err),
        _mm256_set1_pd(t),
        _mm256_set1_pd(scale),
    );
    let mut marks = [0u64; 4];
    let whole = n / 4 * 4;
    for j in (0..whole).step_by(4) {
        // SAFETY: `j + 4 <= n`, within both slices.
        let (s, radius) = unsafe {
            (
                _mm256_cvtps_pd(_mm_loadu_ps(scores.as_ptr().add(j))),
                _mm256_loadu_pd(radii.as_ptr().add(j)),
            )
        };
        let dist_sq = _mm256_sub_pd(_mm256_add_pd(vx, s), verr);
        let r = _mm256_add_pd(radius, vt);
        let reach = _mm256_mul_pd(_mm256_mul_pd(r, r), vscale);
        let bits = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_LE_OQ>(dist_sq, reach)) as u64;
        marks[j / 64] |= bits << (j % 64);
    }
    if whole < n {
        let tail =
            super::portable::ball_marks(&scores[whole..n], &radii[whole..n], x_sq, err, t, scale);
        // The tail holds fewer than 4 balls, all in word 0 of its own marks.
        marks[whole / 64] |= tail[0] << (whole % 64);
    }
    marks
}

/// [`super::portable::lane_scores`] for a block size `K` known at compile time, one group of
/// 8 codewords per step with the query's coordinates broadcast once (bit-identical: the same
/// operations in the same order).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn lane_scores_fixed_avx2<const K: usize>(
    lanes: &[f32],
    norms: &[f32],
    x: &[f32],
    out: &mut [f32],
) {
    let groups = out.len().div_ceil(8);
    assert!(lanes.len() >= groups * K * 8 && norms.len() >= groups * 8);
    let query = LaneQuery::<K>::new(x);
    for (g, o) in out.chunks_mut(8).enumerate() {
        // SAFETY: `g < groups`, within the lengths asserted above.
        let s = unsafe { query.score(lanes, norms, g) };
        if o.len() == 8 {
            // SAFETY: `o` holds 8 floats.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), s) };
        } else {
            let mut full = [0f32; 8];
            // SAFETY: `full` holds 8 floats.
            unsafe { _mm256_storeu_ps(full.as_mut_ptr(), s) };
            o.copy_from_slice(&full[..o.len()]);
        }
    }
}

/// [`super::portable::lane_scores`] compiled for AVX2 (bit-identical).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn lane_scores_avx2(lanes: &[f32], norms: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    super::portable::lane_scores(lanes, norms, k, x, out)
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

// ---------------------------------------------------------------------------------------------
// Attention on codes.

/// [`super::portable::unpack_slots`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn unpack_slots_avx2<const BITS: u32>(
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    blocks: usize,
    out: &mut [u32],
) {
    super::portable::unpack_slots::<BITS>(slots, slot_bytes, offset, blocks, out)
}

/// [`super::portable::table_dots`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn table_dots_avx2<T: IndexCell>(
    table: &[f32],
    n: usize,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    super::portable::table_dots(table, n, rows, out)
}

/// [`super::portable::byte_table_dots`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn byte_table_dots_avx2(
    table: &[[f32; 256]],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    super::portable::byte_table_dots(table, slots, slot_bytes, offset, out)
}

/// [`super::portable::byte_histogram`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn byte_histogram_avx2(
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    hist: &mut [[f32; 256]],
) {
    super::portable::byte_histogram(w, slots, slot_bytes, offset, hist)
}

/// [`super::portable::gather_dots`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn gather_dots_avx2<const K: usize, T: IndexCell>(
    q: &[f32],
    codewords: &[f32],
    k: usize,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    super::portable::gather_dots::<K, T>(q, codewords, k, rows, out)
}

/// [`super::portable::gather_accumulate`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn gather_accumulate_avx2<const K: usize, T: IndexCell>(
    w: &[f32],
    codewords: &[f32],
    k: usize,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    super::portable::gather_accumulate::<K, T>(w, codewords, k, rows, acc)
}

/// The 32-bit little-endian word at byte `at` of `packed` (a view that may run past the slot),
/// or, near the end of `packed`, the `b` bytes of the group zero-extended: one 4-byte load (a
/// broadcast straight from memory) in the common case; the bytes past the group's are shifted
/// and masked away by the callers.
#[inline(always)]
pub(crate) fn group_word(packed: &[u8], at: usize, b: usize) -> i32 {
    match packed.get(at..at + 4) {
        Some(w) => i32::from_le_bytes(w.try_into().unwrap()),
        None => {
            let mut w = [0u8; 4];
            w[..b].copy_from_slice(&packed[at..at + b]);
            i32::from_le_bytes(w)
        }
    }
}

/// The 8 scalar-code reconstruction values (before the norm) of index group `g` of a slot whose
/// indices start at `packed`: 8 indices of `BITS <= 4` bits are `BITS` whole bytes, unpacked in
/// register with variable shifts and looked up with `vpermps` (two and a blend for 16 levels).
#[inline]
#[target_feature(enable = "avx2")]
fn scalar_group<const BITS: u32>(packed: &[u8], g: usize, lo: __m256, hi: __m256) -> __m256 {
    let b = BITS as usize;
    let w = group_word(packed, g * b, b);
    let shifts = _mm256_setr_epi32(
        0,
        BITS as i32,
        2 * BITS as i32,
        3 * BITS as i32,
        4 * BITS as i32,
        5 * BITS as i32,
        6 * BITS as i32,
        7 * BITS as i32,
    );
    let idx = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(w), shifts),
        _mm256_set1_epi32((1 << BITS) - 1),
    );
    let c = _mm256_permutevar8x32_ps(lo, idx);
    if BITS == 4 {
        // Index bit 3 picks the upper eight levels: move it to the sign bit for the blend.
        let upper = _mm256_permutevar8x32_ps(hi, idx);
        _mm256_blendv_ps(c, upper, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
    } else {
        c
    }
}

/// Scalar (`k = 1`) code scores without unpacking to memory: `out[i] = <q, C[idx_i]>` (norm not
/// applied), bit-identical to [`super::portable::gather_dots`] with `K = 1`.
///
/// # Safety
/// The CPU must support AVX2. `BITS` is 1 to 4, `levels` holds the `2^BITS` levels padded to 16,
/// `q.len()` is a multiple of 8 and each slot holds `offset + q.len() * BITS / 8` bytes.
#[target_feature(enable = "avx2")]
pub unsafe fn scalar_dots_avx2<const BITS: u32>(
    levels: &[f32; 16],
    q: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    debug_assert!(q.len().is_multiple_of(8) && (1..=4).contains(&BITS));
    // SAFETY: `levels` holds 16 floats.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_ps(levels.as_ptr()),
            _mm256_loadu_ps(levels.as_ptr().add(8)),
        )
    };
    // Even- and odd-group accumulators, as in `dot_lanes`. Each slot's indices are read from a
    // view that runs to the end of `slots`, so that group loads may overrun into the next slot.
    for (i, o) in out.iter_mut().enumerate() {
        let Some(packed) = slots.get(i * slot_bytes + offset..) else {
            return;
        };
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut q16 = q.chunks_exact(16);
        for (h, q16) in q16.by_ref().enumerate() {
            // SAFETY: `q16` holds 16 floats.
            let (qe, qo) = unsafe {
                (
                    _mm256_loadu_ps(q16.as_ptr()),
                    _mm256_loadu_ps(q16.as_ptr().add(8)),
                )
            };
            let ce = scalar_group::<BITS>(packed, 2 * h, lo, hi);
            let co = scalar_group::<BITS>(packed, 2 * h + 1, lo, hi);
            even = _mm256_add_ps(even, _mm256_mul_ps(qe, ce));
            odd = _mm256_add_ps(odd, _mm256_mul_ps(qo, co));
        }
        if q16.remainder().len() == 8 {
            // SAFETY: the remainder holds 8 floats.
            let qe = unsafe { _mm256_loadu_ps(q16.remainder().as_ptr()) };
            let ce = scalar_group::<BITS>(packed, q.len() / 8 - 1, lo, hi);
            even = _mm256_add_ps(even, _mm256_mul_ps(qe, ce));
        }
        *o = finish_pair([even, odd]);
    }
}

/// [`super::portable::sum_pair`] of two 8-lane accumulators, in registers, in the same order:
/// `v = even + odd`, then `((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7))`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn finish_pair(acc: [__m256; 2]) -> f32 {
    let v = _mm256_add_ps(acc[0], acc[1]);
    // [v0 + v4, v1 + v5, v2 + v6, v3 + v7]
    let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    // [(v0 + v4) + (v2 + v6), (v1 + v5) + (v3 + v7), ..]
    let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)))
}

/// Scalar (`k = 1`) code weighted sum: `acc += sum_i w[i] * C[idx_i]`, bit-identical to
/// [`super::portable::gather_accumulate`] with `K = 1`.
///
/// # Safety
/// As [`scalar_dots_avx2`], with `acc.len()` in place of `q.len()`.
#[target_feature(enable = "avx2")]
pub unsafe fn scalar_accumulate_avx2<const BITS: u32>(
    levels: &[f32; 16],
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    acc: &mut [f32],
) {
    debug_assert!(acc.len().is_multiple_of(8) && (1..=4).contains(&BITS));
    // SAFETY: `levels` holds 16 floats.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_ps(levels.as_ptr()),
            _mm256_loadu_ps(levels.as_ptr().add(8)),
        )
    };
    // Two values per pass over the accumulator: `(a + w0 c0) + w1 c1`, the same sequence of
    // roundings as two passes, with one load and store of `a`.
    // Index views run to the end of `slots`, so that group loads may overrun into the next slot.
    let view = |i: usize| slots.get(i * slot_bytes + offset..).unwrap_or(&[]);
    let mut w2 = w.chunks_exact(2);
    for (p, w2) in w2.by_ref().enumerate() {
        let (p0, p1) = (view(2 * p), view(2 * p + 1));
        let (w0, w1) = (_mm256_set1_ps(w2[0]), _mm256_set1_ps(w2[1]));
        for (g, a8) in acc.chunks_exact_mut(8).enumerate() {
            let c0 = scalar_group::<BITS>(p0, g, lo, hi);
            let c1 = scalar_group::<BITS>(p1, g, lo, hi);
            // SAFETY: `a8` holds 8 floats.
            unsafe {
                let a = _mm256_add_ps(_mm256_loadu_ps(a8.as_ptr()), _mm256_mul_ps(w0, c0));
                _mm256_storeu_ps(a8.as_mut_ptr(), _mm256_add_ps(a, _mm256_mul_ps(w1, c1)));
            }
        }
    }
    let done = w.len() - w2.remainder().len();
    for (i, &wi) in w2.remainder().iter().enumerate() {
        let packed = view(done + i);
        let wv = _mm256_set1_ps(wi);
        for (g, a8) in acc.chunks_exact_mut(8).enumerate() {
            let c = scalar_group::<BITS>(packed, g, lo, hi);
            // SAFETY: `a8` holds 8 floats.
            unsafe {
                let a = _mm256_loadu_ps(a8.as_ptr());
                _mm256_storeu_ps(a8.as_mut_ptr(), _mm256_add_ps(a, _mm256_mul_ps(wv, c)));
            }
        }
    }
}

/// [`super::portable::norms_f16`] with F16C conversion, 8 norms per instruction (exact, like the
/// portable conversion; NaN payloads may differ, and NaN norms are rejected by the caller).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn norms_f16_avx2(slots: &[u8], slot_bytes: usize, out: &mut [f32]) {
    let mut eights = out.chunks_exact_mut(8);
    let mut groups = slots.chunks_exact(8 * slot_bytes);
    for (o, g) in eights.by_ref().zip(groups.by_ref()) {
        let mut halves = [0u16; 8];
        for (h, s) in halves.iter_mut().zip(g.chunks_exact(slot_bytes)) {
            *h = u16::from_le_bytes([s[0], s[1]]);
        }
        // SAFETY: `halves` holds 8 u16 and `o` 8 f32.
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(halves.as_ptr() as *const __m128i));
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
    }
    super::portable::norms_f16(groups.remainder(), slot_bytes, eights.into_remainder());
}

mod sealed {
    /// Only this module's codebook views implement [`super::Codewords`]: the kernels trust
    /// their `count`.
    pub trait Sealed {}
    impl Sealed for &[f32] {}
    impl Sealed for super::HalfCodewords<'_> {}
}

/// A codebook as the whole-register codeword kernels read it: f32 values, or the same values
/// rounded to f16 (half the cache footprint; converted exactly on load with F16C). Sealed.
pub trait Codewords: Copy + sealed::Sealed {
    /// Number of codewords of `k` values.
    fn count(self, k: usize) -> usize;
    /// Loads the 8 reconstruction values (before the norm) of index group `group` (`8 / K`
    /// consecutive blocks) from codewords of `K = 2`, `4` or `8` values.
    ///
    /// # Safety
    /// AVX2 and F16C; every index of `group` below `self.count(K)`.
    unsafe fn group<const K: usize, T: IndexCell>(self, group: &[T]) -> __m256;
}

impl Codewords for &[f32] {
    #[inline(always)]
    fn count(self, k: usize) -> usize {
        self.len() / k
    }
    #[inline(always)]
    unsafe fn group<const K: usize, T: IndexCell>(self, group: &[T]) -> __m256 {
        let p = self.as_ptr();
        // SAFETY: the caller checked the indices, so each codeword's K floats are in bounds, and
        // that the CPU has AVX2.
        unsafe {
            if K == 8 {
                _mm256_loadu_ps(p.add(group[0].index() * 8))
            } else if K == 2 {
                let pair = |a: usize, b: usize| {
                    let lo = _mm_load_sd(p.add(group[a].index() * 2) as *const f64);
                    _mm_castpd_ps(_mm_loadh_pd(lo, p.add(group[b].index() * 2) as *const f64))
                };
                _mm256_set_m128(pair(2, 3), pair(0, 1))
            } else {
                _mm256_set_m128(
                    _mm_loadu_ps(p.add(group[1].index() * 4)),
                    _mm_loadu_ps(p.add(group[0].index() * 4)),
                )
            }
        }
    }
}

/// A codebook rounded to f16 (the bits of each value).
#[derive(Debug, Clone, Copy)]
pub struct HalfCodewords<'a>(pub &'a [u16]);

impl Codewords for HalfCodewords<'_> {
    #[inline(always)]
    fn count(self, k: usize) -> usize {
        self.0.len() / k
    }
    #[inline(always)]
    unsafe fn group<const K: usize, T: IndexCell>(self, group: &[T]) -> __m256 {
        let p = self.0.as_ptr();
        // SAFETY: the caller checked the indices, so each codeword's K halves are in bounds, and
        // that the CPU has AVX2 and F16C.
        unsafe {
            let halves = if K == 8 {
                _mm_loadu_si128(p.add(group[0].index() * 8) as *const __m128i)
            } else if K == 4 {
                let lo = _mm_loadl_epi64(p.add(group[0].index() * 4) as *const __m128i);
                let hi = (p.add(group[1].index() * 4) as *const i64).read_unaligned();
                _mm_insert_epi64::<1>(lo, hi)
            } else {
                let w = |a: usize| (p.add(group[a].index() * 2) as *const i32).read_unaligned();
                _mm_setr_epi32(w(0), w(1), w(2), w(3))
            };
            _mm256_cvtph_ps(halves)
        }
    }
}

/// [`super::portable::gather_dots`] for `K = 2`, `4` or `8` and `d % 8 == 0`, with explicit 8-lane
/// products of whole codewords (bit-identical to the portable kernel: same lanes, same order).
/// Compiled apart for `d = 64` and `128`, where the loops over a row have constant trip counts
/// (unrolled, no bounds checks).
///
/// # Safety
/// AVX2 and F16C; `K` is 2, 4 or 8 and `q.len()` a multiple of 8.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn codeword_dots_avx2<const K: usize, T: IndexCell, C: Codewords>(
    q: &[f32],
    codewords: C,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match q.len() {
            64 => codeword_dots_body::<K, T, C, 64>(q, codewords, rows, out),
            128 => codeword_dots_body::<K, T, C, 128>(q, codewords, rows, out),
            _ => codeword_dots_body::<K, T, C, 0>(q, codewords, rows, out),
        }
    }
}

/// [`codeword_dots_avx2`] for `q.len() = D` (`D = 0`: any length).
///
/// # Safety
/// As [`codeword_dots_avx2`], and `D` is 0 or `q.len()`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn codeword_dots_body<const K: usize, T: IndexCell, C: Codewords, const D: usize>(
    q: &[f32],
    codewords: C,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    let q = if D == 0 { q } else { &q[..D] };
    let blocks = q.len() / K;
    debug_assert!((K == 2 || K == 4 || K == 8) && q.len().is_multiple_of(8));
    let n = codewords.count(K);
    for (o, ids) in out.iter_mut().zip(rows.iter()) {
        let ids = &ids[..blocks];
        super::portable::check_row(ids, n);
        let per = 8 / K;
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut q16 = q.chunks_exact(16);
        let mut g16 = ids.chunks_exact(2 * per);
        for (q16, group) in q16.by_ref().zip(g16.by_ref()) {
            // SAFETY: `check_row` bounded every index; `q16` holds 16 floats.
            unsafe {
                let c0 = codewords.group::<K, T>(&group[..per]);
                let c1 = codewords.group::<K, T>(&group[per..]);
                even = _mm256_add_ps(even, _mm256_mul_ps(_mm256_loadu_ps(q16.as_ptr()), c0));
                odd = _mm256_add_ps(odd, _mm256_mul_ps(_mm256_loadu_ps(q16.as_ptr().add(8)), c1));
            }
        }
        if q16.remainder().len() == 8 {
            // SAFETY: as above; the remainder holds 8 floats and `per` indices.
            unsafe {
                let c = codewords.group::<K, T>(&g16.remainder()[..per]);
                let p = _mm256_mul_ps(_mm256_loadu_ps(q16.remainder().as_ptr()), c);
                even = _mm256_add_ps(even, p);
            }
        }
        *o = finish_pair([even, odd]);
    }
}

/// [`super::portable::gather_accumulate`] for `K = 2`, `4` or `8` and `d % 8 == 0`, four values per
/// pass over the accumulator (bit-identical to the portable kernel). Compiled apart for `d = 64`
/// and `128`, as [`codeword_dots_avx2`].
///
/// # Safety
/// AVX2 and F16C; `K` is 2, 4 or 8 and `acc.len()` a multiple of 8.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn codeword_accumulate_avx2<const K: usize, T: IndexCell, C: Codewords>(
    w: &[f32],
    codewords: C,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match acc.len() {
            64 => codeword_accumulate_body::<K, T, C, 64>(w, codewords, rows, acc),
            128 => codeword_accumulate_body::<K, T, C, 128>(w, codewords, rows, acc),
            _ => codeword_accumulate_body::<K, T, C, 0>(w, codewords, rows, acc),
        }
    }
}

/// [`codeword_accumulate_avx2`] for `acc.len() = D` (`D = 0`: any length).
///
/// # Safety
/// As [`codeword_accumulate_avx2`], and `D` is 0 or `acc.len()`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn codeword_accumulate_body<const K: usize, T: IndexCell, C: Codewords, const D: usize>(
    w: &[f32],
    codewords: C,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    let acc = if D == 0 { acc } else { &mut acc[..D] };
    let blocks = acc.len() / K;
    debug_assert!((K == 2 || K == 4 || K == 8) && acc.len().is_multiple_of(8));
    let n = codewords.count(K);
    let per = 8 / K;
    let mut w4 = w.chunks_exact(4);
    let mut it = rows.iter();
    for w4 in w4.by_ref() {
        let (Some(i0), Some(i1), Some(i2), Some(i3)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return;
        };
        let (i0, i1, i2, i3) = (&i0[..blocks], &i1[..blocks], &i2[..blocks], &i3[..blocks]);
        for ids in [i0, i1, i2, i3] {
            super::portable::check_row(ids, n);
        }
        let (w0, w1, w2, w3) = (
            _mm256_set1_ps(w4[0]),
            _mm256_set1_ps(w4[1]),
            _mm256_set1_ps(w4[2]),
            _mm256_set1_ps(w4[3]),
        );
        for (g, a8) in acc.chunks_exact_mut(8).enumerate() {
            let r = g * per..(g + 1) * per;
            // SAFETY: indices checked above; `a8` holds 8 floats.
            unsafe {
                let c0 = codewords.group::<K, T>(&i0[r.clone()]);
                let c1 = codewords.group::<K, T>(&i1[r.clone()]);
                let c2 = codewords.group::<K, T>(&i2[r.clone()]);
                let c3 = codewords.group::<K, T>(&i3[r]);
                let s01 = _mm256_add_ps(_mm256_mul_ps(w0, c0), _mm256_mul_ps(w1, c1));
                let s23 = _mm256_add_ps(_mm256_mul_ps(w2, c2), _mm256_mul_ps(w3, c3));
                let a = _mm256_loadu_ps(a8.as_ptr());
                _mm256_storeu_ps(a8.as_mut_ptr(), _mm256_add_ps(a, _mm256_add_ps(s01, s23)));
            }
        }
    }
    for (&wi, ids) in w4.remainder().iter().zip(it) {
        let ids = &ids[..blocks];
        super::portable::check_row(ids, n);
        let wv = _mm256_set1_ps(wi);
        for (g, a8) in acc.chunks_exact_mut(8).enumerate() {
            // SAFETY: as above.
            unsafe {
                let c = codewords.group::<K, T>(&ids[g * per..(g + 1) * per]);
                let a = _mm256_loadu_ps(a8.as_ptr());
                _mm256_storeu_ps(a8.as_mut_ptr(), _mm256_add_ps(a, _mm256_mul_ps(wv, c)));
            }
        }
    }
}

/// One group of [`unpack_slots_shuffle_avx2`]: 8 indices from the 16 bytes at `bytes`, written to
/// `out`.
///
/// # Safety
/// AVX2; `bytes` points at 16 readable bytes and `out` at 8 writable `u32`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack_group(
    bytes: *const u8,
    out: *mut u32,
    ctrl: __m256i,
    shifts: __m256i,
    mask: __m256i,
) {
    // SAFETY: the caller guarantees both pointers' extents.
    unsafe {
        let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(bytes as *const __m128i));
        let w = _mm256_shuffle_epi8(v, ctrl);
        let idx = _mm256_and_si256(_mm256_srlv_epi32(w, shifts), mask);
        _mm256_storeu_si256(out as *mut __m256i, idx);
    }
}

/// Unpacks `BITS`-bit indices (`BITS` 1 to 14) of consecutive slots, 8 per step: the 8
/// indices of a group span `BITS` bytes; one 16-byte load is broadcast to both register halves,
/// `vpshufb` gives each 32-bit lane the 3 bytes that hold its index, and per-lane variable shifts
/// and a mask finish. Same output as [`super::portable::unpack_slots`].
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn unpack_slots_shuffle_avx2<const BITS: u32>(
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    blocks: usize,
    out: &mut [u32],
) {
    debug_assert!((1..=14).contains(&BITS));
    let b = BITS as usize;
    // Lane i's index starts at bit i * b: byte p = i * b / 8, bit (i * b) % 8 of that byte; with
    // b <= 14 it ends within bytes p..p + 3, and p + 2 <= 15 for every lane.
    let mut ctrl = [0i8; 32];
    let mut shift = [0i32; 8];
    for i in 0..8 {
        let p = i * b / 8;
        shift[i] = (i * b % 8) as i32;
        for t in 0..4 {
            let byte = if p + t < 16 { (p + t) as i8 } else { -128 }; // -128: zero the byte
            ctrl[(i % 4) * 4 + t + 16 * (i / 4)] = byte;
        }
    }
    // SAFETY: both arrays hold 32 bytes.
    let (ctrl, shifts) = unsafe {
        (
            _mm256_loadu_si256(ctrl.as_ptr() as *const __m256i),
            _mm256_loadu_si256(shift.as_ptr() as *const __m256i),
        )
    };
    let mask = _mm256_set1_epi32((1 << BITS) - 1);
    let groups = blocks / 8;
    // Rows with a whole slot behind them (as the portable kernel's `chunks_exact`).
    let rows = if slot_bytes == 0 || blocks == 0 {
        0
    } else {
        (slots.len() / slot_bytes).min(out.len() / blocks)
    };
    // Slots whose every 16-byte group load stays inside `slots` take a loop without per-group
    // checks (all but the last few of a chunk): slot `r` qualifies when
    // `r * slot_bytes + reach <= slots.len()`.
    let reach = offset.checked_add(groups.saturating_sub(1) * b + 16);
    let fast = match reach {
        Some(reach)
            if rows > 0 && blocks.is_multiple_of(8) && groups > 0 && slots.len() >= reach =>
        {
            ((slots.len() - reach) / slot_bytes + 1).min(rows)
        }
        _ => 0,
    };
    for (r, o) in out.chunks_exact_mut(blocks).enumerate().take(fast) {
        let base = r * slot_bytes + offset;
        for g in 0..groups {
            // SAFETY: AVX2 (this function's contract); `r < fast`, so `r * slot_bytes + reach <=
            // slots.len()` (no overflow: `reach` was computed checked, and the sum is at most
            // `slots.len()`): the 16 bytes read from `base + g * b` (`g < groups`) are inside
            // `slots`; `o` holds `groups * 8` u32.
            unsafe {
                unpack_group(
                    slots.as_ptr().add(base + g * b),
                    o.as_mut_ptr().add(g * 8),
                    ctrl,
                    shifts,
                    mask,
                )
            };
        }
    }
    for (r, o) in out
        .chunks_exact_mut(blocks)
        .enumerate()
        .take(rows)
        .skip(fast)
    {
        // The rest of the chunk from this slot's indices on: the 16-byte loads may run into the
        // next slot (harmless) but never past the end of `slots`.
        let Some(packed) = slots.get(r * slot_bytes + offset..) else {
            return;
        };
        let mut done = 0;
        for (g, o8) in o.chunks_exact_mut(8).take(groups).enumerate() {
            let Some(bytes) = packed.get(g * b..g * b + 16) else {
                break;
            };
            // SAFETY: AVX2; `bytes` holds 16 bytes and `o8` 8 u32.
            unsafe { unpack_group(bytes.as_ptr(), o8.as_mut_ptr(), ctrl, shifts, mask) };
            done = g + 1;
        }
        if done * 8 < blocks {
            crate::util::pack::unpack(&packed[done * b..], BITS, &mut o[done * 8..]);
        }
    }
}

/// AVX2 version of [`super::portable::nearest_cells`], bit-identical: the same scores in the
/// same order (no fused multiply-add), `vminps` for the running minimum (it returns its second
/// operand, the running best, on ties and NaN, exactly as the portable strict `<` select), and
/// the same lane merge.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn nearest_cells_avx2<const K: usize>(
    grid: &super::portable::CellGrid,
    blocks: &[f32],
    out: &mut [u32],
) {
    use super::portable::{grid_cell, OUTSIDE};
    let width = (K + 2) * 8;
    let two = _mm256_set1_ps(2.0);
    for (x, o) in blocks.chunks_exact(K).zip(out.iter_mut()) {
        let Some(cell) = grid_cell::<K>(grid, x) else {
            *o = OUTSIDE;
            continue;
        };
        let (s, e) = (grid.starts[cell] as usize, grid.starts[cell + 1] as usize);
        let mut xs = [_mm256_setzero_ps(); K];
        for (v, &xj) in xs.iter_mut().zip(x) {
            *v = _mm256_set1_ps(xj);
        }
        let mut best = _mm256_set1_ps(f32::INFINITY);
        let mut best_id = _mm256_set1_epi32(-1);
        for group in grid.groups[s * width..e * width].chunks_exact(width) {
            let p = group.as_ptr();
            let mut acc = _mm256_setzero_ps();
            for (j, xj) in xs.iter().enumerate() {
                // SAFETY: `group` holds (K + 2) * 8 floats and j < K.
                let row = unsafe { _mm256_loadu_ps(p.add(j * 8)) };
                acc = _mm256_add_ps(acc, _mm256_mul_ps(*xj, row));
            }
            // SAFETY: rows K and K + 1 of the group (norms, indices).
            let (norms, ids) = unsafe {
                (
                    _mm256_loadu_ps(p.add(K * 8)),
                    _mm256_loadu_si256(p.add((K + 1) * 8) as *const __m256i),
                )
            };
            let score = _mm256_sub_ps(norms, _mm256_mul_ps(two, acc));
            let better = _mm256_cmp_ps::<_CMP_LT_OQ>(score, best);
            best = _mm256_min_ps(score, best);
            best_id = _mm256_blendv_epi8(best_id, ids, _mm256_castps_si256(better));
        }
        // Lowest score across lanes, then the lowest index among the lanes holding it.
        let mut min = _mm256_min_ps(best, _mm256_permute2f128_ps::<1>(best, best));
        min = _mm256_min_ps(min, _mm256_permute_ps::<0b01_00_11_10>(min));
        min = _mm256_min_ps(min, _mm256_permute_ps::<0b10_11_00_01>(min));
        let at_min = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(best, min));
        let mut id = _mm256_blendv_epi8(_mm256_set1_epi32(-1), best_id, at_min);
        id = _mm256_min_epu32(id, _mm256_permute2x128_si256::<1>(id, id));
        id = _mm256_min_epu32(id, _mm256_shuffle_epi32::<0b01_00_11_10>(id));
        id = _mm256_min_epu32(id, _mm256_shuffle_epi32::<0b10_11_00_01>(id));
        *o = _mm256_cvtsi256_si32(id) as u32;
    }
}

/// [`super::portable::nearest_shortlist`] for `k = 4`: each group of 8 candidates is loaded as
/// 8 rows of 4 coordinates and transposed into lane layout, their squared norms are recomputed
/// in lanes with the codebook's operations (`((c0 c0 + c1 c1) + c2 c2) + c3 c3`, which the
/// index checked to equal the stored ones bit for bit), and the scores, per-lane `(score,
/// index)` minimum, merge and certificate are the portable kernel's.
///
/// The lists and codewords are read from memory at random, two loads deep (cell, then list,
/// then codewords), so blocks go in batches of up to 32: first every block's cell, prefetching
/// its first tier and bounds, then per block the first-tier codewords of the next block are
/// prefetched before the block is scored.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn nearest_shortlist4_avx2(
    grid: &super::portable::ShortlistGrid,
    blocks: &[f32],
    out: &mut [u32],
) {
    use super::portable::{cell_in, OUTSIDE};
    const BATCH: usize = 32;
    let n = grid.norms.len();
    assert!(grid.codewords.len() >= 4 * n, "short codeword table");
    assert!(grid.slots.is_multiple_of(8), "tiers hold whole groups");
    let per_cell = grid.slots * grid.tiers;
    let mut cells = [usize::MAX; BATCH];
    for (chunk, outs) in blocks.chunks(4 * BATCH).zip(out.chunks_mut(BATCH)) {
        let count = outs.len().min(chunk.len() / 4);
        for (b, x) in chunk.chunks_exact(4).take(count).enumerate() {
            cells[b] = match cell_in::<4>(grid.inner, grid.radius, grid.strides, x) {
                Some(cell) => {
                    let ids = &grid.ids[cell * per_cell..(cell + 1) * per_cell];
                    // Prefetches never fault; `wrapping_add` keeps the address arithmetic safe.
                    _mm_prefetch::<_MM_HINT_T0>(ids.as_ptr() as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(
                        grid.bounds.as_ptr().wrapping_add(cell * grid.tiers) as *const i8,
                    );
                    cell
                }
                None => usize::MAX,
            };
        }
        for b in 0..count {
            if let Some(&next) = cells[..count].get(b + 1) {
                if next != usize::MAX {
                    for &i in &grid.ids[next * per_cell..next * per_cell + grid.slots] {
                        _mm_prefetch::<_MM_HINT_T0>(
                            grid.codewords.as_ptr().wrapping_add(4 * i as usize) as *const i8,
                        );
                    }
                }
            }
            outs[b] = if cells[b] == usize::MAX {
                OUTSIDE
            } else {
                // SAFETY: AVX2 is enabled in this function, and so for its callee.
                unsafe { shortlist_block4(grid, &chunk[4 * b..4 * b + 4], cells[b]) }
            };
        }
    }
}

/// One block of [`nearest_shortlist4_avx2`] in cell `cell`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn shortlist_block4(grid: &super::portable::ShortlistGrid, x: &[f32], cell: usize) -> u32 {
    use super::portable::{norm_sq_f64, OUTSIDE};
    let two = _mm256_set1_ps(2.0);
    let n = grid.norms.len();
    let base = grid.codewords.as_ptr();
    let per_cell = grid.slots * grid.tiers;
    let xs = [
        _mm256_set1_ps(x[0]),
        _mm256_set1_ps(x[1]),
        _mm256_set1_ps(x[2]),
        _mm256_set1_ps(x[3]),
    ];
    let ids = &grid.ids[cell * per_cell..(cell + 1) * per_cell];
    let bounds = &grid.bounds[cell * grid.tiers..(cell + 1) * grid.tiers];
    let x_sq = norm_sq_f64(x);
    let mut best = _mm256_set1_ps(f32::INFINITY);
    let mut best_id = _mm256_set1_epi32(i32::MAX);
    for (tier, &bound) in ids.chunks_exact(grid.slots).zip(bounds) {
        for group in tier.chunks_exact(8) {
            let row = |l: usize| {
                let i = group[l] as usize;
                assert!(i < n, "candidate index out of range");
                // SAFETY: i < n and the table holds 4 * n floats.
                unsafe { _mm_loadu_ps(base.add(4 * i)) }
            };
            let a0 = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(row(0)), row(4));
            let a1 = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(row(1)), row(5));
            let a2 = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(row(2)), row(6));
            let a3 = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(row(3)), row(7));
            let t0 = _mm256_unpacklo_ps(a0, a1);
            let t1 = _mm256_unpackhi_ps(a0, a1);
            let t2 = _mm256_unpacklo_ps(a2, a3);
            let t3 = _mm256_unpackhi_ps(a2, a3);
            let c = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            let mut norms = _mm256_mul_ps(c[0], c[0]);
            let mut acc = _mm256_add_ps(_mm256_setzero_ps(), _mm256_mul_ps(xs[0], c[0]));
            for j in 1..4 {
                norms = _mm256_add_ps(norms, _mm256_mul_ps(c[j], c[j]));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(xs[j], c[j]));
            }
            // SAFETY: `group` holds 8 u16 (16 bytes).
            let lane_ids =
                _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(group.as_ptr() as *const __m128i) });
            let score = _mm256_sub_ps(norms, _mm256_mul_ps(two, acc));
            // Indices are below 2^16, so the signed compare orders them.
            let better = _mm256_or_si256(
                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(score, best)),
                _mm256_and_si256(
                    _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(score, best)),
                    _mm256_cmpgt_epi32(best_id, lane_ids),
                ),
            );
            best = _mm256_blendv_ps(best, score, _mm256_castsi256_ps(better));
            best_id = _mm256_blendv_epi8(best_id, lane_ids, better);
        }
        // Lowest score across lanes, then the lowest index among the lanes holding it.
        let mut min = _mm256_min_ps(best, _mm256_permute2f128_ps::<1>(best, best));
        min = _mm256_min_ps(min, _mm256_permute_ps::<0b01_00_11_10>(min));
        min = _mm256_min_ps(min, _mm256_permute_ps::<0b10_11_00_01>(min));
        let score = _mm256_cvtss_f32(min);
        if (score as f64) + x_sq < bound as f64 {
            let at_min = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(best, min));
            let mut id = _mm256_blendv_epi8(_mm256_set1_epi32(i32::MAX), best_id, at_min);
            id = _mm256_min_epi32(id, _mm256_permute2x128_si256::<1>(id, id));
            id = _mm256_min_epi32(id, _mm256_shuffle_epi32::<0b01_00_11_10>(id));
            id = _mm256_min_epi32(id, _mm256_shuffle_epi32::<0b10_11_00_01>(id));
            return _mm256_cvtsi256_si32(id) as u32;
        }
    }
    OUTSIDE
}

/// [`super::portable::dense_rotate`] compiled for AVX2 (8-lane registers; same operations in the
/// same order, so the same bits).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dense_rotate_avx2(matrix: &[f32], dim: usize, x: &[f32], out: &mut [f32]) {
    super::portable::dense_rotate(matrix, dim, x, out)
}

/// [`super::portable::dense_rotate_transposed`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dense_rotate_transposed_avx2(matrix: &[f32], dim: usize, y: &[f32], out: &mut [f32]) {
    super::portable::dense_rotate_transposed(matrix, dim, y, out)
}

/// Sorts 8 distinct keys in descending order with the network of
/// the portable sort of the orbit search, one layer of disjoint comparators per step:
/// each key meets its partner (`vpermd`), the lower index of a pair keeps the larger key and
/// the higher index the smaller one. With distinct keys every sorting network gives the same
/// output, so this equals the portable sort (tests check it).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn sort8_descending_avx2(keys: [u32; 8]) -> [u32; 8] {
    // SAFETY: `keys` is 32 bytes; unaligned loads and stores.
    let mut v = unsafe { _mm256_loadu_si256(keys.as_ptr() as *const __m256i) };
    macro_rules! layer {
        ($p0:literal, $p1:literal, $p2:literal, $p3:literal, $p4:literal, $p5:literal,
         $p6:literal, $p7:literal; $lower:literal) => {{
            let partner = _mm256_permutevar8x32_epi32(
                v,
                _mm256_setr_epi32($p0, $p1, $p2, $p3, $p4, $p5, $p6, $p7),
            );
            let high = _mm256_max_epu32(v, partner);
            let low = _mm256_min_epu32(v, partner);
            // Bits of `$lower`: the positions that keep the smaller key.
            v = _mm256_blend_epi32::<$lower>(high, low);
        }};
    }
    layer!(1, 0, 3, 2, 5, 4, 7, 6; 0xAA); // (0,1) (2,3) (4,5) (6,7)
    layer!(2, 3, 0, 1, 6, 7, 4, 5; 0xCC); // (0,2) (1,3) (4,6) (5,7)
    layer!(4, 2, 1, 7, 0, 6, 5, 3; 0xD4); // (1,2) (5,6) (0,4) (3,7)
    layer!(0, 5, 6, 3, 4, 1, 2, 7; 0x60); // (1,5) (2,6)
    layer!(0, 4, 2, 6, 1, 5, 3, 7; 0x50); // (1,4) (3,6)
    layer!(0, 1, 4, 5, 2, 3, 6, 7; 0x30); // (2,4) (3,5)
    layer!(0, 1, 2, 4, 3, 5, 6, 7; 0x10); // (3,4)
    let mut out = [0u32; 8];
    // SAFETY: `out` is 32 bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v) };
    out
}

/// AVX2 + F16C [`portable::f16_row_dots`](super::portable::f16_row_dots): the same lanes and
/// the same operations (multiply, then add; no FMA), so the same bits.
///
/// # Safety
/// The CPU must support AVX2 and F16C; `q.len()` must be a positive multiple of 8 and `rows`
/// must hold `out.len() * q.len()` values.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_row_dots_avx2(q: &[f32], rows: &[u16], out: &mut [f32]) {
    let d = q.len();
    debug_assert!(d > 0 && d.is_multiple_of(8) && rows.len() >= out.len() * d);
    for (i, o) in out.iter_mut().enumerate() {
        let mut lane = _mm256_setzero_ps();
        for j in (0..d).step_by(8) {
            // SAFETY: i * d + j + 8 <= out.len() * d <= rows.len(), and j + 8 <= d = q.len().
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(
                    rows.as_ptr().add(i * d + j) as *const __m128i
                ));
                let p = _mm256_mul_ps(_mm256_loadu_ps(q.as_ptr().add(j)), x);
                lane = _mm256_add_ps(lane, p);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), lane) };
        *o = super::portable::sum_lanes(&lanes);
    }
}

/// AVX2 + F16C [`portable::f16_row_accumulate`](super::portable::f16_row_accumulate): tiles of
/// [`F16_TILE_ROWS`](super::portable::F16_TILE_ROWS) rows, each group of 8 coordinates kept in
/// a register over a tile; every coordinate still adds the rows in order (same bits).
///
/// # Safety
/// The CPU must support AVX2 and F16C; `acc.len()` must be a positive multiple of 8 and `rows`
/// must hold `weights.len() * acc.len()` values.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_row_accumulate_avx2(weights: &[f32], rows: &[u16], acc: &mut [f32]) {
    let d = acc.len();
    debug_assert!(d > 0 && d.is_multiple_of(8) && rows.len() >= weights.len() * d);
    let tile = super::portable::F16_TILE_ROWS;
    for (t, wt) in weights.chunks(tile).enumerate() {
        let base = t * tile * d;
        for j in (0..d).step_by(8) {
            // SAFETY: j + 8 <= d = acc.len(); row (t * tile + i) < weights.len(), so
            // base + i * d + j + 8 <= weights.len() * d <= rows.len().
            unsafe {
                let mut a = _mm256_loadu_ps(acc.as_ptr().add(j));
                for (i, &w) in wt.iter().enumerate() {
                    let p = rows.as_ptr().add(base + i * d + j) as *const __m128i;
                    let x = _mm256_cvtph_ps(_mm_loadu_si128(p));
                    a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(w), x));
                }
                _mm256_storeu_ps(acc.as_mut_ptr().add(j), a);
            }
        }
    }
}

/// [`codeword_dots_avx2`] for `G` queries against the same rows: query `g` is
/// `queries[g * d..][..d]` and its score of row `i` goes to `out[g * stride + i]`. Each
/// codeword group is loaded once for all the queries, and every query's sums take the single
/// kernel's operations in its order, so each query gets [`codeword_dots_avx2`]'s bits.
///
/// # Safety
/// As [`codeword_dots_avx2`] for every query; `queries.len() = G * d` with `d` a multiple of
/// 8, and `out` holds `(G - 1) * stride + rows` values with `stride >=` the number of rows.
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::needless_range_loop)] // `g` indexes the queries and two accumulator arrays.
pub unsafe fn codeword_dots_group_avx2<
    const K: usize,
    const G: usize,
    T: IndexCell,
    C: Codewords,
>(
    queries: &[f32],
    codewords: C,
    rows: IndexRows<T>,
    out: &mut [f32],
    stride: usize,
) {
    let d = queries.len() / G;
    let blocks = d / K;
    debug_assert!((K == 2 || K == 4 || K == 8) && d.is_multiple_of(8) && G >= 1);
    debug_assert!(out.len() >= (G - 1) * stride + rows.count() && stride >= rows.count());
    let n = codewords.count(K);
    let per = 8 / K;
    for (i, ids) in rows.iter().enumerate() {
        let ids = &ids[..blocks];
        super::portable::check_row(ids, n);
        let mut even = [_mm256_setzero_ps(); G];
        let mut odd = [_mm256_setzero_ps(); G];
        let mut j = 0;
        let mut g16 = ids.chunks_exact(2 * per);
        for group in g16.by_ref() {
            // SAFETY: `check_row` bounded every index; query `g` holds `d >= j + 16` floats.
            unsafe {
                let c0 = codewords.group::<K, T>(&group[..per]);
                let c1 = codewords.group::<K, T>(&group[per..]);
                for g in 0..G {
                    let q = queries.as_ptr().add(g * d + j);
                    even[g] = _mm256_add_ps(even[g], _mm256_mul_ps(_mm256_loadu_ps(q), c0));
                    odd[g] = _mm256_add_ps(odd[g], _mm256_mul_ps(_mm256_loadu_ps(q.add(8)), c1));
                }
            }
            j += 16;
        }
        if j < d {
            // SAFETY: as above; 8 floats remain in each query and `per` indices in the row.
            unsafe {
                let c = codewords.group::<K, T>(&g16.remainder()[..per]);
                for g in 0..G {
                    let q = queries.as_ptr().add(g * d + j);
                    even[g] = _mm256_add_ps(even[g], _mm256_mul_ps(_mm256_loadu_ps(q), c));
                }
            }
        }
        for g in 0..G {
            out[g * stride + i] = finish_pair([even[g], odd[g]]);
        }
    }
}

/// [`codeword_accumulate_avx2`] for `G` weight vectors over the same rows: weights of vector
/// `g` are `w[g * stride..][..rows]`, accumulated into `acc[g * d..][..d]`. Each codeword group
/// is loaded once for all the vectors; every vector's sums take the single kernel's operations
/// in its order (four rows at a time), so each gets [`codeword_accumulate_avx2`]'s bits.
///
/// # Safety
/// As [`codeword_accumulate_avx2`] for every vector; `acc.len() = G * d` with `d` a multiple
/// of 8, and `w` holds `(G - 1) * stride + rows` values with `stride >=` the number of rows.
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::needless_range_loop)] // `g` indexes the weight vectors and their accumulators.
pub unsafe fn codeword_accumulate_group_avx2<
    const K: usize,
    const G: usize,
    T: IndexCell,
    C: Codewords,
>(
    w: &[f32],
    stride: usize,
    codewords: C,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    let d = acc.len() / G;
    let blocks = d / K;
    let count = rows.count();
    debug_assert!((K == 2 || K == 4 || K == 8) && d.is_multiple_of(8) && G >= 1);
    debug_assert!(w.len() >= (G - 1) * stride + count && stride >= count);
    let n = codewords.count(K);
    let per = 8 / K;
    let whole = count / 4 * 4;
    let mut it = rows.iter();
    for r in (0..whole).step_by(4) {
        let (Some(i0), Some(i1), Some(i2), Some(i3)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return;
        };
        let (i0, i1, i2, i3) = (&i0[..blocks], &i1[..blocks], &i2[..blocks], &i3[..blocks]);
        for ids in [i0, i1, i2, i3] {
            super::portable::check_row(ids, n);
        }
        let ws: [[__m256; 4]; G] = std::array::from_fn(|g| {
            let w4 = &w[g * stride + r..g * stride + r + 4];
            [
                _mm256_set1_ps(w4[0]),
                _mm256_set1_ps(w4[1]),
                _mm256_set1_ps(w4[2]),
                _mm256_set1_ps(w4[3]),
            ]
        });
        for col in 0..d / 8 {
            let rg = col * per..(col + 1) * per;
            // SAFETY: indices checked above; accumulator `g` holds `d >= 8 col + 8` floats.
            unsafe {
                let c0 = codewords.group::<K, T>(&i0[rg.clone()]);
                let c1 = codewords.group::<K, T>(&i1[rg.clone()]);
                let c2 = codewords.group::<K, T>(&i2[rg.clone()]);
                let c3 = codewords.group::<K, T>(&i3[rg]);
                for (g, [w0, w1, w2, w3]) in ws.iter().enumerate() {
                    let s01 = _mm256_add_ps(_mm256_mul_ps(*w0, c0), _mm256_mul_ps(*w1, c1));
                    let s23 = _mm256_add_ps(_mm256_mul_ps(*w2, c2), _mm256_mul_ps(*w3, c3));
                    let a8 = acc.as_mut_ptr().add(g * d + col * 8);
                    let a = _mm256_loadu_ps(a8);
                    _mm256_storeu_ps(a8, _mm256_add_ps(a, _mm256_add_ps(s01, s23)));
                }
            }
        }
    }
    for (r, ids) in (whole..count).zip(it) {
        let ids = &ids[..blocks];
        super::portable::check_row(ids, n);
        for col in 0..d / 8 {
            // SAFETY: as above.
            unsafe {
                let c = codewords.group::<K, T>(&ids[col * per..(col + 1) * per]);
                for g in 0..G {
                    let wv = _mm256_set1_ps(w[g * stride + r]);
                    let a8 = acc.as_mut_ptr().add(g * d + col * 8);
                    let a = _mm256_loadu_ps(a8);
                    _mm256_storeu_ps(a8, _mm256_add_ps(a, _mm256_mul_ps(wv, c)));
                }
            }
        }
    }
}
