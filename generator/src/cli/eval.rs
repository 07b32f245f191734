//! `fibquant-gen eval`: MSE of embedded codebooks on fresh source samples.

use super::{bar, db, whole_rate};
use fibquant::registry as embedded;
use fibquant_gen::error::Error;
use fibquant_gen::lloyd::block_mse;
use fibquant_gen::source::{Method, Source};
use serde::Serialize;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, required_unless_present = "all")]
    dim: Option<usize>,
    #[arg(long, required_unless_present = "all")]
    k: Option<usize>,
    #[arg(long, required_unless_present = "all")]
    n: Option<usize>,
    /// Every embedded rate point.
    #[arg(long, conflicts_with_all = ["dim", "k", "n"])]
    all: bool,
    /// Source blocks to draw.
    #[arg(long, default_value_t = 1 << 16)]
    samples: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

/// One rate point measured (a JSON object of `eval --json`).
#[derive(Serialize)]
struct EvalRow {
    dim: usize,
    k: usize,
    n: usize,
    rate_bits: f64,
    mse: f64,
    /// The k = 1 scalar code's MSE at the same whole rate, if there is one.
    scalar_mse: Option<f64>,
    /// `4^-b`.
    bound: f64,
    gain_db: Option<f64>,
    gap_db: f64,
    registry_mse: f64,
    bytes_per_vector: usize,
    compression_honest: f64,
    compression_16_over_b: f64,
    samples: usize,
    seed: u64,
}

pub fn run(a: Args) -> Result<ExitCode, Error> {
    let Args {
        dim,
        k,
        n,
        all,
        samples,
        seed,
        json,
    } = a;
    if samples == 0 {
        return Err(Error::InvalidArgument("--samples must be positive".into()));
    }
    let points: Vec<(usize, usize, usize)> = if all {
        embedded::entries().map(|e| (e.dim, e.k, e.n)).collect()
    } else {
        vec![(dim.unwrap(), k.unwrap(), n.unwrap())]
    };
    let pb = bar(points.len() as u64, "eval");
    if json || points.len() == 1 {
        pb.finish_and_clear();
    }
    let mut results = Vec::new();
    for (d, k, n) in points {
        results.push(eval_point(d, k, n, samples, seed)?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if json {
        // Through a `Value`, whose keys are sorted, as this output always had them.
        let v = if all {
            serde_json::to_value(&results)
        } else {
            serde_json::to_value(results.pop().unwrap())
        };
        println!("{}", serde_json::to_string_pretty(&v.unwrap()).unwrap());
    } else {
        print_eval_table(&results, samples, seed);
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_point(d: usize, k: usize, n: usize, samples: usize, seed: u64) -> Result<EvalRow, Error> {
    let cb = embedded::codebook(d, k, n)?;
    let src = Source::new(d, k)?;
    let blocks = src.sample(Method::RadiusDirection, samples, seed);
    let mse = block_mse(cb.codewords(), k, &blocks) * (d / k) as f64;
    let rate = (n as f64).log2() / k as f64;
    let scalar_mse = match whole_rate(k, n) {
        Some(b) if k > 1 => {
            let s = embedded::codebook(d, 1, 1 << b)?;
            let src1 = Source::new(d, 1)?;
            let coords = src1.sample(Method::RadiusDirection, samples, seed ^ 0x5ca1a);
            Some(block_mse(s.codewords(), 1, &coords) * d as f64)
        }
        Some(_) => Some(mse),
        None => None,
    };
    let bound = 4f64.powf(-rate);
    let reg = embedded::entries()
        .find(|e| (e.dim, e.k, e.n) == (d, k, n))
        .unwrap();
    let bytes = 2 + fibquant::util::pack::packed_bytes(d / k, fibquant::util::pack::index_bits(n));
    Ok(EvalRow {
        dim: d,
        k,
        n,
        rate_bits: rate,
        mse,
        scalar_mse,
        bound,
        gain_db: scalar_mse.map(|s| db(s, mse)),
        gap_db: db(mse, bound),
        registry_mse: reg.mse,
        bytes_per_vector: bytes,
        compression_honest: (2 * d) as f64 / bytes as f64,
        compression_16_over_b: 16.0 / rate,
        samples,
        seed,
    })
}

fn print_eval_table(rows: &[EvalRow], samples: usize, seed: u64) {
    println!("MSE on {samples} fresh source blocks (seed {seed}); gain over the k=1 scalar code at the same rate, gap to the 4^-b bound");
    println!(
        "{:>4} {:>2} {:>5} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7}",
        "d", "k", "N", "b", "bytes/vec", "x fp16", "x 16/b", "mse", "scalar", "gain dB", "gap dB"
    );
    let opt =
        |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
    for r in rows {
        println!(
            "{:>4} {:>2} {:>5} {:>6.3} {:>9} {:>7.2} {:>7.2} {:>8.5} {:>8} {:>8} {:>7.2}",
            r.dim,
            r.k,
            r.n,
            r.rate_bits,
            r.bytes_per_vector,
            r.compression_honest,
            r.compression_16_over_b,
            r.mse,
            opt(r.scalar_mse, 5),
            opt(r.gain_db.filter(|_| r.k != 1), 2),
            r.gap_db,
        );
    }
}
