//! `fibquant-gen bench`: runs the sections of [`fibquant_gen::bench`] and prints them as text,
//! JSON or the README's markdown tables (also from a saved JSON report).

use fibquant_gen::error::{Error, IoAction};
use serde_json::json;
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
    /// Which sections: any of codec, attention, parallel (comma-separated).
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
        let report: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::BenchReport {
                path: path.clone(),
                source: Some(e),
            })?;
        let Some(report) = report.as_object().filter(|r| r.contains_key("kernels")) else {
            return Err(Error::BenchReport { path, source: None });
        };
        print!("{}", fibquant_gen::bench_report::markdown(report));
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
    use fibquant_gen::bench;
    let want = |name: &str| sections.split(',').any(|x| x.trim() == name);
    let mut report = serde_json::Map::new();
    report.insert(
        "kernels".into(),
        json!(format!("{:?}", fibquant::kernels::detect())),
    );
    report.insert("repeats".into(), json!(s.repeats));
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
                    r["dim"].as_u64().unwrap(),
                    r["rate_bits"].as_f64().unwrap(),
                    r["impl"].as_str().unwrap(),
                    r["bytes_per_vector"].as_u64().unwrap(),
                    r["encode_ns"].as_f64().unwrap(),
                    r["decode_ns"].as_f64().unwrap(),
                    r["mse"].as_f64().unwrap()
                );
            }
        }
        report.insert("codec".into(), json!(rows));
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
                println!(
                    "{:>4} {:>2} {:>6} {:>6} {:>14.0} {:>10.0} {:>7.1}x {:>10.5} {:>8.3}{}",
                    r["dim"].as_u64().unwrap(),
                    r["k"].as_u64().unwrap(),
                    r["n"].as_u64().unwrap(),
                    r["probes"].as_u64().unwrap(),
                    r["exhaustive_ns_per_block"].as_f64().unwrap(),
                    r["ivf_ns_per_block"].as_f64().unwrap(),
                    r["speedup"].as_f64().unwrap(),
                    r["mse_ivf"].as_f64().unwrap(),
                    r["loss_db"].as_f64().unwrap(),
                    if r["default"] == true {
                        "  (default)"
                    } else {
                        ""
                    }
                );
            }
        }
        report.insert("fast_encoder".into(), json!(rows));
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
                    r["dim"].as_u64().unwrap(),
                    r["k"].as_u64().unwrap(),
                    r["n"].as_u64().unwrap(),
                    r["cells"].as_u64().unwrap(),
                    r["exhaustive_ns_per_block"].as_f64().unwrap(),
                    r["balls_ns_per_block"].as_f64().unwrap(),
                    r["speedup"].as_f64().unwrap(),
                    r["identical"]
                );
            }
        }
        report.insert("exact_search".into(), json!(rows));
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
        report.insert("attention".into(), json!(all));
    }
    if want("parallel") {
        let rows = bench::parallel_encode(s);
        if !json {
            println!("\n## batch encode, d = 128: one thread vs all cores (parallel feature)");
            for r in &rows {
                println!(
                    "k={} N={}: {:.0} vec/s single, {:.0} vec/s on {} threads ({:.2}x)",
                    r["k"],
                    r["n"],
                    r["single_vectors_per_second"].as_f64().unwrap(),
                    r["parallel_vectors_per_second"].as_f64().unwrap(),
                    r["threads"],
                    r["speedup"].as_f64().unwrap()
                );
            }
        }
        report.insert("parallel".into(), json!(rows));
    }
    if markdown {
        print!("{}", fibquant_gen::bench_report::markdown(&report));
    } else if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the attention rows of one head dimension as text (the `bench` default output).
fn print_attention(d: usize, rows: &[serde_json::Value]) {
    println!("\n## attention, one decode step over all heads, d = {d}, single thread");
    for r in rows {
        if r["section"] == "memcpy" {
            println!(
                "memcpy: {:.2} GB/s ({} MiB buffer)",
                r["bytes_per_second"].as_f64().unwrap() / 1e9,
                r["buffer_bytes"].as_u64().unwrap() >> 20
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
        println!(
            "{:>6} {:>5} {:<22} {:<26} {:>10.2} {:>8.2} {:>9.2} {:>6.0}% {:>8}",
            r["context"].as_u64().unwrap(),
            r["heads"].as_u64().unwrap(),
            r["method"].as_str().unwrap(),
            r["code"].as_str().unwrap(),
            r["step_ms"].as_f64().unwrap(),
            r["ns_per_key"].as_f64().unwrap(),
            r["bytes_per_second"].as_f64().unwrap() / 1e9,
            100.0 * r["fraction_of_memcpy"].as_f64().unwrap(),
            r.get("vs_fp16")
                .and_then(|v| v.as_f64())
                .map_or(String::new(), |v| format!("{v:.2}x"))
        );
    }
}
