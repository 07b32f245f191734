//! Times the two halves of attention on codes, [`Codec::scores`] and [`Codec::weighted_sum`],
//! separately over 32768 slots of `d = 64` (`DIM` sets another head dim; a profiling aid; the published figures come from
//! `fibquant-gen bench`). The working set fits in L2 on most CPUs, so this shows the arithmetic,
//! not the memory traffic, unless `HEADS` (default 1) copies of the slots are scored one after
//! the other. `ROUNDS=1` also prints every repeat's time.
//!
//! ```text
//! cargo run --release -p fibquant --example attn_parts            # every code below
//! REPS=400 cargo run --release -p fibquant --example attn_parts -- 8,16 2,64   # chosen (k, N)
//! ```
use fibquant::{Codec, CodecConfig};
use std::time::Instant;

const CODES: [(usize, usize); 10] = [
    (8, 16),
    (8, 256),
    (4, 256),
    (2, 64),
    (2, 256),
    (1, 2),
    (1, 16),
    (4, 4096),
    (8, 65536),
    (4, 65536),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let d: usize = std::env::var("DIM").map_or(Ok(64), |r| r.parse())?;
    let count = 32768;
    let reps: usize = std::env::var("REPS").map_or(Ok(7), |r| r.parse())?;
    let heads: usize = std::env::var("HEADS").map_or(Ok(1), |r| r.parse())?;
    let mut chosen = Vec::new();
    for arg in std::env::args().skip(1) {
        let (k, n) = arg.split_once(',').ok_or("arguments are K,N pairs")?;
        chosen.push((k.parse::<usize>()?, n.parse::<usize>()?));
    }
    let mut state = 1u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let codes = if chosen.is_empty() {
        CODES.to_vec()
    } else {
        chosen
    };
    for (k, n) in codes {
        let codec = Codec::new(CodecConfig::new(d, k, n))?;
        let x: Vec<f32> = (0..count * d).map(|_| uniform()).collect();
        let mut slots = vec![0u8; count * codec.slot_bytes()];
        codec.encode_batch(&x, &mut slots)?;
        let slots: Vec<u8> = slots
            .iter()
            .copied()
            .cycle()
            .take(heads * slots.len())
            .collect();
        let q: Vec<f32> = (0..d).map(|_| uniform()).collect();
        let w: Vec<f32> = (0..count).map(|_| uniform().abs() / count as f32).collect();
        let (mut scores, mut out) = (vec![0f32; count], vec![0f32; d]);
        let (mut t_scores, mut t_sum) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            for head in slots.chunks_exact(count * codec.slot_bytes()) {
                codec.scores(&q, head, &mut scores)?;
            }
            t_scores.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for head in slots.chunks_exact(count * codec.slot_bytes()) {
                codec.weighted_sum(&w, head, &mut out)?;
            }
            t_sum.push(t.elapsed().as_secs_f64());
        }
        let per_key = 1e9 / (count * heads) as f64;
        if std::env::var_os("ROUNDS").is_some() {
            eprintln!("{t_scores:.4?} {t_sum:.4?}");
        }
        println!(
            "k={k} N={n}: scores {:.1} ns/key, weighted_sum {:.1} ns/key",
            median(t_scores) * per_key,
            median(t_sum) * per_key
        );
    }
    Ok(())
}
