//! The code file written by `fibquant-gen encode`: a header that makes decoding need no flags,
//! then the slots.
//!
//! Layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FQCD` |
//! | 4 | 4 | u32 version (1) |
//! | 8 | 4 | u32 `d` |
//! | 12 | 4 | u32 `k` |
//! | 16 | 4 | u32 `N` |
//! | 20 | 4 | u32 rotation: 0 = randomized Hadamard, 1 = dense Haar |
//! | 24 | 4 | u32 Hadamard rounds (0 for Haar) |
//! | 28 | 4 | u32 norm format: 0 = fp16, 1 = f32 |
//! | 32 | 8 | u64 rotation seed |
//! | 40 | 8 | u64 number of rows |
//! | 48 | 8 | first 8 bytes of the codebook file's sha256 (decode refuses another codebook) |
//! | 56 | rows · slot_bytes | the slots (layout in `fibquant::codec`) |

use crate::error::{Error, Result};
use fibquant::codec::rotation::Rotation;
use fibquant::{registry, Codec, CodecConfig, NormFormat, RotationKind};

/// Magic of code files.
pub const MAGIC: [u8; 4] = *b"FQCD";
/// Header size.
pub const HEADER_BYTES: usize = 56;

/// A parsed code file.
#[derive(Debug)]
pub struct CodeFile {
    /// The codec described by the header.
    pub codec: Codec,
    /// Rows.
    pub rows: usize,
    /// The slots.
    pub slots: Vec<u8>,
}

fn codebook_tag(d: usize, k: usize, n: usize) -> Result<[u8; 8]> {
    let e = registry::entries()
        .find(|e| (e.dim, e.k, e.n) == (d, k, n))
        .ok_or_else(|| Error::CodeFile(format!("no embedded codebook for d={d} k={k} n={n}")))?;
    let mut tag = [0u8; 8];
    for (i, t) in tag.iter_mut().enumerate() {
        *t = e
            .sha256
            .get(2 * i..2 * i + 2)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .ok_or_else(|| {
                Error::CodeFile(format!(
                    "the embedded sha256 of d={d} k={k} n={n} is not hex: {}",
                    e.sha256
                ))
            })?;
    }
    Ok(tag)
}

/// Serializes a code file.
pub fn to_bytes(codec: &Codec, rows: usize, slots: &[u8]) -> Result<Vec<u8>> {
    let c = codec.config();
    let (rot, rounds) = match codec.rotation() {
        Rotation::Hadamard { signs, .. } => (0u32, signs.len() as u32),
        Rotation::Dense { .. } => (1u32, 0u32),
    };
    let norm = match c.norm {
        NormFormat::F16 => 0u32,
        NormFormat::F32 => 1u32,
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + slots.len());
    out.extend_from_slice(&MAGIC);
    for v in [
        1u32,
        c.dim as u32,
        c.k as u32,
        c.n as u32,
        rot,
        rounds,
        norm,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&c.seed.to_le_bytes());
    out.extend_from_slice(&(rows as u64).to_le_bytes());
    out.extend_from_slice(&codebook_tag(c.dim, c.k, c.n)?);
    out.extend_from_slice(slots);
    Ok(out)
}

/// Parses a code file, rebuilding its codec from the embedded codebook.
pub fn parse(bytes: &[u8]) -> Result<CodeFile> {
    if bytes.len() < HEADER_BYTES || bytes[..4] != MAGIC {
        return Err(Error::CodeFile(
            "not a FibQuant code file (bad magic or truncated header)".into(),
        ));
    }
    let u = |off: usize| u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
    if u(4) != 1 {
        return Err(Error::CodeFile(format!(
            "code file version {} is not supported",
            u(4)
        )));
    }
    let (d, k, n) = (u(8) as usize, u(12) as usize, u(16) as usize);
    let rotation = match (u(20), u(24)) {
        (0, r) if (1..=8).contains(&r) => RotationKind::Hadamard { rounds: r as u8 },
        (1, _) => RotationKind::Haar,
        (r, _) => return Err(Error::CodeFile(format!("unknown rotation code {r}"))),
    };
    let norm = match u(28) {
        0 => NormFormat::F16,
        1 => NormFormat::F32,
        v => return Err(Error::CodeFile(format!("unknown norm format {v}"))),
    };
    let seed = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    let rows = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    if codebook_tag(d, k, n)? != bytes[48..56] {
        return Err(Error::CodeFile(format!(
            "the code file was written with another codebook for d={d} k={k} n={n} (checksum differs)"
        )));
    }
    let config = CodecConfig::new(d, k, n)
        .with_rotation(rotation)
        .with_norm(norm)
        .with_seed(seed);
    let codec = Codec::new(config)?;
    let body = &bytes[HEADER_BYTES..];
    if Some(body.len()) != rows.checked_mul(codec.slot_bytes()) {
        return Err(Error::CodeFile(format!(
            "code file says {rows} rows of {} bytes but holds {} bytes of slots",
            codec.slot_bytes(),
            body.len()
        )));
    }
    Ok(CodeFile {
        codec,
        rows,
        slots: body.to_vec(),
    })
}
