//! How often the certified shortlists (`fibquant::search::shortlist`) answer a block by themselves, per
//! grid size and list length, on the registry's k = 4 codebooks without an exact grid: the
//! fraction of blocks certified over the blocks of 20000 random unit vectors (the source law
//! after the rotation), build time and memory, and whether every certified answer equals the
//! exhaustive one.
//!
//! ```text
//! cargo run --release -p fibquant --example shortlist_stats [VECTORS [N]]
//! ```
use fibquant::registry;
use fibquant::search::shortlist::ShortlistIndex;
use fibquant::util::rng::Xoshiro256;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let vectors: usize = args.get(1).map_or(Ok(20000), |a| a.parse())?;
    // An optional codebook size keeps only those codebooks.
    let only: Option<usize> = args.get(2).map(|a| a.parse()).transpose()?;
    for (d, k, n) in [
        (128, 4, 2048),
        (128, 4, 4096),
        (64, 4, 4096),
        (128, 4, 65536),
        (64, 4, 65536),
    ] {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let codebook = registry::codebook(d, k, n)?;
        let mut rng = Xoshiro256::new(7);
        let mut blocks = Vec::new();
        for _ in 0..vectors {
            let v: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            blocks.extend(v.iter().map(|a| a / norm));
        }
        let exact: Vec<u32> = blocks
            .chunks_exact(k)
            .map(|x| codebook.nearest_exhaustive(x))
            .collect();
        for per_dim in [12, 16] {
            for (slots, tiers) in [(16, 2), (16, 3), (16, 4)] {
                let start = Instant::now();
                let index = ShortlistIndex::new(
                    codebook.codewords(),
                    codebook.norms_sq(),
                    k,
                    per_dim,
                    slots,
                    tiers,
                )
                .ok_or("declined")?;
                let built = start.elapsed().as_secs_f64();
                let mut out = vec![0u32; exact.len()];
                // Fastest of 5 passes (the first one warms the tables).
                let ns = (0..5)
                    .map(|_| {
                        let start = Instant::now();
                        index.nearest_many(&blocks, &mut out);
                        start.elapsed().as_secs_f64() * 1e9 / exact.len() as f64
                    })
                    .fold(f64::INFINITY, f64::min);
                let hits = out.iter().filter(|&&o| o != u32::MAX).count();
                let wrong = out
                    .iter()
                    .zip(&exact)
                    .filter(|(&o, &e)| o != u32::MAX && o != e)
                    .count();
                println!(
                    "d={d} k={k} N={n} per_dim={per_dim} tiers={tiers}x{slots}: certified {:.4} ({wrong} wrong), \
                     {ns:.0} ns/block, built in {built:.2} s, {:.1} MiB",
                    hits as f64 / exact.len() as f64,
                    index.heap_bytes() as f64 / (1 << 20) as f64
                );
            }
        }
    }
    Ok(())
}
