// Modified copy of `candle-transformers` 0.11.1, `src/models/quantized_qwen2.rs`,
// from the candle project (https://github.com/huggingface/candle), copyright the candle authors,
// dual-licensed MIT OR Apache-2.0 (the same terms as this crate).
//
// Changes for FibQuant: the per-layer KV cache is no longer a private field but a `&mut dyn
// KvCache` passed to `forward` (post-RoPE keys, see `super::attention`); an optional observer
// sees every layer's post-RoPE q/k/v; `forward` can return logits for all positions; tracing
// spans were dropped.

//! Qwen2 model implementation with quantization support.
//!
//! Qwen2 is a chat-optimized language model that supports 8-bit quantization
//! for reduced memory usage and faster inference.
//!
//! Key characteristics:
//! - Group Query Attention (GQA)
//! - RMSNorm for layer normalization
//! - Rotary positional embeddings (RoPE)
//! - Support for 8-bit quantization
//!
//! References:
//! - [Model Card](https://huggingface.co/Qwen/Qwen2)

use super::attention::{cached_attention, Heads, MaskCache};
use super::{qmatmul, LogitsMode, ModelConfig, WeightFormat};
use crate::kv_cache::{AttentionObserver, KvCache};
use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;

#[derive(Debug, Clone)]
struct Mlp {
    feed_forward_w1: QMatMul,
    feed_forward_w2: QMatMul,
    feed_forward_w3: QMatMul,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let w1 = self.feed_forward_w1.forward(xs)?;
        let w3 = self.feed_forward_w3.forward(xs)?;
        self.feed_forward_w2
            .forward(&(candle_nn::ops::silu(&w1)? * w3)?)
    }
}

#[derive(Debug, Clone)]
struct LayerWeights {
    attention_wq: QMatMul,
    attention_wk: QMatMul,
    attention_wv: QMatMul,
    attention_bq: Tensor,
    attention_bk: Tensor,
    attention_bv: Tensor,
    attention_wo: QMatMul,
    attention_norm: RmsNorm,
    mlp: Mlp,
    ffn_norm: RmsNorm,
    heads: Heads,
    cos: Tensor,
    sin: Tensor,
}

impl LayerWeights {
    fn apply_rotary_emb(&self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (_b_sz, _n_head, seq_len, _n_embd) = x.dims4()?;
        let cos = self.cos.narrow(0, index_pos, seq_len)?;
        let sin = self.sin.narrow(0, index_pos, seq_len)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_attn(
        &self,
        layer: usize,
        x: &Tensor,
        mask: Option<&Tensor>,
        index_pos: usize,
        cache: &mut dyn KvCache,
        observer: Option<&mut dyn AttentionObserver>,
    ) -> Result<Tensor> {
        let (b_sz, seq_len, n_embd) = x.dims3()?;
        let Heads {
            n_head,
            n_kv_head,
            head_dim,
        } = self.heads;

        let q = self.attention_wq.forward(x)?;
        let k = self.attention_wk.forward(x)?;
        let v = self.attention_wv.forward(x)?;

        let q = q.broadcast_add(&self.attention_bq)?;
        let k = k.broadcast_add(&self.attention_bk)?;
        let v = v.broadcast_add(&self.attention_bv)?;

        let q = q
            .reshape((b_sz, seq_len, n_head, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = k
            .reshape((b_sz, seq_len, n_kv_head, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b_sz, seq_len, n_kv_head, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;

        let q = self.apply_rotary_emb(&q, index_pos)?;
        let k = self.apply_rotary_emb(&k, index_pos)?;

        // Append to the cache, then attend over what the cache gives back (see `attention`).
        let y = cached_attention(layer, self.heads, &q, &k, &v, mask, cache, observer)?;
        let y = y.transpose(1, 2)?.reshape(&[b_sz, seq_len, n_embd])?;
        self.attention_wo.forward(&y)
    }
}

/// A quantized qwen2-architecture model (weights only: the KV cache is passed to `forward`).
#[derive(Debug, Clone)]
pub struct ModelWeights {
    tok_embeddings: Embedding,
    layers: Vec<LayerWeights>,
    norm: RmsNorm,
    output: QMatMul,
    masks: MaskCache,
    config: ModelConfig,
}

fn precomput_freqs_cis(
    head_dim: usize,
    freq_base: f32,
    context_length: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let theta: Vec<_> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / freq_base.powf(i as f32 / head_dim as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), device)?;
    let idx_theta = Tensor::arange(0, context_length as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((context_length, 1))?
        .matmul(&theta.reshape((1, theta.elem_count()))?)?;
    let cos = idx_theta.cos()?;
    let sin = idx_theta.sin()?;
    Ok((cos, sin))
}

impl ModelWeights {
    /// Loads the model from GGUF content (metadata keys `qwen2.*`).
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
        device: &Device,
        weights: WeightFormat,
    ) -> Result<Self> {
        let md_get = |s: &str| match ct.metadata.get(s) {
            None => candle_core::bail!("cannot find {s} in metadata"),
            Some(v) => Ok(v),
        };

        let head_count = md_get("qwen2.attention.head_count")?.to_u32()? as usize;
        let head_count_kv = md_get("qwen2.attention.head_count_kv")?.to_u32()? as usize;
        let embedding_length = md_get("qwen2.embedding_length")?.to_u32()? as usize;
        let context_length = md_get("qwen2.context_length")?.to_u32()? as usize;
        let block_count = md_get("qwen2.block_count")?.to_u32()? as usize;
        let rms_norm_eps = md_get("qwen2.attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let rope_freq_base = md_get("qwen2.rope.freq_base")
            .and_then(|m| m.to_f32())
            .unwrap_or(10000f32);

        let head_dim = embedding_length / head_count;

        let tok_embeddings_q = ct.tensor(reader, "token_embd.weight", device)?;
        let vocab_size = tok_embeddings_q.shape().dims()[0];
        let tok_embeddings = tok_embeddings_q.dequantize(device)?;
        let norm = RmsNorm::from_qtensor(
            ct.tensor(reader, "output_norm.weight", device)?,
            rms_norm_eps,
        )?;
        let output = match ct.tensor(reader, "output.weight", device) {
            Ok(v) => qmatmul(weights, v)?,
            // use tie_word_embeddings
            _ => qmatmul(weights, tok_embeddings_q)?,
        };

        let (cos, sin) = precomput_freqs_cis(head_dim, rope_freq_base, context_length, device)?;
        let heads = Heads {
            n_head: head_count,
            n_kv_head: head_count_kv,
            head_dim,
        };

        let mut layers = Vec::with_capacity(block_count);

        for layer_idx in 0..block_count {
            let prefix = format!("blk.{layer_idx}");
            let attention_wq = ct.tensor(reader, &format!("{prefix}.attn_q.weight"), device)?;
            let attention_wk = ct.tensor(reader, &format!("{prefix}.attn_k.weight"), device)?;
            let attention_wv = ct.tensor(reader, &format!("{prefix}.attn_v.weight"), device)?;

            let attention_bq = ct.tensor(reader, &format!("{prefix}.attn_q.bias"), device)?;
            let attention_bk = ct.tensor(reader, &format!("{prefix}.attn_k.bias"), device)?;
            let attention_bv = ct.tensor(reader, &format!("{prefix}.attn_v.bias"), device)?;

            let attention_wo =
                ct.tensor(reader, &format!("{prefix}.attn_output.weight"), device)?;

            let mlp = {
                let feed_forward_w1 =
                    ct.tensor(reader, &format!("{prefix}.ffn_gate.weight"), device)?;
                let feed_forward_w2 =
                    ct.tensor(reader, &format!("{prefix}.ffn_down.weight"), device)?;
                let feed_forward_w3 =
                    ct.tensor(reader, &format!("{prefix}.ffn_up.weight"), device)?;
                Mlp {
                    feed_forward_w1: qmatmul(weights, feed_forward_w1)?,
                    feed_forward_w2: qmatmul(weights, feed_forward_w2)?,
                    feed_forward_w3: qmatmul(weights, feed_forward_w3)?,
                }
            };

            let attention_norm =
                ct.tensor(reader, &format!("{prefix}.attn_norm.weight"), device)?;
            let ffn_norm = ct.tensor(reader, &format!("{prefix}.ffn_norm.weight"), device)?;

            layers.push(LayerWeights {
                attention_wq: qmatmul(weights, attention_wq)?,
                attention_wk: qmatmul(weights, attention_wk)?,
                attention_wv: qmatmul(weights, attention_wv)?,
                attention_bq: attention_bq.dequantize(device)?,
                attention_bk: attention_bk.dequantize(device)?,
                attention_bv: attention_bv.dequantize(device)?,
                attention_wo: qmatmul(weights, attention_wo)?,
                attention_norm: RmsNorm::from_qtensor(attention_norm, rms_norm_eps)?,
                cos: cos.clone(),
                sin: sin.clone(),
                mlp,
                ffn_norm: RmsNorm::from_qtensor(ffn_norm, rms_norm_eps)?,
                heads,
            });
        }

        Ok(Self {
            tok_embeddings: Embedding::new(tok_embeddings, embedding_length),
            layers,
            norm,
            output,
            masks: MaskCache::default(),
            config: ModelConfig {
                arch: "qwen2".to_string(),
                n_layers: block_count,
                heads,
                vocab_size,
                context_length,
            },
        })
    }

    /// Shapes and sizes of the loaded model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Runs one chunk `x` of token ids, shape `(1, seq_len)`, continuing the sequence held in
    /// `cache` (its position is `cache.seq_len(0)`). Appends the chunk's K/V to `cache`.
    ///
    /// Returns `(1, vocab)` logits for [`LogitsMode::Last`], `(1, seq_len, vocab)` for
    /// [`LogitsMode::All`].
    pub fn forward(
        &mut self,
        x: &Tensor,
        cache: &mut dyn KvCache,
        mut observer: Option<&mut dyn AttentionObserver>,
        logits: LogitsMode,
    ) -> Result<Tensor> {
        let (_b_sz, seq_len) = x.dims2()?;
        let index_pos = cache.seq_len(0);
        if index_pos + seq_len > self.config.context_length {
            candle_core::bail!(
                "sequence of {} tokens exceeds the context length {}",
                index_pos + seq_len,
                self.config.context_length
            );
        }
        let mask = self.masks.get(seq_len, index_pos, x.device())?;
        let mut layer_in = self.tok_embeddings.forward(x)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let x = layer_in;
            let residual = &x;
            let x = layer.attention_norm.forward(&x)?;
            let attn = layer.forward_attn(
                i,
                &x,
                mask.as_ref(),
                index_pos,
                cache,
                observer
                    .as_mut()
                    .map(|o| &mut **o as &mut dyn AttentionObserver),
            )?;
            let x = (attn + residual)?;

            // MLP
            let residual = &x;
            let x = layer.ffn_norm.forward(&x)?;
            let x = layer.mlp.forward(&x)?;
            let x = (x + residual)?;
            layer_in = x
        }
        let x = self.norm.forward(&layer_in)?;
        let x = match logits {
            LogitsMode::Last => x.i((.., seq_len - 1, ..))?,
            LogitsMode::All => x,
        };
        self.output.forward(&x)
    }
}
