//! FibQuant on NVIDIA GPUs: decode attention on a compressed KV cache, and encoding new rows,
//! with the CPU runtime's slot layout and codebooks.
//!
//! The data path, one module each:
//! - [`layout`]: a batch of sequences' caches as the kernels read them (pools of slots, fp16
//!   rows, means, block ends; one descriptor per kv head), built from the runtime's
//!   [`fibquant::KvCache`] ([`fibquant::KvCache::head_parts`]) or sized for a benchmark;
//! - [`plan`]: how a decode step is cut over the context (flash-decoding splits);
//! - [`source`]: the CUDA C kernels (`kernels/*.cu`) and the constants a configuration compiles
//!   them with;
//! - [`gpu`]: the device (cudarc: the driver and NVRTC are loaded at run time, so this crate
//!   builds and its CPU tests run on machines without CUDA), uploads, launches;
//! - [`reference`]: the CPU reference the kernels are tested against: the same arithmetic on
//!   the same [`layout::HostBatch`], checked against the runtime's own attention.
//!
//! A decode step is three kernels: `prepare` (per kv head: the queries scaled by the key
//! scales and rotated, and their dots with the key blocks' means), `attend` (per split: scores
//! on codes, online softmax, weighted sums in the rotated domain) and `combine` (merges the
//! splits, one inverse rotation per query head).
//!
//! What stays on the CPU: the E8-orbit and IVF searches of the large codebooks (`N > 4096`)
//! and the blocks' means and key scales (the cache's policy decisions); see `README.md`.

#![deny(missing_docs)]

pub mod error;
pub mod gpu;
pub mod layout;
pub mod plan;
pub mod reference;
pub mod source;

pub use error::{Error, Result};
