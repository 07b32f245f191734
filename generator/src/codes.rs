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

use crate::error::{Error, IoAction, Result};
use fibquant::codec::rotation::Rotation;
use fibquant::{registry, Codebook, Codec, CodecConfig, NormFormat, RotationKind};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The fields of a code file's header, checked for range but not yet matched to a codebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Head dimension.
    pub dim: usize,
    /// Block size.
    pub k: usize,
    /// Codebook size.
    pub n: usize,
    /// Rotation.
    pub rotation: RotationKind,
    /// Norm format.
    pub norm: NormFormat,
    /// Rotation seed.
    pub seed: u64,
    /// Number of rows.
    pub rows: usize,
    /// First 8 bytes of the sha256 of the codebook file the slots were encoded with.
    pub codebook_tag: [u8; 8],
}

/// A codebook file given on the command line (`--codebook`), with the tag code files carry.
#[derive(Debug, Clone)]
pub struct CodebookFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The parsed codebook.
    pub codebook: Arc<Codebook>,
    /// First 8 bytes of the file's sha256.
    pub tag: [u8; 8],
}

impl CodebookFile {
    /// Reads and parses a `.fqcb.zst` file.
    pub fn read(path: &Path) -> Result<CodebookFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(IoAction::Read, path, e))?;
        let codebook =
            Codebook::from_file_bytes(&bytes).map_err(|e| Error::Codebook(e).in_file(path))?;
        Ok(CodebookFile {
            path: path.to_path_buf(),
            codebook: Arc::new(codebook),
            tag: tag_of_file(&bytes),
        })
    }
}

/// First 8 bytes of the sha256 of a codebook file's bytes.
pub fn tag_of_file(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(bytes);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

fn hex(tag: &[u8; 8]) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tag of the embedded codebook for `(d, k, n)` (from its sha256 in the manifest).
pub fn embedded_tag(d: usize, k: usize, n: usize) -> Result<[u8; 8]> {
    let e = registry::entries()
        .find(|e| (e.dim, e.k, e.n) == (d, k, n))
        .ok_or(Error::UnknownCode { dim: d, k, n })?;
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

/// Serializes a code file whose slots were encoded with the codebook file whose tag is
/// `codebook_tag` ([`embedded_tag`] or [`CodebookFile::tag`]).
pub fn to_bytes(
    codec: &Codec,
    rows: usize,
    slots: &[u8],
    codebook_tag: [u8; 8],
) -> Result<Vec<u8>> {
    let c = codec.config();
    let (rot, rounds) = match codec.rotation() {
        Rotation::Hadamard { signs, .. } => (0u32, signs.len() as u32),
        Rotation::Dense { .. } => (1u32, 0u32),
    };
    let norm = match c.norm {
        NormFormat::F16 => 0u32,
        NormFormat::F32 => 1u32,
    };
    let field = |v: usize, what: &str| {
        u32::try_from(v)
            .map_err(|_| Error::CodeFile(format!("{what} {v} does not fit a code file")))
    };
    if Some(slots.len()) != rows.checked_mul(codec.slot_bytes()) {
        return Err(Error::CodeFile(format!(
            "{} bytes of slots are not {rows} rows of {} bytes",
            slots.len(),
            codec.slot_bytes()
        )));
    }
    let mut out = Vec::with_capacity(HEADER_BYTES.saturating_add(slots.len()));
    out.extend_from_slice(&MAGIC);
    for v in [
        1u32,
        field(c.dim, "dim")?,
        field(c.k, "k")?,
        field(c.n, "n")?,
        rot,
        rounds,
        norm,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&c.seed.to_le_bytes());
    out.extend_from_slice(&(rows as u64).to_le_bytes());
    out.extend_from_slice(&codebook_tag);
    out.extend_from_slice(slots);
    Ok(out)
}

/// Parses and range-checks the header (the first [`HEADER_BYTES`] bytes) of a code file.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let Some(h) = bytes.get(..HEADER_BYTES) else {
        return Err(Error::CodeFile(format!(
            "not a FibQuant code file (truncated header: {} of {HEADER_BYTES} bytes)",
            bytes.len()
        )));
    };
    if h[..4] != MAGIC {
        return Err(Error::CodeFile(
            "not a FibQuant code file (bad magic)".into(),
        ));
    }
    let u = |off: usize| u32::from_le_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]]);
    let u64_at = |off: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[off..off + 8]);
        u64::from_le_bytes(b)
    };
    if u(4) != 1 {
        return Err(Error::CodeFile(format!(
            "code file version {} is not supported",
            u(4)
        )));
    }
    let rotation = match (u(20), u(24)) {
        (0, r) if (1..=8).contains(&r) => RotationKind::Hadamard { rounds: r as u8 },
        (0, r) => {
            return Err(Error::CodeFile(format!(
                "Hadamard rotation with {r} rounds (1 to 8 are valid)"
            )))
        }
        (1, 0) => RotationKind::Haar,
        (1, r) => {
            return Err(Error::CodeFile(format!(
                "dense Haar rotation with {r} rounds (must be 0)"
            )))
        }
        (r, _) => return Err(Error::CodeFile(format!("unknown rotation code {r}"))),
    };
    let norm = match u(28) {
        0 => NormFormat::F16,
        1 => NormFormat::F32,
        v => return Err(Error::CodeFile(format!("unknown norm format {v}"))),
    };
    let rows = u64_at(40);
    let rows = usize::try_from(rows)
        .map_err(|_| Error::CodeFile(format!("{rows} rows do not fit this machine's memory")))?;
    let mut codebook_tag = [0u8; 8];
    codebook_tag.copy_from_slice(&h[48..56]);
    Ok(Header {
        dim: u(8) as usize,
        k: u(12) as usize,
        n: u(16) as usize,
        rotation,
        norm,
        seed: u64_at(32),
        rows,
        codebook_tag,
    })
}

/// Parses a code file. Its codec is rebuilt on `codebook` when given (which must be the file the
/// slots were encoded with: same shape and tag), otherwise on the embedded codebook of the
/// header's `(d, k, n)` (whose tag must match). The slot count is checked against the file's
/// length before anything is allocated.
pub fn parse(bytes: &[u8], codebook: Option<&CodebookFile>) -> Result<CodeFile> {
    let h = parse_header(bytes)?;
    let (d, k, n) = (h.dim, h.k, h.n);
    let cb = match codebook {
        Some(file) => {
            let c = &file.codebook;
            if (c.dim(), c.k(), c.n()) != (d, k, n) {
                return Err(Error::CodeFile(format!(
                    "the code file is for d={d} k={k} n={n}, --codebook {} holds d={} k={} n={}",
                    file.path.display(),
                    c.dim(),
                    c.k(),
                    c.n()
                )));
            }
            if file.tag != h.codebook_tag {
                return Err(Error::CodeFile(format!(
                    "the code file was written with another codebook for d={d} k={k} n={n}: its header's checksum prefix is {}, --codebook {} has {}",
                    hex(&h.codebook_tag),
                    file.path.display(),
                    hex(&file.tag)
                )));
            }
            file.codebook.clone()
        }
        None => {
            let tag = embedded_tag(d, k, n)?;
            if tag != h.codebook_tag {
                return Err(Error::CodeFile(format!(
                    "the code file was written with a codebook other than the embedded one for d={d} k={k} n={n} (header checksum prefix {}, embedded {}); decode with the codebook file it was encoded with: --codebook PATH",
                    hex(&h.codebook_tag),
                    hex(&tag)
                )));
            }
            registry::codebook(d, k, n)?
        }
    };
    let config = CodecConfig::new(d, k, n)
        .with_rotation(h.rotation)
        .with_norm(h.norm)
        .with_seed(h.seed);
    let codec = Codec::with_codebook(config, cb)?;
    let body = &bytes[HEADER_BYTES..];
    if Some(body.len()) != h.rows.checked_mul(codec.slot_bytes()) {
        return Err(Error::CodeFile(format!(
            "code file says {} rows of {} bytes but holds {} bytes of slots",
            h.rows,
            codec.slot_bytes(),
            body.len()
        )));
    }
    Ok(CodeFile {
        codec,
        rows: h.rows,
        slots: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid code file of 3 rows of d = 64, k = 4, N = 16 (18-byte slots), and its codec.
    fn small_file() -> (Vec<u8>, Codec) {
        let codec = Codec::new(CodecConfig::new(64, 4, 16)).unwrap();
        let data: Vec<f32> = (0..3 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut slots = vec![0u8; 3 * codec.slot_bytes()];
        codec.encode_batch(&data, &mut slots).unwrap();
        let bytes = to_bytes(&codec, 3, &slots, embedded_tag(64, 4, 16).unwrap()).unwrap();
        (bytes, codec)
    }

    /// Parses and, when the parse succeeds, decodes: neither may panic.
    fn parse_and_decode(bytes: &[u8], codebook: Option<&CodebookFile>) -> Result<Vec<f32>> {
        let file = parse(bytes, codebook)?;
        let mut out = vec![0f32; file.rows * file.codec.dim()];
        file.codec.decode_batch(&file.slots, &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_and_every_truncation_and_byte_change_is_handled() {
        let (bytes, codec) = small_file();
        let decoded = parse_and_decode(&bytes, None).unwrap();
        assert_eq!(decoded.len(), 3 * 64);
        let embedded = fibquant::registry::codebook(64, 4, 16).unwrap();
        let cb = CodebookFile {
            path: "embedded".into(),
            codebook: embedded,
            tag: embedded_tag(64, 4, 16).unwrap(),
        };
        assert_eq!(parse_and_decode(&bytes, Some(&cb)).unwrap(), decoded);
        assert_eq!(bytes.len(), HEADER_BYTES + 3 * codec.slot_bytes());
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len], None).is_err(), "truncated to {len}");
            assert!(
                parse(&bytes[..len], Some(&cb)).is_err(),
                "truncated to {len}"
            );
        }
        // Every value of every byte, header and body. A changed header byte must be refused
        // (every field is checked, the tag ties it to the codebook) except the seed's and the
        // Hadamard round count's (1 to 8 are valid), which decode to other vectors; a changed body byte may decode to other values or be refused
        // (index >= N, bad norm).
        for pos in 0..bytes.len() {
            for v in 0..=255u8 {
                if v == bytes[pos] {
                    continue;
                }
                let mut m = bytes.clone();
                m[pos] = v;
                let r = std::panic::catch_unwind(|| {
                    (parse_and_decode(&m, None), parse_and_decode(&m, Some(&cb)))
                });
                let (a, b) = r.unwrap_or_else(|_| panic!("panic at byte {pos} = {v:#x}"));
                if pos < HEADER_BYTES && !(32..40).contains(&pos) && !(24..28).contains(&pos) {
                    assert!(a.is_err() && b.is_err(), "byte {pos} = {v:#x} accepted");
                }
            }
        }
    }

    #[test]
    fn hostile_row_counts_are_refused_before_allocating() {
        let (bytes, _) = small_file();
        for rows in [1u64 << 60, u64::MAX, u64::MAX / 18 + 1, 4] {
            let mut m = bytes.clone();
            m[40..48].copy_from_slice(&rows.to_le_bytes());
            let err = parse(&m, None).unwrap_err().to_string();
            assert!(err.contains("rows"), "{rows}: {err}");
        }
    }

    #[test]
    fn another_codebook_is_refused_naming_both_checksums() {
        let (mut bytes, _) = small_file();
        bytes[48] ^= 1;
        let err = parse(&bytes, None).unwrap_err().to_string();
        assert!(err.contains("--codebook PATH"), "{err}");
        let other = CodebookFile {
            path: "other.fqcb.zst".into(),
            codebook: fibquant::registry::codebook(64, 2, 16).unwrap(),
            tag: embedded_tag(64, 2, 16).unwrap(),
        };
        let err = parse(&bytes, Some(&other)).unwrap_err().to_string();
        assert!(err.contains("holds d=64 k=2 n=16"), "{err}");
    }
}
