//! [`QBlockCache`]: the baseline a llama.cpp user gets from `-ctk/-ctv q8_0|q4_0`: every key and
//! value row stored in llama.cpp's block formats (32 values and one fp16 scale per block),
//! optionally after a Hadamard rotation of the row (llama.cpp rotates K and V by default).
//!
//! - `q8_0`: scale `amax / 127`, values `round(x / scale)` as i8: 34 bytes per 32 values
//!   (8.5 bits per value);
//! - `q4_0`: scale `max / -8` with `max` the value of largest magnitude (sign kept), values
//!   `min(15, trunc(x / scale + 8.5))` as 4-bit codes, decoded `(q - 8) * scale`: 18 bytes per
//!   32 values (4.5 bits per value).
//!
//! Dequantization uses the fp16-rounded scale, as llama.cpp's. Attention is computed on the
//! decoded rows (llama.cpp's kernels dequantize too), so this cache uses [`KvCache`]'s default
//! `attend`. The rotation is the normalized Walsh-Hadamard transform of the head dim (its own
//! inverse): scores and outputs are unchanged by it, only where the rounding error lands moves.

use crate::kv_cache::KvCache;
use candle_core::{Device, Result, Tensor};
use fibquant::util::fp16::{f16_bits_to_f32, f32_to_f16_bits};

/// Values per block.
pub const BLOCK: usize = 32;

/// One of llama.cpp's cache block formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// 8-bit values, 34 bytes per block.
    Q8_0,
    /// 4-bit values, 18 bytes per block.
    Q4_0,
}

impl BlockFormat {
    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 2 + BLOCK,
            BlockFormat::Q4_0 => 2 + BLOCK / 2,
        }
    }

    /// Appends the blocks of `x` (a multiple of [`BLOCK`] values) to `out`.
    pub fn quantize(self, x: &[f32], out: &mut Vec<u8>) {
        for b in x.chunks_exact(BLOCK) {
            match self {
                BlockFormat::Q8_0 => {
                    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&f32_to_f16_bits(d).to_le_bytes());
                    out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
                }
                BlockFormat::Q4_0 => {
                    let max = b
                        .iter()
                        .copied()
                        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&f32_to_f16_bits(d).to_le_bytes());
                    let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                    // llama.cpp's layout: byte j holds values j (low nibble) and j + 16.
                    out.extend((0..BLOCK / 2).map(|j| q(b[j]) | (q(b[j + BLOCK / 2]) << 4)));
                }
            }
        }
    }

    /// Decodes blocks into `out` (a multiple of [`BLOCK`] values).
    pub fn dequantize(self, blocks: &[u8], out: &mut [f32]) {
        for (b, o) in blocks
            .chunks_exact(self.block_bytes())
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            match self {
                BlockFormat::Q8_0 => {
                    for (o, &q) in o.iter_mut().zip(&b[2..]) {
                        *o = q as i8 as f32 * d;
                    }
                }
                BlockFormat::Q4_0 => {
                    for (j, &q) in b[2..].iter().enumerate() {
                        o[j] = ((q & 15) as i32 - 8) as f32 * d;
                        o[j + BLOCK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
                    }
                }
            }
        }
    }
}

/// Per layer: key and value blocks of every kv head (`[head][position]` order) and the length.
#[derive(Debug, Clone, Default)]
struct Layer {
    len: usize,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

/// A KV cache in llama.cpp's block formats (see the module docs).
#[derive(Debug, Clone)]
pub struct QBlockCache {
    key_format: BlockFormat,
    value_format: BlockFormat,
    hadamard: bool,
    layers: Vec<Layer>,
}

/// The normalized Walsh-Hadamard transform of every `d`-row (its own inverse).
fn hadamard_rows(x: &mut [f32], d: usize) {
    let scale = 1.0 / (d as f32).sqrt();
    for row in x.chunks_exact_mut(d) {
        fibquant::codec::rotation::fwht(row);
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

impl QBlockCache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize, key: BlockFormat, value: BlockFormat, hadamard: bool) -> Self {
        QBlockCache {
            key_format: key,
            value_format: value,
            hadamard,
            layers: vec![Layer::default(); n_layers],
        }
    }

    fn decode(
        &self,
        format: BlockFormat,
        blocks: &[Vec<u8>],
        len: usize,
        d: usize,
    ) -> Result<Tensor> {
        let mut out = vec![0f32; blocks.len() * len * d];
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut((len * d).max(1))) {
            format.dequantize(b, o);
        }
        if self.hadamard {
            hadamard_rows(&mut out, d);
        }
        Tensor::from_vec(out, (1, blocks.len(), len, d), &Device::Cpu)
    }
}

impl KvCache for QBlockCache {
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (_, n_kv, seq, d) = k.dims4()?;
        if !d.is_multiple_of(BLOCK) || (self.hadamard && !d.is_power_of_two()) {
            candle_core::bail!("head dim {d}: q-block caches need a multiple of {BLOCK} (a power of two with the rotation)");
        }
        let hadamard = self.hadamard;
        let (kf, vf) = (self.key_format, self.value_format);
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("layer {layer} out of range")))?;
        if l.keys.is_empty() {
            l.keys = vec![Vec::new(); n_kv];
            l.values = vec![Vec::new(); n_kv];
        }
        for (t, store, format) in [(k, &mut l.keys, kf), (v, &mut l.values, vf)] {
            let mut x: Vec<f32> = t.flatten_all()?.to_vec1()?;
            if hadamard {
                hadamard_rows(&mut x, d);
            }
            for (h, rows) in x.chunks_exact(seq * d).enumerate() {
                format.quantize(rows, &mut store[h]);
            }
        }
        l.len += seq;
        Ok(())
    }

    fn keys_values(&mut self, layer: usize) -> Result<(Tensor, Tensor)> {
        let Some(l) = self.layers.get(layer).filter(|l| l.len > 0) else {
            candle_core::bail!("layer {layer}: cache is empty");
        };
        let per_row = l.keys[0].len() / l.len;
        let d = per_row / self.key_format.block_bytes() * BLOCK;
        Ok((
            self.decode(self.key_format, &l.keys, l.len, d)?,
            self.decode(self.value_format, &l.values, l.len, d)?,
        ))
    }

    fn seq_len(&self, layer: usize) -> usize {
        self.layers.get(layer).map_or(0, |l| l.len)
    }

    fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = Layer::default());
    }

    fn stored_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.keys.iter().chain(&l.values))
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_their_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 30.0) * 0.1)
            .collect();
        for (f, step) in [(BlockFormat::Q8_0, 127.0), (BlockFormat::Q4_0, 8.0)] {
            let mut b = Vec::new();
            f.quantize(&x, &mut b);
            assert_eq!(b.len(), 2 * f.block_bytes());
            let mut y = vec![0f32; 64];
            f.dequantize(&b, &mut y);
            for (blk_x, blk_y) in x.chunks(32).zip(y.chunks(32)) {
                let amax = blk_x.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in blk_x.iter().zip(blk_y) {
                    // Half a step (amax / step), plus the fp16 scale's rounding.
                    assert!(
                        (a - b).abs() <= amax / step * 0.5 * 1.01 + amax * 1e-3,
                        "{f:?}"
                    );
                }
            }
        }
        // The largest-magnitude value of a q4_0 block is exact up to the scale's rounding.
        let mut b = Vec::new();
        BlockFormat::Q4_0.quantize(&x[..32], &mut b);
        let mut y = vec![0f32; 32];
        BlockFormat::Q4_0.dequantize(&b, &mut y);
        let i = (0..32)
            .max_by(|&i, &j| x[i].abs().total_cmp(&x[j].abs()))
            .unwrap();
        assert!((x[i] - y[i]).abs() < 1e-2 * x[i].abs());
    }
}
