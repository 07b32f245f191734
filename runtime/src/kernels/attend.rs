//! Dispatchers of the attention kernels, in the order a chunk of slots meets them: norms,
//! indices (read in place or unpacked), then scores or weighted sums by table, gather,
//! in-register scalar codes, byte tables, or fp16 rows ([`crate::attention`] chooses).

use super::{portable, usable, Isa};
#[cfg(target_arch = "x86_64")]
use super::{avx512, x86_64};

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
                .checked_add(crate::util::pack::packed_bytes(blocks, bits))
                .is_some_and(|end| end <= slot_bytes),
        "slots of {slot_bytes} bytes cannot hold {blocks} {bits}-bit indices after {offset} bytes"
    );
    macro_rules! widths {
        ($($b:literal)*) => {
            match bits {
                $($b => unpack_slots_fixed::<$b>(isa, slots, slot_bytes, offset, blocks, out),)*
                _ => {
                    for (slot, o) in slots.chunks_exact(slot_bytes).zip(out.chunks_exact_mut(blocks)) {
                        crate::util::pack::unpack(&slot[offset..], bits, o);
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
