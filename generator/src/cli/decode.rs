//! `fibquant-gen decode`: a code file back into a float32 `.npy` array.

use fibquant_gen::error::{Error, IoAction};
use fibquant_gen::{codes, npy, registry};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
}

pub fn run(Args { input, output }: Args) -> Result<ExitCode, Error> {
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
