//! `fibquant-gen encode`: a float32 `.npy` array of shape (rows, d) into a code file.

use clap::ValueEnum;
use fibquant::{Codec, CodecConfig, NormFormat, RotationKind};
use fibquant_gen::error::{Error, IoAction};
use fibquant_gen::{codes, npy, registry};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

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

#[derive(clap::Args)]
pub struct Args {
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
}

/// Encodes, writes the code file, and reports its size and the normalized MSE of the rows.
pub fn run(a: Args) -> Result<ExitCode, Error> {
    let Args {
        dim,
        k,
        n,
        input,
        output,
        rotation,
        norm,
        seed,
        json,
    } = a;
    let rotation = match rotation {
        RotationArg::Auto => RotationKind::Auto,
        RotationArg::Hadamard => RotationKind::Hadamard {
            rounds: fibquant::codec::rotation::DEFAULT_HADAMARD_ROUNDS,
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
    let nmse = normalized_mse(&array.data, &decoded, dim);
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

/// Mean over the nonzero rows of `||x - y||^2 / ||x||^2` (0 when every row is zero).
fn normalized_mse(x: &[f32], y: &[f32], dim: usize) -> f64 {
    let (mut err, mut total) = (0f64, 0f64);
    for (row, dec) in x.chunks(dim).zip(y.chunks(dim)) {
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
    if total > 0.0 {
        err / total
    } else {
        0.0
    }
}
