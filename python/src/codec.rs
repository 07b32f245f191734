//! `fibquant.Codec`: encode, decode and attend on codes for one `(d, k, N)`.

use crate::arrays::{expect_dim, filled, read_f32, read_u8};
use crate::errors::{IntoPy, InvalidConfigError};
use fibquant::{Codec, CodecConfig, NormFormat, RotationKind};
use numpy::PyArrayDyn;
use pyo3::prelude::*;

/// A FibQuant codec: vectors of head dim `dim` become fixed-size slots (an fp16 norm and
/// `dim / k` codeword indices of a codebook of `n` codewords, after one shared random
/// rotation). Immutable and thread-safe; heavy calls release the GIL.
///
/// `Codec(dim, k, n, seed=None, norm="f16", rotation="auto", rounds=None)` takes an exact
/// registry code; `Codec.preset(dim, rate)` the registry's lowest-MSE code at `rate` stored
/// bits per coordinate.
#[pyclass(frozen, module = "fibquant", name = "Codec")]
pub(crate) struct PyCodec {
    pub(crate) inner: Codec,
}

/// The configuration for the keyword arguments shared by the constructors.
pub(crate) fn config(
    mut c: CodecConfig,
    seed: Option<u64>,
    norm: &str,
    rotation: &str,
    rounds: Option<u8>,
) -> PyResult<CodecConfig> {
    if let Some(s) = seed {
        c = c.with_seed(s);
    }
    c = c.with_norm(match norm {
        "f16" => NormFormat::F16,
        "f32" => NormFormat::F32,
        other => {
            return Err(InvalidConfigError::new_err(format!(
                "norm must be \"f16\" or \"f32\", got {other:?}"
            )))
        }
    });
    let kind = match (rotation, rounds) {
        ("auto", None) => RotationKind::Auto,
        ("haar", None) => RotationKind::Haar,
        ("hadamard", r) => RotationKind::Hadamard {
            rounds: r.unwrap_or(3),
        },
        ("auto" | "haar", Some(_)) => {
            return Err(InvalidConfigError::new_err(
                "rounds is only for rotation=\"hadamard\"",
            ))
        }
        (other, _) => {
            return Err(InvalidConfigError::new_err(format!(
                "rotation must be \"auto\", \"hadamard\" or \"haar\", got {other:?}"
            )))
        }
    };
    Ok(c.with_rotation(kind))
}

fn rotation_name(kind: RotationKind) -> String {
    match kind {
        RotationKind::Auto => "auto".into(),
        RotationKind::Haar => "haar".into(),
        RotationKind::Hadamard { rounds } => format!("hadamard({rounds})"),
    }
}

impl PyCodec {
    fn count(&self, slots: &[u8], what: &str, shape: &[usize]) -> PyResult<usize> {
        let sb = self.inner.slot_bytes();
        expect_dim(what, shape, 1, sb, &format!("(count, {sb})"))?;
        Ok(slots.len() / sb)
    }
}

#[pymethods]
impl PyCodec {
    /// The codec on the embedded codebook for `(dim, k, n)`.
    #[new]
    #[pyo3(signature = (dim, k, n, seed=None, norm="f16", rotation="auto", rounds=None))]
    fn new(
        dim: usize,
        k: usize,
        n: usize,
        seed: Option<u64>,
        norm: &str,
        rotation: &str,
        rounds: Option<u8>,
    ) -> PyResult<Self> {
        let c = config(CodecConfig::new(dim, k, n), seed, norm, rotation, rounds)?;
        Ok(PyCodec {
            inner: Codec::new(c).py()?,
        })
    }

    /// The registry's preset for head dim `dim` at `rate` stored bits per coordinate (the
    /// lowest-MSE embedded code of that many bytes, as `CodecConfig::preset`).
    #[staticmethod]
    #[pyo3(signature = (dim, rate, seed=None, norm="f16", rotation="auto", rounds=None))]
    fn preset(
        dim: usize,
        rate: f64,
        seed: Option<u64>,
        norm: &str,
        rotation: &str,
        rounds: Option<u8>,
    ) -> PyResult<Self> {
        let c = config(
            CodecConfig::preset(dim, rate).py()?,
            seed,
            norm,
            rotation,
            rounds,
        )?;
        Ok(PyCodec {
            inner: Codec::new(c).py()?,
        })
    }

    /// Head dimension `d`.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Block size `k`.
    #[getter]
    fn k(&self) -> usize {
        self.inner.config().k
    }

    /// Codebook size `N`.
    #[getter]
    fn n(&self) -> usize {
        self.inner.config().n
    }

    /// Rotation seed.
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.config().seed
    }

    /// Norm format, "f16" or "f32".
    #[getter]
    fn norm(&self) -> &'static str {
        match self.inner.config().norm {
            NormFormat::F16 => "f16",
            NormFormat::F32 => "f32",
        }
    }

    /// Rotation: "auto", "haar" or "hadamard(rounds)".
    #[getter]
    fn rotation(&self) -> String {
        rotation_name(self.inner.config().rotation)
    }

    /// Bytes of one slot (norm included, rounded up to whole bytes).
    #[getter]
    fn slot_bytes(&self) -> usize {
        self.inner.slot_bytes()
    }

    /// Nominal rate `log2(n) / k` bits per coordinate (norm excluded).
    #[getter]
    fn rate_bits(&self) -> f64 {
        self.inner.rate_bits()
    }

    /// Blocks per vector, `dim / k`.
    #[getter]
    fn blocks(&self) -> usize {
        self.inner.blocks()
    }

    /// Compression against fp16 storage: `2 * dim / slot_bytes`.
    #[getter]
    fn compression_vs_f16(&self) -> f64 {
        self.inner.compression_vs_f16()
    }

    /// Builds ahead the search structures and attention tables the first encode or attention
    /// call would build (up to about a second for the 4-bit preset). Releases the GIL.
    fn prepare(&self, py: Python<'_>) {
        py.detach(|| self.inner.prepare());
    }

    /// Encodes one vector (float32, shape `(dim,)`) into a slot (uint8, `(slot_bytes,)`).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        let x = read_f32(x, "x", 1)?;
        let x = x.data();
        filled(py, &[self.inner.slot_bytes()], |slot| {
            self.inner.encode(x, slot)
        })
    }

    /// Encodes rows (float32, `(count, dim)`) into slots (uint8, `(count, slot_bytes)`).
    /// A failing row raises with its index in the message and in `row`.
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        let rows = read_f32(rows, "rows", 2)?;
        let d = self.inner.dim();
        expect_dim("rows", &rows.shape, 1, d, &format!("(count, {d})"))?;
        let count = rows.shape[0];
        let rows = rows.data();
        filled(py, &[count, self.inner.slot_bytes()], |slots| {
            self.inner.encode_batch(rows, slots)
        })
    }

    /// Decodes one slot (uint8, `(slot_bytes,)`) into a vector (float32, `(dim,)`).
    fn decode<'py>(
        &self,
        py: Python<'py>,
        slot: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let slot = read_u8(slot, "slot", 1)?;
        let slot = slot.data();
        filled(py, &[self.inner.dim()], |x| self.inner.decode(slot, x))
    }

    /// Decodes slots (uint8, `(count, slot_bytes)`) into rows (float32, `(count, dim)`).
    fn decode_batch<'py>(
        &self,
        py: Python<'py>,
        slots: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let slots = read_u8(slots, "slots", 2)?;
        let count = self.count(slots.data(), "slots", &slots.shape)?;
        let slots = slots.data();
        filled(py, &[count, self.inner.dim()], |rows| {
            self.inner.decode_batch(slots, rows)
        })
    }

    /// Scores `q . x_hat_i` of a query (float32, `(dim,)`) against slots (uint8,
    /// `(count, slot_bytes)`), computed on the codes: float32 `(count,)`.
    fn scores<'py>(
        &self,
        py: Python<'py>,
        q: &Bound<'py, PyAny>,
        slots: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let q = read_f32(q, "q", 1)?;
        let slots = read_u8(slots, "slots", 2)?;
        let count = self.count(slots.data(), "slots", &slots.shape)?;
        let (q, slots) = (q.data(), slots.data());
        filled(py, &[count], |o| self.inner.scores(q, slots, o))
    }

    /// `sum_i weights[i] * x_hat_i` over slots (uint8, `(count, slot_bytes)`) with weights
    /// (float32, `(count,)`), computed on the codes: float32 `(dim,)`.
    fn weighted_sum<'py>(
        &self,
        py: Python<'py>,
        weights: &Bound<'py, PyAny>,
        slots: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let w = read_f32(weights, "weights", 1)?;
        let slots = read_u8(slots, "slots", 2)?;
        self.count(slots.data(), "slots", &slots.shape)?;
        let (w, slots) = (w.data(), slots.data());
        filled(py, &[self.inner.dim()], |o| {
            self.inner.weighted_sum(w, slots, o)
        })
    }

    /// Scores of `g` queries (float32, `(g, dim)`) against the same slots: float32
    /// `(g, count)`, each row bit-identical to `scores` of that query alone.
    fn scores_group<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        slots: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let q = read_f32(queries, "queries", 2)?;
        let d = self.inner.dim();
        expect_dim("queries", &q.shape, 1, d, &format!("(g, {d})"))?;
        let slots = read_u8(slots, "slots", 2)?;
        let count = self.count(slots.data(), "slots", &slots.shape)?;
        let g = q.shape[0];
        let (q, slots) = (q.data(), slots.data());
        filled(py, &[g, count], |o| self.inner.scores_group(q, slots, o))
    }

    /// Weighted sums of `g` weight vectors (float32, `(g, count)`) over the same slots: float32
    /// `(g, dim)`, each row bit-identical to `weighted_sum` of that vector alone.
    fn weighted_sum_group<'py>(
        &self,
        py: Python<'py>,
        weights: &Bound<'py, PyAny>,
        slots: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let w = read_f32(weights, "weights", 2)?;
        let slots = read_u8(slots, "slots", 2)?;
        let count = self.count(slots.data(), "slots", &slots.shape)?;
        expect_dim("weights", &w.shape, 1, count, &format!("(g, {count})"))?;
        let g = w.shape[0];
        let (w, slots) = (w.data(), slots.data());
        filled(py, &[g, self.inner.dim()], |o| {
            self.inner.weighted_sum_group(w, slots, o)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Codec(dim={}, k={}, n={}, slot_bytes={}, rate_bits={:.4})",
            self.dim(),
            self.k(),
            self.n(),
            self.slot_bytes(),
            self.rate_bits()
        )
    }
}
