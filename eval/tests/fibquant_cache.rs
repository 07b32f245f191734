//! `FibQuantCache` stores slot bytes only (seq * n_kv * slot_bytes per compressed side) and gives
//! back exactly what the codec decodes from them. Needs no model.

use candle_core::{Device, IndexOp, Tensor};
use fibquant::{Codec, CodecConfig};
use fibquant_eval::fibquant_cache::FibQuantCache;
use fibquant_eval::kv_cache::KvCache;

const N_KV: usize = 3;
const D: usize = 64;

/// Deterministic pseudo-random rows `(1, N_KV, seq, D)` with per-token scales spanning 100x and an
/// outlier channel, like real keys.
fn tensor(seq: usize, seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let data: Vec<f32> = (0..N_KV * seq * D)
        .map(|i| {
            let (row, c) = (i / D, i % D);
            let scale = 0.05 * 100f32.powf((row % 7) as f32 / 6.0);
            let outlier = if c == 5 { 8.0 } else { 1.0 };
            scale * outlier * next()
        })
        .collect();
    Tensor::from_vec(data, (1, N_KV, seq, D), &Device::Cpu).unwrap()
}

/// What `codec` decodes for every row of `t` (encode then decode, one row at a time).
fn round_trip(codec: &Codec, t: &Tensor) -> Vec<f32> {
    let rows: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let mut slot = vec![0u8; codec.slot_bytes()];
    let mut out = vec![0f32; rows.len()];
    for (x, y) in rows.chunks_exact(D).zip(out.chunks_exact_mut(D)) {
        codec.encode(x, &mut slot).unwrap();
        codec.decode(&slot, y).unwrap();
    }
    out
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn stores_slot_bytes_and_decodes_what_the_codec_decodes() {
    let kc = Codec::new(CodecConfig::new(D, 4, 256)).unwrap(); // 2 bits: 2 + 16 bytes
    let vc = Codec::new(CodecConfig::new(D, 1, 16)).unwrap(); // 4 bits: 2 + 32 bytes
    assert_eq!((kc.slot_bytes(), vc.slot_bytes()), (18, 34));
    let mut cache = FibQuantCache::new(2, Some(kc.clone()), Some(vc.clone()));
    let (k1, v1, k2, v2) = (tensor(5, 1), tensor(5, 2), tensor(7, 3), tensor(7, 4));
    cache.append(1, &k1, &v1).unwrap();
    // A strided view, as the model hands over.
    let k2t = k2.transpose(2, 3).unwrap().transpose(2, 3).unwrap();
    cache.append(1, &k2t, &v2).unwrap();
    assert_eq!((cache.seq_len(0), cache.seq_len(1)), (0, 12));

    let seq = 12;
    assert_eq!(
        cache.layer_bytes(1),
        (seq * N_KV * kc.slot_bytes(), seq * N_KV * vc.slot_bytes())
    );
    assert_eq!(
        cache.stored_bytes(),
        seq * N_KV * (kc.slot_bytes() + vc.slot_bytes())
    );

    let (k, v) = cache.keys_values(1).unwrap();
    assert_eq!(k.dims(), &[1, N_KV, seq, D]);
    assert_eq!(v.dims(), &[1, N_KV, seq, D]);
    let k_all = Tensor::cat(&[&k1, &k2], 2).unwrap();
    let v_all = Tensor::cat(&[&v1, &v2], 2).unwrap();
    assert_eq!(values(&k), round_trip(&kc, &k_all));
    assert_eq!(values(&v), round_trip(&vc, &v_all));
    // ... and that is lossy, but close: per-row normalized error near the codebook's MSE.
    let head = |t: &Tensor| values(&t.i((0, 2, 9)).unwrap());
    let (a, b) = (head(&k_all), head(&k));
    let e: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f32 = a.iter().map(|x| x * x).sum();
    assert!(e / n > 0.0 && e / n < 0.5, "normalized error {}", e / n);

    cache.clear();
    assert_eq!((cache.seq_len(1), cache.stored_bytes()), (0, 0));
    assert!(cache.keys_values(1).is_err());
}

#[test]
fn uncompressed_side_is_exact_and_counted_as_f32() {
    let kc = Codec::new(CodecConfig::new(D, 2, 256)).unwrap();
    let mut cache = FibQuantCache::new(1, Some(kc.clone()), None);
    let (k, v) = (tensor(4, 5), tensor(4, 6));
    cache.append(0, &k, &v).unwrap();
    let (k_hat, v_hat) = cache.keys_values(0).unwrap();
    assert_eq!(values(&v_hat), values(&v));
    assert_eq!(values(&k_hat), round_trip(&kc, &k));
    assert_eq!(cache.layer_bytes(0), (4 * N_KV * 34, 4 * N_KV * D * 4));
}

#[test]
fn rejects_a_head_dim_the_codec_is_not_for() {
    let kc = Codec::new(CodecConfig::new(D, 2, 256)).unwrap();
    let mut cache = FibQuantCache::new(1, Some(kc), None);
    let t = Tensor::zeros((1, N_KV, 2, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = cache.append(0, &t, &t).unwrap_err().to_string();
    assert!(err.contains("head dim 32"), "{err}");
}
