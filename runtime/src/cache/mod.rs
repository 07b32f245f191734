//! A KV cache for one sequence that an engine holds and attends through, on codes.
//!
//! [`KvCache`] stores, for every layer and kv head, keys and values the way a [`CachePolicy`]
//! says, and computes attention for the query heads that share a kv head straight from what it
//! stores (no decoded copy):
//!
//! - **key scales** (`transform.rs`): on a layer's first append the cache freezes
//!   per-kv-head, per-channel key scales `s` ([`KeyScaling`]) from that append's keys and
//!   queries (the prompt, or the first prefill chunk; the sink positions are left out of the
//!   statistics). Stored keys are `k / s`, scored with `q * s`: `q . k` is unchanged;
//! - **centering** (`store.rs`): rows are encoded in blocks of at most
//!   [`CachePolicy::block_len`] positions (the head dim by default), and each block stores the
//!   fp16 mean of its own rows and codes of the rows minus that mean. A key block's scores get
//!   `q . mean` added, a value block's mean is added to the output with the block's total
//!   weight: exact, and the code spends its error on `||x - mean||` instead of `||x||`;
//! - **positions** (`store.rs`): per side, the first [`CachePolicy::sinks`] positions in fp16,
//!   then codec slots, then the most recent positions in fp16: the [`CachePolicy::window`]
//!   newest, and the rows waiting to fill a block (positions age into codes once a block of
//!   them is past the window). A side at [`SideCode::Fp16`] keeps every position in fp16;
//! - **attention** ([`KvCache::attend`]): for each query position, the query heads of a kv head
//!   together: scores over the visible positions (causal: a chunk's row `r` sees the positions
//!   before it and itself) from the fp16 parts and from the codes
//!   ([`Codec::scores_group`](crate::Codec::scores_group), rotated domain, each slot read once
//!   for the group), one numerically stable softmax per head over all of them, then the
//!   weighted sums from the fp16 parts and the codes
//!   ([`Codec::weighted_sum_group`](crate::Codec::weighted_sum_group): one inverse rotation per
//!   head), plus the blocks' means.
//!
//! Rows cross the interface head-major, as engines lay out a chunk: keys and values of a chunk
//! of `seq` positions are `kv_heads x seq x d` floats, queries and outputs
//! `query_heads x seq x d`. Query head `h` reads kv head `h / group`. Every call checks its
//! input before changing anything: a failed call leaves the cache as it was.

mod policy;
mod store;
mod transform;

pub use policy::{CachePolicy, CacheShape, KeyScaling, LayerOverride, SideCode};

use crate::attention::WEIGHT_FLUSH;
use crate::codec::{Codec, MAX_DIM};
use crate::error::{Error, Result};
use crate::kernels;
use crate::util::fp16::f16_bits_to_f32;
use std::sync::Arc;
use store::{Layout, SideStore};
use transform::HeadTransform;

/// One side (keys or values) of one kv head as a [`KvCache`] stores it ([`KvCache::head_parts`]),
/// in position order: `sinks` (fp16 rows), then `slots` (codec slots, each row minus its
/// block's mean when the side is centered), then `tail` (fp16 rows: the recent window and the
/// rows waiting for a block). Rows are `d` binary16 values.
#[derive(Debug, Clone, Copy)]
pub struct SideParts<'a> {
    /// The first positions, binary16 bits, `d` per row.
    pub sinks: &'a [u16],
    /// Codec slots ([`Codec::slot_bytes`] each); empty for an fp16 side.
    pub slots: &'a [u8],
    /// Per block of slots, its binary16 mean (`d` values); empty without centering.
    pub means: &'a [u16],
    /// Per block of slots, the number of slots up to its end (cumulative, increasing).
    pub block_ends: &'a [usize],
    /// The positions after the slots, binary16 bits, `d` per row, oldest first.
    pub tail: &'a [u16],
}

/// Everything one kv head of one layer stores ([`KvCache::head_parts`]).
#[derive(Debug, Clone, Copy)]
pub struct HeadParts<'a> {
    /// Positions cached (sinks + slots + tail rows, the same on both sides).
    pub len: usize,
    /// The keys, stored divided by `key_scale`.
    pub keys: SideParts<'a>,
    /// The values.
    pub values: SideParts<'a>,
    /// Per-channel key scales (`d` values): keys are stored `k / s` and scored with `q * s`.
    /// `None`: no scaling.
    pub key_scale: Option<&'a [f32]>,
}

/// One kv head of one layer.
#[derive(Debug, Clone)]
struct Head {
    keys: SideStore,
    values: SideStore,
    transform: HeadTransform,
}

/// One layer: its codecs, length and heads.
#[derive(Debug, Clone)]
struct Layer {
    key_codec: Option<Arc<Codec>>,
    value_codec: Option<Arc<Codec>>,
    len: usize,
    /// Empty until the first append freezes the transforms.
    heads: Vec<Head>,
}

/// A KV cache for one sequence: every layer's keys and values stored per [`CachePolicy`], with
/// attention computed on what is stored (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct KvCache {
    shape: CacheShape,
    policy: CachePolicy,
    score_scale: f32,
    layers: Vec<Layer>,
}

/// Wraps `e` with the place it happened.
fn at(layer: usize, head: Option<usize>, position: Option<usize>, e: Error) -> Error {
    match e {
        // Inner errors that already know their position: fill in layer and head.
        Error::Cache {
            position: p,
            source,
            ..
        } => Error::Cache {
            layer,
            head,
            position: p.or(position),
            source,
        },
        other => Error::Cache {
            layer,
            head,
            position,
            source: Box::new(other),
        },
    }
}

/// Largest query magnitude the cache attends with: with fp16-bounded keys, key scales within
/// a factor 256 of 1 and head dims up to [`MAX_DIM`], every score stays finite.
const MAX_QUERY: f32 = (1u128 << 64) as f32;

/// Checks rows crossing the interface (`heads x seq x d`, head-major, for a chunk starting at
/// position `first`): the length, then finiteness, naming head and position of the first
/// non-finite value.
#[allow(clippy::too_many_arguments)]
fn check_rows(
    layer: usize,
    what: &'static str,
    rows: &[f32],
    heads: usize,
    seq: usize,
    d: usize,
    first: usize,
) -> Result<()> {
    let Some(want) = heads.checked_mul(seq).and_then(|x| x.checked_mul(d)) else {
        let e = Error::InvalidConfig(format!(
            "{seq} positions of {heads} heads of {d} values overflow a length"
        ));
        return Err(at(layer, None, None, e));
    };
    if rows.len() != want {
        let e = Error::WrongLength {
            what,
            expected: want,
            actual: rows.len(),
        };
        return Err(at(layer, None, None, e));
    }
    match rows.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(at(
            layer,
            Some(i / (seq * d)),
            Some(first + i / d % seq),
            Error::NonFinite { index: i % d },
        )),
        None => Ok(()),
    }
}

impl KvCache {
    /// An empty cache for a model of `shape`, storing per `policy`. Fails when a code is not in
    /// the registry for the head dim, or the shape or policy is inconsistent.
    pub fn new(shape: CacheShape, policy: CachePolicy) -> Result<KvCache> {
        let codecs = policy.codecs(&shape)?;
        if shape.head_dim > MAX_DIM {
            return Err(Error::InvalidConfig(format!(
                "head dim must be at most {MAX_DIM}, got {}",
                shape.head_dim
            )));
        }
        let layers = codecs
            .into_iter()
            .map(|(key_codec, value_codec)| Layer {
                key_codec,
                value_codec,
                len: 0,
                heads: Vec::new(),
            })
            .collect();
        Ok(KvCache {
            shape,
            policy,
            score_scale: 1.0 / (shape.head_dim as f32).sqrt(),
            layers,
        })
    }

    /// Same cache with another softmax scale (default `1 / sqrt(d)`).
    pub fn with_score_scale(mut self, scale: f32) -> Result<KvCache> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "score scale must be finite and positive, got {scale}"
            )));
        }
        self.score_scale = scale;
        Ok(self)
    }

    /// The shape the cache serves.
    pub fn shape(&self) -> &CacheShape {
        &self.shape
    }

    /// The policy the cache stores by.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// The key and value codecs of `layer` (`None`: fp16, or no such layer).
    pub fn codecs(&self, layer: usize) -> (Option<&Codec>, Option<&Codec>) {
        self.layers.get(layer).map_or((None, None), |l| {
            (l.key_codec.as_deref(), l.value_codec.as_deref())
        })
    }

    /// Builds ahead what every layer's codecs build on first use ([`Codec::prepare`]), so that
    /// the first append and attention do not pause for it. Codecs on one code share the work.
    pub fn prepare(&self) {
        for layer in 0..self.layers.len() {
            let (key, value) = self.codecs(layer);
            key.into_iter().chain(value).for_each(Codec::prepare);
        }
    }

    /// Positions cached for `layer` (0 for an empty or unknown layer).
    pub fn len(&self, layer: usize) -> usize {
        self.layers.get(layer).map_or(0, |l| l.len)
    }

    /// Whether no layer holds a position.
    pub fn is_empty(&self) -> bool {
        self.layers.iter().all(|l| l.len == 0)
    }

    /// Drops every position of every layer, and the frozen key scales with them.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.len = 0;
            l.heads.clear();
        }
    }

    fn layer(&self, layer: usize) -> Result<&Layer> {
        self.layers.get(layer).ok_or_else(|| {
            at(
                layer,
                None,
                None,
                Error::InvalidConfig(format!("the cache has {} layers", self.layers.len())),
            )
        })
    }

    fn layout<'a>(&self, codec: Option<&'a Codec>, center: bool) -> Layout<'a> {
        Layout {
            dim: self.shape.head_dim,
            sinks: self.policy.sinks,
            window: self.policy.window,
            block_len: self.policy.block_len_for(self.shape.head_dim),
            center,
            codec,
        }
    }

    /// Appends `seq` positions to `layer`: `keys` and `values` are `kv_heads x seq x d`.
    /// Without queries, [`KeyScaling::Balanced`] has no query statistics: a layer whose first
    /// rows come through here gets no key scales (use [`append_and_attend`](Self::append_and_attend)
    /// for prefill).
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32], seq: usize) -> Result<()> {
        self.append_inner(layer, keys, values, seq, None)
    }

    /// One attention step of an engine: appends the chunk's `keys` and `values`
    /// (`kv_heads x seq x d`) to `layer`, then writes into `out` the attention of the chunk's
    /// `queries` (`query_heads x seq x d`, the chunk's own positions) over everything cached,
    /// causally. The queries also give the key scales their statistics on the layer's first
    /// append. Nothing changes when it fails.
    pub fn append_and_attend(
        &mut self,
        layer: usize,
        queries: &[f32],
        keys: &[f32],
        values: &[f32],
        seq: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_queries(layer, queries, seq, out.len())?;
        self.append_inner(layer, keys, values, seq, Some(queries))?;
        self.attend_checked(layer, queries, seq, out)
    }

    /// [`append`](Self::append) for engines that attend on [`reconstruct`](Self::reconstruct)ed
    /// tensors themselves: the chunk's `queries` (`query_heads x seq x d`) are checked and give
    /// the key scales their statistics on the layer's first append, as in
    /// [`append_and_attend`](Self::append_and_attend), but no attention is computed. Nothing
    /// changes when it fails.
    pub fn append_with_queries(
        &mut self,
        layer: usize,
        queries: &[f32],
        keys: &[f32],
        values: &[f32],
        seq: usize,
    ) -> Result<()> {
        self.check_queries(layer, queries, seq, queries.len())?;
        self.append_inner(layer, keys, values, seq, Some(queries))
    }

    fn check_queries(&self, layer: usize, queries: &[f32], seq: usize, out: usize) -> Result<()> {
        let (qh, d) = (self.shape.query_heads, self.shape.head_dim);
        check_rows(layer, "queries", queries, qh, seq, d, self.len(layer))?;
        if out != queries.len() {
            let e = Error::WrongLength {
                what: "attention output",
                expected: queries.len(),
                actual: out,
            };
            return Err(at(layer, None, None, e));
        }
        // Bounded queries keep every score finite (keys are fp16-bounded), so that attention
        // cannot fail after `append_and_attend` has appended.
        if let Some(i) = queries.iter().position(|v| v.abs() > MAX_QUERY) {
            let e = Error::InvalidConfig(format!(
                "query value {} is beyond +-2^64, where attention scores could overflow f32",
                queries[i]
            ));
            return Err(at(
                layer,
                Some(i / (seq * d)),
                Some(self.len(layer) + i / d % seq),
                e,
            ));
        }
        Ok(())
    }

    fn append_inner(
        &mut self,
        layer: usize,
        keys: &[f32],
        values: &[f32],
        seq: usize,
        queries: Option<&[f32]>,
    ) -> Result<()> {
        let (kvh, d) = (self.shape.kv_heads, self.shape.head_dim);
        let l = self.layer(layer)?;
        let len = l.len;
        for (what, rows) in [("keys", keys), ("values", values)] {
            check_rows(layer, what, rows, kvh, seq, d, len)?;
        }
        if seq == 0 {
            return Ok(());
        }
        // The transforms: frozen on the first append, or the ones already there.
        let group = self.shape.group();
        let transforms: Vec<HeadTransform> = if l.heads.is_empty() {
            (0..kvh)
                .map(|h| {
                    let rows = h * seq * d..(h + 1) * seq * d;
                    let q = queries.map(|q| &q[h * group * seq * d..(h + 1) * group * seq * d]);
                    HeadTransform::freeze(&self.policy, d, &keys[rows], q, self.policy.sinks)
                })
                .collect()
        } else {
            l.heads.iter().map(|h| h.transform.clone()).collect()
        };
        let empty = Head {
            keys: SideStore::default(),
            values: SideStore::default(),
            transform: HeadTransform::identity(),
        };
        let (kl, vl) = (
            self.layout(l.key_codec.as_deref(), self.policy.center_keys),
            self.layout(l.value_codec.as_deref(), self.policy.center_values),
        );
        let mut plans = Vec::with_capacity(kvh);
        let mut buf = Vec::new();
        for (h, t) in transforms.iter().enumerate() {
            let head = l.heads.get(h).unwrap_or(&empty);
            let rows = h * seq * d..(h + 1) * seq * d;
            t.keys_in(&keys[rows.clone()], d, &mut buf);
            let kp = head
                .keys
                .plan(kl, len, &buf)
                .map_err(|e| at(layer, Some(h), None, e))?;
            let vp = head
                .values
                .plan(vl, len, &values[rows])
                .map_err(|e| at(layer, Some(h), None, e))?;
            plans.push((kp, vp));
        }
        let l = &mut self.layers[layer];
        if l.heads.is_empty() {
            l.heads = transforms
                .into_iter()
                .map(|transform| Head {
                    transform,
                    ..empty.clone()
                })
                .collect();
        }
        for (head, (kp, vp)) in l.heads.iter_mut().zip(plans) {
            head.keys.commit(d, kp);
            head.values.commit(d, vp);
        }
        l.len += seq;
        Ok(())
    }

    /// Attention of `queries` (`query_heads x seq x d`: the last `seq` cached positions of
    /// `layer`, in order) over the cache, causally, into `out` (`query_heads x seq x d`).
    pub fn attend(&self, layer: usize, queries: &[f32], seq: usize, out: &mut [f32]) -> Result<()> {
        self.check_queries(layer, queries, seq, out.len())?;
        self.attend_checked(layer, queries, seq, out)
    }

    /// [`attend`](Self::attend) for queries and output whose lengths and values were checked.
    fn attend_checked(
        &self,
        layer: usize,
        queries: &[f32],
        seq: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let l = self.layer(layer)?;
        if seq == 0 {
            return Ok(()); // No query position: nothing to attend or write.
        }
        if l.len == 0 {
            return Err(at(layer, None, None, Error::EmptyCache));
        }
        if seq > l.len {
            return Err(at(
                layer,
                None,
                None,
                Error::WrongLength {
                    what: "query positions (at most the cached positions)",
                    expected: l.len,
                    actual: seq,
                },
            ));
        }
        let per_kv = self.shape.group() * seq * self.shape.head_dim;
        let work =
            |(h, (q, o)): (usize, (&[f32], &mut [f32]))| self.attend_head(l, layer, h, q, seq, o);
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            queries
                .par_chunks(per_kv)
                .zip(out.par_chunks_mut(per_kv))
                .enumerate()
                .try_for_each(work)
        }
        #[cfg(not(feature = "parallel"))]
        {
            queries
                .chunks(per_kv)
                .zip(out.chunks_mut(per_kv))
                .enumerate()
                .try_for_each(work)
        }
    }

    /// Attention of the query heads of kv head `h` (`queries`, `group x seq x d`) into `out`.
    /// The heads of the group are scored and summed together over the codes
    /// ([`Codec::scores_group`], [`Codec::weighted_sum_group`]: each slot read once for all).
    fn attend_head(
        &self,
        l: &Layer,
        layer: usize,
        h: usize,
        queries: &[f32],
        seq: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let (d, group, len) = (self.shape.head_dim, self.shape.group(), l.len);
        let head = &l.heads[h];
        let (kc, vc) = (l.key_codec.as_deref(), l.value_codec.as_deref());
        let isa = kernels::detect();
        // Row `g` of `scores` (stride `len`) holds query head `g`'s scores, then weights.
        let mut scores = vec![0f32; group * len];
        let mut qs = vec![0f32; group * d];
        let mut coded = Vec::new();
        let mut parts = vec![0f32; group * d];
        let first = len - seq;
        let fail =
            |g: usize, position: usize, e: Error| at(layer, Some(h * group + g), Some(position), e);
        let row = |g: usize, r: usize| (g * seq + r) * d..(g * seq + r + 1) * d;
        for r in 0..seq {
            let visible = first + r + 1;
            for g in 0..group {
                head.transform
                    .query(&queries[row(g, r)], &mut qs[g * d..(g + 1) * d]);
            }
            // Scores: sinks, codes, window, in position order.
            let ks = &head.keys;
            let a = ks.sink_rows(d).min(visible);
            let c = ks.coded_rows().min(visible - a);
            let t = visible - a - c;
            for (q, s) in qs.chunks_exact(d).zip(scores.chunks_exact_mut(len)) {
                kernels::f16_row_dots(isa, q, &ks.sinks[..a * d], &mut s[..a]);
                kernels::f16_row_dots(isa, q, &ks.tail[..t * d], &mut s[a + c..visible]);
            }
            if let Some(codec) = kc.filter(|_| c > 0) {
                let slots = &ks.slots[..c * codec.slot_bytes()];
                coded.resize(group * c, 0.0);
                codec
                    .scores_group(&qs, slots, &mut coded)
                    .map_err(|e| fail(0, first + r, e))?;
                for ((q, s), from) in qs
                    .chunks_exact(d)
                    .zip(scores.chunks_exact_mut(len))
                    .zip(coded.chunks_exact(c))
                {
                    let s = &mut s[a..a + c];
                    s.copy_from_slice(from);
                    // Each block's mean: `q . mean` on every score of the block.
                    for (start, end, mean) in ks.blocks(d).filter(|b| !b.2.is_empty()) {
                        if start >= c {
                            break;
                        }
                        let shift: f32 = q
                            .iter()
                            .zip(mean)
                            .map(|(q, &m)| q * f16_bits_to_f32(m))
                            .sum();
                        s[start..end.min(c)].iter_mut().for_each(|x| *x += shift);
                    }
                }
            }
            // One stable softmax per query head over all of them.
            for (g, s) in scores.chunks_exact_mut(len).enumerate() {
                let s = &mut s[..visible];
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                if !max.is_finite() {
                    return Err(fail(g, first + r, Error::NonFinite { index: 0 }));
                }
                let mut total = 0f32;
                for x in s.iter_mut() {
                    *x = ((*x - max) * self.score_scale).exp();
                    total += *x;
                }
                let inv = 1.0 / total;
                for x in s.iter_mut() {
                    let w = *x * inv;
                    *x = if w < WEIGHT_FLUSH { 0.0 } else { w };
                }
            }
            // Weighted sums: sinks, codes, window, plus the blocks' value means.
            let vs = &head.values;
            let a = vs.sink_rows(d).min(visible);
            let c = vs.coded_rows().min(visible - a);
            let t = visible - a - c;
            if let Some(codec) = vc.filter(|_| c > 0) {
                let slots = &vs.slots[..c * codec.slot_bytes()];
                coded.resize(group * c, 0.0);
                for (to, s) in coded.chunks_exact_mut(c).zip(scores.chunks_exact(len)) {
                    to.copy_from_slice(&s[a..a + c]);
                }
                codec
                    .weighted_sum_group(&coded, slots, &mut parts)
                    .map_err(|e| fail(0, first + r, e))?;
            }
            for (g, s) in scores.chunks_exact(len).enumerate() {
                let o = &mut out[row(g, r)];
                o.iter_mut().for_each(|x| *x = 0.0);
                kernels::f16_row_accumulate(isa, &s[..a], &vs.sinks[..a * d], o);
                if vc.is_some() && c > 0 {
                    o.iter_mut()
                        .zip(&parts[g * d..(g + 1) * d])
                        .for_each(|(x, p)| *x += p);
                    // Each block's mean, weighted by the block's total weight.
                    for (start, end, mean) in vs.blocks(d).filter(|b| !b.2.is_empty()) {
                        if start >= c {
                            break;
                        }
                        let w: f32 = s[a + start..a + end.min(c)].iter().sum();
                        o.iter_mut()
                            .zip(mean)
                            .for_each(|(x, &m)| *x += w * f16_bits_to_f32(m));
                    }
                }
                kernels::f16_row_accumulate(isa, &s[a + c..visible], &vs.tail[..t * d], o);
            }
        }
        Ok(())
    }

    /// The cache's reconstruction of every position of `layer`'s kv head `head`: keys and values
    /// (`len x d` each) in the model's space, decoded from what is stored (for engines that
    /// attend on decoded tensors, and for checking [`attend`](Self::attend)).
    pub fn reconstruct(
        &self,
        layer: usize,
        head: usize,
        keys: &mut [f32],
        values: &mut [f32],
    ) -> Result<()> {
        let l = self.layer(layer)?;
        let d = self.shape.head_dim;
        for (what, got) in [("keys", keys.len()), ("values", values.len())] {
            if got != l.len * d {
                return Err(at(
                    layer,
                    Some(head),
                    None,
                    Error::WrongLength {
                        what,
                        expected: l.len * d,
                        actual: got,
                    },
                ));
            }
        }
        if l.len == 0 {
            return Ok(());
        }
        let hd = self.head_of(l, layer, head)?;
        for (store, codec, out, is_key) in [
            (&hd.keys, l.key_codec.as_deref(), keys, true),
            (&hd.values, l.value_codec.as_deref(), values, false),
        ] {
            let a = store.sinks.len();
            let (sinks, rest) = out.split_at_mut(a);
            sinks
                .iter_mut()
                .zip(&store.sinks)
                .for_each(|(o, &b)| *o = f16_bits_to_f32(b));
            let c = store.coded_rows() * d;
            let (coded, tail) = rest.split_at_mut(c);
            if let Some(codec) = codec {
                codec
                    .decode_batch(&store.slots, coded)
                    .map_err(|e| at(layer, Some(head), None, e))?;
            }
            for (start, end, mean) in store.blocks(d) {
                for row in coded[start * d..end * d].chunks_exact_mut(d) {
                    row.iter_mut()
                        .zip(mean)
                        .for_each(|(x, &m)| *x += f16_bits_to_f32(m));
                }
            }
            tail.iter_mut()
                .zip(&store.tail)
                .for_each(|(o, &b)| *o = f16_bits_to_f32(b));
            if is_key {
                out.chunks_exact_mut(d)
                    .for_each(|row| hd.transform.key_out(row));
            }
        }
        Ok(())
    }

    /// Kv head `head` of layer `l` (number `layer`), or the error naming both.
    fn head_of<'a>(&self, l: &'a Layer, layer: usize, head: usize) -> Result<&'a Head> {
        l.heads.get(head).ok_or_else(|| {
            at(
                layer,
                Some(head),
                None,
                Error::InvalidConfig(format!("the cache has {} kv heads", self.shape.kv_heads)),
            )
        })
    }

    /// What kv head `head` of `layer` stores, borrowed as it is held: for engines that move a
    /// cache to another device or format (the CUDA crate uploads these arrays unchanged). Fails
    /// for an unknown layer or head, and for a layer that holds no position yet (its key scales
    /// are frozen by the first append).
    pub fn head_parts(&self, layer: usize, head: usize) -> Result<HeadParts<'_>> {
        let l = self.layer(layer)?;
        if l.len == 0 {
            return Err(at(layer, Some(head), None, Error::EmptyCache));
        }
        let hd = self.head_of(l, layer, head)?;
        fn side(s: &SideStore) -> SideParts<'_> {
            SideParts {
                sinks: &s.sinks,
                slots: &s.slots,
                means: &s.means,
                block_ends: &s.block_ends,
                tail: &s.tail,
            }
        }
        Ok(HeadParts {
            len: l.len,
            keys: side(&hd.keys),
            values: side(&hd.values),
            key_scale: hd.transform.key_scale.as_deref(),
        })
    }

    /// The softmax scale attention applies to scores (`1 / sqrt(d)` unless
    /// [`with_score_scale`](Self::with_score_scale) set another).
    pub fn score_scale(&self) -> f32 {
        self.score_scale
    }

    /// Bytes `layer` holds: codec slots (norms and padding included), fp16 rows (sinks, window,
    /// rows waiting for a block, fp16 sides), the blocks' fp16 means and the key scales (f32).
    pub fn layer_bytes(&self, layer: usize) -> usize {
        self.layers.get(layer).map_or(0, |l| {
            l.heads
                .iter()
                .map(|h| h.keys.bytes() + h.values.bytes() + h.transform.bytes())
                .sum()
        })
    }

    /// Bytes the whole cache holds (see [`layer_bytes`](Self::layer_bytes)).
    pub fn bytes(&self) -> usize {
        (0..self.layers.len()).map(|l| self.layer_bytes(l)).sum()
    }

    /// Bits per stored value at the current length, every overhead included: `bytes() * 8`
    /// over (positions x kv heads x 2 x d) summed over the layers. `None` when empty.
    pub fn effective_bits(&self) -> Option<f64> {
        let values: usize = self
            .layers
            .iter()
            .map(|l| l.len * self.shape.kv_heads * 2 * self.shape.head_dim)
            .sum();
        (values > 0).then(|| self.bytes() as f64 * 8.0 / values as f64)
    }
}
