//! Attention through a [`KvCache`], shared by the llama and qwen2 model copies.
//!
//! Prefill and decoding take the same path: the chunk's post-RoPE keys and values are APPENDED
//! to the cache first, then the chunk's queries attend, causally, to everything the cache holds,
//! the chunk's own positions included ([`KvCache::attend`]: on the cache's own storage, or on a
//! decoded copy for caches that only reconstruct). So a lossy cache affects a chunk's tokens
//! exactly as it would affect them if they had been decoded one by one.

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

/// Attention of the chunk's queries over everything `cache` holds for `layer` after appending
/// the chunk's `k`, `v` ([`KvCache::attend`]); `observer`, when given, sees the exact q/k/v first.
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
    cache.attend(layer, heads, q, k, v, mask)
}
