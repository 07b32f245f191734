//! `fibquant.CachePolicy` and `fibquant.KvCache`: the KV cache an engine attends through.

use crate::arrays::{filled, out_slice, read_f32, shape_str, write, zeros, Input};
use crate::codec::PyCodec;
use crate::errors::{IntoPy, InvalidConfigError, WrongLengthError};
use fibquant::{CachePolicy, CacheShape, KeyScaling, KvCache, SideCode};
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString, PyTuple};

/// One per-layer override as Python sees it: `(layer, key code, value code)`.
type Override = (usize, Py<PyAny>, Py<PyAny>);

/// Keys and values handed back to Python.
type KeysValues<'py> = (Bound<'py, PyArrayDyn<f32>>, Bound<'py, PyArrayDyn<f32>>);

/// A side code from its Python shorthand: a number (the preset at that many stored bits per
/// coordinate), a tuple `(k, n)` (an exact registry code) or the string "fp16".
fn side_code(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<SideCode> {
    let bad = || {
        InvalidConfigError::new_err(format!(
            "{what} must be a rate in bits (e.g. 4.0), a (k, n) tuple or \"fp16\", got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    if obj.is_instance_of::<PyBool>() {
        return Err(bad());
    }
    if obj.is_instance_of::<PyString>() {
        return match obj.extract::<String>()?.as_str() {
            "fp16" => Ok(SideCode::Fp16),
            _ => Err(bad()),
        };
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let (k, n): (usize, usize) = t.extract().map_err(|_| bad())?;
        return Ok(SideCode::Code { k, n });
    }
    match obj.extract::<f64>() {
        Ok(b) if b.is_finite() => Ok(SideCode::Rate(b)),
        _ => Err(bad()),
    }
}

/// The Python shorthand of a side code.
fn side_code_py(py: Python<'_>, code: SideCode) -> PyResult<Py<PyAny>> {
    Ok(match code {
        SideCode::Rate(b) => b.into_pyobject(py)?.into_any().unbind(),
        SideCode::Code { k, n } => (k, n).into_pyobject(py)?.into_any().unbind(),
        SideCode::Fp16 => "fp16".into_pyobject(py)?.into_any().unbind(),
    })
}

/// What a `KvCache` stores and how: codes per side (keys, values) and layer, key centering and
/// scaling, exact sink and recent tokens, the rotation seed. Immutable: the `with_*` methods
/// return a changed copy (the Rust builder's methods).
///
/// Codes are written as a rate in stored bits per coordinate (the registry's preset, e.g.
/// `4.0`), an exact registry code `(k, n)`, or `"fp16"` (uncompressed). `CachePolicy()` is the
/// default policy, `CachePolicy.preset(4.0)`: keys centered per block, balanced key scales
/// (from the queries of `append_and_attend`), 4 exact sink tokens.
#[pyclass(frozen, module = "fibquant", name = "CachePolicy")]
#[derive(Clone)]
pub(crate) struct PyCachePolicy {
    pub(crate) inner: CachePolicy,
}

#[pymethods]
impl PyCachePolicy {
    /// The default policy (the preset at 4 bits per coordinate).
    #[new]
    fn new() -> Self {
        PyCachePolicy {
            inner: CachePolicy::default(),
        }
    }

    /// Keys and values at the registry's preset of `bits` stored bits per coordinate, with the
    /// default transforms (keys centered, balanced key scales, 4 sinks, no window).
    #[staticmethod]
    fn preset(bits: f64) -> Self {
        PyCachePolicy {
            inner: CachePolicy::preset(bits),
        }
    }

    /// The plain codec: every token encoded as it arrives with `key` and `value` codes, no
    /// transform, no exact token (`plain("fp16", "fp16")` stores everything in fp16).
    #[staticmethod]
    fn plain(key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyCachePolicy {
            inner: CachePolicy::plain(side_code(key, "key")?, side_code(value, "value")?),
        })
    }

    /// Same policy with other default codes.
    fn with_codes(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyCachePolicy {
            inner: self
                .inner
                .clone()
                .with_codes(side_code(key, "key")?, side_code(value, "value")?),
        })
    }

    /// Same policy with `layer` stored at other codes (replacing an earlier override of it).
    fn with_layer(
        &self,
        layer: usize,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(PyCachePolicy {
            inner: self.inner.clone().with_layer(
                layer,
                side_code(key, "key")?,
                side_code(value, "value")?,
            ),
        })
    }

    /// Same policy with centering of keys and values switched.
    fn with_centering(&self, keys: bool, values: bool) -> Self {
        PyCachePolicy {
            inner: self.inner.clone().with_centering(keys, values),
        }
    }

    /// Same policy with another key scaling: "balanced" or "none".
    fn with_key_scaling(&self, scaling: &str) -> PyResult<Self> {
        let s = match scaling {
            "balanced" => KeyScaling::Balanced,
            "none" => KeyScaling::None,
            other => {
                return Err(InvalidConfigError::new_err(format!(
                    "key scaling must be \"balanced\" or \"none\", got {other:?}"
                )))
            }
        };
        Ok(PyCachePolicy {
            inner: self.inner.clone().with_key_scaling(s),
        })
    }

    /// Same policy with `sinks` exact (fp16) first positions.
    fn with_sinks(&self, sinks: usize) -> Self {
        PyCachePolicy {
            inner: self.inner.clone().with_sinks(sinks),
        }
    }

    /// Same policy with an exact (fp16) recent window of `window` positions.
    fn with_window(&self, window: usize) -> Self {
        PyCachePolicy {
            inner: self.inner.clone().with_window(window),
        }
    }

    /// Same policy with blocks of `block_len` positions on centered sides (at least 1).
    fn with_block_len(&self, block_len: usize) -> Self {
        PyCachePolicy {
            inner: self.inner.clone().with_block_len(block_len),
        }
    }

    /// Same policy with another rotation seed.
    fn with_seed(&self, seed: u64) -> Self {
        PyCachePolicy {
            inner: self.inner.clone().with_seed(seed),
        }
    }

    /// The policy of one model layer on its own: `layer`'s codes as the defaults, no per-layer
    /// overrides (for a cache of that layer alone, as `fibquant.hf` builds).
    fn for_layer(&self, layer: usize) -> Self {
        let (key, value) = self.inner.codes_of(layer);
        let mut inner = self.inner.clone().with_codes(key, value);
        inner.overrides.clear();
        PyCachePolicy { inner }
    }

    /// Key code of every layer without an override.
    #[getter]
    fn key(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        side_code_py(py, self.inner.key)
    }
    /// Value code of every layer without an override.
    #[getter]
    fn value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        side_code_py(py, self.inner.value)
    }
    /// Per-layer codes: a list of `(layer, key code, value code)`.
    #[getter]
    fn overrides(&self, py: Python<'_>) -> PyResult<Vec<Override>> {
        self.inner
            .overrides
            .iter()
            .map(|o| {
                Ok((
                    o.layer,
                    side_code_py(py, o.key)?,
                    side_code_py(py, o.value)?,
                ))
            })
            .collect()
    }
    /// The key and value codes of `layer`: its override, or the defaults.
    fn codes_of(&self, py: Python<'_>, layer: usize) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let (k, v) = self.inner.codes_of(layer);
        Ok((side_code_py(py, k)?, side_code_py(py, v)?))
    }
    /// Whether keys are centered per block.
    #[getter]
    fn center_keys(&self) -> bool {
        self.inner.center_keys
    }
    /// Whether values are centered per block.
    #[getter]
    fn center_values(&self) -> bool {
        self.inner.center_values
    }
    /// Key scaling: "balanced" or "none".
    #[getter]
    fn key_scaling(&self) -> &'static str {
        match self.inner.key_scaling {
            KeyScaling::Balanced => "balanced",
            KeyScaling::None => "none",
        }
    }
    /// Exact first positions.
    #[getter]
    fn sinks(&self) -> usize {
        self.inner.sinks
    }
    /// Exact recent positions.
    #[getter]
    fn window(&self) -> usize {
        self.inner.window
    }
    /// Positions per block of a centered side (None: the head dim).
    #[getter]
    fn block_len(&self) -> Option<usize> {
        self.inner.block_len
    }
    /// Rotation seed of the codecs.
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyCachePolicy>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }
    fn __repr__(&self) -> String {
        format!("CachePolicy({:?})", self.inner)
    }
}

/// A KV cache for one sequence: every layer's keys and values stored per a `CachePolicy`, with
/// attention computed on what is stored (on the codes, nothing decoded). Rows are head-major,
/// as engines lay out a chunk: keys and values `(kv_heads, seq, head_dim)`, queries and
/// outputs `(query_heads, seq, head_dim)`, float32. Query head `h` reads kv head
/// `h // (query_heads // kv_heads)`. A call that fails changes nothing. Heavy calls release
/// the GIL; one call at a time per cache (a second concurrent call raises).
#[pyclass(module = "fibquant", name = "KvCache")]
pub(crate) struct PyKvCache {
    inner: KvCache,
}

impl PyKvCache {
    fn rows<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        what: &str,
        heads: usize,
    ) -> PyResult<(Input<'py, f32>, usize)> {
        let x = read_f32(obj, what, 3)?;
        let d = self.inner.shape().head_dim;
        let s = &x.shape;
        if s[0] != heads || s[2] != d {
            return Err(WrongLengthError::new_err(format!(
                "{what} has shape {}, expected ({heads}, seq, {d})",
                shape_str(s)
            )));
        }
        let seq = s[1];
        Ok((x, seq))
    }
}

#[pymethods]
impl PyKvCache {
    /// An empty cache for a model of `layers` layers of `query_heads` query heads sharing
    /// `kv_heads` kv heads of `head_dim`, storing per `policy` (default: `CachePolicy()`), with
    /// softmax scale `score_scale` (default `1 / sqrt(head_dim)`).
    #[new]
    #[pyo3(signature = (layers, query_heads, kv_heads, head_dim, policy=None, score_scale=None))]
    fn new(
        layers: usize,
        query_heads: usize,
        kv_heads: usize,
        head_dim: usize,
        policy: Option<PyRef<'_, PyCachePolicy>>,
        score_scale: Option<f32>,
    ) -> PyResult<Self> {
        let shape = CacheShape {
            layers,
            query_heads,
            kv_heads,
            head_dim,
        };
        let policy = policy.map_or_else(CachePolicy::default, |p| p.inner.clone());
        let mut inner = KvCache::new(shape, policy).py()?;
        if let Some(s) = score_scale {
            inner = inner.with_score_scale(s).py()?;
        }
        Ok(PyKvCache { inner })
    }

    /// Builds ahead what the codecs build on first use (about a second for the 4-bit preset),
    /// so that the first append does not pause. Releases the GIL.
    fn prepare(&self, py: Python<'_>) {
        py.detach(|| self.inner.prepare());
    }

    /// Transformer layers.
    #[getter]
    fn layers(&self) -> usize {
        self.inner.shape().layers
    }
    /// Query heads per layer.
    #[getter]
    fn query_heads(&self) -> usize {
        self.inner.shape().query_heads
    }
    /// Key/value heads per layer.
    #[getter]
    fn kv_heads(&self) -> usize {
        self.inner.shape().kv_heads
    }
    /// Head dimension.
    #[getter]
    fn head_dim(&self) -> usize {
        self.inner.shape().head_dim
    }
    /// The softmax scale applied to scores (`1 / sqrt(head_dim)` unless set).
    #[getter]
    fn score_scale(&self) -> f32 {
        self.inner.score_scale()
    }
    /// The policy the cache stores by.
    #[getter]
    fn policy(&self) -> PyCachePolicy {
        PyCachePolicy {
            inner: self.inner.policy().clone(),
        }
    }

    /// The key and value codecs of `layer` (None: fp16, or no such layer).
    fn codecs(&self, layer: usize) -> (Option<PyCodec>, Option<PyCodec>) {
        let (k, v) = self.inner.codecs(layer);
        let wrap = |c: Option<&fibquant::Codec>| c.map(|c| PyCodec { inner: c.clone() });
        (wrap(k), wrap(v))
    }

    /// Appends `seq` positions to `layer`: keys and values float32 `(kv_heads, seq, head_dim)`.
    /// Balanced key scaling gets no query statistics here: a layer whose first rows come
    /// through `append` gets no key scales (use `append_and_attend` for prefill).
    fn append(
        &mut self,
        py: Python<'_>,
        layer: usize,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let kvh = self.inner.shape().kv_heads;
        let (k, seq) = self.rows(keys, "keys", kvh)?;
        let (v, vseq) = self.rows(values, "values", kvh)?;
        if vseq != seq {
            return Err(WrongLengthError::new_err(format!(
                "keys hold {seq} positions, values {vseq}"
            )));
        }
        let (k, v) = (k.data(), v.data());
        let cache = &mut self.inner;
        py.detach(|| cache.append(layer, k, v, seq)).py()
    }

    /// Attention of `queries` (float32 `(query_heads, seq, head_dim)`: the last `seq` cached
    /// positions of `layer`, in order) over the cache, causally: float32, the queries' shape.
    fn attend<'py>(
        &self,
        py: Python<'py>,
        layer: usize,
        queries: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let qh = self.inner.shape().query_heads;
        let (q, seq) = self.rows(queries, "queries", qh)?;
        let (shape, q) = (q.shape.clone(), q.data());
        let cache = &self.inner;
        filled(py, &shape, |o| cache.attend(layer, q, seq, o))
    }

    /// One attention step of an engine: appends the chunk's keys and values (float32
    /// `(kv_heads, seq, head_dim)`) to `layer`, then returns the attention of the chunk's
    /// queries (float32 `(query_heads, seq, head_dim)`) over everything cached, causally. On a
    /// layer's first append the queries also give the balanced key scales their statistics.
    fn append_and_attend<'py>(
        &mut self,
        py: Python<'py>,
        layer: usize,
        queries: &Bound<'py, PyAny>,
        keys: &Bound<'py, PyAny>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let s = self.inner.shape();
        let (qh, kvh) = (s.query_heads, s.kv_heads);
        let (q, seq) = self.rows(queries, "queries", qh)?;
        let (k, kseq) = self.rows(keys, "keys", kvh)?;
        let (v, vseq) = self.rows(values, "values", kvh)?;
        if kseq != seq || vseq != seq {
            return Err(WrongLengthError::new_err(format!(
                "queries hold {seq} positions, keys {kseq}, values {vseq}"
            )));
        }
        let shape = q.shape.clone();
        let (q, k, v) = (q.data(), k.data(), v.data());
        let cache = &mut self.inner;
        filled(py, &shape, |o| {
            cache.append_and_attend(layer, q, k, v, seq, o)
        })
    }

    /// The cache's reconstruction of `layer` in the model's space, decoded from what is stored:
    /// `(keys, values)`, float32 `(kv_heads, len, head_dim)` each, or `(len, head_dim)` for one
    /// kv `head`.
    #[pyo3(signature = (layer, head=None))]
    fn reconstruct<'py>(
        &self,
        py: Python<'py>,
        layer: usize,
        head: Option<usize>,
    ) -> PyResult<KeysValues<'py>> {
        let s = *self.inner.shape();
        if layer >= s.layers {
            return Err(InvalidConfigError::new_err(format!(
                "layer {layer}: the cache has {} layers",
                s.layers
            )));
        }
        let (len, d) = (self.inner.len(layer), s.head_dim);
        let heads: Vec<usize> = match head {
            Some(h) => vec![h],
            None => (0..s.kv_heads).collect(),
        };
        let shape: Vec<usize> = match head {
            Some(_) => vec![len, d],
            None => vec![s.kv_heads, len, d],
        };
        let keys = zeros::<f32>(py, &shape);
        let values = zeros::<f32>(py, &shape);
        {
            let (mut kw, mut vw) = (write(&keys)?, write(&values)?);
            let (ko, vo) = (out_slice(&mut kw)?, out_slice(&mut vw)?);
            let cache = &self.inner;
            py.detach(|| {
                let per = (len * d).max(1);
                for ((&h, k), v) in heads.iter().zip(ko.chunks_mut(per)).zip(vo.chunks_mut(per)) {
                    cache.reconstruct(layer, h, k, v)?;
                }
                // With no position the loop sees no chunk: a bad head is still refused.
                if len == 0 {
                    if let Some(&h) = heads.iter().find(|&&h| h >= s.kv_heads) {
                        return Err(fibquant::Error::InvalidConfig(format!(
                            "head {h}: the cache has {} kv heads",
                            s.kv_heads
                        )));
                    }
                }
                Ok(())
            })
            .py()?;
        }
        Ok((keys, values))
    }

    /// Positions cached for `layer` (0 for an empty or unknown layer).
    fn len(&self, layer: usize) -> usize {
        self.inner.len(layer)
    }

    /// Whether no layer holds a position.
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Bytes the whole cache holds: slots, fp16 rows, block means, key scales.
    fn bytes(&self) -> usize {
        self.inner.bytes()
    }

    /// Bytes `layer` holds.
    fn layer_bytes(&self, layer: usize) -> usize {
        self.inner.layer_bytes(layer)
    }

    /// Bits per stored value at the current length, every overhead included (None when empty).
    fn effective_bits(&self) -> Option<f64> {
        self.inner.effective_bits()
    }

    /// Drops every position of every layer, and the frozen key scales with them.
    fn clear(&mut self) {
        self.inner.clear();
    }

    fn __repr__(&self) -> String {
        let s = self.inner.shape();
        format!(
            "KvCache(layers={}, query_heads={}, kv_heads={}, head_dim={}, bytes={})",
            s.layers,
            s.query_heads,
            s.kv_heads,
            s.head_dim,
            self.inner.bytes()
        )
    }
}
