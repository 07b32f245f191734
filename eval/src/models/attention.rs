//! Attention through a [`KvCache`], shared by the llama and qwen2 model copies.
//!
//! Prefill and decoding take the same path: the chunk's post-RoPE keys and values are APPENDED
//! to the cache first, then the cache's (possibly lossy) keys and values for every position,
//! including the chunk's own, are read back and attended to under a causal mask. So a lossy cache
//! affects a chunk's tokens exactly as it would affect them if they had been decoded one by one,
//! except that within a chunk attention is not restricted by anything but causality.

use crate::kv_cache::{AttentionObserver, KvCache};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when smaller than `n_head`).
    pub n_kv_head: usize,
    /// Dimension of one head.
    pub head_dim: usize,
}

/// Caches causal masks by `(seq_len, kv_len)`.
#[derive(Debug, Default, Clone)]
pub struct MaskCache(HashMap<(usize, usize), Tensor>);

impl MaskCache {
    /// The `(seq_len, index_pos + seq_len)` u8 mask (1 = blocked) for a chunk starting at
    /// `index_pos`, or `None` for a single-token chunk (nothing to block).
    pub fn get(
        &mut self,
        seq_len: usize,
        index_pos: usize,
        device: &candle_core::Device,
    ) -> Result<Option<Tensor>> {
        if seq_len == 1 {
            return Ok(None);
        }
        let key = (seq_len, index_pos + seq_len);
        if let Some(m) = self.0.get(&key) {
            return Ok(Some(m.clone()));
        }
        let m = candle_transformers::utils::build_causal_mask(seq_len, index_pos, device)?;
        self.0.insert(key, m.clone());
        Ok(Some(m))
    }
}

/// Scaled dot-product attention of the chunk's queries over everything `cache` holds for `layer`
/// after appending the chunk's `k`, `v`.
///
/// `q`: `(1, n_head, seq, head_dim)`, `k`, `v`: `(1, n_kv_head, seq, head_dim)`, all post-RoPE.
/// `mask` is the chunk's causal mask (see [`MaskCache::get`]). Returns `(1, n_head, seq, head_dim)`.
#[allow(clippy::too_many_arguments)]
pub fn cached_attention(
    layer: usize,
    heads: Heads,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    cache: &mut dyn KvCache,
    observer: Option<&mut dyn AttentionObserver>,
) -> Result<Tensor> {
    if let Some(obs) = observer {
        obs.observe(layer, q, k, v)?;
    }
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
