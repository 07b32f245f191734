//! `fibquant-gen`: build, verify, list and evaluate FibQuant codebooks; encode and decode `.npy`
//! arrays with them.

use clap::{Parser, Subcommand, ValueEnum};
use fibquant::{registry as embedded, Codec, CodecConfig, NormFormat, RotationKind};
use fibquant_gen::construct::{validate, Params};
use fibquant_gen::error::{Error, IoAction};
use fibquant_gen::lloyd::block_mse;
use fibquant_gen::manifest::{Entry, Manifest};
use fibquant_gen::registry::{self, Registry};
use fibquant_gen::source::{Method, Source};
use fibquant_gen::{codes, npy, plan};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
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

#[derive(clap::Args, Clone)]
struct RegistryArg {
    /// Registry root (holds manifest.toml and codebooks/); defaults to this repository's.
    #[arg(long)]
    registry: Option<PathBuf>,
}

impl RegistryArg {
    fn get(&self) -> Registry {
        Registry::new(
            self.registry
                .clone()
                .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))),
        )
    }
}

#[derive(clap::Args, Clone, Copy)]
struct ParamArgs {
    /// Training samples per codeword (M / N).
    #[arg(long, default_value_t = 30)]
    samples_per_codeword: u32,
    /// Floor on the number of training samples M.
    #[arg(long, default_value_t = 1 << 16)]
    min_training_samples: u32,
    /// Lloyd restarts.
    #[arg(long, default_value_t = 4)]
    restarts: u32,
    /// Lloyd iterations per restart.
    #[arg(long, default_value_t = 25)]
    iterations: u32,
}

impl ParamArgs {
    fn params(&self) -> Params {
        Params {
            samples_per_codeword: self.samples_per_codeword,
            min_training_samples: self.min_training_samples,
            restarts: self.restarts,
            iterations: self.iterations,
            ..Params::default()
        }
    }
}

#[derive(Copy, Clone, ValueEnum)]
enum RotationArg {
    /// Randomized Hadamard (3 rounds) for power-of-two d, dense Haar otherwise.
    Auto,
    /// Randomized Hadamard, 3 rounds (power-of-two d only).
    Hadamard,
    /// Dense Haar rotation.
    Haar,
}

#[derive(Copy, Clone, ValueEnum)]
enum NormArg {
    F16,
    F32,
}

#[derive(Subcommand)]
enum Command {
    /// Build one rate point into the registry (or only write its file into --out).
    Generate {
        #[arg(long)]
        dim: usize,
        #[arg(long)]
        k: usize,
        #[arg(long)]
        n: usize,
        /// Write only the file into this directory; leave the registry alone.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArg,
        #[command(flatten)]
        params: ParamArgs,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild manifest entries whose files do not verify (and, with --plan, add missing points
    /// of the default coverage). With --check, rebuild the selected entries in memory and compare
    /// them byte for byte with the files, writing nothing.
    Regenerate {
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
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every registry file against the manifest; exit non-zero naming each bad file.
    Verify {
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long)]
        json: bool,
    },
    /// Show the registry as a table.
    List {
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long)]
        json: bool,
    },
    /// MSE of embedded codebooks on fresh source samples (one point, or --all).
    Eval {
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
    },
    /// Encode a float32 .npy array of shape (rows, d) into a code file.
    Encode {
        #[arg(long)]
        dim: usize,
        #[arg(long)]
        k: usize,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = RotationArg::Auto)]
        rotation: RotationArg,
        #[arg(long, value_enum, default_value_t = NormArg::F16)]
        norm: NormArg,
        #[arg(long, default_value_t = fibquant::codec::DEFAULT_SEED)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Speed benchmarks: encode/decode per rate (and peers with --features peers), attention on
    /// codes vs decode-then-compute vs fp16 vs f32 over a cache larger than the LLC, parallel
    /// batch encode. Single-threaded except the parallel section; medians over repeats.
    Bench {
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
    },
    /// Decode a code file into a float32 .npy array.
    Decode {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap(),
    );
    pb.set_prefix(what.to_string());
    pb
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Generate {
            dim,
            k,
            n,
            out,
            registry,
            params,
            json,
        } => {
            validate(dim, k, n)?;
            let entry = match out {
                Some(dir) => {
                    let (bytes, entry) = registry::build_file(dim, k, n, params.params())?;
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| Error::io(IoAction::CreateDir, &dir, e))?;
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
        Command::Regenerate {
            registry: reg,
            plan: with_plan,
            force,
            check,
            max_n,
            dim,
            json,
        } => regenerate(&reg.get(), with_plan, force, check, max_n, dim, json),
        Command::Verify {
            registry: reg,
            json,
        } => {
            let (manifest, problems) = registry::verify(&reg.get())?;
            if json {
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
        Command::List {
            registry: reg,
            json,
        } => {
            let manifest = Manifest::read(&reg.get().manifest_path())?;
            list(&manifest, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            dim,
            k,
            n,
            all,
            samples,
            seed,
            json,
        } => {
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
                let v = if all {
                    serde_json::Value::Array(results)
                } else {
                    results.pop().unwrap()
                };
                println!("{}", serde_json::to_string_pretty(&v).unwrap());
            } else {
                print_eval_table(&results, samples, seed);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Encode {
            dim,
            k,
            n,
            input,
            output,
            rotation,
            norm,
            seed,
            json,
        } => {
            let rotation = match rotation {
                RotationArg::Auto => RotationKind::Auto,
                RotationArg::Hadamard => RotationKind::Hadamard {
                    rounds: fibquant::rotation::DEFAULT_HADAMARD_ROUNDS,
                },
                RotationArg::Haar => RotationKind::Haar,
            };
            let norm = match norm {
                NormArg::F16 => NormFormat::F16,
                NormArg::F32 => NormFormat::F32,
            };
            let config = CodecConfig::new(dim, k, n)
                .with_rotation(rotation)
                .with_norm(norm)
                .with_seed(seed);
            let codec = Codec::new(config)?;
            let bytes = std::fs::read(&input).map_err(|e| Error::io(IoAction::Read, &input, e))?;
            let array = npy::parse(&bytes).map_err(|e| e.in_file(&input))?;
            if array.cols != dim {
                return Err(Error::InvalidArgument(format!(
                    "{} has rows of {} values, --dim is {dim}",
                    input.display(),
                    array.cols
                )));
            }
            let mut slots = vec![0u8; array.rows * codec.slot_bytes()];
            codec
                .encode_batch(&array.data, &mut slots)
                .map_err(|e| Error::from(e).in_file(&input))?;
            let file = codes::to_bytes(&codec, array.rows, &slots)?;
            registry::write_atomic(&output, &file)?;
            let mut decoded = vec![0f32; array.data.len()];
            codec.decode_batch(&slots, &mut decoded)?;
            let (mut err, mut total) = (0f64, 0f64);
            for (row, dec) in array.data.chunks(dim).zip(decoded.chunks(dim)) {
                let nsq: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum();
                if nsq > 0.0 {
                    let e: f64 = row
                        .iter()
                        .zip(dec)
                        .map(|(&a, &b)| ((a - b) as f64).powi(2))
                        .sum();
                    err += e / nsq;
                    total += 1.0;
                }
            }
            let nmse = if total > 0.0 { err / total } else { 0.0 };
            let summary = json!({
                "rows": array.rows, "dim": dim, "k": k, "n": n,
                "slot_bytes": codec.slot_bytes(), "file_bytes": file.len(),
                "compression_vs_f16": codec.compression_vs_f16(),
                "normalized_mse": nmse,
            });
            if json {
                println!("{summary}");
            } else {
                println!(
                    "encoded {} rows into {} ({} bytes per row, {:.2}x vs fp16), normalized MSE {:.5}",
                    array.rows,
                    output.display(),
                    codec.slot_bytes(),
                    codec.compression_vs_f16(),
                    nmse
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            repeats,
            quick,
            sections,
            json,
            markdown,
            from_json,
        } => {
            if let Some(path) = from_json {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::io(IoAction::Read, &path, e))?;
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
        Command::Decode { input, output } => {
            let bytes = std::fs::read(&input).map_err(|e| Error::io(IoAction::Read, &input, e))?;
            let file = codes::parse(&bytes).map_err(|e| e.in_file(&input))?;
            let d = file.codec.dim();
            let mut data = vec![0f32; file.rows * d];
            file.codec
                .decode_batch(&file.slots, &mut data)
                .map_err(|e| Error::from(e).in_file(&input))?;
            let array = npy::Array2 {
                rows: file.rows,
                cols: d,
                data,
            };
            registry::write_atomic(&output, &npy::to_bytes(&array))?;
            println!(
                "decoded {} rows of dim {d} into {}",
                file.rows,
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
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

/// 10 log10(a / b).
fn db(a: f64, b: f64) -> f64 {
    10.0 * (a / b).log10()
}

/// Whole rate 1..=4 of `(k, n)`, if any.
fn whole_rate(k: usize, n: usize) -> Option<u32> {
    let b = (n as f64).log2() / k as f64;
    (b.fract() == 0.0 && (1.0..=4.0).contains(&b)).then_some(b as u32)
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

fn eval_point(
    d: usize,
    k: usize,
    n: usize,
    samples: usize,
    seed: u64,
) -> Result<serde_json::Value, Error> {
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
    let bytes = 2 + fibquant::pack::packed_bytes(d / k, fibquant::pack::index_bits(n));
    Ok(json!({
        "dim": d, "k": k, "n": n, "rate_bits": rate, "mse": mse, "scalar_mse": scalar_mse,
        "bound": bound, "gain_db": scalar_mse.map(|s| db(s, mse)), "gap_db": db(mse, bound),
        "registry_mse": reg.mse, "bytes_per_vector": bytes,
        "compression_honest": (2 * d) as f64 / bytes as f64, "compression_16_over_b": 16.0 / rate,
        "samples": samples, "seed": seed,
    }))
}

fn print_eval_table(rows: &[serde_json::Value], samples: usize, seed: u64) {
    println!("MSE on {samples} fresh source blocks (seed {seed}); gain over the k=1 scalar code at the same rate, gap to the 4^-b bound");
    println!(
        "{:>4} {:>2} {:>5} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7}",
        "d", "k", "N", "b", "bytes/vec", "x fp16", "x 16/b", "mse", "scalar", "gain dB", "gap dB"
    );
    for r in rows {
        let f = |key: &str| r[key].as_f64();
        let opt =
            |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>4} {:>2} {:>5} {:>6.3} {:>9} {:>7.2} {:>7.2} {:>8.5} {:>8} {:>8} {:>7.2}",
            r["dim"].as_u64().unwrap(),
            r["k"].as_u64().unwrap(),
            r["n"].as_u64().unwrap(),
            f("rate_bits").unwrap(),
            r["bytes_per_vector"].as_u64().unwrap(),
            f("compression_honest").unwrap(),
            f("compression_16_over_b").unwrap(),
            f("mse").unwrap(),
            opt(f("scalar_mse"), 5),
            opt(f("gain_db").filter(|_| r["k"].as_u64() != Some(1)), 2),
            f("gap_db").unwrap(),
        );
    }
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
