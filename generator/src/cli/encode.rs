//! `fibquant-gen encode`: a float32 (or float64) `.npy` array of shape (rows, d) into a code
//! file, with a registry code (`--bits`, or `--k/--n`) or a codebook file (`--codebook`).

use super::resolve_code;
use clap::{ArgGroup, ValueEnum};
use fibquant::{Codec, CodecConfig, NormFormat, RotationKind};
use fibquant_gen::codes::{self, CodebookFile};
use fibquant_gen::error::{Error, IoAction};
use fibquant_gen::{npy, registry};
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
    /// Half-precision norm, 2 bytes per row (up to 65504).
    F16,
    /// Single-precision norm, 4 bytes per row.
    F32,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("code").required(true).args(["bits", "k", "codebook"])))]
pub struct Args {
    /// Head dimension d: values per row of the input (implied by --codebook).
    #[arg(long, required_unless_present = "codebook")]
    dim: Option<usize>,
    /// Bits per coordinate (4, 3, 2, 1, 0.5, ...): the registry's lowest-MSE code for --dim at
    /// that rate, as `CodecConfig::preset` chooses it.
    #[arg(long)]
    bits: Option<f64>,
    /// Block size k of an exact registry code (with --n, instead of --bits).
    #[arg(long, requires = "n")]
    k: Option<usize>,
    /// Codebook size N of an exact registry code (with --k, instead of --bits).
    #[arg(long, requires = "k")]
    n: Option<usize>,
    /// A codebook file (.fqcb.zst, e.g. from `fibquant-gen generate --out`) instead of an
    /// embedded one; `decode` then needs the same --codebook.
    #[arg(long, value_name = "PATH")]
    codebook: Option<PathBuf>,
    /// Input .npy array of shape (rows, d), float32 (float64 is converted, with a note).
    #[arg(long)]
    input: PathBuf,
    /// Code file to write (replaced atomically; never one of the inputs).
    #[arg(long)]
    output: PathBuf,
    /// Rotation applied before quantization.
    #[arg(long, value_enum, default_value_t = RotationArg::Auto)]
    rotation: RotationArg,
    /// Format of the per-row norm.
    #[arg(long, value_enum, default_value_t = NormArg::F16)]
    norm: NormArg,
    /// Seed of the rotation (stored in the code file).
    #[arg(long, default_value_t = fibquant::codec::DEFAULT_SEED)]
    seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Encodes, writes the code file, and reports its size and the normalized MSE of the rows.
pub fn run(a: Args) -> Result<ExitCode, Error> {
    let Args {
        dim,
        bits,
        k,
        n,
        codebook,
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
    let mut inputs = vec![input.as_path()];
    if let Some(path) = &codebook {
        inputs.push(path);
    }
    registry::refuse_overwriting_inputs(&output, &inputs)?;
    let file = codebook.as_deref().map(CodebookFile::read).transpose()?;
    let (dim, k, n, tag) = match &file {
        Some(f) => {
            let c = &f.codebook;
            if let Some(d) = dim.filter(|&d| d != c.dim()) {
                return Err(Error::InvalidArgument(format!(
                    "--dim is {d}, --codebook {} is for dim {}",
                    f.path.display(),
                    c.dim()
                )));
            }
            (c.dim(), c.k(), c.n(), f.tag)
        }
        None => {
            // clap requires --dim without --codebook.
            let dim = dim.ok_or_else(|| Error::InvalidArgument("--dim is required".into()))?;
            let (k, n) = resolve_code(dim, bits, k, n)?;
            (dim, k, n, codes::embedded_tag(dim, k, n)?)
        }
    };
    let config = CodecConfig::new(dim, k, n)
        .with_rotation(rotation)
        .with_norm(norm)
        .with_seed(seed);
    let codec = match &file {
        Some(f) => Codec::with_codebook(config, f.codebook.clone())?,
        None => Codec::new(config)?,
    };
    let bytes = std::fs::read(&input).map_err(|e| Error::io(IoAction::Read, &input, e))?;
    let (array, dtype) = npy::parse_any(&bytes).map_err(|e| e.in_file(&input))?;
    if dtype == npy::Dtype::F64 {
        eprintln!(
            "note: {} holds float64 values; converted to float32 (the encoder's input type) before encoding",
            input.display()
        );
    }
    if array.cols != dim {
        return Err(Error::InvalidArgument(format!(
            "{} has rows of {} values, --dim is {dim}",
            input.display(),
            array.cols
        )));
    }
    let slot_total = array.rows.checked_mul(codec.slot_bytes()).ok_or_else(|| {
        Error::InvalidArgument(format!("{} rows of codes overflow memory", array.rows))
    })?;
    let mut slots = vec![0u8; slot_total];
    codec
        .encode_batch(&array.data, &mut slots)
        .map_err(|e| Error::from(e).in_file(&input))?;
    let file_bytes = codes::to_bytes(&codec, array.rows, &slots, tag)?;
    registry::write_atomic(&output, &file_bytes)?;
    let mut decoded = vec![0f32; array.data.len()];
    codec.decode_batch(&slots, &mut decoded)?;
    let nmse = normalized_mse(&array.data, &decoded, dim);
    let summary = json!({
        "rows": array.rows, "dim": dim, "k": k, "n": n,
        "slot_bytes": codec.slot_bytes(), "file_bytes": file_bytes.len(),
        "compression_vs_f16": codec.compression_vs_f16(),
        "normalized_mse": nmse,
        "input_dtype": match dtype { npy::Dtype::F32 => "float32", npy::Dtype::F64 => "float64" },
        "codebook": codebook.as_ref().map(|p| p.display().to_string()),
    });
    if json {
        println!("{summary}");
    } else {
        println!(
            "encoded {} rows with k={k} N={n} into {} ({} bytes per row, {:.2}x vs fp16), normalized MSE {:.5}",
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
