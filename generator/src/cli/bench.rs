//! `fibquant-gen bench`: runs the sections of [`fibquant_gen::bench`] and prints them as text,
//! JSON or the README's markdown tables (also from a saved JSON report).

use fibquant_gen::bench::{self, AttentionRow, FastEncoderRow, Report};
use fibquant_gen::error::{Error, IoAction};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Repeats per measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Smaller working sets and fewer repeats (a smoke run, not for the README).
    #[arg(long)]
    quick: bool,
    /// Which sections: any of codec, fast-encoder, attention, parallel (comma-separated).
    #[arg(long, default_value = "codec,fast-encoder,attention,parallel")]
    sections: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Print the README's markdown tables (and the targets checked) instead of text.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Render the markdown tables from a report saved by `bench --json` instead of measuring
    /// (for example one measured on another machine).
    #[arg(long, requires = "markdown")]
    from_json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode, Error> {
    let Args {
        repeats,
        quick,
        sections,
        json,
        markdown,
        from_json,
    } = a;
    if let Some(path) = from_json {
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io(IoAction::Read, &path, e))?;
        let not_a_report = |source| Error::BenchReport {
            path: path.clone(),
            source,
        };
        // JSON first, then the check for a report object, then its typed rows.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| not_a_report(Some(e)))?;
        if !value.as_object().is_some_and(|r| r.contains_key("kernels")) {
            return Err(not_a_report(None));
        }
        let report: Report = serde_json::from_value(value).map_err(|e| not_a_report(Some(e)))?;
        print!("{}", fibquant_gen::bench_report::markdown(&report));
        return Ok(ExitCode::SUCCESS);
    }
    let mut settings = fibquant_gen::bench::Settings {
        repeats: repeats.max(1),
        ..Default::default()
    };
    if quick {
        settings.repeats = settings.repeats.min(2);
        settings.vectors = 512;
        settings.attention_bytes = 1 << 26;
        settings.contexts = [1024, 4096];
    }
    run_bench(&settings, &sections, json, markdown)
}

fn run_bench(
    s: &fibquant_gen::bench::Settings,
    sections: &str,
    json: bool,
    markdown: bool,
) -> Result<ExitCode, Error> {
    // Markdown is printed from the full report at the end, like JSON.
    let json = json || markdown;
    let want = |name: &str| sections.split(',').any(|x| x.trim() == name);
    let mut report = Report {
        kernels: format!("{:?}", fibquant::kernels::detect()),
        repeats: s.repeats,
        ..Report::default()
    };
    if want("codec") {
        let rows = bench::encode_decode(s);
        if !json {
            println!("## encode / decode, single thread, ns per vector (median of {} runs of {} vectors)", s.repeats, s.vectors);
            println!(
                "{:>4} {:>5} {:<28} {:>6} {:>10} {:>10} {:>8}",
                "d", "b", "implementation", "bytes", "encode ns", "decode ns", "mse"
            );
            for r in &rows {
                println!(
                    "{:>4} {:>5} {:<28} {:>6} {:>10.0} {:>10.0} {:>8.5}",
                    r.dim,
                    r.rate_bits,
                    r.implementation,
                    r.bytes_per_vector,
                    r.encode_ns,
                    r.decode_ns,
                    r.mse
                );
            }
        }
        report.codec = Some(rows);
    }
    if want("fast-encoder") {
        let rows = bench::fast_encoder(s);
        if !json {
            println!("\n## fast encoder (inverted file) vs exhaustive search, same source blocks, single thread");
            println!(
                "{:>4} {:>2} {:>6} {:>6} {:>14} {:>10} {:>8} {:>10} {:>8}",
                "d", "k", "N", "probes", "exhaustive ns", "ivf ns", "speedup", "mse", "loss dB"
            );
            for r in &rows {
                // The default encoder's row goes in the same columns, its time under "ivf ns".
                let (d, k, n, probes, exhaustive, ns, speedup, mse, loss, note) = match r {
                    FastEncoderRow::Ivf(r) => (
                        r.dim,
                        r.k,
                        r.n,
                        r.probes.to_string(),
                        r.exhaustive_ns_per_block,
                        r.ivf_ns_per_block,
                        r.speedup,
                        r.mse_ivf,
                        r.loss_db,
                        if r.default { "  (default)" } else { "" },
                    ),
                    FastEncoderRow::Encoder(r) => (
                        r.dim,
                        r.k,
                        r.n,
                        r.probes.map_or("-".into(), |p| p.to_string()),
                        r.exhaustive_ns_per_block,
                        r.encoder_ns_per_block,
                        r.speedup,
                        r.mse_encoder,
                        r.loss_db,
                        "  (default encoder)",
                    ),
                };
                println!(
                    "{d:>4} {k:>2} {n:>6} {probes:>6} {exhaustive:>14.0} {ns:>10.0} {speedup:>7.1}x {mse:>10.5} {loss:>8.3}{note}"
                );
            }
        }
        report.fast_encoder = Some(rows);
        let rows = bench::exact_search(s);
        if !json {
            println!("\n## exact ball-pruned search vs exhaustive search, same source blocks, single thread");
            println!(
                "{:>4} {:>2} {:>6} {:>6} {:>14} {:>10} {:>8} {:>10}",
                "d", "k", "N", "cells", "exhaustive ns", "balls ns", "speedup", "identical"
            );
            for r in &rows {
                println!(
                    "{:>4} {:>2} {:>6} {:>6} {:>14.0} {:>10.0} {:>7.1}x {:>10}",
                    r.dim,
                    r.k,
                    r.n,
                    r.cells,
                    r.exhaustive_ns_per_block,
                    r.balls_ns_per_block,
                    r.speedup,
                    r.identical
                );
            }
        }
        report.exact_search = Some(rows);
    }
    if want("attention") {
        let mut all = Vec::new();
        for d in [64, 128] {
            let rows = bench::attention(s, d);
            if !json {
                print_attention(d, &rows);
            }
            all.extend(rows);
        }
        report.attention = Some(all);
    }
    if want("parallel") {
        let rows = bench::parallel_encode(s);
        if !json {
            println!("\n## batch encode, d = 128: one thread vs all cores (parallel feature)");
            for r in &rows {
                println!(
                    "k={} N={}: {:.0} vec/s single, {:.0} vec/s on {} threads ({:.2}x)",
                    r.k,
                    r.n,
                    r.single_vectors_per_second,
                    r.parallel_vectors_per_second,
                    r.threads,
                    r.speedup
                );
            }
        }
        report.parallel = Some(rows);
    }
    if markdown {
        print!("{}", fibquant_gen::bench_report::markdown(&report));
    } else if json {
        // Through a `Value`, whose keys are sorted, as in the saved reports.
        let value = serde_json::to_value(&report).unwrap();
        println!("{}", serde_json::to_string_pretty(&value).unwrap());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the attention rows of one head dimension as text (the `bench` default output).
fn print_attention(d: usize, rows: &[AttentionRow]) {
    println!("\n## attention, one decode step over all heads, d = {d}, single thread");
    for r in rows {
        let r = match r {
            AttentionRow::Memcpy(m) => {
                println!(
                    "memcpy: {:.2} GB/s ({} MiB buffer)",
                    m.bytes_per_second / 1e9,
                    m.buffer_bytes >> 20
                );
                println!(
                    "{:>6} {:>5} {:<22} {:<26} {:>10} {:>8} {:>9} {:>7} {:>8}",
                    "n",
                    "heads",
                    "method",
                    "code",
                    "step ms",
                    "ns/key",
                    "GB/s read",
                    "memcpy",
                    "vs fp16"
                );
                continue;
            }
            AttentionRow::Step(r) => r,
        };
        println!(
            "{:>6} {:>5} {:<22} {:<26} {:>10.2} {:>8.2} {:>9.2} {:>6.0}% {:>8}",
            r.context,
            r.heads,
            r.method,
            r.code,
            r.step_ms,
            r.ns_per_key,
            r.bytes_per_second / 1e9,
            100.0 * r.fraction_of_memcpy,
            r.vs_fp16.map_or(String::new(), |v| format!("{v:.2}x"))
        );
    }
}
