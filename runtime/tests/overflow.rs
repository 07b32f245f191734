//! Finite inputs never give `Ok` with NaN: where f32 arithmetic would overflow in a rotation or
//! a sum although the exact result is finite, the codec rescales by an exact power of two; where
//! the exact result is beyond f32, the result is infinite with the right sign.

use fibquant::{Codec, CodecConfig, NormFormat};

fn codec(k: usize, n: usize) -> Codec {
    Codec::new(CodecConfig::new(64, k, n).with_norm(NormFormat::F32)).unwrap()
}

fn vector(seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = fibquant::util::rng::Xoshiro256::new(seed);
    (0..64)
        .map(|_| rng.next_gaussian() as f32 * scale)
        .collect()
}

/// The codes the checks run on: scalar, k = 2, 4 and 8, and the E8 code (NaN-padded copies).
const CODES: [(usize, usize); 5] = [(1, 16), (2, 256), (4, 4096), (8, 256), (8, 64497)];

#[test]
fn huge_f32_norms_decode_to_the_scaled_vector() {
    for (k, n) in CODES {
        let c = codec(k, n);
        let small = vector(1, 1.0);
        let mut slot = vec![0u8; c.slot_bytes()];
        let mut want = vec![0f32; 64];
        c.encode(&small, &mut slot).unwrap();
        c.decode(&slot, &mut want).unwrap();
        // The same direction at norm about 8e37: the decoded vector is `want` scaled.
        let scale = 1e37f32;
        let huge: Vec<f32> = small.iter().map(|v| v * scale).collect();
        c.encode(&huge, &mut slot).unwrap();
        let mut got = vec![0f32; 64];
        c.decode(&slot, &mut got).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(g.is_finite(), "k={k} N={n}: {g}");
            assert!(
                (g / scale - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "k={k} N={n}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn huge_queries_score_like_scaled_small_ones() {
    for (k, n) in CODES {
        let c = codec(k, n);
        let keys: Vec<f32> = (0..8).flat_map(|i| vector(10 + i, 1.0)).collect();
        let mut slots = vec![0u8; 8 * c.slot_bytes()];
        c.encode_batch(&keys, &mut slots).unwrap();
        let q = vector(2, 1.0);
        let mut want = vec![0f32; 8];
        c.scores(&q, &slots, &mut want).unwrap();
        // Components near 1e37: the rotation's unnormalized transform overflows unless rescaled;
        // the scores (about 1e37) are finite.
        let scale = 1e37f32;
        let big: Vec<f32> = q.iter().map(|v| v * scale).collect();
        let mut got = vec![0f32; 8];
        c.scores(&big, &slots, &mut got).unwrap();
        let mut group = vec![0f32; 16];
        let two: Vec<f32> = big.iter().chain(&big).copied().collect();
        c.scores_group(&two, &slots, &mut group).unwrap();
        for ((g, w), gg) in got.iter().zip(&want).zip(&group) {
            assert!(g.is_finite() && gg.is_finite(), "k={k} N={n}: {g} {gg}");
            let bound = 1e-4 * scale * (1.0 + w.abs());
            assert!(
                (g - w * scale).abs() <= bound,
                "k={k} N={n}: {g} vs {}",
                w * scale
            );
            assert!((gg - w * scale).abs() <= bound, "k={k} N={n}: group {gg}");
        }
        // Beyond f32: infinite with the sign of the exact score, never NaN.
        let beyond: Vec<f32> = q.iter().map(|v| v.signum() * 3e38).collect();
        c.scores(&beyond, &slots, &mut got).unwrap();
        assert!(got.iter().all(|g| !g.is_nan()), "k={k} N={n}: {got:?}");
    }
}

#[test]
fn weighted_sums_flush_on_the_product_and_never_give_nan() {
    for (k, n) in CODES {
        let c = codec(k, n);
        // A weight below 2^-100 on a slot of norm about 4e37 still counts: |w * norm| ~ 3e7.
        let big = vector(3, 5e36);
        let mut slot = vec![0u8; c.slot_bytes()];
        c.encode(&big, &mut slot).unwrap();
        let mut decoded = vec![0f32; 64];
        c.decode(&slot, &mut decoded).unwrap();
        let w = 7e-31f32;
        let mut out = vec![0f32; 64];
        c.weighted_sum(&[w], &slot, &mut out).unwrap();
        // Within f32 rounding of the sum, relative to the vector's size (a coordinate can be
        // the small difference of large terms of the inverse rotation).
        // The E8 code's attention reads its f16 codebook copy: within 2^-11 of each value.
        let size = decoded.iter().map(|x| (x * w).abs()).fold(0f32, f32::max);
        let tol = if n == 64497 { 1e-3 } else { 1e-5 };
        for (o, x) in out.iter().zip(&decoded) {
            let want = x * w;
            assert!((o - want).abs() <= tol * size, "k={k} N={n}: {o} vs {want}");
        }
        // Huge weights on huge norms: infinite where the exact sum is, never NaN.
        let slots: Vec<u8> = slot.iter().chain(&slot).copied().collect();
        c.weighted_sum(&[1e30, -1e30], &slots, &mut out).unwrap();
        assert!(out.iter().all(|o| !o.is_nan()), "k={k} N={n}: {out:?}");
        assert!(
            out.iter().all(|o| *o == 0.0),
            "the two terms cancel exactly: {out:?}"
        );
        c.weighted_sum(&[1e30, 1e30], &slots, &mut out).unwrap();
        assert!(out.iter().all(|o| !o.is_nan()), "k={k} N={n}: {out:?}");
        let mut group = vec![0f32; 128];
        c.weighted_sum_group(&[1e30, 1e30, 3e30, -1e30], &slots, &mut group)
            .unwrap();
        assert!(group.iter().all(|o| !o.is_nan()), "k={k} N={n}: {group:?}");
    }
}
