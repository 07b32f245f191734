//! `fibquant-cuda-bench`: decode attention on codes against fp16 on one GPU, written as JSON.
//!
//! For every head dim, GQA group, code (fp16 and the GPU codes at 1 to 4 bits), context and
//! batch: one decode step (prepare, attend, combine) on synthetic caches of 8 kv heads laid out
//! as the cache's default policy stores them (4 fp16 sinks, keys centered per block of `d`
//! with their rows waiting for a block in fp16, key scales, values coded as they arrive). The
//! time is the median over rounds of the mean over back-to-back steps (CUDA events); bytes are
//! the cache bytes a step reads. The copy bandwidth (device-to-device, read + write) is the
//! ceiling the reads are compared to.

use clap::Parser;
use fibquant::{Codec, CodecConfig, SideCode};
use fibquant_cuda::gpu::Gpu;
use fibquant_cuda::layout::{rotation_matrix, HeadCounts};
use fibquant_cuda::plan::gpu_code;
use fibquant_cuda::source::{DecodeConfig, SideFormat};
use serde::Serialize;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Decode attention on FibQuant codes against fp16 on the GPU, as JSON")]
struct Args {
    /// Where to write the JSON.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Contexts (positions per sequence).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,8192,16384,32768,65536,131072"
    )]
    contexts: Vec<usize>,
    /// Sequences per step.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
    batches: Vec<usize>,
    /// Head dims.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    dims: Vec<usize>,
    /// Query heads per kv head.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    groups: Vec<usize>,
    /// Code rates (0 = fp16).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4")]
    bits: Vec<f64>,
    /// Kv heads per sequence.
    #[arg(long, default_value_t = 8)]
    kv_heads: usize,
    /// Timing rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(Serialize)]
struct Row {
    dim: usize,
    group: usize,
    kv_heads: usize,
    batch: usize,
    context: usize,
    code: String,
    bits: f64,
    us_per_step: f64,
    cache_bytes: usize,
    bytes_per_s: f64,
    fraction_of_copy: f64,
    speedup_vs_fp16: Option<f64>,
    splits: usize,
}

#[derive(Serialize)]
struct Report {
    device: String,
    copy_bandwidth_bytes_per_s: f64,
    seconds: f64,
    rows: Vec<Row>,
}

fn side(d: usize, bits: f64, center: bool) -> Option<(SideFormat, Codec)> {
    if bits == 0.0 {
        return None;
    }
    let Some(SideCode::Code { k, n }) = gpu_code(d, bits) else {
        panic!("no GPU code at {bits} bits for d = {d}");
    };
    let codec = Codec::new(CodecConfig::new(d, k, n)).expect("a registry code");
    Some((SideFormat::of(&codec, center), codec))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    let gpu = Gpu::new(0)?;
    let copy = gpu.copy_bandwidth(1 << 30, 20)?;
    eprintln!("{}; copy bandwidth {:.0} GB/s", gpu.describe(), copy / 1e9);
    let mut rows = Vec::new();
    for &d in &args.dims {
        for &group in &args.groups {
            for &ctx in &args.contexts {
                let mut fp16_us: Vec<(usize, f64)> = Vec::new();
                for &bits in &args.bits {
                    let key = side(d, bits, true);
                    let value = side(d, bits, false);
                    let config = DecodeConfig {
                        dim: d,
                        group,
                        key: key.as_ref().map(|k| k.0),
                        value: value.as_ref().map(|v| v.0),
                    };
                    let tables = [
                        key.as_ref()
                            .map(|k| rotation_matrix(&k.1))
                            .unwrap_or_default(),
                        value
                            .as_ref()
                            .map(|v| rotation_matrix(&v.1))
                            .unwrap_or_default(),
                        key.as_ref()
                            .map(|k| k.1.codebook().codewords().to_vec())
                            .unwrap_or_default(),
                        value
                            .as_ref()
                            .map(|v| v.1.codebook().codewords().to_vec())
                            .unwrap_or_default(),
                    ];
                    let sinks = 4;
                    let after = ctx - sinks;
                    let counts = if bits == 0.0 {
                        HeadCounts {
                            len: ctx,
                            sinks,
                            coded: [0, 0],
                            blocks: [0, 0],
                            scaled: false,
                        }
                    } else {
                        let kc = after - after % d;
                        HeadCounts {
                            len: ctx,
                            sinks,
                            coded: [kc, after],
                            blocks: [kc / d, 0],
                            scaled: true,
                        }
                    };
                    match gpu.attend_resources(&config) {
                        Ok((regs, local, shared)) => eprintln!(
                            "attend d {d} g {group} bits {bits}: {regs} registers, {local} spilled bytes, {shared} shared bytes"
                        ),
                        Err(e) => eprintln!("attend d {d} g {group} bits {bits}: {e}"),
                    }
                    for &batch in &args.batches {
                        let mut dev = match gpu.synthetic(
                            config,
                            batch,
                            args.kv_heads,
                            counts,
                            d,
                            tables.clone(),
                            7,
                        ) {
                            Ok(dev) => dev,
                            Err(e) => {
                                eprintln!(
                                    "skip d {d} g {group} ctx {ctx} b {batch} bits {bits}: {e}"
                                );
                                continue;
                            }
                        };
                        let q: Vec<f32> = (0..dev.query_len())
                            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                            .collect();
                        let qd = gpu.stream().clone_htod(&q)?;
                        let mut out = gpu.stream().alloc_zeros::<f32>(q.len())?;
                        let warm =
                            gpu.time_us(1, 3, || gpu.decode_on_device(&mut dev, &qd, &mut out))?;
                        let calls = ((20_000.0 / warm).ceil() as usize).clamp(3, 500);
                        let us = gpu.time_us(args.rounds, calls, || {
                            gpu.decode_on_device(&mut dev, &qd, &mut out)
                        })?;
                        let check = gpu.stream().clone_dtoh(&out)?;
                        if check.iter().any(|v| !v.is_finite()) {
                            return Err(format!("non-finite output at d {d} g {group} ctx {ctx} b {batch} bits {bits}").into());
                        }
                        if bits == 0.0 {
                            fp16_us.push((batch, us));
                        }
                        let bytes = dev.cache_bytes();
                        let bps = bytes as f64 / (us * 1e-6);
                        let code = match &key {
                            None => "fp16".to_string(),
                            Some((f, _)) => format!("k{} N{}", f.k, f.n),
                        };
                        let speedup = fp16_us
                            .iter()
                            .find(|(b, _)| *b == batch)
                            .map(|(_, f)| f / us);
                        eprintln!(
                            "d {d:3} g {group} ctx {ctx:6} b {batch:2} {code:>10}: {us:9.1} us, {:6.0} GB/s ({:4.0}% of copy), x{:.2} vs fp16",
                            bps / 1e9,
                            100.0 * bps / copy,
                            speedup.unwrap_or(f64::NAN)
                        );
                        rows.push(Row {
                            dim: d,
                            group,
                            kv_heads: args.kv_heads,
                            batch,
                            context: ctx,
                            code,
                            bits,
                            us_per_step: us,
                            cache_bytes: bytes,
                            bytes_per_s: bps,
                            fraction_of_copy: bps / copy,
                            speedup_vs_fp16: speedup,
                            splits: dev.plan().splits,
                        });
                    }
                }
            }
        }
    }
    let report = Report {
        device: gpu.describe(),
        copy_bandwidth_bytes_per_s: copy,
        seconds: started.elapsed().as_secs_f64(),
        rows,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {} ({:.0} s)", args.out.display(), report.seconds);
    Ok(())
}
