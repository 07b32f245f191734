//! Fast approximate nearest-codeword search for large codebooks (an inverted-file index).
//!
//! The `N` codewords are clustered (k-means, deterministic) into `C ~ sqrt(N)` cells; a query first
//! ranks the cell centroids, then searches exhaustively only the codewords of the `probes` nearest
//! cells. Cost: `C + probes * N / C` distance evaluations instead of `N` (for `N = 65536`,
//! `C = 256`, 8 probes: 2304 instead of 65536). The answer is exact whenever the true nearest
//! codeword lies in a probed cell; `fibquant-gen bench` reports the MSE lost against exhaustive
//! search on the same vectors.

use crate::search::exhaustive::{SearchIndex, LANES};
use crate::kernels::{self, Isa};

/// An inverted-file index over a codebook.
#[derive(Debug, Clone, PartialEq)]
pub struct IvfIndex {
    k: usize,
    probes: usize,
    centroids: SearchIndex,
    cells: Vec<Cell>,
    isa: Isa,
}

/// The codewords of one cell, in the lane layout of [`SearchIndex`] with their original indices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cell {
    /// Codewords of the cell in lane layout (padding has infinite norm).
    lanes: Vec<f32>,
    norms: Vec<f32>,
    /// Original index of each codeword of the cell (padding: `u32::MAX`).
    ids: Vec<u32>,
}

impl Cell {
    /// The cell of codewords `ids` (ascending) of `codewords` (`k` values each). Squared norms
    /// are computed as [`SearchIndex`] computes them, so scores are the same bit for bit.
    pub(crate) fn new(codewords: &[f32], k: usize, ids: &[u32]) -> Cell {
        let groups = ids.len().div_ceil(LANES).max(1);
        let mut lanes = vec![0f32; groups * k * LANES];
        let mut norms = vec![f32::INFINITY; groups * LANES];
        let mut padded = vec![u32::MAX; groups * LANES];
        for (slot, &id) in ids.iter().enumerate() {
            let (g, l) = (slot / LANES, slot % LANES);
            let cw = &codewords[id as usize * k..(id as usize + 1) * k];
            for (j, &v) in cw.iter().enumerate() {
                lanes[(g * k + j) * LANES + l] = v;
            }
            norms[slot] = cw.iter().map(|v| v * v).sum();
            padded[slot] = id;
        }
        Cell {
            lanes,
            norms,
            ids: padded,
        }
    }

    /// The lane-grouped coordinates, squared norms and indices (padding: `u32::MAX`).
    pub(crate) fn into_parts(self) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        (self.lanes, self.norms, self.ids)
    }

    /// Lowers `best` (a score `||c||^2 - 2 <x, c>` and an index) to the lowest `(score, index)`
    /// pair among `best` and the cell's codewords (NaN scores never win).
    #[inline]
    pub(crate) fn scan(&self, isa: Isa, k: usize, x: &[f32], best: &mut (f32, u32)) {
        let (s, g) = kernels::nearest_lanes(isa, &self.lanes, &self.norms, k, x);
        for l in 0..LANES {
            let id = self.ids[g[l] as usize * LANES + l];
            if id != u32::MAX && (s[l] < best.0 || (s[l] == best.0 && id < best.1)) {
                *best = (s[l], id);
            }
        }
    }
}

/// Largest number of cells.
pub const MAX_CELLS: usize = 1024;

impl IvfIndex {
    /// Builds the index of `codewords` (`n * k` values), with `cells` cells (at most `n`) and
    /// `probes` probed cells per query. Panics if `k` is 0 or there is no codeword.
    pub fn new(codewords: &[f32], k: usize, cells: usize, probes: usize) -> IvfIndex {
        assert!(
            k > 0 && codewords.len() >= k,
            "an inverted file needs codewords of k > 0 values"
        );
        let n = codewords.len() / k;
        let c = cells.clamp(1, n.min(MAX_CELLS));
        let (_, index, assign) = kmeans(codewords, k, c);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); c];
        for (i, &a) in assign.iter().enumerate() {
            members[a as usize].push(i as u32);
        }
        let cells = members
            .into_iter()
            .map(|ids| Cell::new(codewords, k, &ids))
            .collect();
        IvfIndex {
            k,
            probes: probes.clamp(1, c.min(64)),
            centroids: index,
            cells,
            isa: kernels::detect(),
        }
    }

    /// Number of probed cells.
    pub fn probes(&self) -> usize {
        self.probes
    }

    /// The same index probing `probes` cells.
    pub fn with_probes(mut self, probes: usize) -> IvfIndex {
        self.probes = probes.clamp(1, self.cells.len().min(64));
        self
    }

    /// Approximate nearest codeword of `x` and its score `||c||^2 - 2 <x, c>`.
    pub fn nearest(&self, x: &[f32]) -> (u32, f32) {
        // Rank cells by centroid score, keeping the `probes` best (insertion into a small list).
        let mut best: [(f32, u32); 64] = [(f32::INFINITY, 0); 64];
        let p = self.probes.min(64);
        let mut scores = [0f32; MAX_CELLS];
        let scores = &mut scores[..self.cells.len()];
        self.centroids.scores_into(x, scores);
        for (cell, &s) in scores.iter().enumerate() {
            if s < best[p - 1].0 {
                let mut pos = p - 1;
                while pos > 0 && best[pos - 1].0 > s {
                    best[pos] = best[pos - 1];
                    pos -= 1;
                }
                best[pos] = (s, cell as u32);
            }
        }
        let mut found = (f32::INFINITY, u32::MAX);
        for &(_, cell) in &best[..p] {
            self.cells[cell as usize].scan(self.isa, self.k, x, &mut found);
        }
        let (best_s, best_i) = found;
        (if best_i == u32::MAX { 0 } else { best_i }, best_s)
    }
}

/// Deterministic k-means of `codewords` (`k` values each) into `c` clusters: 12 Lloyd
/// iterations from every `(n / c)`-th codeword. Returns the centroids (`c * k` values), their
/// search index, and each codeword's cluster (its nearest centroid, lowest index on ties).
/// Shared by the inverted file and the exact ball index ([`crate::search::balls`]): changing it changes
/// the cells of both (and so the bytes of the generator's `N = 65536` codebooks).
pub(crate) fn kmeans(codewords: &[f32], k: usize, c: usize) -> (Vec<f32>, SearchIndex, Vec<u32>) {
    let n = codewords.len() / k;
    let mut cent: Vec<f32> = (0..c)
        .flat_map(|i| codewords[(i * n / c) * k..(i * n / c + 1) * k].to_vec())
        .collect();
    let mut assign = vec![0u32; n];
    for _ in 0..12 {
        let index = SearchIndex::new(&cent, k);
        let mut sums = vec![0f64; c * k];
        let mut counts = vec![0usize; c];
        for (i, x) in codewords.chunks_exact(k).enumerate() {
            let a = index.nearest(x).0 as usize;
            assign[i] = a as u32;
            counts[a] += 1;
            for (s, v) in sums[a * k..(a + 1) * k].iter_mut().zip(x) {
                *s += *v as f64;
            }
        }
        for j in 0..c {
            if counts[j] > 0 {
                for t in 0..k {
                    cent[j * k + t] = (sums[j * k + t] / counts[j] as f64) as f32;
                }
            }
        }
    }
    let index = SearchIndex::new(&cent, k);
    for (i, x) in codewords.chunks_exact(k).enumerate() {
        assign[i] = index.nearest(x).0;
    }
    (cent, index, assign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Xoshiro256;

    #[test]
    fn all_probes_is_exact_and_few_probes_is_close() {
        let mut rng = Xoshiro256::new(4);
        let (n, k) = (4096, 4);
        let cw: Vec<f32> = (0..n * k).map(|_| rng.next_gaussian() as f32).collect();
        let exact = SearchIndex::new(&cw, k);
        let full = IvfIndex::new(&cw, k, 64, 64);
        let few = full.clone().with_probes(4);
        let (mut d_exact, mut d_few) = (0f64, 0f64);
        for _ in 0..2000 {
            let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
            let e = exact.nearest(&x);
            assert_eq!(full.nearest(&x), e, "probing every cell must be exact");
            let f = few.nearest(&x);
            assert!(f.1 >= e.1);
            let xsq: f32 = x.iter().map(|v| v * v).sum();
            d_exact += (xsq + e.1) as f64;
            d_few += (xsq + f.1) as f64;
        }
        // Four of 64 cells already find nearly every nearest codeword.
        assert!(d_few / d_exact < 1.05, "{}", d_few / d_exact);
    }
}
