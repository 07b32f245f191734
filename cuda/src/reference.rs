//! The CPU reference of a decode step on a [`HostBatch`]: the kernels' arithmetic in f64, one
//! position at a time, in the order of the parts (sinks, slots, tail). Tests check it against
//! the runtime's own [`fibquant::KvCache`] attention (so the layout is read right) and the GPU
//! against it.

use crate::error::{Error, Result};
use crate::layout::{HostBatch, HostSide};
use crate::source::SideFormat;

/// The value of binary16 `bits` (exact in f64).
pub fn f16(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

fn norm(slot: &[u8], f: &SideFormat) -> f64 {
    if f.norm_f32 {
        f32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]) as f64
    } else {
        f16(u16::from_le_bytes([slot[0], slot[1]]))
    }
}

fn index(slot: &[u8], f: &SideFormat, blk: usize) -> usize {
    let idx = &slot[if f.norm_f32 { 4 } else { 2 }..];
    let bit = blk * f.bits as usize;
    let mut w = 0u32;
    for (i, b) in idx[bit / 8..].iter().take(3).enumerate() {
        w |= (*b as u32) << (8 * i);
    }
    ((w >> (bit % 8)) & ((1u32 << f.bits) - 1)) as usize
}

/// The block a slot belongs to: the first whose cumulative end exceeds it.
fn block_of(ends: &[u32], slot: usize) -> usize {
    ends.partition_point(|&e| e as usize <= slot)
}

/// `y = P x` for row-major `P`.
fn rotate(p: &[f32], x: &[f64], transpose: bool) -> Vec<f64> {
    let d = x.len();
    (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    let m = if transpose {
                        p[j * d + i]
                    } else {
                        p[i * d + j]
                    };
                    m as f64 * x[j]
                })
                .sum()
        })
        .collect()
}

/// The decoded row of position `i` after the sinks on side `s`: `(norm, rotated unit code)`
/// for a slot, the row for an fp16 position.
enum Row<'a> {
    Code(f64, &'a [u8]),
    Exact(&'a [u16]),
}

fn row<'a>(
    side: &'a HostSide,
    f: Option<&SideFormat>,
    d: usize,
    sinks: usize,
    p: usize,
) -> Row<'a> {
    if p < sinks {
        return Row::Exact(&side.sinks[p * d..(p + 1) * d]);
    }
    let i = p - sinks;
    match f {
        Some(f) if i < side.coded => {
            let slot = &side.slots[i * f.slot_bytes..(i + 1) * f.slot_bytes];
            Row::Code(norm(slot, f), slot)
        }
        _ => {
            let t = i - side.coded;
            Row::Exact(&side.tail[t * d..(t + 1) * d])
        }
    }
}

/// Attention of `queries` (`batch x kv_heads x group x d`, one position per sequence) over the
/// batch, into `batch x kv_heads x group x d` outputs.
pub fn decode(batch: &HostBatch, queries: &[f32]) -> Result<Vec<f32>> {
    let c = &batch.config;
    let (d, g) = (c.dim, c.group);
    if queries.len() != batch.heads.len() * g * d {
        return Err(Error::InvalidInput(format!(
            "{} query values for {} kv heads of {g} query heads of {d}",
            queries.len(),
            batch.heads.len()
        )));
    }
    let mut out = vec![0f32; queries.len()];
    for (hh, head) in batch.heads.iter().enumerate() {
        if head.len == 0 {
            return Err(Error::InvalidInput(format!(
                "kv head {hh} holds no position"
            )));
        }
        for q_i in 0..g {
            let q = &queries[(hh * g + q_i) * d..(hh * g + q_i + 1) * d];
            let qs: Vec<f64> = (0..d)
                .map(|i| q[i] as f64 * head.key_scale.as_ref().map_or(1.0, |s| s[i] as f64))
                .collect();
            let qrot = c.key.map(|_| rotate(&batch.key_rotation, &qs, false));
            let logits: Vec<f64> = (0..head.len)
                .map(|p| {
                    let dot = match row(&head.keys, c.key.as_ref(), d, head.sinks, p) {
                        Row::Exact(r) => (0..d).map(|i| qs[i] * f16(r[i])).sum::<f64>(),
                        Row::Code(n, slot) => {
                            let f = c.key.as_ref().expect("a key slot has a format");
                            let qr = qrot.as_ref().expect("coded keys rotate the query");
                            let mut dot = 0.0;
                            for blk in 0..f.blocks(d) {
                                let cw = &batch.key_codebook[index(slot, f, blk) * f.k..][..f.k];
                                for j in 0..f.k {
                                    dot += qr[blk * f.k + j] * cw[j] as f64;
                                }
                            }
                            let mut s = n * dot;
                            if !head.keys.means.is_empty() {
                                let b = block_of(&head.keys.block_ends, p - head.sinks);
                                let m = &head.keys.means[b * d..(b + 1) * d];
                                s += (0..d).map(|i| qs[i] * f16(m[i])).sum::<f64>();
                            }
                            s
                        }
                    };
                    dot * batch.score_scale as f64
                })
                .collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut model = vec![0f64; d];
            let mut rotated = vec![0f64; d];
            for (p, &wp) in w.iter().enumerate() {
                match row(&head.values, c.value.as_ref(), d, head.sinks, p) {
                    Row::Exact(r) => (0..d).for_each(|i| model[i] += wp * f16(r[i])),
                    Row::Code(n, slot) => {
                        let f = c.value.as_ref().expect("a value slot has a format");
                        for blk in 0..f.blocks(d) {
                            let cw = &batch.value_codebook[index(slot, f, blk) * f.k..][..f.k];
                            for j in 0..f.k {
                                rotated[blk * f.k + j] += wp * n * cw[j] as f64;
                            }
                        }
                        if !head.values.means.is_empty() {
                            let b = block_of(&head.values.block_ends, p - head.sinks);
                            let m = &head.values.means[b * d..(b + 1) * d];
                            (0..d).for_each(|i| model[i] += wp * f16(m[i]));
                        }
                    }
                }
            }
            if c.value.is_some() {
                let back = rotate(&batch.value_rotation, &rotated, true);
                (0..d).for_each(|i| model[i] += back[i]);
            }
            let o = &mut out[(hh * g + q_i) * d..(hh * g + q_i + 1) * d];
            for i in 0..d {
                o[i] = (model[i] / total) as f32;
            }
        }
    }
    Ok(out)
}
