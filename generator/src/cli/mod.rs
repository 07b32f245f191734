//! One module per subcommand: each holds its clap `Args` and a `run` returning the exit code.
//! This file holds what several share: the registry and construction flags, the progress bar,
//! and small rate helpers.

pub mod bench;
pub mod decode;
pub mod encode;
pub mod eval;
pub mod generate;
pub mod list;
pub mod regenerate;
pub mod verify;

use fibquant_gen::construct::Params;
use fibquant_gen::error::Error;
use fibquant_gen::registry::Registry;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Default)]
pub struct RegistryArg {
    /// Registry root (holds manifest.toml and codebooks/); defaults to the runtime crate's
    /// (`runtime/`), whose files the runtime embeds.
    #[arg(long)]
    registry: Option<PathBuf>,
}

impl RegistryArg {
    /// The registry given, or the runtime crate's.
    pub fn get(&self) -> Registry {
        Registry::new(
            self.registry.clone().unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime"))
            }),
        )
    }
}

#[derive(clap::Args, Clone, Copy)]
pub struct ParamArgs {
    /// Training samples per codeword (M / N).
    #[arg(long, default_value_t = 30)]
    samples_per_codeword: u32,
    /// Floor on the number of training samples M.
    #[arg(long, default_value_t = 1 << 16)]
    min_training_samples: u32,
    /// Lloyd restarts.
    #[arg(long, default_value_t = 4)]
    restarts: u32,
    /// Lloyd iterations per restart.
    #[arg(long, default_value_t = 25)]
    iterations: u32,
}

impl ParamArgs {
    /// The construction parameters these flags set.
    pub fn params(&self) -> Params {
        Params {
            samples_per_codeword: self.samples_per_codeword,
            min_training_samples: self.min_training_samples,
            restarts: self.restarts,
            iterations: self.iterations,
            ..Params::default()
        }
    }
}

/// The registry code `--bits` or `--k/--n` name for head dim `dim` (clap has already made sure
/// exactly one of the two ways was given): `(k, n)`.
pub fn resolve_code(
    dim: usize,
    bits: Option<f64>,
    k: Option<usize>,
    n: Option<usize>,
) -> Result<(usize, usize), Error> {
    match (bits, k, n) {
        (Some(bits), None, None) => {
            if !(bits.is_finite() && bits > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "--bits must be a positive number of bits per coordinate, got {bits}"
                )));
            }
            let e = fibquant::registry::best_for_rate(dim, bits)
                .map_err(|_| Error::UnknownBits { dim, bits })?;
            Ok((e.k, e.n))
        }
        (None, Some(k), Some(n)) => {
            if !fibquant::registry::entries().any(|e| (e.dim, e.k, e.n) == (dim, k, n)) {
                return Err(Error::UnknownCode { dim, k, n });
            }
            Ok((k, n))
        }
        _ => Err(Error::InvalidArgument(
            "give either --bits B or both --k and --n".into(),
        )),
    }
}

/// A progress bar of `len` steps labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap(),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// 10 log10(a / b).
pub fn db(a: f64, b: f64) -> f64 {
    10.0 * (a / b).log10()
}

/// Whole rate 1..=4 of `(k, n)`, if any.
pub fn whole_rate(k: usize, n: usize) -> Option<u32> {
    let b = (n as f64).log2() / k as f64;
    (b.fract() == 0.0 && (1.0..=4.0).contains(&b)).then_some(b as u32)
}
