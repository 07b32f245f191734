//! A tiny synthetic qwen2-architecture GGUF (random f32 weights, byte-level vocabulary), for the
//! tests that need a model of that architecture without downloading one.

#![allow(dead_code)] // each test crate uses a part

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use fibquant_eval::tokenizer::bytes_to_unicode;
use std::path::{Path, PathBuf};

/// Shapes of the synthetic model: d = 64 so that the runtime has codebooks for it.
pub const N_LAYERS: usize = 2;
pub const N_HEAD: usize = 2;
pub const N_KV_HEAD: usize = 1;
pub const HEAD_DIM: usize = 64;
pub const EMBD: usize = N_HEAD * HEAD_DIM;
pub const FFN: usize = 96;
pub const CONTEXT: usize = 512;
pub const MERGES: [&str; 4] = ["Ġ t", "h e", "Ġt he", "i n"];
pub const VOCAB: usize = 256 + MERGES.len();

/// What to write.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `tokenizer.ggml.pre`.
    pub pre: &'static str,
    /// Scale of the q/k/v biases (0 = zero biases).
    pub bias_scale: f32,
    /// Cut the file after the header (no tensor data): loading any weight fails.
    pub header_only: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            pre: "qwen2",
            bias_scale: 0.5,
            header_only: false,
        }
    }
}

/// Deterministic values in [-scale, scale) (xorshift).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, scale: f32, offset: f32) -> QTensor {
    let n = shape.iter().product();
    let v: Vec<f32> = values(n, seed, scale).iter().map(|x| x + offset).collect();
    let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::F32).unwrap()
}

/// Writes the model to `dir/name` and returns its path.
pub fn write_tiny_qwen2(dir: &Path, name: &str, spec: &Spec) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    tokens.extend(MERGES.iter().map(|m| m.replace(' ', "")));
    let s = |v: &str| Value::String(v.to_string());
    let u = Value::U32;
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", s("qwen2")),
        ("qwen2.attention.head_count", u(N_HEAD as u32)),
        ("qwen2.attention.head_count_kv", u(N_KV_HEAD as u32)),
        ("qwen2.embedding_length", u(EMBD as u32)),
        ("qwen2.context_length", u(CONTEXT as u32)),
        ("qwen2.block_count", u(N_LAYERS as u32)),
        ("qwen2.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("qwen2.rope.freq_base", Value::F32(1_000_000.0)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s(spec.pre)),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(MERGES.iter().map(|m| s(m)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", u(0)),
        ("tokenizer.ggml.eos_token_id", u(1)),
    ];
    let mut named: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            tensor(&[VOCAB, EMBD], 1, 1.0, 0.0),
        ),
        ("output_norm.weight".into(), tensor(&[EMBD], 2, 0.1, 1.0)),
        // No output.weight: tied to the embedding, as in the small Qwen2 models.
    ];
    let kv = N_KV_HEAD * HEAD_DIM;
    for l in 0..N_LAYERS {
        let seed = 100 * (l as u64 + 1);
        let w = 1.0 / (EMBD as f32).sqrt();
        let b = spec.bias_scale;
        for (name, shape, seed, scale, offset) in [
            ("attn_q.weight", vec![EMBD, EMBD], seed, w, 0.0),
            ("attn_k.weight", vec![kv, EMBD], seed + 1, w, 0.0),
            ("attn_v.weight", vec![kv, EMBD], seed + 2, w, 0.0),
            ("attn_q.bias", vec![EMBD], seed + 3, b, 0.0),
            ("attn_k.bias", vec![kv], seed + 4, b, 0.0),
            ("attn_v.bias", vec![kv], seed + 5, b, 0.0),
            ("attn_output.weight", vec![EMBD, EMBD], seed + 6, w, 0.0),
            ("ffn_gate.weight", vec![FFN, EMBD], seed + 7, w, 0.0),
            ("ffn_up.weight", vec![FFN, EMBD], seed + 8, w, 0.0),
            (
                "ffn_down.weight",
                vec![EMBD, FFN],
                seed + 9,
                1.0 / (FFN as f32).sqrt(),
                0.0,
            ),
            ("attn_norm.weight", vec![EMBD], seed + 10, 0.1, 1.0),
            ("ffn_norm.weight", vec![EMBD], seed + 11, 0.1, 1.0),
        ] {
            named.push((
                format!("blk.{l}.{name}"),
                tensor(&shape, seed, scale, offset),
            ));
        }
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &meta_refs, &tensor_refs).unwrap();
    let mut bytes = buf.into_inner();
    if spec.header_only {
        let header = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes)).unwrap();
        bytes.truncate(header.tensor_data_offset as usize);
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A text of a few hundred tokens for the synthetic vocabulary.
pub fn text() -> String {
    "In 2024 the 3 of them went in; THEY'RE there, then: the end.\n\n(Hello)  world!\n".repeat(8)
}

/// A scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fibquant-eval-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A batch of one sequence of token ids, as the models take it.
pub fn input(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// The largest absolute difference of two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}
