//! Encode, decode and forward-rotation time per vector at `d = 64`, `96` and `128` (the registry's
//! head dims), for `k = 4, N = 256` and the scalar `N = 4` code: `d = 96` is not a power of two,
//! so it takes the dense Haar rotation (`runtime/src/codec/rotation.rs`) where the others take the
//! randomized Hadamard transform. Fastest of 5 passes over 4096 vectors, one thread (a
//! profiling aid; `fibquant-gen bench` measures `d = 64` and `128` against the peers).
//!
//! ```text
//! cargo run --release -p fibquant --example rotation_speed
//! ```
use fibquant::{Codec, CodecConfig};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows = 4096;
    for (k, n) in [(4usize, 256usize), (1, 4)] {
        for d in [64usize, 96, 128] {
            let codec = Codec::new(CodecConfig::new(d, k, n))?;
            let x: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.7311).sin()).collect();
            let mut slots = vec![0u8; rows * codec.slot_bytes()];
            let mut y = vec![0f32; rows * d];
            let mut rotated = vec![0f32; d];
            let fastest = |f: &mut dyn FnMut()| {
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e9 / rows as f64
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let encode = fastest(&mut || codec.encode_batch(&x, &mut slots).unwrap());
            let decode = fastest(&mut || codec.decode_batch(&slots, &mut y).unwrap());
            let rotate = fastest(&mut || {
                for v in x.chunks_exact(d) {
                    codec.rotation().apply(v, &mut rotated);
                    std::hint::black_box(&rotated);
                }
            });
            println!(
                "d={d:3} k={k} N={n:3} ({}): encode {encode:5.0} ns, decode {decode:5.0} ns, rotation {rotate:5.0} ns",
                if d.is_power_of_two() { "Hadamard" } else { "dense Haar" }
            );
        }
    }
    Ok(())
}
