//! Text generation through a [`KvCache`]: one prefill of the prompt, then one forward call per
//! new token, greedy or sampled (temperature, top-p, seeded), timed per phase.

use crate::kv_cache::KvCache;
use crate::models::{LogitsMode, Model};
use anyhow::{bail, ensure, Result};
use candle_core::{Device, Tensor};
use fibquant::util::rng::Xoshiro256;
use std::time::Instant;

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (the lowest id on ties).
    Greedy,
    /// A draw from `softmax(logits / temperature)` restricted to the smallest set of most
    /// likely tokens whose probability reaches `top_p` (nucleus sampling), from a generator
    /// seeded with `seed`.
    Sample {
        /// Softmax temperature, finite and positive.
        temperature: f64,
        /// Probability mass kept, in `(0, 1]`.
        top_p: f64,
        /// Seed of the generator (the same seed gives the same draws).
        seed: u64,
    },
}

impl Sampling {
    /// Greedy for `temperature == 0`, else sampled; checks the values.
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Result<Self> {
        ensure!(
            temperature.is_finite() && temperature >= 0.0,
            "temperature must be finite and at least 0, got {temperature}"
        );
        ensure!(
            top_p > 0.0 && top_p <= 1.0,
            "top-p must be in (0, 1], got {top_p}"
        );
        Ok(if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature,
                top_p,
                seed,
            }
        })
    }
}

/// Picks tokens from logits by a [`Sampling`] rule, holding the generator's state.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: Xoshiro256,
    order: Vec<usize>,
    probs: Vec<f64>,
}

impl Sampler {
    /// A sampler at the start of its stream.
    pub fn new(sampling: Sampling) -> Self {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Sample { seed, .. } => seed,
        };
        Sampler {
            sampling,
            rng: Xoshiro256::new(seed),
            order: Vec::new(),
            probs: Vec::new(),
        }
    }

    /// The next token for `logits` (one row, the vocabulary). Fails on an empty row or a NaN or
    /// infinite logit.
    pub fn pick(&mut self, logits: &[f32]) -> Result<u32> {
        ensure!(!logits.is_empty(), "no logits to pick a token from");
        if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
            bail!("logit of token {i} is {}", logits[i]);
        }
        let (temperature, top_p) = match self.sampling {
            Sampling::Greedy => return Ok(argmax(logits)),
            Sampling::Sample {
                temperature, top_p, ..
            } => (temperature, top_p),
        };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        self.probs.clear();
        self.probs.extend(
            logits
                .iter()
                .map(|&x| ((x as f64 - max) / temperature).exp()),
        );
        let total: f64 = self.probs.iter().sum();
        // Most likely first (lower id first on ties): the nucleus is a prefix.
        self.order.clear();
        self.order.extend(0..logits.len());
        let probs = &self.probs;
        self.order
            .sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let mut kept = 0;
        let mut mass = 0.0;
        for &i in &self.order {
            mass += probs[i] / total;
            kept += 1;
            if mass >= top_p {
                break;
            }
        }
        let nucleus = &self.order[..kept];
        let nucleus_total: f64 = nucleus.iter().map(|&i| probs[i]).sum();
        let mut u = self.rng.next_open01() * nucleus_total;
        for &i in nucleus {
            u -= probs[i];
            if u < 0.0 {
                return Ok(i as u32);
            }
        }
        // Rounding left `u` a hair above zero: the last token of the nucleus.
        Ok(nucleus[kept - 1] as u32)
    }
}

/// The index of the largest value (the first on ties).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenOptions {
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// How tokens are picked.
    pub sampling: Sampling,
    /// Stop after this token (not part of the output), usually the model's end of sequence.
    pub stop: Option<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The stop token was generated.
    Stop,
}

/// One generation run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    /// Prompt tokens (prefilled in one forward call).
    pub prompt_tokens: usize,
    /// Generated token ids (without the stop token).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stopped: StopReason,
    /// Seconds of the prefill call (up to the first token's logits).
    pub prefill_seconds: f64,
    /// Seconds of the decoding calls (one per generated token after the first).
    pub decode_seconds: f64,
    /// Decoding forward calls.
    pub decode_steps: usize,
    /// Positions the cache holds at the end.
    pub cached_positions: usize,
    /// Bytes the cache holds at the end ([`KvCache::stored_bytes`]).
    pub cache_bytes: usize,
}

impl Generation {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds
    }

    /// Tokens per second of decoding (`None` without a decoding step).
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        (self.decode_steps > 0).then(|| self.decode_steps as f64 / self.decode_seconds)
    }

    /// Bits per cached value: [`cache_bytes`](Self::cache_bytes) times 8 over the values the
    /// positions stand for (`values_per_position`: layers x kv heads x 2 x head dim).
    pub fn effective_bits(&self, values_per_position: usize) -> Option<f64> {
        let values = self.cached_positions * values_per_position;
        (values > 0).then(|| self.cache_bytes as f64 * 8.0 / values as f64)
    }
}

/// The first index where `a` and `b` differ (the shorter length when one is a prefix of the
/// other and they differ in length), `None` when equal.
pub fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None => (a.len() != b.len()).then(|| a.len().min(b.len())),
    }
}

/// Generates after `prompt` with `model`, attending through `cache` (cleared first): the prompt
/// in one forward call, then one call per token. Fails when the prompt is empty or prompt and
/// output would not fit the model's context.
pub fn generate(
    model: &mut Model,
    prompt: &[u32],
    cache: &mut dyn KvCache,
    opts: GenOptions,
) -> Result<Generation> {
    ensure!(!prompt.is_empty(), "the prompt has no token");
    let context = model.config().context_length;
    ensure!(
        prompt.len() + opts.max_tokens <= context,
        "{} prompt tokens and {} new ones exceed the model's context of {context}",
        prompt.len(),
        opts.max_tokens
    );
    cache.clear();
    let mut sampler = Sampler::new(opts.sampling);
    let mut tokens = Vec::with_capacity(opts.max_tokens);
    let logits_of = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
    let t0 = Instant::now();
    let input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let mut logits = logits_of(model.forward(&input, cache, None, LogitsMode::Last)?)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut decode_steps = 0;
    let mut stopped = StopReason::MaxTokens;
    while tokens.len() < opts.max_tokens {
        let next = sampler.pick(&logits)?;
        if Some(next) == opts.stop {
            stopped = StopReason::Stop;
            break;
        }
        tokens.push(next);
        if tokens.len() == opts.max_tokens {
            break;
        }
        let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        logits = logits_of(model.forward(&input, cache, None, LogitsMode::Last)?)?;
        decode_steps += 1;
    }
    Ok(Generation {
        prompt_tokens: prompt.len(),
        tokens,
        stopped,
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
        decode_steps,
        cached_positions: cache.seq_len(0),
        cache_bytes: cache.stored_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_largest() {
        let mut s = Sampler::new(Sampling::Greedy);
        assert_eq!(s.pick(&[0.1, 3.0, -1.0, 3.0]).unwrap(), 1);
        assert!(s.pick(&[0.1, f32::NAN]).is_err());
        assert!(s.pick(&[]).is_err());
        assert_eq!(Sampling::new(0.0, 0.5, 9).unwrap(), Sampling::Greedy);
        assert!(Sampling::new(-1.0, 1.0, 0).is_err());
        assert!(Sampling::new(f64::NAN, 1.0, 0).is_err());
        assert!(Sampling::new(1.0, 0.0, 0).is_err());
        assert!(Sampling::new(1.0, 1.5, 0).is_err());
    }

    /// Frequencies of `n` draws at temperature 1 from logits of probabilities 0.5, 0.3, 0.2.
    fn frequencies(top_p: f64, seed: u64, n: usize) -> [f64; 3] {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = Sampler::new(Sampling::new(1.0, top_p, seed).unwrap());
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[s.pick(&logits).unwrap() as usize] += 1;
        }
        counts.map(|c| c as f64 / n as f64)
    }

    /// The draws follow the softmax: each frequency within 5 standard deviations
    /// (`sqrt(p (1 - p) / n)`, 0.0035 at n = 20000) of its probability; top-p 0.7 keeps the
    /// two most likely tokens (0.5 + 0.3 >= 0.7), renormalized to 0.625 and 0.375.
    #[test]
    fn sampling_follows_the_distribution_and_the_nucleus() {
        let n = 20_000;
        let check = |f: [f64; 3], p: [f64; 3]| {
            for (f, p) in f.iter().zip(p) {
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                assert!((f - p).abs() <= 5.0 * sd + 1e-12, "{f} vs {p}");
            }
        };
        check(frequencies(1.0, 1, n), [0.5, 0.3, 0.2]);
        check(frequencies(0.7, 2, n), [0.625, 0.375, 0.0]);
        check(frequencies(0.4, 3, n), [1.0, 0.0, 0.0]);
        // Temperature: logits halved at temperature 0.5 are the same distribution.
        let logits = [0.5f32.ln() / 2.0, 0.3f32.ln() / 2.0, 0.2f32.ln() / 2.0];
        let mut s = Sampler::new(Sampling::new(0.5, 1.0, 4).unwrap());
        let mut c = [0usize; 3];
        for _ in 0..n {
            c[s.pick(&logits).unwrap() as usize] += 1;
        }
        check(c.map(|c| c as f64 / n as f64), [0.5, 0.3, 0.2]);
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(Sampling::new(0.8, 0.9, seed).unwrap());
            (0..100)
                .map(|_| s.pick(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn first_difference_of_sequences() {
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
        assert_eq!(first_difference(&[], &[]), None);
    }
}
