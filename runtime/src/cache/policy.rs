//! What a [`KvCache`](super::KvCache) stores and how: the shape of the model's attention and the
//! policy (codes per side and layer, exact transforms, exact tokens).

use crate::codec::{Codec, CodecConfig, DEFAULT_SEED};
use crate::error::{Error, Result};
use std::sync::Arc;

/// The attention layout a cache serves: the same in every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// Transformer layers (one cache layer each).
    pub layers: usize,
    /// Query heads per layer.
    pub query_heads: usize,
    /// Key/value heads per layer (grouped-query attention when fewer than `query_heads`; it must
    /// divide `query_heads`).
    pub kv_heads: usize,
    /// Head dimension `d`.
    pub head_dim: usize,
}

impl CacheShape {
    /// Query heads that share one kv head.
    pub fn group(&self) -> usize {
        self.query_heads / self.kv_heads.max(1)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.layers == 0 || self.kv_heads == 0 || self.head_dim == 0 {
            return Err(Error::InvalidConfig(format!(
                "cache shape needs at least one layer, kv head and coordinate, got {self:?}"
            )));
        }
        if self.query_heads == 0 || !self.query_heads.is_multiple_of(self.kv_heads) {
            return Err(Error::InvalidConfig(format!(
                "{} kv heads do not divide {} query heads",
                self.kv_heads, self.query_heads
            )));
        }
        Ok(())
    }
}

/// How one side (keys or values) of one layer is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SideCode {
    /// The registry's preset at this many stored bits per coordinate
    /// ([`CodecConfig::preset`]).
    Rate(f64),
    /// A registry code: blocks of `k` coordinates, `n` codewords.
    Code {
        /// Block size.
        k: usize,
        /// Codebook size.
        n: usize,
    },
    /// Uncompressed, every token as binary16 (16 bits per value).
    Fp16,
}

impl SideCode {
    /// The codec of this side for head dim `dim` and rotation seed `seed` (`None` for
    /// [`SideCode::Fp16`]).
    pub(crate) fn codec(self, dim: usize, seed: u64) -> Result<Option<Codec>> {
        let config = match self {
            SideCode::Fp16 => return Ok(None),
            SideCode::Rate(b) => CodecConfig::preset(dim, b)?,
            SideCode::Code { k, n } => CodecConfig::new(dim, k, n),
        };
        Codec::new(config.with_seed(seed)).map(Some)
    }
}

/// How keys are scaled per channel before encoding (stored `k / s`, scored with `q * s`: the
/// product `q . k` is unchanged, only where the code's error lands moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScaling {
    /// No scaling (`s = 1`).
    None,
    /// `s_i = (rms_k,i / rms_q,i)^(1/2)` from the statistics the cache freezes (centered keys,
    /// and the queries of the heads that share the kv head). With the code's error spread evenly
    /// over the stored coordinates, the expected squared score error is proportional to
    /// `(sum_i Q_i s_i^2) (sum_i K_i / s_i^2)` (`Q_i`, `K_i`: mean squares of query and centered
    /// key channel `i`), which this choice minimizes (Cauchy-Schwarz). Without queries at the
    /// time the statistics are frozen (a plain [`append`](super::KvCache::append)) it is `s = 1`.
    Balanced,
}

/// A different code for one layer (for example the first or last layers of a model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerOverride {
    /// The layer (0-based).
    pub layer: usize,
    /// Its key code.
    pub key: SideCode,
    /// Its value code.
    pub value: SideCode,
}

/// What a [`KvCache`](super::KvCache) does with the vectors it receives. Build one with
/// [`CachePolicy::default`] or [`CachePolicy::preset`] and the `with_*` methods.
///
/// Exact transforms and exact tokens are what make a calibration-free code usable on real
/// models: a rotation-based code spreads an error proportional to the stored vector's norm over
/// its coordinates, so the cache stores vectors with their common part removed (centering) and
/// their channels balanced (key scaling), and keeps the few tokens attention concentrates on
/// (the first ones, the sinks) exact.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CachePolicy {
    /// Key code of every layer without an override.
    pub key: SideCode,
    /// Value code of every layer without an override.
    pub value: SideCode,
    /// Per-layer codes.
    pub overrides: Vec<LayerOverride>,
    /// Encode keys minus the mean of their block of codes (the block's mean is stored; its
    /// `q . mean` is added to the block's scores).
    pub center_keys: bool,
    /// Encode values minus the mean of their block of codes (the mean is added to the output
    /// with the block's total weight).
    pub center_values: bool,
    /// Per-channel key scaling.
    pub key_scaling: KeyScaling,
    /// The first `sinks` positions are kept exact (fp16).
    pub sinks: usize,
    /// The most recent `window` positions are kept exact (fp16) and age into codes as tokens
    /// arrive.
    pub window: usize,
    /// Positions per block of a centered side's codes (at least 1; `None`: the head dim, so
    /// that a block's fp16 mean costs what the blocks' fp16 norms cost, 2 bytes per vector):
    /// its rows past the window wait in fp16 until a block of them can be encoded together
    /// with their own mean, so up to `block_len - 1` rows wait beyond the window. A side that
    /// is not centered encodes each row as it leaves the window.
    pub block_len: Option<usize>,
    /// Seed of the codecs' shared rotation.
    pub seed: u64,
}

impl Default for CachePolicy {
    /// The preset at 4 bits per coordinate on keys and values (see [`CachePolicy::preset`]).
    fn default() -> Self {
        CachePolicy::preset(4.0)
    }
}

impl CachePolicy {
    /// Keys and values at the registry's preset of `bits` stored bits per coordinate, with the
    /// default transforms: keys centered per block of `d` positions (rotary embeddings give
    /// keys large, position-dependent means; values are left as they are), keys balanced
    /// against the queries, 4 sink tokens exact, no recent window beyond the key rows waiting
    /// for a block (a window's fp16 cost does not shrink with the code's rate; add one with
    /// [`with_window`](Self::with_window) for long contexts).
    pub fn preset(bits: f64) -> Self {
        CachePolicy {
            key: SideCode::Rate(bits),
            value: SideCode::Rate(bits),
            overrides: Vec::new(),
            center_keys: true,
            center_values: false,
            key_scaling: KeyScaling::Balanced,
            sinks: 4,
            window: 0,
            block_len: None,
            seed: DEFAULT_SEED,
        }
    }

    /// The plain codec: every token encoded as it arrives, no transform, no exact token.
    pub fn plain(key: SideCode, value: SideCode) -> Self {
        CachePolicy {
            key,
            value,
            center_keys: false,
            center_values: false,
            key_scaling: KeyScaling::None,
            sinks: 0,
            ..CachePolicy::preset(4.0)
        }
    }

    /// Same policy with other default codes.
    pub fn with_codes(mut self, key: SideCode, value: SideCode) -> Self {
        self.key = key;
        self.value = value;
        self
    }

    /// Same policy with `layer` stored at other codes (replacing an earlier override of it).
    pub fn with_layer(mut self, layer: usize, key: SideCode, value: SideCode) -> Self {
        self.overrides.retain(|o| o.layer != layer);
        self.overrides.push(LayerOverride { layer, key, value });
        self
    }

    /// Same policy with centering of keys and values switched.
    pub fn with_centering(mut self, keys: bool, values: bool) -> Self {
        self.center_keys = keys;
        self.center_values = values;
        self
    }

    /// Same policy with another key scaling.
    pub fn with_key_scaling(mut self, scaling: KeyScaling) -> Self {
        self.key_scaling = scaling;
        self
    }

    /// Same policy with `sinks` exact first positions.
    pub fn with_sinks(mut self, sinks: usize) -> Self {
        self.sinks = sinks;
        self
    }

    /// Same policy with an exact recent window of `window` positions.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// Same policy with blocks of `block_len` positions on centered sides.
    pub fn with_block_len(mut self, block_len: usize) -> Self {
        self.block_len = Some(block_len);
        self
    }

    /// The block length for head dim `dim`.
    pub fn block_len_for(&self, dim: usize) -> usize {
        self.block_len.unwrap_or(dim)
    }

    /// Same policy with another rotation seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The codes of `layer`: its override, or the defaults.
    pub fn codes_of(&self, layer: usize) -> (SideCode, SideCode) {
        self.overrides
            .iter()
            .rev()
            .find(|o| o.layer == layer)
            .map_or((self.key, self.value), |o| (o.key, o.value))
    }

    /// One codec per distinct code, and for every layer the index of its key and value codec
    /// (`None`: fp16). Checks the policy against `shape`.
    pub(crate) fn codecs(&self, shape: &CacheShape) -> Result<ResolvedCodecs> {
        shape.check()?;
        if self.block_len == Some(0) {
            return Err(Error::InvalidConfig("block_len must be at least 1".into()));
        }
        if let Some(o) = self.overrides.iter().find(|o| o.layer >= shape.layers) {
            return Err(Error::InvalidConfig(format!(
                "override for layer {} but the cache has {} layers",
                o.layer, shape.layers
            )));
        }
        let mut codes: Vec<SideCode> = Vec::new();
        let mut codecs: Vec<Arc<Codec>> = Vec::new();
        let mut lookup = |code: SideCode| -> Result<Option<Arc<Codec>>> {
            if let Some(i) = codes.iter().position(|c| *c == code) {
                return Ok(Some(codecs[i].clone()));
            }
            let Some(codec) = code.codec(shape.head_dim, self.seed)? else {
                return Ok(None);
            };
            let codec = Arc::new(codec);
            codes.push(code);
            codecs.push(codec.clone());
            Ok(Some(codec))
        };
        let mut layers = Vec::with_capacity(shape.layers);
        for layer in 0..shape.layers {
            let (k, v) = self.codes_of(layer);
            layers.push((lookup(k)?, lookup(v)?));
        }
        Ok(layers)
    }
}

/// For every layer, its key and value codec (`None`: fp16), shared between layers of one code.
pub(crate) type ResolvedCodecs = Vec<(Option<Arc<Codec>>, Option<Arc<Codec>>)>;
