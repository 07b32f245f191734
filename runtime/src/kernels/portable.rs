//! Portable reference kernels.

use crate::codebook::LANES;

/// Per-lane best score and group of a lane-grouped nearest-codeword search.
#[inline]
pub fn nearest_lanes(lanes: &[f32], norms: &[f32], k: usize, x: &[f32]) -> ([f32; 8], [u32; 8]) {
    let mut best = [f32::INFINITY; LANES];
    let mut best_group = [0u32; LANES];
    for (g, (cg, ng)) in lanes
        .chunks_exact(k * LANES)
        .zip(norms.chunks_exact(LANES))
        .enumerate()
    {
        let mut acc = [0f32; LANES];
        for (j, &xj) in x.iter().enumerate().take(k) {
            let row = &cg[j * LANES..(j + 1) * LANES];
            for l in 0..LANES {
                acc[l] += xj * row[l];
            }
        }
        for l in 0..LANES {
            let s = ng[l] - 2.0 * acc[l];
            let better = s < best[l];
            best[l] = if better { s } else { best[l] };
            best_group[l] = if better { g as u32 } else { best_group[l] };
        }
    }
    (best, best_group)
}

/// In-place unnormalized fast Walsh-Hadamard transform; `v.len()` must be a power of two.
pub fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for block in v.chunks_exact_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                let (s, t) = (*x + *y, *x - *y);
                *x = s;
                *y = t;
            }
        }
        h *= 2;
    }
}
