//! Exact nearest-codeword search through a grid of candidate lists.
//!
//! The box `[-r, r]^k` is cut into `g^k` cells by `g - 1` boundaries per coordinate (the same on
//! every coordinate: after the rotation the coordinates are exchangeable), placed at quantiles of
//! the codewords' coordinates so that cells are small where blocks are frequent. For each cell the
//! index keeps, in ascending index order, every codeword that can be the nearest one to some point
//! of the cell; a codeword is left out only when one other codeword scores lower on the whole
//! (closed) cell by more than the worst rounding error of the score. A query finds its cell with
//! `k` short counts and searches only that cell's list with the same lane kernel and the same
//! arithmetic as the exhaustive [`SearchIndex`](crate::search::exhaustive::SearchIndex), so the answer is
//! the exhaustive answer bit for bit, ties included (lowest index wins). A block outside the box
//! (or not finite) is not answered here: [`CellIndex::nearest`] returns `None` and the caller
//! searches exhaustively.
//!
//! Why it is exact: let `m` be the exhaustive answer at `x` and suppose `m` were left out of the
//! cell of `x`. Then some codeword `s` has real score at least `margin` below `m`'s everywhere in
//! the cell, and since each computed score is within `margin / 2` of its real value, the computed
//! score of `s` is below that of `m`: a contradiction. So `m` is in the list, it has the lowest
//! computed score there, and ties in the list resolve as in the full search because the list keeps
//! index order.

use crate::kernels::LANES;
use crate::kernels::{self, Isa};

/// Most cells a grid may have.
pub const MAX_CELLS: usize = 1 << 16;

/// Most cells per coordinate.
pub const MAX_PER_DIM: usize = 16;

/// Largest candidate table a grid may hold (bytes); the registry's grids take at most 4 MiB.
pub const MAX_GRID_BYTES: usize = 16 << 20;

/// Codeword coordinates must lie within `[2^-MAX_SCALE_LOG2, 2^MAX_SCALE_LOG2]` in magnitude (the
/// largest one), so that the scores neither overflow nor lose their relative error bound to
/// underflow.
const MAX_SCALE_LOG2: i32 = 40;

/// Codewords compared against each candidate when pruning a cell's list (the ones with the lowest
/// worst-case score over the cell).
const PRUNERS: usize = 12;

/// A grid of candidate lists for exact nearest-codeword search (see the module docs).
#[derive(Debug, Clone)]
pub struct CellIndex {
    k: usize,
    per_dim: usize,
    /// The `per_dim - 1` interior boundaries, ascending, padded with `+inf` (a fixed-size array
    /// so that the count in [`cell_of`](Self::cell_of) compiles to a few vector compares).
    inner: [f32; MAX_PER_DIM],
    /// Half-width `r` of the covered box `[-r, r]^k`.
    radius: f32,
    /// Cell-number stride of each coordinate: `per_dim^j`.
    strides: Vec<u32>,
    /// Group offset of each cell's list, plus the end: `per_dim^k + 1` entries.
    starts: Vec<u32>,
    /// The candidates, cell after cell, in groups of [`LANES`] laid out as
    /// [`kernels::CellGrid::groups`] says (coordinates, squared norms, indices).
    groups: Vec<f32>,
    isa: Isa,
}

impl CellIndex {
    /// Builds the grid for `codewords` (`n * k` finite values) with squared norms `norms_sq`
    /// (computed as the codebook computes them: `sum of c_j * c_j` in f32), `per_dim` cells per
    /// coordinate. Returns `None` unless `k` is one the search kernel is specialized for (2, 3, 4
    /// or 8), `1 <= per_dim <= MAX_PER_DIM` and `per_dim^k <= MAX_CELLS`; also where the grid
    /// would not pay or not be exact: the largest coordinate's magnitude outside
    /// `[2^-40, 2^40]`, or a table over [`MAX_GRID_BYTES`] (duplicate or clustered codewords
    /// are never pruned: ties).
    pub fn new(codewords: &[f32], norms_sq: &[f32], k: usize, per_dim: usize) -> Option<CellIndex> {
        let n = norms_sq.len();
        if ![2, 3, 4, 8].contains(&k)
            || per_dim == 0
            || per_dim > MAX_PER_DIM
            || n == 0
            || codewords.len() != n * k
        {
            return None;
        }
        per_dim.checked_pow(k as u32).filter(|&c| c <= MAX_CELLS)?;
        let axes = GridAxes::new(codewords, k, per_dim)?;
        let (per_dim, radius) = (axes.per_dim, axes.radius);
        let cells = per_dim.pow(k as u32);
        let edges = &axes.edges;
        let margin = score_margin(codewords, norms_sq, k, radius);
        let delta = norm_offsets(codewords, norms_sq, k);

        let mut starts = Vec::with_capacity(cells + 1);
        let width = (k + 2) * LANES;
        let mut groups: Vec<f32> = Vec::new();
        let mut lo = vec![0f64; k];
        let mut hi = vec![0f64; k];
        let mut low = vec![0f64; n];
        let mut up = vec![0f64; n];
        let mut kept: Vec<usize> = Vec::new();
        let mut order: Vec<usize> = Vec::new();
        for cell in 0..cells {
            let mut rest = cell;
            for j in 0..k {
                let d = rest % per_dim;
                rest /= per_dim;
                lo[j] = edges[d];
                hi[j] = edges[d + 1];
            }
            // Bounds on each codeword's real score minus ||x||^2 over the cell: the squared
            // distance to the nearest and to the farthest point of the box, plus the offset.
            for (i, c) in codewords.chunks_exact(k).enumerate() {
                let (mut near, mut far) = (0.0, 0.0);
                for j in 0..k {
                    let v = c[j] as f64;
                    let below = lo[j] - v;
                    let above = v - hi[j];
                    let gap = below.max(above).max(0.0);
                    near += gap * gap;
                    let reach = (v - lo[j]).abs().max((hi[j] - v).abs());
                    far += reach * reach;
                }
                low[i] = near + delta[i];
                up[i] = far + delta[i];
            }
            let best_up = up.iter().copied().fold(f64::INFINITY, f64::min);
            kept.clear();
            kept.extend((0..n).filter(|&i| low[i] - best_up <= margin));
            // Pairwise test against the codewords with the lowest worst case: `c` goes when
            // `min over the box of (score_c - score_s) > margin`, a linear function of `x`.
            order.clear();
            order.extend(kept.iter().copied());
            let p = PRUNERS.min(order.len());
            if p < order.len() {
                order.select_nth_unstable_by(p, |&a, &b| up[a].total_cmp(&up[b]));
            }
            order.truncate(p);
            kept.retain(|&c| {
                let cc = &codewords[c * k..(c + 1) * k];
                !order.iter().any(|&s| {
                    if s == c {
                        return false;
                    }
                    let sc = &codewords[s * k..(s + 1) * k];
                    let mut min = norms_sq[c] as f64 - norms_sq[s] as f64;
                    for j in 0..k {
                        let w = -2.0 * (cc[j] as f64 - sc[j] as f64);
                        min += if w > 0.0 { w * lo[j] } else { w * hi[j] };
                    }
                    min > margin
                })
            });
            starts.push((groups.len() / width) as u32);
            if (groups.len() + kept.len().div_ceil(LANES) * width) * 4 > MAX_GRID_BYTES {
                return None;
            }
            for group in kept.chunks(LANES) {
                let base = groups.len();
                groups.resize(base + k * LANES, 0.0);
                groups.resize(base + (k + 1) * LANES, f32::INFINITY);
                groups.resize(base + width, f32::from_bits(u32::MAX));
                for (l, &i) in group.iter().enumerate() {
                    for j in 0..k {
                        groups[base + j * LANES + l] = codewords[i * k + j];
                    }
                    groups[base + k * LANES + l] = norms_sq[i];
                    groups[base + (k + 1) * LANES + l] = f32::from_bits(i as u32);
                }
            }
        }
        starts.push((groups.len() / width) as u32);
        Some(CellIndex {
            k,
            per_dim,
            inner: axes.inner,
            radius,
            strides: axes.strides,
            starts,
            groups,
            isa: kernels::detect(),
        })
    }

    /// Cells per coordinate.
    pub fn per_dim(&self) -> usize {
        self.per_dim
    }

    /// Half-width of the covered box `[-r, r]^k`.
    pub fn radius(&self) -> f32 {
        self.radius
    }

    /// Candidates stored over all cells (without padding).
    pub fn stored(&self) -> usize {
        let width = (self.k + 2) * LANES;
        self.groups
            .chunks_exact(width)
            .flat_map(|g| &g[(self.k + 1) * LANES..])
            .filter(|i| i.to_bits() != u32::MAX)
            .count()
    }

    /// Heap memory held by the grid (its tables), in bytes.
    pub fn heap_bytes(&self) -> usize {
        4 * (self.strides.len() + self.starts.len() + self.groups.len())
    }

    fn grid(&self) -> kernels::CellGrid<'_> {
        kernels::CellGrid {
            inner: &self.inner,
            radius: self.radius,
            strides: &self.strides,
            starts: &self.starts,
            groups: &self.groups,
        }
    }

    /// The cell of `x` (length `k`), or `None` when `x` leaves the covered box or is not finite.
    pub fn cell_of(&self, x: &[f32]) -> Option<usize> {
        let mut cell = 0;
        for (&v, &stride) in x[..self.k].iter().zip(&self.strides) {
            // Also false for NaN.
            let inside = v.abs() <= self.radius;
            if !inside {
                return None;
            }
            let d = self.inner.iter().filter(|&&b| b <= v).count();
            cell += d * stride as usize;
        }
        Some(cell)
    }

    /// Number of candidates (with padding) searched for `x`, or `None` outside the box.
    pub fn candidates_for(&self, x: &[f32]) -> Option<usize> {
        let c = self.cell_of(x)?;
        Some((self.starts[c + 1] - self.starts[c]) as usize * LANES)
    }

    /// Nearest codeword of every block of `blocks` (`k` values each) into `out`, identical to
    /// the exhaustive search; a block outside the covered box (or not finite) gets
    /// [`kernels::OUTSIDE`] and must be searched exhaustively by the caller.
    #[inline]
    pub fn nearest_many(&self, blocks: &[f32], out: &mut [u32]) {
        kernels::nearest_cells(self.isa, self.k, &self.grid(), blocks, out)
    }

    /// Like [`nearest_many`](Self::nearest_many) with an explicit implementation (for tests
    /// comparing them; one the CPU lacks is lowered, see [`Isa`]).
    pub fn nearest_many_with(&self, isa: Isa, blocks: &[f32], out: &mut [u32]) {
        kernels::nearest_cells(isa, self.k, &self.grid(), blocks, out)
    }

    /// Index of the nearest codeword to `x` (length `k`), identical to the exhaustive search;
    /// `None` when `x` is outside the covered box (or not finite).
    pub fn nearest(&self, x: &[f32]) -> Option<u32> {
        let mut out = [0u32];
        self.nearest_many(&x[..self.k], &mut out);
        (out[0] != kernels::OUTSIDE).then_some(out[0])
    }
}

/// The cell boundaries of a grid over the box `[-r, r]^k`, the same on every coordinate.
#[derive(Debug, Clone)]
pub(crate) struct GridAxes {
    /// Cells per coordinate (fewer than asked where the quantiles coincide).
    pub per_dim: usize,
    /// The `per_dim - 1` interior boundaries, ascending, padded with `+inf`.
    pub inner: [f32; MAX_PER_DIM],
    /// Half-width `r` of the box.
    pub radius: f32,
    /// All `per_dim + 1` boundaries in f64, `-r` and `r` included.
    pub edges: Vec<f64>,
    /// Cell-number stride of each coordinate: `per_dim^j`.
    pub strides: Vec<u32>,
}

impl GridAxes {
    /// Boundaries at quantiles of the codewords' coordinates (`n * k` finite values), so that
    /// cells are small where blocks are frequent; `r` is 1.25 times the largest magnitude.
    /// `None` when that magnitude lies outside `[2^-40, 2^40]` (see `MAX_SCALE_LOG2`) or
    /// `per_dim` is 0 or above [`MAX_PER_DIM`].
    pub fn new(codewords: &[f32], k: usize, per_dim: usize) -> Option<GridAxes> {
        if per_dim == 0 || per_dim > MAX_PER_DIM || codewords.is_empty() {
            return None;
        }
        let mut coords: Vec<f32> = codewords.to_vec();
        coords.sort_by(f32::total_cmp);
        let max_abs = coords[0].abs().max(coords[coords.len() - 1].abs());
        let scale = 2f32.powi(MAX_SCALE_LOG2);
        if !(max_abs >= 1.0 / scale && max_abs <= scale) {
            return None;
        }
        // Blocks beyond the outermost codeword coordinates are rare; 1.25x covers all but a tiny
        // tail, which falls back to exhaustive search.
        let radius = (1.25 * max_abs).max(f32::MIN_POSITIVE);
        let mut inner: Vec<f32> = (1..per_dim)
            .map(|i| coords[i * coords.len() / per_dim])
            .collect();
        inner.dedup();
        inner.retain(|&b| b > -radius && b < radius);
        // Fewer distinct quantiles than asked (tiny codebooks): fewer cells.
        let per_dim = inner.len() + 1;
        let mut edges = Vec::with_capacity(per_dim + 1);
        edges.push(-(radius as f64));
        edges.extend(inner.iter().map(|&b| b as f64));
        edges.push(radius as f64);
        let mut padded = [f32::INFINITY; MAX_PER_DIM];
        padded[..inner.len()].copy_from_slice(&inner);
        Some(GridAxes {
            per_dim,
            inner: padded,
            radius,
            edges,
            strides: (0..k).map(|j| per_dim.pow(j as u32) as u32).collect(),
        })
    }
}

/// Twice the sum of the rounding bounds of two computed scores `||c||^2 - 2 <x, c>` for
/// `|x_j| <= radius`: a computed score is within `margin / 4` of its real value.
///
/// The k-term dot product is within gamma_k sum |x_j c_j| (gamma_k ~ k u), the doubling is exact
/// and the subtraction adds u |result|, so each score is within (2k + 4) u W of its real value,
/// W = max over codewords of ||c||^2 + 2 r |c|_1 (u = 2^-24 for f32). Underflow adds at most
/// 2^-150 of absolute error per rounding (2k + 2 of them per score), covered by an absolute term
/// (negligible at the allowed scales).
pub(crate) fn score_margin(codewords: &[f32], norms_sq: &[f32], k: usize, radius: f32) -> f64 {
    let unit = 2f64.powi(-24);
    let worst = codewords
        .chunks_exact(k)
        .zip(norms_sq)
        .map(|(c, &nsq)| {
            let l1: f64 = c.iter().map(|&v| (v as f64).abs()).sum();
            nsq as f64 + 2.0 * radius as f64 * l1
        })
        .fold(0.0, f64::max);
    2.0 * 2.0 * (2 * k + 4) as f64 * unit * worst + 2.0 * (2 * k + 2) as f64 * 2f64.powi(-150)
}

/// Real offsets of the stored squared norms: `norms_sq[i]` minus the exact squared norm of
/// codeword `i`, so that a real score plus `||x||^2` is `||x - c||^2` plus the offset.
pub(crate) fn norm_offsets(codewords: &[f32], norms_sq: &[f32], k: usize) -> Vec<f64> {
    codewords
        .chunks_exact(k)
        .zip(norms_sq)
        .map(|(c, &s)| s as f64 - c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::exhaustive::SearchIndex;
    use crate::search::plan::grid_cells_per_dim as cells_per_dim;
    use crate::util::rng::Xoshiro256;
    use crate::test_support::{norms_of, source_blocks};

    /// Points of the box that stress the cell boundaries and ties: uniform points, points whose
    /// coordinates sit exactly on boundaries or the box edge, the codewords themselves and
    /// midpoints of codeword pairs (equidistant from both).
    fn hard_blocks(grid: &CellIndex, codewords: &[f32], k: usize, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256::new(seed);
        let r = grid.radius();
        let mut edges: Vec<f32> = grid.inner[..grid.per_dim() - 1].to_vec();
        edges.extend([-r, r, 0.0]);
        let n = codewords.len() / k;
        let mut out = Vec::new();
        for _ in 0..5000 {
            out.extend((0..k).map(|_| ((rng.next_open01() * 2.0 - 1.0) * r as f64) as f32));
        }
        for _ in 0..5000 {
            out.extend((0..k).map(|_| {
                if rng.next_open01() < 0.6 {
                    edges[(rng.next_open01() * edges.len() as f64) as usize % edges.len()]
                } else {
                    ((rng.next_open01() * 2.0 - 1.0) * r as f64) as f32
                }
            }));
        }
        out.extend_from_slice(codewords);
        for _ in 0..5000 {
            let a = (rng.next_open01() * n as f64) as usize % n;
            let b = (rng.next_open01() * n as f64) as usize % n;
            out.extend((0..k).map(|j| 0.5 * (codewords[a * k + j] + codewords[b * k + j])));
        }
        out
    }

    /// Every implementation answers every block inside the box, with the exhaustive answer.
    fn check_exact(codewords: &[f32], k: usize, per_dim: usize, blocks: &[f32], what: &str) {
        let index = SearchIndex::new(codewords, k);
        let norms = norms_of(codewords, k);
        let grid = CellIndex::new(codewords, &norms, k, per_dim).expect("grid");
        let expected: Vec<u32> = blocks.chunks_exact(k).map(|x| index.nearest(x).0).collect();
        for isa in kernels::supported() {
            let mut got = vec![0u32; expected.len()];
            grid.nearest_many_with(isa, blocks, &mut got);
            for (b, (x, (&g, &e))) in blocks
                .chunks_exact(k)
                .zip(got.iter().zip(&expected))
                .enumerate()
            {
                let inside = x.iter().all(|v| v.abs() <= grid.radius());
                if inside {
                    assert_eq!(g, e, "{what}, {isa:?}, g={per_dim}, block {b} = {x:?}");
                } else {
                    assert_eq!(g, kernels::OUTSIDE, "{what}, {isa:?}: {x:?} is outside");
                }
            }
        }
    }

    #[test]
    fn grid_search_is_the_exhaustive_search_on_registry_codebooks() {
        for (d, k, n) in [
            (64, 2, 256),
            (128, 2, 64),
            (128, 2, 16),
            (96, 3, 256),
            (96, 3, 4096),
            (128, 4, 256),
            (64, 4, 1024),
            (128, 4, 16),
            (64, 8, 16),
        ] {
            let cb = crate::registry::codebook(d, k, n).unwrap();
            let default = cells_per_dim(k, n);
            let sizes: Vec<usize> = default
                .into_iter()
                .chain([2, 5])
                .filter(|g| g.pow(k as u32) <= MAX_CELLS)
                .collect();
            for per_dim in sizes {
                let what = format!("d={d} k={k} N={n}");
                let source = source_blocks(d, k, 20_000, d as u64 * 31 + n as u64);
                check_exact(cb.codewords(), k, per_dim, &source, &what);
                let grid = CellIndex::new(cb.codewords(), cb.norms_sq(), k, per_dim).unwrap();
                let hard = hard_blocks(&grid, cb.codewords(), k, n as u64);
                check_exact(cb.codewords(), k, per_dim, &hard, &what);
            }
        }
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        // A 5 x 5 lattice of exactly representable points, stored twice: every query has an exact
        // tie between the two copies (the first must win), and lattice midpoints tie between
        // neighbours.
        let levels = [-0.5f32, -0.25, 0.0, 0.25, 0.5];
        let mut codewords = Vec::new();
        for &a in &levels {
            for &b in &levels {
                codewords.extend([a, b]);
            }
        }
        let once = codewords.clone();
        codewords.extend_from_slice(&once);
        let mut blocks = Vec::new();
        let steps: Vec<f32> = (-8..=8).map(|i| i as f32 * 0.0625).collect();
        for &a in &steps {
            for &b in &steps {
                blocks.extend([a, b]);
            }
        }
        for per_dim in [1, 2, 3, 4, 7, 16] {
            check_exact(&codewords, 2, per_dim, &blocks, "duplicated lattice");
        }
        let index = SearchIndex::new(&codewords, 2);
        for x in blocks.chunks_exact(2) {
            assert!(index.nearest(x).0 < 25, "the first copy wins a tie");
        }
    }

    #[test]
    fn blocks_outside_the_box_or_not_finite_are_left_to_the_caller() {
        let cb = crate::registry::codebook(128, 4, 256).unwrap();
        let grid = cb.cells().expect("k = 4, N = 256 has a grid");
        let r = grid.radius();
        for x in [
            [2.0 * r, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, -2.0 * r],
            [f32::NAN, 0.0, 0.0, 0.0],
            [0.0, f32::INFINITY, 0.0, 0.0],
        ] {
            for isa in kernels::supported() {
                let mut out = [0u32];
                grid.nearest_many_with(isa, &x, &mut out);
                assert_eq!(out[0], kernels::OUTSIDE, "{x:?}");
            }
            assert_eq!(grid.nearest(&x), None);
        }
        // The codebook answers them exhaustively.
        let x = [2.0 * r, 0.1, -0.1, 0.0, 0.01, 0.02, 0.03, 0.04];
        let mut out = [0u32; 2];
        cb.nearest_many(&x, &mut out);
        assert_eq!(out[0], cb.nearest_exhaustive(&x[..4]));
        assert_eq!(out[1], cb.nearest_exhaustive(&x[4..]));
    }

    #[test]
    fn grids_are_refused_where_the_kernel_has_no_specialization() {
        let cw = vec![0.0f32; 5 * 16];
        let norms = vec![0.0f32; 16];
        assert!(CellIndex::new(&cw, &norms, 5, 4).is_none());
        let cw = vec![0.0f32; 2 * 16];
        assert!(CellIndex::new(&cw, &norms, 2, 0).is_none());
        assert!(CellIndex::new(&cw, &norms, 2, MAX_PER_DIM + 1).is_none());
        assert!(CellIndex::new(&cw[..30], &norms, 2, 4).is_none());
    }

    /// Where a grid would not be exact or would not pay, there is none (and the codebook searches
    /// exhaustively): codewords so small that scores underflow, so large that they overflow, and
    /// a codebook of one repeated codeword (every cell would keep all of it).
    #[test]
    fn grids_are_refused_at_extreme_scales_and_for_degenerate_codebooks() {
        let circle: Vec<f32> = (0..16)
            .flat_map(|i| {
                let t = i as f32 * std::f32::consts::TAU / 16.0;
                [t.cos(), t.sin()]
            })
            .collect();
        let norms = |cw: &[f32]| -> Vec<f32> {
            cw.chunks_exact(2)
                .map(|c| c[0] * c[0] + c[1] * c[1])
                .collect()
        };
        assert!(CellIndex::new(&circle, &norms(&circle), 2, 4).is_some());
        for scale in [1e-23f32, 3e38] {
            let cw: Vec<f32> = circle.iter().map(|&v| v * scale).collect();
            assert!(
                CellIndex::new(&cw, &norms(&cw), 2, 4).is_none(),
                "scale {scale}"
            );
            if scale > 1e19 {
                // Squares beyond f32: the codebook itself is refused (every score would be
                // infinite).
                assert!(crate::Codebook::new(2, 2, 16, cw.clone()).is_err());
                continue;
            }
            let cb = crate::Codebook::new(2, 2, 16, cw.clone()).unwrap();
            assert!(cb.cells().is_none());
            let x = [0.0, 1.2 * scale];
            let mut out = [0u32];
            cb.nearest_many(&x, &mut out);
            assert_eq!(out[0], cb.nearest_exhaustive(&x), "scale {scale}");
        }
        // One repeated codeword: every cell keeps all copies; the codebook declines such a grid.
        let same: Vec<f32> = [0.3f32, -0.2].repeat(64);
        let grid = CellIndex::new(&same, &norms(&same), 2, 4).unwrap();
        assert_eq!(grid.stored(), grid.per_dim().pow(2) * 64);
        let cb = crate::Codebook::new(2, 2, 64, same).unwrap();
        assert!(cb.cells().is_none());
        let mut out = [u32::MAX];
        cb.nearest_many(&[0.1, 0.1], &mut out);
        assert_eq!(out[0], 0);
    }
}
