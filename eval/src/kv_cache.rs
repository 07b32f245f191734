//! The per-layer key/value cache abstraction the models attend through.
//!
//! The models in [`crate::models`] never keep K/V themselves: every forward pass appends the chunk's
//! keys and values to a [`KvCache`] and then reads back what the cache holds (possibly a lossy
//! reconstruction) to compute attention. A compressed cache plugs in by implementing the trait.

use crate::models::attention::Heads;
use candle_core::{Result, Tensor};

/// Decode-then-compute attention: appends `k`, `v`, reads every position back with
/// [`KvCache::keys_values`], and computes masked softmax attention on the decoded tensors.
pub fn decoded_attention<C: KvCache + ?Sized>(
    cache: &mut C,
    layer: usize,
    heads: Heads,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let index_pos = cache.seq_len(layer);
    let seq_len = q.dim(2)?;
    cache.append(layer, k, v)?;
    let (k, v) = cache.keys_values(layer)?;
    let kv_len = k.dim(2)?;
    if kv_len != index_pos + seq_len || v.dim(2)? != kv_len {
        candle_core::bail!(
            "layer {layer}: cache returned {kv_len} positions, expected {}",
            index_pos + seq_len
        );
    }
    let n_rep = heads.n_head / heads.n_kv_head;
    let k = candle_transformers::utils::repeat_kv(k, n_rep)?;
    let v = candle_transformers::utils::repeat_kv(v, n_rep)?;
    let att = (q.matmul(&k.t()?)? / (heads.head_dim as f64).sqrt())?;
    let att = match mask {
        None => att,
        Some(mask) => {
            let mask = mask.broadcast_as(att.shape())?;
            let neg_inf =
                Tensor::new(f32::NEG_INFINITY, att.device())?.broadcast_as(att.shape())?;
            mask.where_cond(&neg_inf, &att)?
        }
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    // matmul does not take a strided right-hand side.
    att.matmul(&v.contiguous()?)
}

/// A key/value cache for all layers of one sequence (batch size 1).
///
/// Tensors crossing this interface have shape `(1, n_kv_heads, seq, head_dim)` and dtype f32.
/// Keys are handed over AFTER rotary position embedding (RoPE), so an implementation never needs
/// to know positions.
pub trait KvCache {
    /// Appends `seq` new positions to `layer`'s cache. `k` and `v` may be non-contiguous views.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()>;

    /// Returns every cached position of `layer` as `(keys, values)`, each
    /// `(1, n_kv_heads, len, head_dim)`, as the cache reconstructs them (exact for [`F32Cache`]).
    fn keys_values(&mut self, layer: usize) -> Result<(Tensor, Tensor)>;

    /// Appends the chunk's `k`, `v` to `layer` and returns the attention of the chunk's `q`
    /// (`(1, n_head, seq, head_dim)`) over everything cached, under the chunk's causal `mask`
    /// (see [`crate::models::attention::MaskCache`]). The default decodes the cache
    /// ([`keys_values`](Self::keys_values)) and computes attention on the decoded tensors;
    /// caches that attend on their own storage override it.
    fn attend(
        &mut self,
        layer: usize,
        heads: Heads,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        decoded_attention(self, layer, heads, q, k, v, mask)
    }

    /// Builds ahead whatever the cache would build on its first append (the runtime codecs'
    /// search structures), so that timing the first call measures the call alone. The default
    /// does nothing.
    fn prepare(&self) {}

    /// Number of positions cached for `layer` (0 when empty).
    fn seq_len(&self, layer: usize) -> usize;

    /// Drops every cached position of every layer.
    fn clear(&mut self);

    /// Bytes the cache uses to store keys and values (payload actually held, for accounting).
    fn stored_bytes(&self) -> usize;
}

/// The uncompressed baseline: keys and values kept as f32 tensors, concatenated along `seq`.
#[derive(Debug, Default, Clone)]
pub struct F32Cache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl F32Cache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }
}

impl KvCache for F32Cache {
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("layer {layer} out of range")))?;
        *slot = Some(match slot.take() {
            None => (k.contiguous()?, v.contiguous()?),
            Some((k0, v0)) => (Tensor::cat(&[&k0, k], 2)?, Tensor::cat(&[&v0, v], 2)?),
        });
        Ok(())
    }

    fn keys_values(&mut self, layer: usize) -> Result<(Tensor, Tensor)> {
        match self.layers.get(layer) {
            Some(Some((k, v))) => Ok((k.clone(), v.clone())),
            _ => candle_core::bail!("layer {layer}: cache is empty"),
        }
    }

    fn seq_len(&self, layer: usize) -> usize {
        match self.layers.get(layer) {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    fn stored_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
            .sum()
    }
}

/// Receives, for every layer and forward chunk, the exact post-RoPE queries, keys and values
/// (before they enter the cache): the raw material of an attention-fidelity evaluation.
pub trait AttentionObserver {
    /// `q` is `(1, n_heads, seq, head_dim)`; `k`, `v` are `(1, n_kv_heads, seq, head_dim)`.
    fn observe(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()>;
}

/// An [`AttentionObserver`] that keeps everything it sees, concatenated along `seq` per layer.
#[derive(Debug, Default, Clone)]
pub struct QkvRecorder {
    /// Per layer: `(q, k, v)` over all positions observed so far.
    pub layers: Vec<Option<(Tensor, Tensor, Tensor)>>,
}

impl QkvRecorder {
    /// An empty recorder for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }
}

impl AttentionObserver for QkvRecorder {
    fn observe(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
        if layer >= self.layers.len() {
            self.layers.resize(layer + 1, None);
        }
        let slot = &mut self.layers[layer];
        *slot = Some(match slot.take() {
            None => (q.contiguous()?, k.contiguous()?, v.contiguous()?),
            Some((q0, k0, v0)) => (
                Tensor::cat(&[&q0, q], 2)?,
                Tensor::cat(&[&k0, k], 2)?,
                Tensor::cat(&[&v0, v], 2)?,
            ),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn f32_cache_appends_and_reads_back() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = F32Cache::new(2);
        assert_eq!(c.seq_len(0), 0);
        let k1 = Tensor::arange(0f32, 12., &dev)?.reshape((1, 3, 1, 4))?;
        let k2 = Tensor::arange(12f32, 36., &dev)?.reshape((1, 3, 2, 4))?;
        c.append(0, &k1, &k1)?;
        c.append(0, &k2, &k2)?;
        assert_eq!(c.seq_len(0), 3);
        assert_eq!(c.seq_len(1), 0);
        let (k, _) = c.keys_values(0)?;
        assert_eq!(k.dims(), &[1, 3, 3, 4]);
        let head0: Vec<f32> = k.get(0)?.get(0)?.flatten_all()?.to_vec1()?;
        assert_eq!(&head0[..4], &[0., 1., 2., 3.]);
        assert_eq!(&head0[4..8], &[12., 13., 14., 15.]);
        assert_eq!(c.stored_bytes(), 2 * 36 * 4);
        c.clear();
        assert_eq!(c.seq_len(0), 0);
        Ok(())
    }
}
