//! Perplexity of a model over consecutive windows of a token stream, attending through a
//! [`KvCache`].
//!
//! Window `w` feeds tokens `[w L, (w+1) L)` (L = window length) into an empty cache, in chunks of
//! `chunk` tokens, and scores the prediction of every next token: targets `[w L + 1, (w+1) L]`,
//! so each window scores exactly L tokens (the last target is the next window's first token).

use crate::kv_cache::KvCache;
use crate::models::{LogitsMode, Model};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use indicatif::ProgressBar;
use std::time::Instant;

/// What to score.
#[derive(Debug, Clone, Copy)]
pub struct PplOptions {
    /// Number of consecutive windows.
    pub windows: usize,
    /// Tokens fed (and scored) per window.
    pub window_len: usize,
    /// Tokens per forward call (prefill chunk); `window_len` or more means one call per window.
    pub chunk: usize,
}

/// Result for one window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowResult {
    /// Index of the window's first token.
    pub start: usize,
    /// Per-target negative log-likelihoods (nats), in order.
    #[serde(skip)]
    pub nll: Vec<f64>,
    /// Perplexity of this window.
    pub ppl: f64,
    /// Bytes the cache held at the end of the window.
    pub cache_bytes: usize,
    /// Wall-clock seconds for this window.
    pub seconds: f64,
}

/// Result over all windows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PplReport {
    /// Per window.
    pub windows: Vec<WindowResult>,
    /// Scored tokens in total.
    pub n_scored: usize,
    /// exp(mean NLL) over every scored token.
    pub ppl: f64,
    /// Total wall-clock seconds of the forward passes and scoring.
    pub seconds: f64,
}

/// Negative log-likelihood (nats) of `targets[i]` under logits row `i` of `logits` (rows of
/// length `vocab`), computed in f64 with a stable log-sum-exp.
pub fn nll_rows(logits: &[f32], vocab: usize, targets: &[u32]) -> Vec<f64> {
    logits
        .chunks_exact(vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            lse - row[t as usize] as f64
        })
        .collect()
}

/// Scores `opts.windows` windows of `tokens` with `model`, clearing `cache` before each window.
/// `progress`, if given, is advanced by one per scored token.
pub fn perplexity(
    model: &mut Model,
    tokens: &[u32],
    opts: PplOptions,
    cache: &mut dyn KvCache,
    progress: Option<&ProgressBar>,
) -> Result<PplReport> {
    let PplOptions {
        windows,
        window_len,
        chunk,
    } = opts;
    ensure!(
        windows > 0 && window_len > 0,
        "need at least one window of one token"
    );
    ensure!(
        tokens.len() > windows * window_len,
        "text has {} tokens; {windows} windows of {window_len} need {}",
        tokens.len(),
        windows * window_len + 1
    );
    let chunk = chunk.clamp(1, window_len);
    let vocab = model.config().vocab_size;
    let t_all = Instant::now();
    let mut results = Vec::with_capacity(windows);
    for w in 0..windows {
        let t0 = Instant::now();
        let start = w * window_len;
        cache.clear();
        let mut nll = Vec::with_capacity(window_len);
        let mut pos = start;
        while pos < start + window_len {
            let n = chunk.min(start + window_len - pos);
            let input = Tensor::new(&tokens[pos..pos + n], &Device::Cpu)?.unsqueeze(0)?;
            let logits = model.forward(&input, cache, None, LogitsMode::All)?;
            let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            nll.extend(nll_rows(&logits, vocab, &tokens[pos + 1..pos + n + 1]));
            pos += n;
            if let Some(pb) = progress {
                pb.inc(n as u64);
            }
        }
        let ppl = (nll.iter().sum::<f64>() / nll.len() as f64).exp();
        results.push(WindowResult {
            start,
            nll,
            ppl,
            cache_bytes: cache.stored_bytes(),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let n_scored: usize = results.iter().map(|r| r.nll.len()).sum();
    let total: f64 = results.iter().flat_map(|r| r.nll.iter()).sum();
    Ok(PplReport {
        windows: results,
        n_scored,
        ppl: (total / n_scored as f64).exp(),
        seconds: t_all.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let v = nll_rows(&[0.0; 8], 4, &[1, 3]);
        assert_eq!(v.len(), 2);
        assert!((v[0] - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn nll_is_shift_invariant_and_stable() {
        let a = nll_rows(&[1.0, 2.0, 3.0], 3, &[2]);
        let b = nll_rows(&[1001.0, 1002.0, 1003.0], 3, &[2]);
        assert!((a[0] - b[0]).abs() < 1e-9);
    }
}
