//! Perplexity with compressed caches: cache settings (key code, value code, policy), the two
//! standard sweeps, and the result table.

use crate::codes::{best_code, scalar_code, CodeSpec};
use crate::kv_cache::{F32Cache, KvCache};
use crate::models::attention::Heads;
use crate::perplexity::PplReport;
use crate::qblock_cache::QBlockCache;
use crate::runtime_cache::RuntimeCache;
use anyhow::{bail, Result};
use fibquant::{CachePolicy, SideCode};

/// A cache setting: how keys and values are stored, and by which policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Short name for tables.
    pub name: String,
    /// Key code.
    pub key: CodeSpec,
    /// Value code.
    pub value: CodeSpec,
    /// The runtime cache's transforms and exact tokens (its codes come from `key` and `value`).
    pub policy: CachePolicy,
    /// The first and the last this many layers keep fp16 keys and values.
    pub boundary_layers: usize,
    /// llama.cpp block settings: rotate each row by a Hadamard transform first.
    pub hadamard: bool,
}

impl Setting {
    /// The plain codec (every token encoded, no transform, no exact token).
    pub fn plain(name: impl Into<String>, key: CodeSpec, value: CodeSpec) -> Self {
        Setting {
            name: name.into(),
            key,
            value,
            policy: CachePolicy::plain(SideCode::Fp16, SideCode::Fp16),
            boundary_layers: 0,
            hadamard: false,
        }
    }

    /// The runtime's default policy ([`CachePolicy::preset`]) with these codes.
    pub fn default_policy(name: impl Into<String>, key: CodeSpec, value: CodeSpec) -> Self {
        Setting {
            policy: CachePolicy::default(),
            ..Setting::plain(name, key, value)
        }
    }

    /// llama.cpp's block formats, with or without the Hadamard rotation.
    pub fn llama_blocks(key: CodeSpec, value: CodeSpec, hadamard: bool) -> Self {
        let name = format!(
            "llama.cpp K {key} / V {value}{}",
            if hadamard { " + Hadamard" } else { "" }
        );
        Setting {
            hadamard,
            ..Setting::plain(name, key, value)
        }
    }

    /// Whether the rotation seed changes this setting (FibQuant codes on some side).
    pub fn uses_seed(&self) -> bool {
        let coded = |c: &CodeSpec| matches!(c, CodeSpec::Code { .. });
        coded(&self.key) || coded(&self.value)
    }

    /// Builds the cache: [`F32Cache`] when both sides are uncompressed with no policy to apply,
    /// a [`QBlockCache`] for llama.cpp's formats, else a [`RuntimeCache`] with codecs of
    /// rotation seed `seed`.
    pub fn cache(&self, n_layers: usize, heads: Heads, seed: u64) -> Result<Box<dyn KvCache>> {
        if self.key == CodeSpec::None && self.value == CodeSpec::None && self.boundary_layers == 0 {
            return Ok(Box::new(F32Cache::new(n_layers)));
        }
        self.stored_cache(n_layers, heads, seed)
    }

    /// Builds the cache as [`cache`](Self::cache) does, except that a setting with both sides
    /// uncompressed also gets a [`RuntimeCache`] (fp16 keys and values) instead of the
    /// [`F32Cache`].
    pub fn stored_cache(
        &self,
        n_layers: usize,
        heads: Heads,
        seed: u64,
    ) -> Result<Box<dyn KvCache>> {
        match (self.key.block_format(), self.value.block_format()) {
            (Some(k), Some(v)) => {
                return Ok(Box::new(QBlockCache::new(n_layers, k, v, self.hadamard)));
            }
            (None, None) => {}
            _ => bail!(
                "{}: llama.cpp block formats go on both sides or neither",
                self.name
            ),
        }
        let (Some(k), Some(v)) = (self.key.side_code(), self.value.side_code()) else {
            bail!(
                "{}: no runtime code for {} / {}",
                self.name,
                self.key,
                self.value
            );
        };
        let mut policy = self.policy.clone().with_codes(k, v).with_seed(seed);
        let b = self.boundary_layers.min(n_layers);
        for layer in (0..b).chain(n_layers.saturating_sub(b)..n_layers) {
            policy = policy.with_layer(layer, SideCode::Fp16, SideCode::Fp16);
        }
        Ok(Box::new(
            RuntimeCache::new(n_layers, heads, policy)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.name))?,
        ))
    }

    /// Nominal compression against fp16, `16 / b` with the mean rate of the two sides (norms,
    /// exact tokens and boundary layers not counted: the paper's accounting).
    pub fn nominal_compression(&self) -> f64 {
        32.0 / (self.key.rate_bits() + self.value.rate_bits())
    }
}

/// The plain sweep (the older table): uncompressed; then for b = 4, 3, 2, 1, 0.5 the best vector
/// code (k >= 2) at b and the scalar k = 1 code where it exists, keys and values alike, with no
/// transform and no exact token.
pub fn sweep_settings(dim: usize) -> Result<Vec<Setting>> {
    let mut v = vec![Setting::plain(
        "fp16/f32 (uncompressed)",
        CodeSpec::None,
        CodeSpec::None,
    )];
    for b in [4.0, 3.0, 2.0, 1.0, 0.5] {
        let c = best_code(dim, b, true)?;
        v.push(Setting::plain(format!("b={b} vector"), c, c));
        if let Some(c) = scalar_code(dim, b) {
            v.push(Setting::plain(format!("b={b} scalar"), c, c));
        }
    }
    Ok(v)
}

/// The cache sweep: uncompressed; llama.cpp's q8_0 and q4_0 blocks with and without the
/// Hadamard rotation; for b = 4, 3, 2, 1 the best vector code plain and with the default policy,
/// and the scalar code with the default policy; the default policy plus a 64-position fp16
/// window at b = 2; keys a bit above values (b = 4 / 3).
pub fn cache_sweep_settings(dim: usize) -> Result<Vec<Setting>> {
    let (q8, q4) = (CodeSpec::Q8_0, CodeSpec::Q4_0);
    let mut v = vec![
        Setting::plain("fp16/f32 (uncompressed)", CodeSpec::None, CodeSpec::None),
        Setting::llama_blocks(q8, q8, true),
        Setting::llama_blocks(q8, q4, true),
        Setting::llama_blocks(q4, q4, true),
        Setting::llama_blocks(q4, q4, false),
    ];
    for b in [4.0, 3.0, 2.0, 1.0] {
        let c = best_code(dim, b, true)?;
        v.push(Setting::plain(format!("b={b} vector, plain"), c, c));
        v.push(Setting::default_policy(
            format!("b={b} vector, policy"),
            c,
            c,
        ));
        if let Some(s) = scalar_code(dim, b) {
            v.push(Setting::default_policy(
                format!("b={b} scalar, policy"),
                s,
                s,
            ));
        }
        if b == 2.0 {
            let mut w = Setting::default_policy("b=2 vector, policy + window 64", c, c);
            w.policy = w.policy.with_window(64);
            v.push(w);
        }
    }
    let (k, v_) = (best_code(dim, 4.0, true)?, best_code(dim, 3.0, true)?);
    v.push(Setting::default_policy("K b=4 / V b=3, policy", k, v_));
    Ok(v)
}

/// One row of the perplexity table: a setting over one or more rotation seeds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepRow {
    /// Setting name.
    pub setting: String,
    /// Key code (`KxN`, `none`, `q8_0`, `q4_0`).
    pub key_code: String,
    /// Value code.
    pub value_code: String,
    /// Bits per stored value, every byte the cache held counted (mean over seeds and windows).
    pub effective_bits: f64,
    /// `16 / b` (norms and exact parts not counted).
    pub nominal_compression: f64,
    /// The rotation seeds run.
    pub seeds: Vec<u64>,
    /// Perplexity per seed.
    pub ppl_per_seed: Vec<f64>,
    /// Mean perplexity over the seeds.
    pub ppl: f64,
    /// Sample standard deviation of the perplexity over the seeds (0 for one seed).
    pub ppl_sd: f64,
    /// `ppl / ppl(uncompressed) - 1` (NaN when no uncompressed run is in the table).
    pub delta_rel: f64,
    /// Mean KL divergence from the uncompressed run (mean over seeds; NaN without one).
    pub kl_mean: f64,
    /// 99th percentile of the per-token KL divergence (mean over seeds).
    pub kl_p99: f64,
    /// Scored tokens per second (forward passes and scoring, mean over seeds).
    pub tokens_per_second: f64,
    /// Wall-clock seconds of this setting (all seeds).
    pub seconds: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

impl SweepRow {
    /// Builds a row from a setting and its reports, one per seed (at least one).
    pub fn new(s: &Setting, seeds: &[u64], reports: &[PplReport]) -> Self {
        let ppl: Vec<f64> = reports.iter().map(|r| r.ppl).collect();
        let m = mean(&ppl);
        let sd = if ppl.len() > 1 {
            (ppl.iter().map(|p| (p - m).powi(2)).sum::<f64>() / (ppl.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        let opt = |f: fn(&PplReport) -> Option<f64>| {
            let v: Vec<f64> = reports.iter().filter_map(f).collect();
            if v.is_empty() {
                f64::NAN
            } else {
                mean(&v)
            }
        };
        Self {
            setting: s.name.clone(),
            key_code: s.key.to_string(),
            value_code: s.value.to_string(),
            effective_bits: mean(&reports.iter().map(|r| r.effective_bits).collect::<Vec<_>>()),
            nominal_compression: s.nominal_compression(),
            seeds: seeds.to_vec(),
            ppl_per_seed: ppl,
            ppl: m,
            ppl_sd: sd,
            delta_rel: f64::NAN,
            kl_mean: opt(|r| r.kl_mean),
            kl_p99: opt(|r| r.kl_p99),
            tokens_per_second: mean(
                &reports
                    .iter()
                    .map(|r| r.n_scored as f64 / r.seconds)
                    .collect::<Vec<_>>(),
            ),
            seconds: reports.iter().map(|r| r.seconds).sum(),
        }
    }
}

/// Fills `delta_rel` against the first row with both sides uncompressed.
pub fn fill_deltas(rows: &mut [SweepRow]) {
    if let Some(base) = rows
        .iter()
        .find(|r| r.key_code == "none" && r.value_code == "none")
        .map(|r| r.ppl)
    {
        rows.iter_mut()
            .for_each(|r| r.delta_rel = r.ppl / base - 1.0);
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "| setting | K code | V code | effective bits | 16/b | perplexity (mean +- sd) | seeds | delta | mean KL | KL p99 | tokens/s |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let num = |x: f64, p: usize| {
        if x.is_nan() {
            "n/a".to_string()
        } else {
            format!("{x:.p$}")
        }
    };
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.1}x | {:.3} +- {:.3} | {} | {} | {} | {} | {:.0} |\n",
            r.setting,
            r.key_code,
            r.value_code,
            r.effective_bits,
            r.nominal_compression,
            r.ppl,
            r.ppl_sd,
            r.seeds.len(),
            if r.delta_rel.is_nan() {
                "n/a".to_string()
            } else {
                format!("{:+.2}%", 100.0 * r.delta_rel)
            },
            num(r.kl_mean, 4),
            num(r.kl_p99, 3),
            r.tokens_per_second
        ));
    }
    s
}
