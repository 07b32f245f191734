//! Dispatchers of the search kernels: lane-grouped scans, id lists, ball marks, grids and
//! shortlists ([`crate::search`] builds the layouts they read).

use super::{portable, usable, Isa};
#[cfg(target_arch = "x86_64")]
use super::x86_64;

/// Nearest codeword in a lane-grouped layout (see [`crate::search::exhaustive::SearchIndex`]): returns, for
/// each of the `LANES` lanes, the best score and the group it came from. The groups are
/// `norms.len() / 8`; panics unless `lanes` holds `k * 8` coordinates for each and `x` at least
/// `k`.
#[inline]
pub fn nearest_lanes(
    isa: Isa,
    lanes: &[f32],
    norms: &[f32],
    k: usize,
    x: &[f32],
) -> ([f32; 8], [u32; 8]) {
    assert!(
        x.len() >= k
            && k.checked_mul(8)
                .and_then(|row| row.checked_mul(norms.len() / 8))
                .is_some_and(|v| lanes.len() >= v),
        "lane layout or query shorter than the block size says"
    );
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            match k {
                1 => x86_64::nearest_lanes_fixed_avx2::<1>(lanes, norms, x),
                2 => x86_64::nearest_lanes_fixed_avx2::<2>(lanes, norms, x),
                3 => x86_64::nearest_lanes_fixed_avx2::<3>(lanes, norms, x),
                4 => x86_64::nearest_lanes_fixed_avx2::<4>(lanes, norms, x),
                8 => x86_64::nearest_lanes_fixed_avx2::<8>(lanes, norms, x),
                _ => x86_64::nearest_lanes_avx2(lanes, norms, k, x),
            }
        },
        _ => portable::nearest_lanes(lanes, norms, k, x),
    }
}

pub use portable::{IdLanes, LaneBest};

/// Updates `best` with the candidates in groups `ranges` of a lane-grouped list with ids (see
/// [`portable::nearest_ids`]): afterwards each lane holds its lowest `(score, id)` pair.
/// `list.lanes.len()` must be `groups * k * LANES`, `list.norms.len()` and `list.ids.len()`
/// `groups * LANES`; a range past `groups` panics.
#[inline]
pub fn nearest_ids(
    isa: Isa,
    list: IdLanes<'_>,
    k: usize,
    x: &[f32],
    ranges: &[(u32, u32)],
    best: &mut LaneBest,
) {
    let isa = usable(isa);
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        macro_rules! fixed {
            ($k:literal) => {
                // SAFETY: the caller's `isa` went through `usable`, so AVX2 was detected.
                unsafe { x86_64::nearest_ids_fixed_avx2::<$k>(list, x, ranges, best) }
            };
        }
        match k {
            2 => return fixed!(2),
            3 => return fixed!(3),
            4 => return fixed!(4),
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    portable::nearest_ids(list, k, x, ranges, best)
}

/// The balls a query may reach (see [`portable::ball_marks`]), as a bit set over at most 256
/// balls.
#[inline]
pub fn ball_marks(
    isa: Isa,
    scores: &[f32],
    radii: &[f64],
    x_sq: f64,
    err: f64,
    t: f64,
    scale: f64,
) -> [u64; 4] {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_64::ball_marks_avx2(scores, radii, x_sq, err, t, scale)
        },
        _ => portable::ball_marks(scores, radii, x_sq, err, t, scale),
    }
}

pub use portable::{CellGrid, ShortlistGrid, OUTSIDE};

/// Nearest codeword of every `k`-coordinate block of `blocks` through certified shortlists (see
/// [`portable::nearest_shortlist`]), into `out`; blocks outside the grid or whose answer the
/// certificate does not confirm get [`OUTSIDE`]. Specialized for `k` = 2, 3 and 4 (AVX2 for
/// `k = 4`); other `k` get [`OUTSIDE`] everywhere.
pub fn nearest_shortlist(
    isa: Isa,
    k: usize,
    grid: &ShortlistGrid,
    blocks: &[f32],
    out: &mut [u32],
) {
    let isa = usable(isa);
    // A grid the kernels could read differently (partial groups, no tiers, tables of the wrong
    // size) answers nothing rather than something ISA-dependent.
    let cells = grid.bounds.len() / grid.tiers.max(1);
    let shaped = grid.slots > 0
        && grid.slots.is_multiple_of(crate::kernels::LANES)
        && grid.tiers > 0
        && grid.bounds.len() == cells * grid.tiers
        && grid.ids.len() == cells * grid.slots * grid.tiers
        && grid.codewords.len() == k * grid.norms.len();
    if !shaped {
        out.fill(OUTSIDE);
        return;
    }
    match (isa, k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // was detected on this CPU.
        (Isa::Avx2 | Isa::Avx512, 4) => unsafe {
            x86_64::nearest_shortlist4_avx2(grid, blocks, out)
        },
        (_, 2) => portable::nearest_shortlist::<2>(grid, blocks, out),
        (_, 3) => portable::nearest_shortlist::<3>(grid, blocks, out),
        (_, 4) => portable::nearest_shortlist::<4>(grid, blocks, out),
        _ => out.fill(OUTSIDE),
    }
}

/// Nearest codeword of every `k`-coordinate block of `blocks` through a grid of candidate lists
/// (see [`portable::nearest_cells`]), into `out`; blocks outside the grid get [`OUTSIDE`].
/// Specialized for `k` = 2, 3, 4 and 8; other `k` get [`OUTSIDE`] everywhere.
pub fn nearest_cells(isa: Isa, k: usize, grid: &CellGrid, blocks: &[f32], out: &mut [u32]) {
    let isa = usable(isa);
    macro_rules! sizes {
        ($($k:literal)*) => {
            match (isa, k) {
                $(
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
                // and F16C were detected on this CPU.
                (Isa::Avx2 | Isa::Avx512, $k) => unsafe {
                    x86_64::nearest_cells_avx2::<$k>(grid, blocks, out)
                },
                (_, $k) => portable::nearest_cells::<$k>(grid, blocks, out),
                )*
                _ => out.fill(OUTSIDE),
            }
        };
    }
    sizes!(2 3 4 8)
}

/// Scores `||c||^2 - 2 <x, c>` of every codeword of a lane-grouped layout into `out`, in index
/// order (see [`portable::lane_scores`]).
#[inline]
pub fn lane_scores(isa: Isa, lanes: &[f32], norms: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    let isa = usable(isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's `isa` went through `usable`, so `Isa::Avx2` and up mean that AVX2
        // and F16C were detected on this CPU.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            match k {
                2 => x86_64::lane_scores_fixed_avx2::<2>(lanes, norms, x, out),
                3 => x86_64::lane_scores_fixed_avx2::<3>(lanes, norms, x, out),
                4 => x86_64::lane_scores_fixed_avx2::<4>(lanes, norms, x, out),
                8 => x86_64::lane_scores_fixed_avx2::<8>(lanes, norms, x, out),
                _ => x86_64::lane_scores_avx2(lanes, norms, k, x, out),
            }
        },
        _ => portable::lane_scores(lanes, norms, k, x, out),
    }
}
