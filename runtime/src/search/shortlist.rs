//! Exact nearest-codeword search through certified shortlists.
//!
//! The box `[-r, r]^k` is cut into a grid of cells with the boundaries of the exact grid search
//! ([`crate::search::cells`]: quantiles of the codewords' coordinates). Unlike that grid, which keeps for
//! each cell every codeword that can win somewhere in it (tens of MiB for `k = 4` codebooks of
//! thousands of codewords), each cell here keeps a short list of fixed length `M`: the `M`
//! codewords nearest to the cell (smallest squared distance to the closed box, plus the
//! codeword's norm offset), and one number, the bound `T` = the same distance of the nearest
//! codeword left out (or a lower bound on it). A query finds its cell, scores the `M` candidates
//! with the arithmetic of the exhaustive [`SearchIndex`](crate::search::exhaustive::SearchIndex), and keeps
//! the answer when its score plus `||x||^2` is below `T` minus a rounding margin: then no
//! codeword left out can score as low. Otherwise (and for blocks outside the box) the query
//! returns `None` and the caller searches another way. So the answer, when there is one, is the
//! exhaustive answer bit for bit, ties included (lowest index wins): the candidates are scanned
//! in index order per lane and merged by (score, index).
//!
//! Why it is exact: let `x` lie in cell `C` with bound `T`, `s*` the best computed score in the
//! list, and `e` a codeword left out. Its real score is `||x - e||^2 + delta_e - ||x||^2 >= T -
//! ||x||^2`, and its computed score is within `margin / 4` of that
//! ([`score_margin`](crate::search::cells)), so it exceeds `s*` whenever `s* + ||x||^2 < T - margin`
//! (the test, in f64, with `T - margin` rounded down to f32; the f64 rounding of `||x||^2` and of
//! the sum is far below `margin / 4` inside the box). So every codeword scoring `s*` or less is in
//! the list, and the list's lowest `(score, index)` pair is the exhaustive scan's.
//!
//! Building: codewords are bucketed by cell. For each cell, rings of cells around it (in cell
//! numbers) grow until they hold more than `M` codewords, which bounds the `(M + 1)`-th
//! distance by the one found there, `D`; then every cell whose box lies within `D` of the cell's
//! box is scanned, so the `M + 1` nearest codewords are found exactly (the ones not scanned are
//! farther than `D`). A second or two for 65536 cells and codewords (`--example
//! shortlist_stats` prints it).

use crate::search::cells::{norm_offsets, score_margin, GridAxes, MAX_CELLS};
use crate::kernels::LANES;
use crate::kernels::{self, Isa, ShortlistGrid};

/// Most codewords a codebook may have (indices are stored in 16 bits).
pub const MAX_CODEWORDS: usize = 1 << 16;

/// Rings of cells searched around a cell for its first `M + 1` codewords; a cell that holds
/// fewer within them gets no list (every query there is left to the caller).
pub const FIRST_RINGS: usize = 3;

/// Most candidates per cell.
pub const MAX_SLOTS: usize = 256;

/// A grid of certified shortlists for exact nearest-codeword search (see the module docs).
#[derive(Debug, Clone)]
pub struct ShortlistIndex {
    k: usize,
    per_dim: usize,
    inner: [f32; 16],
    radius: f32,
    strides: Vec<u32>,
    slots: usize,
    tiers: usize,
    ids: Vec<u16>,
    bounds: Vec<f32>,
    codewords: Vec<f32>,
    norms: Vec<f32>,
    isa: Isa,
}

impl ShortlistIndex {
    /// Builds the shortlists for `codewords` (`n * k` finite values, `n <= 65536`) with squared
    /// norms `norms_sq` (which must be `sum of c_j * c_j` in f32, in order, as the codebook
    /// computes them), `per_dim` cells per coordinate, and per cell `tiers` tiers of
    /// `slots` candidates each (`slots` a multiple of 8; at most [`MAX_SLOTS`] in all). Returns `None` unless `k` is 2, 3 or 4,
    /// `per_dim^k <= 65536` and the inputs are as described; also where the largest coordinate's
    /// magnitude lies outside `[2^-40, 2^40]` (the error bounds need it).
    pub fn new(
        codewords: &[f32],
        norms_sq: &[f32],
        k: usize,
        per_dim: usize,
        slots: usize,
        tiers: usize,
    ) -> Option<ShortlistIndex> {
        let n = norms_sq.len();
        if !(2..=4).contains(&k)
            || n == 0
            || n > MAX_CODEWORDS
            || codewords.len() != n * k
            || slots == 0
            || !slots.is_multiple_of(LANES)
            || tiers == 0
            || slots.checked_mul(tiers).is_none_or(|t| t > MAX_SLOTS)
            || codewords.iter().any(|c| !c.is_finite())
        {
            return None;
        }
        // The AVX2 kernel recomputes the norms; they must be the codebook's, bit for bit.
        let recomputed = codewords
            .chunks_exact(k)
            .map(|c| c.iter().map(|v| v * v).sum::<f32>());
        if !recomputed
            .zip(norms_sq)
            .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            return None;
        }
        per_dim.checked_pow(k as u32).filter(|&c| c <= MAX_CELLS)?;
        let axes = GridAxes::new(codewords, k, per_dim)?;
        let per_dim = axes.per_dim;
        let cells = per_dim.pow(k as u32);
        let margin = score_margin(codewords, norms_sq, k, axes.radius);
        let delta = norm_offsets(codewords, norms_sq, k);
        let low_delta = delta.iter().copied().fold(0.0, f64::min);
        let edges = &axes.edges;

        // Codewords bucketed by cell (every codeword lies inside the box).
        let axis_cell = |v: f32| axes.inner.iter().filter(|&&b| b <= v).count();
        let home: Vec<usize> = codewords
            .chunks_exact(k)
            .map(|c| {
                c.iter()
                    .zip(&axes.strides)
                    .map(|(&v, &s)| axis_cell(v) * s as usize)
                    .sum()
            })
            .collect();
        let mut bucket_start = vec![0u32; cells + 1];
        for &h in &home {
            bucket_start[h + 1] += 1;
        }
        for c in 0..cells {
            bucket_start[c + 1] += bucket_start[c];
        }
        // The codewords in bucket order, widened to f64 and padded to 4 coordinates (zeros
        // on both sides of a comparison add nothing), with their indices and offsets.
        let mut fill = bucket_start.clone();
        let mut sorted = vec![([0f64; 4], 0u32, 0f64); n];
        for (i, &h) in home.iter().enumerate() {
            let mut c = [0f64; 4];
            for j in 0..k {
                c[j] = codewords[i * k + j] as f64;
            }
            sorted[fill[h] as usize] = (c, i as u32, delta[i]);
            fill[h] += 1;
        }
        // Squared gap between the intervals of cell numbers a and b on one axis.
        let gap_sq = |a: usize, b: usize| -> f64 {
            let g = if b > a {
                edges[b] - edges[a + 1]
            } else if a > b {
                edges[a] - edges[b + 1]
            } else {
                0.0
            };
            let g = g.max(0.0);
            g * g
        };
        let gaps: Vec<f64> = (0..per_dim * per_dim)
            .map(|ab| gap_sq(ab / per_dim, ab % per_dim))
            .collect();

        let total = slots * tiers;
        let mut ids = Vec::with_capacity(cells * total);
        let mut bounds = Vec::with_capacity(cells * tiers);
        // Per coordinate (padded to 4 with a single cell of stride 0 and gap 0): this cell's
        // number, its interval, and the range of cell numbers scanned.
        let mut at = [0usize; 4];
        let mut lo = [0f64; 4];
        let mut hi = [0f64; 4];
        let mut from = [0usize; 4];
        let mut to = [0usize; 4];
        let mut strides = [0usize; 4];
        for (s, &t) in strides.iter_mut().zip(&axes.strides) {
            *s = t as usize;
        }
        let zero_gap = [0f64];
        let mut found: Vec<(f64, u32)> = Vec::new();
        for cell in 0..cells {
            let mut rest = cell;
            for j in 0..k {
                at[j] = rest % per_dim;
                rest /= per_dim;
                lo[j] = edges[at[j]];
                hi[j] = edges[at[j] + 1];
            }
            // This cell's row of the gap table, per coordinate.
            let row = |j: usize| -> &[f64] {
                if j < k {
                    &gaps[at[j] * per_dim..(at[j] + 1) * per_dim]
                } else {
                    &zero_gap
                }
            };
            let rows = [row(0), row(1), row(2), row(3)];
            // Every codeword of the cells from `from` to `to` (per coordinate) whose box is
            // within `limit` of this cell's box, with its distance to this cell.
            let scan =
                |from: &[usize; 4], to: &[usize; 4], limit: f64, found: &mut Vec<(f64, u32)>| {
                    found.clear();
                    for b3 in from[3]..=to[3] {
                        let g3 = low_delta + rows[3][b3];
                        if g3 > limit {
                            continue;
                        }
                        for b2 in from[2]..=to[2] {
                            let g2 = g3 + rows[2][b2];
                            if g2 > limit {
                                continue;
                            }
                            for b1 in from[1]..=to[1] {
                                let g1 = g2 + rows[1][b1];
                                if g1 > limit {
                                    continue;
                                }
                                let base = b3 * strides[3] + b2 * strides[2] + b1 * strides[1];
                                let row0 = &rows[0][from[0]..=to[0]];
                                for (b0, &g0) in (from[0]..).zip(row0) {
                                    if g1 + g0 > limit {
                                        continue;
                                    }
                                    let other = base + b0 * strides[0];
                                    let range = bucket_start[other] as usize
                                        ..bucket_start[other + 1] as usize;
                                    for (c, i, offset) in &sorted[range] {
                                        // The filter's order (offset, then coordinates 3 down
                                        // to 0): each term is at least the filter's, so with
                                        // monotone rounding the sum is too, and no codeword
                                        // within `limit` sits in a cell the filter skipped.
                                        let mut distance = *offset;
                                        for j in (0..4).rev() {
                                            let gap = (lo[j] - c[j]).max(c[j] - hi[j]).max(0.0);
                                            distance += gap * gap;
                                        }
                                        found.push((distance, *i));
                                    }
                                }
                            }
                        }
                    }
                };
            // A first bound: the (total + 1)-th distance among the codewords of the cells
            // around this one, in rings growing until they hold that many.
            let mut ring = 1;
            let first = loop {
                for j in 0..k {
                    from[j] = at[j].saturating_sub(ring);
                    to[j] = (at[j] + ring).min(per_dim - 1);
                }
                scan(&from, &to, f64::INFINITY, &mut found);
                if found.len() > total {
                    found.select_nth_unstable_by(total, by_distance);
                    break found[total].0;
                }
                if (0..k).all(|j| from[j] == 0 && to[j] == per_dim - 1) {
                    // The whole codebook, and no more than `total` codewords.
                    break f64::INFINITY;
                }
                if ring == FIRST_RINGS {
                    // A cell this far from the codewords (a corner of the box, which source
                    // blocks all but never reach): no list.
                    found.clear();
                    break f64::NAN;
                }
                ring += 1;
            };
            if first < f64::INFINITY {
                // Then every cell whose box lies within that bound: the codewords not scanned
                // are farther than `first`, so the `total + 1` nearest are all found.
                for j in 0..k {
                    let within = |&b: &usize| rows[j][b] + low_delta <= first;
                    from[j] = (0..at[j]).rev().take_while(within).last().unwrap_or(at[j]);
                    to[j] = (at[j] + 1..per_dim)
                        .take_while(within)
                        .last()
                        .unwrap_or(at[j]);
                }
                scan(&from, &to, first, &mut found);
            }
            // The `total + 1` nearest, in order: tier `t` takes ranks `t * slots .. (t + 1) *
            // slots`, and its bound is the next rank's distance; with the whole codebook found
            // and no next rank, there is no bound, and with no list (or, were the argument above
            // wrong, a short one) no certificate.
            let whole = found.len() == n;
            if found.len() > total + 1 {
                found.select_nth_unstable_by(total + 1, by_distance);
                found.truncate(total + 1);
            }
            found.sort_unstable_by(by_distance);
            let mut last = 0u16;
            for t in 0..tiers {
                let start = ids.len();
                let ranks = (t * slots).min(found.len())..((t + 1) * slots).min(found.len());
                ids.extend(found[ranks].iter().map(|&(_, i)| i as u16));
                ids[start..].sort_unstable();
                last = ids[start..].last().copied().unwrap_or(last);
                ids.resize(start + slots, last);
                bounds.push(match found.get((t + 1) * slots) {
                    Some(&(next, _)) => round_down(next - margin),
                    None if whole => f32::INFINITY,
                    None => f32::NEG_INFINITY,
                });
            }
        }
        Some(ShortlistIndex {
            k,
            per_dim,
            inner: axes.inner,
            radius: axes.radius,
            strides: axes.strides,
            slots,
            tiers,
            ids,
            bounds,
            codewords: codewords.to_vec(),
            norms: norms_sq.to_vec(),
            isa: kernels::detect(),
        })
    }

    /// Cells per coordinate.
    pub fn per_dim(&self) -> usize {
        self.per_dim
    }

    /// Candidates per tier.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Tiers per cell: a query scans tiers until the certificate holds.
    pub fn tiers(&self) -> usize {
        self.tiers
    }

    /// Heap memory held by the index (its tables and its copy of the codebook), in bytes.
    pub fn heap_bytes(&self) -> usize {
        2 * self.ids.len()
            + 4 * (self.bounds.len() + self.strides.len() + self.codewords.len() + self.norms.len())
    }

    fn grid(&self) -> ShortlistGrid<'_> {
        ShortlistGrid {
            inner: &self.inner,
            radius: self.radius,
            strides: &self.strides,
            slots: self.slots,
            tiers: self.tiers,
            ids: &self.ids,
            bounds: &self.bounds,
            codewords: &self.codewords,
            norms: &self.norms,
        }
    }

    /// Nearest codeword of every block of `blocks` (`k` values each) into `out` (one per
    /// block), identical to the exhaustive search where the certificate holds; the other blocks
    /// (and those outside the box or not finite) get [`kernels::OUTSIDE`] and must be searched
    /// another way by the caller.
    #[inline]
    pub fn nearest_many(&self, blocks: &[f32], out: &mut [u32]) {
        kernels::nearest_shortlist(self.isa, self.k, &self.grid(), blocks, out)
    }

    /// Like [`nearest_many`](Self::nearest_many) with an explicit implementation (for tests
    /// comparing them; one the CPU lacks is lowered, see [`Isa`]).
    pub fn nearest_many_with(&self, isa: Isa, blocks: &[f32], out: &mut [u32]) {
        kernels::nearest_shortlist(isa, self.k, &self.grid(), blocks, out)
    }

    /// Index of the nearest codeword to `x` (length `k`), identical to the exhaustive search,
    /// or `None` where the certificate fails or `x` is outside the box (or not finite).
    #[inline]
    pub fn nearest(&self, x: &[f32]) -> Option<u32> {
        let mut out = [0u32];
        self.nearest_many(&x[..self.k], &mut out);
        (out[0] != kernels::OUTSIDE).then_some(out[0])
    }
}

/// Orders found codewords by distance to the cell, then index.
fn by_distance(a: &(f64, u32), b: &(f64, u32)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// The largest f32 not above `v` (`-inf` below the f32 range, `+inf` stays).
fn round_down(v: f64) -> f32 {
    let r = v as f32;
    if (r as f64) > v {
        r.next_down()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::cells::{norm_offsets, score_margin, GridAxes};
    use crate::search::exhaustive::SearchIndex;
    use crate::util::rng::Xoshiro256;
    use crate::test_support::{norms_of, source_blocks};

    /// Blocks that stress the certificate: source blocks, points on the cell boundaries and the
    /// box edge, the codewords themselves, midpoints of codeword pairs (equidistant from both),
    /// points just outside the box and non-finite ones.
    fn hard_blocks(index: &ShortlistIndex, codewords: &[f32], d: usize, seed: u64) -> Vec<f32> {
        let k = index.k;
        let mut rng = Xoshiro256::new(seed);
        let r = index.radius;
        let mut edges: Vec<f32> = index.inner[..index.per_dim - 1].to_vec();
        edges.extend([-r, r, 0.0]);
        let n = codewords.len() / k;
        let mut out = source_blocks(d, k, 20000, seed + 1);
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
        for bad in [r.next_up(), -r.next_up(), f32::NAN, f32::INFINITY] {
            let mut x = vec![0.0; k];
            x[k - 1] = bad;
            out.extend(x);
        }
        out
    }

    /// Every implementation gives the same answers, every certified answer is the exhaustive
    /// one, and at least `min_certified` of the source blocks (the first 20000) are certified.
    fn check(
        codewords: &[f32],
        k: usize,
        d: usize,
        shape: (usize, usize, usize),
        min_certified: f64,
    ) {
        let (per_dim, slots, tiers) = shape;
        let norms = norms_of(codewords, k);
        let index =
            ShortlistIndex::new(codewords, &norms, k, per_dim, slots, tiers).expect("shortlists");
        let exhaustive = SearchIndex::new(codewords, k);
        let blocks = hard_blocks(&index, codewords, d, 11);
        let count = blocks.len() / k;
        let mut reference = vec![0u32; count];
        index.nearest_many_with(Isa::Portable, &blocks, &mut reference);
        for (b, (x, &got)) in blocks.chunks_exact(k).zip(&reference).enumerate() {
            if got != kernels::OUTSIDE {
                assert_eq!(
                    got,
                    exhaustive.nearest(x).0,
                    "k={k} shape={shape:?} block {b} {x:?}"
                );
            }
        }
        for &bad in &reference[count - 4..] {
            assert_eq!(bad, kernels::OUTSIDE, "outside the box or not finite");
        }
        for isa in kernels::supported() {
            let mut got = vec![0u32; count];
            index.nearest_many_with(isa, &blocks, &mut got);
            assert!(
                got == reference,
                "{isa:?} differs from portable, k={k} shape={shape:?}"
            );
        }
        let certified = reference[..20000]
            .iter()
            .filter(|&&o| o != kernels::OUTSIDE)
            .count() as f64
            / 20000.0;
        assert!(
            certified >= min_certified,
            "k={k} shape={shape:?}: {certified} of source blocks certified"
        );
    }

    /// A codebook of `n` points spread like the source blocks (random source blocks), so that
    /// the index is exercised at realistic densities.
    fn spread_codebook(d: usize, k: usize, n: usize, seed: u64) -> Vec<f32> {
        source_blocks(d, k, n, seed)
    }

    #[test]
    fn certified_answers_are_the_exhaustive_ones_for_k_2_3_4() {
        for (k, n, shape) in [
            (2, 300, (16, 8, 2)),
            (3, 1000, (12, 16, 2)),
            (4, 4096, (12, 16, 2)),
            (4, 2000, (8, 8, 3)),
            (4, 9000, (16, 16, 3)),
        ] {
            let codewords = spread_codebook(32, k, n, 5 + n as u64);
            // Random codebooks are rougher than Lloyd ones; the floor only guards against a
            // certificate that (almost) never holds.
            check(&codewords, k, 32, shape, 0.5);
        }
    }

    #[test]
    fn registry_codebooks_certify_most_source_blocks() {
        // Measured with `--example shortlist_stats`: 99.4 % (k4N4096, d = 128) and 99.6 %
        // (k4N65536, d = 128) of 20000 x 32 blocks; the floors leave room for other seeds (each
        // fraction is an average over 20000 blocks, binomial sd below 0.1 %).
        for (d, n, floor) in [(128, 4096, 0.98), (64, 2048, 0.98), (128, 65536, 0.97)] {
            let cb = crate::registry::codebook(d, 4, n).expect("registry codebook");
            let shape = crate::search::plan::shortlist_shape(4, n).expect("a shape");
            check(cb.codewords(), 4, d, (shape.per_dim, shape.slots, shape.tiers), floor);
        }
    }

    #[test]
    fn codebook_searches_large_k4_codebooks_through_the_shortlists() {
        // k4N65536: the shortlists first, the inverted file for the blocks they leave open.
        let cb = crate::registry::codebook(64, 4, 65536).expect("registry codebook");
        let shortlist = cb.shortlist().expect("k4N65536 has shortlists");
        let blocks = source_blocks(64, 4, 4000, 21);
        let mut many = vec![0u32; 4000];
        cb.nearest_many(&blocks, &mut many);
        let mut certified = 0;
        for (x, &m) in blocks.chunks_exact(4).zip(&many) {
            let one = cb.nearest(x);
            assert_eq!(one, m, "nearest and nearest_many agree");
            assert_eq!(cb.nearest_with_distance(x).0, one);
            match shortlist.nearest(x) {
                Some(i) => {
                    certified += 1;
                    assert_eq!(i, one);
                    assert_eq!(i, cb.nearest_exhaustive(x), "{x:?}");
                }
                None => assert_eq!(one, cb.ivf().expect("an inverted file").nearest(x).0),
            }
        }
        assert!(certified > 3900, "{certified} of 4000 certified");
        // Without the inverted file every answer is exact.
        let exact = cb.with_ivf_probes(None);
        for x in blocks.chunks_exact(4).take(300) {
            assert_eq!(exact.nearest(x), exact.nearest_exhaustive(x));
        }
        // Codebooks with an exact grid, scalar codes and k = 8 have none.
        for (k, n) in [(4, 256), (2, 256), (1, 16), (8, 65536)] {
            let cb = crate::registry::codebook(64, k, n).expect("registry codebook");
            assert!(cb.shortlist().is_none(), "k={k} N={n}");
        }
    }

    #[test]
    fn ties_resolve_to_the_lowest_index() {
        // Exact duplicates and a codebook symmetric about the origin, queried on the axes and at
        // the duplicates themselves: equal scores everywhere.
        let mut codewords = spread_codebook(16, 4, 600, 3);
        let copy = codewords[..400].to_vec();
        codewords.extend_from_slice(&copy);
        let mirrored: Vec<f32> = codewords[..800].iter().map(|v| -v).collect();
        codewords.extend(mirrored);
        check(&codewords, 4, 16, (12, 16, 2), 0.3);
        let norms = norms_of(&codewords, 4);
        let index = ShortlistIndex::new(&codewords, &norms, 4, 12, 16, 2).unwrap();
        let exhaustive = SearchIndex::new(&codewords, 4);
        for j in 0..4 {
            for v in [0.0f32, 0.05, -0.05, 0.2] {
                let mut x = [0f32; 4];
                x[j] = v;
                if let Some(i) = index.nearest(&x) {
                    assert_eq!(i, exhaustive.nearest(&x).0, "{x:?}");
                }
            }
        }
        // Codeword i < 400 and its copy 600 + i tie exactly at i's own coordinates; the
        // certified answers must be i, and most of them are certified.
        let mut certified = 0;
        for i in 0..400 {
            let x = &codewords[4 * i..4 * i + 4];
            assert_eq!(exhaustive.nearest(x).0, i as u32);
            if let Some(found) = index.nearest(x) {
                assert_eq!(found, i as u32, "tie at codeword {i}");
                certified += 1;
            }
        }
        assert!(certified > 300, "{certified} of 400 ties certified");
    }

    /// Every tier's bound lies below the distance of every codeword left out of that tier and
    /// the ones before it, by half the margin at least (the other half covers the different
    /// summation order of this brute-force check): the builder's claim, checked over every cell
    /// of small grids, including a product codebook whose codewords sit on cell corners and a
    /// codebook with exact duplicates.
    #[test]
    fn bounds_are_below_every_codeword_left_out() {
        let levels = [-0.3f32, -0.1, 0.0, 0.1, 0.25, 0.3];
        let mut product = Vec::new();
        for a in levels {
            for b in levels {
                for c in levels {
                    product.extend([a, b, c]);
                }
            }
        }
        let mut duplicated = spread_codebook(16, 4, 300, 8);
        let copy = duplicated[..400].to_vec();
        duplicated.extend(copy);
        for (codewords, k, (per_dim, slots, tiers)) in [
            (spread_codebook(16, 2, 200, 3), 2, (8, 8, 2)),
            (product, 3, (6, 8, 3)),
            (spread_codebook(16, 4, 700, 4), 4, (5, 8, 2)),
            (duplicated, 4, (4, 16, 2)),
        ] {
            let norms = norms_of(&codewords, k);
            let index = ShortlistIndex::new(&codewords, &norms, k, per_dim, slots, tiers)
                .expect("shortlists");
            let axes = GridAxes::new(&codewords, k, per_dim).expect("axes");
            assert_eq!(axes.per_dim, index.per_dim);
            let margin = score_margin(&codewords, &norms, k, axes.radius);
            let delta = norm_offsets(&codewords, &norms, k);
            let per_cell = slots * tiers;
            let mut certifying = 0;
            for cell in 0..index.per_dim.pow(k as u32) {
                let mut box_ = vec![(0.0, 0.0); k];
                let mut rest = cell;
                for b in box_.iter_mut() {
                    let a = rest % index.per_dim;
                    rest /= index.per_dim;
                    *b = (axes.edges[a], axes.edges[a + 1]);
                }
                let distance: Vec<f64> = codewords
                    .chunks_exact(k)
                    .zip(&delta)
                    .map(|(c, d)| {
                        let near: f64 = c
                            .iter()
                            .zip(&box_)
                            .map(|(&v, &(lo, hi))| {
                                let gap = (lo - v as f64).max(v as f64 - hi).max(0.0);
                                gap * gap
                            })
                            .sum();
                        near + d
                    })
                    .collect();
                let ids = &index.ids[cell * per_cell..(cell + 1) * per_cell];
                for t in 0..tiers {
                    let bound = index.bounds[cell * tiers + t] as f64;
                    if bound > f64::NEG_INFINITY {
                        certifying += 1;
                    }
                    let listed = &ids[..(t + 1) * slots];
                    for (i, &d) in distance.iter().enumerate() {
                        if !listed.contains(&(i as u16)) {
                            assert!(
                                bound + margin / 2.0 <= d,
                                "k={k} cell {cell} tier {t}: bound {bound} against codeword {i} \
                                 at {d} (margin {margin})"
                            );
                        }
                    }
                }
            }
            assert!(certifying > 0, "k={k}: no cell can certify anything");
        }
    }

    #[test]
    fn declines_what_it_cannot_serve() {
        let codewords = spread_codebook(16, 4, 512, 1);
        let norms = norms_of(&codewords, 4);
        let ok = |c: &[f32], n: &[f32], k, p, s, t| ShortlistIndex::new(c, n, k, p, s, t).is_some();
        assert!(ok(&codewords, &norms, 4, 12, 16, 2));
        // Block sizes without a kernel.
        let c8 = spread_codebook(16, 8, 64, 2);
        assert!(!ok(&c8, &norms_of(&c8, 8), 8, 4, 8, 1));
        let c1 = spread_codebook(16, 1, 64, 2);
        assert!(!ok(&c1, &norms_of(&c1, 1), 1, 16, 8, 1));
        // Shapes: partial groups, no tiers, too many slots or cells.
        assert!(!ok(&codewords, &norms, 4, 12, 12, 2));
        assert!(!ok(&codewords, &norms, 4, 12, 16, 0));
        assert!(!ok(&codewords, &norms, 4, 12, 8, 33));
        assert!(!ok(&codewords, &norms, 4, 12, 8, usize::MAX));
        assert!(!ok(&codewords, &norms, 4, 17, 16, 2));
        assert!(!ok(&codewords, &norms, 4, 0, 16, 2));
        // Norms that are not the codebook's own, lengths that disagree, non-finite values.
        let mut off = norms.clone();
        off[7] = f32::from_bits(off[7].to_bits() + 1);
        assert!(!ok(&codewords, &off, 4, 12, 16, 2));
        assert!(!ok(&codewords[..4 * 511], &norms, 4, 12, 16, 2));
        let mut nan = codewords.clone();
        nan[9] = f32::NAN;
        assert!(!ok(&nan, &norms_of(&nan, 4), 4, 12, 16, 2));
        // More codewords than 16-bit indices reach.
        let big = spread_codebook(64, 2, 65537, 4);
        assert!(!ok(&big, &norms_of(&big, 2), 2, 16, 8, 1));
    }

    #[test]
    fn a_grid_whose_tables_do_not_fit_answers_nothing() {
        let codewords = spread_codebook(16, 4, 512, 1);
        let index = ShortlistIndex::new(&codewords, &norms_of(&codewords, 4), 4, 8, 16, 2).unwrap();
        let blocks = source_blocks(16, 4, 200, 2);
        let mut fine = vec![0u32; 200];
        index.nearest_many(&blocks, &mut fine);
        assert!(fine.iter().any(|&o| o != kernels::OUTSIDE));
        let good = index.grid();
        let short_ids = &good.ids[..good.ids.len() - 1];
        let broken = [
            ShortlistGrid { slots: 12, ..good },
            ShortlistGrid { tiers: 0, ..good },
            ShortlistGrid { tiers: 3, ..good },
            ShortlistGrid {
                ids: short_ids,
                ..good
            },
            ShortlistGrid {
                norms: &good.norms[1..],
                ..good
            },
        ];
        for (b, grid) in broken.iter().enumerate() {
            for isa in kernels::supported() {
                let mut out = vec![0u32; 200];
                kernels::nearest_shortlist(isa, 4, grid, &blocks, &mut out);
                assert!(
                    out.iter().all(|&o| o == kernels::OUTSIDE),
                    "grid {b}, {isa:?}"
                );
            }
        }
    }

    #[test]
    fn round_down_never_rounds_up() {
        for v in [0.1f64, -0.1, 1e-30, 3.0, 1e40, -1e40, f64::INFINITY] {
            let r = round_down(v);
            assert!((r as f64) <= v, "{v} -> {r}");
            assert!(
                r == f32::MAX || r.is_infinite() || (r.next_up() as f64) > v,
                "{v} -> {r}"
            );
        }
    }
}
