//! `fibquant-gen regenerate`: rebuild manifest entries whose files do not verify, add missing
//! points of the default plan, or (`--check`) compare rebuilt bytes with the files.

use super::{bar, RegistryArg};
use fibquant_gen::construct::Params;
use fibquant_gen::error::Error;
use fibquant_gen::manifest::Manifest;
use fibquant_gen::plan;
use fibquant_gen::registry::{self, Registry};
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    registry: RegistryArg,
    /// Also build the default plan's points missing from the manifest.
    #[arg(long)]
    plan: bool,
    /// Rebuild even entries that verify.
    #[arg(long)]
    force: bool,
    /// Rebuild and compare with the files on disk; write nothing.
    #[arg(long)]
    check: bool,
    /// Only entries with N at most this.
    #[arg(long)]
    max_n: Option<usize>,
    /// Only entries with this head dim.
    #[arg(long)]
    dim: Option<usize>,
    /// Print what was built or compared as JSON.
    #[arg(long)]
    json: bool,
}

/// Exits with failure when `--check` finds a rebuilt file that differs.
pub fn run(a: Args) -> Result<ExitCode, Error> {
    regenerate(
        &a.registry.get(),
        a.plan,
        a.force,
        a.check,
        a.max_n,
        a.dim,
        a.json,
    )
}

fn regenerate(
    reg: &Registry,
    with_plan: bool,
    force: bool,
    check: bool,
    max_n: Option<usize>,
    dim: Option<usize>,
    json: bool,
) -> Result<ExitCode, Error> {
    let manifest = if reg.manifest_path().exists() {
        Manifest::read(&reg.manifest_path())?
    } else {
        Manifest::default()
    };
    let mut points: Vec<(usize, usize, usize)> = manifest
        .codebook
        .iter()
        .map(|e| (e.dim, e.k, e.n))
        .collect();
    if with_plan {
        for p in plan::default_plan() {
            if !points.contains(&p) {
                points.push(p);
            }
        }
    }
    points.retain(|&(d, _, n)| max_n.is_none_or(|m| n <= m) && dim.is_none_or(|x| x == d));
    let todo: Vec<_> = points
        .into_iter()
        .filter(|&(d, k, n)| {
            check
                || force
                || manifest
                    .find(d, k, n)
                    .is_none_or(|e| registry::check_entry(reg, e).is_some())
        })
        .collect();
    // Cheap points first, so progress shows early.
    let mut todo = todo;
    todo.sort_by_key(|&(d, k, n)| (n * k, d));
    let pb = bar(todo.len() as u64, if check { "check" } else { "build" });
    let mut report = Vec::new();
    let mut mismatches = 0;
    for (d, k, n) in todo {
        pb.set_message(plan::file_name(d, k, n));
        let params = manifest
            .find(d, k, n)
            .filter(|e| e.k > 1)
            .map(|e| Params {
                samples_per_codeword: e.samples_per_codeword,
                restarts: e.restarts,
                iterations: e.iterations,
                ..Params::default()
            })
            .unwrap_or_default();
        if check {
            let (bytes, entry) = registry::build_file(d, k, n, params)?;
            let on_disk = std::fs::read(reg.codebook_dir().join(&entry.file)).unwrap_or_default();
            let same = on_disk == bytes;
            if !same {
                mismatches += 1;
                pb.println(format!(
                    "MISMATCH {}: rebuilt bytes differ from the file",
                    entry.file
                ));
            }
            report.push(json!({"file": entry.file, "identical": same}));
        } else {
            let entry = registry::generate_into(reg, d, k, n, params)?;
            pb.println(format!(
                "{}: mse {:.5} (initial {:.5}) {} in {:.1}s",
                entry.file, entry.mse, entry.mse_initial, entry.selected, entry.generation_seconds
            ));
            report.push(serde_json::to_value(&entry).unwrap());
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    } else if check {
        println!("{} rebuilt, {} differ", report.len(), mismatches);
    } else {
        println!("{} entries built", report.len());
    }
    Ok(if mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
