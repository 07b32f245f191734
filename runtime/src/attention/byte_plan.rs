//! The byte plan of attention on codes, for codes whose indices fill whole bytes (`N = 2^bits`
//! with `bits` 1, 2, 4 or 8).
//!
//! A slot's index byte `p` holds the indices of `per = 8 / bits` consecutive blocks, so its 256
//! values enumerate every combination of their codewords. Scores then cost one look-up per index
//! byte instead of one product per block: a per-query table `T[p][v]` holds the partial dot
//! product of the rotated query with the blocks that byte value `v` encodes. The weighted sum is
//! the dual: a histogram `H[p][v]` of the scaled weights of the slots whose byte `p` is `v`
//! (one addition per index byte and slot), expanded once at the end into the rotated-domain
//! accumulator. Both cost `256 * d` multiply-adds per call to set up or finish, which is why
//! [`MIN_SLOTS`] keeps short calls on the per-slot kernels.
//!
//! Both build on an expanded codebook `E[t][i][v] = C[field_t(v)][i]`: coordinate `i` of the
//! codeword that block `t` of a byte with value `v` selects, `field_t(v) = (v >> t * bits) &
//! (N - 1)`. Table rows and finished coordinates are then 256-long vector operations.

use crate::kernels::portable::sum_lanes;

/// Fewest slots for which [`Codec::scores`](crate::Codec::scores) and
/// [`Codec::weighted_sum`](crate::Codec::weighted_sum) use the byte plan: its fixed cost per call
/// (a query table and a histogram expansion of `256 * d` multiply-adds each) must be spread over
/// enough slots (`docs/tuning.md`).
pub(crate) const MIN_SLOTS: usize = 1024;

/// Most index bytes per slot for the byte plan: a table (or histogram) of 1 KiB per byte stays
/// within 64 KiB, in L1 or L2.
pub(crate) const MAX_BYTES: usize = 64;

/// The byte layout of a codec's indices.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BytePlan {
    /// Bits per index (1, 2, 4 or 8).
    bits: u32,
    /// Blocks per index byte, `8 / bits`.
    per: usize,
    /// Coordinates per block.
    k: usize,
    /// Blocks per slot.
    blocks: usize,
    /// Index bytes per slot.
    bytes: usize,
}

impl BytePlan {
    /// The byte plan of a code of `bits`-bit indices, `n` codewords of `k` values and `blocks`
    /// blocks per slot, if its indices fill whole bytes, every byte value is a valid
    /// combination of indices (`n = 2^bits`) and a slot has at most [`MAX_BYTES`] index bytes.
    pub(crate) fn of(bits: u32, k: usize, n: usize, blocks: usize) -> Option<BytePlan> {
        if !matches!(bits, 1 | 2 | 4 | 8) || n != 1 << bits {
            return None;
        }
        let per = 8 / bits as usize;
        let bytes = blocks.div_ceil(per);
        (bytes <= MAX_BYTES).then_some(BytePlan {
            bits,
            per,
            k,
            blocks,
            bytes,
        })
    }

    /// Whether scores are faster with the byte table than with the per-block kernels: for
    /// sub-byte indices and 8-bit ones up to 32 bytes a slot, except where the in-register
    /// scalar-code kernel is faster (`k = 1, N = 16`). Measured in `docs/tuning.md`.
    pub(crate) fn pays_for_scores(&self) -> bool {
        self.bytes <= 32 && !(self.k == 1 && self.bits >= 4)
    }

    /// Whether weighted sums are faster with the byte histogram than with the per-block kernels.
    /// A histogram addition is a load-add-store through memory, so it pays where one index byte
    /// replaces several codeword products (sub-byte indices, `k = 8` codewords), not for 8-bit
    /// indices of `k <= 4` nor against the in-register scalar-code kernel. Measured in
    /// `docs/tuning.md`.
    pub(crate) fn pays_for_sums(&self) -> bool {
        (self.bits <= 4 || self.k >= 8) && !(self.k == 1 && self.bits >= 4)
    }

    /// Index bytes per slot.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The rotated-domain coordinates of the blocks held by index byte `p` (`per` blocks, or
    /// fewer in a last, partly padded byte).
    fn coords(&self, p: usize) -> std::ops::Range<usize> {
        let first = p * self.per;
        let blocks = self.per.min(self.blocks - first);
        first * self.k..(first + blocks) * self.k
    }

    /// The expanded codebook: `min(per, blocks) * k` rows of 256, row `t * k + i` being
    /// `E[t][i]` (built once per codebook, see `Codec::byte_plan`).
    pub(crate) fn expanded(&self, codewords: &[f32]) -> Vec<[f32; 256]> {
        let mask = (1usize << self.bits) - 1;
        // Only the block positions that a byte of this code holds (`blocks < per` for tiny `d`).
        let mut e = vec![[0f32; 256]; self.per.min(self.blocks) * self.k];
        for (r, row) in e.iter_mut().enumerate() {
            let (t, i) = (r / self.k, r % self.k);
            let shift = t * self.bits as usize;
            for (v, x) in row.iter_mut().enumerate() {
                *x = codewords[((v >> shift) & mask) * self.k + i];
            }
        }
        e
    }

    /// The score table of the rotated query `qr`: `T[p][v] = sum_t sum_i qr[(p * per + t) * k +
    /// i] * E[t][i][v]`, accumulated in that order from zero (`e`: [`expanded`](Self::expanded)).
    pub(crate) fn score_table(&self, e: &[[f32; 256]], qr: &[f32]) -> Vec<[f32; 256]> {
        let mut table = vec![[0f32; 256]; self.bytes];
        for (p, row) in table.iter_mut().enumerate() {
            for (&qc, er) in qr[self.coords(p)].iter().zip(e) {
                for (x, &ev) in row.iter_mut().zip(er) {
                    *x += qc * ev;
                }
            }
        }
        table
    }

    /// Adds the weighted sum that histogram `hist` stands for to `acc` (rotated domain):
    /// `acc[(p * per + t) * k + i] += <H[p], E[t][i]>`, each dot product taken in 8 lanes
    /// (lane `l` sums the entries `v = l mod 8` in order) then combined by `sum_lanes`.
    pub(crate) fn expand(&self, e: &[[f32; 256]], hist: &[[f32; 256]], acc: &mut [f32]) {
        for (p, h) in hist.iter().enumerate() {
            for (a, er) in acc[self.coords(p)].iter_mut().zip(e) {
                let mut lanes = [0f32; 8];
                for (h8, e8) in h.chunks_exact(8).zip(er.chunks_exact(8)) {
                    for l in 0..8 {
                        lanes[l] += h8[l] * e8[l];
                    }
                }
                *a += sum_lanes(&lanes);
            }
        }
    }
}
