//! Attention-output fidelity of a K/V codec on captured real queries, keys and values.
//!
//! [`AttentionBench::capture`] runs the model once over a window with an uncompressed cache and a
//! [`QkvRecorder`], keeping every layer's post-RoPE q, k, v and the exact attention output
//! `softmax(q K^T / sqrt(d) + causal mask) V` of every (query head, position).
//! [`AttentionBench::evaluate`] then encodes and decodes every key and value row with a codec and
//! recomputes the outputs from the reconstructed K, V (same queries): the score is the cosine
//! between exact and reconstructed outputs, averaged over query heads and positions per layer.
//! Grouped-query attention: query head `h` reads kv head `h / (n_head / n_kv_head)`.

use crate::kv_cache::{F32Cache, QkvRecorder};
use crate::models::attention::Heads;
use crate::models::{LogitsMode, Model};
use crate::progress::Progress;
use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use fibquant::Codec;

/// One layer's captured tensors.
#[derive(Debug, Clone)]
struct LayerQkv {
    /// Queries grouped by kv head: `(n_kv, n_rep * seq, d)`.
    q: Tensor,
    /// Keys, `n_kv * seq * d` floats, kv-head major.
    k: Vec<f32>,
    /// Values, same layout as `k`.
    v: Vec<f32>,
    /// Exact attention output, `n_head * seq * d` floats, query-head major.
    reference: Vec<f32>,
}

/// Captured attention inputs of every layer for one window, with their exact outputs.
#[derive(Debug, Clone)]
pub struct AttentionBench {
    heads: Heads,
    seq: usize,
    /// Additive causal mask `(seq, seq)`: 0 on and below the diagonal, -inf above.
    mask: Tensor,
    layers: Vec<LayerQkv>,
}

/// Fidelity of one codec setting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fidelity {
    /// Mean attention-output cosine over layers, query heads and positions.
    pub mean_cosine: f64,
    /// Per-layer mean cosine (over query heads and positions).
    pub layer_cosine: Vec<f64>,
    /// Index of the layer with the lowest mean cosine.
    pub worst_layer: usize,
    /// That layer's mean cosine.
    pub worst_layer_cosine: f64,
    /// Mean over key rows of `||k - k_hat||^2 / ||k||^2` (the codec's normalized MSE on real keys).
    pub key_nmse: f64,
    /// The same for value rows.
    pub value_nmse: f64,
}

/// Sum over rows of `||x - y||^2 / ||x||^2` (rows of `d`; zero rows count 0), and the row count.
fn nmse_sum(x: &[f32], y: &[f32], d: usize) -> (f64, usize) {
    let mut sum = 0.0;
    for (a, b) in x.chunks_exact(d).zip(y.chunks_exact(d)) {
        let n: f64 = a.iter().map(|&v| (v as f64).powi(2)).sum();
        let e: f64 = a
            .iter()
            .zip(b)
            .map(|(&u, &v)| (u as f64 - v as f64).powi(2))
            .sum();
        if n > 0.0 {
            sum += e / n;
        }
    }
    (sum, x.len() / d)
}

/// Cosine similarity of two equal-length vectors (1 when both are zero, 0 when one is).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Round-trips `rows` (rows of `codec.dim()` floats) through `codec` (identity for `None`).
pub fn reconstruct(codec: Option<&Codec>, rows: &[f32]) -> Result<Vec<f32>> {
    let Some(c) = codec else {
        return Ok(rows.to_vec());
    };
    let mut slots = vec![0u8; rows.len() / c.dim() * c.slot_bytes()];
    c.encode_batch(rows, &mut slots)
        .map_err(|e| anyhow::anyhow!("encode: {e}"))?;
    let mut out = vec![0f32; rows.len()];
    c.decode_batch(&slots, &mut out)
        .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
    Ok(out)
}

impl AttentionBench {
    /// Runs `model` once over `tokens` (one forward call, uncompressed cache) and captures every
    /// layer's post-RoPE q, k, v.
    pub fn capture(model: &mut Model, tokens: &[u32]) -> Result<Self> {
        let cfg = model.config().clone();
        let mut cache = F32Cache::new(cfg.n_layers);
        let mut rec = QkvRecorder::new(cfg.n_layers);
        let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        model.forward(&input, &mut cache, Some(&mut rec), LogitsMode::Last)?;
        let qkv = rec
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.with_context(|| format!("layer {i} was not observed")))
            .collect::<Result<Vec<_>>>()?;
        Self::from_qkv(cfg.heads, &qkv)
    }

    /// Builds the bench from per-layer `(q, k, v)`: q `(1, n_head, seq, d)`, k and v
    /// `(1, n_kv_head, seq, d)`, and computes the exact outputs.
    pub fn from_qkv(heads: Heads, qkv: &[(Tensor, Tensor, Tensor)]) -> Result<Self> {
        ensure!(!qkv.is_empty(), "no layers captured");
        ensure!(
            heads.n_kv_head > 0 && heads.n_head.is_multiple_of(heads.n_kv_head),
            "{} query heads cannot share {} kv heads",
            heads.n_head,
            heads.n_kv_head
        );
        let seq = qkv[0].1.dim(2)?;
        let d = heads.head_dim;
        let n_rep = heads.n_head / heads.n_kv_head;
        let dev = qkv[0].0.device().clone();
        let upper: Vec<f32> = (0..seq * seq)
            .map(|i| {
                if i % seq > i / seq {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(upper, (seq, seq), &dev)?;
        let mut bench = Self {
            heads,
            seq,
            mask,
            layers: Vec::with_capacity(qkv.len()),
        };
        for (q, k, v) in qkv {
            ensure!(
                q.dims() == [1, heads.n_head, seq, d],
                "q shape {:?}",
                q.dims()
            );
            ensure!(
                k.dims() == [1, heads.n_kv_head, seq, d],
                "k shape {:?}",
                k.dims()
            );
            ensure!(
                v.dims() == [1, heads.n_kv_head, seq, d],
                "v shape {:?}",
                v.dims()
            );
            let q = q.contiguous()?.reshape((heads.n_kv_head, n_rep * seq, d))?;
            let k: Vec<f32> = k.flatten_all()?.to_vec1()?;
            let v: Vec<f32> = v.flatten_all()?.to_vec1()?;
            let reference = bench.attend(&q, &k, &v)?;
            bench.layers.push(LayerQkv { q, k, v, reference });
        }
        Ok(bench)
    }

    /// Number of layers captured.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Window length (positions).
    pub fn seq_len(&self) -> usize {
        self.seq
    }

    /// Head layout.
    pub fn heads(&self) -> Heads {
        self.heads
    }

    /// `softmax(q K^T / sqrt(d) + mask) V` for every query head, as `n_head * seq * d` floats.
    fn attend(&self, q: &Tensor, k: &[f32], v: &[f32]) -> Result<Vec<f32>> {
        let Heads {
            n_head,
            n_kv_head,
            head_dim: d,
        } = self.heads;
        let (s, dev) = (self.seq, q.device());
        let k = Tensor::from_slice(k, (n_kv_head, s, d), dev)?;
        let v = Tensor::from_slice(v, (n_kv_head, s, d), dev)?;
        let att = (q.matmul(&k.t()?)? / (d as f64).sqrt())?
            .reshape((n_kv_head, n_head / n_kv_head, s, s))?
            .broadcast_add(&self.mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?.reshape((
            n_kv_head,
            n_head / n_kv_head * s,
            s,
        ))?;
        Ok(att.matmul(&v)?.flatten_all()?.to_vec1()?)
    }

    /// Attention-output cosine with keys round-tripped through `key` and values through `value`
    /// (`None` = exact). `progress`, if given, advances by one per layer.
    pub fn evaluate(
        &self,
        key: Option<&Codec>,
        value: Option<&Codec>,
        progress: Option<&Progress>,
    ) -> Result<Fidelity> {
        let d = self.heads.head_dim;
        let mut layer_cosine = Vec::with_capacity(self.layers.len());
        let (mut ke, mut ve, mut rows_kv) = (0.0, 0.0, 0usize);
        for l in &self.layers {
            let k = reconstruct(key, &l.k)?;
            let v = reconstruct(value, &l.v)?;
            let (e, n) = nmse_sum(&l.k, &k, d);
            ke += e;
            ve += nmse_sum(&l.v, &v, d).0;
            rows_kv += n;
            let out = self.attend(&l.q, &k, &v)?;
            let rows = out.len() / d;
            let sum: f64 = out
                .chunks_exact(d)
                .zip(l.reference.chunks_exact(d))
                .map(|(a, b)| cosine(a, b))
                .sum();
            layer_cosine.push(sum / rows as f64);
            if let Some(pb) = progress {
                pb.inc(1);
            }
        }
        let mean_cosine = layer_cosine.iter().sum::<f64>() / layer_cosine.len() as f64;
        let (worst_layer, worst_layer_cosine) = layer_cosine
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::NAN));
        Ok(Fidelity {
            mean_cosine,
            layer_cosine,
            worst_layer,
            worst_layer_cosine,
            key_nmse: ke / rows_kv as f64,
            value_nmse: ve / rows_kv as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random floats in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn grouped_attention_matches_a_naive_loop() -> Result<()> {
        let heads = Heads {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 8,
        };
        let (s, d) = (5, 8);
        let dev = Device::Cpu;
        let (qv, kv, vv) = (
            noise(4 * s * d, 1),
            noise(2 * s * d, 2),
            noise(2 * s * d, 3),
        );
        let q = Tensor::from_slice(&qv, (1, 4, s, d), &dev)?;
        let k = Tensor::from_slice(&kv, (1, 2, s, d), &dev)?;
        let v = Tensor::from_slice(&vv, (1, 2, s, d), &dev)?;
        let bench = AttentionBench::from_qkv(heads, &[(q, k, v)])?;
        let got = &bench.layers[0].reference;
        for h in 0..4 {
            let g = h / 2;
            for i in 0..s {
                let qi = &qv[(h * s + i) * d..][..d];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &kv[(g * s + j) * d..][..d];
                        qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..=i)
                        .map(|j| w[j] / z * vv[(g * s + j) * d + c] as f64)
                        .sum();
                    let have = got[(h * s + i) * d + c] as f64;
                    assert!(
                        (want - have).abs() < 1e-5,
                        "h{h} i{i} c{c}: {want} vs {have}"
                    );
                }
            }
        }
        // Exact K, V give cosine 1 everywhere.
        let f = bench.evaluate(None, None, None)?;
        assert!((f.mean_cosine - 1.0).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn cosine_edge_cases() {
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
    }
}
