//! The code files `fibquant-gen encode` writes and `decode` reads: the format is the runtime's
//! ([`fibquant::CodeFile`], version 2 with checksums of header and slots; version 1 still
//! reads); this module ties it to the codebook files given on the command line.

use crate::error::{Error, IoAction, Result};
use fibquant::{CodeFileHeader, Codebook, CodebookTag, Codec};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Header size of the files `encode` writes.
pub const HEADER_BYTES: usize = fibquant::codec::codefile::HEADER_BYTES;

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

/// The header of a code file (the runtime's).
pub type Header = CodeFileHeader;

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
    Ok(CodebookTag::embedded(d, k, n)?.0)
}

/// Serializes a code file (version 2) whose slots were encoded with the codebook file whose
/// tag is `codebook_tag` ([`embedded_tag`] or [`CodebookFile::tag`]).
pub fn to_bytes(
    codec: &Codec,
    rows: usize,
    slots: &[u8],
    codebook_tag: [u8; 8],
) -> Result<Vec<u8>> {
    if Some(slots.len()) != rows.checked_mul(codec.slot_bytes()) {
        return Err(Error::CodeFile(format!(
            "{} bytes of slots are not {rows} rows of {} bytes",
            slots.len(),
            codec.slot_bytes()
        )));
    }
    Ok(fibquant::CodeFile::to_bytes(
        codec,
        slots,
        CodebookTag(codebook_tag),
    )?)
}

/// Parses and range-checks the header of a code file.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    Ok(fibquant::CodeFile::parse_header(bytes)?)
}

/// Parses a code file. Its codec is rebuilt on `codebook` when given (which must be the file the
/// slots were encoded with: same shape and tag), otherwise on the embedded codebook of the
/// header's `(d, k, n)` (whose tag must match). The slot count is checked against the file's
/// length before anything is allocated.
pub fn parse(bytes: &[u8], codebook: Option<&CodebookFile>) -> Result<CodeFile> {
    let file = fibquant::CodeFile::parse(bytes)?;
    let h = &file.header;
    let (d, k, n) = (h.dim, h.k, h.n);
    let codec = match codebook {
        Some(cb) => {
            let c = &cb.codebook;
            if (c.dim(), c.k(), c.n()) != (d, k, n) {
                return Err(Error::CodeFile(format!(
                    "the code file is for d={d} k={k} n={n}, --codebook {} holds d={} k={} n={}",
                    cb.path.display(),
                    c.dim(),
                    c.k(),
                    c.n()
                )));
            }
            if cb.tag != h.codebook.0 {
                return Err(Error::CodeFile(format!(
                    "the code file was written with another codebook for d={d} k={k} n={n}: its header's checksum prefix is {}, --codebook {} has {}",
                    h.codebook.hex(),
                    cb.path.display(),
                    hex(&cb.tag)
                )));
            }
            file.codec_with(cb.codebook.clone(), h.codebook)?
        }
        None => {
            let tag = embedded_tag(d, k, n)?;
            if tag != h.codebook.0 {
                return Err(Error::CodeFile(format!(
                    "the code file was written with a codebook other than the embedded one for d={d} k={k} n={n} (header checksum prefix {}, embedded {}); decode with the codebook file it was encoded with: --codebook PATH",
                    h.codebook.hex(),
                    hex(&tag)
                )));
            }
            file.codec()?
        }
    };
    Ok(CodeFile {
        codec,
        rows: file.header.rows,
        slots: file.slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid code file of 3 rows of d = 64, k = 4, N = 16 (18-byte slots), and its codec.
    fn small_file() -> (Vec<u8>, Codec) {
        let codec = Codec::new(fibquant::CodecConfig::new(64, 4, 16)).unwrap();
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
        // Every value of every byte, header and body: version 2 checksums both, so every change
        // is refused, and nothing panics.
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
                assert!(a.is_err() && b.is_err(), "byte {pos} = {v:#x} accepted");
            }
        }
    }

    #[test]
    fn hostile_row_counts_are_refused_before_allocating() {
        let (bytes, _) = small_file();
        // With the header checksum recomputed, so that the row count itself is what is refused.
        for rows in [1u64 << 60, u64::MAX, u64::MAX / 18 + 1, 4] {
            let mut m = bytes.clone();
            m[40..48].copy_from_slice(&rows.to_le_bytes());
            let crc = fibquant::util::crc::crc32c(&m[..56]);
            m[56..60].copy_from_slice(&crc.to_le_bytes());
            let err = parse(&m, None).unwrap_err().to_string();
            assert!(err.contains("rows"), "{rows}: {err}");
        }
    }

    #[test]
    fn another_codebook_is_refused_naming_both_checksums() {
        let (bytes, codec) = small_file();
        let mut tag = embedded_tag(64, 4, 16).unwrap();
        tag[0] ^= 1;
        let slots = &bytes[HEADER_BYTES..];
        let bytes = to_bytes(&codec, 3, slots, tag).unwrap();
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
