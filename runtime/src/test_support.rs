//! Helpers shared by the unit tests of the search structures.

/// Source blocks (see [`crate::util::rng::unit_vector_blocks`]).
pub use crate::util::rng::unit_vector_blocks as source_blocks;

/// Squared norms of `k`-coordinate codewords as the codebook computes them (`sum of c_j * c_j`
/// in f32, in order).
pub fn norms_of(codewords: &[f32], k: usize) -> Vec<f32> {
    codewords
        .chunks_exact(k)
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect()
}
