//! The one place that decides how a codebook is searched: [`SearchPlan::choose`] names the
//! searches for a `(k, N)` and what its codewords are, once, when the codebook is built, and
//! every tuning constant of that choice is here. The measurements behind the constants, and the
//! commands that redo them, are in `docs/tuning.md`.
//!
//! | codebook | plan |
//! |---|---|
//! | `k = 1`, ascending levels | [`SearchPlan::Thresholds`] (exact) |
//! | whole signed-permutation orbits (the E8 codes) | [`SearchPlan::Orbits`] (exact) |
//! | `k` = 2 to 4 up to the sizes of [`grid_cells_per_dim`] | the exact grid, else the ball index |
//! | `k = 4`, 1025 to 65536 codewords | certified shortlists ([`shortlist_shape`]), then the ball index, or from [`IVF_THRESHOLD`] codewords the inverted file |
//! | other codebooks from [`IVF_THRESHOLD`] codewords | the inverted file (approximate) |
//! | everything else | the ball index where it can be built (`k <= 4`), else exhaustive |

/// How a codebook answers nearest-codeword queries, chosen by [`SearchPlan::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPlan {
    /// `k = 1` with ascending levels: the nearest level is the number of midpoints below the
    /// value (exact).
    Thresholds,
    /// The codewords are whole signed-permutation orbits in index order: the orbit search
    /// (`search/orbits.rs`, exact) answers every query.
    Orbits,
    /// Layers tried in order, each answering the blocks the ones before it leave open.
    Layered(Layers),
}

/// The layers of a [`SearchPlan::Layered`] search, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// First, the certified shortlists (`search/shortlist.rs`, exact where they answer)
    /// of this shape, built on first use.
    pub shortlist: Option<ShortlistShape>,
    /// Then the inverted file (`search/ivf.rs`, approximate) of this shape, built with
    /// the codebook; it answers every block the shortlists leave open.
    pub ivf: Option<IvfShape>,
    /// Without an inverted file: the exact grid (`search/cells.rs`) of this many cells per
    /// coordinate, built on first use, kept where [`grid_pays`].
    pub grid: Option<usize>,
    /// Without an inverted file or a kept grid: the exact ball index
    /// (`search/balls.rs`), built on first use where it can be; exhaustive search
    /// (`search/exhaustive.rs`) otherwise.
    pub balls: bool,
}

/// Shape of the certified shortlists: cells per coordinate, candidates per tier, tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortlistShape {
    /// Cells per coordinate of the shortlist grid.
    pub per_dim: usize,
    /// Candidates per tier.
    pub slots: usize,
    /// Tiers.
    pub tiers: usize,
}

/// Shape of an inverted file: cells, and cells probed per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfShape {
    /// Cells (k-means clusters of the codewords).
    pub cells: usize,
    /// Cells searched per query.
    pub probes: usize,
}

impl SearchPlan {
    /// The plan for `n` codewords of `k` values: `ascending_scalar` when `k = 1` and the levels
    /// ascend strictly, `orbits` when the codewords are whole orbits in the orbit search's order.
    pub fn choose(k: usize, n: usize, ascending_scalar: bool, orbits: bool) -> SearchPlan {
        if ascending_scalar {
            return SearchPlan::Thresholds;
        }
        if orbits {
            return SearchPlan::Orbits;
        }
        SearchPlan::Layered(Layers::with_ivf(k, n, (n >= IVF_THRESHOLD).then(|| encoder_probes(k))))
    }

    /// This plan with an inverted file probing `probes` cells per query, or without one (`None`:
    /// exact search). Thresholds and orbits search exactly whatever this says. For measuring
    /// what the inverted file costs; the encoder's choice is [`SearchPlan::choose`]'s.
    pub fn with_ivf_probes(self, k: usize, n: usize, probes: Option<usize>) -> SearchPlan {
        match self {
            SearchPlan::Layered(_) => SearchPlan::Layered(Layers::with_ivf(k, n, probes)),
            other => other,
        }
    }

    /// The inverted file this plan builds with the codebook, if any.
    pub fn ivf(&self) -> Option<IvfShape> {
        match self {
            SearchPlan::Layered(layers) => layers.ivf,
            _ => None,
        }
    }

    /// The layers, for a layered plan.
    pub fn layers(&self) -> Option<&Layers> {
        match self {
            SearchPlan::Layered(layers) => Some(layers),
            _ => None,
        }
    }
}

impl Layers {
    fn with_ivf(k: usize, n: usize, probes: Option<usize>) -> Layers {
        let ivf = probes.map(|probes| IvfShape {
            cells: ivf_cells(n),
            probes,
        });
        Layers {
            shortlist: shortlist_shape(k, n),
            ivf,
            grid: ivf.is_none().then(|| grid_cells_per_dim(k, n)).flatten(),
            balls: ivf.is_none(),
        }
    }
}

/// Codebooks with at least this many codewords (and no exact search of their own: thresholds,
/// orbits) encode the blocks the certified shortlists leave open through an inverted file,
/// an approximate search. Smaller ones search exactly. Not lower: at `N = 4096` the inverted
/// file's small loss on source samples showed up in a real model's perplexity.
pub const IVF_THRESHOLD: usize = 16384;

/// Cells of the inverted file of `n` codewords: about `sqrt(n)`, a power of two, at most 1024.
/// Also the generator's Lloyd iterations' inverted file (part of the construction of large
/// codebooks: changing it changes their bytes).
pub fn ivf_cells(n: usize) -> usize {
    ((n as f64).sqrt() as usize).next_power_of_two().min(1024)
}

/// Probed cells of the encoder's inverted file for block size `k`: as few as keep the loss
/// against exhaustive search negligible (`k = 8` needs more than `k = 4`).
pub fn encoder_probes(k: usize) -> usize {
    if k <= 4 {
        4
    } else {
        8
    }
}

/// Codebooks with at least this many codewords use an inverted file in the generator's Lloyd
/// assignment step (part of the construction of large codebooks: changing it changes their
/// bytes; equal to [`IVF_THRESHOLD`] today, but not tied to it).
pub const TRAINING_IVF_THRESHOLD: usize = 16384;

/// Probed cells of the inverted file of the generator's Lloyd assignment (part of the
/// construction of large codebooks: changing it changes their bytes).
pub const TRAINING_PROBES: usize = 8;

/// Cells per coordinate of the exact grid search for `k` and `n`, or `None` where no grid is
/// used: the sizes where a grid measured faster than the other exact searches at a memory cost
/// of at most a few MiB. Larger `k = 4` codebooks would need grids of tens of MiB, and at
/// `k = 8` a grid's cells search as many codewords as the whole codebook.
pub fn grid_cells_per_dim(k: usize, n: usize) -> Option<usize> {
    match (k, n) {
        (_, 0..=15) => None,
        (2, ..=4096) => Some(16),
        (3, ..=4096) => Some(12),
        (4, ..=256) => Some(6),
        (4, ..=1024) => Some(8),
        _ => None,
    }
}

/// Whether a built grid of `cells` cells storing `stored` candidates in all for `n` codewords
/// is kept: not when its cells hold on average more than half the codebook (duplicate or
/// clustered codewords, which a custom codebook may have), where it would search more than the
/// ball index.
pub fn grid_pays(stored: usize, cells: usize, n: usize) -> bool {
    2 * stored <= cells * n
}

/// Shape of the certified shortlists tried first for `k` and `n`, or `None` where they are not
/// used (codebooks with a grid, `k` other than 4): the fewest tiers that certify almost every
/// source block, since each block left open costs an inverted-file or ball search.
pub fn shortlist_shape(k: usize, n: usize) -> Option<ShortlistShape> {
    if grid_cells_per_dim(k, n).is_some() {
        return None;
    }
    let (per_dim, slots, tiers) = match (k, n) {
        (4, 1025..=8192) => (12, 16, 2),
        (4, 8193..=65536) => (16, 16, 4),
        _ => return None,
    };
    Some(ShortlistShape {
        per_dim,
        slots,
        tiers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_codes_get_the_plans_of_the_table() {
        assert_eq!(SearchPlan::choose(1, 16, true, false), SearchPlan::Thresholds);
        assert_eq!(SearchPlan::choose(8, 64497, false, true), SearchPlan::Orbits);
        let layers = |k, n| *SearchPlan::choose(k, n, false, false).layers().unwrap();
        let grid = layers(2, 256);
        assert_eq!((grid.grid, grid.shortlist, grid.ivf, grid.balls), (Some(16), None, None, true));
        let mid = layers(4, 4096);
        assert_eq!(mid.shortlist.map(|s| s.tiers), Some(2));
        assert_eq!((mid.grid, mid.ivf, mid.balls), (None, None, true));
        let big = layers(4, 65536);
        assert_eq!(big.shortlist.map(|s| s.tiers), Some(4));
        assert_eq!(big.ivf, Some(IvfShape { cells: 256, probes: 4 }));
        assert_eq!((big.grid, big.balls), (None, false));
        let exact = SearchPlan::choose(4, 65536, false, false).with_ivf_probes(4, 65536, None);
        assert_eq!(exact.ivf(), None);
        assert!(exact.layers().unwrap().balls);
        // A scalar code that is not sorted is searched like any other small codebook.
        assert!(layers(1, 3).balls);
    }
}
