//! `fibquant-gen bench`: encode/decode speed per rate point, peers at matched bits, attention on
//! codes against decode-then-compute, fp16 and f32 over a cache larger than the last-level cache,
//! memory-copy bandwidth, and parallel batch encode. Everything in one run, single-threaded except
//! the parallel section, medians over repeats.

use fibquant::{registry, Codec, CodecConfig};
use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::Instant;

/// One `bench --json` report: the sections run, each a list of rows. `bench --markdown` renders
/// it, also from a saved file (the reports under `docs/bench/` parse as this type).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The runtime's kernel selection, as `Debug` prints it.
    pub kernels: String,
    /// Repeats per measurement.
    pub repeats: usize,
    /// Encode/decode per rate point (and peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<Vec<CodecRow>>,
    /// Inverted file and default encoder against exhaustive search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_encoder: Option<Vec<FastEncoderRow>>,
    /// Exact searches against exhaustive search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_search: Option<Vec<ExactSearchRow>>,
    /// Attention per head dimension, each starting with its memcpy row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<AttentionRow>>,
    /// Batch encode on one thread and on all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Vec<ParallelRow>>,
}

/// Encode/decode speed and MSE of one codec.
#[derive(Debug, Clone, Copy)]
pub struct CodecSpeed {
    /// Encode ns per vector.
    pub encode_ns: f64,
    /// Decode ns per vector.
    pub decode_ns: f64,
    /// Mean normalized MSE of the round trip.
    pub mse: f64,
    /// Bytes per encoded vector.
    pub bytes_per_vector: usize,
}

/// One implementation at one `(d, b)` of the codec section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodecRow {
    /// `fibquant k=.. N=..`, `fibquant scalar ..` or a peer's name.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Head dimension.
    pub dim: usize,
    /// Rate in bits per coordinate.
    pub rate_bits: f64,
    /// Encode ns per vector.
    pub encode_ns: f64,
    /// Decode ns per vector.
    pub decode_ns: f64,
    /// Mean normalized MSE.
    pub mse: f64,
    /// Bytes per encoded vector.
    pub bytes_per_vector: usize,
}

impl CodecRow {
    /// The row of `speed`, for implementation `name` at `(dim, rate_bits)`.
    pub fn new(name: String, dim: usize, rate_bits: f64, speed: CodecSpeed) -> CodecRow {
        CodecRow {
            implementation: name,
            dim,
            rate_bits,
            encode_ns: speed.encode_ns,
            decode_ns: speed.decode_ns,
            mse: speed.mse,
            bytes_per_vector: speed.bytes_per_vector,
        }
    }
}

/// A row of the attention section: the memory-copy reference of a head dimension, or one
/// method's decode step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "section")]
pub enum AttentionRow {
    /// Memory-copy bandwidth, measured before the steps of each head dimension.
    #[serde(rename = "memcpy")]
    Memcpy(MemcpyRow),
    /// One decode step of one method over all heads.
    #[serde(rename = "attention")]
    Step(AttentionStep),
}

/// Memory-copy bandwidth on a buffer larger than the last-level cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemcpyRow {
    /// Head dimension of the steps that follow (absent in the oldest reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// Bytes copied per second.
    pub bytes_per_second: f64,
    /// Buffer size.
    pub buffer_bytes: usize,
}

/// One attention decode step over all heads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttentionStep {
    /// Head dimension.
    pub dim: usize,
    /// Keys per head.
    pub context: usize,
    /// Heads.
    pub heads: usize,
    /// `plain fp16`, `plain f32`, `on codes` or `decode then compute`.
    pub method: String,
    /// The code (`fp16`, `f32` or a codec's name).
    pub code: String,
    /// Bits per coordinate of the code; `None` for plain f32.
    pub rate_bits: Option<f64>,
    /// Milliseconds per step.
    pub step_ms: f64,
    /// Nanoseconds per key and head.
    pub ns_per_key: f64,
    /// Bytes of K and V read per step.
    pub bytes_read: f64,
    /// Bytes read per key.
    pub bytes_per_key: f64,
    /// Read bandwidth.
    pub bytes_per_second: f64,
    /// Read bandwidth over the memcpy bandwidth.
    pub fraction_of_memcpy: f64,
    /// Median over rounds of fp16 time / this time (absent for decode-then-compute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_fp16: Option<f64>,
    /// Decode-then-compute time / this time (on-codes rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_decode_then_compute: Option<f64>,
}

/// Batch encode of one code, one thread against all cores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParallelRow {
    /// Always `parallel encode`.
    pub section: String,
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Codebook size.
    pub n: usize,
    /// Threads of the parallel run.
    pub threads: usize,
    /// Vectors per second on one thread.
    pub single_vectors_per_second: f64,
    /// Vectors per second on all threads.
    pub parallel_vectors_per_second: f64,
    /// Parallel over single throughput.
    pub speedup: f64,
}

/// A row of the fast-encoder section: the inverted file alone at one probe count, or the
/// default encoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method")]
pub enum FastEncoderRow {
    /// The inverted file alone.
    #[serde(rename = "ivf")]
    Ivf(IvfRow),
    /// What `Codebook::nearest` does by default.
    #[serde(rename = "encoder")]
    Encoder(EncoderRow),
}

/// The inverted file alone at one probe count, against exhaustive search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IvfRow {
    /// Always `fast encoder`.
    pub section: String,
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Codebook size.
    pub n: usize,
    /// Cells probed.
    pub probes: usize,
    /// Cells of the inverted file.
    pub cells: Option<usize>,
    /// Exhaustive search ns per block.
    pub exhaustive_ns_per_block: f64,
    /// Inverted-file ns per block.
    pub ivf_ns_per_block: f64,
    /// Exhaustive over inverted-file time.
    pub speedup: f64,
    /// MSE of the exhaustive answers.
    pub mse_exhaustive: f64,
    /// MSE of the inverted-file answers.
    pub mse_ivf: f64,
    /// MSE loss against exhaustive search, dB.
    pub loss_db: f64,
    /// Whether this probe count is the encoder's default for this codebook.
    pub default: bool,
}

/// The default encoder (`Codebook::nearest`) against exhaustive search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderRow {
    /// Always `fast encoder`.
    pub section: String,
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Codebook size.
    pub n: usize,
    /// Default probes of the inverted file, if the codebook has one.
    pub probes: Option<usize>,
    /// Fraction of blocks the certified shortlists answer, if the codebook has them.
    pub certified: Option<f64>,
    /// Exhaustive search ns per block.
    pub exhaustive_ns_per_block: f64,
    /// Default encoder ns per block.
    pub encoder_ns_per_block: f64,
    /// Exhaustive over encoder time.
    pub speedup: f64,
    /// MSE of the exhaustive answers.
    pub mse_exhaustive: f64,
    /// MSE of the encoder's answers.
    pub mse_encoder: f64,
    /// MSE loss against exhaustive search, dB.
    pub loss_db: f64,
}

/// The exact searches of one codebook against exhaustive search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExactSearchRow {
    /// Always `exact search`.
    pub section: String,
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Codebook size.
    pub n: usize,
    /// Cells of the ball search.
    pub cells: usize,
    /// Exhaustive search ns per block.
    pub exhaustive_ns_per_block: f64,
    /// Ball search alone, ns per block.
    pub balls_ns_per_block: f64,
    /// The default search (shortlists, then balls), ns per block; absent in reports from
    /// before the shortlists, which timed the ball search as the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ns_per_block: Option<f64>,
    /// Fraction of blocks the certified shortlists answer.
    #[serde(default)]
    pub certified: Option<f64>,
    /// Exhaustive over default time.
    pub speedup: f64,
    /// Whether every answer equalled the exhaustive one.
    pub identical: bool,
}

/// Bench settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Repeats per measurement (the median is reported).
    pub repeats: usize,
    /// Vectors per encode/decode measurement.
    pub vectors: usize,
    /// fp16 bytes of the attention working set (K and V of all heads).
    pub attention_bytes: usize,
    /// Context lengths for the attention section.
    pub contexts: [usize; 2],
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            repeats: 5,
            vectors: 4096,
            attention_bytes: 1 << 30,
            contexts: [4096, 32768],
        }
    }
}

/// Median of timings in seconds.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Runs `f` `repeats` times and returns the median seconds.
pub fn time(repeats: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Gaussian rows with norms spread over two orders of magnitude.
pub fn rows(count: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = fibquant::util::rng::Xoshiro256::new(seed);
    let mut out = Vec::with_capacity(count * d);
    for _ in 0..count {
        let s = 10f64.powf(rng.next_open01() * 2.0 - 1.0);
        out.extend((0..d).map(|_| (rng.next_gaussian() * s) as f32));
    }
    out
}

/// Mean of `||x - y||^2 / ||x||^2` over rows.
pub fn nmse(x: &[f32], y: &[f32], d: usize) -> f64 {
    let mut total = 0.0;
    for (a, b) in x.chunks(d).zip(y.chunks(d)) {
        let e: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
        let n: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum();
        total += e / n;
    }
    total / (x.len() / d) as f64
}

/// The codes benchmarked at each rate: the best vector code, the best one with N <= 256 (when
/// different), the structured codes whose indices take the same bits (the E8 code: 16 bits per
/// 8 coordinates, `log2(64497) / 8 = 1.997` bits of information, listed at b = 2) and the
/// scalar code. `FIBQUANT_BENCH_ONLY=a,b` keeps only codes whose name contains
/// one of the comma-separated strings (for profiling one code; not for published tables).
pub fn codes_at(d: usize, rate: f64) -> Vec<(String, usize, usize)> {
    let only = std::env::var("FIBQUANT_BENCH_ONLY").ok();
    let mut out = all_codes_at(d, rate);
    if let Some(only) = only {
        out.retain(|(name, _, _)| only.split(',').any(|p| name.contains(p.trim())));
    }
    out
}

fn all_codes_at(d: usize, rate: f64) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let best = registry::entries()
        .filter(|e| e.dim == d && (e.rate_bits - rate).abs() < 1e-9 && e.k > 1)
        .min_by(|a, b| a.mse.total_cmp(&b.mse));
    if let Some(e) = best {
        out.push((format!("fibquant k={} N={}", e.k, e.n), e.k, e.n));
    }
    // The best code with a small codebook (N <= 256): cheaper to encode when the best one is large.
    let small = registry::entries()
        .filter(|e| e.dim == d && (e.rate_bits - rate).abs() < 1e-9 && e.k > 1 && e.n <= 256)
        .min_by(|a, b| a.mse.total_cmp(&b.mse));
    if let (Some(s), Some(b)) = (small, best) {
        if (s.k, s.n) != (b.k, b.n) {
            out.push((format!("fibquant k={} N={}", s.k, s.n), s.k, s.n));
        }
    }
    // Codebooks whose N is not a power of two store the same bits per coordinate as the rate
    // they round up to: same bytes per vector.
    for e in registry::entries() {
        if e.dim == d && !e.n.is_power_of_two() && (e.stored_bits() - rate).abs() < 1e-9 {
            out.push((format!("fibquant k={} N={}", e.k, e.n), e.k, e.n));
        }
    }
    if rate.fract() == 0.0 && rate >= 1.0 {
        let n = 1usize << rate as u32;
        if registry::entries().any(|e| (e.dim, e.k, e.n) == (d, 1, n)) {
            out.push((format!("fibquant scalar k=1 N={n}"), 1, n));
        }
    }
    out
}

/// Encode and decode ns per vector (single thread) and MSE, for one codec.
pub fn codec_speed(codec: &Codec, x: &[f32], repeats: usize) -> CodecSpeed {
    let d = codec.dim();
    let count = x.len() / d;
    let sb = codec.slot_bytes();
    let mut slots = vec![0u8; count * sb];
    let mut y = vec![0f32; x.len()];
    let enc = time(repeats, || {
        for (row, slot) in x.chunks_exact(d).zip(slots.chunks_exact_mut(sb)) {
            codec.encode(row, slot).unwrap();
        }
        black_box(&slots);
    });
    let dec = time(repeats, || {
        for (slot, row) in slots.chunks_exact(sb).zip(y.chunks_exact_mut(d)) {
            codec.decode(slot, row).unwrap();
        }
        black_box(&y);
    });
    CodecSpeed {
        encode_ns: enc * 1e9 / count as f64,
        decode_ns: dec * 1e9 / count as f64,
        mse: nmse(x, &y, d),
        bytes_per_vector: sb,
    }
}

/// Section 1 (and peers, when compiled in): encode/decode per rate point.
pub fn encode_decode(s: &Settings) -> Vec<CodecRow> {
    let mut out = Vec::new();
    for d in [64usize, 128] {
        let x = rows(s.vectors, d, 11 + d as u64);
        for rate in [0.5, 1.0, 2.0, 3.0, 4.0] {
            for (name, k, n) in codes_at(d, rate) {
                let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
                let speed = codec_speed(&codec, &x, s.repeats);
                out.push(CodecRow::new(name, d, rate, speed));
            }
            #[cfg(feature = "peers")]
            out.extend(crate::peers::speed(d, rate, &x, s.repeats));
        }
    }
    out
}

/// `e^x` for `-60 <= x <= 0` (within 2 ulp), branch-free so that softmax loops vectorize, as
/// CPU inference engines' softmax kernels do: `x = n ln 2 + r` with `|r| <= ln(2) / 2`, a
/// degree-7 Taylor polynomial for `e^r` (truncation below `3e-9` relative) and `2^n` from the
/// exponent bits.
#[inline(always)]
pub fn exp_softmax(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round-to-nearest of x / ln 2 with the 1.5 * 2^23 trick (exact for |x / ln 2| < 2^22).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Softmax of `scale * scores`, in place, with [`exp_softmax`]. Terms below `e^-60` of the
/// largest are set to zero (as engines running with flush-to-zero get): over a long context the
/// tail of the softmax underflows into subnormal numbers, and every later multiply by one costs a
/// microcode assist of over a hundred cycles, which would swamp what the benchmark measures for
/// every method.
///
/// All methods share it. With AVX2 and FMA (what CPU engines' softmax kernels use) the same
/// source is compiled for 8-lane registers; the compiler never fuses or reorders the
/// floating-point operations, so the result is the same either way.
fn softmax(scores: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU features were just checked.
        unsafe { softmax_avx2(scores, scale) };
        return;
    }
    softmax_body(scores, scale)
}

/// [`softmax`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(scores: &mut [f32], scale: f32) {
    softmax_body(scores, scale)
}

#[inline(always)]
fn softmax_body(scores: &mut [f32], scale: f32) {
    let mut m = f32::NEG_INFINITY;
    for s in scores.iter_mut() {
        *s *= scale;
        m = m.max(*s);
    }
    for s in scores.iter_mut() {
        let x = *s - m;
        *s = if x < -60.0 { 0.0 } else { exp_softmax(x) };
    }
    // Eight partial sums, so that the compiler vectorizes the reduction too.
    let mut lanes = [0f32; 8];
    let mut eights = scores.chunks_exact(8);
    for e in eights.by_ref() {
        for (a, v) in lanes.iter_mut().zip(e) {
            *a += v;
        }
    }
    let sum: f32 = lanes.iter().sum::<f32>() + eights.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    scores.iter_mut().for_each(|s| *s *= inv);
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums so the compiler vectorizes.
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    acc.iter().sum()
}

/// `scores[i] = <q, keys row i>` for f32 key rows of length `q.len()`.
fn score_rows(q: &[f32], keys: &[f32], scores: &mut [f32]) {
    for (s, key) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
        *s = dot(q, key);
    }
}

/// `out += sum_i weights[i] * values row i` for f32 value rows of length `out.len()`.
fn add_weighted_rows(weights: &[f32], values: &[f32], out: &mut [f32]) {
    let d = out.len();
    for (&w, val) in weights.iter().zip(values.chunks_exact(d)) {
        for (o, x) in out.iter_mut().zip(val) {
            *o += w * x;
        }
    }
}

/// Plain attention for one head over f32 keys/values.
fn attend_f32(q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], out: &mut [f32]) {
    score_rows(q, k, scores);
    softmax(scores, 1.0 / (q.len() as f32).sqrt());
    out.iter_mut().for_each(|o| *o = 0.0);
    add_weighted_rows(scores, v, out);
}

/// Plain attention over fp16 keys/values, converted to f32 on the fly. With AVX2, FMA and F16C
/// (what CPU engines use) the conversion is fused into the dot product and the weighted sum;
/// otherwise keys are converted in tiles with `half` and processed as f32.
fn attend_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scores: &mut [f32],
    out: &mut [f32],
    tile: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if fused_f16_available() && q.len().is_multiple_of(16) {
        // SAFETY: the CPU features were checked and d is a multiple of 16.
        unsafe { attend_f16_fused(q, k, v, scores, out) };
        return;
    }
    attend_f16_tiles(q, k, v, scores, out, tile)
}

/// Portable fp16 attention: convert tiles of keys/values to f32, then plain f32 loops.
fn attend_f16_tiles(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scores: &mut [f32],
    out: &mut [f32],
    tile: &mut [f32],
) {
    let d = q.len();
    let per = tile.len() / d;
    for (sc, keys) in scores.chunks_mut(per).zip(k.chunks(per * d)) {
        let t = &mut tile[..keys.len()];
        keys.convert_to_f32_slice(t);
        score_rows(q, t, sc);
    }
    softmax(scores, 1.0 / (d as f32).sqrt());
    out.iter_mut().for_each(|o| *o = 0.0);
    for (w, vals) in scores.chunks(per).zip(v.chunks(per * d)) {
        let t = &mut tile[..vals.len()];
        vals.convert_to_f32_slice(t);
        add_weighted_rows(w, t, out);
    }
}

#[cfg(target_arch = "x86_64")]
fn fused_f16_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C; `q.len()` must be a multiple of 16 and `k`, `v` hold
/// `scores.len()` rows of `q.len()` values, `out.len() == q.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_f16_fused(q: &[f32], k: &[f16], v: &[f16], scores: &mut [f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = q.len();
    debug_assert!(k.len() >= scores.len() * d && v.len() >= scores.len() * d && out.len() == d);
    let kp = k.as_ptr() as *const u16;
    let vp = v.as_ptr() as *const u16;
    for (i, s) in scores.iter_mut().enumerate() {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for j in (0..d).step_by(16) {
            // SAFETY: i * d + j + 16 <= scores.len() * d <= k.len(); j + 16 <= d = q.len().
            unsafe {
                let x0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i * d + j) as *const __m128i));
                let x1 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i * d + j + 8) as *const __m128i));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(j)), x0, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(j + 8)), x1, a1);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: lanes holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1)) };
        *s = lanes.iter().sum();
    }
    softmax(scores, 1.0 / (d as f32).sqrt());
    out.iter_mut().for_each(|o| *o = 0.0);
    for (i, &w) in scores.iter().enumerate() {
        let wv = _mm256_set1_ps(w);
        for j in (0..d).step_by(8) {
            // SAFETY: i * d + j + 8 <= v.len(); j + 8 <= d = out.len().
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(i * d + j) as *const __m128i));
                let o = out.as_mut_ptr().add(j);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
            }
        }
    }
}

/// Memory-copy bandwidth in bytes copied per second (one thread, `bytes` buffer).
pub fn memcpy_bandwidth(bytes: usize, repeats: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let t = time(repeats, || {
        dst.copy_from_slice(&src);
        black_box(&dst);
    });
    bytes as f64 / t
}

/// Seconds taken by one call of `f`.
fn time_once(f: &mut impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Times `f` and the reference `reference` alternately, `repeats` rounds: returns the median
/// seconds of `f`, the median of the per-round ratios `reference / f` (so that a burst of load
/// on this shared machine hits both sides of a ratio), and the reference's timings.
fn paired(
    repeats: usize,
    reference: &mut impl FnMut(),
    mut f: impl FnMut(),
) -> (f64, f64, Vec<f64>) {
    let mut ts = Vec::with_capacity(repeats);
    let mut ratios = Vec::with_capacity(repeats);
    let mut refs = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let r = time_once(reference);
        let t = time_once(&mut f);
        refs.push(r);
        ratios.push(r / t);
        ts.push(t);
    }
    if std::env::var_os("FIBQUANT_BENCH_ROUNDS").is_some() {
        eprintln!("rounds: ref {refs:.4?} method {ts:.4?}");
    }
    (median(ts), median(ratios), refs)
}

/// Section 2: one decode step of attention over all heads, for each method. Every method is
/// timed in rounds alternating with plain fp16 attention, and its speed against fp16 is the
/// median of the per-round ratios.
pub fn attention(s: &Settings, d: usize) -> Vec<AttentionRow> {
    let mut out = Vec::new();
    let copy_bw = memcpy_bandwidth(s.attention_bytes / 2, s.repeats);
    out.push(AttentionRow::Memcpy(MemcpyRow {
        dim: Some(d),
        bytes_per_second: copy_bw,
        buffer_bytes: s.attention_bytes / 2,
    }));
    for &n in &s.contexts {
        // Heads so that the fp16 K and V of all heads fill `attention_bytes`.
        let heads = (s.attention_bytes / (n * d * 2 * 2)).max(1);
        let base = rows(n, d, 5);
        let vals = rows(n, d, 6);
        let q = rows(1, d, 7);
        let mut scores = vec![0f32; n];
        let mut o = vec![0f32; d];
        let total_keys = (heads * n) as f64;
        let mut rows_out = Vec::new();
        let mut record = |method: &str, code: &str, rate: Option<f64>, secs: f64, bytes: f64| {
            rows_out.push(AttentionStep {
                dim: d,
                context: n,
                heads,
                method: method.into(),
                code: code.into(),
                rate_bits: rate,
                step_ms: secs * 1e3,
                ns_per_key: secs * 1e9 / total_keys,
                bytes_read: bytes,
                bytes_per_key: bytes / total_keys,
                bytes_per_second: bytes / secs,
                fraction_of_memcpy: bytes / secs / copy_bw,
                vs_fp16: None,
                vs_decode_then_compute: None,
            });
        };
        // The reference: fp16 K and V, every head its own copy (same values: the working set is
        // what matters), F16C conversion fused into the loops.
        let k16: Vec<f16> = base
            .iter()
            .map(|&v| f16::from_f32(v))
            .cycle()
            .take(heads * n * d)
            .collect();
        let v16: Vec<f16> = vals
            .iter()
            .map(|&v| f16::from_f32(v))
            .cycle()
            .take(heads * n * d)
            .collect();
        let (mut scores16, mut o16, mut tile) = (vec![0f32; n], vec![0f32; d], vec![0f32; 64 * d]);
        let mut fp16_step = || {
            for h in 0..heads {
                let r = h * n * d..(h + 1) * n * d;
                attend_f16(
                    &q,
                    &k16[r.clone()],
                    &v16[r],
                    &mut scores16,
                    &mut o16,
                    &mut tile,
                );
            }
            black_box(&o16);
        };
        fp16_step(); // warm-up
        let fp16_bytes = (heads * n * d * 2 * 2) as f64;
        let mut fp16_times = Vec::new();
        let mut vs_fp16 = Vec::new();
        {
            let k32: Vec<f32> = base.iter().copied().cycle().take(heads * n * d).collect();
            let v32: Vec<f32> = vals.iter().copied().cycle().take(heads * n * d).collect();
            let (t, ratio, refs) = paired(s.repeats, &mut fp16_step, || {
                for h in 0..heads {
                    let r = h * n * d..(h + 1) * n * d;
                    attend_f32(&q, &k32[r.clone()], &v32[r], &mut scores, &mut o);
                }
                black_box(&o);
            });
            fp16_times.extend(refs);
            record("plain f32", "f32", None, t, (heads * n * d * 4 * 2) as f64);
            vs_fp16.push(ratio);
        }
        let mut code_rows = Vec::new();
        for rate in [0.5, 1.0, 2.0, 3.0, 4.0] {
            for (name, k, nc) in codes_at(d, rate) {
                let codec = Codec::new(CodecConfig::new(d, k, nc)).unwrap();
                let sb = codec.slot_bytes();
                let mut ks = vec![0u8; n * sb];
                let mut vs = vec![0u8; n * sb];
                codec.encode_batch(&base, &mut ks).unwrap();
                codec.encode_batch(&vals, &mut vs).unwrap();
                let kc: Vec<u8> = ks.iter().copied().cycle().take(heads * n * sb).collect();
                let vc: Vec<u8> = vs.iter().copied().cycle().take(heads * n * sb).collect();
                let (t, ratio, refs) = paired(s.repeats, &mut fp16_step, || {
                    for h in 0..heads {
                        let r = h * n * sb..(h + 1) * n * sb;
                        codec.scores(&q, &kc[r.clone()], &mut scores).unwrap();
                        softmax(&mut scores, 1.0 / (d as f32).sqrt());
                        codec.weighted_sum(&scores, &vc[r], &mut o).unwrap();
                    }
                    black_box(&o);
                });
                fp16_times.extend(refs);
                record(
                    "on codes",
                    &name,
                    Some(rate),
                    t,
                    (heads * n * sb * 2) as f64,
                );
                vs_fp16.push(ratio);
                // Decode-then-compute: fewer repeats and heads (it is slow); scaled per key.
                let dh = heads.min(16);
                let mut kd = vec![0f32; n * d];
                let mut vd = vec![0f32; n * d];
                let t_dtc = time(s.repeats.min(3), || {
                    for h in 0..dh {
                        let r = h * n * sb..(h + 1) * n * sb;
                        for (slot, row) in
                            kc[r.clone()].chunks_exact(sb).zip(kd.chunks_exact_mut(d))
                        {
                            codec.decode(slot, row).unwrap();
                        }
                        for (slot, row) in vc[r].chunks_exact(sb).zip(vd.chunks_exact_mut(d)) {
                            codec.decode(slot, row).unwrap();
                        }
                        attend_f32(&q, &kd, &vd, &mut scores, &mut o);
                    }
                    black_box(&o);
                }) * heads as f64
                    / dh as f64;
                code_rows.push(t_dtc / t);
                record(
                    "decode then compute",
                    &name,
                    Some(rate),
                    t_dtc,
                    (heads * n * sb * 2) as f64,
                );
                vs_fp16.push(f64::NAN);
            }
        }
        let fp16_t = median(fp16_times);
        out.push(AttentionRow::Step(AttentionStep {
            dim: d,
            context: n,
            heads,
            method: "plain fp16".into(),
            code: "fp16".into(),
            rate_bits: Some(16.0),
            step_ms: fp16_t * 1e3,
            ns_per_key: fp16_t * 1e9 / total_keys,
            bytes_read: fp16_bytes,
            bytes_per_key: fp16_bytes / total_keys,
            bytes_per_second: fp16_bytes / fp16_t,
            fraction_of_memcpy: fp16_bytes / fp16_t / copy_bw,
            vs_fp16: Some(1.0),
            vs_decode_then_compute: None,
        }));
        let mut dtc = code_rows.into_iter();
        for (mut r, ratio) in rows_out.into_iter().zip(vs_fp16) {
            if ratio.is_finite() {
                r.vs_fp16 = Some(ratio);
            }
            if r.method == "on codes" {
                r.vs_decode_then_compute = dtc.next();
            }
            out.push(AttentionRow::Step(r));
        }
    }
    out
}

/// Section 3: batch encode throughput, single thread against all cores (`parallel` feature).
pub fn parallel_encode(s: &Settings) -> Vec<ParallelRow> {
    let mut out = Vec::new();
    let d = 128;
    let x = rows(s.vectors * 8, d, 9);
    for (k, n) in [(4usize, 256usize), (8, 256), (1, 16)] {
        let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
        let sb = codec.slot_bytes();
        let mut slots = vec![0u8; x.len() / d * sb];
        let single = time(s.repeats, || {
            for (row, slot) in x.chunks_exact(d).zip(slots.chunks_exact_mut(sb)) {
                codec.encode(row, slot).unwrap();
            }
        });
        let par = time(s.repeats, || codec.encode_batch(&x, &mut slots).unwrap());
        let count = (x.len() / d) as f64;
        out.push(ParallelRow {
            section: "parallel encode".into(),
            dim: d,
            k,
            n,
            threads: rayon::current_num_threads(),
            single_vectors_per_second: count / single,
            parallel_vectors_per_second: count / par,
            speedup: single / par,
        });
    }
    out
}

/// Section 4: the fast (inverted-file) encoder against exhaustive search on the same source
/// blocks: ns per block search, MSE, loss in dB, speedup; for each probe count.
pub fn fast_encoder(s: &Settings) -> Vec<FastEncoderRow> {
    use crate::source::{Method, Source};
    let mut out = Vec::new();
    let blocks_n = (s.vectors * 4).max(4096);
    for (d, k, n) in [
        (64usize, 4usize, 4096usize),
        (128, 4, 4096),
        (64, 4, 65536),
        (64, 8, 65536),
        (128, 4, 65536),
        (128, 8, 65536),
        (64, 8, crate::e8::E8_N),
        (128, 8, crate::e8::E8_N),
    ] {
        let Ok(cb) = registry::codebook(d, k, n) else {
            continue;
        };
        let blocks = Source::new(d, k)
            .unwrap()
            .sample(Method::RadiusDirection, blocks_n, 99);
        // Normalized vector MSE of an assignment of the blocks.
        let mse_of = |idx: &[u32]| -> f64 {
            let total: f64 = idx
                .iter()
                .zip(blocks.chunks_exact(k))
                .map(|(&i, x)| {
                    let c = cb.codeword(i as usize);
                    c.iter()
                        .zip(x)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                })
                .sum();
            total * (d / k) as f64 / blocks_n as f64
        };
        let mut idx = vec![0u32; blocks_n];
        let t_exact = time(s.repeats.min(3), || {
            for (o, x) in idx.iter_mut().zip(blocks.chunks_exact(k)) {
                *o = cb.nearest_exhaustive(x);
            }
            black_box(&idx);
        });
        let mse_exact = mse_of(&idx);
        // The orbit search of the E8 codes is exact: no inverted file to try.
        let probe_counts: &[usize] = if cb.orbits().is_some() {
            &[]
        } else {
            &[4, 8, 16, 32]
        };
        for &probes in probe_counts {
            let c = cb.with_ivf_probes(Some(probes));
            let ivf = c.ivf().expect("an inverted file was just set");
            let t = time(s.repeats.min(3), || {
                for (o, x) in idx.iter_mut().zip(blocks.chunks_exact(k)) {
                    *o = ivf.nearest(x).0;
                }
                black_box(&idx);
            });
            let mse = mse_of(&idx);
            out.push(FastEncoderRow::Ivf(IvfRow {
                section: "fast encoder".into(),
                dim: d,
                k,
                n,
                probes,
                cells: c.ivf().map(|_| fibquant::search::plan::ivf_cells(n)),
                exhaustive_ns_per_block: t_exact * 1e9 / blocks_n as f64,
                ivf_ns_per_block: t * 1e9 / blocks_n as f64,
                speedup: t_exact / t,
                mse_exhaustive: mse_exact,
                mse_ivf: mse,
                loss_db: 10.0 * (mse / mse_exact).log10(),
                default: probes == fibquant::search::plan::encoder_probes(k)
                    && n >= fibquant::search::plan::IVF_THRESHOLD,
            }));
        }
        // What `Codebook::nearest` does by default: the certified shortlists where they apply
        // (exact answers), the inverted file for the blocks they leave open.
        let certified = certified_fraction(&cb, &blocks);
        let t = time(s.repeats.min(3), || {
            cb.nearest_many(&blocks, &mut idx);
            black_box(&idx);
        });
        let mse = mse_of(&idx);
        out.push(FastEncoderRow::Encoder(EncoderRow {
            section: "fast encoder".into(),
            dim: d,
            k,
            n,
            probes: cb.ivf().map(|_| fibquant::search::plan::encoder_probes(k)),
            certified,
            exhaustive_ns_per_block: t_exact * 1e9 / blocks_n as f64,
            encoder_ns_per_block: t * 1e9 / blocks_n as f64,
            speedup: t_exact / t,
            mse_exhaustive: mse_exact,
            mse_encoder: mse,
            loss_db: 10.0 * (mse / mse_exact).log10(),
        }));
    }
    out
}

/// The fraction of `blocks` that the codebook's certified shortlists answer by themselves
/// (building them), or `None` for a codebook without shortlists.
fn certified_fraction(cb: &fibquant::Codebook, blocks: &[f32]) -> Option<f64> {
    let shortlist = cb.shortlist()?;
    let k = cb.k();
    let count = blocks.len() / k;
    let certified = blocks
        .chunks_exact(k)
        .filter(|x| shortlist.nearest(x).is_some())
        .count();
    Some(certified as f64 / count as f64)
}

/// The exact searches for `k = 4` codebooks with neither a grid nor an inverted file against
/// the exhaustive scan on the same source blocks: the ball-pruned search
/// (`runtime/src/balls.rs`) alone, and the default of `Codebook::nearest` (certified shortlists,
/// `runtime/src/shortlist.rs`, then the ball search for the blocks they leave open); ns per
/// block, the fraction of blocks certified, and whether every answer was the same.
pub fn exact_search(s: &Settings) -> Vec<ExactSearchRow> {
    use crate::source::{Method, Source};
    let mut out = Vec::new();
    let blocks_n = (s.vectors * 4).max(4096);
    for (d, k, n) in [
        (64usize, 4usize, 2048usize),
        (64, 4, 4096),
        (128, 4, 2048),
        (128, 4, 4096),
    ] {
        let Ok(cb) = registry::codebook(d, k, n) else {
            continue;
        };
        let Some(balls) = cb.balls() else {
            continue;
        };
        let blocks = Source::new(d, k)
            .unwrap()
            .sample(Method::RadiusDirection, blocks_n, 99);
        let (mut exact, mut indexed) = (vec![0u32; blocks_n], vec![0u32; blocks_n]);
        let t_exact = time(s.repeats.min(3), || {
            for (o, x) in exact.iter_mut().zip(blocks.chunks_exact(k)) {
                *o = cb.nearest_exhaustive(x);
            }
            black_box(&exact);
        });
        let t_balls = time(s.repeats.min(3), || {
            for (o, x) in indexed.iter_mut().zip(blocks.chunks_exact(k)) {
                *o = balls.nearest(x).map_or(u32::MAX, |found| found.0);
            }
            black_box(&indexed);
        });
        let balls_identical = exact == indexed;
        // The default: certified shortlists first, the ball search for the blocks they leave
        // (built before timing, by counting what they certify).
        let certified = certified_fraction(&cb, &blocks);
        let t_default = time(s.repeats.min(3), || {
            cb.nearest_many(&blocks, &mut indexed);
            black_box(&indexed);
        });
        out.push(ExactSearchRow {
            section: "exact search".into(),
            dim: d,
            k,
            n,
            cells: balls.cells(),
            exhaustive_ns_per_block: t_exact * 1e9 / blocks_n as f64,
            balls_ns_per_block: t_balls * 1e9 / blocks_n as f64,
            default_ns_per_block: Some(t_default * 1e9 / blocks_n as f64),
            certified,
            speedup: t_exact / t_default,
            identical: balls_identical && exact == indexed,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_softmax_is_within_two_ulp_of_exp() {
        let mut x = -60.0f32;
        while x <= 0.0 {
            let (got, want) = (super::exp_softmax(x), (x as f64).exp());
            let ulp = f32::EPSILON as f64 * want;
            assert!(
                (got as f64 - want).abs() <= 2.0 * ulp,
                "{x}: {got} vs {want}"
            );
            x += 0.001_3;
        }
    }

    use super::*;

    #[test]
    fn fused_fp16_attention_matches_the_portable_path() {
        let (n, d) = (300, 64);
        let k: Vec<f16> = rows(n, d, 1).iter().map(|&v| f16::from_f32(v)).collect();
        let v: Vec<f16> = rows(n, d, 2).iter().map(|&v| f16::from_f32(v)).collect();
        let q = rows(1, d, 3);
        let (mut s1, mut o1) = (vec![0f32; n], vec![0f32; d]);
        let (mut s2, mut o2) = (vec![0f32; n], vec![0f32; d]);
        let mut tile = vec![0f32; 64 * d];
        attend_f16_tiles(&q, &k, &v, &mut s1, &mut o1, &mut tile);
        attend_f16(&q, &k, &v, &mut s2, &mut o2, &mut tile);
        #[cfg(target_arch = "x86_64")]
        if !fused_f16_available() {
            eprintln!("AVX2/FMA/F16C not available: only the portable path ran");
        }
        for (a, b) in s1.iter().zip(&s2) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "{a} vs {b}");
        }
        let scale: f32 = o1.iter().map(|x| x.abs()).sum::<f32>() / d as f32;
        for (a, b) in o1.iter().zip(&o2) {
            assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
