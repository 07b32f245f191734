//! # FibQuant runtime
//!
//! Fixed-rate, random-access, calibration-free vector quantization of KV-cache vectors.
//! A vector `x` of head dim `d` is stored as its norm plus, after one shared random rotation, the
//! index of the nearest codeword for each block of `k` coordinates in a shared codebook of `N`
//! codewords: `log2(N) / k` bits per coordinate. With `k = 1` this is TurboQuant's scalar code.
//!
//! What a user needs is at the root:
//! - [`Codec`] and [`CodecConfig`]: encode, decode, and attend on codes ([`Codec::scores`],
//!   [`Codec::weighted_sum`] and their grouped forms) for one `(d, k, N)`;
//!   [`CodecConfig::preset`] picks the embedded code for a rate;
//! - [`KvCache`] with [`CachePolicy`] and [`CacheShape`]: the KV cache an engine attends through
//!   (codes per side and layer, key centering and scaling, exact sink and recent tokens);
//! - [`registry`]: the embedded codebooks (sha256-verified against `manifest.toml` at build
//!   time), [`Codebook`] for a codebook of one's own, [`Error`].
//!
//! Inside, the layers follow the data's path, each using only the ones before it: `util`
//! (random numbers, fp16, bit packing) -> `kernels` (per-ISA compute, one portable reference)
//! -> `search` (nearest-codeword searches and the plan that chooses them) -> `codebook` (codewords,
//! file format) -> [`registry`] -> `codec` (rotation, slot layout, encode, decode) -> `attention`
//! (scores and sums on codes, the codebook copies they read) -> `cache`. They are public, but
//! hidden and unstable, with the `internals` feature.
//!
//! ```
//! use fibquant::{Codec, CodecConfig};
//! // d = 64, blocks of k = 4 coordinates, N = 256 codewords: 2 bits per coordinate.
//! let codec = Codec::new(CodecConfig::new(64, 4, 256))?;
//! let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut slot = vec![0u8; codec.slot_bytes()]; // 2-byte norm + 16 one-byte indices = 18 bytes
//! codec.encode(&x, &mut slot)?;
//! let mut x_hat = vec![0f32; 64];
//! codec.decode(&slot, &mut x_hat)?;
//! let err: f32 = x.iter().zip(&x_hat).map(|(a, b)| (a - b) * (a - b)).sum();
//! let norm_sq: f32 = x.iter().map(|a| a * a).sum();
//! assert!(err / norm_sq < 0.2);
//!
//! // Attention scores straight from the codes.
//! let mut scores = [0f32; 1];
//! codec.scores(&x, &slot, &mut scores)?;
//! # Ok::<(), fibquant::Error>(())
//! ```

#![deny(missing_docs)]

/// Declares a layer module: private, or public but hidden from the docs with the `internals`
/// feature (for the generator, the examples and the tests, which reach below the user API).
/// Without it, items only those callers use are not dead code.
macro_rules! layer {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$doc])*
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code)]
        mod $name;
    };
}

// The layers, each importing only from the ones above it here (`tests/layers.rs` checks it).
mod error;
layer!(util);
layer!(kernels);
layer!(search);
layer!(codebook);
pub mod registry;
layer!(codec);
layer!(attention);
pub mod cache;
#[cfg(test)]
mod test_support;

pub use attention::tables::HALF_CODEBOOK_FROM_BYTES;
pub use attention::WEIGHT_FLUSH;
pub use cache::{
    CachePolicy, CacheShape, HeadParts, KeyScaling, KvCache, LayerOverride, SideCode, SideParts,
};
pub use codebook::{Codebook, CodebookHeader, Construction, Integrity, LoadLimits};
pub use codec::codefile::{CodeFile, CodeFileHeader, CodebookTag};
pub use codec::rotation::{Rotation, RotationKind};
pub use codec::{AttentionCodebook, Codec, CodecConfig, NormFormat, DEFAULT_SEED, MAX_DIM};
pub use error::{Error, Result};
pub use registry::RegistryEntry;
pub use search::SearchPlan;

/// The crate README's example, compiled and run as a doctest (the workspace README's are tested
/// by the workspace's root package).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
