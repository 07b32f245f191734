//! Exhaustive nearest-codeword search: every codeword scored, in lanes of [`LANES`]. The
//! reference every other search in [`crate::search`] answers like (exactly, or within the
//! approximation the plan states), and the last search behind them all.

pub use crate::kernels::LANES;

/// Exhaustive nearest-codeword search over codewords laid out in groups of [`LANES`]: within a
/// group, coordinate `j` of the 8 codewords is contiguous, so the 8 distances are computed in
/// independent lanes (the compiler vectorizes this portable code). The result is identical to
/// [`nearest_scalar`], ties included (lowest index wins).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchIndex {
    k: usize,
    n: usize,
    isa: crate::kernels::Isa,
    /// `groups * k * LANES` coordinates; padding codewords are zero.
    lanes: Vec<f32>,
    /// `groups * LANES` squared norms; padding is `+inf`, so never chosen.
    norms: Vec<f32>,
}

impl SearchIndex {
    /// Builds the index of `codewords` (`n * k` values, codeword-major, all finite). Panics if
    /// `k` is 0.
    pub fn new(codewords: &[f32], k: usize) -> SearchIndex {
        assert!(k > 0, "codewords of k = 0 values");
        let n = codewords.len() / k;
        let groups = n.div_ceil(LANES);
        let mut lanes = vec![0f32; groups * k * LANES];
        let mut norms = vec![f32::INFINITY; groups * LANES];
        for (i, c) in codewords.chunks_exact(k).enumerate() {
            let (g, l) = (i / LANES, i % LANES);
            for (j, &v) in c.iter().enumerate() {
                lanes[(g * k + j) * LANES + l] = v;
            }
            norms[i] = c.iter().map(|v| v * v).sum();
        }
        SearchIndex {
            k,
            n,
            isa: crate::kernels::detect(),
            lanes,
            norms,
        }
    }

    /// Number of codewords.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the index is empty (never, for a valid codebook).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Scores `||c||^2 - 2 <x, c>` of every codeword into `out` (length `n`), in index order.
    pub fn scores_into(&self, x: &[f32], out: &mut [f32]) {
        let n = self.n.min(out.len());
        crate::kernels::lane_scores(self.isa, &self.lanes, &self.norms, self.k, x, &mut out[..n]);
    }

    /// Index of the nearest codeword to `x` (length `k`) and its score `||c||^2 - 2 <x, c>`
    /// (add `||x||^2` for the squared distance).
    #[inline]
    pub fn nearest(&self, x: &[f32]) -> (u32, f32) {
        let (best, best_group) =
            crate::kernels::nearest_lanes(self.isa, &self.lanes, &self.norms, self.k, x);
        let (best_i, best_s) = lowest_lane(&best, &best_group);
        if best_i as usize >= self.n || !best_s.is_finite() {
            // Only reachable with non-finite input: fall back to codeword 0.
            return (0, best_s);
        }
        (best_i, best_s)
    }
}

/// Merges the per-lane minima of a lane-grouped search (`best[l]`, reached at group
/// `best_group[l]`) into the lowest score and its position `group * LANES + lane`, the lowest
/// such position among equal scores (what one sequential scan in index order keeps). Branch-free:
/// which lane wins is data, and mispredicted branches cost more than the search of a short list.
#[inline(always)]
pub(crate) fn lowest_lane(best: &[f32; LANES], best_group: &[u32; LANES]) -> (u32, f32) {
    let min = best.iter().copied().fold(f32::INFINITY, f32::min);
    let mut pos = u32::MAX;
    for l in 0..LANES {
        let p = best_group[l] * LANES as u32 + l as u32;
        pos = if best[l] == min { pos.min(p) } else { pos };
    }
    (pos, min)
}

/// Reference exhaustive nearest-codeword search, one codeword at a time: minimizes
/// `||c||^2 - 2 <x, c>`. Returns the index and that score. [`SearchIndex`] gives the same answer
/// faster; this one is the oracle its tests compare against.
pub fn nearest_scalar(codewords: &[f32], norms_sq: &[f32], k: usize, x: &[f32]) -> (u32, f32) {
    let mut best = f32::INFINITY;
    let mut best_i = 0u32;
    match k {
        1 => {
            let x0 = x[0];
            for (i, (c, nsq)) in codewords.iter().zip(norms_sq).enumerate() {
                let s = nsq - 2.0 * x0 * c;
                if s < best {
                    best = s;
                    best_i = i as u32;
                }
            }
        }
        _ => {
            for (i, (c, nsq)) in codewords.chunks_exact(k).zip(norms_sq).enumerate() {
                let dot: f32 = c.iter().zip(x).map(|(a, b)| a * b).sum();
                let s = nsq - 2.0 * dot;
                if s < best {
                    best = s;
                    best_i = i as u32;
                }
            }
        }
    }
    (best_i, best)
}


#[cfg(test)]
#[cfg(test)]
mod tie_tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lowest_index_like_the_reference() {
        // Duplicated codewords across lanes and groups.
        let mut cw = Vec::new();
        for i in 0..20 {
            cw.extend_from_slice(&[(i % 3) as f32, 1.0]);
        }
        let idx = SearchIndex::new(&cw, 2);
        let nsq: Vec<f32> = cw.chunks(2).map(|c| c[0] * c[0] + c[1] * c[1]).collect();
        for x in [[0.0f32, 1.0], [1.0, 1.0], [2.0, 1.0], [0.5, 0.0]] {
            assert_eq!(idx.nearest(&x), nearest_scalar(&cw, &nsq, 2, &x));
        }
    }
}
