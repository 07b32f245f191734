//! Attention on codes, without decoding the cache.
//!
//! Because `P` is orthogonal, `<q, x_hat> = norm * <P q, concat_j C[idx_j]>`: rotate the query
//! once and work in the rotated domain; a weighted sum of values is accumulated there and rotated
//! back once at the end. Slots are processed in chunks: their norms are read and validated, their
//! indices unpacked with a width-specialized kernel, and one of four plans (see
//! [`crate::kernels`]) does the arithmetic:
//!
//! - **scalar** (`k = 1`, `N <= 16`, AVX2): the levels live in two registers and each group of 8
//!   indices is unpacked and looked up in-register (`vpermps`), no index array at all;
//! - **table** (scores, small `N`): a per-query table `T[j][n] = <(P q)_j, C[n]>` turns each key
//!   into `d / k` look-ups;
//! - **gather** (everything else): each slot's codewords are combined with 8-lane dot products or
//!   multiply-adds, loaded as whole registers (`k = 2, 4, 8`), looked up in AVX-512 registers
//!   (`k = 2`, `N <= 64`) or gathered into an L1 scratch vector;
//! - **bytes** (indices of 1, 2, 4 or 8 bits with `N = 2^bits`, long calls): one table look-up
//!   (scores) or one histogram addition (weighted sum) per index byte, see `byte_plan.rs`.
//!
//! The codebook copies these plans read are in `tables.rs`.

pub(crate) mod byte_plan;
pub(crate) mod tables;

use crate::codec::{Codec, NormFormat, MAX_DIM};
use crate::error::{check_len, Error, Result};
use crate::util::overflow::{all_finite, retry_on_overflow};
use crate::kernels::{self, GroupCodebook, IndexCell, IndexRows, Isa};

/// The block indices of a chunk of slots, read in place or unpacked.
#[derive(Clone, Copy)]
enum Indices<'a> {
    /// 8-bit indices, in the slots.
    U8(IndexRows<'a, u8>),
    /// 16-bit little-endian indices, in the slots.
    U16(IndexRows<'a, [u8; 2]>),
    /// Other widths, unpacked.
    U32(IndexRows<'a, u32>),
}

/// Weighted-sum contributions with `|w * norm|` below this are dropped (flushed to zero) by
/// [`Codec::weighted_sum`]. Softmax weights of a long context underflow into subnormal numbers,
/// and x86 cores take a microcode assist of over a hundred cycles for every subnormal product;
/// dropping terms this small changes the sum by at most `count * 2^-100 * max |c|`.
pub const WEIGHT_FLUSH: f32 = 1.0 / (1u128 << 100) as f32;

/// Smallest norm against which a subnormal weight can reach [`WEIGHT_FLUSH`]: `2^-126 * 2^26`.
const NORM_FOR_SUBNORMAL_WEIGHTS: f32 = (1u32 << 26) as f32;

/// The contribution `w * norm` of a slot to a weighted sum, or zero when `|w * norm|` is below
/// [`WEIGHT_FLUSH`]. A subnormal `w` is dropped unmultiplied unless the norm is at least 2^26
/// (only f32 norms hold one): below that its product is below the flush anyway, and skipping
/// the multiply keeps underflowing softmax tails off the slow subnormal paths.
#[inline(always)]
fn contribution(w: f32, norm: f32) -> f32 {
    let w = if w.abs() < f32::MIN_POSITIVE && norm < NORM_FOR_SUBNORMAL_WEIGHTS {
        0.0
    } else {
        w
    };
    flush_tiny(w * norm)
}

/// `x`, or zero when `|x| < WEIGHT_FLUSH`.
#[inline(always)]
fn flush_tiny(x: f32) -> f32 {
    if x.abs() < WEIGHT_FLUSH {
        0.0
    } else {
        x
    }
}

/// The first `(row, block, index)` with an index not below `n`.
fn first_bad<T: IndexCell>(rows: IndexRows<'_, T>, n: usize) -> Option<(usize, usize, usize)> {
    // One pass of vectorizable row maxima; the place of a bad index only when there is one.
    let largest = rows.iter().fold(0, |m, ids| m.max(T::max_index(ids)));
    if largest < n {
        return None;
    }
    rows.iter().enumerate().find_map(|(r, ids)| {
        ids.iter()
            .position(|i| i.index() >= n)
            .map(|b| (r, b, ids[b].index()))
    })
}

/// Whether `v` holds a NaN (one vectorizable pass).
fn has_nan(v: &[f32]) -> bool {
    v.iter().fold(false, |any, x| any | x.is_nan())
}

/// Slots processed per chunk (bounds the index scratch to `CHUNK * d / k` entries).
const CHUNK: usize = 128;

/// Length of the padded query and accumulator of `k = 3` codes: 4 values per block of 3.
const PADDED_DIM: usize = MAX_DIM / 3 * 4 + 4;

/// How [`Codec::scores`] combines a query with the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScorePlan {
    /// In-register scalar-code kernel.
    Scalar,
    /// Per-query look-up table.
    Table,
    /// Gathered codewords, direct dot products.
    Gather,
    /// Per-query table over whole index bytes.
    Bytes,
}

/// How [`Codec::weighted_sum`] accumulates the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SumPlan {
    /// In-register scalar-code kernel.
    Scalar,
    /// Gathered codewords, direct multiply-adds.
    Gather,
    /// Histogram over whole index bytes, expanded at the end.
    Bytes,
}

/// A look-up table this small (bytes) stays in L1: `k = 3` scores use it rather than the padded
/// gather.
const SMALL_TABLE_BYTES: usize = 32 << 10;

/// Largest look-up table built by [`Codec::scores`] (bytes): beyond L2 the look-ups miss cache
/// and gathering the (smaller) codebook is faster.
const MAX_TABLE_BYTES: usize = 512 << 10;

impl Codec {
    fn score_plan(&self, isa: Isa, count: usize) -> ScorePlan {
        // `attention_n`: the codewords the table would hold (NaN padding included).
        let (k, n) = (self.config().k, self.attention_n());
        // The table costs d * n multiply-adds per query, then one look-up per block and key; the
        // gather kernel costs one k-wide product per block and key. With whole-register codeword
        // products (`has_codeword_kernel`) gathering is as fast or faster up to k = 4 and the
        // table wins from k = 8 (fewer, scalar look-ups). `k = 3` codes gather through the
        // `k = 4` kernels on the padded codebook unless the table fits L1 (`docs/tuning.md`).
        let whole_registers = match self.padded_codebook() {
            Some(_) => {
                kernels::has_codeword_kernel(isa, 4, 4 * self.blocks())
                    && self.blocks() * n * 4 > SMALL_TABLE_BYTES
            }
            None => kernels::has_codeword_kernel(isa, k, self.dim()),
        };
        let table_pays = k >= 8 || !whole_registers;
        let bytes = self.byte_layout().filter(|b| b.pays_for_scores());
        if count >= byte_plan::MIN_SLOTS && bytes.is_some() {
            ScorePlan::Bytes
        } else if self.has_scalar_kernel(isa) {
            ScorePlan::Scalar
        } else if table_pays && k > 1 && 4 * n <= count && self.blocks() * n * 4 <= MAX_TABLE_BYTES
        {
            ScorePlan::Table
        } else {
            ScorePlan::Gather
        }
    }

    fn sum_plan(&self, isa: Isa, count: usize) -> SumPlan {
        let bytes = self.byte_layout().filter(|b| b.pays_for_sums());
        if count >= byte_plan::MIN_SLOTS && bytes.is_some() {
            SumPlan::Bytes
        } else if self.has_scalar_kernel(isa) {
            SumPlan::Scalar
        } else {
            SumPlan::Gather
        }
    }

    fn has_scalar_kernel(&self, isa: Isa) -> bool {
        let c = self.config();
        c.k == 1
            && c.n.is_power_of_two()
            && kernels::has_scalar_kernel(isa, self.index_bits(), c.dim)
    }

    /// The levels of a scalar codebook padded to 16 (only for `N <= 16`).
    fn scalar_levels(&self) -> [f32; 16] {
        let mut levels = [0f32; 16];
        for (l, &c) in levels.iter_mut().zip(self.codebook().codewords()) {
            *l = c;
        }
        levels
    }

    /// Reads and validates the norms of a chunk of slots (`first`: position of the chunk's first
    /// slot, for error messages).
    fn chunk_norms(&self, isa: Isa, slots: &[u8], first: usize, norms: &mut [f32]) -> Result<()> {
        let sb = self.slot_bytes();
        match self.config().norm {
            NormFormat::F16 => kernels::norms_f16(isa, slots, sb, norms),
            NormFormat::F32 => {
                for (nm, s) in norms.iter_mut().zip(slots.chunks_exact(sb)) {
                    *nm = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                }
            }
        }
        // Branch-free check of the whole chunk (NaN fails both comparisons).
        let valid = norms
            .iter()
            .fold(true, |ok, &v| ok & (0.0..=f32::MAX).contains(&v));
        if !valid {
            let i = norms
                .iter()
                .position(|&v| !(0.0..=f32::MAX).contains(&v))
                .unwrap_or(0);
            return Err(Error::CorruptSlot(format!(
                "slot {}: norm {} is not a finite non-negative number",
                first + i,
                norms[i]
            )));
        }
        Ok(())
    }

    /// Runs `f` on the block indices of a chunk of slots: read in place for 8- and 16-bit
    /// indices, unpacked into `scratch` otherwise. When `N` is not a power of two some stored
    /// bit patterns are not valid indices: with NaN-padded codebook copies
    /// ([`Codec::attention_n`]) they are looked for only when `f` returns `true` (its output
    /// holds a NaN), otherwise before `f` runs. `first`: position of the chunk's first slot,
    /// for error messages.
    fn with_indices(
        &self,
        isa: Isa,
        slots: &[u8],
        first: usize,
        scratch: &mut Vec<u32>,
        f: &mut dyn FnMut(Indices<'_>) -> bool,
    ) -> Result<()> {
        let blocks = self.blocks();
        let (sb, offset) = (self.slot_bytes(), self.config().norm.bytes());
        let in_place_16 = self.index_bits() == 16 && sb % 2 == 0 && offset % 2 == 0;
        let view = if self.index_bits() == 8 {
            Indices::U8(IndexRows {
                data: slots,
                stride: sb,
                offset,
                blocks,
            })
        } else if in_place_16 {
            Indices::U16(IndexRows {
                data: slots.as_chunks::<2>().0,
                stride: sb / 2,
                offset: offset / 2,
                blocks,
            })
        } else {
            let count = slots.len() / sb;
            scratch.resize(count * blocks, 0);
            let ids = &mut scratch[..count * blocks];
            kernels::unpack_slots(isa, self.index_bits(), slots, sb, offset, blocks, ids);
            Indices::U32(IndexRows {
                data: ids,
                stride: blocks,
                offset: 0,
                blocks,
            })
        };
        let n = self.config().n;
        let check = || {
            let bad = match view {
                Indices::U8(r) => first_bad(r, n),
                Indices::U16(r) => first_bad(r, n),
                Indices::U32(r) => first_bad(r, n),
            };
            match bad {
                Some((slot, block, index)) => Err(Error::CorruptSlot(format!(
                    "slot {}: block {block} holds index {index}, codebook has {n} codewords",
                    first + slot
                ))),
                None => Ok(()),
            }
        };
        let padded = self.nan_padded();
        if !n.is_power_of_two() && !padded {
            check()?;
        }
        // A NaN in the output also comes from overflowing products (infinite minus infinite):
        // then the search finds nothing and the output stands.
        if f(view) && padded {
            check()?;
        }
        Ok(())
    }

    /// Scores `out[i] = <q, x_hat_i>` for every slot `i` of `slots`, without decoding.
    /// `q.len() = d`, `out.len()` = number of slots. The kernel plan depends on the code and on
    /// the number of slots (long calls on codes with whole-byte indices use per-query tables),
    /// so a slot's score can differ in the last bits between calls of different lengths. Every
    /// plan is within float rounding of the exact dot product and gives the same result on
    /// every ISA, but which plan runs can depend on the CPU (the portable build prefers a look-up
    /// table where AVX2 multiplies whole codewords). Codebooks of 1 MiB or more are read from
    /// an f16 copy unless the config asks for [`crate::AttentionCodebook::F32`]: the exact dot
    /// product is then the one with the rounded codewords, within `2^-11 sum |q_i x_i|` of the
    /// decoded vector's. Scores are f32 arithmetic; where it overflows on finite inputs, the
    /// call is redone on the query scaled by an exact power of two, so scores are finite where
    /// the exact score is, infinite where it is beyond `f32::MAX`, and never NaN
    /// ([`Error::Overflow`] in the one case left: cancelling terms beyond about 2^190). A
    /// corrupt slot (a norm that is not a finite non-negative number, an index at or past `N`)
    /// is an [`Error::CorruptSlot`]; `out` is then partly written and should not be used.
    pub fn scores(&self, q: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        self.scores_once(q, slots, out)?;
        retry_on_overflow("scores", q, out, |small, out| {
            self.scores_once(small, slots, out)
        })
    }

    /// [`scores`](Self::scores) without the overflow guard.
    fn scores_once(&self, q: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        check_len("query", d, q.len())?;
        let count = self.slot_count(slots)?;
        check_len("score output", count, out.len())?;
        if let Some(index) = q.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let mut qr = [0f32; MAX_DIM];
        let qr = &mut qr[..d];
        self.rotation().apply(q, qr);
        let isa = kernels::detect();
        self.scores_rotated(isa, self.score_plan(isa, count), qr, slots, out)
    }

    /// [`scores`](Self::scores) for an already rotated query, with a chosen kernel plan.
    fn scores_rotated(
        &self,
        isa: Isa,
        plan: ScorePlan,
        qr: &[f32],
        slots: &[u8],
        out: &mut [f32],
    ) -> Result<()> {
        let (k, n, blocks) = (self.config().k, self.attention_n(), self.blocks());
        let half = self.half_codebook();
        let cw = half.map_or_else(|| self.attention_codewords(), |h| h.widened);
        // `k = 3`: the query padded like the codebook (a zero after every block).
        let padded = self.padded_codebook();
        let mut qpad = [0f32; PADDED_DIM];
        if padded.is_some() {
            for (p, q) in qpad.chunks_exact_mut(4).zip(qr.chunks_exact(3)) {
                p[..3].copy_from_slice(q);
            }
        }
        // Only `k = 3` codes (at most `MAX_DIM / 3` blocks) use it; others read none of it.
        let qpad = &qpad[..if padded.is_some() { 4 * blocks } else { 0 }];
        let (sb, offset) = (self.slot_bytes(), self.config().norm.bytes());
        let table = if plan == ScorePlan::Table {
            let mut table = vec![0f32; blocks * n];
            for (j, row) in table.chunks_exact_mut(n).enumerate() {
                let qj = &qr[j * k..(j + 1) * k];
                for (t, c) in row.iter_mut().zip(cw.chunks_exact(k)) {
                    *t = qj.iter().zip(c).map(|(a, b)| a * b).sum();
                }
            }
            table
        } else {
            Vec::new()
        };
        let byte_table = match plan {
            ScorePlan::Bytes => self.byte_plan().map(|(b, e)| b.score_table(e, qr)),
            _ => None,
        };
        let plan = match (plan, &byte_table) {
            (ScorePlan::Bytes, None) => ScorePlan::Gather,
            _ => plan,
        };
        let byte_table = byte_table.unwrap_or_default();
        let levels = self.scalar_levels();
        let mut idx = Vec::new();
        let mut norms = [0f32; CHUNK];
        for (c, (oc, sc)) in out
            .chunks_mut(CHUNK)
            .zip(slots.chunks(CHUNK * sb))
            .enumerate()
        {
            let norms = &mut norms[..oc.len()];
            self.chunk_norms(isa, sc, c * CHUNK, norms)?;
            if plan == ScorePlan::Scalar {
                kernels::scalar_dots(isa, self.index_bits(), &levels, qr, sc, sb, offset, oc);
            } else if plan == ScorePlan::Bytes {
                kernels::byte_table_dots(isa, &byte_table, sc, sb, offset, oc);
            } else {
                self.with_indices(isa, sc, c * CHUNK, &mut idx, &mut |ids| {
                    macro_rules! run {
                        ($rows:expr) => {
                            if plan == ScorePlan::Table {
                                kernels::table_dots(isa, &table, n, $rows, oc)
                            } else if let Some(p) = padded {
                                kernels::gather_dots(isa, 4, qpad, p, $rows, oc)
                            } else if let Some(h) = half {
                                kernels::gather_dots_half(isa, k, qr, h, $rows, oc)
                            } else {
                                kernels::gather_dots(isa, k, qr, cw, $rows, oc)
                            }
                        };
                    }
                    match ids {
                        Indices::U8(r) => run!(r),
                        Indices::U16(r) => run!(r),
                        Indices::U32(r) => run!(r),
                    }
                    has_nan(oc)
                })?;
            }
            for (o, &nm) in oc.iter_mut().zip(norms.iter()) {
                *o *= nm;
            }
        }
        Ok(())
    }

    /// Weighted sum `out = sum_i weights[i] * x_hat_i` over the slots, accumulated in the rotated
    /// domain with one inverse rotation at the end. `weights.len()` = number of slots,
    /// `out.len() = d`. Terms with `|weights[i] * norm_i|` below [`WEIGHT_FLUSH`] (`2^-100`) are
    /// dropped, so that underflowing softmax weights never hit the slow subnormal paths; f32
    /// overflow is handled as in [`scores`](Self::scores). As with
    /// [`scores`](Self::scores), long calls may take another summation order (a histogram of
    /// weights per index byte) than short ones, and codebooks of 1 MiB or more are read from
    /// their f16 copy (see [`crate::AttentionCodebook`]).
    pub fn weighted_sum(&self, weights: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        self.weighted_sum_once(weights, slots, out)?;
        retry_on_overflow("weighted sum", weights, out, |small, out| {
            self.weighted_sum_once(small, slots, out)
        })
    }

    /// [`weighted_sum`](Self::weighted_sum) without the overflow guard.
    fn weighted_sum_once(&self, weights: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        let count = self.slot_count(slots)?;
        check_len("weights", count, weights.len())?;
        check_len("output vector", d, out.len())?;
        if let Some(index) = weights.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let mut acc = [0f32; MAX_DIM];
        let acc = &mut acc[..d];
        let isa = kernels::detect();
        self.weighted_sum_rotated(isa, self.sum_plan(isa, count), weights, slots, acc)?;
        self.rotation().apply_inverse(acc, out);
        Ok(())
    }

    /// The codebook the group kernels read for `g` queries, or `None` where they do not serve
    /// the call: fewer than two queries, a plan other than the gather one (`gather`), the
    /// padded `k = 3` codes, or no whole-codeword kernel on `isa`. Callers then run the
    /// single-query path once per query.
    fn group_codebook(&self, isa: Isa, g: usize, gather: bool) -> Option<GroupCodebook<'_>> {
        let grouped = g > 1
            && gather
            && self.padded_codebook().is_none()
            && kernels::has_codeword_kernel(isa, self.config().k, self.dim());
        grouped.then(|| match self.half_codebook() {
            Some(h) => GroupCodebook::Half(h),
            None => GroupCodebook::F32(self.attention_codewords()),
        })
    }

    /// [`scores`](Self::scores) of `g = queries.len() / d` queries (rows of `queries`) against
    /// the same slots: query `g`'s score of slot `i` goes to `out[g * count + i]`, with the bits
    /// [`scores`](Self::scores) gives that query alone. Grouped-query attention: where the
    /// whole-codeword gather kernels run, each slot's codewords are read once for all the
    /// queries; other plans score the queries one at a time.
    pub fn scores_group(&self, queries: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        self.scores_group_once(queries, slots, out)?;
        // A query whose scores overflowed is redone alone, with the single query's overflow
        // guard: the others keep their bits, and each gets what `scores` gives it.
        let (d, count) = (self.dim(), self.slot_count(slots)?);
        if count > 0 && !all_finite(out) {
            for (q, o) in queries.chunks_exact(d).zip(out.chunks_exact_mut(count)) {
                if !all_finite(o) {
                    self.scores(q, slots, o)?;
                }
            }
        }
        Ok(())
    }

    /// [`scores_group`](Self::scores_group) without the overflow guard.
    fn scores_group_once(&self, queries: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        let g = queries.len() / d;
        check_len("queries", g.max(1) * d, queries.len())?;
        let count = self.slot_count(slots)?;
        check_len("score output", g * count, out.len())?;
        if let Some(index) = queries.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index: index % d });
        }
        let isa = kernels::detect();
        let plan = self.score_plan(isa, count);
        let mut qr = vec![0f32; g * d];
        for (q, r) in queries.chunks_exact(d).zip(qr.chunks_exact_mut(d)) {
            self.rotation().apply(q, r);
        }
        let k = self.config().k;
        let Some(codebook) = self.group_codebook(isa, g, plan == ScorePlan::Gather) else {
            for (q, o) in qr.chunks_exact(d).zip(out.chunks_exact_mut(count.max(1))) {
                self.scores_rotated(isa, plan, q, slots, o)?;
            }
            return Ok(());
        };
        let sb = self.slot_bytes();
        let mut idx = Vec::new();
        let mut norms = [0f32; CHUNK];
        for (c, sc) in slots.chunks(CHUNK * sb).enumerate() {
            let (first, rows) = (c * CHUNK, sc.len() / sb);
            let norms = &mut norms[..rows];
            self.chunk_norms(isa, sc, first, norms)?;
            self.with_indices(isa, sc, first, &mut idx, &mut |ids| {
                let o = &mut out[first..];
                match ids {
                    Indices::U8(r) => {
                        kernels::gather_dots_group(isa, k, d, &qr, codebook, r, o, count)
                    }
                    Indices::U16(r) => {
                        kernels::gather_dots_group(isa, k, d, &qr, codebook, r, o, count)
                    }
                    Indices::U32(r) => {
                        kernels::gather_dots_group(isa, k, d, &qr, codebook, r, o, count)
                    }
                }
                (0..g).any(|q| has_nan(&o[q * count..q * count + rows]))
            })?;
            for q in 0..g {
                let o = &mut out[q * count + first..q * count + first + rows];
                for (o, &nm) in o.iter_mut().zip(norms.iter()) {
                    *o *= nm;
                }
            }
        }
        Ok(())
    }

    /// [`weighted_sum`](Self::weighted_sum) of `g = out.len() / d` weight vectors (rows of
    /// `weights`, one weight per slot each) over the same slots, into the rows of `out`, with
    /// the bits [`weighted_sum`](Self::weighted_sum) gives each vector alone; each slot's
    /// codewords are read once for all the vectors where the gather kernels run (see
    /// [`scores_group`](Self::scores_group)).
    pub fn weighted_sum_group(&self, weights: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        self.weighted_sum_group_once(weights, slots, out)?;
        // As in `scores_group`: a vector that overflowed is redone alone.
        let (d, count) = (self.dim(), self.slot_count(slots)?);
        if !all_finite(out) {
            for (w, o) in weights.chunks_exact(count.max(1)).zip(out.chunks_exact_mut(d)) {
                if !all_finite(o) {
                    self.weighted_sum(w, slots, o)?;
                }
            }
        }
        Ok(())
    }

    /// [`weighted_sum_group`](Self::weighted_sum_group) without the overflow guard.
    fn weighted_sum_group_once(&self, weights: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        let g = out.len() / d;
        check_len("output vectors", g.max(1) * d, out.len())?;
        let count = self.slot_count(slots)?;
        check_len("weights", g * count, weights.len())?;
        if let Some(index) = weights.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                index: index % count.max(1),
            });
        }
        let isa = kernels::detect();
        let plan = self.sum_plan(isa, count);
        let k = self.config().k;
        let mut acc = vec![0f32; g * d];
        if let Some(codebook) = self.group_codebook(isa, g, plan == SumPlan::Gather) {
            let sb = self.slot_bytes();
            let mut idx = Vec::new();
            let mut norms = [0f32; CHUNK];
            let mut scaled = vec![0f32; g * CHUNK];
            for (c, sc) in slots.chunks(CHUNK * sb).enumerate() {
                let (first, rows) = (c * CHUNK, sc.len() / sb);
                let norms = &mut norms[..rows];
                self.chunk_norms(isa, sc, first, norms)?;
                for q in 0..g {
                    let w = &weights[q * count + first..q * count + first + rows];
                    for ((s, &w), &nm) in scaled[q * CHUNK..].iter_mut().zip(w).zip(norms.iter()) {
                        *s = contribution(w, nm);
                    }
                }
                self.with_indices(isa, sc, first, &mut idx, &mut |ids| {
                    match ids {
                        Indices::U8(r) => kernels::gather_accumulate_group(
                            isa, k, d, &scaled, CHUNK, codebook, r, &mut acc,
                        ),
                        Indices::U16(r) => kernels::gather_accumulate_group(
                            isa, k, d, &scaled, CHUNK, codebook, r, &mut acc,
                        ),
                        Indices::U32(r) => kernels::gather_accumulate_group(
                            isa, k, d, &scaled, CHUNK, codebook, r, &mut acc,
                        ),
                    }
                    has_nan(&acc)
                })?;
            }
        } else {
            for (w, a) in weights
                .chunks_exact(count.max(1))
                .zip(acc.chunks_exact_mut(d))
            {
                self.weighted_sum_rotated(isa, plan, w, slots, a)?;
            }
        }
        for (a, o) in acc.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            self.rotation().apply_inverse(a, o);
        }
        Ok(())
    }

    /// `acc += sum_i weights[i] * x_hat_i` in the rotated domain, with a chosen kernel plan.
    fn weighted_sum_rotated(
        &self,
        isa: Isa,
        plan: SumPlan,
        weights: &[f32],
        slots: &[u8],
        acc: &mut [f32],
    ) -> Result<()> {
        let k = self.config().k;
        let half = self.half_codebook();
        // Only read without an f16 copy: do not build the f32 NaN-padded copy otherwise.
        let cw = if half.is_none() {
            self.attention_codewords()
        } else {
            &[]
        };
        let (sb, offset) = (self.slot_bytes(), self.config().norm.bytes());
        let levels = self.scalar_levels();
        let byte_plan = (plan == SumPlan::Bytes).then(|| self.byte_plan()).flatten();
        let mut hist = vec![[0f32; 256]; byte_plan.map_or(0, |(b, _)| b.bytes())];
        // `k = 3` gathers into a padded accumulator (a fourth, unused value per block).
        let padded = (plan == SumPlan::Gather)
            .then(|| self.padded_codebook())
            .flatten();
        let mut acc_pad = [0f32; PADDED_DIM];
        let acc_pad = &mut acc_pad[..if padded.is_some() { 4 * self.blocks() } else { 0 }];
        let mut idx = Vec::new();
        let mut scaled = [0f32; CHUNK];
        for (c, (wc, sc)) in weights
            .chunks(CHUNK)
            .zip(slots.chunks(CHUNK * sb))
            .enumerate()
        {
            let scaled = &mut scaled[..wc.len()];
            self.chunk_norms(isa, sc, c * CHUNK, scaled)?;
            for (s, &w) in scaled.iter_mut().zip(wc) {
                *s = contribution(w, *s);
            }
            if byte_plan.is_some() {
                kernels::byte_histogram(isa, scaled, sc, sb, offset, &mut hist);
            } else if plan == SumPlan::Scalar {
                kernels::scalar_accumulate(
                    isa,
                    self.index_bits(),
                    &levels,
                    scaled,
                    sc,
                    sb,
                    offset,
                    acc,
                );
            } else {
                self.with_indices(isa, sc, c * CHUNK, &mut idx, &mut |ids| {
                    macro_rules! run {
                        ($rows:expr) => {
                            match (padded, half) {
                                (Some(p), _) => {
                                    kernels::gather_accumulate(isa, 4, scaled, p, $rows, acc_pad)
                                }
                                (None, Some(h)) => {
                                    kernels::gather_accumulate_half(isa, k, scaled, h, $rows, acc)
                                }
                                (None, None) => {
                                    kernels::gather_accumulate(isa, k, scaled, cw, $rows, acc)
                                }
                            }
                        };
                    }
                    match ids {
                        Indices::U8(r) => run!(r),
                        Indices::U16(r) => run!(r),
                        Indices::U32(r) => run!(r),
                    }
                    has_nan(if padded.is_some() { acc_pad } else { acc })
                })?;
            }
        }
        if let Some((b, e)) = byte_plan {
            b.expand(e, &hist, acc);
        }
        if padded.is_some() {
            for (a, p) in acc.chunks_exact_mut(3).zip(acc_pad.chunks_exact(4)) {
                for (a, p) in a.iter_mut().zip(p) {
                    *a += p;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AttentionCodebook, CodecConfig};
    use crate::util::rng::Xoshiro256;
    use crate::Codebook;
    use std::sync::Arc;

    fn isas() -> Vec<Isa> {
        kernels::supported()
    }

    /// Grouped scores and sums give each query exactly what it gets alone, on every code family
    /// the group kernels serve (k = 2, 4, 8; f32 and f16 codebook copies; 8-, 16- and unpacked
    /// indices) and on the ones they leave to the single path.
    #[test]
    fn grouped_queries_match_single_queries_bit_for_bit() {
        let mut rng = Xoshiro256::new(21);
        for (d, k, n) in [
            (64, 4, 65536),
            (64, 4, 4096),
            (64, 4, 256),
            (64, 8, 64497),
            (128, 8, 256),
            (64, 2, 64),
            (64, 2, 1024),
            (64, 1, 16),
            (96, 3, 512),
        ] {
            let Ok(codec) = Codec::new(CodecConfig::new(d, k, n)) else {
                continue;
            };
            for count in [1usize, 5, 130, 300] {
                let x: Vec<f32> = (0..count * d).map(|_| rng.next_gaussian() as f32).collect();
                let mut slots = vec![0u8; count * codec.slot_bytes()];
                codec.encode_batch(&x, &mut slots).unwrap();
                for g in [1usize, 2, 3, 5] {
                    let q: Vec<f32> = (0..g * d).map(|_| rng.next_gaussian() as f32).collect();
                    let w: Vec<f32> = (0..g * count).map(|_| rng.next_open01() as f32).collect();
                    let mut grouped = vec![0f32; g * count];
                    codec.scores_group(&q, &slots, &mut grouped).unwrap();
                    let mut sums = vec![0f32; g * d];
                    codec.weighted_sum_group(&w, &slots, &mut sums).unwrap();
                    for j in 0..g {
                        let mut one = vec![0f32; count];
                        codec
                            .scores(&q[j * d..(j + 1) * d], &slots, &mut one)
                            .unwrap();
                        let got = &grouped[j * count..(j + 1) * count];
                        assert!(
                            one.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "scores d={d} k={k} n={n} count={count} g={g} query {j}"
                        );
                        let mut sum = vec![0f32; d];
                        codec
                            .weighted_sum(&w[j * count..(j + 1) * count], &slots, &mut sum)
                            .unwrap();
                        let got = &sums[j * d..(j + 1) * d];
                        assert!(
                            sum.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "sums d={d} k={k} n={n} count={count} g={g} vector {j}"
                        );
                    }
                }
            }
        }
        // Lengths are checked.
        let codec = Codec::new(CodecConfig::new(64, 4, 256)).unwrap();
        let slots = vec![0u8; 3 * codec.slot_bytes()];
        let mut out = vec![0f32; 5];
        assert!(codec.scores_group(&[0.0; 128], &slots, &mut out).is_err());
        assert!(codec
            .scores_group(&[0.0; 100], &slots, &mut [0f32; 3])
            .is_err());
        assert!(codec
            .weighted_sum_group(&[0.0; 5], &slots, &mut [0f32; 128])
            .is_err());
    }

    /// Tiny and subnormal weights are dropped, exactly: the sum equals the one with those
    /// weights set to zero (and is zero when all of them are tiny, where keeping them would give
    /// a non-zero result).
    #[test]
    fn tiny_weights_are_flushed() {
        let codec = Codec::new(CodecConfig::new(64, 4, 256)).unwrap();
        let mut rng = Xoshiro256::new(12);
        let count = 200;
        let x: Vec<f32> = (0..count * 64)
            .map(|_| rng.next_gaussian() as f32)
            .collect();
        let mut slots = vec![0u8; count * codec.slot_bytes()];
        codec.encode_batch(&x, &mut slots).unwrap();
        let mut w: Vec<f32> = (0..count).map(|_| rng.next_open01() as f32).collect();
        let mut zeroed = w.clone();
        let mut tiny = vec![0f32; count];
        for i in (0..count).step_by(3) {
            w[i] = if i % 2 == 0 {
                f32::from_bits(1 + i as u32)
            } else {
                1e-35
            };
            tiny[i] = w[i];
            zeroed[i] = 0.0;
        }
        let (mut a, mut b, mut c) = (vec![0f32; 64], vec![0f32; 64], vec![1f32; 64]);
        codec.weighted_sum(&w, &slots, &mut a).unwrap();
        codec.weighted_sum(&zeroed, &slots, &mut b).unwrap();
        codec.weighted_sum(&tiny, &slots, &mut c).unwrap();
        assert_eq!(a, b);
        assert!(c.iter().all(|&v| v == 0.0), "{c:?}");
    }

    /// Every kernel plan and every ISA agree: the scalar in-register kernel and the gather kernel
    /// bit for bit (same operations in the same order), the table within float rounding of them.
    #[test]
    fn every_plan_and_isa_agree() {
        let mut rng = Xoshiro256::new(11);
        for (d, k, n) in [
            (64, 1, 2),
            (64, 1, 4),
            (64, 1, 8),
            (64, 1, 16),
            (128, 1, 16),
            (96, 1, 8),
            (64, 2, 64),
            (96, 3, 64),
            (96, 3, 512),
            (96, 3, 4096),
            (64, 4, 256),
            (128, 4, 4096),
            (64, 8, 16),
            (128, 8, 256),
            (64, 4, 65536),
            (64, 8, 65536),
        ] {
            let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
            check_every_plan_and_isa(&codec, &mut rng);
        }
    }

    /// The same for custom codebooks: 17-bit indices (the generic unpacker), 1 MiB of `k = 8`
    /// codewords (the f16 copy, 16-bit indices checked against `N`), `d = 24` (three
    /// 8-lane groups: an odd group left over after the pairs), and `k = 2` with 40 codewords
    /// (held in AVX-512 registers with zero padding, indices checked against `N`), and byte
    /// plans whose last index byte is partly padding (1 and 2 bits), or holds all the blocks.
    #[test]
    fn every_plan_and_isa_agree_on_custom_codebooks() {
        let mut rng = Xoshiro256::new(13);
        for (d, k, n, bits) in [
            (16, 2, (1 << 16) + 5, 17),
            (24, 8, (1 << 15) + 3, 16),
            (24, 4, 300, 9),
            (24, 8, 16, 4),
            (64, 2, 40, 6),
            (12, 1, 2, 1),
            (20, 2, 4, 2),
            (4, 1, 2, 1),
            // k = 3 with an odd number of blocks (no padded copy) and with 300 codewords (the
            // padded copy, indices checked against N).
            (15, 3, 50, 6),
            (12, 3, 300, 9),
        ] {
            let codewords = (0..n * k)
                .map(|_| rng.next_gaussian() as f32 * 0.3)
                .collect();
            let codebook = Codebook::new(d, k, n, codewords).unwrap();
            let config = CodecConfig::new(d, k, n);
            let codec = Codec::with_codebook(config, Arc::new(codebook)).unwrap();
            assert_eq!(codec.index_bits(), bits);
            check_every_plan_and_isa(&codec, &mut rng);
        }
    }

    /// Every plan with 4-byte `f32` norms (the index bytes start at offset 4).
    #[test]
    fn every_plan_and_isa_agree_with_f32_norms() {
        let mut rng = Xoshiro256::new(15);
        for (d, k, n) in [
            (64, 8, 16),
            (64, 4, 256),
            (64, 1, 2),
            (64, 2, 64),
            (128, 4, 4096),
        ] {
            let config = CodecConfig::new(d, k, n).with_norm(NormFormat::F32);
            let codec = Codec::new(config).unwrap();
            check_every_plan_and_isa(&codec, &mut rng);
        }
    }

    /// Codes whose `N` is not a power of two read NaN-padded codebook copies instead of checking
    /// every index: a stored index at or past `N` is still a `CorruptSlot` error naming its slot
    /// and block on every plan and ISA, with zero weights too (`0 * NaN` is NaN), and in the
    /// last, partial chunk; a score that is NaN because its products overflow is returned as it
    /// is.
    #[test]
    fn nan_padded_codebooks_refuse_every_index_past_n() {
        let mut rng = Xoshiro256::new(17);
        let e8 = Codec::new(CodecConfig::new(64, 8, 64497)).unwrap();
        let mut codecs = vec![e8];
        // 8-bit in place, 16-bit in place with the f16 copy (1.28 MB of f32 codewords) and with
        // the f32 codebook (640 KB), unpacked 12-bit, padded k = 3.
        for (d, k, n) in [
            (16, 4, 200),
            (24, 8, 40000),
            (16, 4, 40000),
            (16, 4, 3000),
            (12, 3, 300),
        ] {
            let words = (0..n * k)
                .map(|_| rng.next_gaussian() as f32 * 0.3)
                .collect();
            let cb = Codebook::new(d, k, n, words).unwrap();
            codecs.push(Codec::with_codebook(CodecConfig::new(d, k, n), Arc::new(cb)).unwrap());
        }
        for codec in &codecs {
            let (d, k, n) = (codec.dim(), codec.config().k, codec.config().n);
            assert!(codec.nan_padded() && codec.attention_n() == 1 << codec.index_bits());
            let (count, sb) = (300, codec.slot_bytes());
            let x: Vec<f32> = (0..count * d).map(|_| rng.next_gaussian() as f32).collect();
            let mut clean = vec![0u8; count * sb];
            codec.encode_batch(&x, &mut clean).unwrap();
            let qr: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            for (slot, block, index) in [(7, 0, n), (261, 2 % (d / k), codec.attention_n() - 1)] {
                let mut slots = clean.clone();
                let mut ids = vec![0u32; d / k];
                let s = &mut slots[slot * sb..(slot + 1) * sb];
                codec.read_slot(s, &mut ids).unwrap();
                ids[block] = index as u32;
                crate::util::pack::pack(&ids, codec.index_bits(), &mut s[2..]);
                let what = format!("d={d} k={k} n={n} slot {slot} index {index}");
                let named = |r: Result<()>| match r {
                    Err(Error::CorruptSlot(m)) => assert!(
                        m.contains(&format!("slot {slot}: block {block} holds index {index}")),
                        "{what}: {m}"
                    ),
                    other => panic!("{what}: expected CorruptSlot, got {other:?}"),
                };
                for isa in isas() {
                    for plan in [ScorePlan::Gather, ScorePlan::Table] {
                        let mut out = vec![0f32; count];
                        named(codec.scores_rotated(isa, plan, &qr, &slots, &mut out));
                    }
                    for w in [vec![1f32; count], vec![0f32; count]] {
                        let mut acc = vec![0f32; d];
                        named(codec.weighted_sum_rotated(
                            isa,
                            SumPlan::Gather,
                            &w,
                            &slots,
                            &mut acc,
                        ));
                    }
                }
            }
        }
        // The E8 codec read its f16 copy only: no f32 NaN-padded copy (2 MiB) was built.
        assert!(codecs[0].half_codebook().is_some() && !codecs[0].has_f32_attention_copy());
        // Overflow: products `+inf` and `-inf` (a query value near f32::MAX times codeword
        // values 2 and -2), whose sum is NaN in any order. The slot: norm 1, every index 0.
        let (d, k, n) = (8, 2, 3);
        let cb = Codebook::new(d, k, n, vec![2.0, -2.0, 0.5, 0.5, -0.5, 0.25]).unwrap();
        let codec = Codec::with_codebook(CodecConfig::new(d, k, n), Arc::new(cb)).unwrap();
        let mut slots = vec![0u8; codec.slot_bytes()];
        slots[..2].copy_from_slice(&0x3c00u16.to_le_bytes());
        let q = [3e38, 3e38, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for isa in isas() {
            for plan in [ScorePlan::Gather, ScorePlan::Table] {
                let mut out = [0f32];
                codec
                    .scores_rotated(isa, plan, &q, &slots, &mut out)
                    .unwrap();
                assert!(out[0].is_nan(), "{isa:?} {plan:?}: {}", out[0]);
            }
        }
    }

    /// Padding bits in a slot's last index byte are ignored by every plan, as by `decode`.
    #[test]
    fn padding_bits_of_the_last_index_byte_are_ignored() {
        let mut rng = Xoshiro256::new(16);
        // d = 12, 1-bit indices: the second index byte holds 4 blocks and 4 padding bits.
        let (d, k, n) = (12, 1, 2);
        let codebook = Codebook::new(d, k, n, vec![-0.4, 0.3]).unwrap();
        let codec = Codec::with_codebook(CodecConfig::new(d, k, n), Arc::new(codebook)).unwrap();
        let count = 200;
        let x: Vec<f32> = (0..count * d).map(|_| rng.next_gaussian() as f32).collect();
        let mut slots = vec![0u8; count * codec.slot_bytes()];
        codec.encode_batch(&x, &mut slots).unwrap();
        let mut dirty = slots.clone();
        for slot in dirty.chunks_exact_mut(codec.slot_bytes()) {
            *slot.last_mut().unwrap() |= 0xf0;
        }
        let qr: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
        let w: Vec<f32> = (0..count).map(|_| rng.next_open01() as f32).collect();
        let (mut a, mut b) = (vec![0f32; d], vec![0f32; d]);
        codec.decode(&slots[..codec.slot_bytes()], &mut a).unwrap();
        codec.decode(&dirty[..codec.slot_bytes()], &mut b).unwrap();
        assert_eq!(a, b, "decode");
        for isa in isas() {
            for plan in [ScorePlan::Gather, ScorePlan::Table, ScorePlan::Bytes] {
                let (mut clean, mut padded) = (vec![0f32; count], vec![0f32; count]);
                codec
                    .scores_rotated(isa, plan, &qr, &slots, &mut clean)
                    .unwrap();
                codec
                    .scores_rotated(isa, plan, &qr, &dirty, &mut padded)
                    .unwrap();
                assert_eq!(clean, padded, "{isa:?} {plan:?}");
            }
            for plan in [SumPlan::Gather, SumPlan::Bytes] {
                let (mut clean, mut padded) = (vec![0f32; d], vec![0f32; d]);
                codec
                    .weighted_sum_rotated(isa, plan, &w, &slots, &mut clean)
                    .unwrap();
                codec
                    .weighted_sum_rotated(isa, plan, &w, &dirty, &mut padded)
                    .unwrap();
                assert_eq!(clean, padded, "{isa:?} {plan:?}");
            }
        }
    }

    /// Long calls on codes whose indices fill whole bytes take the byte plan where it measured
    /// faster, and the public functions return exactly what that plan computes.
    #[test]
    fn long_calls_take_the_byte_plan() {
        let mut rng = Xoshiro256::new(14);
        let count = byte_plan::MIN_SLOTS + 100;
        for (d, k, n, scores, sums) in [
            (64, 8, 16, true, true),
            (128, 8, 256, true, true),
            (64, 4, 256, true, false),
            (64, 1, 2, true, true),
            (128, 1, 4, true, true),
            (64, 1, 16, false, false),
            (128, 2, 256, false, false),
            (64, 2, 64, false, false),
        ] {
            let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
            let isa = kernels::detect();
            let what = format!("d={d} k={k} n={n}");
            assert_eq!(
                codec.score_plan(isa, count) == ScorePlan::Bytes,
                scores,
                "{what}"
            );
            assert_eq!(codec.sum_plan(isa, count) == SumPlan::Bytes, sums, "{what}");
            assert_ne!(codec.score_plan(isa, 100), ScorePlan::Bytes, "{what}");
            assert_ne!(codec.sum_plan(isa, 100), SumPlan::Bytes, "{what}");
            let x: Vec<f32> = (0..count * d).map(|_| rng.next_gaussian() as f32).collect();
            let mut slots = vec![0u8; count * codec.slot_bytes()];
            codec.encode_batch(&x, &mut slots).unwrap();
            let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            let w: Vec<f32> = (0..count).map(|_| rng.next_open01() as f32).collect();
            let (mut got, mut want) = (vec![0f32; count], vec![0f32; count]);
            codec.scores(&q, &slots, &mut got).unwrap();
            let mut qr = vec![0f32; d];
            codec.rotation().apply(&q, &mut qr);
            let plan = codec.score_plan(isa, count);
            codec
                .scores_rotated(isa, plan, &qr, &slots, &mut want)
                .unwrap();
            assert_eq!(got, want, "{what}");
            let (mut got, mut acc) = (vec![0f32; d], vec![0f32; d]);
            codec.weighted_sum(&w, &slots, &mut got).unwrap();
            let plan = codec.sum_plan(isa, count);
            codec
                .weighted_sum_rotated(isa, plan, &w, &slots, &mut acc)
                .unwrap();
            let mut want = vec![0f32; d];
            codec.rotation().apply_inverse(&acc, &mut want);
            assert_eq!(got, want, "{what}");
        }
    }

    /// The f16 copy of a large codebook moves scores and rotated-domain sums by at most the
    /// rounding of the codewords (relative 2^-11, or 2^-25 absolute for values that round to a
    /// subnormal half) plus both computations' f32 rounding; `AttentionCodebook::F32` keeps the
    /// f32 codebook. The copy is really read: the results differ.
    #[test]
    fn the_f16_codebook_copy_stays_within_its_rounding_of_the_f32_codebook() {
        let mut rng = Xoshiro256::new(17);
        let (d, k, n, count) = (64, 8, 65536, 1500);
        let half = Codec::new(CodecConfig::new(d, k, n)).unwrap();
        let config = CodecConfig::new(d, k, n).with_attention_codebook(AttentionCodebook::F32);
        let full = Codec::new(config).unwrap();
        assert!(half.half_codebook().is_some() && full.half_codebook().is_none());
        let x: Vec<f32> = (0..count * d).map(|_| rng.next_gaussian() as f32).collect();
        let mut slots = vec![0u8; count * half.slot_bytes()];
        half.encode_batch(&x, &mut slots).unwrap();
        let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
        let w: Vec<f32> = (0..count).map(|_| rng.next_open01() as f32).collect();
        let (mut a, mut b) = (vec![0f32; count], vec![0f32; count]);
        half.scores(&q, &slots, &mut a).unwrap();
        full.scores(&q, &slots, &mut b).unwrap();
        let isa = kernels::detect();
        let (mut acc_a, mut acc_b) = (vec![0f32; d], vec![0f32; d]);
        half.weighted_sum_rotated(isa, SumPlan::Gather, &w, &slots, &mut acc_a)
            .unwrap();
        full.weighted_sum_rotated(isa, SumPlan::Gather, &w, &slots, &mut acc_b)
            .unwrap();
        assert!(a != b && acc_a != acc_b, "the f16 copy was not read");

        let mut qr = vec![0f32; d];
        half.rotation().apply(&q, &mut qr);
        let q_l1: f64 = qr.iter().map(|v| v.abs() as f64).sum();
        let (eps, unit) = (f32::EPSILON as f64, 2f64.powi(-11));
        let (mut acc_terms, mut weight_norms) = (vec![0f64; d], 0f64);
        let mut xr = vec![0f32; d];
        for (i, slot) in slots.chunks_exact(half.slot_bytes()).enumerate() {
            let norm = half.decode_rotated(slot, &mut xr).unwrap() as f64;
            let terms: f64 = qr.iter().zip(&xr).map(|(p, v)| (p * v).abs() as f64).sum();
            let tol =
                (unit + 2.0 * (d + 4) as f64 * eps) * 1.001 * terms + 2f64.powi(-25) * norm * q_l1;
            assert!(
                (a[i] as f64 - b[i] as f64).abs() <= tol,
                "slot {i}: {} vs {}",
                a[i],
                b[i]
            );
            weight_norms += w[i] as f64 * norm;
            for (t, v) in acc_terms.iter_mut().zip(&xr) {
                *t += (w[i] * v).abs() as f64;
            }
        }
        for j in 0..d {
            let tol = (unit + 2.0 * (count + 2) as f64 * eps) * 1.001 * acc_terms[j]
                + 2f64.powi(-25) * weight_norms;
            assert!(
                (acc_a[j] as f64 - acc_b[j] as f64).abs() <= tol,
                "coordinate {j}: {} vs {}",
                acc_a[j],
                acc_b[j]
            );
        }
    }

    /// A large codebook holding a value beyond the f16 range (65504) keeps the f32 codebook for
    /// attention (the copy would hold an infinity); the same codebook without it gets the copy.
    #[test]
    fn a_codebook_beyond_the_f16_range_keeps_f32_for_attention() {
        let mut rng = Xoshiro256::new(19);
        let (d, k, n) = (24, 8, (1 << 15) + 3);
        let mut cw: Vec<f32> = (0..n * k)
            .map(|_| rng.next_gaussian() as f32 * 0.3)
            .collect();
        let codec = |cw: Vec<f32>| {
            let codebook = Codebook::new(d, k, n, cw).unwrap();
            Codec::with_codebook(CodecConfig::new(d, k, n), Arc::new(codebook)).unwrap()
        };
        assert!(codec(cw.clone()).half_codebook().is_some());
        cw[5] = 1e5;
        let big = codec(cw);
        assert!(big.half_codebook().is_none());
        let x: Vec<f32> = (0..4 * d).map(|_| rng.next_gaussian() as f32).collect();
        let mut slots = vec![0u8; 4 * big.slot_bytes()];
        big.encode_batch(&x, &mut slots).unwrap();
        // Block 0 of slot 0 (16-bit index after the 2-byte norm) points at codeword 0, whose
        // coordinate 5 is the 1e5.
        slots[2..4].fill(0);
        let mut scores = [0f32; 4];
        big.scores(&[1.0; 24], &slots, &mut scores).unwrap();
        assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
    }

    /// Every plan and ISA on `codec` against the portable gather kernels (bit for bit) and an
    /// f64 reference from decoded slots (within the forward error bound), decoded from the
    /// codebook copy attention reads (the f16-rounded one for large codebooks).
    fn check_every_plan_and_isa(codec: &Codec, rng: &mut Xoshiro256) {
        let (d, k, n) = (codec.dim(), codec.config().k, codec.config().n);
        let count = 300; // more than two chunks, with a remainder
        let x: Vec<f32> = (0..count * d).map(|_| rng.next_gaussian() as f32).collect();
        let mut slots = vec![0u8; count * codec.slot_bytes()];
        codec.encode_batch(&x, &mut slots).unwrap();
        let qr: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
        let w: Vec<f32> = (0..count).map(|_| rng.next_open01() as f32).collect();

        let mut want = vec![0f32; count];
        codec
            .scores_rotated(Isa::Portable, ScorePlan::Gather, &qr, &slots, &mut want)
            .unwrap();
        let mut want_acc = vec![0f32; d];
        codec
            .weighted_sum_rotated(Isa::Portable, SumPlan::Gather, &w, &slots, &mut want_acc)
            .unwrap();
        // Reference in f64 from decoded rotated vectors, for the table's tolerance.
        let mut exact_acc = vec![0f64; d];
        let mut acc_bound = vec![0f64; d];
        let mut exact = vec![0f64; count];
        let mut bound = vec![0f64; count];
        let mut xr = vec![0f32; d];
        let codewords = codec.half_codebook().map(|h| h.widened);
        assert_eq!(
            codewords.is_some(),
            n * k * 4 >= crate::HALF_CODEBOOK_FROM_BYTES,
            "d={d} k={k} n={n}: f16 copy where the f32 codebook takes 1 MiB or more"
        );
        for (i, slot) in slots.chunks_exact(codec.slot_bytes()).enumerate() {
            codec.reconstruct_rotated(slot, &mut xr, codewords).unwrap();
            exact[i] = qr.iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum();
            bound[i] = qr
                .iter()
                .zip(&xr)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            for ((e, b), &v) in exact_acc.iter_mut().zip(&mut acc_bound).zip(&xr) {
                *e += w[i] as f64 * v as f64;
                *b += (w[i] as f64 * v as f64).abs();
            }
        }
        // Forward error bound `depth * eps * sum |terms|`, `depth` the most roundings a term
        // goes through: for the gather kernels the product `w * norm`, the product with the
        // codeword and `count` additions (`count + 2`); for the byte histogram `w * norm`, at
        // most `count - 1` additions into its bin, the product with the codeword, 31 + 3 in the
        // 8-lane 256-entry dot product and the addition into `acc` (`count + 36`).
        let check_sum = |acc: &[f32], what: &str, depth: usize| {
            for j in 0..d {
                let tol = depth as f64 * f32::EPSILON as f64 * acc_bound[j];
                assert!(
                    (acc[j] as f64 - exact_acc[j]).abs() <= tol,
                    "d={d} k={k} n={n} {what}: weighted sum coordinate {j}"
                );
            }
        };
        check_sum(&want_acc, "portable gather", count + 2);
        let bytes = codec.byte_layout().is_some();
        // The byte plan, like the table, differs from the gather kernels by rounding only, and
        // is bit-identical across ISAs: its reference is its portable run.
        let mut want_bytes = vec![0f32; count];
        let mut want_bytes_acc = vec![0f32; d];
        // The table plan too: its reference is its own portable run.
        let mut want_table = vec![0f32; count];
        codec
            .scores_rotated(
                Isa::Portable,
                ScorePlan::Table,
                &qr,
                &slots,
                &mut want_table,
            )
            .unwrap();
        if bytes {
            codec
                .scores_rotated(
                    Isa::Portable,
                    ScorePlan::Bytes,
                    &qr,
                    &slots,
                    &mut want_bytes,
                )
                .unwrap();
            codec
                .weighted_sum_rotated(
                    Isa::Portable,
                    SumPlan::Bytes,
                    &w,
                    &slots,
                    &mut want_bytes_acc,
                )
                .unwrap();
            check_sum(&want_bytes_acc, "byte histogram", count + 36);
        }
        for isa in isas() {
            let mut plans = vec![ScorePlan::Gather, ScorePlan::Table];
            if codec.has_scalar_kernel(isa) {
                plans.push(ScorePlan::Scalar);
            }
            if bytes {
                plans.push(ScorePlan::Bytes);
            }
            for plan in plans {
                let mut got = vec![0f32; count];
                codec
                    .scores_rotated(isa, plan, &qr, &slots, &mut got)
                    .unwrap();
                // Forward error bound `depth * eps * sum |terms|`. Gather: a product, at most
                // `d - 1` additions and the norm (`d + 1`). Table and byte plans: a table entry
                // sums `c` products (`c` = coordinates per block or per index byte, at most
                // `d`), then `ceil(d / (4 c))` running sums, two final additions and the norm,
                // at most `d + 4` in all.
                for i in 0..count {
                    let tol = (d as f64 + 4.0) * f32::EPSILON as f64 * bound[i];
                    assert!(
                        (got[i] as f64 - exact[i]).abs() <= tol,
                        "d={d} k={k} n={n} {isa:?} {plan:?} slot {i}: {} vs {}",
                        got[i],
                        exact[i]
                    );
                }
                match plan {
                    ScorePlan::Table => assert_eq!(got, want_table, "d={d} k={k} n={n} {isa:?}"),
                    ScorePlan::Bytes => assert_eq!(got, want_bytes, "d={d} k={k} n={n} {isa:?}"),
                    _ => assert_eq!(got, want, "d={d} k={k} n={n} {isa:?} {plan:?}"),
                }
            }
            for plan in [SumPlan::Gather, SumPlan::Scalar, SumPlan::Bytes] {
                if (plan == SumPlan::Scalar && !codec.has_scalar_kernel(isa))
                    || (plan == SumPlan::Bytes && !bytes)
                {
                    continue;
                }
                let mut acc = vec![0f32; d];
                codec
                    .weighted_sum_rotated(isa, plan, &w, &slots, &mut acc)
                    .unwrap();
                let want = if plan == SumPlan::Bytes {
                    &want_bytes_acc
                } else {
                    &want_acc
                };
                assert_eq!(&acc, want, "d={d} k={k} n={n} {isa:?} {plan:?}");
            }
        }
    }
}
