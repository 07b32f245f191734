//! [`FibQuantCache`]: a [`KvCache`] that stores keys and values as FibQuant slot bytes.
//!
//! Every appended row (one kv-head's post-RoPE key or value for one token) is encoded at once
//! into a fixed-size slot (fp16 norm + packed codeword indices) and only the slot bytes are kept:
//! there is no float copy of a compressed side. [`KvCache::keys_values`] decodes every stored slot
//! back into f32 tensors for attention (decode-then-compute). Keys and values have separate codecs;
//! `None` keeps that side uncompressed (f32), for asymmetric experiments.

use crate::kv_cache::KvCache;
use candle_core::{Device, Result, Tensor};
use fibquant::Codec;

fn codec_err(layer: usize, what: &str, e: fibquant::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("layer {layer}: {what}: {e}"))
}

/// One side (keys or values) of one kv-head of one layer.
#[derive(Debug, Clone)]
enum Store {
    /// Concatenated slots, `len * slot_bytes` bytes, token order.
    Slots(Vec<u8>),
    /// Uncompressed rows, `len * head_dim` floats.
    Raw(Vec<f32>),
}

impl Store {
    fn new(codec: Option<&Codec>) -> Self {
        match codec {
            Some(_) => Store::Slots(Vec::new()),
            None => Store::Raw(Vec::new()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Store::Slots(s) => s.len(),
            Store::Raw(r) => r.len() * std::mem::size_of::<f32>(),
        }
    }

    /// Appends `rows` (`seq * dim` floats).
    fn push(&mut self, codec: Option<&Codec>, rows: &[f32]) -> fibquant::Result<()> {
        match (self, codec) {
            (Store::Slots(s), Some(c)) => {
                let old = s.len();
                s.resize(old + rows.len() / c.dim() * c.slot_bytes(), 0);
                c.encode_batch(rows, &mut s[old..])
            }
            (Store::Raw(r), _) => {
                r.extend_from_slice(rows);
                Ok(())
            }
            (Store::Slots(_), None) => unreachable!("slot store without a codec"),
        }
    }

    /// Writes every stored row into `out` (`len * dim` floats).
    fn read(&self, codec: Option<&Codec>, out: &mut [f32]) -> fibquant::Result<()> {
        match (self, codec) {
            (Store::Slots(s), Some(c)) => c.decode_batch(s, out),
            (Store::Raw(r), _) => {
                out.copy_from_slice(r);
                Ok(())
            }
            (Store::Slots(_), None) => unreachable!("slot store without a codec"),
        }
    }
}

/// The cache of one layer: per kv-head key and value stores.
#[derive(Debug, Clone)]
struct Layer {
    len: usize,
    head_dim: usize,
    device: Device,
    keys: Vec<Store>,
    values: Vec<Store>,
}

/// A KV cache holding FibQuant slot bytes (see the module docs).
#[derive(Debug, Clone)]
pub struct FibQuantCache {
    key_codec: Option<Codec>,
    value_codec: Option<Codec>,
    layers: Vec<Option<Layer>>,
}

impl FibQuantCache {
    /// An empty cache for `n_layers` layers; `None` for a side keeps it uncompressed (f32).
    pub fn new(n_layers: usize, key_codec: Option<Codec>, value_codec: Option<Codec>) -> Self {
        Self {
            key_codec,
            value_codec,
            layers: vec![None; n_layers],
        }
    }

    /// The key codec (`None` = uncompressed keys).
    pub fn key_codec(&self) -> Option<&Codec> {
        self.key_codec.as_ref()
    }

    /// The value codec (`None` = uncompressed values).
    pub fn value_codec(&self) -> Option<&Codec> {
        self.value_codec.as_ref()
    }

    /// Bytes `(keys, values)` stored for `layer` (slots, or f32 rows for an uncompressed side).
    pub fn layer_bytes(&self, layer: usize) -> (usize, usize) {
        match self.layers.get(layer) {
            Some(Some(l)) => (
                l.keys.iter().map(Store::bytes).sum(),
                l.values.iter().map(Store::bytes).sum(),
            ),
            _ => (0, 0),
        }
    }

    fn decode_side(
        l: &Layer,
        layer: usize,
        stores: &[Store],
        codec: Option<&Codec>,
    ) -> Result<Tensor> {
        let row = l.len * l.head_dim;
        let mut out = vec![0f32; stores.len() * row];
        for (store, chunk) in stores.iter().zip(out.chunks_exact_mut(row.max(1))) {
            store
                .read(codec, chunk)
                .map_err(|e| codec_err(layer, "decode", e))?;
        }
        Tensor::from_vec(out, (1, stores.len(), l.len, l.head_dim), &l.device)
    }
}

impl KvCache for FibQuantCache {
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (b, n_kv, seq, dim) = k.dims4()?;
        if b != 1 || v.dims4()? != (b, n_kv, seq, dim) {
            candle_core::bail!(
                "layer {layer}: expected k and v of one shape (1, n_kv, seq, dim), got {:?} and {:?}",
                k.dims(),
                v.dims()
            );
        }
        for c in [&self.key_codec, &self.value_codec].into_iter().flatten() {
            if c.dim() != dim {
                candle_core::bail!(
                    "layer {layer}: head dim {dim} but the codec is for dim {}",
                    c.dim()
                );
            }
        }
        let (kc, vc) = (self.key_codec.as_ref(), self.value_codec.as_ref());
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("layer {layer} out of range")))?;
        let l = slot.get_or_insert_with(|| Layer {
            len: 0,
            head_dim: dim,
            device: k.device().clone(),
            keys: (0..n_kv).map(|_| Store::new(kc)).collect(),
            values: (0..n_kv).map(|_| Store::new(vc)).collect(),
        });
        if l.keys.len() != n_kv || l.head_dim != dim {
            candle_core::bail!(
                "layer {layer}: got {n_kv} kv heads x {dim}, cache holds {} x {}",
                l.keys.len(),
                l.head_dim
            );
        }
        let k_rows: Vec<f32> = k.flatten_all()?.to_vec1()?;
        let v_rows: Vec<f32> = v.flatten_all()?.to_vec1()?;
        let per_head = seq * dim;
        for h in 0..n_kv {
            let range = h * per_head..(h + 1) * per_head;
            l.keys[h]
                .push(kc, &k_rows[range.clone()])
                .map_err(|e| codec_err(layer, "encode keys", e))?;
            l.values[h]
                .push(vc, &v_rows[range])
                .map_err(|e| codec_err(layer, "encode values", e))?;
        }
        l.len += seq;
        Ok(())
    }

    fn keys_values(&mut self, layer: usize) -> Result<(Tensor, Tensor)> {
        let Some(Some(l)) = self.layers.get(layer) else {
            candle_core::bail!("layer {layer}: cache is empty");
        };
        let k = Self::decode_side(l, layer, &l.keys, self.key_codec.as_ref())?;
        let v = Self::decode_side(l, layer, &l.values, self.value_codec.as_ref())?;
        Ok((k, v))
    }

    fn seq_len(&self, layer: usize) -> usize {
        match self.layers.get(layer) {
            Some(Some(l)) => l.len,
            _ => 0,
        }
    }

    fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    fn stored_bytes(&self) -> usize {
        (0..self.layers.len())
            .map(|i| {
                let (k, v) = self.layer_bytes(i);
                k + v
            })
            .sum()
    }
}
