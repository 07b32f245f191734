//! `verify --deep`: what a registry's sha256s cannot vouch for. A hash only says that a file is
//! the one the manifest names; whoever edits a file can update its hash too. The deep checks
//! look at what the files and the manifest say:
//!
//! 1. every file loads through the runtime as a version-2 file (integrity frame checked) whose
//!    body frame ends the file;
//! 2. the file header agrees with the manifest entry (d, k, N, construction, seed, samples per
//!    codeword, restarts, iterations, construction version), and the entry's seed and
//!    construction are the ones the generator derives for (d, k, N);
//! 3. the codewords are finite, inside the unit ball (up to [`UNIT_BALL_TOLERANCE`]), pairwise
//!    distinct and not all zero;
//! 4. the manifest is consistent: `rate_bits` is exactly `log2(N) / k`, no file or (d, k, N) is
//!    listed twice, every file name is the one of its (d, k, N);
//! 5. each codebook's MSE, re-measured on fresh source blocks, agrees with the manifest's within
//!    its sampling error ([`crate::lloyd::remeasure`], the comparison `eval` makes), at a
//!    Bonferroni z over the entries measured;
//! 6. `codebooks/` holds nothing but the manifest's files and `FORMAT.md`.

use crate::construct::entry_seed;
use crate::error::Result;
use crate::lloyd::{remeasure, tolerance_z, FAMILY_FALSE_ALARM};
use crate::manifest::{Entry, Manifest};
use crate::plan::file_name;
use crate::registry::{construction_name, Problem, Registry};
use crate::source::{Method, Source};
use fibquant::codebook::format::{Integrity, INTEGRITY_BYTES};
use fibquant::codebook::{Codebook, Construction};
use rayon::prelude::*;
use std::collections::HashMap;

/// How far outside the unit ball a codeword may lie: `norm <= 1 + UNIT_BALL_TOLERANCE`.
///
/// Every construction puts its codewords inside the ball in exact arithmetic: Lloyd codewords
/// are centroids (means) of source blocks, which are pieces of unit vectors; the scalar levels
/// are conditional means of a law on `[-1, 1]`; an E8 codeword is `s v` with `s` the mean of
/// `<x, v> / |v|^2` over its blocks `x`, so `|s v| <= mean |x| <= 1`. What remains is float
/// rounding: a block is rounded to f32 (relative error `2^-24` per coordinate), its mean is taken
/// in f64 and rounded to f32 again, so a norm exceeds 1 by at most a few `2^-24` (about
/// `2e-7`). `1e-6` is about 8 f32 ulps at 1: above any rounding, far below any real fault (a
/// moved codeword, a scaled codebook).
pub const UNIT_BALL_TOLERANCE: f64 = 1e-6;

/// Default number of fresh source blocks per entry of the MSE re-measure: 2^16 (the `eval`
/// default) keeps `verify --deep` over the 126 registry entries near 10 s on 2 cores, and its
/// standard error of the difference is `sigma * sqrt(1/2^16 + 1/2^18)`, about 0.45% of the MSE
/// for a per-block spread `sigma` equal to the mean.
pub const DEFAULT_SAMPLES: usize = 1 << 16;

/// Default seed of the fresh blocks (the `eval` default: the rows agree with `eval --all`'s).
pub const DEFAULT_SEED: u64 = 7;

/// Settings of the deep checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeepOptions {
    /// Fresh source blocks per entry for the MSE re-measure (at least 2).
    pub samples: usize,
    /// Seed of those blocks.
    pub seed: u64,
}

impl Default for DeepOptions {
    fn default() -> Self {
        DeepOptions {
            samples: DEFAULT_SAMPLES,
            seed: DEFAULT_SEED,
        }
    }
}

/// One entry's MSE re-measure.
#[derive(Debug, Clone, PartialEq)]
pub struct MseRow {
    /// The entry's file.
    pub file: String,
    /// Normalized MSE on the fresh blocks.
    pub mse: f64,
    /// The manifest's MSE.
    pub manifest_mse: f64,
    /// Standard error of the difference of the two means.
    pub std_error: f64,
    /// `(mse - manifest_mse) / std_error`.
    pub z: f64,
}

/// What the deep checks measured besides their problems.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepReport {
    /// Fresh blocks per entry.
    pub samples: usize,
    /// Their seed.
    pub seed: u64,
    /// The `|z|` limit of the MSE check (Bonferroni over the entries measured).
    pub tolerance_z: f64,
    /// The largest codeword norm of the files checked, and its file (`None` when none was).
    pub max_norm: Option<(f64, String)>,
    /// One row per entry measured (those whose file loads with the entry's shape), in manifest
    /// order.
    pub mse: Vec<MseRow>,
}

fn problem(file: &str, check: &'static str, what: String) -> Problem {
    Problem {
        file: file.to_string(),
        check,
        what,
    }
}

/// The plain [`crate::registry::verify`] problems, then the deep checks' (per entry in manifest
/// order, then the manifest's, then unexpected files), and the MSE re-measure.
pub fn verify_deep(
    registry: &Registry,
    options: DeepOptions,
) -> Result<(Manifest, Vec<Problem>, DeepReport)> {
    let (manifest, mut problems) = crate::registry::verify(registry)?;
    let dir = registry.codebook_dir();
    // Check 1-3 per file; the codebooks that load with their entry's shape go on to check 5.
    let mut loaded: Vec<(&Entry, Codebook)> = Vec::new();
    for e in &manifest.codebook {
        let Ok(bytes) = std::fs::read(dir.join(&e.file)) else {
            continue; // plain verify named it
        };
        let Ok(cb) = Codebook::from_file_bytes(&bytes) else {
            continue; // plain verify named it
        };
        problems.extend(file_problems(e, &bytes, &cb));
        if cb.expect_shape(e.dim, e.k, e.n).is_ok() {
            problems.extend(header_problems(e, &cb));
            problems.extend(
                codeword_problems(cb.codewords(), e.k)
                    .into_iter()
                    .map(|w| problem(&e.file, "codewords", w)),
            );
            loaded.push((e, cb));
        }
    }
    problems.extend(manifest_problems(&manifest));
    problems.extend(unexpected_files(registry, &manifest));

    let max_norm = loaded
        .iter()
        .map(|(e, cb)| (max_norm(cb.codewords(), e.k), e.file.clone()))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let samples = options.samples.max(2);
    let tol = tolerance_z(FAMILY_FALSE_ALARM, loaded.len());
    let rows: Vec<MseRow> = loaded
        .par_iter()
        .map(|(e, cb)| {
            let src = Source::new(e.dim, e.k)?;
            let blocks = src.sample(Method::RadiusDirection, samples, options.seed);
            let r = remeasure(cb.codewords(), e.dim, e.k, &blocks, e.mse, e.test_blocks);
            Ok(MseRow {
                file: e.file.clone(),
                mse: r.mse,
                manifest_mse: e.mse,
                std_error: r.std_error.hypot(r.recorded_std_error),
                z: r.z,
            })
        })
        .collect::<Result<_>>()?;
    for (r, (e, _)) in rows.iter().zip(&loaded) {
        // A NaN z (a NaN MSE) is outside too.
        let within = r.z.abs() <= tol;
        if !within {
            problems.push(problem(
                &r.file,
                "mse",
                format!(
                    "MSE re-measured on {samples} fresh blocks (seed {}) is {:.6}, the manifest \
                     says {:.6} (on {} test blocks): {:+.2} standard errors of the difference, \
                     beyond the tolerance of {tol:.2}",
                    options.seed, r.mse, r.manifest_mse, e.test_blocks, r.z
                ),
            ));
        }
    }
    let report = DeepReport {
        samples,
        seed: options.seed,
        tolerance_z: tol,
        max_norm,
        mse: rows,
    };
    Ok((manifest, problems, report))
}

/// Check 1 on a file that loads: a version-2 file whose body frame ends it.
fn file_problems(e: &Entry, bytes: &[u8], cb: &Codebook) -> Vec<Problem> {
    let mut out = Vec::new();
    let frame = match cb.integrity() {
        Integrity::Checked => &bytes[INTEGRITY_BYTES..],
        Integrity::Unchecked => {
            out.push(problem(
                &e.file,
                "integrity",
                "file format version 1 (no integrity frame): registry files must be version 2 \
                 (`fibquant-gen regenerate` writes them)"
                    .into(),
            ));
            bytes
        }
    };
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(size) if size == frame.len() => {}
        Ok(size) => out.push(problem(
            &e.file,
            "trailing-data",
            format!(
                "{} bytes follow the {size}-byte body frame (the body frame must end the file)",
                frame.len() - size
            ),
        )),
        Err(code) => out.push(problem(
            &e.file,
            "trailing-data",
            format!(
                "the body frame's end cannot be found ({})",
                zstd::zstd_safe::get_error_name(code)
            ),
        )),
    }
    out
}

/// The construction the generator uses for `(k, n)` (see [`crate::construct::build`]).
fn expected_construction(k: usize, n: usize) -> Construction {
    if k == 1 {
        Construction::ScalarLloydMax
    } else if (k, n) == (8, crate::e8::E8_N) {
        Construction::E8Orbits
    } else {
        Construction::RadialAngularLloyd
    }
}

/// Parses a manifest seed, `0x` and hex digits.
fn parse_seed(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x")?;
    (!hex.is_empty() && hex.len() <= 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Check 2 on a file that loads with its entry's shape: every header field against the entry,
/// and the entry's seed and construction against the generator's for (d, k, N).
fn header_problems(e: &Entry, cb: &Codebook) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(h) = cb.header() else {
        return vec![problem(&e.file, "header", "the file has no header".into())];
    };
    let seed_text = |s: u64| format!("{s:#018x}");
    let fields: [(&str, String, String); 9] = [
        ("d", h.dim.to_string(), e.dim.to_string()),
        ("k", h.k.to_string(), e.k.to_string()),
        ("N", h.n.to_string(), e.n.to_string()),
        (
            "construction",
            construction_name(h.construction).into(),
            e.construction.clone(),
        ),
        (
            "seed",
            seed_text(h.seed),
            parse_seed(&e.seed).map_or_else(|| e.seed.clone(), seed_text),
        ),
        (
            "samples_per_codeword",
            h.samples_per_codeword.to_string(),
            e.samples_per_codeword.to_string(),
        ),
        ("restarts", h.restarts.to_string(), e.restarts.to_string()),
        (
            "iterations",
            h.iterations.to_string(),
            e.iterations.to_string(),
        ),
        (
            "construction_version",
            h.construction_version.to_string(),
            e.construction_version.to_string(),
        ),
    ];
    for (name, file, manifest) in fields {
        if file != manifest {
            out.push(problem(
                &e.file,
                "header",
                format!("header {name} is {file}, the manifest says {manifest}"),
            ));
        }
    }
    match parse_seed(&e.seed) {
        None => out.push(problem(
            &e.file,
            "manifest",
            format!("manifest seed {:?} is not a hex u64 (0x...)", e.seed),
        )),
        Some(s) if s != entry_seed(e.dim, e.k, e.n) => out.push(problem(
            &e.file,
            "manifest",
            format!(
                "manifest seed {} is not the generator's seed for d={} k={} N={} ({})",
                seed_text(s),
                e.dim,
                e.k,
                e.n,
                seed_text(entry_seed(e.dim, e.k, e.n))
            ),
        )),
        Some(_) => {}
    }
    let want = construction_name(expected_construction(e.k, e.n));
    if e.construction != want {
        out.push(problem(
            &e.file,
            "manifest",
            format!(
                "manifest construction {:?} is not the generator's for k={} N={} ({want:?})",
                e.construction, e.k, e.n
            ),
        ));
    }
    out
}

/// Norm of a codeword, in f64.
fn norm(c: &[f32]) -> f64 {
    c.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
}

/// The largest codeword norm (`k` values per codeword).
fn max_norm(codewords: &[f32], k: usize) -> f64 {
    codewords.chunks_exact(k).map(norm).fold(0.0, f64::max)
}

/// Check 3: what is wrong with `codewords` (codeword-major, `k` values each): non-finite values,
/// codewords outside the unit ball, all codewords zero, exact duplicates (`-0.0` and `0.0`
/// count as the same value). Empty when none.
pub fn codeword_problems(codewords: &[f32], k: usize) -> Vec<String> {
    let mut out = Vec::new();
    let n = codewords.len() / k.max(1);
    if let Some(i) = codewords.iter().position(|v| !v.is_finite()) {
        out.push(format!(
            "codeword {} has a non-finite value ({})",
            i / k,
            codewords[i]
        ));
        return out;
    }
    let norms: Vec<f64> = codewords.chunks_exact(k).map(norm).collect();
    let outside: Vec<usize> = (0..n)
        .filter(|&i| norms[i] > 1.0 + UNIT_BALL_TOLERANCE)
        .collect();
    if let Some(&worst) = outside
        .iter()
        .max_by(|&&a, &&b| norms[a].total_cmp(&norms[b]))
    {
        out.push(format!(
            "{} codeword(s) outside the unit ball (norm > 1 + {UNIT_BALL_TOLERANCE:e}); the \
             farthest, codeword {worst}, has norm {:.9}",
            outside.len(),
            norms[worst]
        ));
    }
    if codewords.iter().all(|&v| v == 0.0) {
        out.push(format!("all {n} codewords are zero"));
        return out;
    }
    // Exact duplicates: sort the codewords' bit patterns (with -0.0 as 0.0).
    let bits: Vec<u32> = codewords.iter().map(|&v| (v + 0.0).to_bits()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| bits[a * k..(a + 1) * k].cmp(&bits[b * k..(b + 1) * k]));
    let mut duplicates = 0usize;
    let mut first: Option<(usize, usize)> = None;
    for w in order.windows(2) {
        if bits[w[0] * k..(w[0] + 1) * k] == bits[w[1] * k..(w[1] + 1) * k] {
            duplicates += 1;
            let pair = (w[0].min(w[1]), w[0].max(w[1]));
            if first.is_none_or(|f| pair < f) {
                first = Some(pair);
            }
        }
    }
    if let Some((a, b)) = first {
        out.push(format!(
            "{duplicates} duplicated codeword(s): e.g. codewords {a} and {b} are equal"
        ));
    }
    out
}

/// Check 4: `rate_bits` exactly `log2(n) / k` (as the generator writes it), every file name the
/// one of its (d, k, N), no file or (d, k, N) listed twice.
pub fn manifest_problems(manifest: &Manifest) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut files: HashMap<&str, usize> = HashMap::new();
    let mut points: HashMap<(usize, usize, usize), usize> = HashMap::new();
    for (i, e) in manifest.codebook.iter().enumerate() {
        let rate = (e.n as f64).log2() / e.k as f64;
        if e.rate_bits != rate {
            out.push(problem(
                &e.file,
                "manifest",
                format!(
                    "rate_bits {} is not log2(N) / k = {rate} (entry {i})",
                    e.rate_bits
                ),
            ));
        }
        let name = file_name(e.dim, e.k, e.n);
        if e.file != name {
            out.push(problem(
                &e.file,
                "manifest",
                format!(
                    "file name does not match d={} k={} N={} ({name}) (entry {i})",
                    e.dim, e.k, e.n
                ),
            ));
        }
        if let Some(j) = files.insert(&e.file, i) {
            out.push(problem(
                &e.file,
                "manifest",
                format!("listed twice in the manifest (entries {j} and {i})"),
            ));
        }
        if let Some(j) = points.insert((e.dim, e.k, e.n), i) {
            out.push(problem(
                &e.file,
                "manifest",
                format!(
                    "d={} k={} N={} listed twice in the manifest (entries {j} and {i})",
                    e.dim, e.k, e.n
                ),
            ));
        }
    }
    out
}

/// Check 6: every name in `codebooks/` that is neither a manifest file nor `FORMAT.md`, except
/// the unlisted `.fqcb.zst` files that plain `verify` already names.
fn unexpected_files(registry: &Registry, manifest: &Manifest) -> Vec<Problem> {
    let Ok(dir) = std::fs::read_dir(registry.codebook_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "FORMAT.md" && !n.ends_with(".fqcb.zst"))
        .filter(|n| !manifest.codebook.iter().any(|e| &e.file == n))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            problem(
                &n,
                "unexpected-file",
                "present in codebooks/ but neither listed in manifest.toml nor FORMAT.md".into(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codeword_checks_name_each_fault() {
        let good = [0.5f32, 0.0, -0.5, 0.0, 0.0, 0.5, 0.0, -0.5];
        assert!(codeword_problems(&good, 2).is_empty());
        let mut moved = good;
        moved[0] = 1.1;
        let p = codeword_problems(&moved, 2);
        assert!(
            p.len() == 1 && p[0].contains("outside the unit ball"),
            "{p:?}"
        );
        // Rounding above 1: a unit vector in f32 passes.
        let unit = [0.6f32, 0.8, -0.5, 0.0, 0.0, 0.5, 0.0, -0.5];
        assert!(codeword_problems(&unit, 2).is_empty());
        let p = codeword_problems(&[0.0; 8], 2);
        assert!(
            p.len() == 1 && p[0].contains("all 4 codewords are zero"),
            "{p:?}"
        );
        let mut dup = good;
        dup[6] = 0.5;
        dup[7] = -0.0;
        let p = codeword_problems(&dup, 2);
        assert!(p.len() == 1 && p[0].contains("codewords 0 and 3"), "{p:?}");
        let mut nan = good;
        nan[3] = f32::NAN;
        assert!(codeword_problems(&nan, 2)[0].contains("non-finite"));
    }

    #[test]
    fn seeds_parse_as_the_manifest_writes_them() {
        assert_eq!(parse_seed("0xe48bfc0e96638c39"), Some(0xe48bfc0e96638c39));
        assert_eq!(parse_seed("0x"), None);
        assert_eq!(parse_seed("e48b"), None);
        assert_eq!(parse_seed("0x1ffffffffffffffff"), None);
    }
}
