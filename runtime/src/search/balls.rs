//! Exact nearest-codeword search through cells bounded by balls.
//!
//! The `N` codewords are clustered (the k-means of [`crate::search::ivf`]) into about `N / 32` cells,
//! and each cell keeps its centroid `mu` and radius `R` (the largest distance from `mu` to one
//! of its codewords). A query scores the centroids, scans the cell of the nearest one, and then
//! every other cell that the triangle inequality cannot rule out: no codeword of a cell is
//! nearer to `x` than `||x - mu|| - R`, so a cell is skipped when that bound, minus the worst
//! rounding error of a computed score, is above the best computed score found so far. Scans
//! use the lane kernel and arithmetic of the exhaustive [`SearchIndex`], so the answer is the
//! exhaustive answer bit for bit, ties included (lowest index wins).
//!
//! Why it is exact: let `m` be the exhaustive answer and `s_b` the best computed score when a
//! cell `C` is skipped. Every codeword `c` of `C` has real distance `||x - c|| > T` with
//! `T^2 >= s_b + E + ||x||^2` (`E` bounds the rounding of a computed score), so its real score
//! `||x - c||^2 - ||x||^2` exceeds `s_b + E` and its computed score exceeds `s_b`. The computed
//! score of `m` is at most `s_b` (the scanned candidates are part of the exhaustive scan), so
//! neither `m` nor a codeword tying with it lies in `C`. The centroid distances come from
//! computed centroid scores, lowered by their own rounding bound. The remaining arithmetic is
//! in f64: the score bounds `E` are about twice the worst f32 rounding, which leaves room for
//! the f64 cancellation when they are added to scores, and `||x||^2`, the radii and `T` carry a
//! relative slack of `2^-40`, far above f64 rounding.
//!
//! Cells that k-means leaves empty are dropped, so the nearest centroid's cell always holds
//! codewords and gives a finite bound.
//!
//! In 4 dimensions a query scans 9.4 to 10.4 of 128 cells for `N = 4096` (356 to 390 codeword
//! slots plus the 128 centroids, instead of 4096 codewords: `cargo run --release -p fibquant
//! --example ball_stats`); in 8 dimensions the balls overlap too much to rule out most cells,
//! so [`BallIndex::new`] is offered only for `k <= 4`.

use crate::search::exhaustive::{SearchIndex, LANES};
use crate::search::ivf::{kmeans, Cell};
use crate::kernels::{self, IdLanes, Isa, LaneBest};

/// Largest block size the index is built for.
pub const MAX_K: usize = 4;

/// Codewords per cell, on average (fewer cells where that would make more than [`MAX_CELLS`]).
pub const CODEWORDS_PER_CELL: usize = 32;

/// Most cells (the candidate marks are a bit set of four 64-bit words).
pub const MAX_CELLS: usize = 256;

const _: () = assert!(MAX_CELLS <= 4 * 64);

/// Codeword coordinates must lie within `[2^-40, 2^40]` in magnitude (the largest one), and a
/// query's squared norm below `2^80`, so that no score overflows and the error bounds hold.
const MAX_SCALE_LOG2: i32 = 40;

/// Relative slack on the f64 quantities of the skip test.
const SLACK: f64 = 1.0 / (1u64 << 40) as f64;

/// What one [`BallIndex::nearest_counted`] search scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Cells scanned (the nearest centroid's included).
    pub cells: usize,
    /// Codeword slots scored in them (groups of 8, padding included).
    pub slots: usize,
}

/// An exact nearest-codeword search over ball-bounded cells (see the module docs).
#[derive(Debug, Clone)]
pub struct BallIndex {
    k: usize,
    centroids: SearchIndex,
    /// Every cell's codewords, cell after cell, each padded to whole groups of 8 in the lane
    /// layout of [`SearchIndex`] (coordinates, squared norms, original indices).
    lanes: Vec<f32>,
    norms: Vec<f32>,
    ids: Vec<u32>,
    /// The groups of cell `j` are `starts[j]..starts[j + 1]`.
    starts: Vec<u32>,
    /// Upper bound on each cell's radius.
    radii: Vec<f64>,
    /// Largest `||c||^2` and `sum |c_j|` over the codewords, and the same over the centroids
    /// (for the rounding bounds).
    codeword_norm_sq: f64,
    codeword_l1: f64,
    centroid_norm_sq: f64,
    centroid_l1: f64,
    isa: Isa,
}

impl BallIndex {
    /// Builds the index of `codewords` (`n * k` values), or `None` where it is not offered:
    /// `k` outside 2 to [`MAX_K`] (the block sizes with an AVX2 scan kernel), fewer than
    /// `2 * CODEWORDS_PER_CELL` codewords, a value that is not finite, or the largest
    /// coordinate's magnitude outside `[2^-40, 2^40]`.
    pub fn new(codewords: &[f32], k: usize) -> Option<BallIndex> {
        if !(2..=MAX_K).contains(&k)
            || !codewords.len().is_multiple_of(k)
            || !codewords.iter().all(|v| v.is_finite())
        {
            return None;
        }
        let n = codewords.len() / k;
        let max_abs = codewords.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = 2f32.powi(MAX_SCALE_LOG2);
        if n < 2 * CODEWORDS_PER_CELL || !(max_abs >= 1.0 / scale && max_abs <= scale) {
            return None;
        }
        let c = (n / CODEWORDS_PER_CELL).min(MAX_CELLS);
        let (cent, _, assign) = kmeans(codewords, k, c);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); c];
        for (i, &a) in assign.iter().enumerate() {
            members[a as usize].push(i as u32);
        }
        // Drop empty cells (see the module docs).
        let kept: Vec<usize> = (0..c).filter(|&j| !members[j].is_empty()).collect();
        let cent: Vec<f32> = kept
            .iter()
            .flat_map(|&j| cent[j * k..(j + 1) * k].to_vec())
            .collect();
        let members: Vec<Vec<u32>> = kept
            .iter()
            .map(|&j| std::mem::take(&mut members[j]))
            .collect();
        let dist = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let radii = members
            .iter()
            .enumerate()
            .map(|(j, ids)| {
                let mu = &cent[j * k..(j + 1) * k];
                let r = ids
                    .iter()
                    .map(|&i| dist(&codewords[i as usize * k..][..k], mu))
                    .fold(0.0, f64::max);
                r * (1.0 + SLACK)
            })
            .collect();
        let norm_sq = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>();
        let l1 = |v: &[f32]| v.iter().map(|&a| (a as f64).abs()).sum::<f64>();
        let max_of = |vals: &[f32], f: &dyn Fn(&[f32]) -> f64| {
            vals.chunks_exact(k).map(f).fold(0.0, f64::max)
        };
        let (mut lanes, mut norms, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        let mut starts = vec![0u32];
        for members in &members {
            let (l, nm, i) = Cell::new(codewords, k, members).into_parts();
            lanes.extend(l);
            norms.extend(nm);
            ids.extend(i);
            starts.push((ids.len() / LANES) as u32);
        }
        Some(BallIndex {
            k,
            codeword_norm_sq: max_of(codewords, &norm_sq),
            codeword_l1: max_of(codewords, &l1),
            centroid_norm_sq: max_of(&cent, &norm_sq),
            centroid_l1: max_of(&cent, &l1),
            centroids: SearchIndex::new(&cent, k),
            lanes,
            norms,
            ids,
            starts,
            radii,
            isa: kernels::detect(),
        })
    }

    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.radii.len()
    }

    /// Bound on the rounding error of a computed score `||c||^2 - 2 <x, c>` (as the lane kernel
    /// computes it) for codewords with `||c||^2 <= norm_sq` and `sum |c_j| <= l1`, and a query
    /// with `max |x_j| = x_max`: the stored norm is within `gamma_k ||c||^2` of the exact one,
    /// the k-term dot product within `gamma_k sum |x_j c_j|`, and the subtraction adds one
    /// rounding; `(2k + 4) u W` with `W = ||c||^2 + 2 x_max sum |c_j|` covers them with room
    /// (as in [`crate::search::cells`]), plus an absolute term for underflow.
    fn rounding(&self, norm_sq: f64, l1: f64, x_max: f64) -> f64 {
        let unit = 2f64.powi(-24);
        let w = norm_sq + 2.0 * x_max * l1;
        ((2 * self.k + 4) as f64 * unit * w + (2 * self.k + 2) as f64 * 2f64.powi(-149))
            * (1.0 + SLACK)
    }

    /// The exhaustive answer for `x` (length `k`): the index of the codeword with the lowest
    /// computed score `||c||^2 - 2 <x, c>`, the lowest index on ties, and that score. `None`
    /// for a query that is not finite or too large for the error bounds (`||x||^2 >= 2^80`):
    /// the caller searches exhaustively.
    pub fn nearest(&self, x: &[f32]) -> Option<(u32, f32)> {
        self.nearest_counted(x).map(|(found, _)| found)
    }

    /// [`nearest`](Self::nearest) and what it cost: the cells it scanned and the codeword
    /// slots it scored in them (whole groups of 8, padding included), besides the
    /// [`cells`](Self::cells) centroids (`cargo run --release -p fibquant --example ball_stats`
    /// prints their means on source-like blocks).
    pub fn nearest_counted(&self, x: &[f32]) -> Option<((u32, f32), Scanned)> {
        let x = &x[..self.k];
        let x_sq: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        if !x_sq.is_finite() || x_sq >= 2f64.powi(2 * MAX_SCALE_LOG2) {
            return None;
        }
        let x_max = x.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let codeword_err = self.rounding(self.codeword_norm_sq, self.codeword_l1, x_max);
        let centroid_err = self.rounding(self.centroid_norm_sq, self.centroid_l1, x_max);
        let cells = self.cells();
        let mut scores = [0f32; MAX_CELLS];
        let scores = &mut scores[..cells];
        self.centroids.scores_into(x, scores);
        // The cell of the nearest centroid (any cell would do for exactness; this one almost
        // always holds the answer, which makes the bound below tight).
        let mut lane_min = [f32::INFINITY; 8];
        for chunk in scores.chunks(8) {
            for (m, &s) in lane_min.iter_mut().zip(chunk) {
                *m = if s < *m { s } else { *m };
            }
        }
        let lowest = lane_min.iter().fold(f32::INFINITY, |m, &s| m.min(s));
        let first = scores.iter().position(|&s| s == lowest).unwrap_or(0);
        let range = |j: usize| (self.starts[j], self.starts[j + 1]);
        let mut lanes = LaneBest::default();
        let scan = |ranges: &[(u32, u32)], lanes: &mut LaneBest| {
            let list = IdLanes {
                lanes: &self.lanes,
                norms: &self.norms,
                ids: &self.ids,
            };
            kernels::nearest_ids(self.isa, list, self.k, x, ranges, lanes)
        };
        scan(&[range(first)], &mut lanes);
        // Cell `j` is skipped when its squared centroid distance (lowered by the rounding of
        // the centroid score) exceeds `(R_j + T)^2`, `T` from the best score in the first
        // cell (which almost always holds the answer: updating `T` as the scan goes on saved
        // no cells on source blocks).
        let t_sq = lanes.lowest().0 as f64 + codeword_err + x_sq * (1.0 + SLACK);
        let t = t_sq.max(0.0).sqrt() * (1.0 + SLACK);
        let x_sq_low = x_sq * (1.0 - SLACK);
        let marks = kernels::ball_marks(
            self.isa,
            scores,
            &self.radii,
            x_sq_low,
            centroid_err,
            t,
            1.0 + SLACK,
        );
        // The marked cells' group ranges go to the scan kernel in batches (a short stack
        // buffer instead of one for every cell).
        let mut ranges = [(0u32, 0u32); 32];
        let groups = |j: usize| (self.starts[j + 1] - self.starts[j]) as usize;
        let mut scanned = Scanned {
            cells: 1,
            slots: groups(first) * LANES,
        };
        let mut count = 0;
        for (w, &word) in marks.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let j = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                if j != first {
                    ranges[count] = range(j);
                    count += 1;
                    scanned.cells += 1;
                    scanned.slots += groups(j) * LANES;
                    if count == ranges.len() {
                        scan(&ranges, &mut lanes);
                        count = 0;
                    }
                }
            }
        }
        scan(&ranges[..count], &mut lanes);
        let (score, id) = lanes.lowest();
        (id != u32::MAX).then_some(((id, score), scanned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Xoshiro256;

    /// The ball index returns the exhaustive answer, index and score, on source-like blocks,
    /// on blocks far outside the codebook, on blocks equidistant from duplicated codewords
    /// (ties), and for every ISA's kernels.
    #[test]
    fn ball_search_is_the_exhaustive_search() {
        let mut rng = Xoshiro256::new(31);
        for (k, n) in [(2, 300), (3, 1000), (4, 2048), (4, 4096)] {
            let mut cw: Vec<f32> = (0..n * k)
                .map(|_| rng.next_gaussian() as f32 * 0.3)
                .collect();
            // Duplicates: codeword 2i + 1 repeats codeword 2i for the first 40.
            for i in 0..40 {
                let (a, b) = cw.split_at_mut((2 * i + 1) * k);
                b[..k].copy_from_slice(&a[2 * i * k..]);
            }
            let exact = SearchIndex::new(&cw, k);
            let balls = BallIndex::new(&cw, k).unwrap();
            assert!(balls.cells() > 0 && balls.cells() <= n / CODEWORDS_PER_CELL);
            for isa in kernels::supported() {
                let balls = BallIndex {
                    isa,
                    ..balls.clone()
                };
                for t in 0..3000 {
                    let x: Vec<f32> = match t % 3 {
                        0 => (0..k).map(|_| rng.next_gaussian() as f32 * 0.3).collect(),
                        1 => (0..k).map(|_| rng.next_gaussian() as f32 * 30.0).collect(),
                        // Exactly a duplicated codeword: a tie at the lowest score.
                        _ => cw[2 * (t % 40) * k..][..k].to_vec(),
                    };
                    assert_eq!(
                        balls.nearest(&x),
                        Some(exact.nearest(&x)),
                        "{isa:?} k={k} n={n}"
                    );
                }
                assert_eq!(balls.nearest(&vec![f32::NAN; k]), None);
                assert_eq!(balls.nearest(&vec![1e30; k]), None);
            }
        }
    }

    /// Ties across cells: a codebook symmetric about the origin (`c` and `-c`, in different
    /// cells) queried at the origin and on the axes, where pairs of codewords score exactly
    /// alike; and a codebook where k-means leaves cells empty (many duplicates), which are
    /// dropped.
    #[test]
    fn ties_across_cells_and_empty_cells() {
        let mut rng = Xoshiro256::new(41);
        let k = 4;
        let half: Vec<f32> = (0..1024 * k)
            .map(|_| rng.next_gaussian() as f32 * 0.3)
            .collect();
        let cw: Vec<f32> = half
            .iter()
            .copied()
            .chain(half.iter().map(|v| -v))
            .collect();
        let exact = SearchIndex::new(&cw, k);
        let balls = BallIndex::new(&cw, k).unwrap();
        let mut queries = vec![vec![0f32; k]];
        for j in 0..k {
            for v in [0.1f32, -0.25, 0.5] {
                let mut x = vec![0f32; k];
                x[j] = v;
                queries.push(x);
            }
        }
        for x in &queries {
            assert_eq!(balls.nearest(x), Some(exact.nearest(x)), "{x:?}");
        }
        // 16 distinct codewords repeated 64 times each: at most 16 non-empty cells of 64.
        let base: Vec<f32> = (0..16 * k).map(|_| rng.next_gaussian() as f32).collect();
        let cw: Vec<f32> = (0..64).flat_map(|_| base.clone()).collect();
        let exact = SearchIndex::new(&cw, k);
        let balls = BallIndex::new(&cw, k).unwrap();
        assert!(balls.cells() <= 16, "{} cells", balls.cells());
        for _ in 0..500 {
            let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
            assert_eq!(balls.nearest(&x), Some(exact.nearest(&x)));
        }
    }

    /// On the registry's `k = 4, N = 4096` codebook and source-like blocks (blocks of random
    /// unit vectors of `d = 64`), `Codebook` routes through the ball index, every entry point
    /// gives the exhaustive answer, the index prunes (under a quarter of the cells scanned on
    /// average: 9.4 of 128 by the `ball_stats` example).
    #[test]
    fn registry_codebook_routes_through_the_ball_index_and_prunes() {
        let cb = crate::registry::codebook(64, 4, 4096).unwrap();
        let balls = cb.balls().expect("k4N4096 uses the ball index");
        let mut rng = Xoshiro256::new(43);
        let mut blocks = Vec::new();
        for _ in 0..200 {
            let v: Vec<f32> = (0..64).map(|_| rng.next_gaussian() as f32).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            blocks.extend(v.iter().map(|a| a / norm));
        }
        let mut scanned = 0;
        for x in blocks.chunks_exact(4) {
            let ((id, _), cost) = balls.nearest_counted(x).unwrap();
            scanned += cost.cells;
            assert_eq!(id, cb.nearest_exhaustive(x));
            assert_eq!(cb.nearest(x), id);
            assert_eq!(cb.nearest_with_distance(x).0, id);
        }
        let mut many = vec![0u32; blocks.len() / 4];
        cb.nearest_many(&blocks, &mut many);
        for (x, &id) in blocks.chunks_exact(4).zip(&many) {
            assert_eq!(id, cb.nearest_exhaustive(x));
        }
        let mean = scanned as f64 / many.len() as f64;
        assert!(
            mean < balls.cells() as f64 / 4.0,
            "{mean} of {} cells",
            balls.cells()
        );
    }

    /// Codewords on a circle queried at its centre: every codeword is about equally near, so
    /// no cell can be ruled out and more than one batch of 32 cells is scanned (the batch
    /// flush); the answer is still the exhaustive one.
    #[test]
    fn a_query_no_cell_can_exclude_scans_every_cell() {
        let n = 4096;
        let cw: Vec<f32> = (0..n)
            .flat_map(|i| {
                let a = i as f64 * std::f64::consts::TAU / n as f64;
                [a.cos() as f32, a.sin() as f32]
            })
            .collect();
        let exact = SearchIndex::new(&cw, 2);
        let balls = BallIndex::new(&cw, 2).unwrap();
        for isa in kernels::supported() {
            let balls = BallIndex {
                isa,
                ..balls.clone()
            };
            let (found, cost) = balls.nearest_counted(&[0.0, 0.0]).unwrap();
            assert_eq!(cost.cells, balls.cells(), "{isa:?}");
            assert!(cost.cells > 32);
            assert_eq!(found, exact.nearest(&[0.0, 0.0]), "{isa:?}");
        }
    }

    /// Not offered for k = 1 or 8, tiny codebooks or out-of-range scales.
    #[test]
    fn ball_index_is_declined_where_it_would_not_be_exact_or_pay() {
        assert!(BallIndex::new(&[0.5; 8 * 4096], 8).is_none());
        assert!(BallIndex::new(&[0.5; 4096], 1).is_none());
        assert!(BallIndex::new(&[0.5; 4 * 40], 4).is_none());
        assert!(BallIndex::new(&[1e20; 4 * 4096], 4).is_none());
        assert!(BallIndex::new(&[0.0; 4 * 4096], 4).is_none());
    }
}
