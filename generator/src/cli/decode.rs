//! `fibquant-gen decode`: a code file back into a float32 `.npy` array.

use fibquant_gen::codes::{self, CodebookFile};
use fibquant_gen::error::{Error, IoAction};
use fibquant_gen::{npy, registry};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Code file written by `fibquant-gen encode` (its header names the code).
    #[arg(long)]
    input: PathBuf,
    /// .npy file to write, float32 of shape (rows, d) (replaced atomically; never the input).
    #[arg(long)]
    output: PathBuf,
    /// The codebook file (.fqcb.zst) the input was encoded with, if it was encoded with
    /// `encode --codebook`; by default the embedded codebook of the header's code. A codebook
    /// other than the one the header names is refused.
    #[arg(long, value_name = "PATH")]
    codebook: Option<PathBuf>,
}

pub fn run(
    Args {
        input,
        output,
        codebook,
    }: Args,
) -> Result<ExitCode, Error> {
    let mut inputs = vec![input.as_path()];
    if let Some(path) = &codebook {
        inputs.push(path);
    }
    registry::refuse_overwriting_inputs(&output, &inputs)?;
    let codebook = codebook.as_deref().map(CodebookFile::read).transpose()?;
    let bytes = std::fs::read(&input).map_err(|e| Error::io(IoAction::Read, &input, e))?;
    let file = codes::parse(&bytes, codebook.as_ref()).map_err(|e| e.in_file(&input))?;
    let d = file.codec.dim();
    let total = file
        .rows
        .checked_mul(d)
        .ok_or_else(|| Error::CodeFile(format!("{} rows of dim {d} overflow", file.rows)))?;
    let mut data = vec![0f32; total];
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
