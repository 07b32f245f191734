//! `fibquant-gen verify`: re-hash every registry file against the manifest; with `--deep`, also
//! check what the hashes cannot vouch for ([`fibquant_gen::deep`]).

use super::RegistryArg;
use fibquant_gen::deep::{self, DeepOptions, DeepReport, UNIT_BALL_TOLERANCE};
use fibquant_gen::error::Error;
use fibquant_gen::manifest::Manifest;
use fibquant_gen::registry::{self, Problem};
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    registry: RegistryArg,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also check what the hashes cannot: each file loads as format version 2 with nothing
    /// after its body frame; its header agrees with the manifest entry; its codewords are
    /// finite, distinct, not all zero and inside the unit ball; the manifest is consistent
    /// (rate_bits, file names, no duplicates); codebooks/ holds nothing unexpected; and each
    /// MSE, re-measured on --samples fresh source blocks, is within its sampling error of the
    /// manifest's (about 8 s for the registry on 2 cores).
    #[arg(long)]
    deep: bool,
    /// Fresh source blocks per entry for --deep's MSE re-measure.
    #[arg(long, default_value_t = deep::DEFAULT_SAMPLES, requires = "deep")]
    samples: usize,
    /// Seed of those blocks.
    #[arg(long, default_value_t = deep::DEFAULT_SEED, requires = "deep")]
    seed: u64,
}

/// Fewest fresh blocks per entry `--samples` accepts.
const MIN_SAMPLES: usize = 1024;

/// Exits with failure when any file does not verify, after naming each.
pub fn run(a: Args) -> Result<ExitCode, Error> {
    if a.samples < MIN_SAMPLES {
        return Err(Error::InvalidArgument(format!(
            "--samples must be at least {MIN_SAMPLES}: the tolerance rests on the normal law of \
             a mean and on a sample variance, which a few blocks do not give"
        )));
    }
    let start = std::time::Instant::now();
    let (manifest, problems, report) = if a.deep {
        let options = DeepOptions {
            samples: a.samples,
            seed: a.seed,
        };
        let (m, p, r) = deep::verify_deep(&a.registry.get(), options)?;
        (m, p, Some(r))
    } else {
        let (m, p) = registry::verify(&a.registry.get())?;
        (m, p, None)
    };
    let seconds = start.elapsed().as_secs_f64();
    let entries = manifest.codebook.len();
    if a.json {
        let p: Vec<_> = problems
            .iter()
            .map(|p| json!({"file": p.file, "check": p.check, "problem": p.what}))
            .collect();
        let mut v = json!({"entries": entries, "ok": problems.is_empty(), "problems": p});
        if let Some(r) = &report {
            v["deep"] = deep_json(r, seconds);
        }
        println!("{v}");
    } else {
        for p in &problems {
            eprintln!("FAIL {}: {}", p.file, p.what);
        }
        if let Some(r) = &report {
            println!("{}", deep_line(r, seconds));
        }
        println!(
            "{entries} entries, {} verified, {} problems",
            verified(&manifest, &problems),
            problems.len()
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Entries whose file no problem names.
fn verified(manifest: &Manifest, problems: &[Problem]) -> usize {
    manifest
        .codebook
        .iter()
        .filter(|e| !problems.iter().any(|p| p.file == e.file))
        .count()
}

/// The entry of the largest `|z|`.
fn worst(r: &DeepReport) -> Option<&deep::MseRow> {
    r.mse.iter().max_by(|a, b| a.z.abs().total_cmp(&b.z.abs()))
}

fn deep_line(r: &DeepReport, seconds: f64) -> String {
    let within = r.mse.iter().filter(|m| m.z.abs() <= r.tolerance_z).count();
    let mut line = format!(
        "deep: load (format version 2, no trailing data), header vs manifest, codewords \
         (finite, distinct, not all zero, norm <= 1 + {UNIT_BALL_TOLERANCE:e}), manifest \
         consistency, unexpected files; MSE re-measured on {} fresh blocks per entry (seed {}): \
         {within} of {} within {:.2} standard errors of the manifest's",
        r.samples,
        r.seed,
        r.mse.len(),
        r.tolerance_z
    );
    if let Some(w) = worst(r) {
        line += &format!(" (largest {:+.2}, {})", w.z, w.file);
    }
    if let Some((norm, file)) = &r.max_norm {
        line += &format!("; largest codeword norm {norm:.9} ({file})");
    }
    line + &format!("; {seconds:.1} s")
}

fn deep_json(r: &DeepReport, seconds: f64) -> serde_json::Value {
    let rows: Vec<_> = r
        .mse
        .iter()
        .map(|m| {
            json!({
                "file": m.file,
                "mse": m.mse,
                "manifest_mse": m.manifest_mse,
                "std_error": m.std_error,
                "z": m.z,
                "within_tolerance": m.z.abs() <= r.tolerance_z,
            })
        })
        .collect();
    json!({
        "samples": r.samples,
        "seed": r.seed,
        "tolerance_z": r.tolerance_z,
        "unit_ball_tolerance": UNIT_BALL_TOLERANCE,
        "max_norm": r.max_norm.as_ref().map(|m| json!({"norm": m.0, "file": m.1})),
        "seconds": seconds,
        "mse": rows,
    })
}
