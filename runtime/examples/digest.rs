//! One line per embedded rate point: a hash of the slots that `encode` writes for 64 fixed
//! vectors, of the vectors `decode_batch` returns, and of the attention scores and weighted sum
//! over them (default settings), then of grouped attention (three query heads at once) and of
//! the KV cache's attention output at every preset rate. Two machines, ISAs or builds that print the same lines encode,
//! decode and score bit for bit alike; `diff` the outputs to check (`.ci/aarch64 test` compares
//! aarch64 with x86_64 this way; the README's aarch64 paragraph gives the result).
//!
//! ```text
//! cargo run --release -p fibquant --example digest
//! FIBQUANT_ISA=portable cargo run --release -p fibquant --example digest
//! ```
use fibquant::util::rng::Xoshiro256;
use fibquant::{registry, CachePolicy, CacheShape, Codec, CodecConfig, KvCache};

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
        let group: Vec<f32> = (0..3 * d).map(|_| rng.next_gaussian() as f32).collect();
        let mut group_scores = vec![0f32; 3 * ROWS];
        codec.scores_group(&group, &slots, &mut group_scores)?;
        let group_weights: Vec<f32> = (0..3 * ROWS).map(|i| 1.0 / (2 + i) as f32).collect();
        let mut group_sum = vec![0f32; 3 * d];
        codec.weighted_sum_group(&group_weights, &slots, &mut group_sum)?;
        let mut h = [0xcbf2_9ce4_8422_2325u64; 7];
        fnv(&mut h[0], &f32_bytes(&rows));
        fnv(&mut h[1], &slots);
        fnv(&mut h[2], &f32_bytes(&decoded));
        fnv(&mut h[3], &f32_bytes(&scores));
        fnv(&mut h[4], &f32_bytes(&sum));
        fnv(&mut h[5], &f32_bytes(&group_scores));
        fnv(&mut h[6], &f32_bytes(&group_sum));
        println!(
            "d={d} k={} N={}: input {:016x} slots {:016x} decoded {:016x} scores {:016x} sum {:016x} \
             group scores {:016x} group sum {:016x}",
            e.k, e.n, h[0], h[1], h[2], h[3], h[4], h[5], h[6]
        );
    }
    for d in [64, 128] {
        for bits in [1.0, 2.0, 3.0, 4.0] {
            println!("cache d={d} b={bits}: {:016x}", cache_digest(d, bits)?);
        }
    }
    Ok(())
}

/// A hash of the default cache's attention output at `bits` for head dim `d`: two layers of
/// 6 query and 2 kv heads, a prefill of 300 positions in chunks of 100 (whole blocks, a partial
/// block in fp16, the sinks), then 20 decode steps.
fn cache_digest(d: usize, bits: f64) -> Result<u64, fibquant::Error> {
    let shape = CacheShape {
        layers: 2,
        query_heads: 6,
        kv_heads: 2,
        head_dim: d,
    };
    let mut cache = KvCache::new(shape, CachePolicy::preset(bits))?;
    let mut rng = Xoshiro256::new(d as u64 * 7 + bits as u64);
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut gaussian = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| rng.next_gaussian() as f32 * if i % 16 == 3 { 5.0 } else { 1.0 })
            .collect()
    };
    let chunks = [100, 100, 100]
        .into_iter()
        .chain(std::iter::repeat_n(1, 20));
    for seq in chunks {
        for layer in 0..shape.layers {
            let q = gaussian(shape.query_heads * seq * d);
            let k = gaussian(shape.kv_heads * seq * d);
            let v = gaussian(shape.kv_heads * seq * d);
            let mut out = vec![0f32; q.len()];
            cache.append_and_attend(layer, &q, &k, &v, seq, &mut out)?;
            fnv(&mut hash, &f32_bytes(&out));
        }
    }
    Ok(hash)
}
