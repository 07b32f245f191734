//! Code files: slots of many vectors with a header that names their codec, so that decoding
//! needs no settings (what `fibquant-gen encode` writes and `decode` reads).
//!
//! # Version 2 (what [`CodeFile::to_bytes`] writes)
//! Little-endian throughout:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FQCD` |
//! | 4 | 4 | u32 version (2) |
//! | 8 | 4 | u32 `d` |
//! | 12 | 4 | u32 `k` |
//! | 16 | 4 | u32 `N` |
//! | 20 | 4 | u32 rotation: 0 = randomized Hadamard, 1 = dense Haar |
//! | 24 | 4 | u32 Hadamard rounds (1 to 8; 0 for Haar) |
//! | 28 | 4 | u32 norm format: 0 = fp16, 1 = f32 |
//! | 32 | 8 | u64 rotation seed |
//! | 40 | 8 | u64 number of rows |
//! | 48 | 8 | the codebook's tag: the first 8 bytes of its file's sha256 ([`CodebookTag`]) |
//! | 56 | 4 | u32 CRC-32C of bytes 0 to 55 |
//! | 60 | 4 | u32 CRC-32C of the slots |
//! | 64 | rows x slot bytes | the slots ([`crate::Codec`]'s slot layout) |
//!
//! Both checksums are verified on every parse, so every change of a single byte is refused.
//!
//! # Version 1
//! The same fields without the two checksums: the slots start at byte 56. Version-1 files still
//! parse, unchecked ([`crate::Integrity::Unchecked`]): a changed seed or round count decodes
//! without an error to other vectors.

use crate::codebook::{Codebook, Integrity};
use crate::codec::rotation::{Rotation, RotationKind};
use crate::codec::{Codec, CodecConfig, NormFormat};
use crate::error::{Error, Result};
use crate::registry;
use crate::util::crc::crc32c;
use std::sync::Arc;

/// Magic of code files.
pub const MAGIC: [u8; 4] = *b"FQCD";
/// The version [`CodeFile::to_bytes`] writes.
pub const VERSION: u32 = 2;
/// Header bytes of a version-2 file (the slots follow).
pub const HEADER_BYTES: usize = 64;
/// Header bytes of a version-1 file.
pub const V1_HEADER_BYTES: usize = 56;

/// Which codebook file slots were encoded with: the first 8 bytes of the file's sha256. The
/// registry's are in its manifest ([`CodebookTag::embedded`]); for a file of one's own, hash it
/// (`fibquant-gen encode --codebook` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodebookTag(pub [u8; 8]);

impl CodebookTag {
    /// The tag of the embedded codebook for `(dim, k, n)`.
    pub fn embedded(dim: usize, k: usize, n: usize) -> Result<CodebookTag> {
        let e = registry::entries()
            .find(|e| (e.dim, e.k, e.n) == (dim, k, n))
            .ok_or(Error::UnknownRate { dim, k, n })?;
        let mut tag = [0u8; 8];
        for (i, t) in tag.iter_mut().enumerate() {
            *t = e
                .sha256
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::CorruptCodebook(format!("{}: sha256 is not hex", e.file))
                })?;
        }
        Ok(CodebookTag(tag))
    }

    /// The tag as 16 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The header of a code file, every field range-checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeFileHeader {
    /// File version (1 or 2).
    pub version: u32,
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
    /// The codebook the slots were encoded with.
    pub codebook: CodebookTag,
}

impl CodeFileHeader {
    /// The codec configuration the header names.
    pub fn config(&self) -> CodecConfig {
        CodecConfig::new(self.dim, self.k, self.n)
            .with_rotation(self.rotation)
            .with_norm(self.norm)
            .with_seed(self.seed)
    }
}

/// A parsed code file: its header, whether its checksums were verified, and its slots.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeFile {
    /// The header.
    pub header: CodeFileHeader,
    /// `Checked` for version 2 (both checksums verified), `Unchecked` for version 1.
    pub integrity: Integrity,
    /// The slots, `rows x slot_bytes` bytes.
    pub slots: Vec<u8>,
}

fn corrupt(message: String) -> Error {
    Error::CorruptCodeFile(message)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

impl CodeFile {
    /// Serializes `slots` (whole slots of `codec`) encoded with the codebook `tag` names, as a
    /// version-2 file.
    pub fn to_bytes(codec: &Codec, slots: &[u8], tag: CodebookTag) -> Result<Vec<u8>> {
        let rows = codec.slot_count(slots)?;
        let c = codec.config();
        let (rotation, rounds) = match codec.rotation() {
            Rotation::Hadamard { signs, .. } => (0u32, signs.len() as u32),
            Rotation::Dense { .. } => (1u32, 0u32),
        };
        let norm = match c.norm {
            NormFormat::F16 => 0u32,
            NormFormat::F32 => 1u32,
        };
        let field = |v: usize, what: &str| {
            u32::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit a code file")))
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + slots.len());
        out.extend_from_slice(&MAGIC);
        for v in [
            VERSION,
            field(c.dim, "dim")?,
            field(c.k, "k")?,
            field(c.n, "n")?,
            rotation,
            rounds,
            norm,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&c.seed.to_le_bytes());
        out.extend_from_slice(&(rows as u64).to_le_bytes());
        out.extend_from_slice(&tag.0);
        let header_crc = crc32c(&out);
        out.extend_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&crc32c(slots).to_le_bytes());
        out.extend_from_slice(slots);
        Ok(out)
    }

    /// Parses and checks the header of a code file (its first 56 or 64 bytes; for version 2 the
    /// header checksum too).
    pub fn parse_header(bytes: &[u8]) -> Result<CodeFileHeader> {
        if bytes.len() < 8 {
            return Err(corrupt(format!(
                "not a FibQuant code file ({} bytes)",
                bytes.len()
            )));
        }
        if bytes[..4] != MAGIC {
            return Err(corrupt("not a FibQuant code file (bad magic)".into()));
        }
        let version = u32_at(bytes, 4);
        let header_bytes = match version {
            1 => V1_HEADER_BYTES,
            2 => HEADER_BYTES,
            v => {
                return Err(corrupt(format!(
                    "code file version {v} is not supported (this runtime reads 1 and 2)"
                )))
            }
        };
        let Some(h) = bytes.get(..header_bytes) else {
            return Err(corrupt(format!(
                "truncated header: {} of {header_bytes} bytes",
                bytes.len()
            )));
        };
        if version == 2 {
            let (want, got) = (u32_at(h, 56), crc32c(&h[..56]));
            if want != got {
                return Err(corrupt(format!(
                    "header checksum mismatch: the file is corrupt (CRC-32C {got:#010x}, recorded {want:#010x})"
                )));
            }
        }
        let rotation = match (u32_at(h, 20), u32_at(h, 24)) {
            (0, r @ 1..=8) => RotationKind::Hadamard { rounds: r as u8 },
            (0, r) => {
                return Err(corrupt(format!(
                    "Hadamard rotation with {r} rounds (1 to 8 are valid)"
                )))
            }
            (1, 0) => RotationKind::Haar,
            (1, r) => {
                return Err(corrupt(format!(
                    "dense Haar rotation with {r} rounds (must be 0)"
                )))
            }
            (r, _) => return Err(corrupt(format!("unknown rotation code {r}"))),
        };
        let norm = match u32_at(h, 28) {
            0 => NormFormat::F16,
            1 => NormFormat::F32,
            v => return Err(corrupt(format!("unknown norm format {v}"))),
        };
        let rows = u64_at(h, 40);
        let rows = usize::try_from(rows)
            .map_err(|_| corrupt(format!("{rows} rows do not fit this machine's memory")))?;
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&h[48..56]);
        Ok(CodeFileHeader {
            version,
            dim: u32_at(h, 8) as usize,
            k: u32_at(h, 12) as usize,
            n: u32_at(h, 16) as usize,
            rotation,
            norm,
            seed: u64_at(h, 32),
            rows,
            codebook: CodebookTag(tag),
        })
    }

    /// Parses a code file: the header, the slot count against the file's length (before
    /// anything is allocated), and for version 2 both checksums.
    pub fn parse(bytes: &[u8]) -> Result<CodeFile> {
        let header = CodeFile::parse_header(bytes)?;
        let header_bytes = if header.version == 1 {
            V1_HEADER_BYTES
        } else {
            HEADER_BYTES
        };
        let body = &bytes[header_bytes..];
        let c = header.config();
        crate::codebook::check_shape(c.dim, c.k, c.n)?;
        let slot_bytes = c.slot_bytes();
        if Some(body.len()) != header.rows.checked_mul(slot_bytes) {
            return Err(corrupt(format!(
                "the header says {} rows of {slot_bytes} bytes, the file holds {} bytes of slots",
                header.rows,
                body.len()
            )));
        }
        let integrity = if header.version == 2 {
            let (want, got) = (u32_at(bytes, 60), crc32c(body));
            if want != got {
                return Err(corrupt(format!(
                    "slot checksum mismatch: the file is corrupt (CRC-32C {got:#010x}, recorded {want:#010x})"
                )));
            }
            Integrity::Checked
        } else {
            Integrity::Unchecked
        };
        Ok(CodeFile {
            header,
            integrity,
            slots: body.to_vec(),
        })
    }

    /// The codec that decodes the slots: on the embedded codebook the header names, whose tag
    /// must match (a file encoded with a codebook of one's own needs
    /// [`codec_with`](Self::codec_with)).
    pub fn codec(&self) -> Result<Codec> {
        let h = &self.header;
        let tag = CodebookTag::embedded(h.dim, h.k, h.n)?;
        if tag != h.codebook {
            return Err(corrupt(format!(
                "the slots were encoded with a codebook other than the embedded one for d={} k={} n={} (tag {}, embedded {}): decode them with the codebook file they were encoded with",
                h.dim,
                h.k,
                h.n,
                h.codebook.hex(),
                tag.hex()
            )));
        }
        Codec::new(h.config())
    }

    /// The codec that decodes the slots, on `codebook`, whose file's tag is `tag` (it must be
    /// the header's).
    pub fn codec_with(&self, codebook: Arc<Codebook>, tag: CodebookTag) -> Result<Codec> {
        let h = &self.header;
        if (codebook.dim(), codebook.k(), codebook.n()) != (h.dim, h.k, h.n) {
            return Err(corrupt(format!(
                "the code file is for d={} k={} n={}, the codebook holds d={} k={} n={}",
                h.dim,
                h.k,
                h.n,
                codebook.dim(),
                codebook.k(),
                codebook.n()
            )));
        }
        if tag != h.codebook {
            return Err(corrupt(format!(
                "the slots were encoded with another codebook for d={} k={} n={}: the header's tag is {}, this codebook's {}",
                h.dim,
                h.k,
                h.n,
                h.codebook.hex(),
                tag.hex()
            )));
        }
        Codec::with_codebook(h.config(), codebook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (Vec<u8>, Codec, Vec<u8>) {
        let codec = Codec::new(CodecConfig::new(64, 4, 16)).unwrap();
        let data: Vec<f32> = (0..3 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut slots = vec![0u8; 3 * codec.slot_bytes()];
        codec.encode_batch(&data, &mut slots).unwrap();
        let tag = CodebookTag::embedded(64, 4, 16).unwrap();
        (CodeFile::to_bytes(&codec, &slots, tag).unwrap(), codec, slots)
    }

    #[test]
    fn round_trip_through_the_embedded_codebook() {
        let (bytes, codec, slots) = small();
        let file = CodeFile::parse(&bytes).unwrap();
        assert_eq!((file.header.rows, file.integrity), (3, Integrity::Checked));
        assert_eq!(file.slots, slots);
        // The header's codec decodes the slots as the encoder's does.
        let (mut want, mut got) = (vec![0f32; 3 * 64], vec![0f32; 3 * 64]);
        codec.decode_batch(&slots, &mut want).unwrap();
        file.codec().unwrap().decode_batch(&file.slots, &mut got).unwrap();
        assert_eq!(got, want);
        let other = CodebookTag::embedded(64, 2, 16).unwrap();
        assert!(file
            .codec_with(registry::codebook(64, 4, 16).unwrap(), other)
            .is_err());
    }

    #[test]
    fn every_single_byte_change_and_truncation_is_refused() {
        let (bytes, _, _) = small();
        for pos in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[pos] ^= flip;
                assert!(
                    matches!(CodeFile::parse(&bad), Err(Error::CorruptCodeFile(_))),
                    "byte {pos} ^ {flip:#x} was not detected"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(CodeFile::parse(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn version_1_files_still_parse_unchecked() {
        let (bytes, _, slots) = small();
        let mut v1 = bytes[..V1_HEADER_BYTES].to_vec();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&slots);
        let file = CodeFile::parse(&v1).unwrap();
        assert_eq!((file.integrity, &file.slots), (Integrity::Unchecked, &slots));
        // Hostile row counts are refused before anything is allocated.
        for rows in [1u64 << 60, u64::MAX, u64::MAX / 18 + 1, 4] {
            let mut m = v1.clone();
            m[40..48].copy_from_slice(&rows.to_le_bytes());
            assert!(CodeFile::parse(&m).is_err(), "{rows}");
        }
    }
}
