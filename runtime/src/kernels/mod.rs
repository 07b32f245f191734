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

#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod portable;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

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

/// Nearest codeword in a lane-grouped layout (see [`crate::codebook::SearchIndex`]): returns, for
/// each of the `LANES` lanes, the best score and the group it came from. The groups are
/// `norms.len() / 8`; panics unless `lanes` holds `k * 8` coordinates for each and `x` at least
/// `k`.
#[inline]
pub fn nearest_lanes(
    isa: Isa,
    lanes: &[f32],
    norms: &[f32],
    k: usize,
    x: &[f32],
) -> ([f32; 8], [u32; 8]) {
    assert!(
        x.len() >= k
            && k.checked_mul(8)
                .and_then(|row| row.checked_mul(norms.len() / 8))
                .is_some_and(|v| lanes.len() >= v),
        "lane layout or query shorter than the block size says"
    );
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            match k {
                1 => x86_64::nearest_lanes_fixed_avx2::<1>(lanes, norms, x),
                2 => x86_64::nearest_lanes_fixed_avx2::<2>(lanes, norms, x),
                3 => x86_64::nearest_lanes_fixed_avx2::<3>(lanes, norms, x),
                4 => x86_64::nearest_lanes_fixed_avx2::<4>(lanes, norms, x),
                8 => x86_64::nearest_lanes_fixed_avx2::<8>(lanes, norms, x),
                _ => x86_64::nearest_lanes_avx2(lanes, norms, k, x),
            }
        },
        _ => portable::nearest_lanes(lanes, norms, k, x),
    }
}

pub use portable::{IdLanes, LaneBest};

/// Updates `best` with the candidates in groups `ranges` of a lane-grouped list with ids (see
/// [`portable::nearest_ids`]): afterwards each lane holds its lowest `(score, id)` pair.
/// `list.lanes.len()` must be `groups * k * LANES`, `list.norms.len()` and `list.ids.len()`
/// `groups * LANES`; a range past `groups` panics.
#[inline]
pub fn nearest_ids(
    isa: Isa,
    list: IdLanes<'_>,
    k: usize,
    x: &[f32],
    ranges: &[(u32, u32)],
    best: &mut LaneBest,
) {
    let isa = usable(isa);
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        macro_rules! fixed {
            ($k:literal) => {
                // SAFETY: the caller's `isa` went through `usable`, so AVX2 was detected.
                unsafe { x86_64::nearest_ids_fixed_avx2::<$k>(list, x, ranges, best) }
            };
        }
        match k {
            2 => return fixed!(2),
            3 => return fixed!(3),
            4 => return fixed!(4),
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    portable::nearest_ids(list, k, x, ranges, best)
}

/// The balls a query may reach (see [`portable::ball_marks`]), as a bit set over at most 256
/// balls.
#[inline]
pub fn ball_marks(
    isa: Isa,
    scores: &[f32],
    radii: &[f64],
    x_sq: f64,
    err: f64,
    t: f64,
    scale: f64,
) -> [u64; 4] {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::ball_marks_avx2(scores, radii, x_sq, err, t, scale)
        },
        _ => portable::ball_marks(scores, radii, x_sq, err, t, scale),
    }
}

pub use portable::{CellGrid, ShortlistGrid, OUTSIDE};

/// Nearest codeword of every `k`-coordinate block of `blocks` through certified shortlists (see
/// [`portable::nearest_shortlist`]), into `out`; blocks outside the grid or whose answer the
/// certificate does not confirm get [`OUTSIDE`]. Specialized for `k` = 2, 3 and 4 (AVX2 for
/// `k = 4`); other `k` get [`OUTSIDE`] everywhere.
pub fn nearest_shortlist(
    isa: Isa,
    k: usize,
    grid: &ShortlistGrid,
    blocks: &[f32],
    out: &mut [u32],
) {
    let isa = usable(isa);
    // A grid the kernels could read differently (partial groups, no tiers, tables of the wrong
    // size) answers nothing rather than something ISA-dependent.
    let cells = grid.bounds.len() / grid.tiers.max(1);
    let shaped = grid.slots > 0
        && grid.slots.is_multiple_of(crate::codebook::LANES)
        && grid.tiers > 0
        && grid.bounds.len() == cells * grid.tiers
        && grid.ids.len() == cells * grid.slots * grid.tiers
        && grid.codewords.len() == k * grid.norms.len();
    if !shaped {
        out.fill(OUTSIDE);
        return;
    }
    match (isa, k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // was detected on this CPU.
        (Isa::Avx2 | Isa::Avx512, 4) => unsafe {
            x86_64::nearest_shortlist4_avx2(grid, blocks, out)
        },
        (_, 2) => portable::nearest_shortlist::<2>(grid, blocks, out),
        (_, 3) => portable::nearest_shortlist::<3>(grid, blocks, out),
        (_, 4) => portable::nearest_shortlist::<4>(grid, blocks, out),
        _ => out.fill(OUTSIDE),
    }
}

/// Nearest codeword of every `k`-coordinate block of `blocks` through a grid of candidate lists
/// (see [`portable::nearest_cells`]), into `out`; blocks outside the grid get [`OUTSIDE`].
/// Specialized for `k` = 2, 3, 4 and 8; other `k` get [`OUTSIDE`] everywhere.
pub fn nearest_cells(isa: Isa, k: usize, grid: &CellGrid, blocks: &[f32], out: &mut [u32]) {
    let isa = usable(isa);
    macro_rules! sizes {
        ($($k:literal)*) => {
            match (isa, k) {
                $(
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
                // and F16C were detected on this CPU.
                (Isa::Avx2 | Isa::Avx512, $k) => unsafe {
                    x86_64::nearest_cells_avx2::<$k>(grid, blocks, out)
                },
                (_, $k) => portable::nearest_cells::<$k>(grid, blocks, out),
                )*
                _ => out.fill(OUTSIDE),
            }
        };
    }
    sizes!(2 3 4 8)
}

/// Scores `||c||^2 - 2 <x, c>` of every codeword of a lane-grouped layout into `out`, in index
/// order (see [`portable::lane_scores`]).
#[inline]
pub fn lane_scores(isa: Isa, lanes: &[f32], norms: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            match k {
                2 => x86_64::lane_scores_fixed_avx2::<2>(lanes, norms, x, out),
                3 => x86_64::lane_scores_fixed_avx2::<3>(lanes, norms, x, out),
                4 => x86_64::lane_scores_fixed_avx2::<4>(lanes, norms, x, out),
                8 => x86_64::lane_scores_fixed_avx2::<8>(lanes, norms, x, out),
                _ => x86_64::lane_scores_avx2(lanes, norms, k, x, out),
            }
        },
        _ => portable::lane_scores(lanes, norms, k, x, out),
    }
}

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

/// Reads the binary16 norm at the start of each slot into `out` (one per slot).
pub fn norms_f16(isa: Isa, slots: &[u8], slot_bytes: usize, out: &mut [f32]) {
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_64::norms_f16_avx2(slots, slot_bytes, out) },
        _ => portable::norms_f16(slots, slot_bytes, out),
    }
}

/// Unpacks the `blocks` indices of each slot in `slots` (consecutive slots of `slot_bytes` bytes,
/// indices from byte `offset`) into `out`, `blocks` entries per slot. Widths 1 to 16 bits take a
/// compile-time specialized path. Rows of `out` beyond the whole slots of `slots` are left as
/// they are. Panics unless a slot holds its indices (`offset + ceil(blocks * bits / 8) <=
/// slot_bytes`).
pub fn unpack_slots(
    isa: Isa,
    bits: u32,
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    blocks: usize,
    out: &mut [u32],
) {
    let isa = usable(isa);
    assert!(
        slot_bytes > 0
            && offset
                .checked_add(crate::pack::packed_bytes(blocks, bits))
                .is_some_and(|end| end <= slot_bytes),
        "slots of {slot_bytes} bytes cannot hold {blocks} {bits}-bit indices after {offset} bytes"
    );
    macro_rules! widths {
        ($($b:literal)*) => {
            match bits {
                $($b => unpack_slots_fixed::<$b>(isa, slots, slot_bytes, offset, blocks, out),)*
                _ => {
                    for (slot, o) in slots.chunks_exact(slot_bytes).zip(out.chunks_exact_mut(blocks)) {
                        crate::pack::unpack(&slot[offset..], bits, o);
                    }
                }
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

#[inline]
fn unpack_slots_fixed<const BITS: u32>(
    isa: Isa,
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    blocks: usize,
    out: &mut [u32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 if BITS <= 14 && BITS != 8 => unsafe {
            x86_64::unpack_slots_shuffle_avx2::<BITS>(slots, slot_bytes, offset, blocks, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::unpack_slots_avx2::<BITS>(slots, slot_bytes, offset, blocks, out)
        },
        _ => portable::unpack_slots::<BITS>(slots, slot_bytes, offset, blocks, out),
    }
}

pub use portable::{IndexCell, IndexRows};

/// Look-up table scores: `out[i] = sum_j table[j * n + rows[i][j]]`. Every index must be below
/// `n` (an index beyond the table panics).
pub fn table_dots<T: IndexCell>(
    isa: Isa,
    table: &[f32],
    n: usize,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_64::table_dots_avx2(table, n, rows, out) },
        _ => portable::table_dots(table, n, rows, out),
    }
}

/// Byte-table scores: `out[i] = sum_p table[p][b]` over the index bytes `b` of slot `i` (see
/// [`portable::byte_table_dots`]). Panics unless a slot holds `table.len()` bytes after `offset`.
pub fn byte_table_dots(
    isa: Isa,
    table: &[[f32; 256]],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned `Isa::Avx2` or up, so AVX2 was detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::byte_table_dots_avx2(table, slots, slot_bytes, offset, out)
        },
        _ => portable::byte_table_dots(table, slots, slot_bytes, offset, out),
    }
}

/// Byte histogram of weights: `hist[p][b] += w[i]` over the index bytes `b` of slot `i` (see
/// [`portable::byte_histogram`]). Panics unless a slot holds `hist.len()` bytes after `offset`.
pub fn byte_histogram(
    isa: Isa,
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    hist: &mut [[f32; 256]],
) {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned `Isa::Avx2` or up, so AVX2 was detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::byte_histogram_avx2(w, slots, slot_bytes, offset, hist)
        },
        _ => portable::byte_histogram(w, slots, slot_bytes, offset, hist),
    }
}

/// Direct scores: `out[i] = <q, concat_j C[rows[i][j]]>` with `C` the `k`-dimensional
/// `codewords`; block sizes 1, 2, 3, 4 and 8 are specialized.
pub fn gather_dots<T: IndexCell>(
    isa: Isa,
    k: usize,
    q: &[f32],
    codewords: &[f32],
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    let isa = usable(isa);
    macro_rules! sizes {
        ($($k:literal)*) => {
            match k {
                $($k => gather_dots_fixed::<$k, T>(isa, q, codewords, k, rows, out),)*
                _ => gather_dots_fixed::<0, T>(isa, q, codewords, k, rows, out),
            }
        };
    }
    sizes!(1 2 3 4 8)
}

#[inline]
fn gather_dots_fixed<const K: usize, T: IndexCell>(
    isa: Isa,
    q: &[f32],
    codewords: &[f32],
    k: usize,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(rows) =
        T::as_u32_rows(rows).filter(|r| avx512_pairs(isa, K, codewords, q.len(), r.blocks))
    {
        // SAFETY: `avx512_pairs` checked the ISA (which went through `usable`), `k = 2`, at most
        // 64 codewords, `d % 32 == 0` and rows of `d / 2` indices.
        return unsafe { avx512::pair_dots(q, codewords, rows, out) };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 if has_codeword_kernel(isa, K, q.len()) => unsafe {
            x86_64::codeword_dots_avx2::<K, T, &[f32]>(q, codewords, rows, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::gather_dots_avx2::<K, T>(q, codewords, k, rows, out)
        },
        _ => portable::gather_dots::<K, T>(q, codewords, k, rows, out),
    }
}

/// Direct weighted sum in the rotated domain: `acc += sum_i w[i] * concat_j C[rows[i][j]]`.
pub fn gather_accumulate<T: IndexCell>(
    isa: Isa,
    k: usize,
    w: &[f32],
    codewords: &[f32],
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    let isa = usable(isa);
    macro_rules! sizes {
        ($($k:literal)*) => {
            match k {
                $($k => gather_accumulate_fixed::<$k, T>(isa, w, codewords, k, rows, acc),)*
                _ => gather_accumulate_fixed::<0, T>(isa, w, codewords, k, rows, acc),
            }
        };
    }
    sizes!(1 2 3 4 8)
}

#[inline]
fn gather_accumulate_fixed<const K: usize, T: IndexCell>(
    isa: Isa,
    w: &[f32],
    codewords: &[f32],
    k: usize,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(rows) =
        T::as_u32_rows(rows).filter(|r| avx512_pairs(isa, K, codewords, acc.len(), r.blocks))
    {
        // SAFETY: as in `gather_dots_fixed`.
        return unsafe { avx512::pair_accumulate(w, codewords, rows, acc) };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 if has_codeword_kernel(isa, K, acc.len()) => unsafe {
            x86_64::codeword_accumulate_avx2::<K, T, &[f32]>(w, codewords, rows, acc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::gather_accumulate_avx2::<K, T>(w, codewords, k, rows, acc)
        },
        _ => portable::gather_accumulate::<K, T>(w, codewords, k, rows, acc),
    }
}

/// A codebook rounded to f16: the half bits (read by the AVX2 kernels) and the same values as
/// f32 (read by the portable ones; the conversion is exact, so both give the same results).
#[derive(Debug, Clone, Copy)]
pub struct HalfCodebook<'a> {
    /// The f16 bits of every codeword value.
    pub halves: &'a [u16],
    /// The same values widened to f32.
    pub widened: &'a [f32],
}

/// [`gather_dots`] on a codebook rounded to f16: the AVX2 whole-codeword kernel converts the
/// halves on load (F16C); elsewhere [`gather_dots`] runs on the widened copy. Same results.
pub fn gather_dots_half<T: IndexCell>(
    isa: Isa,
    k: usize,
    q: &[f32],
    codebook: HalfCodebook<'_>,
    rows: IndexRows<T>,
    out: &mut [f32],
) {
    let isa = usable(isa);
    #[cfg(target_arch = "x86_64")]
    if has_codeword_kernel(isa, k, q.len()) {
        let half = x86_64::HalfCodewords(codebook.halves);
        // SAFETY: `has_codeword_kernel` means `isa` is AVX2 or AVX-512, which `usable` confirmed
        // this CPU has (with F16C), and checked `k` and `d % 8 == 0`.
        match k {
            2 => return unsafe { x86_64::codeword_dots_avx2::<2, T, _>(q, half, rows, out) },
            4 => return unsafe { x86_64::codeword_dots_avx2::<4, T, _>(q, half, rows, out) },
            8 => return unsafe { x86_64::codeword_dots_avx2::<8, T, _>(q, half, rows, out) },
            _ => {}
        }
    }
    gather_dots(isa, k, q, codebook.widened, rows, out)
}

/// [`gather_accumulate`] on a codebook rounded to f16 (as [`gather_dots_half`]).
pub fn gather_accumulate_half<T: IndexCell>(
    isa: Isa,
    k: usize,
    w: &[f32],
    codebook: HalfCodebook<'_>,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    let isa = usable(isa);
    #[cfg(target_arch = "x86_64")]
    if has_codeword_kernel(isa, k, acc.len()) {
        let half = x86_64::HalfCodewords(codebook.halves);
        // SAFETY: as in `gather_dots_half`.
        match k {
            2 => return unsafe { x86_64::codeword_accumulate_avx2::<2, T, _>(w, half, rows, acc) },
            4 => return unsafe { x86_64::codeword_accumulate_avx2::<4, T, _>(w, half, rows, acc) },
            8 => return unsafe { x86_64::codeword_accumulate_avx2::<8, T, _>(w, half, rows, acc) },
            _ => {}
        }
    }
    gather_accumulate(isa, k, w, codebook.widened, rows, acc)
}

/// Calls the group kernel `$kernel::<K, G, T, _>` for block size `$k` (2, 4, else 8) and
/// `$take` queries (1 to 3, else 4): the const parameters of the group kernels.
#[cfg(target_arch = "x86_64")]
macro_rules! group_kernel {
    ($kernel:ident, $t:ty, $k:expr, $take:expr, $($arg:expr),*) => {
        match ($k, $take) {
            (2, 1) => x86_64::$kernel::<2, 1, $t, _>($($arg),*),
            (2, 2) => x86_64::$kernel::<2, 2, $t, _>($($arg),*),
            (2, 3) => x86_64::$kernel::<2, 3, $t, _>($($arg),*),
            (2, _) => x86_64::$kernel::<2, 4, $t, _>($($arg),*),
            (4, 1) => x86_64::$kernel::<4, 1, $t, _>($($arg),*),
            (4, 2) => x86_64::$kernel::<4, 2, $t, _>($($arg),*),
            (4, 3) => x86_64::$kernel::<4, 3, $t, _>($($arg),*),
            (4, _) => x86_64::$kernel::<4, 4, $t, _>($($arg),*),
            (_, 1) => x86_64::$kernel::<8, 1, $t, _>($($arg),*),
            (_, 2) => x86_64::$kernel::<8, 2, $t, _>($($arg),*),
            (_, 3) => x86_64::$kernel::<8, 3, $t, _>($($arg),*),
            (_, _) => x86_64::$kernel::<8, 4, $t, _>($($arg),*),
        }
    };
}

/// A codebook as the group kernels read it: f32 values, or its f16 copy.
#[derive(Debug, Clone, Copy)]
pub enum GroupCodebook<'a> {
    /// f32 codewords.
    F32(&'a [f32]),
    /// The f16 copy ([`gather_dots_half`]).
    Half(HalfCodebook<'a>),
}

/// [`gather_dots`] (or [`gather_dots_half`]) of `g = queries.len() / d` queries against the
/// same rows: query `g`'s score of row `i` goes to `out[g * stride + i]`, with exactly the bits
/// of the single-query kernel. With AVX2's whole-codeword kernels each codeword is read once for
/// all the queries (grouped-query attention); elsewhere the queries run one at a time.
#[allow(clippy::too_many_arguments)]
pub fn gather_dots_group<T: IndexCell>(
    isa: Isa,
    k: usize,
    d: usize,
    queries: &[f32],
    codebook: GroupCodebook<'_>,
    rows: IndexRows<T>,
    out: &mut [f32],
    stride: usize,
) {
    let groups = queries.len() / d;
    let count = rows.count();
    assert!(
        queries.len().is_multiple_of(d)
            && stride >= count
            && out.len() >= (groups.max(1) - 1) * stride + count,
        "group output too short"
    );
    let isa = usable(isa);
    #[cfg(target_arch = "x86_64")]
    if has_codeword_kernel(isa, k, d) {
        macro_rules! run {
            ($cw:expr) => {{
                let mut g0 = 0;
                while g0 < groups {
                    let take = (groups - g0).min(4);
                    let q = &queries[g0 * d..(g0 + take) * d];
                    let o = &mut out[g0 * stride..];
                    // SAFETY: `has_codeword_kernel` means AVX2 and F16C on this CPU (`usable`),
                    // `k` of 2, 4 or 8 and `d % 8 == 0`; the lengths were checked above.
                    unsafe {
                        group_kernel!(
                            codeword_dots_group_avx2,
                            T,
                            k,
                            take,
                            q,
                            $cw,
                            rows,
                            o,
                            stride
                        )
                    }
                    g0 += take;
                }
            }};
        }
        match codebook {
            GroupCodebook::F32(cw) => run!(cw),
            GroupCodebook::Half(h) => run!(x86_64::HalfCodewords(h.halves)),
        }
        return;
    }
    for g in 0..groups {
        let q = &queries[g * d..(g + 1) * d];
        let o = &mut out[g * stride..g * stride + count];
        match codebook {
            GroupCodebook::F32(cw) => gather_dots(isa, k, q, cw, rows, o),
            GroupCodebook::Half(h) => gather_dots_half(isa, k, q, h, rows, o),
        }
    }
}

/// [`gather_accumulate`] (or [`gather_accumulate_half`]) of `g = acc.len() / d` weight vectors
/// over the same rows: vector `g`'s weights are `w[g * stride..]` and it adds into
/// `acc[g * d..][..d]`, with exactly the bits of the single-vector kernel (see
/// [`gather_dots_group`]).
#[allow(clippy::too_many_arguments)]
pub fn gather_accumulate_group<T: IndexCell>(
    isa: Isa,
    k: usize,
    d: usize,
    w: &[f32],
    stride: usize,
    codebook: GroupCodebook<'_>,
    rows: IndexRows<T>,
    acc: &mut [f32],
) {
    let groups = acc.len() / d;
    let count = rows.count();
    assert!(
        acc.len().is_multiple_of(d)
            && stride >= count
            && w.len() >= (groups.max(1) - 1) * stride + count,
        "group weights too short"
    );
    let isa = usable(isa);
    #[cfg(target_arch = "x86_64")]
    if has_codeword_kernel(isa, k, d) {
        macro_rules! run {
            ($cw:expr) => {{
                let mut g0 = 0;
                while g0 < groups {
                    let take = (groups - g0).min(4);
                    let wg = &w[g0 * stride..];
                    let a = &mut acc[g0 * d..(g0 + take) * d];
                    // SAFETY: as in `gather_dots_group`.
                    unsafe {
                        group_kernel!(
                            codeword_accumulate_group_avx2,
                            T,
                            k,
                            take,
                            wg,
                            stride,
                            $cw,
                            rows,
                            a
                        )
                    }
                    g0 += take;
                }
            }};
        }
        match codebook {
            GroupCodebook::F32(cw) => run!(cw),
            GroupCodebook::Half(h) => run!(x86_64::HalfCodewords(h.halves)),
        }
        return;
    }
    for g in 0..groups {
        let wg = &w[g * stride..g * stride + count];
        let a = &mut acc[g * d..(g + 1) * d];
        match codebook {
            GroupCodebook::F32(cw) => gather_accumulate(isa, k, wg, cw, rows, a),
            GroupCodebook::Half(h) => gather_accumulate_half(isa, k, wg, h, rows, a),
        }
    }
}

/// Whether [`gather_dots`] and [`gather_accumulate`] use whole-register codeword products on
/// `isa` for block size `k` and dimension `d` (AVX2, `k` of 2, 4 or 8, `d % 8 == 0`) rather than
/// a gather into scratch memory. An `isa` this CPU lacks is lowered first, as the kernels lower
/// it, so the answer is about the code that would run.
pub fn has_codeword_kernel(isa: Isa, k: usize, d: usize) -> bool {
    matches!(usable(isa), Isa::Avx2 | Isa::Avx512) && matches!(k, 2 | 4 | 8) && d.is_multiple_of(8)
}

/// Whether [`gather_dots`] and [`gather_accumulate`] keep a `k = 2` codebook in AVX-512 registers
/// (at most 64 codewords, `d % 32 == 0`, unpacked `u32` rows of `d / 2` indices): two permutes
/// and a blend per coordinate of 16 blocks replace 16 codeword loads.
#[cfg(target_arch = "x86_64")]
fn avx512_pairs(isa: Isa, k: usize, codewords: &[f32], d: usize, blocks: usize) -> bool {
    isa == Isa::Avx512
        && k == 2
        && (2..=2 * avx512::PAIR_CODEWORDS).contains(&codewords.len())
        && d.is_multiple_of(32)
        && 2 * blocks == d
}

/// Whether [`scalar_dots`] and [`scalar_accumulate`] have an in-register kernel for `bits`-bit
/// scalar (`k = 1`) codes of dimension `d` on `isa`. When they do not, callers unpack and use
/// [`gather_dots`] / [`gather_accumulate`] with `k = 1`, which give bit-identical results. An
/// `isa` this CPU lacks is lowered first, as the kernels lower it: on a CPU without AVX2 (an
/// aarch64 one, say) the answer is `false` for every `isa`, and [`scalar_dots`] would panic.
pub fn has_scalar_kernel(isa: Isa, bits: u32, d: usize) -> bool {
    matches!(usable(isa), Isa::Avx2 | Isa::Avx512) && (1..=4).contains(&bits) && d.is_multiple_of(8)
}

/// Whether the scalar-code kernels use their AVX-512 version: for 16 levels (4-bit codes) one
/// 512-bit `vpermps` replaces two 256-bit ones and a blend; with 8 levels or fewer the AVX2
/// version measured as fast (compare with `FIBQUANT_ISA=avx2 fibquant-gen bench`).
#[cfg(target_arch = "x86_64")]
fn avx512_scalar(isa: Isa, bits: u32, d: usize) -> bool {
    isa == Isa::Avx512 && bits == 4 && d.is_multiple_of(16)
}

/// Scalar-code scores straight from the packed slots (`levels`: the `2^bits` levels padded to
/// 16): `out[i] = <q, C[idx_i]>`. Only where [`has_scalar_kernel`] says so; panics otherwise.
#[allow(clippy::too_many_arguments)]
pub fn scalar_dots(
    isa: Isa,
    bits: u32,
    levels: &[f32; 16],
    q: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    out: &mut [f32],
) {
    let isa = usable(isa);
    assert!(has_scalar_kernel(isa, bits, q.len()), "no scalar kernel");
    portable::check_byte_layout(slot_bytes, offset, q.len() * bits as usize / 8);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `has_scalar_kernel` checked AVX2 (`isa` went through `usable`), `bits` in 1..=4 and
    // `d % 8 == 0` (`d % 16 == 0` for the AVX-512 kernel); the slot size was asserted above.
    unsafe {
        if avx512_scalar(isa, bits, q.len()) {
            // AVX-512 was checked by `supported` before producing `Isa::Avx512`.
            avx512::scalar_dots::<4>(levels, q, slots, slot_bytes, offset, out);
            return;
        }
        match bits {
            1 => x86_64::scalar_dots_avx2::<1>(levels, q, slots, slot_bytes, offset, out),
            2 => x86_64::scalar_dots_avx2::<2>(levels, q, slots, slot_bytes, offset, out),
            3 => x86_64::scalar_dots_avx2::<3>(levels, q, slots, slot_bytes, offset, out),
            _ => x86_64::scalar_dots_avx2::<4>(levels, q, slots, slot_bytes, offset, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (levels, slots, out);
}

/// Scalar-code weighted sum straight from the packed slots: `acc += sum_i w[i] * C[idx_i]`.
/// Only where [`has_scalar_kernel`] says so; panics otherwise.
#[allow(clippy::too_many_arguments)]
pub fn scalar_accumulate(
    isa: Isa,
    bits: u32,
    levels: &[f32; 16],
    w: &[f32],
    slots: &[u8],
    slot_bytes: usize,
    offset: usize,
    acc: &mut [f32],
) {
    let isa = usable(isa);
    assert!(has_scalar_kernel(isa, bits, acc.len()), "no scalar kernel");
    portable::check_byte_layout(slot_bytes, offset, acc.len() * bits as usize / 8);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `scalar_dots`.
    unsafe {
        if avx512_scalar(isa, bits, acc.len()) {
            // AVX-512 was checked by `supported` before producing `Isa::Avx512`.
            avx512::scalar_accumulate::<4>(levels, w, slots, slot_bytes, offset, acc);
            return;
        }
        match bits {
            1 => x86_64::scalar_accumulate_avx2::<1>(levels, w, slots, slot_bytes, offset, acc),
            2 => x86_64::scalar_accumulate_avx2::<2>(levels, w, slots, slot_bytes, offset, acc),
            3 => x86_64::scalar_accumulate_avx2::<3>(levels, w, slots, slot_bytes, offset, acc),
            _ => x86_64::scalar_accumulate_avx2::<4>(levels, w, slots, slot_bytes, offset, acc),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (levels, w, slots, acc);
}

/// `out[i] = <q, row_i>` over rows of binary16 bits, `q.len()` values each: the exact (fp16)
/// parts of a [`crate::cache::KvCache`]. Panics unless `rows` holds `out.len()` rows.
pub fn f16_row_dots(isa: Isa, q: &[f32], rows: &[u16], out: &mut [f32]) {
    assert!(
        !q.is_empty() && rows.len() >= out.len() * q.len(),
        "fewer fp16 rows than outputs"
    );
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` returned `Isa::Avx2` or up, so AVX2 and F16C were detected; the
        // lengths were checked above and d is a multiple of 8.
        Isa::Avx2 | Isa::Avx512 if q.len().is_multiple_of(8) => unsafe {
            x86_64::f16_row_dots_avx2(q, rows, out)
        },
        _ => portable::f16_row_dots(q, rows, out),
    }
}

/// `acc += sum_i weights[i] * row_i` over rows of binary16 bits, `acc.len()` values each.
/// Panics unless `rows` holds `weights.len()` rows.
pub fn f16_row_accumulate(isa: Isa, weights: &[f32], rows: &[u16], acc: &mut [f32]) {
    assert!(
        !acc.is_empty() && rows.len() >= weights.len() * acc.len(),
        "fewer fp16 rows than weights"
    );
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `f16_row_dots`.
        Isa::Avx2 | Isa::Avx512 if acc.len().is_multiple_of(8) => unsafe {
            x86_64::f16_row_accumulate_avx2(weights, rows, acc)
        },
        _ => portable::f16_row_accumulate(weights, rows, acc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Xoshiro256;

    fn isas() -> Vec<Isa> {
        let v = supported();
        if v.len() == 1 {
            eprintln!("no SIMD level available: only the portable kernels are tested");
        }
        v
    }

    #[test]
    fn f16_row_kernels_match_portable_bit_for_bit() {
        let mut rng = Xoshiro256::new(77);
        for d in [8, 16, 24, 64, 96, 128, 12] {
            for rows in [0, 1, 7, 64, 65, 200] {
                let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
                let bits: Vec<u16> = (0..rows * d)
                    .map(|_| crate::fp16::f32_to_f16_bits(rng.next_gaussian() as f32 * 3.0))
                    .collect();
                let w: Vec<f32> = (0..rows).map(|_| rng.next_open01() as f32).collect();
                let mut want = vec![0f32; rows];
                portable::f16_row_dots(&q, &bits, &mut want);
                let mut want_acc = vec![0.5f32; d];
                portable::f16_row_accumulate(&w, &bits, &mut want_acc);
                // The portable reference against the plain dot product in f64.
                for (i, &s) in want.iter().enumerate() {
                    let exact: f64 = (0..d)
                        .map(|j| q[j] as f64 * crate::fp16::f16_bits_to_f32(bits[i * d + j]) as f64)
                        .sum();
                    assert!(
                        (s as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()),
                        "d={d}"
                    );
                }
                for isa in isas() {
                    let mut got = vec![0f32; rows];
                    f16_row_dots(isa, &q, &bits, &mut got);
                    let mut acc = vec![0.5f32; d];
                    f16_row_accumulate(isa, &w, &bits, &mut acc);
                    let same = |a: &[f32], b: &[f32]| {
                        a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                    };
                    assert!(same(&got, &want), "{isa:?} d={d} rows={rows} dots");
                    assert!(
                        same(&acc, &want_acc),
                        "{isa:?} d={d} rows={rows} accumulate"
                    );
                }
            }
        }
    }

    fn panics(f: impl FnOnce()) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
    }

    #[test]
    fn safe_dispatchers_refuse_what_their_simd_kernels_could_not_read() {
        for isa in isas() {
            // Not a power of two: the AVX2 transform would have stored past the end.
            for n in [3, 12, 24, 100] {
                assert!(panics(|| fwht(isa, &mut vec![1.0; n])), "{isa:?} n={n}");
            }
            fwht(isa, &mut []);
            // A generic-k lane layout shorter than its norms say.
            let norms = [0f32; 16];
            for k in [5, 6, 7] {
                assert!(panics(|| {
                    nearest_lanes(isa, &vec![0.0; 8 * k], &norms, k, &[0.0; 8]);
                }));
                let (s, _) = nearest_lanes(isa, &vec![0.5; 16 * k], &norms, k, &[1.0; 8]);
                assert_eq!(s, [-(k as f32); 8], "{isa:?} k={k}");
            }
            // blocks * n overflows: the table check must not wrap around.
            let ids = [0u32, 1, 2, 3];
            let rows = IndexRows {
                data: &ids[..],
                stride: 2,
                offset: 0,
                blocks: 2,
            };
            assert!(panics(|| table_dots(
                isa,
                &[],
                usize::MAX / 2 + 1,
                rows,
                &mut [0.0; 2]
            )));
        }
        // An offset that overflows with the index bytes.
        for isa in supported() {
            if has_scalar_kernel(isa, 2, 8) {
                let q = [1f32; 8];
                assert!(panics(|| scalar_dots(
                    isa,
                    2,
                    &[0.0; 16],
                    &q,
                    &[0; 8],
                    4,
                    usize::MAX,
                    &mut [0.0; 2]
                )));
            }
        }
    }

    #[test]
    fn every_dense_rotation_path_is_bit_identical_to_portable() {
        let mut rng = Xoshiro256::new(5);
        for dim in [1, 3, 8, 12, 80, 96, 100] {
            let m: Vec<f32> = (0..dim * dim).map(|_| rng.next_gaussian() as f32).collect();
            let x: Vec<f32> = (0..dim).map(|_| rng.next_gaussian() as f32).collect();
            let (mut want, mut want_t) = (vec![0f32; dim], vec![0f32; dim]);
            portable::dense_rotate(&m, dim, &x, &mut want);
            portable::dense_rotate_transposed(&m, dim, &x, &mut want_t);
            // Against f64 sums: within the rounding of dim products and sums.
            for i in 0..dim {
                let exact: f64 = (0..dim).map(|j| m[i * dim + j] as f64 * x[j] as f64).sum();
                let exact_t: f64 = (0..dim).map(|j| m[j * dim + i] as f64 * x[j] as f64).sum();
                let bound: f64 = (0..dim).map(|j| (m[i * dim + j] * x[j]).abs() as f64).sum();
                let bound_t: f64 = (0..dim).map(|j| (m[j * dim + i] * x[j]).abs() as f64).sum();
                let eps = f32::EPSILON as f64 * (dim as f64 + 1.0);
                assert!(
                    (want[i] as f64 - exact).abs() <= eps * bound,
                    "dim {dim} row {i}"
                );
                assert!(
                    (want_t[i] as f64 - exact_t).abs() <= eps * bound_t,
                    "dim {dim} col {i}"
                );
            }
            for isa in isas() {
                let (mut got, mut got_t) = (vec![0f32; dim], vec![0f32; dim]);
                dense_rotate(isa, &m, dim, &x, &mut got);
                dense_rotate_transposed(isa, &m, dim, &x, &mut got_t);
                assert_eq!(got, want, "{isa:?} dim {dim}");
                assert_eq!(got_t, want_t, "{isa:?} dim {dim}");
            }
        }
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

    #[test]
    fn every_lane_score_path_equals_the_per_codeword_formula() {
        let mut rng = Xoshiro256::new(5);
        for k in [1, 2, 3, 4, 8] {
            for n in [1usize, 7, 8, 9, 256] {
                let cw: Vec<f32> = (0..n * k).map(|_| rng.next_gaussian() as f32).collect();
                let groups = n.div_ceil(8);
                let mut lanes = vec![0f32; groups * k * 8];
                let mut norms = vec![f32::INFINITY; groups * 8];
                for (i, c) in cw.chunks_exact(k).enumerate() {
                    for (j, &v) in c.iter().enumerate() {
                        lanes[((i / 8) * k + j) * 8 + i % 8] = v;
                    }
                    norms[i] = c.iter().map(|v| v * v).sum();
                }
                let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
                // The formula, one codeword at a time, in the kernels' order.
                let want: Vec<f32> = cw
                    .chunks_exact(k)
                    .enumerate()
                    .map(|(i, c)| {
                        let mut acc = 0f32;
                        for (xj, cj) in x.iter().zip(c) {
                            acc += xj * cj;
                        }
                        norms[i] - 2.0 * acc
                    })
                    .collect();
                for isa in isas() {
                    let mut got = vec![0f32; n];
                    lane_scores(isa, &lanes, &norms, k, &x, &mut got);
                    assert_eq!(got, want, "{isa:?} k={k} n={n}");
                }
            }
        }
    }

    #[test]
    fn every_nearest_path_breaks_ties_like_the_portable_scan() {
        // Codewords repeating with a period of 1, 2 and 3 groups: every lane sees equal scores
        // in several groups and must keep the first one.
        let mut rng = Xoshiro256::new(4);
        for k in [1, 2, 3, 4, 8] {
            for period in [1, 2, 3] {
                for groups in [1, 2, 3, 6, 7] {
                    let base: Vec<f32> = (0..period * k * 8)
                        .map(|_| rng.next_gaussian() as f32)
                        .collect();
                    let lanes: Vec<f32> = (0..groups)
                        .flat_map(|g| base[(g % period) * k * 8..][..k * 8].to_vec())
                        .collect();
                    let norms: Vec<f32> = (0..groups * 8)
                        .map(|i| {
                            let (g, l) = (i / 8, i % 8);
                            (0..k).map(|j| lanes[(g * k + j) * 8 + l].powi(2)).sum()
                        })
                        .collect();
                    let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
                    let want = portable::nearest_lanes(&lanes, &norms, k, &x);
                    for isa in isas() {
                        assert_eq!(
                            nearest_lanes(isa, &lanes, &norms, k, &x),
                            want,
                            "{isa:?} k={k} period={period} groups={groups}"
                        );
                    }
                }
            }
        }
    }

    /// The ranged `(score, id)` scan on every ISA against the portable one, bit for bit: `k` = 2,
    /// 3 and 4 (specialized) and 1 (portable everywhere), ranges of odd and even lengths, empty
    /// and repeated, a running best carried in, duplicated codewords (equal scores, the lower
    /// id must win) and padding (infinite norm, id `u32::MAX`); and against a direct
    /// lexicographic minimum.
    #[test]
    fn every_ranged_id_scan_path_is_bit_identical_to_portable() {
        let mut rng = Xoshiro256::new(29);
        for k in [1, 2, 3, 4] {
            let groups = 9;
            let mut lanes: Vec<f32> = (0..groups * k * 8)
                .map(|_| rng.next_gaussian() as f32)
                .collect();
            // Group 4 repeats group 1 (ties), with higher ids below.
            let (head, tail) = lanes.split_at_mut(4 * k * 8);
            tail[..k * 8].copy_from_slice(&head[k * 8..2 * k * 8]);
            let mut norms: Vec<f32> = (0..groups * 8)
                .map(|i| {
                    (0..k)
                        .map(|j| lanes[((i / 8) * k + j) * 8 + i % 8].powi(2))
                        .sum()
                })
                .collect();
            let mut ids: Vec<u32> = (0..groups as u32 * 8).map(|i| 1000 - i).collect();
            for i in 64..72 {
                norms[i] = f32::INFINITY;
                ids[i] = u32::MAX;
            }
            let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
            let list = IdLanes {
                lanes: &lanes,
                norms: &norms,
                ids: &ids,
            };
            for ranges in [
                vec![(0u32, 9u32)],
                vec![(1, 2), (4, 5)],
                vec![(3, 3), (0, 3), (5, 8), (2, 3)],
                vec![(8, 9), (0, 1), (1, 4)],
            ] {
                let start = LaneBest {
                    scores: [0.5; 8],
                    ids: [7; 8],
                };
                for carried in [LaneBest::default(), start] {
                    let mut want = carried;
                    portable::nearest_ids(list, k, &x, &ranges, &mut want);
                    // Direct lexicographic minimum per lane.
                    for l in 0..8 {
                        let mut b = (carried.scores[l], carried.ids[l]);
                        for &(s0, e0) in &ranges {
                            for g in s0 as usize..e0 as usize {
                                let mut acc = 0f32;
                                for (j, &xj) in x.iter().enumerate() {
                                    acc += xj * lanes[(g * k + j) * 8 + l];
                                }
                                let s = norms[g * 8 + l] - 2.0 * acc;
                                let id = ids[g * 8 + l];
                                if s < b.0 || (s == b.0 && id < b.1) {
                                    b = (s, id);
                                }
                            }
                        }
                        assert_eq!((want.scores[l], want.ids[l]), b, "k={k} lane {l}");
                    }
                    for isa in isas() {
                        let mut got = carried;
                        nearest_ids(isa, list, k, &x, &ranges, &mut got);
                        assert_eq!(got, want, "{isa:?} k={k} {ranges:?}");
                    }
                }
            }
            for isa in isas() {
                let past = std::panic::catch_unwind(|| {
                    let mut b = LaneBest::default();
                    nearest_ids(isa, list, k, &x, &[(8, 10)], &mut b)
                });
                assert!(
                    past.is_err(),
                    "{isa:?} k={k}: a range past the groups must panic"
                );
            }
        }
    }

    /// The ball marks on every ISA equal the portable ones and a direct evaluation, for ball
    /// counts across the 4-wide steps and the 64-bit words, with values on both sides of the
    /// test and one exactly on it.
    #[test]
    fn every_ball_mark_path_matches_portable() {
        let mut rng = Xoshiro256::new(37);
        for n in [0, 1, 3, 4, 5, 63, 64, 65, 130, 256] {
            let scores: Vec<f32> = (0..n).map(|_| rng.next_gaussian() as f32).collect();
            let radii: Vec<f64> = (0..n).map(|_| rng.next_open01() * 0.5).collect();
            let mut scores = scores;
            let mut radii = radii;
            if n >= 5 {
                // Ball 4 exactly on the test: (1 + -0.75) - 0 == (0.5 + 0)^2 * 1 with
                // x_sq = 1, err = 0, t = 0, scale = 1 (all exact in f64): marked (`<=`).
                scores[4] = -0.75;
                radii[4] = 0.5;
                let on = ball_marks(Isa::Portable, &scores, &radii, 1.0, 0.0, 0.0, 1.0);
                assert_eq!(
                    on[0] >> 4 & 1,
                    1,
                    "n={n}: a ball exactly on the test is kept"
                );
                for isa in isas() {
                    assert_eq!(ball_marks(isa, &scores, &radii, 1.0, 0.0, 0.0, 1.0), on);
                }
            }
            for (x_sq, t) in [(1.0, 0.3), (0.2, 0.0), (4.0, 1.5)] {
                let want = portable::ball_marks(&scores, &radii, x_sq, 1e-7, t, 1.0 + 1e-12);
                // Direct: bit j set exactly where the test holds.
                for j in 0..n {
                    let r = radii[j] + t;
                    let inside = (x_sq + scores[j] as f64) - 1e-7 <= (r * r) * (1.0 + 1e-12);
                    assert_eq!(want[j / 64] >> (j % 64) & 1 == 1, inside, "n={n} j={j}");
                }
                assert!(
                    n == 256 || want[n / 64] >> (n % 64) == 0,
                    "no bits past n={n}"
                );
                for isa in isas() {
                    let got = ball_marks(isa, &scores, &radii, x_sq, 1e-7, t, 1.0 + 1e-12);
                    assert_eq!(got, want, "{isa:?} n={n}");
                }
            }
        }
    }

    #[test]
    fn every_unpack_path_matches_the_reference_unpacker() {
        let mut rng = Xoshiro256::new(3);
        for bits in 1..=20u32 {
            for blocks in [1, 5, 8, 13, 16, 64, 128] {
                let packed_len = crate::pack::packed_bytes(blocks, bits);
                for offset in [0, 2, 4] {
                    let slot_bytes = offset + packed_len;
                    let count = 7;
                    let mut slots = vec![0u8; count * slot_bytes];
                    let mut want = vec![0u32; count * blocks];
                    for (slot, w) in slots
                        .chunks_exact_mut(slot_bytes)
                        .zip(want.chunks_exact_mut(blocks))
                    {
                        for v in w.iter_mut() {
                            *v = (rng.next_u64() & ((1u64 << bits) - 1)) as u32;
                        }
                        slot[..offset].fill(0xa5);
                        crate::pack::pack(w, bits, &mut slot[offset..]);
                    }
                    for isa in isas() {
                        let mut got = vec![u32::MAX; count * blocks];
                        unpack_slots(isa, bits, &slots, slot_bytes, offset, blocks, &mut got);
                        assert_eq!(got, want, "{isa:?} bits={bits} blocks={blocks}");
                    }
                }
            }
        }
    }

    /// The `k = 2` kernels on unpacked rows, every ISA (the AVX-512 one keeps up to 64
    /// codewords in registers) bit for bit against the portable ones: every row count from 1 to
    /// 9 (whole groups of four and remainders), dimensions with and without a whole number of
    /// 16-block steps, codebook sizes up to and past 64.
    #[test]
    fn every_pair_path_is_bit_identical_to_portable() {
        let mut rng = Xoshiro256::new(21);
        for d in [16, 32, 64, 96, 128] {
            for n in [2, 17, 33, 64, 65] {
                let codewords: Vec<f32> = (0..2 * n).map(|_| rng.next_gaussian() as f32).collect();
                let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
                for count in 1..=9 {
                    let blocks = d / 2;
                    let ids: Vec<u32> = (0..count * blocks)
                        .map(|_| (rng.next_u64() % n as u64) as u32)
                        .collect();
                    let rows = IndexRows {
                        data: &ids[..],
                        stride: blocks,
                        offset: 0,
                        blocks,
                    };
                    let w: Vec<f32> = (0..count).map(|_| rng.next_gaussian() as f32).collect();
                    let mut want = vec![0f32; count];
                    portable::gather_dots::<2, u32>(&q, &codewords, 2, rows, &mut want);
                    let mut want_acc = q.clone();
                    portable::gather_accumulate::<2, u32>(&w, &codewords, 2, rows, &mut want_acc);
                    for isa in isas() {
                        let mut got = vec![0f32; count];
                        gather_dots(isa, 2, &q, &codewords, rows, &mut got);
                        assert_eq!(got, want, "{isa:?} d={d} n={n} count={count}");
                        let mut acc = q.clone();
                        gather_accumulate(isa, 2, &w, &codewords, rows, &mut acc);
                        assert_eq!(acc, want_acc, "{isa:?} d={d} n={n} count={count}");
                    }
                }
            }
        }
    }

    /// The f16-codebook kernels on every ISA, for `k` = 1, 2, 3, 4 and 8 (the whole-codeword
    /// AVX2 kernels for 2, 4 and 8, the portable ones on the widened copy otherwise), `d` with
    /// and without a 16-float remainder and the two head dims the AVX2 kernels are compiled apart
    /// for (64, 128), against the portable gather kernels on the widened
    /// codebook: bit for bit (the conversion is exact). An index out of range panics.
    #[test]
    fn every_half_codebook_path_matches_portable_on_the_widened_codebook() {
        let mut rng = Xoshiro256::new(23);
        for k in [1, 2, 3, 4, 8] {
            for d in [24, 64, 128] {
                if d % k != 0 {
                    continue;
                }
                let n = 300;
                let halves: Vec<u16> = (0..n * k)
                    .map(|_| crate::fp16::f32_to_f16_bits(rng.next_gaussian() as f32 * 0.3))
                    .collect();
                let widened: Vec<f32> = halves
                    .iter()
                    .map(|&h| crate::fp16::f16_bits_to_f32(h))
                    .collect();
                let codebook = HalfCodebook {
                    halves: &halves,
                    widened: &widened,
                };
                let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
                let (count, blocks) = (11, d / k);
                let w: Vec<f32> = (0..count).map(|_| rng.next_gaussian() as f32).collect();
                let ids: Vec<u32> = (0..count * blocks)
                    .map(|_| (rng.next_u64() % n as u64) as u32)
                    .collect();
                let ids16: Vec<[u8; 2]> = ids.iter().map(|&i| (i as u16).to_le_bytes()).collect();
                let rows = IndexRows {
                    data: &ids[..],
                    stride: blocks,
                    offset: 0,
                    blocks,
                };
                let rows16 = IndexRows {
                    data: &ids16[..],
                    stride: blocks,
                    offset: 0,
                    blocks,
                };
                let mut want = vec![0f32; count];
                gather_dots(Isa::Portable, k, &q, &widened, rows, &mut want);
                let mut want_acc = q.clone();
                gather_accumulate(Isa::Portable, k, &w, &widened, rows, &mut want_acc);
                for isa in isas() {
                    let what = format!("{isa:?} k={k} d={d}");
                    let mut got = vec![0f32; count];
                    gather_dots_half(isa, k, &q, codebook, rows, &mut got);
                    assert_eq!(got, want, "{what}");
                    gather_dots_half(isa, k, &q, codebook, rows16, &mut got);
                    assert_eq!(got, want, "{what}, 16-bit cells");
                    let mut acc = q.clone();
                    gather_accumulate_half(isa, k, &w, codebook, rows, &mut acc);
                    assert_eq!(acc, want_acc, "{what}");
                    let mut acc = q.clone();
                    gather_accumulate_half(isa, k, &w, codebook, rows16, &mut acc);
                    assert_eq!(acc, want_acc, "{what}, 16-bit cells");
                    let mut bad = ids.clone();
                    bad[5 * blocks + 1] = n as u32;
                    let rows = IndexRows {
                        data: &bad[..],
                        ..rows
                    };
                    let dots = std::panic::catch_unwind(|| {
                        gather_dots_half(isa, k, &q, codebook, rows, &mut [0.0; 11])
                    });
                    assert!(dots.is_err(), "{what}: scores, index out of range");
                    let sums = std::panic::catch_unwind(|| {
                        gather_accumulate_half(isa, k, &w, codebook, rows, &mut vec![0.0; d])
                    });
                    assert!(sums.is_err(), "{what}: weighted sum, index out of range");
                }
            }
        }
    }

    /// An index not below `N` panics on every ISA, in-register kernels included (they would
    /// otherwise return another codeword's values).
    #[test]
    fn every_pair_path_refuses_an_index_out_of_range() {
        let (d, n) = (64, 40);
        let codewords = vec![0.5f32; 2 * n];
        // `n` reads a zero pad entry of the register tables, `64 + 3` aliases entry 3.
        for bad in [n as u32, 64 + 3, u32::MAX] {
            let mut ids = vec![3u32; 5 * d / 2];
            ids[2 * d / 2 + 7] = bad;
            let rows = IndexRows {
                data: &ids[..],
                stride: d / 2,
                offset: 0,
                blocks: d / 2,
            };
            for isa in isas() {
                let dots = std::panic::catch_unwind(|| {
                    gather_dots(isa, 2, &[1.0; 64], &codewords, rows, &mut [0.0; 5])
                });
                assert!(dots.is_err(), "{isa:?} scores, index {bad}");
                let sums = std::panic::catch_unwind(|| {
                    gather_accumulate(isa, 2, &[1.0; 5], &codewords, rows, &mut [0.0; 64])
                });
                assert!(sums.is_err(), "{isa:?} weighted sum, index {bad}");
            }
        }
    }

    /// Byte kernels with real values on every ISA, bit for bit against the documented order:
    /// scores `acc[p % 4] += T[p][byte p]` for ascending `p`, then `(acc0 + acc1) + (acc2 +
    /// acc3)`; histograms adding the weights slot by slot. For byte counts served by the
    /// word-reading kernels and by the byte loop, with a trailing partial slot (ignored) and an
    /// output longer than the slots (its tail left as it was): every path rounds alike, so
    /// results do not depend on the CPU.
    #[test]
    fn byte_kernels_round_in_the_documented_order() {
        let mut rng = Xoshiro256::new(23);
        for bytes in [3, 4, 5, 8, 16, 24, 32, 33] {
            let (offset, slot_bytes, count) = (2, bytes + 3, 29);
            // `count` whole slots, then part of one more.
            let slots: Vec<u8> = (0..count * slot_bytes + slot_bytes - 1)
                .map(|_| rng.next_u64() as u8)
                .collect();
            let table: Vec<[f32; 256]> = (0..bytes)
                .map(|_| std::array::from_fn(|_| rng.next_gaussian() as f32))
                .collect();
            let w: Vec<f32> = (0..count + 3).map(|_| rng.next_gaussian() as f32).collect();
            let mut want: Vec<f32> = slots
                .chunks_exact(slot_bytes)
                .map(|slot| {
                    let mut acc = [0f32; 4];
                    for (p, &b) in slot[offset..offset + bytes].iter().enumerate() {
                        acc[p % 4] += table[p][b as usize];
                    }
                    (acc[0] + acc[1]) + (acc[2] + acc[3])
                })
                .collect();
            want.extend([7.0; 3]);
            let mut want_hist = vec![[0f32; 256]; bytes];
            for (slot, &wi) in slots.chunks_exact(slot_bytes).zip(&w) {
                for (h, &b) in want_hist.iter_mut().zip(&slot[offset..offset + bytes]) {
                    h[b as usize] += wi;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for isa in isas() {
                let mut got = vec![7f32; count + 3];
                byte_table_dots(isa, &table, &slots, slot_bytes, offset, &mut got);
                assert_eq!(bits(&got), bits(&want), "{isa:?} bytes={bytes}");
                let mut hist = vec![[0f32; 256]; bytes];
                byte_histogram(isa, &w, &slots, slot_bytes, offset, &mut hist);
                assert_eq!(
                    bits(hist.as_flattened()),
                    bits(want_hist.as_flattened()),
                    "{isa:?} bytes={bytes}"
                );
            }
        }
    }

    /// The byte kernels on every ISA against a direct reference, for index byte counts 1 to 6
    /// (whole groups of four and remainders), the counts of the word-reading kernels (8 to 32)
    /// and one beyond, a norm offset and slots with bytes after the
    /// indices. Table entries and weights are small integers, so every summation order gives
    /// the exact result and equality is the right test.
    #[test]
    fn every_byte_kernel_path_matches_the_direct_sums() {
        let mut rng = Xoshiro256::new(22);
        // 8, 16, 24 and 32 bytes take the word-reading kernels, the others the byte loop.
        for bytes in (1..=6).chain([8, 16, 24, 32, 40]) {
            for (offset, tail) in [(0, 0), (2, 0), (4, 3)] {
                let slot_bytes = offset + bytes + tail;
                let count = 37;
                let slots: Vec<u8> = (0..count * slot_bytes)
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                let table: Vec<[f32; 256]> = (0..bytes)
                    .map(|_| std::array::from_fn(|_| (rng.next_u64() % 2001) as f32 - 1000.0))
                    .collect();
                let w: Vec<f32> = (0..count)
                    .map(|_| (rng.next_u64() % 201) as f32 - 100.0)
                    .collect();
                let mut want = vec![0f32; count];
                let mut want_hist = vec![[0f32; 256]; bytes];
                for (i, slot) in slots.chunks_exact(slot_bytes).enumerate() {
                    for (p, &b) in slot[offset..offset + bytes].iter().enumerate() {
                        want[i] += table[p][b as usize];
                        want_hist[p][b as usize] += w[i];
                    }
                }
                for isa in isas() {
                    let mut got = vec![0f32; count];
                    byte_table_dots(isa, &table, &slots, slot_bytes, offset, &mut got);
                    assert_eq!(got, want, "{isa:?} bytes={bytes} offset={offset}");
                    let mut hist = vec![[0f32; 256]; bytes];
                    byte_histogram(isa, &w, &slots, slot_bytes, offset, &mut hist);
                    assert_eq!(hist, want_hist, "{isa:?} bytes={bytes} offset={offset}");
                }
            }
        }
    }

    /// Slot layouts that cannot hold the index bytes (empty slots, an offset past the slot, an
    /// offset that overflows) are refused with a panic on every ISA, before any read.
    #[test]
    fn byte_kernels_refuse_impossible_slot_layouts() {
        let slots = [0u8; 12];
        let table = [[1f32; 256]; 2];
        for (slot_bytes, offset) in [(0, 0), (3, 2), (4, usize::MAX)] {
            for isa in isas() {
                let dots = std::panic::catch_unwind(|| {
                    byte_table_dots(isa, &table, &slots, slot_bytes, offset, &mut [0.0; 4])
                });
                assert!(dots.is_err(), "{isa:?} {slot_bytes} {offset}");
                let sums = std::panic::catch_unwind(|| {
                    let mut hist = [[0f32; 256]; 2];
                    byte_histogram(isa, &[1.0; 4], &slots, slot_bytes, offset, &mut hist)
                });
                assert!(sums.is_err(), "{isa:?} {slot_bytes} {offset}");
            }
        }
    }

    /// Any `Isa` value is safe to pass: one the CPU lacks is lowered to the best it has (on a
    /// CPU without AVX-512, running the AVX-512 kernels would be an illegal instruction).
    #[test]
    fn an_isa_the_cpu_lacks_is_lowered_not_trusted() {
        let mut rng = Xoshiro256::new(9);
        let v: Vec<f32> = (0..64).map(|_| rng.next_gaussian() as f32).collect();
        let (mut want, mut got) = (v.clone(), v.clone());
        fwht(Isa::Portable, &mut want);
        fwht(Isa::Avx512, &mut got);
        assert_eq!(got, want);
        let slots: Vec<u8> = (0..4 * 34).map(|i| (i * 37 % 251) as u8).collect();
        let mut levels = [0f32; 16];
        for (i, l) in levels.iter_mut().enumerate() {
            *l = i as f32 * 0.25 - 2.0;
        }
        let q = &v;
        // The predicates answer for the lowered `isa` too: on a CPU without AVX2 (aarch64)
        // they once said yes for `Avx2` and `scalar_dots` then panicked.
        let has_avx2 = supported().contains(&Isa::Avx2);
        for isa in [Isa::Avx2, Isa::Avx512] {
            assert_eq!(has_scalar_kernel(isa, 4, 64), has_avx2, "{isa:?}");
            assert_eq!(has_codeword_kernel(isa, 4, 64), has_avx2, "{isa:?}");
            if has_scalar_kernel(isa, 4, 64) {
                let (mut a, mut b) = (vec![0f32; 4], vec![0f32; 4]);
                scalar_dots(isa, 4, &levels, q, &slots, 34, 2, &mut a);
                let best = *supported().last().unwrap();
                scalar_dots(best.min(isa), 4, &levels, q, &slots, 34, 2, &mut b);
                assert_eq!(a, b, "{isa:?}");
            }
        }
    }

    /// More output rows than whole slots: every path fills the rows it has slots for and leaves
    /// the rest (the AVX2 kernel once read a partial trailing slot); an offset that overflows is
    /// refused, not read.
    #[test]
    fn unpack_stops_at_the_last_whole_slot_and_refuses_impossible_layouts() {
        let (bits, blocks, slot_bytes) = (5, 8, 5);
        let mut slots = vec![0u8; 2 * slot_bytes + 3];
        let want: Vec<u32> = (0..2 * blocks as u32).map(|i| (i * 7) % 32).collect();
        for (slot, w) in slots.chunks_exact_mut(slot_bytes).zip(want.chunks(blocks)) {
            crate::pack::pack(w, bits, slot);
        }
        for isa in isas() {
            let mut got = vec![u32::MAX; 3 * blocks];
            unpack_slots(isa, bits, &slots, slot_bytes, 0, blocks, &mut got);
            assert_eq!(&got[..2 * blocks], &want[..], "{isa:?}");
            assert!(got[2 * blocks..].iter().all(|&v| v == u32::MAX), "{isa:?}");
            let refused = std::panic::catch_unwind(|| {
                let mut out = vec![0u32; blocks];
                unpack_slots(isa, 4, &[0u8; 64], 1, usize::MAX - 7, blocks, &mut out);
            });
            assert!(refused.is_err(), "{isa:?}");
        }
    }

    #[test]
    fn every_norm_path_converts_every_half_like_the_portable_one() {
        // Every binary16 value, in slots of 3 bytes (so the norms are not aligned).
        let slots: Vec<u8> = (0..=u16::MAX)
            .flat_map(|h| {
                let [a, b] = h.to_le_bytes();
                [a, b, 0x5a]
            })
            .collect();
        let mut want = vec![0f32; 65536];
        portable::norms_f16(&slots, 3, &mut want);
        for isa in isas() {
            let mut got = vec![0f32; 65536];
            norms_f16(isa, &slots, 3, &mut got);
            for (h, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{isa:?} half {h:#06x}: {g} vs {w}"
                );
            }
        }
    }
}
