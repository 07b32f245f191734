//! Naming and choosing FibQuant codes for one side (keys or values) of the cache.
//!
//! A code is written `KxN` (block size `k`, `N` codewords, for example `4x256`: 2 bits per
//! coordinate), or `none` for an uncompressed side. Rates pick a code from the runtime's embedded
//! registry ([`best_code`]).

use anyhow::{bail, Context, Result};
use fibquant::registry::{self, RegistryEntry};
use fibquant::{Codec, CodecConfig};
use std::fmt;
use std::str::FromStr;

/// How one side (keys or values) of the cache is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSpec {
    /// Uncompressed (kept as f32 in memory; accounted as fp16, `2 d` bytes per vector, in tables).
    None,
    /// A FibQuant code: blocks of `k` coordinates, `n` codewords.
    Code {
        /// Block size.
        k: usize,
        /// Codebook size.
        n: usize,
    },
    /// llama.cpp's `q8_0` blocks (baseline, [`crate::qblock_cache`]).
    Q8_0,
    /// llama.cpp's `q4_0` blocks (baseline, [`crate::qblock_cache`]).
    Q4_0,
}

impl FromStr for CodeSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("f32") {
            return Ok(CodeSpec::None);
        }
        if s.eq_ignore_ascii_case("q8_0") {
            return Ok(CodeSpec::Q8_0);
        }
        if s.eq_ignore_ascii_case("q4_0") {
            return Ok(CodeSpec::Q4_0);
        }
        let (k, n) = s
            .split_once(['x', 'X'])
            .with_context(|| format!("code {s:?}: expected KxN (for example 4x256) or none"))?;
        let k = k.parse().with_context(|| format!("code {s:?}: bad k"))?;
        let n = n.parse().with_context(|| format!("code {s:?}: bad N"))?;
        Ok(CodeSpec::Code { k, n })
    }
}

impl fmt::Display for CodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeSpec::None => f.write_str("none"),
            CodeSpec::Code { k, n } => write!(f, "{k}x{n}"),
            CodeSpec::Q8_0 => f.write_str("q8_0"),
            CodeSpec::Q4_0 => f.write_str("q4_0"),
        }
    }
}

impl CodeSpec {
    /// The llama.cpp block format, for [`CodeSpec::Q8_0`] and [`CodeSpec::Q4_0`].
    pub fn block_format(&self) -> Option<crate::qblock_cache::BlockFormat> {
        use crate::qblock_cache::BlockFormat;
        match self {
            CodeSpec::Q8_0 => Some(BlockFormat::Q8_0),
            CodeSpec::Q4_0 => Some(BlockFormat::Q4_0),
            _ => None,
        }
    }

    /// The runtime cache's code for this side ([`CodeSpec::None`]: fp16); `None` for the
    /// llama.cpp block formats.
    pub fn side_code(&self) -> Option<fibquant::SideCode> {
        match *self {
            CodeSpec::None => Some(fibquant::SideCode::Fp16),
            CodeSpec::Code { k, n } => Some(fibquant::SideCode::Code { k, n }),
            CodeSpec::Q8_0 | CodeSpec::Q4_0 => None,
        }
    }

    /// The code of a registry entry.
    pub fn of(e: &RegistryEntry) -> Self {
        CodeSpec::Code { k: e.k, n: e.n }
    }

    /// Nominal rate `log2(N) / k` bits per coordinate (16 for [`CodeSpec::None`], the fp16 reference).
    pub fn rate_bits(&self) -> f64 {
        match self {
            CodeSpec::None => 16.0,
            CodeSpec::Code { k, n } => (*n as f64).log2() / *k as f64,
            CodeSpec::Q8_0 => 8.5,
            CodeSpec::Q4_0 => 4.5,
        }
    }

    /// Builds the codec for head dim `dim` with rotation seed `seed` (`None` for an uncompressed
    /// side). Fails when the registry has no codebook for `(dim, k, n)`.
    pub fn codec(&self, dim: usize, seed: u64) -> Result<Option<Codec>> {
        match *self {
            CodeSpec::None => Ok(None),
            CodeSpec::Q8_0 | CodeSpec::Q4_0 => {
                bail!("{self} is a llama.cpp block format, not a FibQuant code")
            }
            CodeSpec::Code { k, n } => Codec::new(CodecConfig::new(dim, k, n).with_seed(seed))
                .map(Some)
                .map_err(|e| anyhow::anyhow!("code {self} at head dim {dim}: {e}")),
        }
    }

    /// Bytes one vector of dim `dim` takes: the codec's slot (fp16 norm included) or, for
    /// [`CodeSpec::None`], the fp16 reference `2 dim`.
    pub fn vector_bytes(&self, dim: usize) -> Result<usize> {
        if let Some(f) = self.block_format() {
            return Ok(dim / crate::qblock_cache::BLOCK * f.block_bytes());
        }
        Ok(match self.codec(dim, fibquant::codec::DEFAULT_SEED)? {
            None => 2 * dim,
            Some(c) => c.slot_bytes(),
        })
    }
}

/// Every embedded rate point for head dim `dim`, sorted by rate (highest first), then `k`.
pub fn rate_points(dim: usize) -> Vec<RegistryEntry> {
    let mut v: Vec<_> = registry::entries().filter(|e| e.dim == dim).collect();
    v.sort_by(|a, b| b.rate_bits.total_cmp(&a.rate_bits).then(a.k.cmp(&b.k)));
    v
}

/// The lowest-MSE embedded code for head dim `dim` that stores exactly `rate_bits` bits per
/// coordinate; with `vector_only`, among block sizes `k >= 2` only (without, this is the
/// runtime's preset).
pub fn best_code(dim: usize, rate_bits: f64, vector_only: bool) -> Result<CodeSpec> {
    let best = registry::entries()
        .filter(|e| e.dim == dim && (e.stored_bits() - rate_bits).abs() < 1e-9)
        .filter(|e| !vector_only || e.k >= 2)
        .min_by(|a, b| a.mse.total_cmp(&b.mse));
    match best {
        Some(e) => Ok(CodeSpec::of(&e)),
        None => bail!(
            "no embedded {}codebook for head dim {dim} at {rate_bits} bits per coordinate",
            if vector_only { "vector (k >= 2) " } else { "" }
        ),
    }
}

/// The scalar (`k = 1`, TurboQuant's Lloyd-Max) code at `rate_bits`, if embedded for `dim`.
pub fn scalar_code(dim: usize, rate_bits: f64) -> Option<CodeSpec> {
    registry::entries()
        .find(|e| e.dim == dim && e.k == 1 && (e.rate_bits - rate_bits).abs() < 1e-9)
        .map(|e| CodeSpec::of(&e))
}

/// Resolves a side's command-line settings: an explicit code, else the preset at a rate, else
/// uncompressed.
pub fn resolve(dim: usize, code: Option<CodeSpec>, rate: Option<f64>) -> Result<CodeSpec> {
    match (code, rate) {
        (Some(_), Some(_)) => bail!("give either a code or a rate for a side, not both"),
        (Some(c), None) => Ok(c),
        (None, Some(r)) => best_code(dim, r, false),
        (None, None) => Ok(CodeSpec::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            "4x256".parse::<CodeSpec>().unwrap(),
            CodeSpec::Code { k: 4, n: 256 }
        );
        assert_eq!("none".parse::<CodeSpec>().unwrap(), CodeSpec::None);
        assert!("4-256".parse::<CodeSpec>().is_err());
        assert_eq!(CodeSpec::Code { k: 2, n: 64 }.to_string(), "2x64");
        assert_eq!(CodeSpec::Code { k: 4, n: 256 }.rate_bits(), 2.0);
    }

    #[test]
    fn presets_exist_at_d64() {
        let b4 = best_code(64, 4.0, true).unwrap();
        assert!(matches!(b4, CodeSpec::Code { k, .. } if k >= 2));
        assert_eq!(scalar_code(64, 2.0), Some(CodeSpec::Code { k: 1, n: 4 }));
        assert_eq!(scalar_code(64, 0.5), None);
        // 64 coordinates at 2 bits = 16 bytes of indices + 2 bytes of fp16 norm.
        assert_eq!(
            CodeSpec::Code { k: 4, n: 256 }.vector_bytes(64).unwrap(),
            18
        );
        assert_eq!(CodeSpec::None.vector_bytes(64).unwrap(), 128);
    }
}
