//! The KV cache against a reference: decode everything the cache stores, then an exact (f64)
//! causal softmax over all of it. Also: the transforms are exact, bad input is a typed error that
//! changes nothing, and the byte accounting is exact.

use fibquant::util::rng::Xoshiro256;
use fibquant::{CachePolicy, CacheShape, Error, KeyScaling, KvCache, SideCode};

const D: usize = 64;

fn shape(layers: usize, query_heads: usize, kv_heads: usize) -> CacheShape {
    CacheShape {
        layers,
        query_heads,
        kv_heads,
        head_dim: D,
    }
}

/// Rows like real keys: a per-channel offset, a few outlier channels, varying norms.
fn rows(rng: &mut Xoshiro256, heads: usize, seq: usize, outliers: bool) -> Vec<f32> {
    (0..heads * seq * D)
        .map(|i| {
            let j = i % D;
            let big = if outliers && j % 16 == 3 { 8.0 } else { 1.0 };
            let offset = if outliers {
                (j as f32 * 0.37).sin() * 2.0
            } else {
                0.0
            };
            rng.next_gaussian() as f32 * big + offset
        })
        .collect()
}

/// Exact causal attention (f64) of `queries` (`qh x seq x d`, the last `seq` of `len`
/// positions) over decoded keys/values of every kv head.
fn reference(cache: &KvCache, layer: usize, queries: &[f32], seq: usize) -> Vec<f64> {
    let s = *cache.shape();
    let len = cache.len(layer);
    let group = s.query_heads / s.kv_heads;
    let scale = 1.0 / (D as f64).sqrt();
    let mut out = vec![0f64; queries.len()];
    for h in 0..s.kv_heads {
        let mut k = vec![0f32; len * D];
        let mut v = vec![0f32; len * D];
        cache.reconstruct(layer, h, &mut k, &mut v).unwrap();
        for g in 0..group {
            for r in 0..seq {
                let row = ((h * group + g) * seq + r) * D;
                let q = &queries[row..row + D];
                let visible = len - seq + r + 1;
                let sc: Vec<f64> = (0..visible)
                    .map(|i| {
                        (0..D)
                            .map(|j| q[j] as f64 * k[i * D + j] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let total: f64 = w.iter().sum();
                for (i, wi) in w.iter().enumerate() {
                    for j in 0..D {
                        out[row + j] += wi / total * v[i * D + j] as f64;
                    }
                }
            }
        }
    }
    out
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Appends `chunks` chunks of `chunk` positions to every layer through `append_and_attend`,
/// comparing each chunk's output with the reference. Returns the largest error relative to the
/// largest value magnitude.
fn run_against_reference(
    shape: CacheShape,
    policy: CachePolicy,
    chunks: &[usize],
    seed: u64,
) -> f32 {
    let mut cache = KvCache::new(shape, policy).unwrap();
    let mut rng = Xoshiro256::new(seed);
    let mut worst = 0f32;
    for &seq in chunks {
        for layer in 0..shape.layers {
            let k = rows(&mut rng, shape.kv_heads, seq, true);
            let v = rows(&mut rng, shape.kv_heads, seq, false);
            let q = rows(&mut rng, shape.query_heads, seq, true);
            let mut out = vec![0f32; q.len()];
            cache
                .append_and_attend(layer, &q, &k, &v, seq, &mut out)
                .unwrap();
            let want = reference(&cache, layer, &q, seq);
            let scale = max_abs(&v);
            for (a, b) in out.iter().zip(&want) {
                worst = worst.max((*a as f64 - b).abs() as f32 / scale);
            }
        }
    }
    worst
}

/// f32 rounding over a few hundred terms: far below any code's error (b = 4 moves outputs by
/// about 1e-2 of the value scale) and far above what exact arithmetic leaves.
const F32_TOL: f32 = 2e-4;

fn policies() -> Vec<(&'static str, CachePolicy)> {
    let small = SideCode::Code { k: 4, n: 256 };
    let scalar = SideCode::Code { k: 1, n: 16 };
    let k2 = SideCode::Code { k: 2, n: 64 };
    vec![
        ("plain", CachePolicy::plain(small, small)),
        (
            "preset transforms, blocks of 8",
            CachePolicy::preset(4.0)
                .with_codes(small, scalar)
                .with_block_len(8),
        ),
        (
            "window",
            CachePolicy::preset(4.0)
                .with_codes(k2, small)
                .with_window(16)
                .with_block_len(8),
        ),
        (
            "fp16 values, no key scales",
            CachePolicy::preset(4.0)
                .with_codes(small, SideCode::Fp16)
                .with_key_scaling(KeyScaling::None)
                .with_block_len(5),
        ),
        (
            "layer override, no sinks",
            CachePolicy::preset(4.0)
                .with_codes(small, small)
                .with_layer(1, SideCode::Fp16, k2)
                .with_sinks(0)
                .with_block_len(6),
        ),
        (
            "keys centered, values not",
            CachePolicy::preset(4.0)
                .with_codes(small, k2)
                .with_centering(true, false)
                .with_window(3)
                .with_block_len(7),
        ),
    ]
}

#[test]
fn attention_equals_the_decoded_reference_for_every_policy() {
    // GQA (6 query heads on 2 kv heads), chunked causal prefill, then single-token decoding.
    let chunks = [7, 13, 1, 1, 20, 1];
    for (name, policy) in policies() {
        let worst = run_against_reference(shape(2, 6, 2), policy, &chunks, 5);
        assert!(worst < F32_TOL, "{name}: error {worst} of the value scale");
    }
}

#[test]
fn the_reference_check_can_fail() {
    // The same check with the value mean left out of the reference would not pass: the check
    // sees errors of the size a broken policy part makes.
    let policy = CachePolicy::preset(4.0).with_codes(SideCode::Fp16, SideCode::Fp16);
    let mut cache = KvCache::new(shape(1, 2, 1), policy).unwrap();
    let mut rng = Xoshiro256::new(9);
    let k = rows(&mut rng, 1, 10, true);
    let v: Vec<f32> = rows(&mut rng, 1, 10, false)
        .iter()
        .map(|x| x + 3.0)
        .collect();
    let q = rows(&mut rng, 2, 10, true);
    let mut out = vec![0f32; q.len()];
    cache
        .append_and_attend(0, &q, &k, &v, 10, &mut out)
        .unwrap();
    let want = reference(&cache, 0, &q, 10);
    let worst = out
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs() as f32)
        .fold(0f32, f32::max);
    assert!(worst < F32_TOL * max_abs(&v));
    // Minus the value mean: off by about 3.
    let shifted = out
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - 3.0 - b).abs() as f32);
    assert!(shifted.fold(0f32, f32::max) > 1.0);
}

#[test]
fn window_ages_into_codes_in_batches() {
    let policy = CachePolicy::preset(4.0)
        .with_codes(
            SideCode::Code { k: 4, n: 256 },
            SideCode::Code { k: 4, n: 256 },
        )
        .with_sinks(2)
        .with_centering(true, true)
        .with_window(8)
        .with_block_len(4);
    let mut cache = KvCache::new(shape(1, 1, 1), policy).unwrap();
    let mut rng = Xoshiro256::new(3);
    // Bytes per position: slot 2 + 16 = 18 per side; fp16 rows 128 per side; an fp16 mean
    // (128 bytes) per block of 4 coded positions per side; the key scales (f32).
    let scales = D * 4;
    let mut expect = Vec::new();
    for _ in 0..20 {
        let k = rows(&mut rng, 1, 1, true);
        let v = rows(&mut rng, 1, 1, false);
        let q = rows(&mut rng, 1, 1, true);
        let mut out = vec![0f32; D];
        cache.append_and_attend(0, &q, &k, &v, 1, &mut out).unwrap();
        let len = cache.len(0);
        let sinks = len.min(2);
        let rest = len - sinks;
        // The window holds 8..=11 positions once full: it ages 4 at a time, at 12.
        let window = if rest < 12 { rest } else { 8 + (rest - 8) % 4 };
        let coded = rest - window;
        expect.push((len, coded));
        assert_eq!(coded % 4, 0);
        assert_eq!(
            cache.bytes(),
            2 * ((sinks + window) * D * 2 + coded * 18 + coded / 4 * D * 2) + scales,
            "len {len}"
        );
    }
    assert_eq!(expect.last(), Some(&(20, 8)));
    let bits = cache.effective_bits().unwrap();
    assert!((bits - cache.bytes() as f64 * 8.0 / (20.0 * 2.0 * D as f64)).abs() < 1e-12);
}

/// Attention of a cache fed `k`, `v`, `q` in one chunk.
fn attend_once(policy: CachePolicy, k: &[f32], v: &[f32], q: &[f32], seq: usize) -> Vec<f32> {
    let mut cache = KvCache::new(shape(1, 3, 1), policy).unwrap();
    let mut out = vec![0f32; q.len()];
    cache.append_and_attend(0, q, k, v, seq, &mut out).unwrap();
    out
}

#[test]
fn centering_and_scaling_are_exact_on_an_uncompressed_store() {
    let mut rng = Xoshiro256::new(11);
    let seq = 40;
    // Offsets (what centering removes) and channels of unequal size (what scaling balances),
    // mild enough that the fp16 rounding bound below is far below the output's size.
    let mut mild = |heads: usize, size: f32| -> Vec<f32> {
        (0..heads * seq * D)
            .map(|i| {
                let j = i % D;
                let sd = size * (0.5 + (j % 4) as f32 * 0.25);
                rng.next_gaussian() as f32 * sd + (j as f32 * 0.37).sin() * 2.0
            })
            .collect()
    };
    let k = mild(1, 1.0);
    let v = mild(1, 1.0);
    let q: Vec<f32> = mild(3, 0.25).iter().map(|x| x * 0.1).collect();
    let fp16 = SideCode::Fp16;
    let plain = attend_once(CachePolicy::plain(fp16, fp16), &k, &v, &q, seq);
    let transformed = attend_once(
        CachePolicy::preset(4.0).with_codes(fp16, fp16),
        &k,
        &v,
        &q,
        seq,
    );
    // Both store fp16 rows, rounded at 2^-11 relative: a score moves by at most
    // 2^-11 * sum |q_j k_j| (times the softmax scale), a weight by a factor exp(2 * that), and
    // a value by 2^-11 of its size.
    let scale = 1.0 / (D as f32).sqrt();
    let mut worst_shift = 0f32;
    for r in 0..seq {
        for g in 0..3 {
            let qr = &q[(g * seq + r) * D..][..D];
            for i in 0..=r {
                let kr = &k[i * D..][..D];
                let e: f32 = qr.iter().zip(kr).map(|(a, b)| (a * b).abs()).sum();
                worst_shift = worst_shift.max(e * scale / 2048.0);
            }
        }
    }
    let tol = 2.0 * ((4.0 * worst_shift).exp() - 1.0) * max_abs(&v) + 2.0 * max_abs(&v) / 2048.0;
    let diff = plain
        .iter()
        .zip(&transformed)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= tol,
        "transforms moved the output by {diff} (bound {tol})"
    );
    // The bound is tight enough to mean something: far below the output's own size.
    assert!(
        tol < 0.1 * max_abs(&plain),
        "tol {tol}, output {}",
        max_abs(&plain)
    );
}

#[test]
fn bad_input_is_a_typed_error_that_changes_nothing() {
    let policy =
        CachePolicy::preset(4.0).with_codes(SideCode::Code { k: 4, n: 256 }, SideCode::Fp16);
    let mut cache = KvCache::new(shape(2, 4, 2), policy).unwrap();
    let mut rng = Xoshiro256::new(1);
    let q = rows(&mut rng, 4, 1, true);
    let mut out = vec![0f32; q.len()];
    // Attending an empty cache.
    match cache.attend(0, &q, 1, &mut out) {
        Err(Error::Cache {
            layer: 0, source, ..
        }) => assert_eq!(*source, Error::EmptyCache),
        other => panic!("{other:?}"),
    }
    let k = rows(&mut rng, 2, 5, true);
    let v = rows(&mut rng, 2, 5, false);
    let q5 = rows(&mut rng, 4, 5, true);
    let mut out5 = vec![0f32; q5.len()];
    cache
        .append_and_attend(1, &q5, &k, &v, 5, &mut out5)
        .unwrap();
    let snapshot = |c: &KvCache| {
        let mut o = vec![0f32; q.len()];
        c.attend(1, &q, 1, &mut o).unwrap();
        (c.len(1), c.bytes(), o)
    };
    let before = snapshot(&cache);
    // Wrong shapes.
    let short = &k[..k.len() - 1];
    assert!(matches!(
        cache.append(1, short, &v, 5),
        Err(Error::Cache { layer: 1, ref source, .. }) if matches!(**source, Error::WrongLength { what: "keys", .. })
    ));
    assert!(matches!(
        cache.attend(1, &q[..D], 1, &mut out),
        Err(Error::Cache { ref source, .. }) if matches!(**source, Error::WrongLength { what: "queries", .. })
    ));
    // A NaN in kv head 1, third position of the chunk: named by layer, head and position.
    let mut bad = rows(&mut rng, 2, 3, true);
    bad[(3 + 2) * D + 7] = f32::NAN;
    let v3 = rows(&mut rng, 2, 3, false);
    let q3 = rows(&mut rng, 4, 3, true);
    let mut out3 = vec![0f32; q3.len()];
    match cache.append_and_attend(1, &q3, &bad, &v3, 3, &mut out3) {
        Err(Error::Cache {
            layer: 1,
            head: Some(1),
            position: Some(7),
            source,
        }) => assert_eq!(*source, Error::NonFinite { index: 7 }),
        other => panic!("{other:?}"),
    }
    // An infinite query.
    let mut badq = q3.clone();
    badq[2 * 3 * D + D + 1] = f32::INFINITY;
    let good = rows(&mut rng, 2, 3, true);
    match cache.append_and_attend(1, &badq, &good, &v3, 3, &mut out3) {
        Err(Error::Cache {
            head: Some(2),
            position: Some(6),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A key too large for fp16 in the sink positions of an empty layer.
    let mut huge = rows(&mut rng, 2, 3, true);
    huge[0] = 1e6;
    assert!(matches!(
        cache.append(0, &huge, &v3, 3),
        Err(Error::Cache {
            layer: 0,
            head: Some(0),
            position: Some(0),
            ..
        })
    ));
    assert_eq!(cache.len(0), 0);
    // More query positions than cached, and an unknown layer.
    let q9 = rows(&mut rng, 4, 9, true);
    let mut out9 = vec![0f32; q9.len()];
    assert!(cache.attend(1, &q9, 9, &mut out9).is_err());
    assert!(cache.attend(2, &q, 1, &mut out).is_err());
    assert!(cache.append(5, &k, &v, 5).is_err());
    assert_eq!(snapshot(&cache), before);
    // The error says where.
    let e = cache.append(1, short, &v, 5).unwrap_err().to_string();
    assert!(e.starts_with("cache layer 1"), "{e}");
}

#[test]
fn bytes_count_every_part() {
    // d = 64, 4x256 keys (18-byte slots), fp16 values; 4 sinks; blocks of at most 8 positions.
    let code = SideCode::Code { k: 4, n: 256 };
    let policy = CachePolicy::preset(4.0)
        .with_codes(code, SideCode::Fp16)
        .with_block_len(8);
    let mut cache = KvCache::new(shape(1, 2, 1), policy).unwrap();
    let mut rng = Xoshiro256::new(2);
    let (k, v, q) = (
        rows(&mut rng, 1, 30, true),
        rows(&mut rng, 1, 30, false),
        rows(&mut rng, 2, 30, true),
    );
    let mut out = vec![0f32; q.len()];
    cache
        .append_and_attend(0, &q, &k, &v, 30, &mut out)
        .unwrap();
    // 26 coded keys in 4 blocks (7, 7, 6, 6), each with its fp16 mean.
    let keys = 4 * D * 2 + 26 * 18 + 4 * D * 2;
    let values = 30 * D * 2;
    let scales = D * 4;
    assert_eq!(cache.bytes(), keys + values + scales);
    // With the default block (the head dim, 64 positions) the 26 rows wait in fp16.
    let policy = CachePolicy::preset(4.0).with_codes(code, SideCode::Fp16);
    let mut staged = KvCache::new(shape(1, 2, 1), policy).unwrap();
    staged
        .append_and_attend(0, &q, &k, &v, 30, &mut out)
        .unwrap();
    assert_eq!(staged.bytes(), 30 * D * 2 + values + scales);
    assert_eq!(cache.layer_bytes(0), cache.bytes());
    assert!(cache.effective_bits().unwrap() > 8.0);
    cache.clear();
    assert_eq!((cache.bytes(), cache.effective_bits()), (0, None));
}

#[test]
fn block_means_are_stored_exactly() {
    // Every row of a block equal: the centered rows are the mean's fp16 rounding residue, so
    // what the cache gives back is the fp16 mean plus a code of that residue: the row itself
    // within twice fp16's rounding of the row's norm (a 1-bit code alone errs by about half the
    // norm).
    let one_bit = SideCode::Code { k: 8, n: 256 };
    let policy = CachePolicy::preset(1.0)
        .with_codes(one_bit, one_bit)
        .with_centering(true, true)
        .with_sinks(0)
        .with_block_len(4);
    let mut cache = KvCache::new(shape(1, 1, 1), policy).unwrap();
    let mut rng = Xoshiro256::new(4);
    let mut expect_k = Vec::new();
    let mut expect_v = Vec::new();
    for _ in 0..3 {
        let k: Vec<f32> = rows(&mut rng, 1, 1, true).repeat(4);
        let v: Vec<f32> = rows(&mut rng, 1, 1, false).repeat(4);
        let q = rows(&mut rng, 1, 4, true);
        let mut out = vec![0f32; q.len()];
        cache.append_and_attend(0, &q, &k, &v, 4, &mut out).unwrap();
        // All four rows of the block are the same value row: so is every output of the block's
        // own queries... once only this block is visible (the first block).
        expect_k.extend_from_slice(&k);
        expect_v.extend_from_slice(&v);
    }
    let mut k = vec![0f32; 12 * D];
    let mut v = vec![0f32; 12 * D];
    cache.reconstruct(0, 0, &mut k, &mut v).unwrap();
    let norm = |r: &[f32]| r.iter().map(|x| x * x).sum::<f32>().sqrt();
    let got_rows = k.chunks(D).chain(v.chunks(D));
    let want_rows = expect_k.chunks(D).chain(expect_v.chunks(D));
    for (got, want) in got_rows.zip(want_rows) {
        let bound = norm(want) / 1024.0;
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= bound, "{g} vs {w} (bound {bound})");
        }
    }
    // Attention over the first block alone returns its value row.
    let mut first = KvCache::new(*cache.shape(), cache.policy().clone()).unwrap();
    let q = rows(&mut rng, 1, 4, true);
    let mut out = vec![0f32; q.len()];
    first
        .append_and_attend(0, &q, &expect_k[..4 * D], &expect_v[..4 * D], 4, &mut out)
        .unwrap();
    let bound = norm(&expect_v[..D]) / 1024.0;
    for row in out.chunks_exact(D) {
        for (got, want) in row.iter().zip(&expect_v[..D]) {
            assert!(
                (got - want).abs() <= bound,
                "{got} vs {want} (bound {bound})"
            );
        }
    }
}

/// `append_with_queries` freezes the same key scales as `append_and_attend` (the queries give
/// the statistics), so attention afterwards is bit-identical; plain `append` freezes none, and
/// with unbalanced channels its output differs. Bad queries change nothing.
#[test]
fn append_with_queries_freezes_the_scales_append_and_attend_does() {
    let mut rng = Xoshiro256::new(5);
    let seq = 70;
    let k = rows(&mut rng, 2, seq, true);
    let v = rows(&mut rng, 2, seq, false);
    let q = rows(&mut rng, 4, seq, true);
    let policy = CachePolicy::preset(4.0);
    assert_eq!(policy.key_scaling, KeyScaling::Balanced);
    let mut fused = KvCache::new(shape(1, 4, 2), policy.clone()).unwrap();
    let mut out_fused = vec![0f32; q.len()];
    fused
        .append_and_attend(0, &q, &k, &v, seq, &mut out_fused)
        .unwrap();
    let mut split = KvCache::new(shape(1, 4, 2), policy.clone()).unwrap();
    split.append_with_queries(0, &q, &k, &v, seq).unwrap();
    let mut out_split = vec![0f32; q.len()];
    split.attend(0, &q, seq, &mut out_split).unwrap();
    assert_eq!(out_fused, out_split);
    assert_eq!(fused.bytes(), split.bytes());
    let mut unscaled = KvCache::new(shape(1, 4, 2), policy).unwrap();
    unscaled.append(0, &k, &v, seq).unwrap();
    let mut out_unscaled = vec![0f32; q.len()];
    unscaled.attend(0, &q, seq, &mut out_unscaled).unwrap();
    assert_ne!(out_fused, out_unscaled);
    // A NaN query is refused before anything is stored.
    let mut bad = q.clone();
    bad[3] = f32::NAN;
    let mut empty = KvCache::new(shape(1, 4, 2), CachePolicy::preset(4.0)).unwrap();
    assert!(matches!(
        empty.append_with_queries(0, &bad, &k, &v, seq),
        Err(Error::Cache { layer: 0, head: Some(0), position: Some(0), ref source })
            if **source == Error::NonFinite { index: 3 }
    ));
    assert_eq!(empty.len(0), 0);
}
