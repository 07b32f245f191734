//! The codebooks embedded in the crate at build time, looked up by `(dim, k, n)`.
//!
//! Which rate points a build embeds is chosen by cargo features (`presets` of head dims 64 and
//! 128 by default, `all` for every code; see [`PRESET_RATES`]). The build script verified each file's sha256 against `manifest.toml` (a mismatch fails the
//! build); on first use a file is decompressed, parsed and checked to hold the `(dim, k, n)` the
//! manifest says, then cached for the life of the process.

use crate::codebook::Codebook;
use crate::error::{Error, Result};
use std::sync::{Arc, OnceLock};

/// One embedded codebook file.
#[derive(Debug)]
pub(crate) struct EmbeddedFile {
    pub file: &'static str,
    pub dim: usize,
    pub k: usize,
    pub n: usize,
    pub mse: f64,
    pub sha256: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

mod selection;
pub use selection::PRESET_RATES;

/// What the registry knows of one rate point, without loading it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegistryEntry {
    /// File name in `codebooks/`.
    pub file: &'static str,
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Number of codewords.
    pub n: usize,
    /// Rate in bits per coordinate, `log2(n) / k`.
    pub rate_bits: f64,
    /// Normalized MSE measured on held-out source samples when the file was generated.
    pub mse: f64,
    /// sha256 of the file (verified at build time).
    pub sha256: &'static str,
    /// Size of the compressed file in bytes.
    pub file_bytes: usize,
}

impl RegistryEntry {
    /// Stored bits per coordinate: the index bits of a block over `k`, `ceil(log2 n) / k`. Equal
    /// to [`rate_bits`](Self::rate_bits) when `n` is a power of two; the E8 code (`k = 8`,
    /// `n = 64497`) stores 16 bits per 8 coordinates, 2 bits, for 1.997 bits of information.
    pub fn stored_bits(&self) -> f64 {
        selection::stored_bits(self.k, self.n)
    }
}

/// Every embedded rate point, in manifest order.
pub fn entries() -> impl Iterator<Item = RegistryEntry> {
    EMBEDDED.iter().map(|e| RegistryEntry {
        file: e.file,
        dim: e.dim,
        k: e.k,
        n: e.n,
        rate_bits: (e.n as f64).log2() / e.k as f64,
        mse: e.mse,
        sha256: e.sha256,
        file_bytes: e.bytes.len(),
    })
}

fn cells() -> &'static [OnceLock<Result<Arc<Codebook>>>] {
    static CELLS: OnceLock<Vec<OnceLock<Result<Arc<Codebook>>>>> = OnceLock::new();
    CELLS.get_or_init(|| EMBEDDED.iter().map(|_| OnceLock::new()).collect())
}

/// The embedded codebook for `(dim, k, n)`, loaded and checked on first use.
pub fn codebook(dim: usize, k: usize, n: usize) -> Result<Arc<Codebook>> {
    crate::codebook::check_shape(dim, k, n)?;
    let pos = EMBEDDED
        .iter()
        .position(|e| e.dim == dim && e.k == k && e.n == n)
        .ok_or(Error::UnknownRate { dim, k, n })?;
    cells()[pos].get_or_init(|| load(&EMBEDDED[pos])).clone()
}

fn load(e: &EmbeddedFile) -> Result<Arc<Codebook>> {
    // Name the file in the message, once.
    let named = |err: Error| match err {
        Error::CorruptCodebook(m) => Error::CorruptCodebook(format!("{}: {m}", e.file)),
        other => Error::CorruptCodebook(format!("{}: {other}", e.file)),
    };
    let cb = Codebook::from_file_bytes(e.bytes).map_err(named)?;
    cb.expect_shape(e.dim, e.k, e.n).map_err(named)?;
    Ok(Arc::new(cb))
}

/// The lowest-MSE embedded rate point for `dim` that stores exactly `rate_bits` bits per
/// coordinate ([`RegistryEntry::stored_bits`]: codes that cost the same bytes compete, so at 2
/// bits the E8 code, `N = 64497`, is among them).
pub fn best_for_rate(dim: usize, rate_bits: f64) -> Result<RegistryEntry> {
    let points: Vec<_> = EMBEDDED.iter().map(|e| (e.dim, e.k, e.n, e.mse)).collect();
    selection::preset_position(&points, dim, rate_bits)
        .and_then(|i| entries().nth(i))
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "no embedded codebook for dim {dim} at {rate_bits} bits per coordinate (this \
                 build embeds the codes its cargo features select; `fibquant-gen list` lists \
                 the registry)"
            ))
        })
}
