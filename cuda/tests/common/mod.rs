//! Caches built through the runtime's own API, and the attention it computes for them: what
//! the reference and the GPU are checked against.
#![allow(dead_code)]

use fibquant::{CachePolicy, CacheShape, KeyScaling, KvCache, SideCode};

/// xorshift64* numbers in [-1, 1).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1)
    }
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545f4914f6cdd1d);
        (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The policies the tests cover: codes on both sides with every transform, codes without
/// transforms, fp16 keys with coded values, and all fp16.
pub fn policies(key: SideCode, value: SideCode) -> Vec<(&'static str, CachePolicy)> {
    vec![
        (
            "full",
            CachePolicy::preset(4.0)
                .with_codes(key, value)
                .with_centering(true, true)
                .with_key_scaling(KeyScaling::Balanced)
                .with_sinks(4)
                .with_window(8),
        ),
        ("default", CachePolicy::preset(4.0).with_codes(key, value)),
        ("plain", CachePolicy::plain(key, value)),
        (
            "fp16 keys",
            CachePolicy::preset(4.0).with_codes(SideCode::Fp16, value),
        ),
        ("fp16", CachePolicy::plain(SideCode::Fp16, SideCode::Fp16)),
    ]
}

/// One cache per entry of `lens` (positions before the decode step), filled through
/// `append_and_attend` in chunks like a prefill (keys with a per-channel offset that drifts, so
/// that centering and scaling matter), then one decode step each: returns the caches (holding
/// the decoded position too), the decode queries (sequence-major: sequences x query heads x d)
/// and the runtime's outputs for them.
pub fn decoded(
    shape: CacheShape,
    policy: &CachePolicy,
    lens: &[usize],
    seed: u64,
) -> (Vec<KvCache>, Vec<f32>, Vec<f32>) {
    let (kvh, qh, d) = (shape.kv_heads, shape.query_heads, shape.head_dim);
    let mut rng = Rng::new(seed);
    let mut caches = Vec::new();
    let (mut queries, mut outputs) = (Vec::new(), Vec::new());
    for &len in lens {
        let mut cache = KvCache::new(shape, policy.clone()).unwrap();
        let mut pos = 0;
        let chunk = |cache: &mut KvCache, seq: usize, rng: &mut Rng, pos: usize| {
            let mut k = vec![0f32; kvh * seq * d];
            let mut v = vec![0f32; kvh * seq * d];
            for (i, x) in k.iter_mut().enumerate() {
                let (p, c) = (pos + i / d % seq, i % d);
                *x = rng.next() * (1.0 + (c % 7) as f32)
                    + (c as f32 * 0.1 + p as f32 * 0.01).sin() * 3.0;
            }
            v.iter_mut().for_each(|x| *x = rng.next() + 0.5);
            let q: Vec<f32> = (0..qh * seq * d).map(|_| rng.next() * 2.0).collect();
            let mut out = vec![0f32; q.len()];
            cache
                .append_and_attend(0, &q, &k, &v, seq, &mut out)
                .unwrap();
            (q, out)
        };
        while pos < len {
            let seq = (len - pos).min(97);
            chunk(&mut cache, seq, &mut rng, pos);
            pos += seq;
        }
        let (q, out) = chunk(&mut cache, 1, &mut rng, pos);
        queries.extend_from_slice(&q);
        outputs.extend_from_slice(&out);
        caches.push(cache);
    }
    (caches, queries, outputs)
}

/// max |a - b| / max |b|.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    diff as f64 / scale.max(f32::MIN_POSITIVE) as f64
}
