//! GGUF language models (own copies of candle's quantized llama/qwen2) that attend through a
//! pluggable [`KvCache`](crate::kv_cache::KvCache).

pub mod attention;
pub mod quantized_llama;
pub mod quantized_qwen2;

use crate::kv_cache::{AttentionObserver, KvCache};
use anyhow::Context;
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

/// The architectures [`Model::load`] can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `general.architecture = "llama"`.
    Llama,
    /// `general.architecture = "qwen2"` (q/k/v projections with biases, NEOX-style RoPE).
    Qwen2,
}

/// A GGUF `general.architecture` this crate has no model for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported architecture {name:?} (GGUF general.architecture); supported: {supported}",
    supported = Architecture::SUPPORTED_NAMES.join(", ")
)]
pub struct UnsupportedArchitecture {
    /// The architecture named in the file.
    pub name: String,
}

impl Architecture {
    /// Every `general.architecture` value accepted.
    pub const SUPPORTED_NAMES: &'static [&'static str] = &["llama", "qwen2"];

    /// The architecture of a GGUF file (errors: no `general.architecture`, or an
    /// [`UnsupportedArchitecture`]).
    pub fn of(content: &gguf_file::Content) -> anyhow::Result<Self> {
        match architecture(content)?.as_str() {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(UnsupportedArchitecture {
                name: other.to_string(),
            }
            .into()),
        }
    }
}

fn open_gguf(path: &Path) -> anyhow::Result<(std::fs::File, gguf_file::Content)> {
    let mut file = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot open model {} (run `fibquant-eval fetch-model` first)",
            path.display()
        )
    })?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{}: not a readable GGUF file", path.display()))?;
    Ok((file, content))
}

impl Model {
    /// Loads a GGUF model from `path` on `device`, picking the architecture from its metadata.
    /// Also returns the parsed GGUF metadata (for the tokenizer).
    pub fn load(
        path: &Path,
        device: &Device,
        weights: WeightFormat,
    ) -> anyhow::Result<(Self, gguf_file::Content)> {
        let (mut file, content) = open_gguf(path)?;
        Architecture::of(&content)?;
        // `from_gguf` consumes the content (not Clone): read the header a second time for the
        // caller (metadata and tensor index only, a few milliseconds).
        file.seek(SeekFrom::Start(0))?;
        let meta = gguf_file::Content::read(&mut file)?;
        let model = Self::from_content(content, &mut file, device, weights)?;
        Ok((model, meta))
    }

    /// Like [`Model::load`], but runs `check` on the GGUF header (metadata and tensor index)
    /// before reading any weight, so that a file the caller cannot use (say, an unsupported
    /// tokenizer) fails in milliseconds rather than after the weights load; returns what `check`
    /// returned. The architecture is checked first.
    pub fn load_checked<T>(
        path: &Path,
        device: &Device,
        weights: WeightFormat,
        check: impl FnOnce(&gguf_file::Content) -> anyhow::Result<T>,
    ) -> anyhow::Result<(Self, T)> {
        let (mut file, content) = open_gguf(path)?;
        Architecture::of(&content)?;
        let checked = check(&content)?;
        let model = Self::from_content(content, &mut file, device, weights)?;
        Ok((model, checked))
    }

    fn from_content(
        content: gguf_file::Content,
        file: &mut std::fs::File,
        device: &Device,
        weights: WeightFormat,
    ) -> anyhow::Result<Self> {
        Ok(match Architecture::of(&content)? {
            Architecture::Llama => Model::Llama(quantized_llama::ModelWeights::from_gguf(
                content, file, device, weights,
            )?),
            Architecture::Qwen2 => Model::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                content, file, device, weights,
            )?),
        })
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
