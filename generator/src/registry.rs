//! Codebook files on disk: writing them (zstd-compressed, checksummed), verifying a registry
//! directory against its manifest, and rebuilding entries.

use crate::construct::{build, Built, Params};
use crate::error::{Error, IoAction, Result};
use crate::manifest::{Entry, Manifest};
use crate::plan::file_name;
use fibquant::codebook::{Codebook, Construction};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// zstd level of codebook files. Fixed: together with the pinned zstd version it makes files
/// byte-for-byte reproducible.
pub const ZSTD_LEVEL: i32 = 19;

/// Paths of a registry rooted at a directory holding `manifest.toml` and `codebooks/`.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Root directory.
    pub root: PathBuf,
}

impl Registry {
    /// The registry at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Registry {
        Registry { root: root.into() }
    }
    /// `root/manifest.toml`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.toml")
    }
    /// `root/codebooks`.
    pub fn codebook_dir(&self) -> PathBuf {
        self.root.join("codebooks")
    }
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory (created new, named
/// after the target and this process, synced) and a rename, so a failed or interrupted run never
/// leaves a partial file at `path`; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::io(
                IoAction::Write,
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
            )
        })?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(IoAction::Write, &tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(IoAction::Rename, path, e)
    })
}

/// Refuses (with [`Error::SameFile`]) an `output` that is one of `inputs`: the same path after
/// canonicalization, or, when `output` exists, the same file through a symbolic or hard link.
/// Inputs must exist (they have been read).
pub fn refuse_overwriting_inputs(output: &Path, inputs: &[&Path]) -> Result<()> {
    // An existing output is compared as a file (canonical path, and device and inode on Unix so
    // that hard links count); a new one by its canonical directory and its name.
    let out_meta = std::fs::metadata(output).ok();
    let out_canonical = match std::fs::canonicalize(output) {
        Ok(p) => Some(p),
        Err(_) => {
            let parent = match output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match (std::fs::canonicalize(parent), output.file_name()) {
                (Ok(dir), Some(name)) => Some(dir.join(name)),
                _ => None,
            }
        }
    };
    for &input in inputs {
        let same_path = match (&out_canonical, std::fs::canonicalize(input)) {
            (Some(o), Ok(i)) => *o == i,
            _ => false,
        };
        let same_file = match (&out_meta, std::fs::metadata(input)) {
            (Some(o), Ok(i)) => same_inode(o, &i),
            _ => false,
        };
        if same_path || same_file {
            return Err(Error::SameFile {
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_inode(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

/// The file bytes of a built codebook: the integrity frame, then the zstd-compressed body
/// (file format version 2).
pub fn file_bytes(built: &Built) -> Result<Vec<u8>> {
    let raw = built.header.to_bytes(&built.codewords);
    let frame = zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(Error::Compression)?;
    Ok(fibquant::codebook::format::checked_file(&frame))
}

/// The manifest entry of a built codebook whose file has `sha256`.
pub fn entry_for(built: &Built, sha256: String, seconds: f64) -> Entry {
    let h = &built.header;
    Entry {
        file: file_name(h.dim as usize, h.k as usize, h.n as usize),
        dim: h.dim as usize,
        k: h.k as usize,
        n: h.n as usize,
        rate_bits: (h.n as f64).log2() / h.k as f64,
        sha256,
        seed: format!("{:#018x}", h.seed),
        construction: construction_name(h.construction).into(),
        samples_per_codeword: h.samples_per_codeword,
        restarts: h.restarts,
        iterations: h.iterations,
        construction_version: h.construction_version,
        generator_version: env!("CARGO_PKG_VERSION").into(),
        selected: built.selected.clone(),
        test_blocks: built.test_blocks,
        mse: built.mse,
        mse_initial: built.mse_initial,
        mse_scalar_product: built.mse_scalar_product,
        mse_exact: built.mse_exact,
        generation_seconds: (seconds * 10.0).round() / 10.0,
    }
}

/// The manifest's name of a construction.
pub fn construction_name(c: Construction) -> &'static str {
    match c {
        Construction::ScalarLloydMax => "scalar-lloyd-max",
        Construction::RadialAngularLloyd => "radial-angular-lloyd",
        Construction::E8Orbits => "e8-orbits",
    }
}

/// Builds `(d, k, n)` and returns the file bytes and its manifest entry.
pub fn build_file(d: usize, k: usize, n: usize, params: Params) -> Result<(Vec<u8>, Entry)> {
    let start = std::time::Instant::now();
    let built = build(d, k, n, params)?;
    let bytes = file_bytes(&built)?;
    let entry = entry_for(&built, sha256_hex(&bytes), start.elapsed().as_secs_f64());
    Ok((bytes, entry))
}

/// Problem found by [`verify`] or [`crate::deep::verify_deep`].
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file concerned.
    pub file: String,
    /// The check that found it: `file` (missing or unreadable), `sha256`, `load` (does not parse
    /// or has another shape than its entry), `unlisted` (a `.fqcb.zst` file the manifest does
    /// not list); with `--deep` also `integrity`, `trailing-data`, `header`, `codewords`,
    /// `manifest`, `mse`, `unexpected-file`.
    pub check: &'static str,
    /// What is wrong.
    pub what: String,
}

/// Re-hashes every file of the manifest and parses it; returns one [`Problem`] per missing,
/// mismatching or unreadable file (empty when all verify). Also flags `.fqcb.zst` files present in
/// `codebooks/` but absent from the manifest.
pub fn verify(registry: &Registry) -> Result<(Manifest, Vec<Problem>)> {
    let manifest = Manifest::read(&registry.manifest_path())?;
    let mut problems = Vec::new();
    for e in &manifest.codebook {
        if let Some((check, what)) = entry_problem(registry, e) {
            problems.push(Problem {
                file: e.file.clone(),
                check,
                what,
            });
        }
    }
    if let Ok(dir) = std::fs::read_dir(registry.codebook_dir()) {
        let mut names: Vec<String> = dir
            .filter_map(|d| d.ok())
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".fqcb.zst"))
            .collect();
        names.sort();
        for name in names {
            if !manifest.codebook.iter().any(|e| e.file == name) {
                problems.push(Problem {
                    file: name,
                    check: "unlisted",
                    what: "present in codebooks/ but not listed in manifest.toml".into(),
                });
            }
        }
    }
    Ok((manifest, problems))
}

/// Checks one entry's file; `None` when it verifies.
pub fn check_entry(registry: &Registry, e: &Entry) -> Option<String> {
    entry_problem(registry, e).map(|(_, what)| what)
}

/// [`check_entry`] with the name of the check that failed.
fn entry_problem(registry: &Registry, e: &Entry) -> Option<(&'static str, String)> {
    let path = registry.codebook_dir().join(&e.file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(err) => return Some(("file", format!("missing or unreadable ({err})"))),
    };
    let hash = sha256_hex(&bytes);
    if hash != e.sha256 {
        return Some((
            "sha256",
            format!("sha256 mismatch: file {hash}, manifest {}", e.sha256),
        ));
    }
    match Codebook::from_file_bytes(&bytes) {
        Err(err) => Some(("load", format!("does not parse: {err}"))),
        Ok(cb) => cb
            .expect_shape(e.dim, e.k, e.n)
            .err()
            .map(|err| ("load", err.to_string())),
    }
}

/// Builds `(d, k, n)` into the registry: writes the file and upserts the manifest entry.
pub fn generate_into(
    registry: &Registry,
    d: usize,
    k: usize,
    n: usize,
    params: Params,
) -> Result<Entry> {
    let (bytes, entry) = build_file(d, k, n, params)?;
    let dir = registry.codebook_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(IoAction::CreateDir, &dir, e))?;
    write_atomic(&registry.codebook_dir().join(&entry.file), &bytes)?;
    let path = registry.manifest_path();
    let mut manifest = if path.exists() {
        Manifest::read(&path)?
    } else {
        Manifest::default()
    };
    manifest.upsert(entry.clone());
    manifest.write(&path)?;
    Ok(entry)
}
