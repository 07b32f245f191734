//! The runtime cache behind the models' `KvCache::attend`: with fp16 sides and no transform it
//! gives the uncompressed cache's attention (GQA head mapping, head-major layout and the causal
//! limit of chunked prefill all agree with candle's masked attention), within fp16 rounding.

mod common;

use candle_core::{Device, Tensor};
use common::max_abs_diff;
use fibquant::{CachePolicy, SideCode};
use fibquant_eval::kv_cache::{F32Cache, KvCache};
use fibquant_eval::models::attention::{Heads, MaskCache};
use fibquant_eval::runtime_cache::RuntimeCache;

fn tensor(seed: u64, heads: usize, seq: usize, d: usize) -> Tensor {
    let mut rng = fibquant::util::rng::Xoshiro256::new(seed);
    let v: Vec<f32> = (0..heads * seq * d)
        .map(|_| rng.next_gaussian() as f32)
        .collect();
    Tensor::from_vec(v, (1, heads, seq, d), &Device::Cpu).unwrap()
}

#[test]
fn runtime_cache_attends_like_the_uncompressed_cache() {
    let heads = Heads {
        n_head: 6,
        n_kv_head: 2,
        head_dim: 64,
    };
    let fp16 = SideCode::Fp16;
    let mut runtime = RuntimeCache::new(2, heads, CachePolicy::plain(fp16, fp16)).unwrap();
    let mut exact = F32Cache::new(2);
    let mut masks = MaskCache::default();
    let mut pos = 0;
    for (i, seq) in [5usize, 1, 9, 1].into_iter().enumerate() {
        let q = tensor(10 + i as u64, 6, seq, 64);
        let k = tensor(20 + i as u64, 2, seq, 64);
        let v = tensor(30 + i as u64, 2, seq, 64);
        let mask = masks.get(seq, pos, &Device::Cpu).unwrap();
        for layer in 0..2 {
            let a = runtime
                .attend(layer, heads, &q, &k, &v, mask.as_ref())
                .unwrap();
            let b = exact
                .attend(layer, heads, &q, &k, &v, mask.as_ref())
                .unwrap();
            assert_eq!(a.dims(), b.dims());
            let diff = max_abs_diff(&a, &b);
            // fp16 rounding of unit-size keys and values (2^-11 relative) moves scores of
            // 64-term dot products by about 1e-2 at most; outputs are averages of values.
            assert!(diff < 2e-2, "layer {layer}, chunk {i}: {diff}");
        }
        pos += seq;
    }
    assert_eq!(runtime.seq_len(1), pos);
    // fp16 rows: 2 bytes per value.
    assert_eq!(runtime.stored_bytes(), 2 * 2 * 2 * pos * 64 * 2);
}
