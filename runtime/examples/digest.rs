//! One line per embedded rate point: a hash of the slots that `encode` writes for 64 fixed
//! vectors, of the vectors `decode_batch` returns, and of the attention scores and weighted sum
//! over them (default settings). Two machines, ISAs or builds that print the same lines encode,
//! decode and score bit for bit alike; `diff` the outputs to check (`.ci/aarch64 test` compares
//! aarch64 with x86_64 this way; the README's aarch64 paragraph gives the result).
//!
//! ```text
//! cargo run --release -p fibquant --example digest
//! FIBQUANT_ISA=portable cargo run --release -p fibquant --example digest
//! ```
use fibquant::rng::Xoshiro256;
use fibquant::{registry, Codec, CodecConfig};

/// FNV-1a over bytes: a stable 64-bit hash with no dependency.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= b as u64;
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const ROWS: usize = 64;
    println!("isa {:?}", fibquant::kernels::detect());
    for e in registry::entries() {
        let codec = Codec::new(CodecConfig::new(e.dim, e.k, e.n))?;
        let d = e.dim;
        // Gaussian rows with varied norms; the generator uses only exact arithmetic plus
        // ln / cos, so the inputs can be compared across machines too: they are hashed.
        let mut rng = Xoshiro256::new(d as u64 * 1000 + e.k as u64 * 100 + e.n as u64);
        let rows: Vec<f32> = (0..ROWS * d)
            .map(|i| rng.next_gaussian() as f32 * (1.0 + (i / d) as f32 * 0.25))
            .collect();
        let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
        let sb = codec.slot_bytes();
        let mut slots = vec![0u8; ROWS * sb];
        codec.encode_batch(&rows, &mut slots)?;
        let mut decoded = vec![0f32; ROWS * d];
        codec.decode_batch(&slots, &mut decoded)?;
        let mut scores = vec![0f32; ROWS];
        codec.scores(&q, &slots, &mut scores)?;
        let weights: Vec<f32> = (0..ROWS).map(|i| 1.0 / (1 + i) as f32).collect();
        let mut sum = vec![0f32; d];
        codec.weighted_sum(&weights, &slots, &mut sum)?;
        let mut h = [0xcbf2_9ce4_8422_2325u64; 5];
        fnv(&mut h[0], &f32_bytes(&rows));
        fnv(&mut h[1], &slots);
        fnv(&mut h[2], &f32_bytes(&decoded));
        fnv(&mut h[3], &f32_bytes(&scores));
        fnv(&mut h[4], &f32_bytes(&sum));
        println!(
            "d={d} k={} N={}: input {:016x} slots {:016x} decoded {:016x} scores {:016x} sum {:016x}",
            e.k, e.n, h[0], h[1], h[2], h[3], h[4]
        );
    }
    Ok(())
}
