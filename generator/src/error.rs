//! The generator's error type: what failed, with the file or value concerned, so that the command
//! line can print one line and callers can tell an unreadable file from a bad argument.

use std::fmt;
use std::path::{Path, PathBuf};

/// `Result` with the generator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an I/O operation on a path was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    /// Reading a file.
    Read,
    /// Reading the registry manifest.
    ReadManifest,
    /// Writing a file.
    Write,
    /// Renaming a freshly written file onto its final path.
    Rename,
    /// Creating a directory.
    CreateDir,
}

/// Errors of the generator, its file formats and its command line.
#[derive(Debug)]
pub enum Error {
    /// An I/O operation on `path` failed.
    Io {
        /// What was being done.
        action: IoAction,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `manifest.toml` is not valid TOML for a manifest.
    ManifestParse {
        /// The manifest's path.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// The manifest could not be serialized to TOML.
    ManifestWrite(toml::ser::Error),
    /// The runtime refused a codebook, codec configuration or input.
    Codebook(fibquant::Error),
    /// zstd compression of a codebook file failed.
    Compression(std::io::Error),
    /// A `.npy` file is malformed or holds an unsupported array.
    Npy(String),
    /// A code file (`fibquant-gen encode` output) is malformed or was written with another
    /// codebook.
    CodeFile(String),
    /// A rate point, flag or parameter is out of range.
    InvalidArgument(String),
    /// A construction could not complete.
    Construction(String),
    /// No embedded codebook has this `(dim, k, n)`; the message lists the codes that exist for
    /// `dim` (or the head dims that have codes).
    UnknownCode {
        /// Head dimension asked for.
        dim: usize,
        /// Block size asked for.
        k: usize,
        /// Codebook size asked for.
        n: usize,
    },
    /// No embedded codebook for `dim` stores `bits` bits per coordinate.
    UnknownBits {
        /// Head dimension asked for.
        dim: usize,
        /// Bits per coordinate asked for.
        bits: f64,
    },
    /// A manifest entry is structurally invalid (its values could not describe a codebook).
    ManifestInvalid {
        /// The manifest's path.
        path: PathBuf,
        /// Position of the entry (0-based) in the manifest.
        index: usize,
        /// What is wrong.
        what: String,
    },
    /// A command would overwrite one of its own inputs.
    SameFile {
        /// The output path given.
        output: PathBuf,
        /// The input it resolves to.
        input: PathBuf,
    },
    /// A file given to `bench --from-json` is not a saved bench report.
    BenchReport {
        /// The file's path.
        path: PathBuf,
        /// The JSON error, when the file does not parse at all.
        source: Option<serde_json::Error>,
    },
    /// An error about the contents of the file at `path`.
    InFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<Error>,
    },
}

impl Error {
    /// An I/O error of `action` on `path`.
    pub fn io(action: IoAction, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// This error, said of the file at `path`.
    pub fn in_file(self, path: &Path) -> Error {
        Error::InFile {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                action,
                path,
                source,
            } => {
                let path = path.display();
                match action {
                    IoAction::Read => write!(f, "cannot read {path}: {source}"),
                    IoAction::ReadManifest => write!(f, "cannot read manifest {path}: {source}"),
                    IoAction::Write => write!(f, "cannot write {path}: {source}"),
                    IoAction::Rename => write!(f, "cannot move {path} into place: {source}"),
                    IoAction::CreateDir => write!(f, "cannot create {path}: {source}"),
                }
            }
            Error::ManifestParse { path, source } => {
                write!(f, "manifest {} is malformed: {source}", path.display())
            }
            Error::ManifestWrite(e) => write!(f, "cannot serialize the manifest: {e}"),
            Error::Codebook(e) => write!(f, "{e}"),
            Error::Compression(e) => write!(f, "zstd compression failed: {e}"),
            Error::Npy(msg)
            | Error::CodeFile(msg)
            | Error::InvalidArgument(msg)
            | Error::Construction(msg) => f.write_str(msg),
            Error::UnknownCode { dim, k, n } => {
                write!(f, "no embedded codebook for dim={dim} k={k} n={n}; ")?;
                write_available(f, *dim)
            }
            Error::UnknownBits { dim, bits } => {
                write!(f, "no embedded codebook for dim={dim} at {bits} bits per coordinate; ")?;
                write_available(f, *dim)
            }
            Error::ManifestInvalid { path, index, what } => write!(
                f,
                "manifest {} is invalid: entry {} ([[codebook]] number {}): {what}",
                path.display(),
                index,
                index + 1
            ),
            Error::SameFile { output, input } => write!(
                f,
                "--output {} is the input file {}; refusing to overwrite an input (choose another output path)",
                output.display(),
                input.display()
            ),
            Error::BenchReport { path, source } => {
                write!(f, "{} is not a bench --json report", path.display())?;
                match source {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            Error::InFile { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Compression(source) => Some(source),
            Error::ManifestParse { source, .. } => Some(source),
            Error::ManifestWrite(e) => Some(e),
            Error::Codebook(e) => Some(e),
            Error::BenchReport { source, .. } => source.as_ref().map(|e| e as _),
            Error::InFile { source, .. } => Some(source.as_ref()),
            Error::Npy(_)
            | Error::CodeFile(_)
            | Error::InvalidArgument(_)
            | Error::Construction(_)
            | Error::UnknownCode { .. }
            | Error::UnknownBits { .. }
            | Error::ManifestInvalid { .. }
            | Error::SameFile { .. } => None,
        }
    }
}

impl From<fibquant::Error> for Error {
    fn from(e: fibquant::Error) -> Error {
        match e {
            // The runtime's message points to manifest.toml; this one lists what exists.
            fibquant::Error::UnknownRate { dim, k, n } => Error::UnknownCode { dim, k, n },
            e => Error::Codebook(e),
        }
    }
}

/// Writes the embedded codes of head dim `dim` grouped by stored bits per coordinate, or the
/// head dims that have codes when `dim` has none, and where to see them all.
fn write_available(f: &mut fmt::Formatter<'_>, dim: usize) -> fmt::Result {
    let mut codes: Vec<_> = fibquant::registry::entries()
        .filter(|e| e.dim == dim)
        .collect();
    if codes.is_empty() {
        let mut dims: Vec<usize> = fibquant::registry::entries().map(|e| e.dim).collect();
        dims.sort_unstable();
        dims.dedup();
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        return write!(
            f,
            "no codes exist for head dim {dim} (head dims with codes: {}); run `fibquant-gen list` to see them",
            dims.join(", ")
        );
    }
    codes.sort_by(|a, b| {
        a.stored_bits()
            .total_cmp(&b.stored_bits())
            .then((a.k, a.n).cmp(&(b.k, b.n)))
    });
    write!(
        f,
        "run `fibquant-gen list` for the table. Codes for dim {dim} (--bits B picks the lowest-MSE one at B bits; --k/--n pick one exactly):"
    )?;
    let mut i = 0;
    while i < codes.len() {
        let bits = codes[i].stored_bits();
        let same: Vec<String> = codes[i..]
            .iter()
            .take_while(|e| e.stored_bits() == bits)
            .map(|e| format!("k={} N={}", e.k, e.n))
            .collect();
        write!(f, "\n  {bits} bits: {}", same.join(", "))?;
        i += same.len();
    }
    Ok(())
}
