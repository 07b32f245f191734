//! # fibquant-fuzz
//!
//! Fuzz targets of the FibQuant workspace: one function per target that takes arbitrary bytes
//! and must never panic. Errors are fine (they are the expected answer to most inputs); a panic
//! is either a crash of the code under test or a broken property, asserted here, that the code
//! documents:
//!
//! | target | drives | asserts beyond "no panic" |
//! |---|---|---|
//! | [`codebook_file`] | `Codebook::from_file_bytes` / `from_raw_bytes` on raw files, and on bodies wrapped in a valid zstd frame (with and without the integrity frame), then searches and a codec on the codebook | shape and integrity as announced; nearest indices in range (NaN blocks included); exact plans agree with the exhaustive search; `nearest_many` = `nearest`; encode/decode/scores finite for moderate codewords |
//! | [`slots`] | `decode_batch`, `scores`, `weighted_sum`, `scores_group`, `weighted_sum_group` on arbitrary slot bytes of any registry code | `scores` fails exactly when `decode_batch` does; no NaN (nor infinity) from moderate norms and queries; scores and sums within rounding of the decoded vectors; grouped results bit-identical to the single ones |
//! | [`encode`] | `Codec::encode` / `encode_batch` on floats with extremes, NaN, infinities, subnormals, both norm formats | non-finite input refused; an overflowing norm refused; `encode_batch` = `encode` row by row; what encode writes decodes, finitely |
//! | [`npy`] | `fibquant_gen::npy::parse_any` | `rows * cols` values; `to_bytes` then `parse` gives the same array |
//! | [`code_file`] | `fibquant_gen::codes::parse` (with the header's codebook tag made valid or not) | slot bytes = rows x slot size; `to_bytes` writes the input back byte for byte; the slots decode without panic |
//! | [`cache`] | a `KvCache` (shape and policy from the input) driven by an op stream: append, append_and_attend, attend, reconstruct, clear, with wrong lengths, huge `seq`, non-finite and out-of-fp16 values | every error is an `Error::Cache`; a failed call leaves `len`, `bytes` and the reconstruction as they were; an append adds exactly `seq` positions; moderate inputs attend to finite outputs |
//!
//! The driver (`src/main.rs`) mutates the seed corpora in `corpus/<target>/` and runs the
//! targets under `catch_unwind`; `tests/regressions.rs` replays `corpus/` and `regressions/`.

use fibquant::util::fp16::f16_bits_to_f32;
use fibquant::{
    AttentionCodebook, CachePolicy, CacheShape, Codebook, Codec, CodecConfig, Error, Integrity,
    KeyScaling, KvCache, NormFormat, SearchPlan, SideCode,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// A fuzz target: arbitrary bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of the corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("codebook_file", codebook_file),
    ("slots", slots),
    ("encode", encode),
    ("npy", npy),
    ("code_file", code_file),
    ("cache", cache),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Whether the targets walk into the bugs of the code under test that are known and not fixed
/// yet (see `known/README.md`). Off by default, so that the fuzzer looks for new ones; the
/// regression test turns it on to check the inputs in `known/` still reproduce.
static KNOWN_BUGS: AtomicBool = AtomicBool::new(false);

/// Lets the targets reach the known, unfixed bugs (`true`) or steers them around (`false`).
pub fn reach_known_bugs(on: bool) {
    KNOWN_BUGS.store(on, Ordering::Relaxed);
}

#[allow(dead_code)] // For the guards of known bugs; none at the moment.
fn known_bugs() -> bool {
    KNOWN_BUGS.load(Ordering::Relaxed)
}

/// Magnitude below which inputs count as moderate: results from moderate inputs must be finite.
pub const MODERATE: f32 = 1e6;

// ---------------------------------------------------------------------------------------------
// Reading an input.

/// Reads bytes off the front of an input; past its end every read is zero.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    /// The next little-endian u32 (zeros past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// The next little-endian u64 (zeros past the end).
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

/// A moderate float from a byte: `(b as i8) / 16`, in `[-8, 8)`.
pub fn moderate(b: u8) -> f32 {
    (b as i8) as f32 / 16.0
}

/// Values at the edges of f32 and of fp16.
pub const SPECIALS: [f32; 16] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    -f32::MAX,
    1e38,
    65504.0,
    65520.0,
    1e-40,
    f32::MIN_POSITIVE,
    -0.0,
    1e19,
    16_777_216.0,
    1e6,
    -1e30,
    3e-39,
];

/// A float from a byte, mostly moderate: bytes from `0xf0` are [`SPECIALS`].
pub fn mixed(b: u8) -> f32 {
    if b >= 0xf0 {
        SPECIALS[(b - 0xf0) as usize]
    } else {
        moderate(b)
    }
}

/// `count` floats from `bytes`, cycled (zeros when `bytes` is empty): [`moderate`] per byte
/// (`how` 0), [`mixed`] per byte (1) or little-endian f32 bits, 4 bytes each (2).
pub fn floats(bytes: &[u8], count: usize, how: u8) -> Vec<f32> {
    if bytes.is_empty() {
        return vec![0.0; count];
    }
    let at = |i: usize| bytes[i % bytes.len()];
    (0..count)
        .map(|i| match how % 3 {
            0 => moderate(at(i)),
            1 => mixed(at(i)),
            _ => f32::from_le_bytes([at(4 * i), at(4 * i + 1), at(4 * i + 2), at(4 * i + 3)]),
        })
        .collect()
}

fn is_moderate(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite() && x.abs() < MODERATE)
}

fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

fn dist_sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn l2(a: &[f32]) -> f64 {
    a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

// ---------------------------------------------------------------------------------------------
// Codecs of the registry, built once.

/// One registry code with a norm format and an attention codebook copy.
const VARIANTS: usize = 4;

fn registry_entries() -> &'static [(usize, usize, usize)] {
    static ENTRIES: OnceLock<Vec<(usize, usize, usize)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        fibquant::registry::entries()
            .map(|e| (e.dim, e.k, e.n))
            .collect()
    })
}

/// The codec of registry entry `entry` (modulo the registry's size) in variant `variant`
/// (bit 0: f32 norms, bit 1: the f32 attention codebook), built on first use.
pub fn registry_codec(entry: usize, variant: usize) -> &'static Codec {
    static CODECS: OnceLock<Vec<OnceLock<Codec>>> = OnceLock::new();
    let entries = registry_entries();
    let cells = CODECS.get_or_init(|| {
        (0..entries.len() * VARIANTS)
            .map(|_| OnceLock::new())
            .collect()
    });
    let (e, v) = (entry % entries.len(), variant % VARIANTS);
    cells[e * VARIANTS + v].get_or_init(|| {
        let (d, k, n) = entries[e];
        let norm = if v & 1 == 1 {
            NormFormat::F32
        } else {
            NormFormat::F16
        };
        let att = if v & 2 == 2 {
            AttentionCodebook::F32
        } else {
            AttentionCodebook::HalfWhereLarge
        };
        let config = CodecConfig::new(d, k, n)
            .with_norm(norm)
            .with_attention_codebook(att);
        let codec = Codec::new(config).expect("every registry code builds a codec");
        codec.prepare();
        codec
    })
}

/// Picks a registry entry from a byte. Half the bytes pick among the small codes (at most 256
/// codewords: cheap to search, fine to mutate), the other half among all of them.
fn pick_entry(b: u8) -> usize {
    let entries = registry_entries();
    if b < 0x80 {
        let small: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].2 <= 256)
            .collect();
        small[b as usize % small.len()]
    } else {
        (b as usize - 0x80) % entries.len()
    }
}

fn slot_norm(codec: &Codec, slot: &[u8]) -> f32 {
    match codec.config().norm {
        NormFormat::F16 => f16_bits_to_f32(u16::from_le_bytes([slot[0], slot[1]])),
        NormFormat::F32 => f32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]),
    }
}

// ---------------------------------------------------------------------------------------------
// codebook_file

/// A zstd frame holding `body` in raw (stored) blocks: a valid frame for any body.
pub fn raw_zstd_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: single segment, 8-byte frame content size, no checksum.
    out.push(0b1110_0000);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    const MAX_BLOCK: usize = 128 * 1024;
    let mut chunks: Vec<&[u8]> = body.chunks(MAX_BLOCK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let header = ((c.len() as u32) << 3) | u32::from(i == last); // block type 0: raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}

/// Codebook loading. Byte 0 picks how the rest is read: 0, a codebook file as is; 1, a file
/// body wrapped in a valid zstd frame and integrity frame (so that mutations reach the body's
/// checks behind the CRC); 2, a body in a bare zstd frame (a version-1 file); 3, a body through
/// `from_raw_bytes`. A codebook that loads is searched and used by a codec.
pub fn codebook_file(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.u8() % 4;
    let rest = r.rest();
    let (loaded, integrity) = match mode {
        0 => (Codebook::from_file_bytes(rest), None),
        1 => {
            let file = fibquant::codebook::format::checked_file(&raw_zstd_frame(rest));
            (Codebook::from_file_bytes(&file), Some(Integrity::Checked))
        }
        2 => (
            Codebook::from_file_bytes(&raw_zstd_frame(rest)),
            Some(Integrity::Unchecked),
        ),
        _ => (Codebook::from_raw_bytes(rest), Some(Integrity::Unchecked)),
    };
    let cb = match loaded {
        Ok(cb) => cb,
        Err(e) => {
            assert!(
                matches!(e, Error::CorruptCodebook(_)),
                "a codebook file that does not load must be a CorruptCodebook error, got {e:?}"
            );
            return;
        }
    };
    if let Some(want) = integrity {
        assert_eq!(cb.integrity(), want, "integrity of a mode-{mode} file");
    }
    let (dim, k, n) = (cb.dim(), cb.k(), cb.n());
    let h = cb
        .header()
        .expect("a codebook read from a file has its header");
    assert_eq!((h.dim as usize, h.k as usize, h.n as usize), (dim, k, n));
    assert!(
        k >= 1 && n >= 2 && dim % k == 0,
        "shape d={dim} k={k} n={n}"
    );
    assert_eq!(cb.codewords().len(), n * k);
    check_searches(&cb, rest);
    // A codec on it: Hadamard rotations are cheap to build; keep dense ones small.
    if dim.is_power_of_two() || dim <= 128 {
        codec_on_codebook(cb, rest);
    }
}

/// Nearest-codeword searches on blocks taken from `bytes`.
fn check_searches(cb: &Codebook, bytes: &[u8]) {
    let (k, n) = (cb.k(), cb.n());
    let exact = match cb.plan() {
        SearchPlan::Layered(l) => l.ivf.is_none(),
        _ => true,
    };
    let scale: f64 = cb
        .norms_sq()
        .iter()
        .fold(0f64, |m, &v| m.max(v as f64))
        .max(1e-30);
    let count = 8;
    // Moderate blocks, blocks of specials (NaN, infinities, huge, subnormal), and blocks at
    // codewords (ties, exact hits).
    let mut blocks = floats(bytes, count * k, 0);
    blocks.extend(floats(&bytes[bytes.len().min(7)..], count * k, 1));
    for i in 0..count {
        let c = (bytes.get(i).copied().unwrap_or(0) as usize * 977 + i * 31) % n;
        blocks.extend_from_slice(cb.codeword(c));
    }
    let total = blocks.len() / k;
    let mut many = vec![0u32; total];
    cb.nearest_many(&blocks, &mut many);
    for (b, block) in blocks.chunks_exact(k).enumerate() {
        let i = cb.nearest(block);
        let (j, dist) = cb.nearest_with_distance(block);
        let e = cb.nearest_exhaustive(block);
        for (what, x) in [
            ("nearest", i),
            ("with_distance", j),
            ("exhaustive", e),
            ("many", many[b]),
        ] {
            assert!(
                (x as usize) < n,
                "{what} answered {x} of {n} codewords for {block:?}"
            );
        }
        if !all_finite(block) {
            continue;
        }
        let bsq: f64 = block.iter().map(|&v| v as f64 * v as f64).sum();
        if bsq.is_nan() || bsq >= 1e30 {
            continue;
        }
        // Distances are f32 sums of `||c||^2 - 2 <x, c>`: allow their rounding.
        let tol = 1e-4 * (bsq + scale) + 1e-30;
        let d_of = |x: u32| dist_sq(block, cb.codeword(x as usize));
        let best = d_of(e);
        assert!(
            dist.is_finite() && dist >= 0.0,
            "nearest_with_distance gave distance {dist} for {block:?}"
        );
        assert!(
            (d_of(many[b]) - d_of(i)).abs() <= tol,
            "nearest_many answered {} (distance {}), nearest {i} (distance {}) for {block:?}",
            many[b],
            d_of(many[b]),
            d_of(i)
        );
        if exact {
            for (what, x) in [("nearest", i), ("nearest_with_distance", j)] {
                assert!(
                    d_of(x) <= best + tol,
                    "{what} answered {x} at distance {} but codeword {e} is at {best} (plan {:?}) for {block:?}",
                    d_of(x),
                    cb.plan()
                );
            }
        }
    }
}

/// Encodes, decodes and attends with a codec on `cb`, for a vector derived from `bytes`.
fn codec_on_codebook(cb: Codebook, bytes: &[u8]) {
    let moderate_codebook = is_moderate(cb.codewords());
    let (dim, k, n) = (cb.dim(), cb.k(), cb.n());
    let cb = Arc::new(cb);
    for norm in [NormFormat::F16, NormFormat::F32] {
        let config = CodecConfig::new(dim, k, n).with_norm(norm);
        let codec = match Codec::with_codebook(config, cb.clone()) {
            Ok(c) => c,
            // `from_raw_bytes` applies no load limits: a head dim beyond the codec's is refused
            // here (files are refused on load).
            Err(Error::InvalidConfig(_)) if dim > fibquant::MAX_DIM => return,
            Err(e) => panic!("a loaded codebook must build a codec (d={dim} k={k} n={n}): {e}"),
        };
        let x = floats(bytes, dim, 0);
        let mut slot = vec![0u8; codec.slot_bytes()];
        if codec.encode(&x, &mut slot).is_err() {
            continue;
        }
        let mut out = vec![0f32; dim];
        codec
            .decode(&slot, &mut out)
            .unwrap_or_else(|e| panic!("decoding what encode wrote failed: {e}"));
        let mut score = [0f32; 1];
        codec
            .scores(&x, &slot, &mut score)
            .unwrap_or_else(|e| panic!("scoring what encode wrote failed: {e}"));
        let mut sum = vec![0f32; dim];
        codec
            .weighted_sum(&[0.5], &slot, &mut sum)
            .unwrap_or_else(|e| panic!("summing what encode wrote failed: {e}"));
        if moderate_codebook {
            assert!(all_finite(&out), "decode of moderate input: {out:?}");
            assert!(
                score[0].is_finite(),
                "score of moderate input: {}",
                score[0]
            );
            assert!(all_finite(&sum), "weighted sum of moderate input: {sum:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// slots

/// Attention on codes. Bytes: registry entry, flags (bit 0 f32 norms, bit 1 f32 attention
/// codebook, bits 2-3 queries - 1, bit 4 raw f32 queries and weights, bit 5 keep a ragged slot
/// buffer), the length of the query bytes, the query bytes, then the slots.
pub fn slots(data: &[u8]) {
    let mut r = Reader::new(data);
    let entry = pick_entry(r.u8());
    let flags = r.u8();
    let codec = registry_codec(entry, (flags & 3) as usize);
    let g = 1 + ((flags >> 2) & 3) as usize;
    let raw = flags & 0x10 != 0;
    let qlen = r.u8() as usize;
    let qbytes = r.take(qlen);
    let mut slot_bytes = r.rest();
    let (d, sb) = (codec.dim(), codec.slot_bytes());
    if flags & 0x20 == 0 {
        slot_bytes = &slot_bytes[..slot_bytes.len() / sb * sb];
    }
    // Bound the work per input.
    let slot_bytes = &slot_bytes[..slot_bytes.len().min(300 * sb + sb / 2)];
    let how = if raw { 2 } else { 0 };
    let queries = floats(qbytes, g * d, how);
    let count = slot_bytes.len() / sb;
    let weights: Vec<f32> = floats(qbytes.get(1..).unwrap_or(&[]), g * count, how)
        .iter()
        .map(|w| if raw { *w } else { w / 8.0 })
        .collect();

    let ragged = !slot_bytes.len().is_multiple_of(sb);
    let mut decoded = vec![0f32; count * d];
    let dec = codec.decode_batch(slot_bytes, &mut decoded);
    if ragged {
        assert!(dec.is_err(), "decode_batch took a ragged buffer");
    }
    let q0 = &queries[..d];
    let mut scores = vec![0f32; count];
    let sc = codec.scores(q0, slot_bytes, &mut scores);
    let mut sum = vec![0f32; d];
    let ws = codec.weighted_sum(&weights[..count], slot_bytes, &mut sum);
    let mut gscores = vec![0f32; g * count];
    let gsc = codec.scores_group(&queries, slot_bytes, &mut gscores);
    let mut gsum = vec![0f32; g * d];
    let gws = codec.weighted_sum_group(&weights, slot_bytes, &mut gsum);
    // Wrong lengths are errors, never panics.
    let _ = codec.scores(&queries[..d - 1], slot_bytes, &mut scores);
    let _ = codec.scores(q0, slot_bytes, &mut vec![0f32; count + 1]);
    let _ = codec.weighted_sum(&weights[..count], slot_bytes, &mut vec![0f32; d + 1]);
    let _ = codec.scores_group(&queries[..g * d - 1], slot_bytes, &mut gscores);
    let _ = codec.weighted_sum_group(&weights, slot_bytes, &mut vec![0f32; g * d - 1]);
    if count > 0 {
        let mut one = vec![0f32; d];
        let _ = codec.decode(&slot_bytes[..sb], &mut one);
        let mut blk = vec![0f32; codec.config().k];
        let _ = codec.decode_block(&slot_bytes[..sb], codec.blocks() - 1, &mut blk);
        let _ = codec.decode_block(&slot_bytes[..sb], codec.blocks(), &mut blk);
        let _ = codec.slot(slot_bytes, count);
    }

    let queries_finite = all_finite(&queries);
    let weights_finite = all_finite(&weights);
    if ragged || !all_finite(q0) {
        assert!(
            sc.is_err(),
            "scores took a ragged buffer or a non-finite query"
        );
    }
    if ragged || !queries_finite {
        assert!(
            gsc.is_err(),
            "scores_group took a ragged buffer or a non-finite query"
        );
    }
    if ragged || !all_finite(&weights[..count]) {
        assert!(
            ws.is_err(),
            "weighted_sum took a ragged buffer or a non-finite weight"
        );
    }
    if ragged || !weights_finite {
        assert!(
            gws.is_err(),
            "weighted_sum_group took a ragged buffer or a non-finite weight"
        );
    }
    if ragged {
        return;
    }
    if all_finite(q0) {
        // The same slots are refused by decoding and by scoring.
        assert_eq!(
            dec.is_ok(),
            sc.is_ok(),
            "decode_batch {dec:?} but scores {sc:?} on the same slots"
        );
    }
    if queries_finite {
        assert_eq!(
            sc.is_ok(),
            gsc.is_ok(),
            "scores {sc:?}, scores_group {gsc:?}"
        );
    }
    if dec.is_err() {
        for (what, res) in [
            ("scores", &sc),
            ("weighted_sum", &ws),
            ("group", &gsc),
            ("gsum", &gws),
        ] {
            if let Err(e) = res {
                assert!(
                    matches!(e, Error::CorruptSlot(_) | Error::NonFinite { .. }),
                    "{what} failed with {e:?}"
                );
            }
        }
        return;
    }
    let norms: Vec<f32> = slot_bytes
        .chunks_exact(sb)
        .map(|s| slot_norm(codec, s))
        .collect();
    let moderate_slots = is_moderate(&norms);
    let moderate_q = is_moderate(&queries);
    let moderate_w = is_moderate(&weights);
    // Attention may read an f16 copy of the codebook: 2^-11 relative, plus f32 rounding.
    let rel = 2e-3;
    if sc.is_ok() {
        if moderate_slots && moderate_q {
            assert!(
                all_finite(&scores),
                "non-finite score from moderate input: {scores:?}"
            );
        }
        if moderate_slots && moderate_q {
            // Scores are sums in the rotated domain: their rounding is relative to
            // `||q|| ||x_hat||`, not to the terms of the dot product in the original one.
            let qn = l2(q0);
            for (i, (s, x)) in scores.iter().zip(decoded.chunks_exact(d)).enumerate() {
                let want = dot(q0, x);
                let tol = rel * qn * l2(x) + 1e-30;
                assert!(
                    (*s as f64 - want).abs() <= tol,
                    "score {i} is {s}, the decoded vector's dot product {want} (tol {tol})"
                );
            }
        }
    }
    if let (Ok(()), Ok(())) = (&sc, &gsc) {
        for (i, (a, b)) in gscores[..count].iter().zip(&scores).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "scores_group row 0 slot {i}: {a}, scores: {b}"
            );
        }
        for q in 1..g {
            let mut single = vec![0f32; count];
            codec
                .scores(&queries[q * d..(q + 1) * d], slot_bytes, &mut single)
                .expect("scores_group succeeded on these slots");
            for (i, (a, b)) in gscores[q * count..(q + 1) * count]
                .iter()
                .zip(&single)
                .enumerate()
            {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "scores_group row {q} slot {i}: {a}, scores alone: {b}"
                );
            }
        }
    }
    if ws.is_ok() && moderate_slots && moderate_w {
        assert!(
            all_finite(&sum),
            "non-finite weighted sum from moderate input: {sum:?}"
        );
        // Accumulated in the rotated domain: rounding relative to `sum |w_i| ||x_hat_i||`.
        let mag: f64 = decoded
            .chunks_exact(d)
            .zip(&weights)
            .map(|(x, &w)| (w as f64).abs() * l2(x))
            .sum();
        for j in 0..d {
            let mut want = 0f64;
            for (i, x) in decoded.chunks_exact(d).enumerate() {
                want += weights[i] as f64 * x[j] as f64;
            }
            let tol = rel * mag + 1e-20;
            assert!(
                (sum[j] as f64 - want).abs() <= tol,
                "weighted sum coordinate {j} is {}, the decoded vectors' {want} (tol {tol})",
                sum[j]
            );
        }
    }
    if let (Ok(()), Ok(())) = (&ws, &gws) {
        if moderate_slots && moderate_w {
            assert!(
                all_finite(&gsum),
                "non-finite grouped sum from moderate input"
            );
        }
        for q in 0..g {
            let mut single = vec![0f32; d];
            codec
                .weighted_sum(
                    &weights[q * count..(q + 1) * count],
                    slot_bytes,
                    &mut single,
                )
                .expect("weighted_sum_group succeeded on these slots");
            for (j, (a, b)) in gsum[q * d..(q + 1) * d].iter().zip(&single).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "weighted_sum_group row {q} coordinate {j}: {a}, weighted_sum alone: {b}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// encode

/// Encoding. Bytes: registry entry, flags (bit 0 f32 norms, bits 1-2 rows - 1, bits 3-4 how
/// floats are made: moderate, mixed with specials, raw f32 bits; bit 5 scale every value by
/// the next byte's power of two), then the bytes the floats are made from.
pub fn encode(data: &[u8]) {
    let mut r = Reader::new(data);
    let entry = pick_entry(r.u8());
    let flags = r.u8();
    let codec = registry_codec(entry, (flags & 1) as usize);
    let rows = 1 + ((flags >> 1) & 3) as usize;
    let how = (flags >> 3) & 3;
    let scale = if flags & 0x20 != 0 {
        2f32.powi(r.u8() as i8 as i32)
    } else {
        1.0
    };
    let d = codec.dim();
    let sb = codec.slot_bytes();
    let xs: Vec<f32> = floats(r.rest(), rows * d, how)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    let mut batch = vec![0u8; rows * sb];
    let batch_res = codec.encode_batch(&xs, &mut batch);
    let mut first_err = None;
    for (row, x) in xs.chunks_exact(d).enumerate() {
        let mut slot = vec![0xa5u8; sb];
        let res = codec.encode(x, &mut slot);
        let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        match &res {
            Err(Error::NonFinite { index }) => {
                assert!(
                    !x[*index].is_finite(),
                    "NonFinite at {index} of a finite value"
                );
            }
            Err(Error::NormOverflow { .. }) => {
                assert!(all_finite(x));
                let max = match codec.config().norm {
                    NormFormat::F16 => 65504.0,
                    NormFormat::F32 => f32::MAX as f64,
                };
                assert!(norm > max * 0.999, "norm {norm} refused as overflowing");
            }
            Err(e) => panic!("encode failed with {e:?}"),
            Ok(()) => {
                assert!(all_finite(x), "encode took a non-finite vector");
                let mut out = vec![0f32; d];
                codec
                    .decode(&slot, &mut out)
                    .unwrap_or_else(|e| panic!("what encode wrote does not decode: {e}"));
                let stored = slot_norm(codec, &slot);
                if stored < MODERATE {
                    assert!(all_finite(&out), "decode of a moderate norm: {out:?}");
                }
                // Encoding is deterministic, and what the batch wrote for this row.
                let mut again = vec![0u8; sb];
                codec.encode(x, &mut again).expect("encoded once");
                assert_eq!(slot, again, "encode is not deterministic");
                if batch_res.is_ok() {
                    assert_eq!(&batch[row * sb..(row + 1) * sb], &slot[..], "row {row}");
                }
            }
        }
        if res.is_err() && first_err.is_none() {
            first_err = Some(row);
        }
    }
    match (first_err, &batch_res) {
        (None, Ok(())) => {}
        (Some(row), Err(Error::Row { row: r, .. })) => {
            // Parallel batches may report any failing row; sequential ones the first.
            assert!(
                *r >= row,
                "encode_batch blamed row {r}, first failing row is {row}"
            );
        }
        (a, b) => panic!("rows failing from {a:?}, but encode_batch said {b:?}"),
    }
    // Wrong lengths.
    let _ = codec.encode(&xs[..d - 1], &mut vec![0u8; sb]);
    let _ = codec.encode(&xs[..d], &mut vec![0u8; sb + 1]);
    let _ = codec.encode_batch(&xs[..xs.len() - 1], &mut batch);
    let _ = codec.encode_batch(&xs, &mut batch[..sb * rows - 1]);
}

// ---------------------------------------------------------------------------------------------
// npy

/// The generator's `.npy` reader on the raw bytes.
pub fn npy(data: &[u8]) {
    use fibquant_gen::npy;
    let Ok((a, _dtype)) = npy::parse_any(data) else {
        return;
    };
    assert_eq!(
        Some(a.data.len()),
        a.rows.checked_mul(a.cols),
        "shape and data"
    );
    // What it writes, it reads back.
    let bytes = npy::to_bytes(&a);
    let b = npy::parse(&bytes).unwrap_or_else(|e| panic!("to_bytes wrote an unreadable file: {e}"));
    assert_eq!((a.rows, a.cols), (b.rows, b.cols));
    assert!(
        a.data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "values changed through to_bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// code_file

/// The generator's code-file parser (the runtime's format). Byte 0: bit 0 makes the header's
/// codebook tag the embedded codebook's of the header's `(d, k, N)` (so that mutations get past
/// the tag check), bit 1 recomputes a version-2 file's checksums after that (so that mutations
/// reach the fields behind them); the rest is the file.
pub fn code_file(data: &[u8]) {
    use fibquant_gen::codes;
    let mut r = Reader::new(data);
    let flags = r.u8();
    let (fix_tag, fix_crc) = (flags & 1 == 1, flags & 2 == 2);
    let mut file = r.rest().to_vec();
    let u = |f: &[u8], o: usize| u32::from_le_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
    let v1_header = fibquant::codec::codefile::V1_HEADER_BYTES;
    if fix_tag && file.len() >= v1_header {
        let (d, k, n) = (u(&file, 8), u(&file, 12), u(&file, 16));
        if let Ok(tag) = codes::embedded_tag(d as usize, k as usize, n as usize) {
            file[48..56].copy_from_slice(&tag);
        }
    }
    if fix_crc && file.len() >= codes::HEADER_BYTES && u(&file, 4) == 2 {
        let header = fibquant::util::crc::crc32c(&file[..56]);
        let slots = fibquant::util::crc::crc32c(&file[codes::HEADER_BYTES..]);
        file[56..60].copy_from_slice(&header.to_le_bytes());
        file[60..64].copy_from_slice(&slots.to_le_bytes());
    }
    let Ok(parsed) = codes::parse(&file, None) else {
        return;
    };
    let codec = &parsed.codec;
    assert_eq!(parsed.slots.len(), parsed.rows * codec.slot_bytes());
    let tag: [u8; 8] = file[48..56].try_into().expect("8 bytes");
    let back = codes::to_bytes(codec, parsed.rows, &parsed.slots, tag)
        .unwrap_or_else(|e| panic!("a parsed file does not serialize: {e}"));
    // Version 2 is written back byte for byte; a version-1 file is written as version 2, which
    // parses to the same slots.
    if u(&file, 4) == 2 {
        assert!(back == file, "to_bytes does not write the parsed file back");
    } else {
        let again = codes::parse(&back, None).expect("what to_bytes writes parses");
        assert!(again.slots == parsed.slots && again.rows == parsed.rows);
    }
    let rows = parsed.rows.min(64);
    let slots = &parsed.slots[..rows * codec.slot_bytes()];
    let mut out = vec![0f32; rows * codec.dim()];
    if codec.decode_batch(slots, &mut out).is_ok() && codec.config().norm == NormFormat::F16 {
        assert!(all_finite(&out), "decoded f16-norm slots are not finite");
    }
}

// ---------------------------------------------------------------------------------------------
// cache

const SIDE_CODES: [SideCode; 12] = [
    SideCode::Rate(4.0),
    SideCode::Rate(2.0),
    SideCode::Rate(1.0),
    SideCode::Rate(0.5),
    SideCode::Rate(3.0),
    SideCode::Fp16,
    SideCode::Code { k: 1, n: 16 },
    SideCode::Code { k: 2, n: 4 },
    SideCode::Code { k: 4, n: 256 },
    SideCode::Code { k: 8, n: 2 },
    SideCode::Rate(2.5),
    SideCode::Code { k: 3, n: 8 },
];

const HEAD_DIMS: [usize; 8] = [64, 128, 96, 64, 8, 1, 600, 0];

/// Sequence lengths beyond the small ones: values whose products with heads and head dims
/// wrap around.
const HUGE_SEQ: [usize; 6] = [
    usize::MAX,
    1 << 63,
    (1 << 58) + 1,
    1 << 58,
    usize::MAX / 64 + 1,
    1 << 32,
];

fn cache_state(c: &KvCache) -> (Vec<usize>, usize, bool) {
    let layers = c.shape().layers;
    (
        (0..layers + 1).map(|l| c.len(l)).collect(),
        c.bytes(),
        c.is_empty(),
    )
}

/// Every layer's reconstruction (bounded: only small caches).
fn reconstruction(c: &KvCache) -> Vec<Vec<u32>> {
    let s = *c.shape();
    let mut all = Vec::new();
    for l in 0..s.layers {
        let n = c.len(l) * s.head_dim;
        if n > 1 << 16 {
            continue;
        }
        for h in 0..s.kv_heads {
            let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
            match c.reconstruct(l, h, &mut k, &mut v) {
                Ok(()) => all.push(k.iter().chain(&v).map(|x| x.to_bits()).collect()),
                Err(e) => all.push(vec![u32::MAX, format!("{e}").len() as u32]),
            }
        }
    }
    all
}

/// A KV cache driven by an op stream. Header bytes: shape (layers, kv heads, group, head dim),
/// codes (key, value), sinks and window, block length, flags (centering, key scaling, score
/// scale, a per-layer override). Then ops of 4 bytes each and their values: opcode (append,
/// append and attend, attend, clear, reconstruct), layer, sequence length, and a byte choosing
/// how values are made and which length to get wrong.
pub fn cache(data: &[u8]) {
    let mut r = Reader::new(data);
    let b = r.u8();
    let layers = 1 + (b & 1) as usize;
    let kv_heads = 1 + ((b >> 1) & 1) as usize;
    let group = 1 + ((b >> 2) & 1) as usize;
    let head_dim = HEAD_DIMS[(b >> 5) as usize];
    let shape = CacheShape {
        layers,
        // One header in four asks for query heads that the kv heads do not divide.
        query_heads: kv_heads * group + usize::from(b & 0x18 == 0x18),
        kv_heads,
        head_dim,
    };
    let codes = r.u8();
    let key = SIDE_CODES[(codes & 0xf) as usize % SIDE_CODES.len()];
    let value = SIDE_CODES[(codes >> 4) as usize % SIDE_CODES.len()];
    let sw = r.u8();
    let block = r.u8();
    let flags = r.u8();
    let mut policy = CachePolicy::plain(key, value)
        .with_sinks((sw & 7) as usize)
        .with_window((sw >> 3 & 7) as usize)
        .with_centering(flags & 1 != 0, flags & 2 != 0)
        .with_key_scaling(if flags & 4 != 0 {
            KeyScaling::Balanced
        } else {
            KeyScaling::None
        });
    if block & 0x80 != 0 {
        policy = policy.with_block_len((block & 0xf) as usize);
    }
    if flags & 8 != 0 {
        let o = SIDE_CODES[(flags >> 4) as usize % SIDE_CODES.len()];
        policy = policy.with_layer((block >> 4 & 3) as usize, o, SideCode::Fp16);
    }
    let mut cache = match KvCache::new(shape, policy) {
        Ok(c) => c,
        Err(_) => return,
    };
    if block & 0x40 != 0 {
        let scale = mixed(r.u8());
        match cache.with_score_scale(scale) {
            Ok(c) => cache = c,
            Err(_) => return,
        }
    }
    let d = head_dim;
    let (kvh, qh) = (shape.kv_heads, shape.query_heads);
    // Whether every position cached came from moderate values (then attention is finite).
    let mut clean = true;
    for _ in 0..24 {
        if r.pos >= data.len() {
            break;
        }
        let op = r.u8() % 6;
        let layer = (r.u8() % (layers as u8 + 1)) as usize;
        let sb = r.u8();
        let seq = if sb >= 0xf8 {
            HUGE_SEQ[(sb - 0xf8) as usize % HUGE_SEQ.len()]
        } else {
            (sb % 6) as usize
        };
        let vb = r.u8();
        let how = vb & 3; // 0 moderate, 1 mixed, 2 raw bits, 3 moderate scaled by 2^12
        let wrong = (vb >> 2) & 7; // 0-3 right lengths; 4 keys, 5 values, 6 queries, 7 out
        let vals = r.take(1 + (vb >> 5) as usize * 8);
        // Small sequences only allocate what they name; huge ones get a small buffer.
        let rows = if seq <= 8 { seq } else { 1 };
        let make = |heads: usize, off: usize, bad: bool| -> Vec<f32> {
            let n = (heads * rows * d + usize::from(bad))
                .saturating_sub(2 * usize::from(bad && heads * rows * d > 0));
            let v = floats(
                vals.get(off.min(vals.len())..).unwrap_or(&[]),
                n,
                how.min(2),
            );
            if how == 3 {
                v.into_iter().map(|x| x * 4096.0).collect()
            } else {
                v
            }
        };
        let keys = make(kvh, 0, wrong == 4);
        let values = make(kvh, 1, wrong == 5);
        let queries = make(qh, 2, wrong == 6);
        let out_len = (qh * rows * d + usize::from(wrong == 7)).min(1 << 20);
        let mut out = vec![0f32; out_len];
        let before = cache_state(&cache);
        let recon_before = reconstruction(&cache);
        let moderate_in = how == 0 && is_moderate(&keys) && is_moderate(&values);
        let res = match op {
            0 => cache.append(layer, &keys, &values, seq),
            1 => cache.append_and_attend(layer, &queries, &keys, &values, seq, &mut out),
            2 => cache.attend(layer, &queries, seq, &mut out),
            3 => {
                let (mut k, mut v) = (
                    vec![0f32; cache.len(layer) * d],
                    vec![0f32; cache.len(layer) * d],
                );
                if k.len() <= 1 << 16 {
                    cache.reconstruct(layer, 0, &mut k, &mut v)
                } else {
                    Ok(())
                }
            }
            4 => {
                cache.clear();
                clean = true;
                assert!(cache.is_empty() && cache.bytes() == 0, "clear left data");
                continue;
            }
            _ => {
                let _ = cache.effective_bits();
                let _ = cache.codecs(layer);
                Ok(())
            }
        };
        let after = cache_state(&cache);
        match res {
            Err(e) => {
                assert!(
                    matches!(e, Error::Cache { .. }),
                    "op {op} failed with an untyped {e:?}"
                );
                assert_eq!(before, after, "op {op} failed ({e}) but changed the cache");
                assert!(
                    reconstruction(&cache) == recon_before,
                    "op {op} failed ({e}) but changed what the cache reconstructs"
                );
            }
            Ok(()) => {
                if op <= 1 {
                    assert_eq!(
                        after.0[layer],
                        before.0[layer] + seq,
                        "append of {seq} positions"
                    );
                    let want = kvh as u128 * seq as u128 * d as u128;
                    assert_eq!(
                        keys.len() as u128,
                        want,
                        "append took {} key values for seq {seq}",
                        keys.len()
                    );
                }
                if op == 2 || op == 3 {
                    assert_eq!(before, after, "a read-only op changed the cache");
                }
                if op <= 1 && seq > 0 {
                    clean &= moderate_in;
                }
                if (op == 1 || op == 2) && clean && how == 0 && is_moderate(&queries) {
                    assert!(
                        all_finite(&out),
                        "attention of moderate values is not finite"
                    );
                }
            }
        }
    }
}
