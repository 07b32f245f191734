//! Portable reference kernels.

use crate::kernels::LANES;

/// Scores `||c||^2 - 2 <x, c>` of the 8 codewords of one lane group (`cg`: `k` rows of
/// [`LANES`] coordinates, `ng`: their squared norms), in the order every search kernel uses:
/// the products summed from coordinate 0 up, then the norm minus twice the sum.
#[inline(always)]
fn group_scores(cg: &[f32], ng: &[f32], k: usize, x: &[f32]) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    for (j, &xj) in x.iter().enumerate().take(k) {
        let row = &cg[j * LANES..(j + 1) * LANES];
        for l in 0..LANES {
            acc[l] += xj * row[l];
        }
    }
    let mut s = [0f32; LANES];
    for l in 0..LANES {
        s[l] = ng[l] - 2.0 * acc[l];
    }
    s
}

/// Per-lane best score and group of a lane-grouped nearest-codeword search.
#[inline]
pub fn nearest_lanes(lanes: &[f32], norms: &[f32], k: usize, x: &[f32]) -> ([f32; 8], [u32; 8]) {
    let mut best = [f32::INFINITY; LANES];
    let mut best_group = [0u32; LANES];
    for (g, (cg, ng)) in lanes
        .chunks_exact(k * LANES)
        .zip(norms.chunks_exact(LANES))
        .enumerate()
    {
        let s = group_scores(cg, ng, k, x);
        for l in 0..LANES {
            let s = s[l];
            let better = s < best[l];
            best[l] = if better { s } else { best[l] };
            best_group[l] = if better { g as u32 } else { best_group[l] };
        }
    }
    (best, best_group)
}

/// The running per-lane minimum of [`nearest_ids`]: each lane's lowest `(score, id)` pair so
/// far (`+inf` and `u32::MAX` before any candidate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneBest {
    /// Each lane's best score.
    pub scores: [f32; LANES],
    /// The id of each lane's best candidate.
    pub ids: [u32; LANES],
}

impl Default for LaneBest {
    fn default() -> LaneBest {
        LaneBest {
            scores: [f32::INFINITY; LANES],
            ids: [u32::MAX; LANES],
        }
    }
}

impl LaneBest {
    /// The lowest `(score, id)` pair over the lanes (NaN scores never win): `(+inf,
    /// u32::MAX)` if no lane found a candidate.
    pub fn lowest(&self) -> (f32, u32) {
        let mut best = (f32::INFINITY, u32::MAX);
        for (&s, &i) in self.scores.iter().zip(&self.ids) {
            if s < best.0 || (s == best.0 && i < best.1) {
                best = (s, i);
            }
        }
        best
    }
}

/// Codewords in the lane layout of [`nearest_lanes`] with an id per codeword: group `g` holds
/// coordinates `lanes[g * k * LANES..][..k * LANES]`, squared norms `norms[g * LANES..][..LANES]`
/// and ids `ids[g * LANES..][..LANES]`.
#[derive(Debug, Clone, Copy)]
pub struct IdLanes<'a> {
    /// Coordinates, `k` rows of [`LANES`] per group.
    pub lanes: &'a [f32],
    /// Squared norms (padding: `+inf`).
    pub norms: &'a [f32],
    /// Ids (padding: `u32::MAX`).
    pub ids: &'a [u32],
}

/// Updates `best` with the candidates in groups `ranges` (each `start..end`, in groups of
/// [`LANES`]) of `list`: codeword `g * LANES + l` has id `ids[g * LANES + l]` and score `||c||^2 - 2 <x, c>` (the operations of [`nearest_lanes`], in
/// its order, so the same score bit for bit). A candidate replaces a lane's best when its
/// score is lower, or equal with a lower id: the result is each lane's lowest `(score, id)`
/// pair, whatever the order of the ranges and groups.
#[inline]
pub fn nearest_ids(
    list: IdLanes<'_>,
    k: usize,
    x: &[f32],
    ranges: &[(u32, u32)],
    best: &mut LaneBest,
) {
    let IdLanes { lanes, norms, ids } = list;
    for &(start, end) in ranges {
        for g in start as usize..end as usize {
            let cg = &lanes[g * k * LANES..(g + 1) * k * LANES];
            let (ng, ig) = (&norms[g * LANES..][..LANES], &ids[g * LANES..][..LANES]);
            let s = group_scores(cg, ng, k, x);
            for l in 0..LANES {
                let s = s[l];
                let (b, bi) = (best.scores[l], best.ids[l]);
                let better = s < b || (s == b && ig[l] < bi);
                best.scores[l] = if better { s } else { b };
                best.ids[l] = if better { ig[l] } else { bi };
            }
        }
    }
}

/// Marks the balls a query may reach: bit `j` of the result (word `j / 64`) is set when
/// `(x_sq + scores[j]) - err <= ((radii[j] + t) * (radii[j] + t)) * scale`, computed in f64 in
/// that order (the skip test of [`crate::search::balls`]). At most 256 balls.
#[inline]
pub fn ball_marks(
    scores: &[f32],
    radii: &[f64],
    x_sq: f64,
    err: f64,
    t: f64,
    scale: f64,
) -> [u64; 4] {
    let mut marks = [0u64; 4];
    for (j, (&s, &radius)) in scores.iter().zip(radii).enumerate().take(256) {
        let dist_sq = (x_sq + s as f64) - err;
        let r = radius + t;
        marks[j / 64] |= u64::from(dist_sq <= (r * r) * scale) << (j % 64);
    }
    marks
}

/// Scores `||c||^2 - 2 <x, c>` of every codeword of a lane-grouped layout into `out` (one per
/// codeword, in index order; `out.len()` may stop short of the padding). Per codeword the same
/// operations as [`nearest_lanes`], in the same order.
#[inline(always)]
pub fn lane_scores(lanes: &[f32], norms: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    for ((cg, ng), o) in lanes
        .chunks_exact(k * LANES)
        .zip(norms.chunks_exact(LANES))
        .zip(out.chunks_mut(LANES))
    {
        let s = group_scores(cg, ng, k, x);
        o.copy_from_slice(&s[..o.len()]);
    }
}

/// In-place unnormalized fast Walsh-Hadamard transform; `v.len()` must be a power of two.
pub fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for block in v.chunks_exact_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                let (s, t) = (*x + *y, *x - *y);
                *x = s;
                *y = t;
            }
        }
        h *= 2;
    }
}

// ---------------------------------------------------------------------------------------------
// Attention on codes. These bodies are `#[inline(always)]` so that the x86_64 module can compile
// the very same source with AVX2 enabled (the compiler vectorizes it for that target); results
// are bit-identical because Rust never reorders or fuses floating-point operations.

/// Unpacks the `blocks` indices of each slot in `slots` (consecutive slots of `slot_bytes` bytes,
/// indices from byte `offset` of each) into `out` (`blocks` entries per slot), for `BITS`-bit
/// indices. Groups of 8 indices occupy exactly `BITS` bytes, so each group is read with one word
/// load and unpacked with constant shifts.
#[inline(always)]
pub fn unpack_slots<const BITS: u32>(
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    blocks: usize,
    out: &mut [u32],
) {
    for (slot, o) in slots
        .chunks_exact(slot_bytes)
        .zip(out.chunks_exact_mut(blocks))
    {
        unpack_fixed::<BITS>(&slot[offset..], o);
    }
}

/// [`crate::util::pack::unpack`] for a width known at compile time.
#[inline(always)]
pub fn unpack_fixed<const BITS: u32>(packed: &[u8], out: &mut [u32]) {
    let b = BITS as usize;
    match BITS {
        8 => {
            for (o, &x) in out.iter_mut().zip(packed) {
                *o = x as u32;
            }
        }
        16 => {
            for (o, c) in out.iter_mut().zip(packed.chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as u32;
            }
        }
        _ => {
            let mask = (1u128 << BITS) - 1;
            let mut groups = out.chunks_exact_mut(8);
            let full = groups.len();
            for (o, g) in groups.by_ref().zip(packed.chunks_exact(b)) {
                let o: &mut [u32; 8] = o.try_into().unwrap();
                let mut w = [0u8; 16];
                w[..b].copy_from_slice(g);
                if BITS <= 8 {
                    let w = u64::from_le_bytes(w[..8].try_into().unwrap());
                    for (t, o) in o.iter_mut().enumerate() {
                        *o = ((w >> (t * b)) & mask as u64) as u32;
                    }
                } else {
                    let w = u128::from_le_bytes(w);
                    for (t, o) in o.iter_mut().enumerate() {
                        *o = ((w >> (t * b)) & mask) as u32;
                    }
                }
            }
            let rest = groups.into_remainder();
            if !rest.is_empty() {
                crate::util::pack::unpack(&packed[full * b..], BITS, rest);
            }
        }
    }
}

/// Horizontal sum of 8 lanes in the fixed order the SIMD kernels use.
#[inline(always)]
pub fn sum_lanes(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// `out[i] = sum_j table[j * n + rows[i][j]]`: per-query look-up table scores, four independent
/// partial sums per slot.
#[inline(always)]
pub fn table_dots<T: IndexCell>(table: &[f32], n: usize, rows: IndexRows<T>, out: &mut [f32]) {
    assert!(
        rows.blocks.checked_mul(n).is_some_and(|m| table.len() >= m),
        "look-up table shorter than blocks * n"
    );
    for (o, ids) in out.iter_mut().zip(rows.iter()) {
        check_row(ids, n);
        let mut acc = [0f32; 4];
        let mut quads = ids.chunks_exact(4);
        let mut base = 0;
        for q in quads.by_ref() {
            for (t, (a, &i)) in acc.iter_mut().zip(q).enumerate() {
                // SAFETY: `i < n` (`check_row`) and `base + t < blocks`, so the position is
                // below `blocks * n <= table.len()`.
                *a += unsafe { *table.get_unchecked((base + t) * n + i.index()) };
            }
            base += 4;
        }
        for (t, (a, &i)) in acc.iter_mut().zip(quads.remainder()).enumerate() {
            // SAFETY: as above.
            *a += unsafe { *table.get_unchecked((base + t) * n + i.index()) };
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

/// Panics unless non-empty slots of `slot_bytes` bytes hold `bytes` index bytes after `offset`.
#[inline(always)]
pub(crate) fn check_byte_layout(slot_bytes: usize, offset: usize, bytes: usize) {
    assert!(
        slot_bytes > 0
            && offset
                .checked_add(bytes)
                .is_some_and(|end| end <= slot_bytes),
        "slots of {slot_bytes} bytes cannot hold {bytes} index bytes after {offset}"
    );
}

/// Look-up-table scores over whole index bytes: `out[i] = sum_p table[p][byte_p(slot i)]`, where
/// slot `i` is `slots[i * slot_bytes..][..slot_bytes]` and `byte_p` its byte `offset + p`
/// (`table.len()` index bytes per slot). Four running sums per slot, combined as
/// `(s0 + s1) + (s2 + s3)`. Rows of `out` beyond the whole slots are left as they are. Panics
/// unless a (non-empty) slot holds its index bytes.
#[inline(always)]
pub fn byte_table_dots(
    table: &[[f32; 256]],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    let bytes = table.len();
    check_byte_layout(slot_bytes, offset, bytes);
    match bytes {
        8 => return byte_table_dots_words::<1>(table, slots, slot_bytes, offset, out),
        16 => return byte_table_dots_words::<2>(table, slots, slot_bytes, offset, out),
        24 => return byte_table_dots_words::<3>(table, slots, slot_bytes, offset, out),
        32 => return byte_table_dots_words::<4>(table, slots, slot_bytes, offset, out),
        _ => {}
    }
    for (o, slot) in out.iter_mut().zip(slots.chunks_exact(slot_bytes)) {
        let ids = &slot[offset..offset + bytes];
        let mut acc = [0f32; 4];
        let mut t4 = table.chunks_exact(4);
        let mut i4 = ids.chunks_exact(4);
        for (t, i) in t4.by_ref().zip(i4.by_ref()) {
            for l in 0..4 {
                // A byte indexes a 256-entry row: never out of bounds, no check emitted.
                acc[l] += t[l][i[l] as usize];
            }
        }
        for (a, (t, &i)) in acc
            .iter_mut()
            .zip(t4.remainder().iter().zip(i4.remainder()))
        {
            *a += t[i as usize];
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

/// Histogram of weights over whole index bytes: `hist[p][byte_p(slot i)] += w[i]` for every
/// whole slot `i` in order (slot layout as in [`byte_table_dots`], `hist.len()` index bytes per
/// slot). Panics unless a (non-empty) slot holds its index bytes.
#[inline(always)]
pub fn byte_histogram(
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    hist: &mut [[f32; 256]],
) {
    let bytes = hist.len();
    check_byte_layout(slot_bytes, offset, bytes);
    match bytes {
        8 => return byte_histogram_words::<1>(w, slots, slot_bytes, offset, hist),
        16 => return byte_histogram_words::<2>(w, slots, slot_bytes, offset, hist),
        24 => return byte_histogram_words::<3>(w, slots, slot_bytes, offset, hist),
        32 => return byte_histogram_words::<4>(w, slots, slot_bytes, offset, hist),
        _ => {}
    }
    for (&wi, slot) in w.iter().zip(slots.chunks_exact(slot_bytes)) {
        for (h, &i) in hist.iter_mut().zip(&slot[offset..offset + bytes]) {
            h[i as usize] += wi;
        }
    }
}

/// The `8 * W` index bytes of a slot as `W` little-endian 64-bit words: two loads instead of 16
/// for a slot of 16 index bytes, the bytes then taken out with shifts (the byte kernels are
/// bound by loads and stores, not by these register operations).
#[inline(always)]
fn index_words<const W: usize>(ids: &[u8]) -> [u64; W] {
    std::array::from_fn(|w| {
        let bytes: [u8; 8] = ids[8 * w..8 * w + 8].try_into().unwrap();
        u64::from_le_bytes(bytes)
    })
}

/// [`byte_table_dots`] for slots of exactly `8 * W` index bytes (layout checked by the caller):
/// the same running sums in the same order, so the same bits, with the index bytes read as
/// words and the loops unrolled (faster than the byte loop: `docs/tuning.md`).
#[inline(always)]
fn byte_table_dots_words<const W: usize>(
    table: &[[f32; 256]],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    let table = &table[..8 * W];
    for (o, slot) in out.iter_mut().zip(slots.chunks_exact(slot_bytes)) {
        let words = index_words::<W>(&slot[offset..offset + 8 * W]);
        let mut acc = [0f32; 4];
        for (j, &x) in words.iter().enumerate() {
            for b in 0..8 {
                acc[b % 4] += table[8 * j + b][(x >> (8 * b)) as u8 as usize];
            }
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

/// [`byte_histogram`] for slots of exactly `8 * W` index bytes (layout checked by the caller):
/// the same additions in the same order, with the index bytes read as words and the loops
/// unrolled (faster than the byte loop: `docs/tuning.md`).
#[inline(always)]
fn byte_histogram_words<const W: usize>(
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    hist: &mut [[f32; 256]],
) {
    let hist = &mut hist[..8 * W];
    for (&wi, slot) in w.iter().zip(slots.chunks_exact(slot_bytes)) {
        let words = index_words::<W>(&slot[offset..offset + 8 * W]);
        for (j, &x) in words.iter().enumerate() {
            for b in 0..8 {
                hist[8 * j + b][(x >> (8 * b)) as u8 as usize] += wi;
            }
        }
    }
}

/// A stored block index: a byte (8-bit codes read in place), two little-endian bytes (16-bit
/// codes read in place) or an unpacked `u32`.
pub trait IndexCell: Copy {
    /// The largest index the cell can hold.
    const MAX: usize;
    /// The index value.
    fn index(self) -> usize;
    /// The largest index of a row (0 for an empty row), computed in the cell's own width so
    /// that it vectorizes.
    fn max_index(row: &[Self]) -> usize;
    /// The same rows as `u32` cells, for kernels that load unpacked indices as whole vectors;
    /// `None` for other cell types.
    #[inline(always)]
    fn as_u32_rows(rows: IndexRows<'_, Self>) -> Option<IndexRows<'_, u32>> {
        let _ = rows;
        None
    }
}

impl IndexCell for u8 {
    const MAX: usize = u8::MAX as usize;
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
    #[inline(always)]
    fn max_index(row: &[u8]) -> usize {
        row.iter().fold(0u8, |m, &i| m.max(i)) as usize
    }
}

impl IndexCell for [u8; 2] {
    const MAX: usize = u16::MAX as usize;
    #[inline(always)]
    fn index(self) -> usize {
        u16::from_le_bytes(self) as usize
    }
    #[inline(always)]
    fn max_index(row: &[[u8; 2]]) -> usize {
        row.iter().fold(0u16, |m, &i| m.max(u16::from_le_bytes(i))) as usize
    }
}

impl IndexCell for u32 {
    const MAX: usize = u32::MAX as usize;
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
    #[inline(always)]
    fn max_index(row: &[u32]) -> usize {
        row.iter().fold(0u32, |m, &i| m.max(i)) as usize
    }
    #[inline(always)]
    fn as_u32_rows(rows: IndexRows<'_, u32>) -> Option<IndexRows<'_, u32>> {
        Some(rows)
    }
}

/// Panics unless every index of `row` is below `n`: the precondition that makes the unchecked
/// look-ups of the kernels below sound. One vectorized pass per row instead of a bounds check per
/// look-up, and none at all where the cell cannot hold an index as large as `n` (8-bit cells with
/// `N = 256`, 16-bit cells with `N = 65536`).
#[inline(always)]
pub(crate) fn check_row<T: IndexCell>(row: &[T], n: usize) {
    if T::MAX < n {
        return;
    }
    assert!(
        T::max_index(row) < n,
        "block index out of range for a codebook of {n} codewords"
    );
}

/// Rows of block indices: row `i` is `data[i * stride + offset..][..blocks]`. Either the slots
/// themselves (whole-byte index widths: `stride` = slot size, `offset` = norm size, in cells) or
/// an unpacked `u32` buffer (`stride = blocks`, `offset = 0`).
#[derive(Debug, Clone, Copy)]
pub struct IndexRows<'a, T> {
    /// The cells.
    pub data: &'a [T],
    /// Cells from one row to the next.
    pub stride: usize,
    /// Cells before the first index of a row.
    pub offset: usize,
    /// Indices per row (`d / k`).
    pub blocks: usize,
}

impl<'a, T: IndexCell> IndexRows<'a, T> {
    /// Number of rows.
    #[inline(always)]
    pub fn count(self) -> usize {
        self.data.len() / self.stride.max(1)
    }

    /// The rows, in order.
    #[inline(always)]
    pub fn iter(self) -> impl Iterator<Item = &'a [T]> {
        let (offset, blocks) = (self.offset, self.blocks);
        self.data
            .chunks_exact(self.stride)
            .map(move |row| &row[offset..offset + blocks])
    }
}

/// Writes the rotated-domain reconstruction `concat(C[ids_j])` (unscaled) into `x`.
#[inline(always)]
fn gather<const K: usize, T: IndexCell>(codewords: &[f32], k: usize, ids: &[T], x: &mut [f32]) {
    let k = if K == 0 { k } else { K };
    check_row(ids, codewords.len() / k);
    for (xb, &i) in x.chunks_exact_mut(k).zip(ids) {
        // SAFETY: `i < codewords.len() / k` (`check_row`), so `i * k + k <= codewords.len()`.
        let c = unsafe { codewords.get_unchecked(i.index() * k..i.index() * k + k) };
        xb.copy_from_slice(c);
    }
}

/// Codeword `i` (`K` floats); `i` must have passed [`check_row`] against `codewords.len() / K`.
#[inline(always)]
fn codeword<const K: usize>(codewords: &[f32], i: usize) -> &[f32; K] {
    debug_assert!(i < codewords.len() / K);
    // SAFETY: callers check `i < codewords.len() / K`, so the K floats at `i * K` exist; a
    // `[f32; K]` has the alignment of `f32`.
    unsafe { &*(codewords.as_ptr().add(i * K) as *const [f32; K]) }
}

/// `sum_l a[l] * b[l]` in 8 lanes (lane `l % 8`), with even and odd groups of 8 in two
/// accumulators (two independent addition chains), combined with [`sum_pair`]. The SIMD dot
/// kernels use exactly this order.
#[inline(always)]
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; 8]; 2];
    let mut a8 = a.chunks_exact(8);
    let mut b8 = b.chunks_exact(8);
    for (g, (x, y)) in a8.by_ref().zip(b8.by_ref()).enumerate() {
        for l in 0..8 {
            acc[g % 2][l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in a8.remainder().iter().zip(b8.remainder()).enumerate() {
        acc[0][l] += x * y;
    }
    sum_pair(&acc)
}

/// `sum_lanes(even + odd)`: the final reduction of the two-accumulator dot products.
#[inline(always)]
pub fn sum_pair(acc: &[[f32; 8]; 2]) -> f32 {
    let mut lanes = [0f32; 8];
    for (l, v) in lanes.iter_mut().enumerate() {
        *v = acc[0][l] + acc[1][l];
    }
    sum_lanes(&lanes)
}

/// `out[i] = <q, concat_j C[rows[i][j]]>` for rotated query `q` (length `d`): gathers each
/// slot's codewords into an L1 scratch vector and takes an 8-lane dot product. `K` is the block
/// size when known at compile time, 0 for "use `k`".
#[inline(always)]
pub fn gather_dots<const K: usize, T: IndexCell>(
    q: &[f32],
    codewords: &[f32],
    k: usize,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    let d = q.len();
    if (K == 4 || K == 8) && d.is_multiple_of(8) {
        // Codewords are whole register halves or registers: multiply them in place, in the same
        // lanes and order as `dot_lanes` on the gathered vector (so results are identical).
        let n = codewords.len() / K;
        for (o, ids) in out.iter_mut().zip(rows.iter()) {
            check_row(ids, n);
            let mut acc = [[0f32; 8]; 2];
            for (g, (q8, group)) in q.chunks_exact(8).zip(ids.chunks_exact(8 / K)).enumerate() {
                for (t, &i) in group.iter().enumerate() {
                    let c = codeword::<K>(codewords, i.index());
                    for l in 0..K {
                        acc[g % 2][t * K + l] += q8[t * K + l] * c[l];
                    }
                }
            }
            *o = sum_pair(&acc);
        }
        return;
    }
    let mut x = [0f32; super::MAX_DIM];
    let x = &mut x[..d];
    for (o, ids) in out.iter_mut().zip(rows.iter()) {
        gather::<K, T>(codewords, k, ids, x);
        *o = dot_lanes(q, x);
    }
}

/// `acc += sum_i w[i] * concat_j C[rows[i][j]]` (`acc.len() = d`).
#[inline(always)]
pub fn gather_accumulate<const K: usize, T: IndexCell>(
    w: &[f32],
    codewords: &[f32],
    k: usize,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    let d = acc.len();
    if K == 2 || K >= 4 {
        // A codeword fills (part of) a vector register: multiply-add it in place, four values
        // at a time so that the accumulator's load-add-store chain is paid once per four.
        let mut w4 = w.chunks_exact(4);
        let mut it = rows.iter();
        let n = codewords.len() / K;
        for w4 in w4.by_ref() {
            let (Some(i0), Some(i1), Some(i2), Some(i3)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return;
            };
            for ids in [i0, i1, i2, i3] {
                check_row(ids, n);
            }
            for (j, a) in acc.chunks_exact_mut(K).enumerate() {
                let c0 = codeword::<K>(codewords, i0[j].index());
                let c1 = codeword::<K>(codewords, i1[j].index());
                let c2 = codeword::<K>(codewords, i2[j].index());
                let c3 = codeword::<K>(codewords, i3[j].index());
                for l in 0..K {
                    a[l] += (w4[0] * c0[l] + w4[1] * c1[l]) + (w4[2] * c2[l] + w4[3] * c3[l]);
                }
            }
        }
        for (&wi, ids) in w4.remainder().iter().zip(it) {
            check_row(ids, n);
            for (a, &i) in acc.chunks_exact_mut(K).zip(ids) {
                let c = codeword::<K>(codewords, i.index());
                for l in 0..K {
                    a[l] += wi * c[l];
                }
            }
        }
        return;
    }
    let mut x = [0f32; super::MAX_DIM];
    let x = &mut x[..d];
    for (&wi, ids) in w.iter().zip(rows.iter()) {
        gather::<K, T>(codewords, k, ids, x);
        for (a, &v) in acc.iter_mut().zip(x.iter()) {
            *a += wi * v;
        }
    }
}

/// Reads the binary16 norm at the start of each slot (consecutive slots of `slot_bytes` bytes)
/// into `out` as `f32`.
#[inline(always)]
pub fn norms_f16(slots: &[u8], slot_bytes: usize, out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(slots.chunks_exact(slot_bytes)) {
        *o = crate::util::fp16::f16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

/// A grid of candidate lists ([`crate::search::cells::CellIndex`]) as the search kernel reads it.
#[derive(Debug, Clone, Copy)]
pub struct CellGrid<'a> {
    /// Interior boundaries per coordinate, ascending, padded with `+inf`.
    pub inner: &'a [f32; 16],
    /// Half-width of the covered box.
    pub radius: f32,
    /// Cell-number stride of each coordinate (`per_dim^j`).
    pub strides: &'a [u32],
    /// Group offset of each cell's list, plus the end.
    pub starts: &'a [u32],
    /// The candidates, [`LANES`] per group; a group is `K + 2` rows of [`LANES`] values: the `K`
    /// coordinates (lane layout), the squared norms (`+inf` padding) and the codebook indices as
    /// `f32` bit patterns (`u32::MAX` padding), so that one cell's list is a few adjacent cache
    /// lines.
    pub groups: &'a [f32],
}

/// Answer written by [`nearest_cells`] for a block outside the grid's box (or not finite): the
/// caller searches it exhaustively.
pub const OUTSIDE: u32 = u32::MAX;

/// The cell of the block `x` (`K` values) in `grid`, or `None` when `x` leaves the box (or is
/// not finite). Branch-free up to the final test.
#[inline(always)]
pub fn grid_cell<const K: usize>(grid: &CellGrid, x: &[f32]) -> Option<usize> {
    cell_in::<K>(grid.inner, grid.radius, grid.strides, x)
}

/// The cell of the block `x` (`K` values) of a grid with interior boundaries `inner` (padded
/// with `+inf`), box half-width `radius` and cell-number strides `strides`, or `None` when `x`
/// leaves the box (or is not finite).
#[inline(always)]
pub fn cell_in<const K: usize>(
    inner: &[f32; 16],
    radius: f32,
    strides: &[u32],
    x: &[f32],
) -> Option<usize> {
    let mut cell = 0u32;
    let mut inside = true;
    for (&v, &stride) in x[..K].iter().zip(strides) {
        // Also false for NaN.
        inside &= v.abs() <= radius;
        let d: u32 = inner.iter().map(|&b| (b <= v) as u32).sum();
        cell += d * stride;
    }
    inside.then_some(cell as usize)
}

/// A grid of certified shortlists ([`crate::search::shortlist::ShortlistIndex`]) as the search kernel
/// reads it. The kernels agree with each other only on grids that index builds: `norms` must
/// be the codewords' squared norms computed as `sum of c_j * c_j` in f32 (the AVX2 kernel
/// recomputes them), and the dispatcher [`super::nearest_shortlist`] answers nothing for a grid
/// whose table sizes do not fit together.
#[derive(Debug, Clone, Copy)]
pub struct ShortlistGrid<'a> {
    /// Interior boundaries per coordinate, ascending, padded with `+inf`.
    pub inner: &'a [f32; 16],
    /// Half-width of the covered box.
    pub radius: f32,
    /// Cell-number stride of each coordinate (`per_dim^j`).
    pub strides: &'a [u32],
    /// Candidates per tier, a multiple of [`LANES`].
    pub slots: usize,
    /// Tiers per cell.
    pub tiers: usize,
    /// `slots * tiers` codeword indices per cell, tier after tier.
    pub ids: &'a [u16],
    /// Per cell and tier, the certificate bound: the answer found in the tiers scanned so far is
    /// accepted when its computed score plus `||x||^2` (in f64) is below it.
    pub bounds: &'a [f32],
    /// The codewords, `K` coordinates each.
    pub codewords: &'a [f32],
    /// Their squared norms as the codebook computes them (`sum of c_j * c_j` in f32, in order).
    pub norms: &'a [f32],
}

/// Lowest `(score, index)` pair over the lanes: the lowest score, then the lowest index among
/// the lanes holding it.
#[inline(always)]
fn merge_lanes(best: &[f32; LANES], best_id: &[u32; LANES]) -> (f32, u32) {
    let min = best
        .iter()
        .fold(f32::INFINITY, |m, &b| if b < m { b } else { m });
    let mut id = OUTSIDE;
    for l in 0..LANES {
        id = if best[l] == min {
            id.min(best_id[l])
        } else {
            id
        };
    }
    (min, id)
}

/// `||x||^2` in f64 (exact products; the sum's rounding is far inside the certificate's margin).
#[inline(always)]
pub fn norm_sq_f64(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum()
}

/// Nearest codeword of every `K`-coordinate block of `blocks` through the certified shortlists
/// `grid`, into `out`: per block, the cell from `K` boundary counts, then the cell's tiers one
/// after the other, computing each score `||c||^2 - 2 <x, c>` with the operations of
/// [`nearest_lanes`] in the same order and keeping per lane the lowest `(score, index)` pair;
/// after each tier the lanes merge to the lowest pair and the certificate is tested: the answer
/// stands when that score plus `||x||^2` is below the tier's bound. A block whose last tier
/// fails too (or outside the box) gets [`OUTSIDE`], for the caller to search another way.
#[inline(always)]
pub fn nearest_shortlist<const K: usize>(grid: &ShortlistGrid, blocks: &[f32], out: &mut [u32]) {
    let per_cell = grid.slots * grid.tiers;
    for (x, o) in blocks.chunks_exact(K).zip(out.iter_mut()) {
        *o = OUTSIDE;
        let Some(cell) = cell_in::<K>(grid.inner, grid.radius, grid.strides, x) else {
            continue;
        };
        let ids = &grid.ids[cell * per_cell..(cell + 1) * per_cell];
        let bounds = &grid.bounds[cell * grid.tiers..(cell + 1) * grid.tiers];
        let x_sq = norm_sq_f64(x);
        let mut best = [f32::INFINITY; LANES];
        let mut best_id = [OUTSIDE; LANES];
        for (tier, &bound) in ids.chunks_exact(grid.slots).zip(bounds) {
            for group in tier.chunks_exact(LANES) {
                let mut acc = [0f32; LANES];
                for (j, &xj) in x.iter().enumerate() {
                    for l in 0..LANES {
                        acc[l] += xj * grid.codewords[group[l] as usize * K + j];
                    }
                }
                for l in 0..LANES {
                    let id = group[l] as u32;
                    let s = grid.norms[id as usize] - 2.0 * acc[l];
                    let better = s < best[l] || (s == best[l] && id < best_id[l]);
                    best[l] = if better { s } else { best[l] };
                    best_id[l] = if better { id } else { best_id[l] };
                }
            }
            let (score, id) = merge_lanes(&best, &best_id);
            if (score as f64) + x_sq < bound as f64 {
                *o = id;
                break;
            }
        }
    }
}

/// Nearest codeword of every `K`-coordinate block of `blocks` through the grid `grid`, into
/// `out` (one per block): per block, the cell from `K` boundary counts, then a scan of that
/// cell's list computing each score `||c||^2 - 2 <x, c>` with the operations of
/// [`nearest_lanes`] in the same order; each lane keeps its lowest score and, among equal ones,
/// its first (lowest) index, and the lanes merge to the lowest index of the lowest score. Blocks
/// outside the box get [`OUTSIDE`]. One call per vector keeps the whole loop inlined: the lists
/// are short, so per-call overhead would dominate.
#[inline(always)]
pub fn nearest_cells<const K: usize>(grid: &CellGrid, blocks: &[f32], out: &mut [u32]) {
    let width = (K + 2) * LANES;
    for (x, o) in blocks.chunks_exact(K).zip(out.iter_mut()) {
        let Some(cell) = grid_cell::<K>(grid, x) else {
            *o = OUTSIDE;
            continue;
        };
        let (s, e) = (grid.starts[cell] as usize, grid.starts[cell + 1] as usize);
        let mut best = [f32::INFINITY; LANES];
        let mut best_id = [OUTSIDE; LANES];
        for group in grid.groups[s * width..e * width].chunks_exact(width) {
            let mut acc = [0f32; LANES];
            for (j, &xj) in x.iter().enumerate() {
                let row = &group[j * LANES..(j + 1) * LANES];
                for l in 0..LANES {
                    acc[l] += xj * row[l];
                }
            }
            let norms = &group[K * LANES..(K + 1) * LANES];
            let ids = &group[(K + 1) * LANES..(K + 2) * LANES];
            for l in 0..LANES {
                let s = norms[l] - 2.0 * acc[l];
                let better = s < best[l];
                best[l] = if better { s } else { best[l] };
                best_id[l] = if better { ids[l].to_bits() } else { best_id[l] };
            }
        }
        *o = merge_lanes(&best, &best_id).1;
    }
}

/// Dense matrix-vector product `out = M x` for a row-major `dim x dim` matrix (the forward Haar
/// rotation). Each row's dot product runs in 8 lanes (lane `l` sums the products of columns
/// `l, l + 8, ..` in order, the last partial group included) combined by [`sum_lanes`]: the
/// compiler vectorizes it, and the AVX2 build of the same code gives the same bits. Panics
/// unless `x.len() == out.len() == dim` and `matrix.len() == dim * dim`.
#[inline(always)]
pub fn dense_rotate(matrix: &[f32], dim: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == dim && out.len() == dim && matrix.len() == dim * dim);
    // Four rows at a time: four independent chains of additions instead of one (each row's own
    // order is unchanged).
    let mut o4 = out.chunks_exact_mut(4);
    let mut m4 = matrix.chunks_exact(4 * dim);
    for (o, rows) in o4.by_ref().zip(m4.by_ref()) {
        let (r01, r23) = rows.split_at(2 * dim);
        let ((r0, r1), (r2, r3)) = (r01.split_at(dim), r23.split_at(dim));
        let mut lanes = [[0f32; 8]; 4];
        let groups = r0
            .chunks_exact(8)
            .zip(r1.chunks_exact(8))
            .zip(r2.chunks_exact(8).zip(r3.chunks_exact(8)))
            .zip(x.chunks_exact(8));
        for (((a, b), (c, d)), v) in groups {
            for l in 0..8 {
                lanes[0][l] += a[l] * v[l];
                lanes[1][l] += b[l] * v[l];
                lanes[2][l] += c[l] * v[l];
                lanes[3][l] += d[l] * v[l];
            }
        }
        for ((o, lane), row) in o.iter_mut().zip(&mut lanes).zip([r0, r1, r2, r3]) {
            *o = finish_row(lane, row, x);
        }
    }
    for (o, row) in o4
        .into_remainder()
        .iter_mut()
        .zip(m4.remainder().chunks_exact(dim))
    {
        let mut lane = [0f32; 8];
        for (r, v) in row.chunks_exact(8).zip(x.chunks_exact(8)) {
            for l in 0..8 {
                lane[l] += r[l] * v[l];
            }
        }
        *o = finish_row(&mut lane, row, x);
    }
}

/// The last partial group of 8 of a [`dense_rotate`] row, then the lanes' sum.
#[inline(always)]
fn finish_row(lane: &mut [f32; 8], row: &[f32], x: &[f32]) -> f32 {
    let tail = row.chunks_exact(8).remainder();
    for (l, (r, v)) in tail.iter().zip(x.chunks_exact(8).remainder()).enumerate() {
        lane[l] += r * v;
    }
    sum_lanes(lane)
}

/// Transposed dense product `out = M^T y` for a row-major `dim x dim` matrix (the inverse Haar
/// rotation): `out` starts at zero and adds `row_i * y_i` for `i` in order, each coordinate on
/// its own (vectorized across coordinates, same bits on every ISA). Panics unless `y.len() ==
/// out.len() == dim` and `matrix.len() == dim * dim`.
#[inline(always)]
pub fn dense_rotate_transposed(matrix: &[f32], dim: usize, y: &[f32], out: &mut [f32]) {
    assert!(y.len() == dim && out.len() == dim && matrix.len() == dim * dim);
    out.iter_mut().for_each(|o| *o = 0.0);
    // Four rows per pass over `out` (a quarter of its loads and stores); each coordinate still
    // adds the rows in order.
    let mut m4 = matrix.chunks_exact(4 * dim);
    let mut y4 = y.chunks_exact(4);
    for (rows, y) in m4.by_ref().zip(y4.by_ref()) {
        let (r01, r23) = rows.split_at(2 * dim);
        let ((r0, r1), (r2, r3)) = (r01.split_at(dim), r23.split_at(dim));
        for ((o, (a, b)), (c, d)) in out.iter_mut().zip(r0.iter().zip(r1)).zip(r2.iter().zip(r3)) {
            *o = (((*o + a * y[0]) + b * y[1]) + c * y[2]) + d * y[3];
        }
    }
    for (row, &yi) in m4.remainder().chunks_exact(dim).zip(y4.remainder()) {
        for (o, a) in out.iter_mut().zip(row) {
            *o += a * yi;
        }
    }
}

/// `out[i] = <q, row_i>` for rows of binary16 bits, `q.len()` values each (the exact parts of
/// a KV cache): coordinate `j` adds `q[j] * row[j]` into lane `j % 8`, then [`sum_lanes`].
/// Panics unless `rows` holds `out.len()` rows.
#[inline(always)]
pub fn f16_row_dots(q: &[f32], rows: &[u16], out: &mut [f32]) {
    let d = q.len();
    assert!(
        d > 0 && rows.len() >= out.len() * d,
        "fewer fp16 rows than outputs"
    );
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        let mut lane = [0f32; 8];
        for (qc, rc) in q.chunks(8).zip(row.chunks(8)) {
            for ((l, &a), &b) in lane.iter_mut().zip(qc).zip(rc) {
                *l += a * crate::util::fp16::f16_bits_to_f32(b);
            }
        }
        *o = sum_lanes(&lane);
    }
}

/// Rows per tile of [`f16_row_accumulate`] (64 rows of d = 64 are 8 KiB: they stay in L1 while
/// each group of 8 coordinates is accumulated).
pub const F16_TILE_ROWS: usize = 64;

/// `acc += sum_i weights[i] * row_i` for rows of binary16 bits, `acc.len()` values each; every
/// coordinate adds the rows in order. Panics unless `rows` holds `weights.len()` rows.
#[inline(always)]
pub fn f16_row_accumulate(weights: &[f32], rows: &[u16], acc: &mut [f32]) {
    let d = acc.len();
    assert!(
        d > 0 && rows.len() >= weights.len() * d,
        "fewer fp16 rows than weights"
    );
    for (w, row) in weights.iter().zip(rows.chunks_exact(d)) {
        for (a, &b) in acc.iter_mut().zip(row) {
            *a += w * crate::util::fp16::f16_bits_to_f32(b);
        }
    }
}
