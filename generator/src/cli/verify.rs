//! `fibquant-gen verify`: re-hash every registry file against the manifest.

use super::RegistryArg;
use fibquant_gen::error::Error;
use fibquant_gen::registry;
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    registry: RegistryArg,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Exits with failure when any file does not verify, after naming each.
pub fn run(a: Args) -> Result<ExitCode, Error> {
    let (manifest, problems) = registry::verify(&a.registry.get())?;
    if a.json {
        let p: Vec<_> = problems
            .iter()
            .map(|p| json!({"file": p.file, "problem": p.what}))
            .collect();
        println!(
            "{}",
            json!({"entries": manifest.codebook.len(), "ok": problems.is_empty(), "problems": p})
        );
    } else {
        for p in &problems {
            eprintln!("FAIL {}: {}", p.file, p.what);
        }
        println!(
            "{} entries, {} verified, {} problems",
            manifest.codebook.len(),
            manifest.codebook.len().saturating_sub(problems.len()),
            problems.len()
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
