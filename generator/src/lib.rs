//! # fibquant-gen
//!
//! The offline half of FibQuant: builds codebooks for rate points `(d, k, N)` and keeps the
//! checksummed registry (`manifest.toml` + `codebooks/`). The modules follow the data's path:
//! [`source`] (the spherical-Beta law) -> [`init`] (radial-angular initial codebook) ->
//! [`lloyd`] (multi-restart refinement) -> [`construct`] (selection, measurement) -> [`registry`]
//! (files, manifest, verification) -> [`deep`] (`verify --deep`: what the hashes cannot vouch
//! for). [`scalar`] is the exact k = 1 construction, [`e8`] the lattice code for k = 8 at 2
//! bits, [`special`] the special functions behind them, [`npy`] and [`codes`] the file formats
//! of the encode/decode tool, [`error`] the error type.

#![deny(missing_docs)]

pub mod bench;
pub mod bench_report;
pub mod codes;
pub mod construct;
pub mod deep;
pub mod e8;
pub mod error;
pub mod init;
pub mod lloyd;
pub mod manifest;
pub mod npy;
#[cfg(feature = "peers")]
pub mod peers;
pub mod plan;
pub mod registry;
pub mod scalar;
pub mod source;
pub mod special;
