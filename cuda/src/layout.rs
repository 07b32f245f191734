//! A batch of sequences' caches as the kernels read them.
//!
//! Four device pools hold every kv head's parts: bytes (codec slots), binary16 (sink rows,
//! tail rows, block means), u32 (cumulative block ends) and f32 (key scales, and per key block
//! the `prepare` kernel's query-mean dots). One descriptor per kv head (`HEAD_FIELDS` u64:
//! the device addresses of its parts and their counts, the `Head` struct of `decode.cu`) says
//! where. Slot regions start 16-byte aligned and end with 16 bytes of padding (tiles are
//! staged with 16-byte loads); fp16 rows start 16-byte aligned (scored with 16-byte loads).

use crate::error::{Error, Result};
use crate::source::{DecodeConfig, SideFormat};
use fibquant::{Codec, KvCache};

/// u64 fields of one kv head's descriptor (`struct Head` in `kernels/decode.cu`).
pub const HEAD_FIELDS: usize = 18;

/// One side of one kv head, copied from the runtime ([`fibquant::SideParts`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSide {
    /// Sink rows, binary16, `d` per row.
    pub sinks: Vec<u16>,
    /// Codec slots (empty for an fp16 side).
    pub slots: Vec<u8>,
    /// Per block of slots, its binary16 mean (empty without centering).
    pub means: Vec<u16>,
    /// Cumulative slot counts at the blocks' ends.
    pub block_ends: Vec<u32>,
    /// Rows after the slots, binary16.
    pub tail: Vec<u16>,
    /// Slots held.
    pub coded: usize,
}

/// One kv head of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct HostHead {
    /// Positions cached.
    pub len: usize,
    /// Sink positions (the same on both sides).
    pub sinks: usize,
    /// Keys (stored divided by `key_scale`).
    pub keys: HostSide,
    /// Values.
    pub values: HostSide,
    /// Per-channel key scales, if any.
    pub key_scale: Option<Vec<f32>>,
}

/// The counts a head's pool regions are sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadCounts {
    /// Positions cached.
    pub len: usize,
    /// Sink positions.
    pub sinks: usize,
    /// Key slots and value slots.
    pub coded: [usize; 2],
    /// Key blocks and value blocks with a stored mean (0 without centering).
    pub blocks: [usize; 2],
    /// Whether the head has key scales.
    pub scaled: bool,
}

impl HeadCounts {
    /// Tail rows of side `s` (0 keys, 1 values).
    pub fn tail(&self, s: usize) -> usize {
        self.len - self.sinks - self.coded[s]
    }
}

/// A batch of caches at one layer on the host, ready to upload: the kernels' configuration,
/// the codecs' rotations (`P`, row-major, `y = P x`) and codebooks, and every kv head's parts,
/// sequence-major (`heads[b * kv_heads + h]`).
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// What the kernels are compiled for.
    pub config: DecodeConfig,
    /// Sequences.
    pub batch: usize,
    /// Kv heads per sequence.
    pub kv_heads: usize,
    /// The softmax scale.
    pub score_scale: f32,
    /// The key codec's rotation matrix (empty for fp16 keys).
    pub key_rotation: Vec<f32>,
    /// The value codec's rotation matrix (empty for fp16 values).
    pub value_rotation: Vec<f32>,
    /// The key codebook, `N x k` (empty for fp16 keys).
    pub key_codebook: Vec<f32>,
    /// The value codebook (empty for fp16 values).
    pub value_codebook: Vec<f32>,
    /// Every kv head.
    pub heads: Vec<HostHead>,
}

/// `P` of `codec` as a dense row-major matrix: column `j` is `P e_j`.
pub fn rotation_matrix(codec: &Codec) -> Vec<f32> {
    let d = codec.dim();
    let mut m = vec![0f32; d * d];
    let (mut e, mut col) = (vec![0f32; d], vec![0f32; d]);
    for j in 0..d {
        e.iter_mut().for_each(|x| *x = 0.0);
        e[j] = 1.0;
        codec.rotation().apply(&e, &mut col);
        for i in 0..d {
            m[i * d + j] = col[i];
        }
    }
    m
}

fn side(parts: &fibquant::SideParts<'_>, codec: Option<&Codec>, d: usize) -> Result<HostSide> {
    let coded = codec.map_or(0, |c| parts.slots.len() / c.slot_bytes());
    if let Some(c) = codec {
        // Slots from a cache are the codec's own; checking costs one pass and rules out
        // reading a codeword out of bounds on the GPU.
        let mut idx = vec![0u32; c.blocks()];
        for slot in parts.slots.chunks_exact(c.slot_bytes()) {
            c.read_slot(slot, &mut idx)?;
        }
    }
    let block_ends = parts
        .block_ends
        .iter()
        .map(|&e| u32::try_from(e).map_err(|_| Error::Unsupported("over 2^32 slots".into())))
        .collect::<Result<Vec<u32>>>()?;
    debug_assert!(parts.means.len().is_multiple_of(d));
    Ok(HostSide {
        sinks: parts.sinks.to_vec(),
        slots: parts.slots.to_vec(),
        means: parts.means.to_vec(),
        block_ends,
        tail: parts.tail.to_vec(),
        coded,
    })
}

impl HostBatch {
    /// The caches' `layer`, one sequence per cache: they must share the shape, the layer's
    /// codecs, the policy's centering and the score scale, and hold at least one position.
    pub fn from_caches(caches: &[&KvCache], layer: usize) -> Result<HostBatch> {
        let first = caches
            .first()
            .ok_or_else(|| Error::InvalidInput("no cache in the batch".into()))?;
        let shape = *first.shape();
        let policy = first.policy();
        let (kc, vc) = first.codecs(layer);
        let key_fmt = kc.map(|c| SideFormat::of(c, policy.center_keys));
        let val_fmt = vc.map(|c| SideFormat::of(c, policy.center_values));
        let config = DecodeConfig {
            dim: shape.head_dim,
            group: shape.group(),
            key: key_fmt,
            value: val_fmt,
        };
        config.check()?;
        let d = shape.head_dim;
        let mut heads = Vec::with_capacity(caches.len() * shape.kv_heads);
        for (b, cache) in caches.iter().enumerate() {
            let (k2, v2) = cache.codecs(layer);
            let same = |x: Option<&Codec>, y: Option<&Codec>| match (x, y) {
                (None, None) => true,
                (Some(x), Some(y)) => x.config() == y.config(),
                _ => false,
            };
            if *cache.shape() != shape
                || !same(kc, k2)
                || !same(vc, v2)
                || cache.policy().center_keys != policy.center_keys
                || cache.policy().center_values != policy.center_values
                || cache.score_scale() != first.score_scale()
            {
                return Err(Error::InvalidInput(format!(
                    "cache {b} differs from cache 0 in shape, codes, centering or score scale"
                )));
            }
            for h in 0..shape.kv_heads {
                let p = cache.head_parts(layer, h)?;
                let keys = side(&p.keys, kc, d)?;
                let values = side(&p.values, vc, d)?;
                let sinks = keys.sinks.len() / d;
                if values.sinks.len() / d != sinks {
                    return Err(Error::InvalidInput(
                        "keys and values differ in sinks".into(),
                    ));
                }
                heads.push(HostHead {
                    len: p.len,
                    sinks,
                    keys,
                    values,
                    key_scale: p.key_scale.map(<[f32]>::to_vec),
                });
            }
        }
        Ok(HostBatch {
            config,
            batch: caches.len(),
            kv_heads: shape.kv_heads,
            score_scale: first.score_scale(),
            key_rotation: kc.map(rotation_matrix).unwrap_or_default(),
            value_rotation: vc.map(rotation_matrix).unwrap_or_default(),
            key_codebook: kc
                .map(|c| c.codebook().codewords().to_vec())
                .unwrap_or_default(),
            value_codebook: vc
                .map(|c| c.codebook().codewords().to_vec())
                .unwrap_or_default(),
            heads,
        })
    }

    /// Every head's counts, in order.
    pub fn counts(&self) -> Vec<HeadCounts> {
        let blocks = |s: &HostSide| {
            if s.means.is_empty() {
                0
            } else {
                s.block_ends.len()
            }
        };
        self.heads
            .iter()
            .map(|h| HeadCounts {
                len: h.len,
                sinks: h.sinks,
                coded: [h.keys.coded, h.values.coded],
                blocks: [blocks(&h.keys), blocks(&h.values)],
                scaled: h.key_scale.is_some(),
            })
            .collect()
    }
}

/// Where every head's parts lie in the four pools (offsets in elements of each pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLayout {
    /// Elements of each pool: bytes, binary16, u32, f32.
    pub sizes: [usize; 4],
    /// Per head: offsets of key slots, value slots (bytes pool); key sinks, value sinks, key
    /// tail, value tail, key means, value means (binary16 pool); key ends, value ends (u32
    /// pool); key scale, query-mean dots (f32 pool).
    pub offsets: Vec<[usize; 12]>,
    /// The heads' counts.
    pub counts: Vec<HeadCounts>,
}

impl PoolLayout {
    /// Sizes and offsets for heads of `counts`, with `config`'s slot sizes.
    pub fn new(config: &DecodeConfig, counts: &[HeadCounts]) -> PoolLayout {
        let d = config.dim;
        let slot = [
            config.key.map_or(0, |f| f.slot_bytes),
            config.value.map_or(0, |f| f.slot_bytes),
        ];
        let mut sizes = [0usize; 4];
        let mut take = |pool: usize, n: usize, align: usize| {
            let at = sizes[pool].next_multiple_of(align);
            sizes[pool] = at + n;
            at
        };
        let offsets = counts
            .iter()
            .map(|c| {
                let mut o = [0usize; 12];
                for s in 0..2 {
                    o[s] = take(0, c.coded[s] * slot[s] + 16, 16);
                }
                for s in 0..2 {
                    o[2 + s] = take(1, c.sinks * d, 8);
                }
                for s in 0..2 {
                    o[4 + s] = take(1, c.tail(s) * d, 8);
                }
                for s in 0..2 {
                    o[6 + s] = take(1, c.blocks[s] * d, 8);
                }
                for s in 0..2 {
                    o[8 + s] = take(2, c.blocks[s], 1);
                }
                o[10] = take(3, if c.scaled { d } else { 0 }, 4);
                o[11] = take(3, c.blocks[0] * config.group, 4);
                o
            })
            .collect();
        sizes.iter_mut().for_each(|s| *s = (*s).max(16));
        PoolLayout {
            sizes,
            offsets,
            counts: counts.to_vec(),
        }
    }

    /// The heads' descriptors for pools at device addresses `bases` (bytes, binary16, u32,
    /// f32): [`HEAD_FIELDS`] u64 per head.
    pub fn descriptors(&self, bases: [u64; 4]) -> Vec<u64> {
        let elem = [1u64, 2, 4, 4];
        let addr = |pool: usize, off: usize| bases[pool] + off as u64 * elem[pool];
        let mut out = Vec::with_capacity(self.counts.len() * HEAD_FIELDS);
        for (c, o) in self.counts.iter().zip(&self.offsets) {
            let pools = [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3];
            for (f, &pool) in pools.iter().enumerate() {
                let present = match f {
                    6 | 8 => c.blocks[0] > 0,
                    7 | 9 => c.blocks[1] > 0,
                    10 => c.scaled,
                    _ => true,
                };
                out.push(if present { addr(pool, o[f]) } else { 0 });
            }
            for v in [
                c.len,
                c.sinks,
                c.coded[0],
                c.coded[1],
                c.blocks[0],
                c.blocks[1],
            ] {
                out.push(v as u64);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SideFormat;
    use fibquant::CodecConfig;

    #[test]
    fn regions_are_aligned_padded_and_disjoint() {
        let f = SideFormat::of(&Codec::new(CodecConfig::new(64, 4, 256)).unwrap(), true);
        let config = DecodeConfig {
            dim: 64,
            group: 4,
            key: Some(f),
            value: Some(f),
        };
        let c = HeadCounts {
            len: 300,
            sinks: 4,
            coded: [256, 290],
            blocks: [3, 0],
            scaled: true,
        };
        let layout = PoolLayout::new(&config, &[c, c]);
        let slot = f.slot_bytes;
        for o in &layout.offsets {
            assert!(o[0] % 16 == 0 && o[1] % 16 == 0);
            assert!(
                o[1] >= o[0] + 256 * slot + 16,
                "value slots after the padded key slots"
            );
            for (f, at) in o.iter().enumerate().take(8).skip(2) {
                assert!(at % 8 == 0, "fp16 region {f} is 16-byte aligned");
            }
        }
        assert!(layout.offsets[1][0] >= layout.offsets[0][1] + 290 * slot + 16);
        let desc = layout.descriptors([0x1000, 0x2000, 0x3000, 0x4000]);
        assert_eq!(desc.len(), 2 * HEAD_FIELDS);
        assert_eq!(desc[7], 0, "no value means without value centering");
        assert_eq!(desc[12..18], [300, 4, 256, 290, 3, 0]);
    }
}
