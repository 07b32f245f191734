//! # FibQuant runtime
//!
//! Fixed-rate, random-access, calibration-free vector quantization of KV-cache vectors.
//! A vector `x` of head dim `d` is stored as its norm plus, after one shared random rotation, the
//! index of the nearest codeword for each block of `k` coordinates in a shared codebook of `N`
//! codewords: `log2(N) / k` bits per coordinate. With `k = 1` this is TurboQuant's scalar code.
//!
//! The layers follow the data's path:
//! - [`registry`]: the codebooks embedded at build time (sha256-verified against `manifest.toml`);
//! - [`codebook`]: one codebook, its file format and nearest-codeword search ([`orbits`]: the
//!   exact search of codebooks made of lattice orbits);
//! - [`rotation`]: the shared random rotation (randomized Hadamard or dense Haar);
//! - [`pack`]: bit packing of indices;
//! - [`codec`]: the [`Codec`] tying them together (normalize, rotate, quantize, pack) and its slot
//!   layout; attention on codes ([`Codec::scores`], [`Codec::weighted_sum`]) lives in `attention`;
//! - [`cache`]: the [`KvCache`] an engine attends through (codes per side and layer, exact
//!   centering and key scaling, exact sink and recent tokens), on top of the codec.
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

mod attention;
pub mod balls;
mod byte_tables;
pub mod cache;
pub mod cells;
pub mod codebook;
pub mod codec;
mod error;
pub mod fp16;
pub mod ivf;
pub mod kernels;
pub mod orbits;
pub mod pack;
pub mod registry;
pub mod rng;
pub mod rotation;
pub mod shortlist;
#[cfg(test)]
mod test_support;

pub use attention::WEIGHT_FLUSH;
pub use cache::{CachePolicy, CacheShape, KeyScaling, KvCache, SideCode};
pub use codebook::Codebook;
pub use codec::{AttentionCodebook, Codec, CodecConfig, NormFormat, HALF_CODEBOOK_FROM_BYTES};
pub use error::{Error, Result};
pub use rotation::RotationKind;

/// The repository README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
