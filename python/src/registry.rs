//! `fibquant.RegistryEntry`, `registry_entries`, `best_for_rate`: the embedded codebooks.

use crate::errors::IntoPy;
use fibquant::{registry, RegistryEntry};
use pyo3::prelude::*;

/// One embedded rate point of the registry (what `fibquant-gen list` shows), without loading
/// its codebook.
#[pyclass(frozen, module = "fibquant", name = "RegistryEntry")]
pub(crate) struct PyRegistryEntry {
    inner: RegistryEntry,
}

#[pymethods]
impl PyRegistryEntry {
    /// File name in the runtime's `codebooks/`.
    #[getter]
    fn file(&self) -> &'static str {
        self.inner.file
    }
    /// Head dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim
    }
    /// Block size.
    #[getter]
    fn k(&self) -> usize {
        self.inner.k
    }
    /// Number of codewords.
    #[getter]
    fn n(&self) -> usize {
        self.inner.n
    }
    /// Rate in bits per coordinate, `log2(n) / k`.
    #[getter]
    fn rate_bits(&self) -> f64 {
        self.inner.rate_bits
    }
    /// Stored bits per coordinate, `ceil(log2 n) / k` (what a slot spends on indices).
    #[getter]
    fn stored_bits(&self) -> f64 {
        self.inner.stored_bits()
    }
    /// Normalized MSE, `E ||x - x_hat||^2 / ||x||^2`, measured on held-out samples of the
    /// source law when the codebook was generated.
    #[getter]
    fn mse(&self) -> f64 {
        self.inner.mse
    }
    /// sha256 of the codebook file (verified at build time).
    #[getter]
    fn sha256(&self) -> &'static str {
        self.inner.sha256
    }
    /// Size of the compressed codebook file in bytes.
    #[getter]
    fn file_bytes(&self) -> usize {
        self.inner.file_bytes
    }
    fn __repr__(&self) -> String {
        let e = &self.inner;
        format!(
            "RegistryEntry(dim={}, k={}, n={}, rate_bits={:.4}, mse={})",
            e.dim, e.k, e.n, e.rate_bits, e.mse
        )
    }
}

/// Every embedded rate point, in manifest order (this build embeds every code of every head
/// dim of the registry).
#[pyfunction]
pub(crate) fn registry_entries() -> Vec<PyRegistryEntry> {
    registry::entries()
        .map(|inner| PyRegistryEntry { inner })
        .collect()
}

/// The preset for head dim `dim` at `rate` stored bits per coordinate: the lowest-MSE embedded
/// code of exactly that many stored bits (at 2 bits the E8 code, `n = 64497`).
#[pyfunction]
pub(crate) fn best_for_rate(dim: usize, rate: f64) -> PyResult<PyRegistryEntry> {
    Ok(PyRegistryEntry {
        inner: registry::best_for_rate(dim, rate).py()?,
    })
}
