//! What the first use of a code costs, and what `Codec::prepare` moves ahead: for each preset
//! rate at head dim 64, the time to build the codec (loading and checking the embedded codebook,
//! building its inverted file where it has one), to prepare it (the lazy search structures and
//! attention copies), then a first and a second `encode_batch` of 4096 vectors. Run it fresh
//! (each code is built once per process):
//!
//!     cargo run --release -p fibquant --example first_use
use fibquant::util::rng::Xoshiro256;
use fibquant::{Codec, CodecConfig};
use std::time::Instant;

fn main() -> Result<(), fibquant::Error> {
    const ROWS: usize = 4096;
    let d = 64;
    let mut rng = Xoshiro256::new(1);
    let rows: Vec<f32> = (0..ROWS * d).map(|_| rng.next_gaussian() as f32).collect();
    println!("d = {d}, {ROWS} vectors; seconds");
    println!(
        "{:>5} {:>14} {:>8} {:>8} {:>12} {:>12}",
        "bits", "code", "new", "prepare", "1st encode", "2nd encode"
    );
    for bits in [4.0, 3.0, 2.0, 1.0, 0.5] {
        let t = Instant::now();
        let codec = Codec::new(CodecConfig::preset(d, bits)?)?;
        let new = t.elapsed().as_secs_f64();
        let t = Instant::now();
        codec.prepare();
        let prepare = t.elapsed().as_secs_f64();
        let mut slots = vec![0u8; ROWS * codec.slot_bytes()];
        let t = Instant::now();
        codec.encode_batch(&rows, &mut slots)?;
        let first = t.elapsed().as_secs_f64();
        let t = Instant::now();
        codec.encode_batch(&rows, &mut slots)?;
        let second = t.elapsed().as_secs_f64();
        let c = codec.config();
        let code = format!("k={} N={}", c.k, c.n);
        println!("{bits:>5} {code:>14} {new:>8.3} {prepare:>8.3} {first:>12.3} {second:>12.3}");
    }
    Ok(())
}
