//! [`RuntimeCache`]: the runtime's [`fibquant::KvCache`] behind the models' [`KvCache`] trait.
//!
//! Attention runs on what the runtime stores ([`fibquant::KvCache::append_and_attend`]: scores
//! on codes, one softmax with the exact parts, weighted sums on codes), never on a decoded copy;
//! [`KvCache::keys_values`] decodes only for tools that ask for tensors.

use crate::kv_cache::KvCache;
use crate::models::attention::Heads;
use candle_core::{Device, Result, Tensor};
use fibquant::{CachePolicy, CacheShape};

/// The runtime's KV cache for all layers of one sequence (batch size 1).
#[derive(Debug, Clone)]
pub struct RuntimeCache {
    inner: fibquant::KvCache,
}

fn runtime_err(e: fibquant::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// The rows of a `(1, heads, seq, d)` tensor, head-major.
fn rows(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

impl RuntimeCache {
    /// An empty cache for `layers` layers of `heads`, storing per `policy`.
    pub fn new(layers: usize, heads: Heads, policy: CachePolicy) -> fibquant::Result<Self> {
        let shape = CacheShape {
            layers,
            query_heads: heads.n_head,
            kv_heads: heads.n_kv_head,
            head_dim: heads.head_dim,
        };
        Ok(RuntimeCache {
            inner: fibquant::KvCache::new(shape, policy)?,
        })
    }

    /// The runtime cache itself (bytes, effective bits, codecs).
    pub fn inner(&self) -> &fibquant::KvCache {
        &self.inner
    }
}

impl KvCache for RuntimeCache {
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let seq = k.dim(2)?;
        self.inner
            .append(layer, &rows(k)?, &rows(v)?, seq)
            .map_err(runtime_err)
    }

    fn keys_values(&mut self, layer: usize) -> Result<(Tensor, Tensor)> {
        let s = *self.inner.shape();
        let len = self.inner.len(layer);
        let per = len * s.head_dim;
        let mut k = vec![0f32; s.kv_heads * per];
        let mut v = vec![0f32; s.kv_heads * per];
        for (h, (kh, vh)) in k
            .chunks_exact_mut(per.max(1))
            .zip(v.chunks_exact_mut(per.max(1)))
            .enumerate()
        {
            self.inner
                .reconstruct(layer, h, kh, vh)
                .map_err(runtime_err)?;
        }
        let shape = (1, s.kv_heads, len, s.head_dim);
        Ok((
            Tensor::from_vec(k, shape, &Device::Cpu)?,
            Tensor::from_vec(v, shape, &Device::Cpu)?,
        ))
    }

    fn attend(
        &mut self,
        layer: usize,
        heads: Heads,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        // The runtime applies the causal limit itself.
        let seq = q.dim(2)?;
        let q_rows = rows(q)?;
        let mut out = vec![0f32; q_rows.len()];
        self.inner
            .append_and_attend(layer, &q_rows, &rows(k)?, &rows(v)?, seq, &mut out)
            .map_err(runtime_err)?;
        Tensor::from_vec(out, (1, heads.n_head, seq, heads.head_dim), q.device())
    }

    fn prepare(&self) {
        self.inner.prepare();
    }

    fn seq_len(&self, layer: usize) -> usize {
        self.inner.len(layer)
    }

    fn clear(&mut self) {
        self.inner.clear();
    }

    fn stored_bytes(&self) -> usize {
        self.inner.bytes()
    }
}
