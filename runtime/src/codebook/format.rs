//! The codebook file format.
//!
//! # Version 1
//! A codebook file is one zstd frame. Decompressed, it is (all integers and floats little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FQCB` |
//! | 4 | 4 | u32 format version (1) |
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
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;
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

    /// Parses a zstd-compressed codebook file (the format in the module docs). Decompression
    /// stops one byte past the size the header announces, and files that announce more than
    /// 1 GiB uncompressed are refused before their body is decompressed, so a small corrupt or
    /// hostile frame cannot expand into gigabytes. A file may still hold up to 2^24 codewords,
    /// and codebooks from 16384 codewords on (the inverted file of their [`SearchPlan`](crate::SearchPlan)) build an inverted file while loading
    /// (about 12 passes of k-means over the codewords): load untrusted files of that size with
    /// a time limit.
    pub fn from_file_bytes(compressed: &[u8]) -> Result<Codebook> {
        let raw = decompress(compressed)?;
        Codebook::from_raw_bytes(&raw)
    }
}

/// largest is 2 MiB; 2^24 codewords of 16 values would be 1 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Decompresses a codebook file: the header, then at most the body it announces (plus one byte,
/// so that a longer body is still reported as such).
fn decompress(compressed: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let failed =
        |e: std::io::Error| Error::CorruptCodebook(format!("zstd decompression failed: {e}"));
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(compressed)
        .map_err(|e| Error::CorruptCodebook(format!("not a zstd frame: {e}")))?;
    let mut out = Vec::new();
    (&mut decoder)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut out)
        .map_err(failed)?;
    if out.len() < HEADER_BYTES {
        return Ok(out); // `from_raw_bytes` reports the short file.
    }
    // At most 2^32 * 2^32 * 4 + 48: fits a u128.
    let body = u32_at(&out, 12) as u128 * u32_at(&out, 16) as u128 * 4;
    let total = HEADER_BYTES as u128 + body;
    if total > MAX_FILE_BYTES as u128 {
        return Err(Error::CorruptCodebook(format!(
            "header announces {total} bytes, more than the {MAX_FILE_BYTES}-byte limit"
        )));
    }
    decoder
        .take(body as u64 + 1)
        .read_to_end(&mut out)
        .map_err(failed)?;
    Ok(out)
}

