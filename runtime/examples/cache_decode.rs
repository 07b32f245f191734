//! One decode step through [`fibquant::KvCache`] at long context, against the same step through
//! the same cache storing fp16 keys and values: per layer, append the new token's key and value
//! and attend its query heads over every cached position. SmolLM2-135M's shape (30 layers,
//! 9 query / 3 kv heads, d = 64), synthetic keys with outlier channels. The two caches are timed
//! in alternating rounds (one thread each); the ratio is the median of the per-round ratios.
//!
//!     cargo run --release -p fibquant --example cache_decode [-- CONTEXT ...]
//!
//! Default contexts: 8192 and 32768.
use fibquant::util::rng::Xoshiro256;
use fibquant::{CachePolicy, CacheShape, KvCache, SideCode};
use std::time::Instant;

const SHAPE: CacheShape = CacheShape {
    layers: 30,
    query_heads: 9,
    kv_heads: 3,
    head_dim: 64,
};

fn rows(rng: &mut Xoshiro256, heads: usize, seq: usize) -> Vec<f32> {
    let d = SHAPE.head_dim;
    (0..heads * seq * d)
        .map(|i| {
            let j = i % d;
            let big = if j % 16 == 3 { 6.0 } else { 1.0 };
            rng.next_gaussian() as f32 * big + (j as f32 * 0.37).sin()
        })
        .collect()
}

/// A cache of `policy` filled to `context` positions in every layer.
fn filled(policy: CachePolicy, context: usize, seed: u64) -> KvCache {
    let mut cache = KvCache::new(SHAPE, policy).expect("embedded codes");
    let mut rng = Xoshiro256::new(seed);
    let chunk = 512;
    let mut len = 0;
    while len < context {
        let seq = chunk.min(context - len);
        for layer in 0..SHAPE.layers {
            let k = rows(&mut rng, SHAPE.kv_heads, seq);
            let v = rows(&mut rng, SHAPE.kv_heads, seq);
            let q = rows(&mut rng, SHAPE.query_heads, seq);
            if len == 0 {
                // The first chunk freezes the transforms from keys and queries.
                let mut out = vec![0f32; q.len()];
                cache
                    .append_and_attend(layer, &q, &k, &v, seq, &mut out)
                    .unwrap();
            } else {
                cache.append(layer, &k, &v, seq).unwrap();
            }
        }
        len += seq;
    }
    cache
}

/// Seconds of one decode step (every layer: append one token, attend its query heads).
fn step(cache: &mut KvCache, rng: &mut Xoshiro256) -> f64 {
    let k: Vec<Vec<f32>> = (0..SHAPE.layers)
        .map(|_| rows(rng, SHAPE.kv_heads, 1))
        .collect();
    let v: Vec<Vec<f32>> = (0..SHAPE.layers)
        .map(|_| rows(rng, SHAPE.kv_heads, 1))
        .collect();
    let q: Vec<Vec<f32>> = (0..SHAPE.layers)
        .map(|_| rows(rng, SHAPE.query_heads, 1))
        .collect();
    let mut out = vec![0f32; SHAPE.query_heads * SHAPE.head_dim];
    let t = Instant::now();
    for layer in 0..SHAPE.layers {
        cache
            .append_and_attend(layer, &q[layer], &k[layer], &v[layer], 1, &mut out)
            .unwrap();
    }
    std::hint::black_box(&out);
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let contexts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a context length"))
        .collect();
    let contexts = if contexts.is_empty() {
        vec![8192, 32768]
    } else {
        contexts
    };
    let fp16 = CachePolicy::plain(SideCode::Fp16, SideCode::Fp16);
    println!(
        "decode step, {} layers x {} query / {} kv heads x d = {}, one thread; fp16 = the same cache storing fp16 rows",
        SHAPE.layers, SHAPE.query_heads, SHAPE.kv_heads, SHAPE.head_dim
    );
    println!("| context | policy | bits per value | ms per step | fp16 ms per step | speed vs fp16 (median ratio) |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &context in &contexts {
        let mut base = filled(fp16.clone(), context, 1);
        for (name, policy) in [
            ("default, b = 4", CachePolicy::preset(4.0)),
            ("default, b = 3", CachePolicy::preset(3.0)),
            ("default, b = 2", CachePolicy::preset(2.0)),
            ("default, b = 1", CachePolicy::preset(1.0)),
            (
                "default policy, 2x256 codes (b = 4)",
                CachePolicy::preset(4.0).with_codes(
                    SideCode::Code { k: 2, n: 256 },
                    SideCode::Code { k: 2, n: 256 },
                ),
            ),
            (
                "default policy, 2x16 codes (b = 2)",
                CachePolicy::preset(2.0).with_codes(
                    SideCode::Code { k: 2, n: 16 },
                    SideCode::Code { k: 2, n: 16 },
                ),
            ),
        ] {
            let mut cache = filled(policy, context, 1);
            let mut rng = Xoshiro256::new(9);
            step(&mut cache, &mut rng);
            step(&mut base, &mut rng);
            let (mut ts, mut fs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..9 {
                let f = step(&mut base, &mut rng);
                let t = step(&mut cache, &mut rng);
                ts.push(t);
                fs.push(f);
                ratios.push(f / t);
            }
            println!(
                "| {context} | {name} | {:.3} | {:.2} | {:.2} | {:.2}x |",
                cache.effective_bits().unwrap_or(f64::NAN),
                1e3 * median(ts),
                1e3 * median(fs),
                median(ratios)
            );
        }
    }
}
