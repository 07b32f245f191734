//! `manifest.toml`: one `[[codebook]]` table per rate point.
//!
//! The runtime's build script reads this file with a small line parser, so it must stay in the
//! form written here: `[[codebook]]` headers and `key = value` lines.

use crate::error::{Error, IoAction, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One rate point of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// File name in `codebooks/`.
    pub file: String,
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Codebook size.
    pub n: usize,
    /// `log2(n) / k`.
    pub rate_bits: f64,
    /// sha256 of the compressed file, hex.
    pub sha256: String,
    /// Construction seed, hex (`0x...`).
    pub seed: String,
    /// `scalar-lloyd-max`, `radial-angular-lloyd` or `e8-orbits`.
    pub construction: String,
    /// Training samples per codeword.
    pub samples_per_codeword: u32,
    /// Lloyd restarts.
    pub restarts: u32,
    /// Lloyd iterations (for k = 1: Lloyd-Max iterations to convergence).
    pub iterations: u32,
    /// Construction version (bumped whenever the bytes would change).
    pub construction_version: u32,
    /// Version of fibquant-gen that wrote the entry.
    pub generator_version: String,
    /// Which candidate was shipped.
    pub selected: String,
    /// Test-set size (blocks) of the measured MSEs.
    pub test_blocks: usize,
    /// Normalized MSE `E ||u - u_hat||^2` of the shipped codebook on the test set.
    pub mse: f64,
    /// Same for the initial (unrefined) codebook.
    pub mse_initial: f64,
    /// Same for the scalar product code at this rate (k >= 2 with `n = (2^b)^k`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mse_scalar_product: Option<f64>,
    /// Exact MSE by numerical integration (k = 1).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mse_exact: Option<f64>,
    /// Wall-clock seconds the construction took.
    pub generation_seconds: f64,
}

impl Entry {
    /// Bytes per vector in a slot with an fp16 norm: `2 + ceil((d/k) * ceil(log2 N) / 8)`.
    pub fn slot_bytes_f16(&self) -> usize {
        2 + fibquant::util::pack::packed_bytes(
            self.dim / self.k,
            fibquant::util::pack::index_bits(self.n),
        )
    }
}

/// The registry file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Entries, sorted by (dim, k, n).
    #[serde(default)]
    pub codebook: Vec<Entry>,
}

impl Manifest {
    /// Reads a manifest; a missing file is an error, as are malformed TOML and an entry that
    /// [`Manifest::check`] refuses.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(IoAction::ReadManifest, path, e))?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text (`path` names it in errors) and checks every entry.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|source| Error::ManifestParse {
            path: path.to_path_buf(),
            source,
        })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Checks that every entry can describe a codebook, so that the commands reading it (slot
    /// sizes, file paths) never divide by zero or leave `codebooks/`: a plain `.fqcb.zst` file
    /// name, a rate point [`crate::construct::validate`] accepts, `rate_bits = log2(n) / k`,
    /// finite non-negative MSEs.
    pub fn check(&self, path: &Path) -> Result<()> {
        for (index, e) in self.codebook.iter().enumerate() {
            let invalid = |what: String| Error::ManifestInvalid {
                path: path.to_path_buf(),
                index,
                what,
            };
            let plain = !e.file.is_empty()
                && !e.file.contains(['/', '\\', '\0'])
                && !e.file.starts_with('.')
                && e.file.ends_with(".fqcb.zst");
            if !plain {
                return Err(invalid(format!(
                    "file {:?} is not a plain .fqcb.zst file name",
                    e.file
                )));
            }
            crate::construct::validate(e.dim, e.k, e.n)
                .map_err(|err| invalid(format!("{}: {err}", e.file)))?;
            let rate = (e.n as f64).log2() / e.k as f64;
            if (e.rate_bits - rate).abs().is_nan() || (e.rate_bits - rate).abs() > 1e-6 {
                return Err(invalid(format!(
                    "{}: rate_bits {} is not log2(n) / k = {rate}",
                    e.file, e.rate_bits
                )));
            }
            let mses = [
                Some(e.mse),
                Some(e.mse_initial),
                e.mse_scalar_product,
                e.mse_exact,
            ];
            if mses.iter().flatten().any(|m| !(m.is_finite() && *m >= 0.0)) {
                return Err(invalid(format!(
                    "{}: an MSE is negative or not finite",
                    e.file
                )));
            }
        }
        Ok(())
    }

    /// Writes the manifest atomically (temp file + rename), entries sorted.
    pub fn write(&mut self, path: &Path) -> Result<()> {
        self.codebook.sort_by_key(|e| (e.dim, e.k, e.n));
        let body = toml::to_string(self).map_err(Error::ManifestWrite)?;
        let text = format!(
            "# FibQuant codebook registry, written by fibquant-gen (do not edit by hand:\n\
             # `fibquant-gen regenerate` rebuilds, `fibquant-gen verify` checks).\n\
             # mse values are normalized MSE E||u - u_hat||^2 on test_blocks held-out source blocks.\n\n{body}"
        );
        crate::registry::write_atomic(path, text.as_bytes())
    }

    /// The entry for `(dim, k, n)`.
    pub fn find(&self, dim: usize, k: usize, n: usize) -> Option<&Entry> {
        self.codebook
            .iter()
            .find(|e| e.dim == dim && e.k == k && e.n == n)
    }

    /// Inserts or replaces the entry for its `(dim, k, n)`.
    pub fn upsert(&mut self, entry: Entry) {
        self.codebook
            .retain(|e| (e.dim, e.k, e.n) != (entry.dim, entry.k, entry.n));
        self.codebook.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository manifest's first entry, as text.
    fn one_entry() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/manifest.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("[[codebook]]").unwrap();
        let end = text[start + 1..]
            .find("[[codebook]]")
            .map_or(text.len(), |e| start + 1 + e);
        text[start..end].to_string()
    }

    #[test]
    fn invalid_entries_are_refused_and_byte_changes_never_panic() {
        let entry = one_entry();
        let path = Path::new("manifest.toml");
        let m = Manifest::parse(&entry, path).unwrap();
        assert_eq!(m.codebook.len(), 1);
        for (from, to, what) in [
            ("k = ", "k = 0 #", "positive"),
            ("file = \"", "file = \"../", "plain"),
            ("rate_bits = ", "rate_bits = 9 #", "rate_bits"),
            ("mse = ", "mse = nan #", "MSE"),
        ] {
            let bad = entry.replacen(from, to, 1);
            let err = Manifest::parse(&bad, path).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("entry 0"), "{to}: {err}");
        }
        // Every single-byte change of the entry to a few characters that matter in TOML: an
        // error or a manifest whose entries the commands can use (slot sizes, file names).
        let bytes = entry.as_bytes();
        for pos in 0..bytes.len() {
            for &v in b"\"=[]\n#0 9-.a\\" {
                if v == bytes[pos] {
                    continue;
                }
                let mut m = bytes.to_vec();
                m[pos] = v;
                let Ok(text) = std::str::from_utf8(&m) else {
                    continue;
                };
                let r = std::panic::catch_unwind(|| {
                    Manifest::parse(text, path)
                        .map(|m| m.codebook.iter().map(|e| e.slot_bytes_f16()).sum::<usize>())
                });
                assert!(r.is_ok(), "panic at byte {pos} = {:?}", v as char);
            }
        }
    }
}
