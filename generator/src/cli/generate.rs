//! `fibquant-gen generate`: build one rate point into the registry, or only its file.

use super::{ParamArgs, RegistryArg};
use fibquant_gen::construct::validate;
use fibquant_gen::error::{Error, IoAction};
use fibquant_gen::registry;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Head dimension d of the new rate point.
    #[arg(long)]
    dim: usize,
    /// Block size k (must divide d).
    #[arg(long)]
    k: usize,
    /// Number of codewords N (at least 2; rate log2(N)/k bits per coordinate).
    #[arg(long)]
    n: usize,
    /// Write only the file into this directory; leave the registry alone.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArg,
    #[command(flatten)]
    params: ParamArgs,
    /// Print the manifest entry as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode, Error> {
    let Args {
        dim,
        k,
        n,
        out,
        registry,
        params,
        json,
    } = a;
    validate(dim, k, n)?;
    let entry = match out {
        Some(dir) => {
            let (bytes, entry) = registry::build_file(dim, k, n, params.params())?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(IoAction::CreateDir, &dir, e))?;
            registry::write_atomic(&dir.join(&entry.file), &bytes)?;
            entry
        }
        None => registry::generate_into(&registry.get(), dim, k, n, params.params())?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&entry).unwrap());
    } else {
        println!(
            "{}: mse {:.5} (initial {:.5}), selected {}, sha256 {}, {:.1}s",
            entry.file,
            entry.mse,
            entry.mse_initial,
            entry.selected,
            entry.sha256,
            entry.generation_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
