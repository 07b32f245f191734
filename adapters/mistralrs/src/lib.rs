//! FibQuant's compressed KV cache ([`fibquant::KvCache`]) behind mistral.rs's
//! [`CompressedKVCache`] trait (crate `mistralrs-kv-cache` 0.3).
//!
//! [`FibQuantCache`] stores every layer's keys and values the way a [`CachePolicy`] says
//! (4.41 effective bits per value with the default 4-bit preset) and:
//!
//! - on [`prefill`](CompressedKVCache::prefill) appends the chunk (its queries give the key
//!   scales their statistics on a layer's first chunk) and returns the reconstruction of every
//!   cached position ([`fibquant::KvCache::reconstruct`]) for the engine's own attention;
//! - on [`decode`](CompressedKVCache::decode) appends the new token and computes attention on
//!   the codes ([`fibquant::KvCache::append_and_attend`]: scores and weighted sums straight from
//!   the stored slots, no decoded copy), returned as [`DecodeOutput::Fused`].
//!
//! Tensors are `[batch, heads, seq, head_dim]` of any float dtype on any device: they are
//! converted to f32 on the CPU for the runtime, and results go back in the input's dtype and
//! device.
//!
//! # Batches and locking
//!
//! Each layer is one [`fibquant::KvCache`] behind its own [`Mutex`], with the batch folded into
//! the heads: sequence `b`'s kv head `h` is the runtime's kv head `b * kv_heads + h` (and its
//! query head `i` the runtime's `b * query_heads + i`, which reads kv head
//! `(b * query_heads + i) / group = b * kv_heads + i / group`, its own sequence's). Every state
//! the runtime keeps is per kv head (key scales, block means, codes, fp16 rows), so this stores
//! and attends exactly as one cache per batch element would (the tests check it), and a failed
//! call changes no sequence of the batch (the runtime checks a whole call before changing
//! anything). One lock per layer is what the trait asks for: calls for different layers
//! proceed in parallel (a draft and a target model, or pipelined layers), and a layer's calls,
//! which must be ordered anyway, serialize on its lock. The batch size is fixed by a layer's
//! first call after construction or [`reset`](CompressedKVCache::reset); a call with another
//! batch size on a layer that holds positions is an error.

use candle_core::{DType, Device, Tensor};
use fibquant::{CachePolicy, CacheShape};
pub use mistralrs_kv_cache::{
    AttendConfig, CompressedKVCache, DecodeOutput, DequantResult, Result,
};
use std::sync::{Mutex, MutexGuard};

/// Why a call of [`FibQuantCache`] failed (returned to the engine as
/// [`candle_core::Error::Msg`] with this message). A failed call changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The layer index is beyond the cache's layers.
    #[error("layer {layer}: the cache has {layers} layers")]
    NoSuchLayer {
        /// The layer asked for.
        layer: usize,
        /// Layers of the cache.
        layers: usize,
    },
    /// A tensor's shape does not match the cache or the other tensors of the call.
    #[error("layer {layer}: {what} has shape {got:?}, expected {expected}")]
    Shape {
        /// The layer of the call.
        layer: usize,
        /// The tensor (`keys`, `values`, `queries`).
        what: &'static str,
        /// Its shape.
        got: Vec<usize>,
        /// The shape required, in words.
        expected: String,
    },
    /// A tensor holds a NaN or infinite value.
    #[error(
        "layer {layer}: {what} of sequence {batch}, head {head}, new position {position}, \
         coordinate {coordinate} is {value}"
    )]
    NonFinite {
        /// The layer of the call.
        layer: usize,
        /// The tensor.
        what: &'static str,
        /// Batch element.
        batch: usize,
        /// Head (kv head for keys and values, query head for queries).
        head: usize,
        /// Position within the call's new positions.
        position: usize,
        /// Coordinate within the head dim.
        coordinate: usize,
        /// The value.
        value: f32,
    },
    /// The batch size differs from the one the layer holds positions for.
    #[error(
        "layer {layer}: a batch of {got} sequences, but the layer holds {held} \
         (reset the cache to change the batch size)"
    )]
    BatchChanged {
        /// The layer of the call.
        layer: usize,
        /// Batch size of the call.
        got: usize,
        /// Batch size of what the layer holds.
        held: usize,
    },
    /// [`AttendConfig::n_kv_groups`] disagrees with the cache's heads.
    #[error(
        "layer {layer}: n_kv_groups {got}, but {query_heads} query heads over {kv_heads} kv \
         heads make groups of {expected}"
    )]
    Groups {
        /// The layer of the call.
        layer: usize,
        /// The configured group count.
        got: usize,
        /// The group count of the cache's shape.
        expected: usize,
        /// Query heads per sequence.
        query_heads: usize,
        /// Kv heads per sequence.
        kv_heads: usize,
    },
    /// [`AttendConfig::softmax_scale`] is not finite and positive.
    #[error("layer {layer}: softmax scale must be finite and positive, got {scale}")]
    Scale {
        /// The layer of the call.
        layer: usize,
        /// The scale.
        scale: f32,
    },
    /// A thread panicked while holding the layer's lock; [`reset`](CompressedKVCache::reset)
    /// clears the layer and the condition.
    #[error("layer {layer}: a thread panicked while using this layer; reset the cache")]
    Poisoned {
        /// The layer.
        layer: usize,
    },
    /// The runtime refused the call (construction: `layer` is `None`). The message names the
    /// sequence and head; in `source` (the runtime's one-layer cache of this layer) heads are
    /// numbered across the batch (see the [crate docs](crate)).
    #[error("{}", runtime_message(*layer, source, *kv_heads, *query_heads))]
    Runtime {
        /// The layer of the call.
        layer: Option<usize>,
        /// The runtime's error.
        source: fibquant::Error,
        /// Kv heads per sequence.
        kv_heads: usize,
        /// Query heads per sequence.
        query_heads: usize,
    },
}

/// The runtime's error with the adapter's layer, and its batch-wide head as sequence and head:
/// a value too large for fp16 is a kv head's (keys, values), anything else a query head's (the
/// adapter checks keys and values for NaN and infinity itself).
fn runtime_message(
    layer: Option<usize>,
    e: &fibquant::Error,
    kv_heads: usize,
    query_heads: usize,
) -> String {
    let Some(layer) = layer else {
        return e.to_string();
    };
    match e {
        fibquant::Error::Cache {
            head,
            position,
            source,
            ..
        } => {
            let mut m = format!("layer {layer}");
            if let Some(h) = *head {
                let (kind, per) = match **source {
                    fibquant::Error::NormOverflow { .. } => ("kv head", kv_heads),
                    _ => ("query head", query_heads),
                };
                let per = per.max(1);
                m += &format!(", sequence {}, {kind} {}", h / per, h % per);
            }
            if let Some(p) = *position {
                m += &format!(", position {p}");
            }
            format!("{m}: {source}")
        }
        other => format!("layer {layer}: {other}"),
    }
}

impl From<AdapterError> for candle_core::Error {
    fn from(e: AdapterError) -> Self {
        candle_core::Error::Msg(e.to_string())
    }
}

/// One layer: its cache (batch folded into the heads) and the batch size and softmax scale it
/// was built for.
#[derive(Debug)]
struct LayerSlot {
    cache: fibquant::KvCache,
    batch: usize,
    scale: f32,
}

/// FibQuant's compressed KV cache for a model, as a mistral.rs [`CompressedKVCache`] (see the
/// [crate docs](crate)).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fibquant::CachePolicy;
/// use fibquant_mistralrs::{AttendConfig, CompressedKVCache, DecodeOutput, FibQuantCache};
///
/// # fn main() -> candle_core::Result<()> {
/// // 2 layers, 4 query heads sharing 2 kv heads of 64, the 4-bit preset.
/// let cache = FibQuantCache::new(2, 4, 2, 64, CachePolicy::preset(4.0))?;
/// let dev = Device::Cpu;
/// let (k, v) = (Tensor::randn(0f32, 1., (1, 2, 10, 64), &dev)?, Tensor::randn(0f32, 1., (1, 2, 10, 64), &dev)?);
/// let q = Tensor::randn(0f32, 1., (1, 4, 10, 64), &dev)?;
/// let decoded = cache.prefill(0, &k, &v, &q)?;
/// assert_eq!(decoded.k.dims(), &[1, 2, 10, 64]);
/// let (k1, v1) = (Tensor::randn(0f32, 1., (1, 2, 1, 64), &dev)?, Tensor::randn(0f32, 1., (1, 2, 1, 64), &dev)?);
/// let q1 = Tensor::randn(0f32, 1., (1, 4, 1, 64), &dev)?;
/// let config = AttendConfig { softmax_scale: 0.125, n_kv_groups: 2 };
/// let DecodeOutput::Fused(out) = cache.decode(0, &k1, &v1, &q1, &config)? else {
///     unreachable!("decode always attends on the codes")
/// };
/// assert_eq!(out.dims(), &[1, 4, 1, 64]);
/// assert_eq!(cache.seq_len(0), 11);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FibQuantCache {
    shape: CacheShape,
    policy: CachePolicy,
    layers: Vec<Mutex<LayerSlot>>,
}

/// The policy of one layer of a one-layer cache: the layer's codes as the defaults, no
/// override.
fn layer_policy(policy: &CachePolicy, layer: usize) -> CachePolicy {
    let (k, v) = policy.codes_of(layer);
    let mut p = policy.clone().with_codes(k, v);
    p.overrides.clear();
    p
}

/// `(batch, heads, seq, head_dim)` of a rank-4 tensor.
fn dims4(
    layer: usize,
    what: &'static str,
    t: &Tensor,
) -> std::result::Result<[usize; 4], AdapterError> {
    match *t.dims() {
        [b, h, s, d] => Ok([b, h, s, d]),
        _ => Err(AdapterError::Shape {
            layer,
            what,
            got: t.dims().to_vec(),
            expected: "rank 4, [batch, heads, seq, head_dim]".into(),
        }),
    }
}

/// The values of `t` as f32, row-major (head-major rows per batch element).
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// The first NaN or infinity of `rows` (`[batch, heads, seq, d]`), located.
fn check_finite(
    layer: usize,
    what: &'static str,
    rows: &[f32],
    [_, h, s, d]: [usize; 4],
) -> std::result::Result<(), AdapterError> {
    match rows.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(AdapterError::NonFinite {
            layer,
            what,
            batch: i / (h * s * d),
            head: i / (s * d) % h,
            position: i / d % s,
            coordinate: i % d,
            value: rows[i],
        }),
    }
}

/// A tensor of `shape` from f32 `rows`, in `dtype` on `device`.
fn tensor(rows: Vec<f32>, shape: [usize; 4], dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(rows, &shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

impl FibQuantCache {
    /// An empty cache for a model of `layers` layers of `query_heads` query heads sharing
    /// `kv_heads` kv heads of `head_dim`, storing per `policy` (its per-layer overrides
    /// included). Fails when the shape or the policy is inconsistent or a code is not embedded
    /// for the head dim.
    pub fn new(
        layers: usize,
        query_heads: usize,
        kv_heads: usize,
        head_dim: usize,
        policy: CachePolicy,
    ) -> std::result::Result<Self, AdapterError> {
        let shape = CacheShape {
            layers,
            query_heads,
            kv_heads,
            head_dim,
        };
        let runtime = |source| AdapterError::Runtime {
            layer: None,
            source,
            kv_heads,
            query_heads,
        };
        // The whole policy against the whole shape (overrides of layers that do not exist).
        fibquant::KvCache::new(shape, policy.clone()).map_err(runtime)?;
        let cache = FibQuantCache {
            shape,
            policy,
            layers: Vec::new(),
        };
        let layers = (0..layers)
            .map(|l| {
                let scale = 1.0 / (head_dim as f32).sqrt();
                cache.layer_cache(l, 1, scale).map(|cache| {
                    Mutex::new(LayerSlot {
                        cache,
                        batch: 1,
                        scale,
                    })
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(FibQuantCache { layers, ..cache })
    }

    /// The model's attention layout (per sequence).
    pub fn shape(&self) -> &CacheShape {
        &self.shape
    }

    /// The policy the cache stores by.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// Builds ahead what the codecs build on first use (about a second for the 4-bit preset's
    /// search structures), so that the first call does not pause for it.
    pub fn prepare(&self) {
        for l in 0..self.layers.len() {
            self.lock_or_recover(l).cache.prepare();
        }
    }

    /// Bits per stored value, every byte held counted: [`memory_usage`] times 8 over
    /// (positions x batch x kv heads x 2 x head dim) summed over the layers. `None` when empty.
    ///
    /// [`memory_usage`]: CompressedKVCache::memory_usage
    pub fn effective_bits(&self) -> Option<f64> {
        let (mut bytes, mut values) = (0usize, 0usize);
        for l in 0..self.layers.len() {
            let slot = self.lock_or_recover(l);
            bytes += slot.cache.bytes();
            values +=
                slot.cache.len(0) * slot.batch * self.shape.kv_heads * 2 * self.shape.head_dim;
        }
        (values > 0).then(|| bytes as f64 * 8.0 / values as f64)
    }

    /// An empty one-layer runtime cache for `layer`, for `batch` sequences, at softmax `scale`.
    fn layer_cache(
        &self,
        layer: usize,
        batch: usize,
        scale: f32,
    ) -> std::result::Result<fibquant::KvCache, AdapterError> {
        let shape = CacheShape {
            layers: 1,
            query_heads: batch * self.shape.query_heads,
            kv_heads: batch * self.shape.kv_heads,
            head_dim: self.shape.head_dim,
        };
        fibquant::KvCache::new(shape, layer_policy(&self.policy, layer))
            .and_then(|c| c.with_score_scale(scale))
            .map_err(|source| self.runtime(layer, source))
    }

    /// The runtime's `source` error in a call on `layer`.
    fn runtime(&self, layer: usize, source: fibquant::Error) -> AdapterError {
        AdapterError::Runtime {
            layer: Some(layer),
            source,
            kv_heads: self.shape.kv_heads,
            query_heads: self.shape.query_heads,
        }
    }

    /// The layer's lock, accepting a poisoned one (for reads and for clearing).
    fn lock_or_recover(&self, layer: usize) -> MutexGuard<'_, LayerSlot> {
        self.layers[layer]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks `layer`, the shapes of the call and the values, and returns the inputs as f32
    /// rows: `(dims of k, keys, values, queries)`.
    #[allow(clippy::type_complexity)]
    fn inputs(
        &self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        q: &Tensor,
    ) -> std::result::Result<([usize; 4], Vec<f32>, Vec<f32>, Vec<f32>), candle_core::Error> {
        if layer >= self.layers.len() {
            return Err(AdapterError::NoSuchLayer {
                layer,
                layers: self.layers.len(),
            }
            .into());
        }
        let s = &self.shape;
        let kd = dims4(layer, "keys", k)?;
        let [b, _, seq, _] = kd;
        let want = [
            ("keys", k, s.kv_heads),
            ("values", v, s.kv_heads),
            ("queries", q, s.query_heads),
        ];
        for (what, t, heads) in want {
            let got = dims4(layer, what, t)?;
            if got != [b, heads, seq, s.head_dim] {
                return Err(AdapterError::Shape {
                    layer,
                    what,
                    got: got.to_vec(),
                    expected: format!(
                        "[{b}, {heads}, {seq}, {}] (batch and new positions of the keys, the \
                         cache's heads and head dim)",
                        s.head_dim
                    ),
                }
                .into());
            }
        }
        let (kr, vr, qr) = (values(k)?, values(v)?, values(q)?);
        check_finite(layer, "keys", &kr, kd)?;
        check_finite(layer, "values", &vr, kd)?;
        check_finite(layer, "queries", &qr, [b, s.query_heads, seq, s.head_dim])?;
        Ok((kd, kr, vr, qr))
    }

    /// The layer's slot, locked, holding a cache for `batch` sequences at softmax `scale`
    /// (rebuilt empty when the layer is empty and was built for another batch size or scale;
    /// an error when it holds positions for another batch size).
    fn slot(
        &self,
        layer: usize,
        batch: usize,
        scale: Option<f32>,
    ) -> std::result::Result<MutexGuard<'_, LayerSlot>, AdapterError> {
        let mut slot = self.layers[layer]
            .lock()
            .map_err(|_| AdapterError::Poisoned { layer })?;
        let scale = scale.unwrap_or(slot.scale);
        if slot.batch != batch && slot.cache.len(0) > 0 {
            return Err(AdapterError::BatchChanged {
                layer,
                got: batch,
                held: slot.batch,
            });
        }
        if slot.batch != batch {
            slot.cache = self.layer_cache(layer, batch, scale)?;
            slot.batch = batch;
            slot.scale = scale;
        } else if slot.scale != scale {
            // The scale was checked: `with_score_scale` cannot fail, and the cache is kept.
            let fresh = self.layer_cache(layer, batch, scale)?;
            let held = std::mem::replace(&mut slot.cache, fresh);
            slot.cache = held
                .with_score_scale(scale)
                .map_err(|source| self.runtime(layer, source))?;
            slot.scale = scale;
        }
        Ok(slot)
    }
}

impl CompressedKVCache for FibQuantCache {
    /// Appends the chunk (`k`, `v`: `[batch, kv_heads, seq, head_dim]`; `q`:
    /// `[batch, query_heads, seq, head_dim]`, whose statistics set the key scales on the layer's
    /// first chunk) and returns every cached position of the layer as the cache reconstructs it,
    /// `[batch, kv_heads, total, head_dim]` in `k`'s dtype and device, with no logit bias.
    fn prefill(&self, layer: usize, k: &Tensor, v: &Tensor, q: &Tensor) -> Result<DequantResult> {
        let (kd, kr, vr, qr) = self.inputs(layer, k, v, q)?;
        let [b, _, seq, d] = kd;
        let mut slot = self.slot(layer, b, None)?;
        let cache = &mut slot.cache;
        cache
            .append_with_queries(0, &qr, &kr, &vr, seq)
            .map_err(|e| self.runtime(layer, e))?;
        let len = cache.len(0);
        let heads = b * self.shape.kv_heads;
        let mut keys = vec![0f32; heads * len * d];
        let mut vals = vec![0f32; heads * len * d];
        if len > 0 {
            for (h, (kh, vh)) in keys
                .chunks_exact_mut(len * d)
                .zip(vals.chunks_exact_mut(len * d))
                .enumerate()
            {
                cache
                    .reconstruct(0, h, kh, vh)
                    .map_err(|e| self.runtime(layer, e))?;
            }
        }
        drop(slot);
        let shape = [b, self.shape.kv_heads, len, d];
        Ok(DequantResult {
            k: tensor(keys, shape, k.dtype(), k.device())?,
            v: tensor(vals, shape, v.dtype(), v.device())?,
            logit_bias: None,
        })
    }

    /// Appends the new positions (`k`, `v`: `[batch, kv_heads, seq, head_dim]`, `seq` = 1 when
    /// decoding; more are attended causally) and attends their queries (`q`:
    /// `[batch, query_heads, seq, head_dim]`) over the layer on the codes, at
    /// `config.softmax_scale`: [`DecodeOutput::Fused`] `[batch, query_heads, seq, head_dim]` in
    /// `q`'s dtype and device. `config.n_kv_groups` must be `query_heads / kv_heads`.
    fn decode(
        &self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        q: &Tensor,
        config: &AttendConfig,
    ) -> Result<DecodeOutput> {
        let (kd, kr, vr, qr) = self.inputs(layer, k, v, q)?;
        let [b, _, seq, d] = kd;
        let s = &self.shape;
        if config.n_kv_groups != s.group() {
            return Err(AdapterError::Groups {
                layer,
                got: config.n_kv_groups,
                expected: s.group(),
                query_heads: s.query_heads,
                kv_heads: s.kv_heads,
            }
            .into());
        }
        let scale = config.softmax_scale;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(AdapterError::Scale { layer, scale }.into());
        }
        let mut out = vec![0f32; qr.len()];
        self.slot(layer, b, Some(scale))?
            .cache
            .append_and_attend(0, &qr, &kr, &vr, seq, &mut out)
            .map_err(|e| self.runtime(layer, e))?;
        let shape = [b, s.query_heads, seq, d];
        Ok(DecodeOutput::Fused(tensor(
            out,
            shape,
            q.dtype(),
            q.device(),
        )?))
    }

    /// Positions cached for `layer` (0 for an unknown layer).
    fn seq_len(&self, layer: usize) -> usize {
        if layer >= self.layers.len() {
            return 0;
        }
        self.lock_or_recover(layer).cache.len(0)
    }

    /// Empties every layer (the key scales with them); the next calls may use another batch
    /// size. Clears a poisoned layer's condition.
    fn reset(&self) -> Result<()> {
        for (l, m) in self.layers.iter().enumerate() {
            self.lock_or_recover(l).cache.clear();
            m.clear_poison();
        }
        Ok(())
    }

    /// Bytes every layer holds ([`fibquant::KvCache::bytes`]: codec slots with their norms,
    /// fp16 rows, block means, key scales), for the whole batch.
    fn memory_usage(&self) -> usize {
        (0..self.layers.len())
            .map(|l| self.lock_or_recover(l).cache.bytes())
            .sum()
    }
}
