//! `fibquant-gen list`: the registry as a table (or JSON rows).

use super::{db, whole_rate, RegistryArg};
use fibquant_gen::error::Error;
use fibquant_gen::manifest::{Entry, Manifest};
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    registry: RegistryArg,
    /// Print the rows as a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode, Error> {
    let manifest = Manifest::read(&a.registry.get().manifest_path())?;
    list(&manifest, a.json);
    Ok(ExitCode::SUCCESS)
}

fn list(manifest: &Manifest, json: bool) {
    let scalar = |e: &Entry| -> Option<f64> {
        let b = whole_rate(e.k, e.n)?;
        manifest.find(e.dim, 1, 1 << b).map(|s| s.mse)
    };
    if json {
        let rows: Vec<_> = manifest
            .codebook
            .iter()
            .map(|e| {
                let bound = 4f64.powf(-e.rate_bits);
                json!({
                    "file": e.file, "dim": e.dim, "k": e.k, "n": e.n, "rate_bits": e.rate_bits,
                    "bytes_per_vector": e.slot_bytes_f16(),
                    "compression_honest": (2 * e.dim) as f64 / e.slot_bytes_f16() as f64,
                    "compression_16_over_b": 16.0 / e.rate_bits,
                    "mse": e.mse, "mse_initial": e.mse_initial, "scalar_mse": scalar(e),
                    "gain_db": scalar(e).map(|s| db(s, e.mse)),
                    "gap_db": db(e.mse, bound), "selected": e.selected,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    println!(
        "{:>4} {:>2} {:>5} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7}  selected",
        "d", "k", "N", "b", "bytes/vec", "x fp16", "x 16/b", "mse", "initial", "gain dB", "gap dB"
    );
    for e in &manifest.codebook {
        let bytes = e.slot_bytes_f16();
        let gain = scalar(e)
            .filter(|_| e.k > 1)
            .map(|s| format!("{:+.2}", db(s, e.mse)))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>4} {:>2} {:>5} {:>6.3} {:>9} {:>7.2} {:>7.2} {:>8.5} {:>8.5} {:>8} {:>7.2}  {}",
            e.dim,
            e.k,
            e.n,
            e.rate_bits,
            bytes,
            (2 * e.dim) as f64 / bytes as f64,
            16.0 / e.rate_bits,
            e.mse,
            e.mse_initial,
            gain,
            db(e.mse, 4f64.powf(-e.rate_bits)),
            e.selected
        );
    }
}
