//! The copies of a codec's codewords that attention reads, and which of them a call reads:
//! the codewords NaN-padded to a power of two (so that every representable index is in bounds),
//! the f16 copy of large codebooks, `k = 3` codewords padded to 4 values, and the byte plan's
//! expanded codebook. Each is built on first use and kept with the codebook
//! ([`crate::codebook::Codebook`]), so codecs that share a codebook share them.

use super::byte_plan::BytePlan;
use crate::codec::{AttentionCodebook, Codec, MAX_DIM};
use crate::util::fp16::{f16_bits_to_f32, f32_to_f16_bits, F16_MAX};
use std::sync::Arc;

/// [`AttentionCodebook::HalfWhereLarge`] reads an f16 copy of codebooks whose f32 codewords take
/// at least this many bytes (1 MiB): codebooks that crowd the slots they are read with out of a
/// CPU's L2 cache. The byte and scalar-code plans never meet the copy: their codebooks
/// (`N <= 256`, `k <=` [`MAX_DIM`]) stay below 1 MiB.
pub const HALF_CODEBOOK_FROM_BYTES: usize = 1 << 20;

const _: () = assert!(256 * MAX_DIM * 4 < HALF_CODEBOOK_FROM_BYTES);

/// The bits of an f16 quiet NaN.
const F16_NAN: u16 = 0x7e00;

impl Codec {
    /// Builds ahead everything this codec builds on first use: the codebook's search structures
    /// ([`Codebook::prepare_search`](crate::Codebook::prepare_search)) and the codebook copies
    /// its attention reads. Without it, the first encode or attention call that needs one pays
    /// for it: up to about a second for the registry's largest codes (the 4-bit preset's
    /// shortlists), nothing for small ones. Idempotent and thread-safe; shared by every codec on
    /// the same codebook.
    pub fn prepare(&self) {
        self.codebook().prepare_search();
        if self.half_codebook().is_none() {
            self.attention_codewords();
        }
        self.padded_codebook();
        self.byte_plan();
    }

    /// The byte layout of this codec's indices, if they fill whole bytes ([`BytePlan::of`]).
    pub(crate) fn byte_layout(&self) -> Option<BytePlan> {
        BytePlan::of(self.index_bits(), self.config().k, self.config().n, self.blocks())
    }

    /// This codec's byte plan, if its indices fill whole bytes, with its expanded codebook
    /// (built on first use).
    pub(crate) fn byte_plan(&self) -> Option<(BytePlan, &[[f32; 256]])> {
        let plan = self.byte_layout()?;
        let e = self
            .codebook()
            .derived()
            .byte_expanded
            .get_or_init(|| Arc::new(plan.expanded(self.codebook().codewords())));
        Some((plan, e.as_slice()))
    }

    /// How many codewords the codebook copies that attention reads hold: `N`, or `2^bits` when
    /// `N` is not a power of two and its indices take at most 16 bits. The codewords past `N`
    /// are NaN, so that a stored index at or past `N` (a corrupt slot) makes its score or its sum
    /// NaN instead of being checked against `N` one by one: every representable index is in
    /// bounds, and [`Codec::scores`] and [`Codec::weighted_sum`] look for the bad index only when
    /// a chunk's output holds a NaN.
    pub(crate) fn attention_n(&self) -> usize {
        if self.nan_padded() {
            1 << self.index_bits()
        } else {
            self.config().n
        }
    }

    /// Whether attention's codebook copies are padded with NaN codewords (see
    /// [`Codec::attention_n`]).
    pub(crate) fn nan_padded(&self) -> bool {
        !self.config().n.is_power_of_two() && self.index_bits() <= 16
    }

    /// How many NaN values pad attention's codebook copies: `(attention_n - N) * k`.
    fn nan_values(&self) -> usize {
        (self.attention_n() - self.config().n) * self.config().k
    }

    /// The f32 codewords attention reads: the codebook's own, followed by NaN codewords up to
    /// [`Codec::attention_n`] (a copy, built on first use, only where `N` is not a power of
    /// two).
    pub(crate) fn attention_codewords(&self) -> &[f32] {
        let cw = self.codebook().codewords();
        if !self.nan_padded() {
            return cw;
        }
        let extra = self.nan_values();
        self.codebook().derived().nan_padded.get_or_init(|| {
            Arc::new(
                cw.iter()
                    .copied()
                    .chain(std::iter::repeat_n(f32::NAN, extra))
                    .collect(),
            )
        })
    }

    /// Whether the f32 NaN-padded copy of [`Codec::attention_codewords`] has been built (tests).
    #[cfg(test)]
    pub(crate) fn has_f32_attention_copy(&self) -> bool {
        self.codebook().derived().nan_padded.get().is_some()
    }

    /// The f16 copy of the codebook that attention reads, if [`AttentionCodebook`] asks for
    /// one for this codebook (built on first use), NaN-padded like
    /// [`Codec::attention_codewords`].
    pub(crate) fn half_codebook(&self) -> Option<crate::kernels::HalfCodebook<'_>> {
        let large = std::mem::size_of_val(self.codebook().codewords()) >= HALF_CODEBOOK_FROM_BYTES;
        if self.config().attention_codebook != AttentionCodebook::HalfWhereLarge || !large {
            return None;
        }
        let h = self.codebook().derived().half.get_or_init(|| {
            let cw = self.codebook().codewords();
            // A value beyond the f16 range would become infinite: such a codebook keeps f32.
            if cw.iter().any(|v| v.abs() > F16_MAX) {
                return None;
            }
            let extra = self.nan_values();
            let halves: Vec<u16> = cw
                .iter()
                .map(|&v| f32_to_f16_bits(v))
                .chain(std::iter::repeat_n(F16_NAN, extra))
                .collect();
            let widened = halves.iter().map(|&h| f16_bits_to_f32(h)).collect();
            Some(Arc::new((halves, widened)))
        });
        h.as_ref().map(|h| crate::kernels::HalfCodebook {
            halves: &h.0,
            widened: &h.1,
        })
    }

    /// For `k = 3` codes with an even number of blocks, read by attention from the f32
    /// codebook: the codebook with a zero fourth value appended to every codeword (built on
    /// first use), NaN-padded like [`Codec::attention_codewords`]. Attention then runs the
    /// `k = 4` whole-register kernels on it, with the query and the accumulator padded the same
    /// way, on every ISA.
    pub(crate) fn padded_codebook(&self) -> Option<&[f32]> {
        if self.config().k != 3 || !self.blocks().is_multiple_of(2) || self.half_codebook().is_some() {
            return None;
        }
        let p = self.codebook().derived().padded.get_or_init(|| {
            let cw = self.attention_codewords();
            Arc::new(
                cw.chunks_exact(3)
                    .flat_map(|c| [c[0], c[1], c[2], 0.0])
                    .collect(),
            )
        });
        Some(p.as_slice())
    }
}
