//! The codec: normalize -> rotate -> block-quantize -> pack, and back.
//!
//! # Slot layout
//! Every vector is stored in one fixed-size slot of [`Codec::slot_bytes`] bytes:
//!
//! | bytes | content |
//! |---|---|
//! | `0 .. norm_bytes` | the norm `||x||`, little-endian binary16 ([`NormFormat::F16`], 2 bytes) or f32 ([`NormFormat::F32`], 4 bytes) |
//! | `norm_bytes ..` | `d / k` codeword indices of `ceil(log2 N)` bits each, least significant bit first, block 0 first; the last byte is zero-padded |
//!
//! So a slot is `norm_bytes + ceil((d / k) * ceil(log2 N) / 8)` bytes, and a buffer of slots is
//! random access: slot `i` starts at byte `i * slot_bytes`.

pub mod codefile;
pub mod rotation;

use crate::codebook::Codebook;
use crate::error::{check_len, Error, Result};
use crate::util::fp16::{f16_bits_to_f32, f32_to_f16_bits, F16_MAX};
use crate::util::pack::{index_bits, pack, packed_bytes, unpack, unpack_one};
use crate::registry;
use crate::codec::rotation::{Rotation, RotationKind};
use std::sync::Arc;

/// How the per-vector norm is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormFormat {
    /// IEEE binary16, 2 bytes (max 65504, relative rounding error at most 2^-11).
    #[default]
    F16,
    /// IEEE binary32, 4 bytes.
    F32,
}

impl NormFormat {
    /// Bytes used by the norm in a slot.
    pub fn bytes(self) -> usize {
        match self {
            NormFormat::F16 => 2,
            NormFormat::F32 => 4,
        }
    }
}

/// Which copy of the codebook attention on codes ([`Codec::scores`], [`Codec::weighted_sum`])
/// reads. Encoding and [`Codec::decode`] always use the f32 codebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttentionCodebook {
    /// The codebook rounded to f16 where the f32 one takes at least [`HALF_CODEBOOK_FROM_BYTES`](crate::HALF_CODEBOOK_FROM_BYTES)
    /// (for the registry: the `N = 65536` codebooks, 1 and 2 MiB, as large as a whole L2
    /// cache; in f16 they leave room for the streamed slots) and every value fits the f16 range
    /// (at most 65504 in magnitude), the f32 codebook otherwise. Rounding moves each codeword
    /// value by at most 2^-11 of itself (plus 2^-25 for values below 2^-14, which f16 holds as
    /// subnormals): the same relative error as the default f16 norm ([`NormFormat::F16`]) and
    /// far below the code's own quantization error. Results are still bit-identical across
    /// CPUs.
    #[default]
    HalfWhereLarge,
    /// Always the f32 codebook: scores and sums equal the decoded vectors' within f32 rounding.
    F32,
}

/// Default rotation seed (shared by every layer, head and token).
pub const DEFAULT_SEED: u64 = 0x4669_6251_7561_6e74; // "FibQuant"

/// What a [`Codec`] is built from: [`CodecConfig::new`] or [`CodecConfig::preset`], then the
/// `with_*` methods (the struct is `#[non_exhaustive]`, so that new settings do not break
/// callers).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CodecConfig {
    /// Head dimension `d`.
    pub dim: usize,
    /// Block size `k` (must divide `d`).
    pub k: usize,
    /// Codebook size `N`.
    pub n: usize,
    /// Rotation.
    pub rotation: RotationKind,
    /// Norm storage.
    pub norm: NormFormat,
    /// Seed of the rotation.
    pub seed: u64,
    /// Which codebook copy attention on codes reads.
    pub attention_codebook: AttentionCodebook,
}

impl CodecConfig {
    /// A configuration with the default rotation ([`RotationKind::Auto`]), fp16 norms and the
    /// default seed.
    pub fn new(dim: usize, k: usize, n: usize) -> CodecConfig {
        CodecConfig {
            dim,
            k,
            n,
            rotation: RotationKind::Auto,
            norm: NormFormat::F16,
            seed: DEFAULT_SEED,
            attention_codebook: AttentionCodebook::HalfWhereLarge,
        }
    }

    /// The named rate preset: the embedded codebook with the lowest MSE among those that store
    /// exactly `rate_bits` bits per coordinate for head dim `dim` (for example 4.0, 2.0, 1.0 or
    /// 0.5; see [`registry::best_for_rate`]).
    ///
    /// Presets choose quality: among codes of the same bytes, the lowest MSE (at `d = 64` and
    /// `128`, 2 bits is the E8 code, `k = 8, N = 64497`, whose exact orbit search needs no
    /// search structure; 3 and 4 bits are `k = 4` codes). `fibquant-gen list` shows the
    /// registry; only the codes this build embeds (its cargo features) are candidates.
    pub fn preset(dim: usize, rate_bits: f64) -> Result<CodecConfig> {
        let e = registry::best_for_rate(dim, rate_bits)?;
        Ok(CodecConfig::new(dim, e.k, e.n))
    }

    /// Bytes of one slot of this configuration: the norm, then `d / k` indices of
    /// `ceil(log2 N)` bits, rounded up to whole bytes (`k` must divide `d`).
    pub(crate) fn slot_bytes(&self) -> usize {
        self.norm.bytes() + packed_bytes(self.dim / self.k, index_bits(self.n))
    }

    /// Same configuration with another rotation.
    pub fn with_rotation(mut self, rotation: RotationKind) -> Self {
        self.rotation = rotation;
        self
    }

    /// Same configuration with another norm format.
    pub fn with_norm(mut self, norm: NormFormat) -> Self {
        self.norm = norm;
        self
    }

    /// Same configuration with another rotation seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Same configuration with another choice of codebook copy for attention.
    pub fn with_attention_codebook(mut self, choice: AttentionCodebook) -> Self {
        self.attention_codebook = choice;
        self
    }
}

/// A FibQuant codec for one `(d, k, N)`, rotation and norm format. Immutable after construction:
/// `Send + Sync`, share it between threads behind an `Arc` or a reference.
#[derive(Debug, Clone)]
pub struct Codec {
    config: CodecConfig,
    codebook: Arc<Codebook>,
    rotation: Rotation,
    bits: u32,
    blocks: usize,
    slot_bytes: usize,
}

pub use crate::kernels::MAX_DIM;

impl Codec {
    /// Builds a codec on the embedded codebook for `(dim, k, n)`.
    pub fn new(config: CodecConfig) -> Result<Codec> {
        let codebook = registry::codebook(config.dim, config.k, config.n)?;
        Codec::with_codebook(config, codebook)
    }

    /// Builds a codec on a caller-supplied codebook (for example one regenerated by
    /// `fibquant-gen` and loaded with [`Codebook::from_file_bytes`]). The codebook must match
    /// `config`'s `(dim, k, n)`.
    pub fn with_codebook(config: CodecConfig, codebook: Arc<Codebook>) -> Result<Codec> {
        if config.dim == 0 || config.dim > MAX_DIM {
            return Err(Error::InvalidConfig(format!(
                "dim must be 1 to {MAX_DIM}, got {}",
                config.dim
            )));
        }
        if config.k == 0 || !config.dim.is_multiple_of(config.k) {
            return Err(Error::BlockDoesNotDivide {
                dim: config.dim,
                k: config.k,
            });
        }
        if (codebook.dim(), codebook.k(), codebook.n()) != (config.dim, config.k, config.n) {
            return Err(Error::InvalidConfig(format!(
                "codebook is for dim={} k={} n={}, config asks for dim={} k={} n={}",
                codebook.dim(),
                codebook.k(),
                codebook.n(),
                config.dim,
                config.k,
                config.n
            )));
        }
        let rotation = Rotation::new(config.rotation, config.dim, config.seed)?;
        let bits = index_bits(config.n);
        let blocks = config.dim / config.k;
        let slot_bytes = config.slot_bytes();
        Ok(Codec {
            config,
            codebook,
            rotation,
            bits,
            blocks,
            slot_bytes,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }
    /// The codebook.
    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }
    /// The rotation.
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }
    /// Head dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }
    /// Number of blocks per vector, `d / k`.
    pub fn blocks(&self) -> usize {
        self.blocks
    }
    /// Bits per stored index, `ceil(log2 N)`.
    pub fn index_bits(&self) -> u32 {
        self.bits
    }
    /// Bytes of one slot (norm included, rounded up to whole bytes).
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }
    /// Nominal rate `log2(N) / k` bits per coordinate (norm excluded).
    pub fn rate_bits(&self) -> f64 {
        self.codebook.rate_bits()
    }
    /// Compression against fp16 storage with honest accounting: `2 d / slot_bytes`.
    pub fn compression_vs_f16(&self) -> f64 {
        (2 * self.config.dim) as f64 / self.slot_bytes as f64
    }

    fn norm_bytes(&self) -> usize {
        self.config.norm.bytes()
    }

    /// Encodes one vector `x` (length `d`) into `slot` (length [`slot_bytes`](Self::slot_bytes)).
    pub fn encode(&self, x: &[f32], slot: &mut [u8]) -> Result<()> {
        let d = self.config.dim;
        check_len("input vector", d, x.len())?;
        check_len("slot", self.slot_bytes, slot.len())?;
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let norm = x
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        let (norm_stored, norm_field) = self.quantize_norm(norm)?;
        let (norm_slot, index_slot) = slot.split_at_mut(self.norm_bytes());
        norm_slot.copy_from_slice(&norm_field[..self.norm_bytes()]);
        let mut indices = [0u32; MAX_DIM];
        let indices = &mut indices[..self.blocks];
        if norm_stored > 0.0 && norm > 0.0 {
            let mut unit = [0f32; MAX_DIM];
            let mut rotated = [0f32; MAX_DIM];
            let inv = 1.0 / norm;
            if inv <= f32::MAX as f64 {
                let inv = inv as f32;
                for (u, v) in unit[..d].iter_mut().zip(x) {
                    *u = v * inv;
                }
            } else {
                // A norm below 1 / f32::MAX (only f32 norms store one): 1 / norm has no f32, so
                // normalize in f64.
                for (u, &v) in unit[..d].iter_mut().zip(x) {
                    *u = (v as f64 * inv) as f32;
                }
            }
            self.rotation.apply(&unit[..d], &mut rotated[..d]);
            self.codebook.nearest_many(&rotated[..d], indices);
        }
        pack(indices, self.bits, index_slot);
        Ok(())
    }

    /// Rounds a norm to the norm format; returns the stored value and its little-endian bytes.
    fn quantize_norm(&self, norm: f64) -> Result<(f32, [u8; 4])> {
        match self.config.norm {
            NormFormat::F16 => {
                let h = f32_to_f16_bits(norm as f32);
                let v = f16_bits_to_f32(h);
                if !v.is_finite() || norm > F16_MAX as f64 {
                    return Err(Error::NormOverflow {
                        norm: norm as f32,
                        max: F16_MAX,
                    });
                }
                let b = h.to_le_bytes();
                Ok((v, [b[0], b[1], 0, 0]))
            }
            NormFormat::F32 => {
                let v = norm as f32;
                if !v.is_finite() {
                    return Err(Error::NormOverflow {
                        norm: v,
                        max: f32::MAX,
                    });
                }
                Ok((v, v.to_le_bytes()))
            }
        }
    }

    /// Reads and validates the norm of a slot.
    pub(crate) fn slot_norm(&self, slot: &[u8]) -> Result<f32> {
        let v = match self.config.norm {
            NormFormat::F16 => f16_bits_to_f32(u16::from_le_bytes([slot[0], slot[1]])),
            NormFormat::F32 => f32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]),
        };
        if !v.is_finite() || v < 0.0 {
            return Err(Error::CorruptSlot(format!(
                "norm {v} is not a finite non-negative number"
            )));
        }
        Ok(v)
    }

    /// Reads index `block` of a slot and checks it is below `N`.
    #[inline]
    pub(crate) fn slot_index(&self, slot: &[u8], block: usize) -> Result<usize> {
        let i = unpack_one(&slot[self.norm_bytes()..], self.bits, block) as usize;
        if i >= self.config.n {
            return Err(Error::CorruptSlot(format!(
                "block {block} holds index {i}, codebook has {} codewords",
                self.config.n
            )));
        }
        Ok(i)
    }

    /// Reads the norm and all `d / k` indices of a slot into `indices`, validating both.
    pub fn read_slot(&self, slot: &[u8], indices: &mut [u32]) -> Result<f32> {
        check_len("slot", self.slot_bytes, slot.len())?;
        check_len("index buffer", self.blocks, indices.len())?;
        self.read_slot_unchecked_len(slot, indices)
    }

    /// [`read_slot`](Self::read_slot) for a slot and buffer already known to have the right
    /// lengths. Indices are range-checked only when `N` is not a power of two (otherwise every
    /// `log2 N`-bit value is a valid index).
    #[inline]
    pub(crate) fn read_slot_unchecked_len(&self, slot: &[u8], indices: &mut [u32]) -> Result<f32> {
        let norm = self.slot_norm(slot)?;
        unpack(&slot[self.norm_bytes()..], self.bits, indices);
        if !self.config.n.is_power_of_two() {
            if let Some(j) = indices.iter().position(|&i| i as usize >= self.config.n) {
                return Err(Error::CorruptSlot(format!(
                    "block {j} holds index {}, codebook has {} codewords",
                    indices[j], self.config.n
                )));
            }
        }
        Ok(norm)
    }

    /// Decodes one slot into `out` (length `d`): `x_hat = norm * P^T concat(C[idx_j])`.
    pub fn decode(&self, slot: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.config.dim;
        check_len("slot", self.slot_bytes, slot.len())?;
        check_len("output vector", d, out.len())?;
        let mut rotated = [0f32; MAX_DIM];
        let rotated = &mut rotated[..d];
        let norm = self.decode_rotated(slot, rotated)?;
        self.rotation.apply_inverse(rotated, out);
        if norm == 0.0 {
            out.iter_mut().for_each(|o| *o = 0.0);
        }
        if !crate::util::overflow::all_finite(out) {
            // The inverse rotation overflowed f32 on a huge f32 norm: rotate the vector scaled
            // by an exact power of two, then scale it back.
            rotated
                .iter_mut()
                .for_each(|r| *r *= crate::util::overflow::OVERFLOW_DOWN);
            self.rotation.apply_inverse(rotated, out);
            out.iter_mut()
                .for_each(|o| *o *= crate::util::overflow::OVERFLOW_UP);
        }
        Ok(())
    }

    /// Decodes a slot into the rotated domain: `out = norm * concat(C[idx_j])` (length `d`).
    /// Returns the norm.
    pub fn decode_rotated(&self, slot: &[u8], out: &mut [f32]) -> Result<f32> {
        self.reconstruct_rotated(slot, out, None)
    }

    /// [`decode_rotated`](Self::decode_rotated) from `codewords` (a copy of the codebook, such
    /// as the f16-rounded one attention reads) or, for `None`, the codebook.
    pub(crate) fn reconstruct_rotated(
        &self,
        slot: &[u8],
        out: &mut [f32],
        codewords: Option<&[f32]>,
    ) -> Result<f32> {
        check_len("slot", self.slot_bytes, slot.len())?;
        check_len("output vector", self.config.dim, out.len())?;
        let mut indices = [0u32; MAX_DIM];
        let indices = &mut indices[..self.blocks];
        let norm = self.read_slot_unchecked_len(slot, indices)?;
        let k = self.config.k;
        let cw = codewords.unwrap_or(self.codebook.codewords());
        for (block, &i) in out.chunks_exact_mut(k).zip(indices.iter()) {
            let c = &cw[i as usize * k..(i as usize + 1) * k];
            for (o, c) in block.iter_mut().zip(c) {
                *o = norm * c;
            }
        }
        Ok(norm)
    }

    /// Decodes block `block` of a slot on its own, in the rotated domain: `out = norm * C[idx]`
    /// (length `k`). The rotation mixes all coordinates, so a block has no meaning in the
    /// original domain; sum block contributions in the rotated domain instead.
    pub fn decode_block(&self, slot: &[u8], block: usize, out: &mut [f32]) -> Result<()> {
        check_len("slot", self.slot_bytes, slot.len())?;
        check_len("block output", self.config.k, out.len())?;
        if block >= self.blocks {
            return Err(Error::InvalidConfig(format!(
                "block {block} out of range (a vector has {} blocks)",
                self.blocks
            )));
        }
        let norm = self.slot_norm(slot)?;
        let c = self.codebook.codeword(self.slot_index(slot, block)?);
        for (o, c) in out.iter_mut().zip(c) {
            *o = norm * c;
        }
        Ok(())
    }

    /// Slot `i` of a contiguous slot buffer.
    pub fn slot<'a>(&self, slots: &'a [u8], i: usize) -> Result<&'a [u8]> {
        let start = i.checked_mul(self.slot_bytes).filter(|&s| {
            s.checked_add(self.slot_bytes)
                .is_some_and(|e| e <= slots.len())
        });
        match start {
            Some(s) => Ok(&slots[s..s + self.slot_bytes]),
            None => Err(Error::InvalidConfig(format!(
                "slot {i} out of range (buffer holds {} slots)",
                slots.len() / self.slot_bytes
            ))),
        }
    }

    /// Number of slots in a buffer, or an error when its length is not a whole number of slots.
    pub fn slot_count(&self, slots: &[u8]) -> Result<usize> {
        if !slots.len().is_multiple_of(self.slot_bytes) {
            return Err(Error::WrongLength {
                what: "slot buffer (not a multiple of the slot size)",
                expected: slots.len().div_ceil(self.slot_bytes) * self.slot_bytes,
                actual: slots.len(),
            });
        }
        Ok(slots.len() / self.slot_bytes)
    }

    /// Encodes rows (`rows.len() = count * d`) into `slots` (`count * slot_bytes`). A failing row
    /// is reported as [`Error::Row`]; with the `parallel` feature rows are spread over threads.
    pub fn encode_batch(&self, rows: &[f32], slots: &mut [u8]) -> Result<()> {
        let count = self.batch_rows(rows.len())?;
        check_len("slot buffer", count * self.slot_bytes, slots.len())?;
        let work = |(row, (x, s)): (usize, (&[f32], &mut [u8]))| {
            self.encode(x, s).map_err(|e| Error::Row {
                row,
                source: Box::new(e),
            })
        };
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            rows.par_chunks(self.config.dim)
                .zip(slots.par_chunks_mut(self.slot_bytes))
                .enumerate()
                .try_for_each(work)
        }
        #[cfg(not(feature = "parallel"))]
        {
            rows.chunks(self.config.dim)
                .zip(slots.chunks_mut(self.slot_bytes))
                .enumerate()
                .try_for_each(work)
        }
    }

    /// Decodes a buffer of slots into rows (`out.len() = count * d`).
    pub fn decode_batch(&self, slots: &[u8], out: &mut [f32]) -> Result<()> {
        let count = self.slot_count(slots)?;
        check_len("output rows", count * self.config.dim, out.len())?;
        let work = |(row, (s, o)): (usize, (&[u8], &mut [f32]))| {
            self.decode(s, o).map_err(|e| Error::Row {
                row,
                source: Box::new(e),
            })
        };
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            slots
                .par_chunks(self.slot_bytes)
                .zip(out.par_chunks_mut(self.config.dim))
                .enumerate()
                .try_for_each(work)
        }
        #[cfg(not(feature = "parallel"))]
        {
            slots
                .chunks(self.slot_bytes)
                .zip(out.chunks_mut(self.config.dim))
                .enumerate()
                .try_for_each(work)
        }
    }

    fn batch_rows(&self, len: usize) -> Result<usize> {
        if !len.is_multiple_of(self.config.dim) {
            return Err(Error::WrongLength {
                what: "row buffer (not a multiple of dim)",
                expected: len.div_ceil(self.config.dim) * self.config.dim,
                actual: len,
            });
        }
        Ok(len / self.config.dim)
    }
}
