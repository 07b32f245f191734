//! What the exact ball search (`fibquant::search::balls`) scans per block on the registry codebooks it
//! serves: mean cells scanned, codeword slots scored in them, and centroids scored, over the
//! blocks of 20000 random unit vectors (the source law after the rotation). Counts, not times:
//! the same on every machine.
//!
//! ```text
//! cargo run --release -p fibquant --example ball_stats
//! ```
use fibquant::registry;
use fibquant::util::rng::Xoshiro256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (d, k, n) in [(64, 4, 2048), (64, 4, 4096), (128, 4, 2048), (128, 4, 4096)] {
        let codebook = registry::codebook(d, k, n)?;
        let balls = codebook.balls().ok_or("no ball index for this codebook")?;
        let mut rng = Xoshiro256::new(7);
        let (mut cells, mut slots, mut blocks) = (0usize, 0usize, 0usize);
        for _ in 0..20000 {
            let v: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let u: Vec<f32> = v.iter().map(|a| a / norm).collect();
            for x in u.chunks_exact(k) {
                let (_, scanned) = balls.nearest_counted(x).ok_or("query refused")?;
                cells += scanned.cells;
                slots += scanned.slots;
                blocks += 1;
            }
        }
        let per = |v: usize| v as f64 / blocks as f64;
        println!(
            "d={d} k={k} N={n}: {:.1} of {} cells scanned, {:.0} codeword slots + {} centroids \
             scored per block (exhaustive: {n})",
            per(cells),
            balls.cells(),
            per(slots),
            balls.cells()
        );
    }
    Ok(())
}
