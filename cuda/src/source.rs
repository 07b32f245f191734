//! The CUDA C kernels and the constants one configuration compiles them with: the one place
//! that turns a cache's codes into kernel parameters and shared-memory sizes.

use crate::error::{Error, Result};
use fibquant::Codec;

/// The decode kernels (`prepare`, `attend`, `combine`).
pub const DECODE_CU: &str = include_str!("../kernels/decode.cu");
/// The encode kernel.
pub const ENCODE_CU: &str = include_str!("../kernels/encode.cu");

/// Threads per `attend` CTA.
pub const THREADS: usize = 128;
/// Positions each `attend` thread scores per tile.
pub const POSITIONS_PER_THREAD: usize = 2;
/// Positions per tile of `attend`.
pub const TILE: usize = THREADS * POSITIONS_PER_THREAD;
/// Largest head dim the kernels serve (the combine buffer reuses the tile's weights: `D <= 2 TILE`).
pub const MAX_DIM: usize = 256;
/// Largest codebook a kernel holds in shared memory (f32), per side.
pub const MAX_SHARED_CODEBOOK_BYTES: usize = 64 * 1024;

/// How one side's slots are laid out and decoded (the runtime's [`Codec`] layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SideFormat {
    /// Block size `k`.
    pub k: usize,
    /// Codebook size `N`.
    pub n: usize,
    /// Bits per index (`ceil(log2 N)`).
    pub bits: u32,
    /// Bytes per slot.
    pub slot_bytes: usize,
    /// Norms stored as f32 (else binary16).
    pub norm_f32: bool,
    /// Rows stored minus their block's mean.
    pub center: bool,
}

impl SideFormat {
    /// The format of `codec`'s slots, centered or not.
    pub fn of(codec: &Codec, center: bool) -> SideFormat {
        SideFormat {
            k: codec.codebook().k(),
            n: codec.codebook().n(),
            bits: codec.index_bits(),
            slot_bytes: codec.slot_bytes(),
            norm_f32: codec.config().norm == fibquant::NormFormat::F32,
            center,
        }
    }

    /// Blocks per vector of head dim `d`.
    pub fn blocks(&self, d: usize) -> usize {
        d / self.k
    }

    fn codebook_bytes(&self) -> usize {
        self.n * self.k * 4
    }

    fn check(&self, d: usize, side: &str) -> Result<()> {
        if self.k == 0 || !d.is_multiple_of(self.k) {
            return Err(Error::Unsupported(format!(
                "{side}: k = {} does not divide d = {d}",
                self.k
            )));
        }
        let nb = self.blocks(d);
        if !(nb.is_multiple_of(32) || 32 % nb == 0) {
            return Err(Error::Unsupported(format!(
                "{side}: {nb} blocks per vector (d / k) must divide 32 or be a multiple of it"
            )));
        }
        if self.codebook_bytes() > MAX_SHARED_CODEBOOK_BYTES {
            return Err(Error::Unsupported(format!(
                "{side}: a codebook of {} codewords of {} values takes {} bytes, above the {} a \
                 kernel holds in shared memory (choose a code with `gpu_code`)",
                self.n,
                self.k,
                self.codebook_bytes(),
                MAX_SHARED_CODEBOOK_BYTES
            )));
        }
        if self.bits > 16 {
            return Err(Error::Unsupported(format!(
                "{side}: indices of {} bits",
                self.bits
            )));
        }
        Ok(())
    }

    fn defines(&self, prefix: &str, d: usize, out: &mut String) {
        let mut def =
            |name: &str, v: usize| out.push_str(&format!("#define {prefix}_{name} {v}\n"));
        def("CODED", 1);
        def("K", self.k);
        def("N", self.n);
        def("BITS", self.bits as usize);
        def("NB", self.blocks(d));
        def("SLOT", self.slot_bytes);
        def("NORM_F32", usize::from(self.norm_f32));
        def("CENTER", usize::from(self.center));
    }
}

/// What one compiled `decode.cu` serves: head dim, group size and both sides' formats
/// (`None`: the side is fp16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeConfig {
    /// Head dim `d`.
    pub dim: usize,
    /// Query heads per kv head.
    pub group: usize,
    /// The keys' slots (`None`: fp16 keys).
    pub key: Option<SideFormat>,
    /// The values' slots (`None`: fp16 values).
    pub value: Option<SideFormat>,
}

impl DecodeConfig {
    /// Checks that the kernels serve this configuration.
    pub fn check(&self) -> Result<()> {
        let d = self.dim;
        if d == 0 || !d.is_multiple_of(32) || d > MAX_DIM {
            return Err(Error::Unsupported(format!(
                "head dim {d}: the kernels serve multiples of 32 up to {MAX_DIM}"
            )));
        }
        if self.group == 0 || self.group > 16 {
            return Err(Error::Unsupported(format!(
                "{} query heads per kv head: the kernels serve 1 to 16",
                self.group
            )));
        }
        if let Some(k) = &self.key {
            k.check(d, "keys")?;
        }
        if let Some(v) = &self.value {
            v.check(d, "values")?;
        }
        Ok(())
    }

    /// The source NVRTC compiles: the constants, then `decode.cu`.
    pub fn source(&self) -> String {
        let mut s = format!(
            "#define D {}\n#define G {}\n#define THREADS {THREADS}\n#define PPT {POSITIONS_PER_THREAD}\n#define TILE {TILE}\n",
            self.dim, self.group
        );
        for (prefix, side) in [("KEY", &self.key), ("VAL", &self.value)] {
            match side {
                Some(f) => f.defines(prefix, self.dim, &mut s),
                None => s.push_str(&format!(
                    "#define {prefix}_CODED 0\n#define {prefix}_K 1\n#define {prefix}_N 0\n#define {prefix}_BITS 8\n#define {prefix}_NB 32\n#define {prefix}_SLOT 0\n#define {prefix}_NORM_F32 0\n#define {prefix}_CENTER 0\n"
                )),
            }
        }
        s.push_str(DECODE_CU);
        s
    }

    /// Dynamic shared memory of one `attend` CTA, in bytes (the layout at the top of `attend`).
    pub fn attend_shared_bytes(&self) -> usize {
        let (d, g) = (self.dim, self.group);
        let warps = THREADS / 32;
        let floats = 2 * g * d + 3 * TILE * g + warps * g;
        let mut bytes = floats * 4 + TILE * 4; // + the value blocks (int per position)
        for side in [&self.key, &self.value].into_iter().flatten() {
            bytes += side.codebook_bytes().next_multiple_of(16);
        }
        for side in [&self.key, &self.value].into_iter().flatten() {
            bytes += TILE * side.slot_bytes + 16;
        }
        bytes.next_multiple_of(16)
    }
}

/// What one compiled `encode.cu` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncodeConfig {
    /// Head dim `d`.
    pub dim: usize,
    /// The slots' format (`center` is not used: rows arrive with their mean removed).
    pub format: SideFormat,
    /// A scalar code (`k = 1`) with sorted codewords: thresholds instead of a search.
    pub scalar: bool,
}

impl EncodeConfig {
    /// Checks that the encode kernel serves this configuration.
    pub fn check(&self) -> Result<()> {
        let d = self.dim;
        if d == 0 || !d.is_multiple_of(32) || d > 1024 {
            return Err(Error::Unsupported(format!(
                "head dim {d}: the encoder serves multiples of 32 up to 1024"
            )));
        }
        let f = &self.format;
        if f.codebook_bytes() > MAX_SHARED_CODEBOOK_BYTES {
            return Err(Error::Unsupported(format!(
                "encoding with {} codewords: the GPU searches codebooks of at most {} bytes \
                 exhaustively; larger ones (the E8-orbit and IVF searches) stay on the CPU",
                f.n, MAX_SHARED_CODEBOOK_BYTES
            )));
        }
        let index_bytes = f.slot_bytes - if f.norm_f32 { 4 } else { 2 };
        if f.blocks(d) > d || index_bytes > d {
            return Err(Error::Unsupported("more index bytes than threads".into()));
        }
        Ok(())
    }

    /// The source NVRTC compiles.
    pub fn source(&self) -> String {
        let f = &self.format;
        format!(
            "#define D {}\n#define K {}\n#define N {}\n#define BITS {}\n#define NB {}\n#define NORM_F32 {}\n#define SLOT {}\n#define SCALAR {}\n{ENCODE_CU}",
            self.dim,
            f.k,
            f.n,
            f.bits,
            f.blocks(self.dim),
            usize::from(f.norm_f32),
            f.slot_bytes,
            usize::from(self.scalar)
        )
    }

    /// Dynamic shared memory of one `encode` CTA, in bytes.
    pub fn shared_bytes(&self) -> usize {
        let f = &self.format;
        let d = self.dim;
        let cb = if self.scalar { 0 } else { f.n * f.k + f.n };
        (cb + 2 * d + 1) * 4 + (d / 32 + 1) * 8 + f.blocks(d) * 4 + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fibquant::CodecConfig;

    fn format(d: usize, k: usize, n: usize) -> SideFormat {
        SideFormat::of(&Codec::new(CodecConfig::new(d, k, n)).unwrap(), false)
    }

    #[test]
    fn formats_follow_the_runtime_slots() {
        let f = format(128, 4, 256);
        assert_eq!((f.bits, f.slot_bytes, f.blocks(128)), (8, 2 + 32, 32));
        let f = format(64, 4, 4096);
        assert_eq!((f.bits, f.slot_bytes), (12, 2 + 24));
    }

    #[test]
    fn unsupported_shapes_are_typed_errors() {
        let big = DecodeConfig {
            dim: 128,
            group: 4,
            key: Some(format(128, 4, 65536)),
            value: None,
        };
        assert!(matches!(big.check(), Err(Error::Unsupported(_))));
        let odd = DecodeConfig {
            dim: 96,
            group: 4,
            key: None,
            value: None,
        };
        assert!(odd.check().is_ok());
        let wide = DecodeConfig {
            dim: 512,
            group: 4,
            key: None,
            value: None,
        };
        assert!(matches!(wide.check(), Err(Error::Unsupported(_))));
        let enc = EncodeConfig {
            dim: 128,
            format: format(128, 8, 65536),
            scalar: false,
        };
        assert!(matches!(enc.check(), Err(Error::Unsupported(_))));
    }

    #[test]
    fn the_source_defines_every_constant_the_kernels_use() {
        let c = DecodeConfig {
            dim: 128,
            group: 8,
            key: Some(format(128, 4, 256)),
            value: None,
        };
        let src = c.source();
        for name in ["D", "G", "THREADS", "PPT", "TILE"] {
            assert!(src.contains(&format!("#define {name} ")), "{name}");
        }
        for side in ["KEY", "VAL"] {
            for name in [
                "CODED", "K", "N", "BITS", "NB", "SLOT", "NORM_F32", "CENTER",
            ] {
                assert!(
                    src.contains(&format!("#define {side}_{name} ")),
                    "{side}_{name}"
                );
            }
        }
    }
}
