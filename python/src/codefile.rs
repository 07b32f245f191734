//! `fibquant.CodeFile`: the code files `fibquant-gen encode` writes and `decode` reads.

use crate::arrays::{expect_dim, filled, read_u8};
use crate::codec::PyCodec;
use crate::errors::IntoPy;
use fibquant::{CodeFile, CodebookTag, Integrity, NormFormat, RotationKind};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A parsed code file (format version 2 written; versions 1 and 2 read): a header naming the
/// codec, checksums of header and slots (verified on every parse: any changed byte is refused
/// with a `CorruptDataError`), and the slots. Only files encoded with an embedded codebook are
/// handled here.
#[pyclass(frozen, module = "fibquant", name = "CodeFile")]
pub(crate) struct PyCodeFile {
    inner: CodeFile,
}

#[pymethods]
impl PyCodeFile {
    /// Parses and checks the bytes of a code file.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let inner = py.detach(|| CodeFile::parse(data)).py()?;
        Ok(PyCodeFile { inner })
    }

    /// Serializes slots (uint8, `(rows, slot_bytes)`) of `codec` as a version-2 code file, tagged
    /// with the embedded codebook of the codec's `(dim, k, n)`.
    #[staticmethod]
    fn to_bytes<'py>(
        py: Python<'py>,
        codec: &PyCodec,
        slots: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let slots = read_u8(slots, "slots", 2)?;
        let sb = codec.inner.slot_bytes();
        expect_dim("slots", &slots.shape, 1, sb, &format!("(rows, {sb})"))?;
        let c = codec.inner.config();
        let tag = CodebookTag::embedded(c.dim, c.k, c.n).py()?;
        let data = slots.data();
        let bytes = py
            .detach(|| CodeFile::to_bytes(&codec.inner, data, tag))
            .py()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// File version (1 or 2).
    #[getter]
    fn version(&self) -> u32 {
        self.inner.header.version
    }
    /// Head dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.header.dim
    }
    /// Block size.
    #[getter]
    fn k(&self) -> usize {
        self.inner.header.k
    }
    /// Codebook size.
    #[getter]
    fn n(&self) -> usize {
        self.inner.header.n
    }
    /// Number of rows (slots).
    #[getter]
    fn rows(&self) -> usize {
        self.inner.header.rows
    }
    /// Rotation seed.
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.header.seed
    }
    /// Rotation: "hadamard(rounds)" or "haar".
    #[getter]
    fn rotation(&self) -> String {
        match self.inner.header.rotation {
            RotationKind::Auto => "auto".into(),
            RotationKind::Haar => "haar".into(),
            RotationKind::Hadamard { rounds } => format!("hadamard({rounds})"),
        }
    }
    /// Norm format, "f16" or "f32".
    #[getter]
    fn norm(&self) -> &'static str {
        match self.inner.header.norm {
            NormFormat::F16 => "f16",
            NormFormat::F32 => "f32",
        }
    }
    /// The codebook tag (first 8 bytes of the codebook file's sha256) as 16 hex digits.
    #[getter]
    fn codebook_tag(&self) -> String {
        self.inner.header.codebook.hex()
    }
    /// Whether both checksums were verified (version 2); version-1 files are unchecked.
    #[getter]
    fn checked(&self) -> bool {
        self.inner.integrity == Integrity::Checked
    }

    /// The slots, uint8 `(rows, slot_bytes)` (a copy; `(0, 0)` for a file of no row).
    fn slots<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        let rows = self.inner.header.rows;
        let sb = self.inner.slots.len().checked_div(rows).unwrap_or(0);
        let slots = &self.inner.slots;
        filled(py, &[rows, sb], |o| {
            o.copy_from_slice(slots);
            Ok(())
        })
    }

    /// The codec that decodes the slots, on the embedded codebook the header names (its tag
    /// must match).
    fn codec(&self) -> PyResult<PyCodec> {
        Ok(PyCodec {
            inner: self.inner.codec().py()?,
        })
    }

    /// Decodes every slot: float32 `(rows, dim)`.
    fn decode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let codec = self.inner.codec().py()?;
        let slots = &self.inner.slots;
        filled(py, &[self.inner.header.rows, self.inner.header.dim], |o| {
            codec.decode_batch(slots, o)
        })
    }

    fn __repr__(&self) -> String {
        let h = &self.inner.header;
        format!(
            "CodeFile(version={}, dim={}, k={}, n={}, rows={})",
            h.version, h.dim, h.k, h.n, h.rows
        )
    }
}
