//! The codebook file format.
//!
//! # Version 2 (what the generator writes)
//! A file is a zstd *skippable* frame that carries its integrity check, then one zstd frame
//! holding the body (below). Standard zstd tools skip the first frame and decompress the body as
//! before. The skippable frame is 28 bytes, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | u32 `0x184D2A50`, zstd's first skippable-frame magic |
//! | 4 | 4 | u32 `20`, the payload size |
//! | 8 | 4 | magic `FQCB` |
//! | 12 | 4 | u32 file format version (2) |
//! | 16 | 8 | u64 length of the zstd frame that follows, which ends the file |
//! | 24 | 4 | u32 CRC-32C of that zstd frame's bytes |
//!
//! Every field is checked on load, the CRC before anything is decompressed, so every change of
//! a single byte anywhere in the file is refused (a CRC of 32 bits detects every error burst of
//! up to 32 bits).
//!
//! # Version 1 files
//! The body's zstd frame alone. They still load, unchecked ([`Integrity::Unchecked`]): a
//! corruption the body's own checks (lengths, finite values, shapes) do not catch goes
//! unnoticed. `fibquant-gen` writes version 2; the embedded registry files are version 2.
//!
//! # The body
//! Decompressed, the zstd frame is (all integers and floats little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FQCB` |
//! | 4 | 4 | u32 body layout version (1) |
//! | 8 | 4 | u32 `d`, head dimension |
//! | 12 | 4 | u32 `k`, block size |
//! | 16 | 4 | u32 `n`, number of codewords |
//! | 20 | 4 | u32 construction: 0 = exact scalar Lloyd-Max (k = 1), 1 = radial-angular init + Lloyd, 2 = E8-lattice orbits with one fitted scale each ([`crate::search::orbits`]) |
//! | 24 | 8 | u64 seed |
//! | 32 | 4 | u32 training samples per codeword (M / N) |
//! | 36 | 4 | u32 Lloyd restarts |
//! | 40 | 4 | u32 Lloyd iterations |
//! | 44 | 4 | u32 generator construction version |
//! | 48 | 4·n·k | f32 codewords, codeword-major (`c[0][0..k]`, `c[1][0..k]`, ...) |

use super::Codebook;
use crate::error::{Error, Result};

/// File magic.
pub const MAGIC: [u8; 4] = *b"FQCB";
/// Version of the body's layout (the header and codewords below the integrity frame).
pub const FORMAT_VERSION: u32 = 1;
/// File format version of the files the generator writes (an integrity frame, then the body).
pub const FILE_VERSION: u32 = 2;
/// zstd's first skippable-frame magic, which opens a version-2 file.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Payload bytes of the integrity frame.
const INTEGRITY_PAYLOAD: u32 = 20;
/// Bytes of the integrity frame that opens a version-2 file.
pub const INTEGRITY_BYTES: usize = 8 + INTEGRITY_PAYLOAD as usize;
/// The magic of a zstd data frame, which opens a version-1 file.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Whether a codebook's file carried an integrity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// A version-2 file: its CRC-32C and every field of its integrity frame were checked.
    Checked,
    /// A version-1 file, or a codebook not read from a file: nothing checked its bytes beyond
    /// the body's own checks.
    Unchecked,
}

/// Limits on what loading a codebook file may cost: files beyond them are refused before
/// their body is decompressed. The defaults admit every registry codebook with room to spare;
/// raise them for larger codebooks of one's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadLimits {
    /// Largest head dim `d` (default: the codec's largest, [`crate::MAX_DIM`]).
    pub max_dim: usize,
    /// Largest block size `k` (default 64; the registry's largest is 8).
    pub max_k: usize,
    /// Most codewords `N` (default 2^20; the registry's largest is 65536).
    pub max_codewords: usize,
    /// Most codeword values `N * k` (default 2^22, 16 MiB of f32: loading costs a few passes
    /// over them, about 0.1 s at that size).
    pub max_values: usize,
}

impl Default for LoadLimits {
    fn default() -> LoadLimits {
        LoadLimits {
            max_dim: crate::kernels::MAX_DIM,
            max_k: 64,
            max_codewords: 1 << 20,
            max_values: 1 << 22,
        }
    }
}

impl LoadLimits {
    /// Refuses a header beyond the limits.
    fn check(&self, dim: u64, k: u64, n: u64) -> Result<()> {
        let over = |what: &str, value: u64, limit: usize| {
            Err(Error::CorruptCodebook(format!(
                "{what} = {value} is beyond the load limit of {limit} (LoadLimits)"
            )))
        };
        if dim > self.max_dim as u64 {
            return over("d", dim, self.max_dim);
        }
        if k > self.max_k as u64 {
            return over("k", k, self.max_k);
        }
        if n > self.max_codewords as u64 {
            return over("N", n, self.max_codewords);
        }
        if n * k > self.max_values as u64 {
            return over("N * k", n * k, self.max_values);
        }
        Ok(())
    }
}

/// Wraps the zstd frame of a codebook body into a version-2 file: the integrity frame, then
/// the frame.
pub fn checked_file(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INTEGRITY_BYTES + frame.len());
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&INTEGRITY_PAYLOAD.to_le_bytes());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u64).to_le_bytes());
    out.extend_from_slice(&crate::util::crc::crc32c(frame).to_le_bytes());
    out.extend_from_slice(frame);
    out
}

/// The body's zstd frame of a codebook file, checked where the file is version 2.
fn body_frame(file: &[u8]) -> Result<(&[u8], Integrity)> {
    let corrupt = |m: String| Err(Error::CorruptCodebook(m));
    if file.len() < 4 {
        return corrupt(format!("{} bytes are not a codebook file", file.len()));
    }
    match u32_at(file, 0) {
        ZSTD_MAGIC => return Ok((file, Integrity::Unchecked)),
        SKIPPABLE_MAGIC => {}
        other => {
            return corrupt(format!(
                "not a codebook file (first bytes {other:#010x}, neither an integrity frame nor \
                 a zstd frame)"
            ))
        }
    }
    if file.len() < INTEGRITY_BYTES {
        return corrupt(format!("the integrity frame is cut short ({} bytes)", file.len()));
    }
    let payload = u32_at(file, 4);
    if payload != INTEGRITY_PAYLOAD {
        return corrupt(format!(
            "integrity frame of {payload} bytes, expected {INTEGRITY_PAYLOAD}"
        ));
    }
    if file[8..12] != MAGIC {
        return corrupt("bad magic in the integrity frame (expected FQCB)".into());
    }
    let version = u32_at(file, 12);
    if version != FILE_VERSION {
        return corrupt(format!(
            "file format version {version} is not supported (this runtime reads versions 1 and \
             {FILE_VERSION})"
        ));
    }
    let length = u64::from_le_bytes(file[16..24].try_into().expect("8 bytes"));
    let frame = &file[INTEGRITY_BYTES..];
    if length != frame.len() as u64 {
        return corrupt(format!(
            "the integrity frame announces a {length}-byte body, the file holds {}",
            frame.len()
        ));
    }
    let (want, got) = (u32_at(file, 24), crate::util::crc::crc32c(frame));
    if want != got {
        return corrupt(format!(
            "checksum mismatch: the file is corrupt (CRC-32C {got:#010x}, recorded {want:#010x})"
        ));
    }
    Ok((frame, Integrity::Checked))
}
/// Size of the uncompressed header in bytes.
pub const HEADER_BYTES: usize = 48;

/// How a codebook was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Construction {
    /// Exact Lloyd-Max quantizer of the 1-d marginal by numerical integration (k = 1).
    ScalarLloydMax,
    /// Radial-angular initial codebook refined by multi-restart Lloyd on source samples.
    RadialAngularLloyd,
    /// Whole orbits of E8-lattice points, one scale per orbit fitted by Lloyd's centroid step
    /// (`k = 8`); searched exactly by the orbit search, and refused on load unless
    /// the codewords are whole orbits in its order.
    E8Orbits,
}

impl Construction {
    /// The code stored in the file header.
    pub fn code(self) -> u32 {
        match self {
            Construction::ScalarLloydMax => 0,
            Construction::RadialAngularLloyd => 1,
            Construction::E8Orbits => 2,
        }
    }

    /// The construction with header code `code`, if any.
    pub fn from_code(code: u32) -> Option<Construction> {
        match code {
            0 => Some(Construction::ScalarLloydMax),
            1 => Some(Construction::RadialAngularLloyd),
            2 => Some(Construction::E8Orbits),
            _ => None,
        }
    }
}

/// The header of a codebook file: what the codebook is for and how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodebookHeader {
    /// Head dimension `d`.
    pub dim: u32,
    /// Block size `k`.
    pub k: u32,
    /// Number of codewords `N`.
    pub n: u32,
    /// Construction method.
    pub construction: Construction,
    /// Seed of the construction.
    pub seed: u64,
    /// Training samples per codeword (M / N).
    pub samples_per_codeword: u32,
    /// Lloyd restarts.
    pub restarts: u32,
    /// Lloyd iterations per restart.
    pub iterations: u32,
    /// Version of the construction in the generator that wrote the file.
    pub construction_version: u32,
}

impl CodebookHeader {
    /// Serializes the header followed by the codewords (the uncompressed file body).
    pub fn to_bytes(&self, codewords: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 * codewords.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.dim.to_le_bytes());
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&self.construction.code().to_le_bytes());
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&self.samples_per_codeword.to_le_bytes());
        out.extend_from_slice(&self.restarts.to_le_bytes());
        out.extend_from_slice(&self.iterations.to_le_bytes());
        out.extend_from_slice(&self.construction_version.to_le_bytes());
        for c in codewords {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

impl Codebook {
    /// Parses an uncompressed codebook file body (header + codewords).
    pub fn from_raw_bytes(bytes: &[u8]) -> Result<Codebook> {
        if bytes.len() < HEADER_BYTES {
            return Err(Error::CorruptCodebook(format!(
                "file body is {} bytes, shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        if bytes[0..4] != MAGIC {
            return Err(Error::CorruptCodebook("bad magic (expected FQCB)".into()));
        }
        let version = u32_at(bytes, 4);
        if version != FORMAT_VERSION {
            return Err(Error::CorruptCodebook(format!(
                "format version {version} is not supported (this runtime reads version {FORMAT_VERSION})"
            )));
        }
        let code = u32_at(bytes, 20);
        let construction = Construction::from_code(code)
            .ok_or_else(|| Error::CorruptCodebook(format!("unknown construction code {code}")))?;
        let header = CodebookHeader {
            dim: u32_at(bytes, 8),
            k: u32_at(bytes, 12),
            n: u32_at(bytes, 16),
            construction,
            seed: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            samples_per_codeword: u32_at(bytes, 32),
            restarts: u32_at(bytes, 36),
            iterations: u32_at(bytes, 40),
            construction_version: u32_at(bytes, 44),
        };
        let (dim, k, n) = (header.dim as usize, header.k as usize, header.n as usize);
        let body = &bytes[HEADER_BYTES..];
        let expected = (n as u128) * (k as u128) * 4;
        if body.len() as u128 != expected {
            return Err(Error::CorruptCodebook(format!(
                "header says {n} codewords of {k} floats ({expected} bytes) but the body has {} bytes",
                body.len()
            )));
        }
        let codewords = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut cb = Codebook::new(dim, k, n, codewords)
            .map_err(|e| Error::CorruptCodebook(format!("invalid contents: {e}")))?;
        if construction == Construction::E8Orbits && cb.plan != crate::search::SearchPlan::Orbits {
            return Err(Error::CorruptCodebook(
                "the header says E8 orbits but the codewords are not whole orbits in index order"
                    .into(),
            ));
        }
        cb.header = Some(header);
        Ok(cb)
    }

    /// Parses a codebook file (the format in the module docs) within the default
    /// [`LoadLimits`]. A version-2 file's checksum is verified before anything is
    /// decompressed, and a header beyond the limits is refused before the codewords are:
    /// loading costs a few passes over at most `max_values` values. Search structures are built
    /// later, on first use or by [`Codebook::prepare_search`] (up to about a second for
    /// 65536 codewords of 4 values).
    pub fn from_file_bytes(file: &[u8]) -> Result<Codebook> {
        Codebook::from_file_bytes_with(file, &LoadLimits::default())
    }

    /// [`from_file_bytes`](Self::from_file_bytes) within `limits`.
    pub fn from_file_bytes_with(file: &[u8], limits: &LoadLimits) -> Result<Codebook> {
        let (frame, integrity) = body_frame(file)?;
        let raw = decompress(frame, limits)?;
        let mut cb = Codebook::from_raw_bytes(&raw)?;
        cb.integrity = integrity;
        Ok(cb)
    }
}

/// Largest decompressed codebook body read whatever the [`LoadLimits`] (1 GiB: the registry's
/// largest is 2 MiB; 2^24 codewords of 16 values would be 1 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Decompresses a codebook file: the header, then at most the body it announces (plus one byte,
/// so that a longer body is still reported as such).
fn decompress(compressed: &[u8], limits: &LoadLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let failed =
        |e: std::io::Error| Error::CorruptCodebook(format!("zstd decompression failed: {e}"));
    let mut source = compressed;
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut source)
        .map_err(|e| Error::CorruptCodebook(format!("not a zstd frame: {e}")))?;
    let mut out = Vec::new();
    (&mut decoder)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut out)
        .map_err(failed)?;
    if out.len() < HEADER_BYTES {
        return Ok(out); // `from_raw_bytes` reports the short file.
    }
    let (dim, k, n) = (u32_at(&out, 8), u32_at(&out, 12), u32_at(&out, 16));
    limits.check(dim as u64, k as u64, n as u64)?;
    // At most 2^32 * 2^32 * 4 + 48: fits a u128.
    let body = k as u128 * n as u128 * 4;
    let total = HEADER_BYTES as u128 + body;
    if total > MAX_FILE_BYTES as u128 {
        return Err(Error::CorruptCodebook(format!(
            "header announces {total} bytes, more than the {MAX_FILE_BYTES}-byte limit"
        )));
    }
    (&mut decoder)
        .take(body as u64 + 1)
        .read_to_end(&mut out)
        .map_err(failed)?;
    // A body of the announced size was read to its frame's end: nothing may follow the frame
    // (another frame, say, that a checksum over both would not reveal).
    if out.len() as u128 == total {
        let mut rest = [0u8; 1];
        if decoder.read(&mut rest).map_err(failed)? != 0 {
            return Ok(out); // `from_raw_bytes` reports the longer body.
        }
        drop(decoder);
        if !source.is_empty() {
            return Err(Error::CorruptCodebook(format!(
                "{} bytes follow the body's zstd frame",
                source.len()
            )));
        }
    }
    Ok(out)
}

