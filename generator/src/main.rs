//! `fibquant-gen`: build, verify, list and evaluate FibQuant codebooks; encode and decode `.npy`
//! arrays with them.
//!
//! This file parses the command line and dispatches; each subcommand lives in its module under
//! `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fibquant-gen",
    version,
    about = "Build, verify and use FibQuant codebooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build one rate point into the registry (or only write its file into --out).
    Generate(cli::generate::Args),
    /// Rebuild manifest entries whose files do not verify (and, with --plan, add missing points
    /// of the default coverage). With --check, rebuild the selected entries in memory and compare
    /// them byte for byte with the files, writing nothing.
    Regenerate(cli::regenerate::Args),
    /// Re-hash every registry file against the manifest; exit non-zero naming each bad file.
    /// With --deep, also check loads, headers, codewords, manifest consistency, unexpected
    /// files and re-measure each MSE.
    Verify(cli::verify::Args),
    /// Show the registry as a table.
    List(cli::list::Args),
    /// MSE of embedded codebooks on fresh source samples (one point, or --all).
    Eval(cli::eval::Args),
    /// Encode a float32 .npy array of shape (rows, d) into a code file.
    Encode(cli::encode::Args),
    /// Speed benchmarks: encode/decode per rate (and peers with --features peers), attention on
    /// codes vs decode-then-compute vs fp16 vs f32 over a cache larger than the LLC, parallel
    /// batch encode. Single-threaded except the parallel section; medians over repeats.
    Bench(cli::bench::Args),
    /// Decode a code file into a float32 .npy array.
    Decode(cli::decode::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Generate(a) => cli::generate::run(a),
        Command::Regenerate(a) => cli::regenerate::run(a),
        Command::Verify(a) => cli::verify::run(a),
        Command::List(a) => cli::list::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Encode(a) => cli::encode::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Decode(a) => cli::decode::run(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}
