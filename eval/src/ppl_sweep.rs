//! Perplexity with compressed caches: cache settings (key code, value code), the standard sweep,
//! and the result table.

use crate::codes::{best_code, scalar_code, CodeSpec};
use crate::fibquant_cache::FibQuantCache;
use crate::kv_cache::{F32Cache, KvCache};
use crate::perplexity::PplReport;
use anyhow::Result;

/// A cache setting: how keys and how values are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Short name for tables.
    pub name: String,
    /// Key code.
    pub key: CodeSpec,
    /// Value code.
    pub value: CodeSpec,
}

impl Setting {
    /// Builds the cache: [`F32Cache`] when both sides are uncompressed, else a [`FibQuantCache`]
    /// whose codecs use rotation seed `seed`.
    pub fn cache(&self, n_layers: usize, dim: usize, seed: u64) -> Result<Box<dyn KvCache>> {
        if self.key == CodeSpec::None && self.value == CodeSpec::None {
            return Ok(Box::new(F32Cache::new(n_layers)));
        }
        Ok(Box::new(FibQuantCache::new(
            n_layers,
            self.key.codec(dim, seed)?,
            self.value.codec(dim, seed)?,
        )))
    }

    /// Honest bytes per token per layer: `n_kv * (key vector bytes + value vector bytes)`, with
    /// slot bytes (fp16 norm included) for a compressed side and fp16 (`2 dim`) for an
    /// uncompressed one.
    pub fn bytes_per_token_layer(&self, n_kv: usize, dim: usize) -> Result<usize> {
        Ok(n_kv * (self.key.vector_bytes(dim)? + self.value.vector_bytes(dim)?))
    }

    /// Nominal compression against fp16, `16 / b` with the mean rate of the two sides (norms not
    /// counted: the paper's accounting).
    pub fn nominal_compression(&self) -> f64 {
        32.0 / (self.key.rate_bits() + self.value.rate_bits())
    }
}

/// The sweep: uncompressed; then for b = 4, 3, 2, 1, 0.5 the best vector code (k >= 2) at b and
/// the scalar k = 1 code where it exists, keys and values at the same setting.
pub fn sweep_settings(dim: usize) -> Result<Vec<Setting>> {
    let mut v = vec![Setting {
        name: "fp16/f32 (uncompressed)".into(),
        key: CodeSpec::None,
        value: CodeSpec::None,
    }];
    for b in [4.0, 3.0, 2.0, 1.0, 0.5] {
        let c = best_code(dim, b, true)?;
        v.push(Setting {
            name: format!("b={b} vector"),
            key: c,
            value: c,
        });
        if let Some(c) = scalar_code(dim, b) {
            v.push(Setting {
                name: format!("b={b} scalar"),
                key: c,
                value: c,
            });
        }
    }
    Ok(v)
}

/// One row of the perplexity table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepRow {
    /// Setting name.
    pub setting: String,
    /// Key code (`KxN` or `none`).
    pub key_code: String,
    /// Value code.
    pub value_code: String,
    /// Honest bytes per token per layer (see [`Setting::bytes_per_token_layer`]).
    pub bytes_per_token_layer: usize,
    /// fp16 bytes over honest bytes.
    pub compression_vs_fp16: f64,
    /// `16 / b` (norms not counted).
    pub nominal_compression: f64,
    /// Bytes the cache actually held after the last window (all layers; f32 for an uncompressed side).
    pub stored_bytes_last_window: usize,
    /// Perplexity over every scored token.
    pub ppl: f64,
    /// `ppl - ppl(uncompressed)` (NaN when no uncompressed run is in the table).
    pub delta_ppl: f64,
    /// Per-window perplexities.
    pub window_ppl: Vec<f64>,
    /// Wall-clock seconds of this setting.
    pub seconds: f64,
}

impl SweepRow {
    /// Builds a row from a setting and its report.
    pub fn new(s: &Setting, n_kv: usize, dim: usize, report: &PplReport) -> Result<Self> {
        let bytes = s.bytes_per_token_layer(n_kv, dim)?;
        Ok(Self {
            setting: s.name.clone(),
            key_code: s.key.to_string(),
            value_code: s.value.to_string(),
            bytes_per_token_layer: bytes,
            compression_vs_fp16: (n_kv * 2 * 2 * dim) as f64 / bytes as f64,
            nominal_compression: s.nominal_compression(),
            stored_bytes_last_window: report.windows.last().map_or(0, |w| w.cache_bytes),
            ppl: report.ppl,
            delta_ppl: f64::NAN,
            window_ppl: report.windows.iter().map(|w| w.ppl).collect(),
            seconds: report.seconds,
        })
    }
}

/// Fills `delta_ppl` against the first row with both sides uncompressed.
pub fn fill_deltas(rows: &mut [SweepRow]) {
    if let Some(base) = rows
        .iter()
        .find(|r| r.key_code == "none" && r.value_code == "none")
        .map(|r| r.ppl)
    {
        rows.iter_mut().for_each(|r| r.delta_ppl = r.ppl - base);
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "| setting | K code | V code | bytes/token/layer | compression (honest) | 16/b | perplexity | delta | seconds |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2}x | {:.1}x | {:.4} | {} | {:.1} |\n",
            r.setting,
            r.key_code,
            r.value_code,
            r.bytes_per_token_layer,
            r.compression_vs_fp16,
            r.nominal_compression,
            r.ppl,
            if r.delta_ppl.is_nan() {
                "n/a".to_string()
            } else {
                format!("{:+.4}", r.delta_ppl)
            },
            r.seconds
        ));
    }
    s
}
