//! Sizes the exact grid search (`fibquant::search::cells`) for one embedded codebook: for each number
//! of cells per coordinate, the build time, memory, candidates searched per block, blocks that
//! fall outside the grid, disagreements with exhaustive search (must be 0) and the speed against
//! exhaustive search, on 200000 blocks of uniformly random unit vectors.
//!
//! ```text
//! cargo run --release -p fibquant --example cells_sweep -- DIM K N PER_DIM [PER_DIM ...]
//! cargo run --release -p fibquant --example cells_sweep -- 128 4 256 4 6 8
//! ```

use fibquant::kernels::OUTSIDE;
use fibquant::search::cells::CellIndex;
use fibquant::search::exhaustive::SearchIndex;
use fibquant::util::rng::unit_vector_blocks;
use std::time::Instant;

const USAGE: &str = "usage: cells_sweep DIM K N PER_DIM [PER_DIM ...]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{USAGE}: {e}"))?;
    if args.len() < 4 {
        return Err(USAGE.into());
    }
    let (d, k, n) = (args[0], args[1], args[2]);
    let cb = fibquant::registry::codebook(d, k, n)?;
    let index = SearchIndex::new(cb.codewords(), k);
    let count = 200_000;
    let blocks = unit_vector_blocks(d, k, count, 7);
    let (expected, exhaustive_ns) = best_of(5, || {
        blocks
            .chunks_exact(k)
            .map(|x| index.nearest(x).0)
            .collect::<Vec<u32>>()
    });
    for &per_dim in &args[3..] {
        let start = Instant::now();
        let Some(grid) = CellIndex::new(cb.codewords(), cb.norms_sq(), k, per_dim) else {
            println!("g={per_dim}: no grid (too many cells or unsupported k)");
            continue;
        };
        let build = start.elapsed().as_secs_f64();
        let (mut searched, mut outside) = (0usize, 0usize);
        for x in blocks.chunks_exact(k) {
            match grid.candidates_for(x) {
                Some(c) => searched += c,
                None => outside += 1,
            }
        }
        let (got, grid_ns) = best_of(5, || {
            let mut got = vec![0u32; count];
            grid.nearest_many(&blocks, &mut got);
            for (o, x) in got.iter_mut().zip(blocks.chunks_exact(k)) {
                if *o == OUTSIDE {
                    *o = index.nearest(x).0;
                }
            }
            got
        });
        let wrong = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        println!(
            "d={d} k={k} N={n} g={per_dim}: build {build:.3} s, {} KiB, {:.1} stored per cell, \
             {:.1} searched per block, {outside} outside, {wrong} wrong; \
             exhaustive {:.1} ns, grid {:.1} ns per block ({:.1}x)",
            grid.heap_bytes() / 1024,
            grid.stored() as f64 / grid.per_dim().pow(k as u32) as f64,
            searched as f64 / (count - outside).max(1) as f64,
            exhaustive_ns / count as f64,
            grid_ns / count as f64,
            exhaustive_ns / grid_ns
        );
    }
    Ok(())
}

/// The result of `f` and its fastest time over `runs` runs, in ns.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let r = std::hint::black_box(f());
        best = best.min(start.elapsed().as_secs_f64() * 1e9);
        out = Some(r);
    }
    (out.expect("runs > 0"), best)
}
