//! GGUF language models (own copies of candle's quantized llama/qwen2) that attend through a
//! pluggable [`KvCache`](crate::kv_cache::KvCache).

pub mod attention;
pub mod quantized_llama;
pub mod quantized_qwen2;

use crate::kv_cache::{AttentionObserver, KvCache};
use anyhow::{bail, Context};
use attention::Heads;
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{Device, Result, Tensor};
use std::io::{Seek, SeekFrom};
use std::path::Path;

/// How the quantized weight matrices are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// Dequantize every weight matrix to f32 once at load time and use the f32 GEMM. Same weight
    /// values; activations stay f32 (candle's quantized path rounds them to 8 bits), so the
    /// perplexity differs a little from [`WeightFormat::Quantized`]. About 7x faster for prefill
    /// on CPU, about 4x the weight memory.
    #[default]
    F32,
    /// candle's quantized matmul (what `candle-transformers` does; activations quantized to Q8).
    Quantized,
}

/// A matmul with a GGUF weight in the requested [`WeightFormat`] (f32/f16 weights are always
/// dequantized, as in candle).
pub(crate) fn qmatmul(format: WeightFormat, qtensor: QTensor) -> Result<QMatMul> {
    match format {
        WeightFormat::Quantized => QMatMul::from_qtensor(qtensor),
        WeightFormat::F32 => Ok(QMatMul::Tensor(qtensor.dequantize(&qtensor.device())?)),
    }
}

/// Which positions [`Model::forward`] returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the chunk's last position: shape `(1, vocab)` (generation).
    Last,
    /// Every position of the chunk: shape `(1, seq_len, vocab)` (perplexity).
    All,
}

/// Shapes and sizes of a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// `general.architecture` of the GGUF file.
    pub arch: String,
    /// Number of transformer blocks (= KV cache layers).
    pub n_layers: usize,
    /// Attention head layout (same in every layer).
    pub heads: Heads,
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Longest sequence the RoPE tables cover.
    pub context_length: usize,
}

/// A loaded model of one of the supported architectures.
#[derive(Debug, Clone)]
pub enum Model {
    /// `general.architecture = "llama"` (SmolLM2, TinyLlama, ...).
    Llama(quantized_llama::ModelWeights),
    /// `general.architecture = "qwen2"`.
    Qwen2(quantized_qwen2::ModelWeights),
}

/// Reads `general.architecture` from GGUF metadata.
pub fn architecture(content: &gguf_file::Content) -> anyhow::Result<String> {
    Ok(content
        .metadata
        .get("general.architecture")
        .context("GGUF has no general.architecture")?
        .to_string()?
        .clone())
}

impl Model {
    /// Loads a GGUF model from `path` on `device`, picking the architecture from its metadata.
    /// Also returns the parsed GGUF metadata (for the tokenizer).
    pub fn load(
        path: &Path,
        device: &Device,
        weights: WeightFormat,
    ) -> anyhow::Result<(Self, gguf_file::Content)> {
        let mut file = std::fs::File::open(path).with_context(|| {
            format!(
                "cannot open model {} (run `fibquant-eval fetch-model` first)",
                path.display()
            )
        })?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{}: not a readable GGUF file", path.display()))?;
        // `from_gguf` consumes the content (not Clone): read the header a second time for the
        // caller (metadata and tensor index only, a few milliseconds).
        file.seek(SeekFrom::Start(0))?;
        let meta = gguf_file::Content::read(&mut file)?;
        let model = match architecture(&content)?.as_str() {
            "llama" => Model::Llama(quantized_llama::ModelWeights::from_gguf(
                content, &mut file, device, weights,
            )?),
            "qwen2" => Model::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                content, &mut file, device, weights,
            )?),
            other => bail!("unsupported architecture {other:?} (supported: llama, qwen2)"),
        };
        Ok((model, meta))
    }

    /// Shapes and sizes of the model.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Llama(m) => m.config(),
            Model::Qwen2(m) => m.config(),
        }
    }

    /// Runs a chunk of token ids (shape `(1, seq_len)`) after what `cache` holds, appending the
    /// chunk's post-RoPE K/V to `cache` and attending through it; `observer`, when given, sees
    /// every layer's exact post-RoPE q/k/v. See [`LogitsMode`] for the returned shape.
    pub fn forward(
        &mut self,
        tokens: &Tensor,
        cache: &mut dyn KvCache,
        observer: Option<&mut dyn AttentionObserver>,
        logits: LogitsMode,
    ) -> Result<Tensor> {
        match self {
            Model::Llama(m) => m.forward(tokens, cache, observer, logits),
            Model::Qwen2(m) => m.forward(tokens, cache, observer, logits),
        }
    }
}
