//! The decisions a decode step makes before it launches: which code serves a rate on the GPU,
//! and how the context is cut into splits.

use crate::source::{MAX_SHARED_CODEBOOK_BYTES, TILE};
use fibquant::{registry, SideCode};

/// Fewest tiles a split takes (1024 positions): a split's partial result (`2 G + 2 G d`
/// floats) then costs at most about a tenth of the bytes the split reads at 2 bits.
pub const MIN_TILES_PER_SPLIT: usize = 1024 / TILE;

/// The GPU's code for `bits` stored bits per coordinate at head dim `dim`: the lowest-MSE
/// registry code at exactly that rate whose codebook fits in shared memory
/// ([`MAX_SHARED_CODEBOOK_BYTES`]). The CPU presets pick the lowest MSE outright; where that
/// code's codebook is larger (`N = 65536` at 4 bits, the E8 code at 2 bits) every lookup would
/// go to L2, so the GPU trades a little MSE for codebooks that live beside the arithmetic.
pub fn gpu_code(dim: usize, bits: f64) -> Option<SideCode> {
    registry::entries()
        .filter(|e| e.dim == dim && (e.stored_bits() - bits).abs() < 1e-9)
        .filter(|e| e.n * e.k * 4 <= MAX_SHARED_CODEBOOK_BYTES)
        .min_by(|a, b| a.mse.total_cmp(&b.mse))
        .map(|e| SideCode::Code { k: e.k, n: e.n })
}

/// How a step is cut over the context: every kv head's positions after its sinks in splits of
/// `split_len` (a multiple of the tile), `splits` per head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    /// Positions per split.
    pub split_len: usize,
    /// Splits per kv head.
    pub splits: usize,
}

/// Most splits a plan considers per kv head.
const MAX_SPLITS: usize = 1024;

impl SplitPlan {
    /// The plan for `heads` kv heads (batch x kv heads) whose longest holds `max_after`
    /// positions after its sinks, on a GPU that keeps `resident` CTAs of the kernel running at
    /// once (CTAs per multiprocessor x multiprocessors): the number of splits that minimizes
    /// the step's critical path, waves of resident CTAs x tiles per split (a last wave that
    /// fills a fifth of the GPU costs as much as a full one), none shorter than
    /// [`MIN_TILES_PER_SPLIT`] tiles unless the context is; the fewest splits among equals
    /// (fewer partial results to merge).
    pub fn new(heads: usize, max_after: usize, resident: usize) -> SplitPlan {
        let tiles = max_after.div_ceil(TILE).max(1);
        let (heads, resident) = (heads.max(1), resident.max(1));
        let most = tiles.div_ceil(MIN_TILES_PER_SPLIT).clamp(1, MAX_SPLITS);
        let cost = |s: usize| (heads * s).div_ceil(resident) * tiles.div_ceil(s);
        let splits = (1..=most).min_by_key(|&s| (cost(s), s)).unwrap_or(1);
        let per_split = tiles.div_ceil(splits);
        SplitPlan {
            split_len: per_split * TILE,
            splits: tiles.div_ceil(per_split),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_context_and_fill_the_gpu() {
        for (heads, len, resident) in [(8, 4096, 528), (256, 131072, 528), (8, 100, 528), (1, 0, 1)]
        {
            let p = SplitPlan::new(heads, len, resident);
            assert!(p.split_len.is_multiple_of(TILE) && p.split_len > 0);
            assert!(p.splits * p.split_len >= len, "{p:?} for {len}");
            assert!(
                (p.splits - 1) * p.split_len < len.max(1),
                "{p:?}: an empty split"
            );
        }
        // Few heads, a long context: one wave of splits that fills the GPU.
        let p = SplitPlan::new(8, 131072, 528);
        assert!(8 * p.splits <= 528 && 8 * p.splits > 528 / 2, "{p:?}");
        // 128 heads on 528 resident CTAs: 4 splits (one wave of 512), not 5 (a second wave of
        // 112 CTAs that costs as much as the first).
        assert_eq!(SplitPlan::new(128, 32768, 528).splits, 4);
        // Heads beyond one wave: no split at all.
        assert_eq!(SplitPlan::new(1024, 4096, 528).splits, 1);
    }

    #[test]
    fn gpu_codes_fit_shared_memory_and_keep_the_rate() {
        for dim in [64, 128] {
            for bits in [1.0, 2.0, 3.0, 4.0] {
                let Some(SideCode::Code { k, n }) = gpu_code(dim, bits) else {
                    panic!("no GPU code for d = {dim} at {bits} bits");
                };
                assert!(n * k * 4 <= MAX_SHARED_CODEBOOK_BYTES);
                let b = (usize::BITS - (n - 1).leading_zeros()) as f64 / k as f64;
                assert_eq!(b, bits);
            }
        }
    }
}
