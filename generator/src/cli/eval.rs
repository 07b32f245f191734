//! `fibquant-gen eval`: MSE of embedded codebooks on fresh source samples.

use super::{bar, db, resolve_code, whole_rate, RegistryArg};
use fibquant::registry as embedded;
use fibquant_gen::construct::Params;
use fibquant_gen::error::Error;
use fibquant_gen::lloyd::{block_mse_and_variance, remeasure, tolerance_z, FAMILY_FALSE_ALARM};
use fibquant_gen::manifest::Manifest;
use fibquant_gen::source::{Method, Source};
use serde::Serialize;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Head dimension d of the code to measure.
    #[arg(long, required_unless_present = "all")]
    dim: Option<usize>,
    /// Bits per coordinate (4, 3, 2, 1, 0.5, ...): the registry's lowest-MSE code for --dim at
    /// that rate.
    #[arg(long, conflicts_with_all = ["k", "n"], required_unless_present_any = ["k", "all"])]
    bits: Option<f64>,
    /// Block size k of an exact registry code (with --n, instead of --bits).
    #[arg(long, requires = "n")]
    k: Option<usize>,
    /// Codebook size N of an exact registry code (with --k, instead of --bits).
    #[arg(long, requires = "k")]
    n: Option<usize>,
    /// Every embedded rate point.
    #[arg(long, conflicts_with_all = ["dim", "bits", "k", "n"])]
    all: bool,
    /// Source blocks to draw.
    #[arg(long, default_value_t = 1 << 16)]
    samples: usize,
    /// Seed of the fresh source samples.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print the rows as JSON (an object for one point, an array with --all).
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
    /// The k = 1 scalar code's MSE at the same whole rate (of stored bits: the E8 code's is 2),
    /// if there is one.
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
    /// Standard error of `mse` (from the per-block spread of this sample).
    mse_std_error: f64,
    /// Standard error of `scalar_mse` (k > 1 rows with a scalar code only).
    scalar_std_error: Option<f64>,
    /// Test blocks the manifest's MSE was measured on.
    registry_test_blocks: usize,
    /// Standard error of `registry_mse`: this sample's per-block spread over its test set.
    registry_std_error: f64,
    /// `(mse - registry_mse) / sqrt(mse_std_error^2 + registry_std_error^2)`.
    z_vs_registry: f64,
    /// The `|z_vs_registry|` limit of `within_tolerance` (Bonferroni over the rows measured).
    tolerance_z: f64,
    /// `|z_vs_registry| <= tolerance_z`.
    within_tolerance: bool,
}

pub fn run(a: Args) -> Result<ExitCode, Error> {
    let Args {
        dim,
        bits,
        k,
        n,
        all,
        samples,
        seed,
        json,
    } = a;
    if samples < 2 {
        return Err(Error::InvalidArgument(
            "--samples must be at least 2 (the tolerance needs a sample variance)".into(),
        ));
    }
    let points: Vec<(usize, usize, usize)> = if all {
        embedded::entries().map(|e| (e.dim, e.k, e.n)).collect()
    } else {
        let dim = dim.ok_or_else(|| Error::InvalidArgument("--dim is required".into()))?;
        let (k, n) = resolve_code(dim, bits, k, n)?;
        vec![(dim, k, n)]
    };
    // The manifest next to the embedded files (the build checked they agree) says how large each
    // test set was; a missing manifest falls back to the generator's default.
    let manifest = Manifest::read(&RegistryArg::default().get().manifest_path()).ok();
    let tolerance_z = tolerance_z(FAMILY_FALSE_ALARM, points.len());
    let pb = bar(points.len() as u64, "eval");
    if json || points.len() == 1 {
        pb.finish_and_clear();
    }
    let mut results = Vec::new();
    for (d, k, n) in points {
        let test_blocks = manifest
            .as_ref()
            .and_then(|m| m.find(d, k, n))
            .map_or(Params::default().test_blocks, |e| e.test_blocks);
        results.push(eval_point(
            d,
            k,
            n,
            samples,
            seed,
            test_blocks,
            tolerance_z,
        )?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if json {
        // Through a `Value`, whose keys are sorted, as this output always had them.
        let v = if all {
            serde_json::to_value(&results)
        } else {
            serde_json::to_value(results.pop())
        };
        let v = v.map_err(|e| Error::InvalidArgument(format!("cannot serialize: {e}")))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&v)
                .map_err(|e| Error::InvalidArgument(format!("cannot serialize: {e}")))?
        );
    } else {
        print_eval_table(&results, samples, seed);
        for line in verdict(&results, tolerance_z) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_point(
    d: usize,
    k: usize,
    n: usize,
    samples: usize,
    seed: u64,
    registry_test_blocks: usize,
    tolerance_z: f64,
) -> Result<EvalRow, Error> {
    let cb = embedded::codebook(d, k, n)?;
    let reg = embedded::entries()
        .find(|e| (e.dim, e.k, e.n) == (d, k, n))
        .ok_or(Error::UnknownCode { dim: d, k, n })?;
    let src = Source::new(d, k)?;
    let blocks = src.sample(Method::RadiusDirection, samples, seed);
    let fresh = remeasure(cb.codewords(), d, k, &blocks, reg.mse, registry_test_blocks);
    let (mse, mse_std_error, registry_std_error) =
        (fresh.mse, fresh.std_error, fresh.recorded_std_error);
    let rate = (n as f64).log2() / k as f64;
    // The scalar code that costs the same index bits: `ceil(log2 N) / k` whole (for the E8 code,
    // N = 64497, 16 bits per 8 coordinates: the 2-bit scalar code).
    let stored_whole = whole_rate(k, n).or_else(|| {
        let bits = fibquant::util::pack::index_bits(n) as usize;
        (bits.is_multiple_of(k) && (1..=4).contains(&(bits / k))).then_some((bits / k) as u32)
    });
    let (scalar_mse, scalar_std_error) = match stored_whole {
        Some(b) if k > 1 => {
            let s = embedded::codebook(d, 1, 1 << b)?;
            let src1 = Source::new(d, 1)?;
            let coords = src1.sample(Method::RadiusDirection, samples, seed ^ 0x5ca1a);
            let (m, v) = block_mse_and_variance(s.codewords(), 1, &coords);
            (
                Some(m * d as f64),
                Some(d as f64 * (v / samples as f64).sqrt()),
            )
        }
        Some(_) => (Some(mse), None),
        None => (None, None),
    };
    let bound = 4f64.powf(-rate);
    let bytes = 2 + fibquant::util::pack::packed_bytes(d / k, fibquant::util::pack::index_bits(n));
    let z_vs_registry = fresh.z;
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
        mse_std_error,
        scalar_std_error,
        registry_test_blocks,
        registry_std_error,
        z_vs_registry,
        tolerance_z,
        within_tolerance: z_vs_registry.abs() <= tolerance_z,
    })
}

fn code_name(r: &EvalRow) -> String {
    format!("d={} k={} N={}", r.dim, r.k, r.n)
}

/// The verdict lines printed after the table: how many rows reproduce their manifest MSE within
/// the sampling tolerance, and whether every vector code beats the scalar code at its rate.
fn verdict(rows: &[EvalRow], tolerance_z: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let within = rows.iter().filter(|r| r.within_tolerance).count();
    let worst = rows
        .iter()
        .max_by(|a, b| a.z_vs_registry.abs().total_cmp(&b.z_vs_registry.abs()));
    let test_sizes: Vec<usize> = {
        let mut t: Vec<usize> = rows.iter().map(|r| r.registry_test_blocks).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    let tests = test_sizes
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join("/");
    let mut line = format!(
        "verdict: {within} of {} codebooks within their manifest MSE's sampling tolerance (|fresh - manifest| <= {tolerance_z:.2} standard errors of the difference, from this run's {} blocks and the manifest's {tests}-block test set; {tolerance_z:.2} keeps all rows inside with 99% probability if nothing changed)",
        rows.len(),
        rows.first().map_or(0, |r| r.samples),
    );
    if let Some(w) = worst {
        line += &format!(
            "; largest deviation {:+.2} SE ({})",
            w.z_vs_registry,
            code_name(w)
        );
    }
    lines.push(line);
    let outside: Vec<String> = rows
        .iter()
        .filter(|r| !r.within_tolerance)
        .map(|r| {
            format!(
                "{}: {:.5} vs manifest {:.5} ({:+.1} SE)",
                code_name(r),
                r.mse,
                r.registry_mse,
                r.z_vs_registry
            )
        })
        .collect();
    if !outside.is_empty() {
        lines.push(format!("  outside: {}", outside.join("; ")));
    }
    // Vector codes (k > 1) at a whole rate, against the k = 1 code at that rate.
    let compared: Vec<(&EvalRow, f64, f64)> = rows
        .iter()
        .filter(|r| r.k > 1)
        .filter_map(|r| {
            let s = r.scalar_mse?;
            let se = r.mse_std_error.hypot(r.scalar_std_error.unwrap_or(0.0));
            Some((
                r,
                s,
                if se > 0.0 {
                    (s - r.mse) / se
                } else {
                    f64::INFINITY
                },
            ))
        })
        .collect();
    let no_scalar = rows
        .iter()
        .filter(|r| r.k > 1 && r.scalar_mse.is_none())
        .count();
    if compared.is_empty() {
        if rows.iter().any(|r| r.k > 1) {
            lines.push(format!(
                "verdict: no vector code measured has a scalar code at its rate ({no_scalar} at fractional rates)"
            ));
        }
        return lines;
    }
    // Beyond the tolerance either way, or a tie within the sampling error.
    let show = |list: Vec<&(&EvalRow, f64, f64)>| -> String {
        list.iter()
            .map(|(r, s, z)| format!("{} {:.5} vs {s:.5}, {z:+.1} SE", code_name(r), r.mse))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let worse: Vec<_> = compared.iter().filter(|c| c.2 < -tolerance_z).collect();
    let ties: Vec<_> = compared
        .iter()
        .filter(|c| c.2.abs() <= tolerance_z)
        .collect();
    let better = compared.len() - worse.len() - ties.len();
    let answer = if worse.is_empty() && ties.is_empty() {
        "yes".to_string()
    } else if worse.is_empty() {
        format!("not shown for {} (tied within sampling error)", ties.len())
    } else {
        format!("no ({} worse beyond sampling error)", worse.len())
    };
    let mut line = format!(
        "verdict: every vector code beats the scalar (k=1) code at the same rate: {answer}; of {} vector codes at whole rates, {better} have a lower fresh MSE by more than {tolerance_z:.2} standard errors, {} tie within them, {} are worse",
        compared.len(),
        ties.len(),
        worse.len()
    );
    if no_scalar > 0 {
        line += &format!(" ({no_scalar} at fractional rates have no scalar code to compare)");
    }
    lines.push(line);
    if !ties.is_empty() {
        lines.push(format!("  ties: {}", show(ties)));
    }
    if !worse.is_empty() {
        lines.push(format!("  worse: {}", show(worse)));
    }
    lines
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: usize, mse: f64, registry_mse: f64, scalar_mse: Option<f64>) -> EvalRow {
        let se: f64 = 0.001;
        let z = (mse - registry_mse) / se.hypot(se);
        EvalRow {
            dim: 64,
            k,
            n: 16,
            rate_bits: 1.0,
            mse,
            scalar_mse,
            bound: 0.25,
            gain_db: scalar_mse.map(|s| db(s, mse)),
            gap_db: db(mse, 0.25),
            registry_mse,
            bytes_per_vector: 10,
            compression_honest: 12.8,
            compression_16_over_b: 16.0,
            samples: 1000,
            seed: 7,
            mse_std_error: se,
            scalar_std_error: scalar_mse.map(|_| se),
            registry_test_blocks: 4000,
            registry_std_error: se,
            z_vs_registry: z,
            tolerance_z: 3.0,
            within_tolerance: z.abs() <= 3.0,
        }
    }

    #[test]
    fn verdict_counts_rows_outside_the_tolerance_and_losing_vector_codes() {
        // Within: 1 SE of the difference; outside: 10 SE.
        let rows = [
            row(4, 0.3000, 0.3000 + 0.001414, Some(0.36)),
            row(4, 0.3000, 0.3141, Some(0.36)),
        ];
        let v = verdict(&rows, 3.0);
        assert!(
            v[0].starts_with("verdict: 1 of 2 codebooks within"),
            "{v:?}"
        );
        assert!(v[1].contains("outside: d=64 k=4 N=16"), "{v:?}");
        assert!(v[2].contains("at the same rate: yes"), "{v:?}");
        // A tie (within 3 SE of the scalar code) and a loss (beyond).
        let rows = [
            row(4, 0.3000, 0.3000, Some(0.3012)),
            row(2, 0.3000, 0.3000, Some(0.2500)),
            row(1, 0.2500, 0.2500, Some(0.2500)),
        ];
        let v = verdict(&rows, 3.0);
        assert!(
            v[0].starts_with("verdict: 3 of 3 codebooks within"),
            "{v:?}"
        );
        assert!(v[1].contains(": no (1 worse"), "{v:?}");
        assert!(
            v[1].contains("of 2 vector codes at whole rates, 0 have"),
            "{v:?}"
        );
        assert!(v[2].starts_with("  ties: d=64 k=4"), "{v:?}");
        assert!(v[3].starts_with("  worse: d=64 k=2"), "{v:?}");
    }
}
