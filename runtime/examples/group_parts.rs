//! The parts of a decode step for one kv head of 3 query heads (grouped-query attention), per
//! key: grouped scores and weighted sums on codes ([`fibquant::Codec::scores_group`],
//! [`fibquant::Codec::weighted_sum_group`]) against the fp16 row kernels the cache uses for its
//! exact parts, 8192 keys at d = 64, 50 calls each (one thread).
//!
//!     cargo run --release -p fibquant --example group_parts
use fibquant::util::rng::Xoshiro256;
use fibquant::{kernels, Codec, CodecConfig};
use std::time::Instant;

const D: usize = 64;
const KEYS: usize = 8192;
const HEADS: usize = 3;
const CALLS: usize = 50;

/// Nanoseconds per key of `f`, run `CALLS` times.
fn per_key(mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..CALLS {
        f();
    }
    t.elapsed().as_secs_f64() * 1e9 / (CALLS * KEYS) as f64
}

fn main() {
    let mut rng = Xoshiro256::new(1);
    let x: Vec<f32> = (0..KEYS * D).map(|_| rng.next_gaussian() as f32).collect();
    let q: Vec<f32> = (0..HEADS * D).map(|_| rng.next_gaussian() as f32).collect();
    let w: Vec<f32> = (0..HEADS * KEYS)
        .map(|_| rng.next_open01() as f32 / KEYS as f32)
        .collect();
    println!("ns per key, {HEADS} query heads, {KEYS} keys, d = {D}:");
    for (k, n) in [(4, 65536), (4, 4096), (8, 64497), (8, 256), (2, 256)] {
        let c = Codec::new(CodecConfig::new(D, k, n)).expect("embedded code");
        let mut slots = vec![0u8; KEYS * c.slot_bytes()];
        c.encode_batch(&x, &mut slots).expect("finite rows");
        let mut out = vec![0f32; HEADS * KEYS];
        let mut acc = vec![0f32; HEADS * D];
        let s = per_key(|| c.scores_group(&q, &slots, &mut out).unwrap());
        let a = per_key(|| c.weighted_sum_group(&w, &slots, &mut acc).unwrap());
        println!("  {k}x{n}: scores {s:.1}, weighted sums {a:.1}");
    }
    let isa = kernels::detect();
    let h: Vec<u16> = x
        .iter()
        .map(|&v| fibquant::util::fp16::f32_to_f16_bits(v))
        .collect();
    let mut out = vec![0f32; KEYS];
    let mut acc = vec![0f32; D];
    let s = per_key(|| {
        for g in q.chunks_exact(D) {
            kernels::f16_row_dots(isa, g, &h, &mut out);
        }
    });
    let a = per_key(|| {
        for g in w.chunks_exact(KEYS) {
            kernels::f16_row_accumulate(isa, g, &h, &mut acc);
        }
    });
    println!("  fp16 rows: scores {s:.1}, weighted sums {a:.1}");
}
