//! Nearest-codeword search: one file per search structure, and [`plan`], the one place that
//! chooses which of them a codebook uses ([`SearchPlan::choose`]) and holds every tuning
//! constant of that choice.
//!
//! All of them answer "which codeword is nearest to this block of `k` values"; the exact ones
//! answer exactly what [`exhaustive`] answers, ties included (lowest index wins):
//! - [`exhaustive`]: every codeword scored in lanes; the reference, and the last resort;
//! - [`orbits`]: codebooks made of whole signed-permutation orbits (the E8 codes), exact;
//! - [`cells`]: an exact grid of candidate lists, for small `k = 2` to 4 codebooks;
//! - [`shortlist`]: certified shortlists for `k = 4`, exact where they certify the answer;
//! - [`balls`]: exact pruning by balls around k-means cells;
//! - [`ivf`]: an inverted file, approximate, for codebooks from [`plan::IVF_THRESHOLD`] codewords.
//!
//! Scalar codes with ascending levels search by thresholds, in [`crate::Codebook`] itself.

pub mod balls;
pub mod cells;
pub mod exhaustive;
pub mod ivf;
pub mod orbits;
pub mod plan;
pub mod shortlist;

pub use plan::SearchPlan;
