//! Perplexity of a model over consecutive windows of a token stream, attending through a
//! [`KvCache`].
//!
//! Window `w` feeds tokens `[w L, (w+1) L)` (L = window length) into an empty cache, in chunks of
//! `chunk` tokens, and scores the prediction of every next token: targets `[w L + 1, (w+1) L]`,
//! so each window scores exactly L tokens (the last target is the next window's first token).

use crate::kv_cache::KvCache;
use crate::models::{LogitsMode, Model};
use crate::progress::Progress;
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
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
    /// Per-target KL divergence (nats) of the next-token distribution from the reference run's
    /// (empty without a reference).
    #[serde(skip)]
    pub kl: Vec<f64>,
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
    /// Mean KL divergence from the reference over every scored token (`None` without one).
    pub kl_mean: Option<f64>,
    /// 99th percentile of the per-token KL divergence.
    pub kl_p99: Option<f64>,
    /// Bits per stored value at the end of each window, every byte the cache held counted:
    /// `cache_bytes * 8 / (window_len * layers * kv heads * 2 * head_dim)` (mean over windows).
    pub effective_bits: f64,
    /// Total wall-clock seconds of the forward passes and scoring.
    pub seconds: f64,
}

/// Negative log-likelihood (nats) of `targets[i]` under logits row `i` of `logits` (rows of
/// length `vocab`), computed in f64 with a stable log-sum-exp.
pub fn nll_rows(logits: &[f32], vocab: usize, targets: &[u32]) -> Vec<f64> {
    logits
        .chunks_exact(vocab)
        .zip(targets)
        .map(|(row, &t)| log_sum_exp(row) - row[t as usize] as f64)
        .collect()
}

/// `ln sum_v exp(row[v])` in f64, shifted by the row's maximum (stable).
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// Log-probabilities of every next token of a reference run (rows of `vocab`), per window.
pub type ReferenceLogProbs = Vec<Vec<f32>>;

/// What [`perplexity`] does with next-token distributions beyond scoring targets.
pub enum Reference<'a> {
    /// Nothing.
    None,
    /// Keep them (this run is the reference).
    Capture(&'a mut ReferenceLogProbs),
    /// Compare with them (KL divergence per token).
    Compare(&'a ReferenceLogProbs),
}

/// Log-softmax of every row of `logits` (f64 log-sum-exp, stored as f32).
fn log_softmax_rows(logits: &[f32], vocab: usize, out: &mut Vec<f32>) {
    for row in logits.chunks_exact(vocab) {
        let lse = log_sum_exp(row);
        out.extend(row.iter().map(|&x| (x as f64 - lse) as f32));
    }
}

/// `KL(P_ref || P)` per row: `sum_v p_ref(v) (log p_ref(v) - log p(v))`, from log-probability
/// rows.
pub fn kl_rows(reference: &[f32], logprobs: &[f32], vocab: usize) -> Vec<f64> {
    reference
        .chunks_exact(vocab)
        .zip(logprobs.chunks_exact(vocab))
        .map(|(r, p)| {
            r.iter()
                .zip(p)
                .map(|(&lr, &lp)| (lr as f64).exp() * (lr as f64 - lp as f64))
                .sum::<f64>()
                .max(0.0)
        })
        .collect()
}

/// The `q`-quantile of `v` (nearest rank).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

/// Scores `opts.windows` windows of `tokens` with `model`, clearing `cache` before each window.
/// `progress`, if given, is advanced by one per scored token; `reference` captures or compares
/// next-token distributions (see [`Reference`]).
pub fn perplexity(
    model: &mut Model,
    tokens: &[u32],
    opts: PplOptions,
    cache: &mut dyn KvCache,
    progress: Option<&Progress>,
    mut reference: Reference<'_>,
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
    let heads = model.config().heads;
    let values_per_position = model.config().n_layers * heads.n_kv_head * 2 * heads.head_dim;
    if let Reference::Compare(r) = &reference {
        ensure!(
            r.len() == windows && r.iter().all(|w| w.len() == window_len * vocab),
            "the reference run scored other windows"
        );
    }
    if let Reference::Capture(r) = &mut reference {
        r.clear();
    }
    let t_all = Instant::now();
    let mut results = Vec::with_capacity(windows);
    for w in 0..windows {
        let t0 = Instant::now();
        let start = w * window_len;
        cache.clear();
        let mut nll = Vec::with_capacity(window_len);
        let mut kl = Vec::new();
        let mut lp = Vec::new();
        if let Reference::Capture(r) = &mut reference {
            r.push(Vec::with_capacity(window_len * vocab));
        }
        let mut pos = start;
        while pos < start + window_len {
            let n = chunk.min(start + window_len - pos);
            let input = Tensor::new(&tokens[pos..pos + n], &Device::Cpu)?.unsqueeze(0)?;
            let logits = model.forward(&input, cache, None, LogitsMode::All)?;
            let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            nll.extend(nll_rows(&logits, vocab, &tokens[pos + 1..pos + n + 1]));
            match &mut reference {
                Reference::None => {}
                Reference::Capture(r) => log_softmax_rows(&logits, vocab, &mut r[w]),
                Reference::Compare(r) => {
                    lp.clear();
                    log_softmax_rows(&logits, vocab, &mut lp);
                    let at = (pos - start) * vocab;
                    kl.extend(kl_rows(&r[w][at..at + n * vocab], &lp, vocab));
                }
            }
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
            kl,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let n_scored: usize = results.iter().map(|r| r.nll.len()).sum();
    let total: f64 = results.iter().flat_map(|r| r.nll.iter()).sum();
    let kl: Vec<f64> = results.iter().flat_map(|r| r.kl.iter().copied()).collect();
    let effective_bits = results
        .iter()
        .map(|r| r.cache_bytes as f64 * 8.0 / (window_len * values_per_position) as f64)
        .sum::<f64>()
        / windows as f64;
    Ok(PplReport {
        n_scored,
        ppl: (total / n_scored as f64).exp(),
        kl_mean: (!kl.is_empty()).then(|| kl.iter().sum::<f64>() / kl.len() as f64),
        kl_p99: (!kl.is_empty()).then(|| quantile(&kl, 0.99)),
        effective_bits,
        windows: results,
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
