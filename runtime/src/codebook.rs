//! A codebook of `n` codewords in `R^k` for head dim `d`, its file format, and nearest-codeword
//! search.
//!
//! # File format (version 1)
//! A codebook file is one zstd frame. Decompressed, it is (all integers and floats little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FQCB` |
//! | 4 | 4 | u32 format version (1) |
//! | 8 | 4 | u32 `d`, head dimension |
//! | 12 | 4 | u32 `k`, block size |
//! | 16 | 4 | u32 `n`, number of codewords |
//! | 20 | 4 | u32 construction: 0 = exact scalar Lloyd-Max (k = 1), 1 = radial-angular init + Lloyd, 2 = E8-lattice orbits with one fitted scale each ([`crate::orbits`]) |
//! | 24 | 8 | u64 seed |
//! | 32 | 4 | u32 training samples per codeword (M / N) |
//! | 36 | 4 | u32 Lloyd restarts |
//! | 40 | 4 | u32 Lloyd iterations |
//! | 44 | 4 | u32 generator construction version |
//! | 48 | 4·n·k | f32 codewords, codeword-major (`c[0][0..k]`, `c[1][0..k]`, ...) |

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
    /// (`k = 8`); searched exactly by [`crate::orbits::OrbitIndex`], and refused on load unless
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

/// A codebook: `n` codewords of `k` coordinates for head dim `dim`, with precomputed squared
/// norms for nearest-codeword search.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    dim: usize,
    k: usize,
    n: usize,
    codewords: Vec<f32>,
    norms_sq: Vec<f32>,
    index: SearchIndex,
    /// The exact orbit search, where the codewords are whole signed-permutation orbits
    /// ([`crate::orbits`]); it answers every search.
    orbits: Option<crate::orbits::OrbitIndex>,
    ivf: Option<crate::ivf::IvfIndex>,
    /// The exact grid search ([`crate::cells`]), built on first use where [`cells_per_dim`]
    /// names a grid.
    cells: LazyCells,
    /// The exact ball-pruned search ([`crate::balls`]), built on first use where neither a
    /// grid nor an inverted file applies.
    balls: LazyBalls,
    /// The certified shortlists ([`crate::shortlist`]), built on first use where
    /// [`shortlist_shape`] names them.
    shortlist: LazyShortlist,
    /// k = 1 with ascending levels: the midpoints between neighbours. The nearest level of `x`
    /// is the number of midpoints below `x`.
    thresholds: Option<Vec<f32>>,
    header: Option<CodebookHeader>,
}

/// Codebooks with at least this many codewords encode through an [`crate::ivf::IvfIndex`]
/// (approximate search, [`crate::ivf::encoder_probes`] probed cells) by default, for the blocks
/// that the certified shortlists ([`Codebook::shortlist`], exact) leave open where they apply
/// (`k = 4`), and for every block otherwise; smaller ones search exactly (shortlists, a grid,
/// the ball index of [`crate::balls`], or exhaustively). `fibquant-gen
/// bench` measures the MSE this costs against exhaustive
/// search (at most 0.01 dB at N = 65536). Not used at N = 4096: there, 4 of 64 cells lost only
/// 0.008 dB on source samples but raised the perplexity of the real model by 1.0 at b = 3
/// (46.96 -> 47.97, `fibquant-eval perplexity --k-code 4x4096 --v-code 4x4096`).
pub const IVF_THRESHOLD: usize = 16384;

/// Cells per coordinate of the exact grid search ([`crate::cells::CellIndex`]) used for `k`
/// and `n`, or `None` where exhaustive search is used. Chosen with
/// `cargo run --release -p fibquant --example cells_sweep` (candidates searched, memory and
/// speed per grid size, checked against exhaustive search): from 1.8x (k = 2, N = 64) to 18x
/// to 23x (k = 3, N = 4096) faster than exhaustive for the registry's `k` = 2 to 4 codebooks up to
/// these sizes, depending on the machine, with grids of 33 KiB (k = 2) to 3.7 MiB (k = 4,
/// N = 1024). Larger `k = 4` codebooks need grids of tens of MiB, and at `k = 8`
/// a grid of 8-dimensional cells searches as many codewords as the whole codebook.
pub fn cells_per_dim(k: usize, n: usize) -> Option<usize> {
    match (k, n) {
        (_, 0..=15) => None,
        (2, ..=4096) => Some(16),
        (3, ..=4096) => Some(12),
        (4, ..=256) => Some(6),
        (4, ..=1024) => Some(8),
        _ => None,
    }
}

/// The lazily built grid of a [`Codebook`]: derived data, so it takes no part in equality.
#[derive(Debug, Clone, Default)]
struct LazyCells(std::sync::OnceLock<Option<crate::cells::CellIndex>>);

impl PartialEq for LazyCells {
    fn eq(&self, _: &LazyCells) -> bool {
        true
    }
}

/// The lazily built ball index of a [`Codebook`]: derived data, so it takes no part in equality.
#[derive(Debug, Clone, Default)]
struct LazyBalls(std::sync::OnceLock<Option<crate::balls::BallIndex>>);

impl PartialEq for LazyBalls {
    fn eq(&self, _: &LazyBalls) -> bool {
        true
    }
}

/// The lazily built shortlists of a [`Codebook`]: derived data, so it takes no part in equality.
#[derive(Debug, Clone, Default)]
struct LazyShortlist(std::sync::OnceLock<Option<crate::shortlist::ShortlistIndex>>);

impl PartialEq for LazyShortlist {
    fn eq(&self, _: &LazyShortlist) -> bool {
        true
    }
}

/// Shape `(cells per coordinate, candidates per tier, tiers)` of the certified shortlists
/// ([`crate::shortlist::ShortlistIndex`]) that [`Codebook::nearest`] tries first for `k` and
/// `n`, or `None` where they are not used (scalar codes, codebooks with an exact grid
/// ([`cells_per_dim`]), `k = 8`). Chosen with `cargo run --release -p fibquant --example
/// shortlist_stats` (fraction of source blocks certified, build time, memory): for the
/// registry's `k = 4` codebooks of 2048 and 4096 codewords, 12 cells per coordinate and two
/// tiers of 16 certify 99.4 % of blocks in 1.5 MiB; for 65536 codewords, 16 per coordinate and
/// four tiers of 16 certify 99.6 % in 10 MiB (three tiers: 99.1 %, and each block left open
/// costs an inverted-file search, 20 times a certified one).
pub fn shortlist_shape(k: usize, n: usize) -> Option<(usize, usize, usize)> {
    if cells_per_dim(k, n).is_some() {
        return None;
    }
    match (k, n) {
        (4, 1025..=8192) => Some((12, 16, 2)),
        (4, 8193..=65536) => Some((16, 16, 4)),
        _ => None,
    }
}

/// Codewords per group in [`SearchIndex`].
pub const LANES: usize = 8;

/// Exhaustive nearest-codeword search over codewords laid out in groups of [`LANES`]: within a
/// group, coordinate `j` of the 8 codewords is contiguous, so the 8 distances are computed in
/// independent lanes (the compiler vectorizes this portable code). The result is identical to
/// [`nearest_scalar`], ties included (lowest index wins).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchIndex {
    k: usize,
    n: usize,
    isa: crate::kernels::Isa,
    /// `groups * k * LANES` coordinates; padding codewords are zero.
    lanes: Vec<f32>,
    /// `groups * LANES` squared norms; padding is `+inf`, so never chosen.
    norms: Vec<f32>,
}

impl SearchIndex {
    /// Builds the index of `codewords` (`n * k` values, codeword-major, all finite). Panics if
    /// `k` is 0.
    pub fn new(codewords: &[f32], k: usize) -> SearchIndex {
        assert!(k > 0, "codewords of k = 0 values");
        let n = codewords.len() / k;
        let groups = n.div_ceil(LANES);
        let mut lanes = vec![0f32; groups * k * LANES];
        let mut norms = vec![f32::INFINITY; groups * LANES];
        for (i, c) in codewords.chunks_exact(k).enumerate() {
            let (g, l) = (i / LANES, i % LANES);
            for (j, &v) in c.iter().enumerate() {
                lanes[(g * k + j) * LANES + l] = v;
            }
            norms[i] = c.iter().map(|v| v * v).sum();
        }
        SearchIndex {
            k,
            n,
            isa: crate::kernels::detect(),
            lanes,
            norms,
        }
    }

    /// Number of codewords.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the index is empty (never, for a valid codebook).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Scores `||c||^2 - 2 <x, c>` of every codeword into `out` (length `n`), in index order.
    pub fn scores_into(&self, x: &[f32], out: &mut [f32]) {
        let n = self.n.min(out.len());
        crate::kernels::lane_scores(self.isa, &self.lanes, &self.norms, self.k, x, &mut out[..n]);
    }

    /// Index of the nearest codeword to `x` (length `k`) and its score `||c||^2 - 2 <x, c>`
    /// (add `||x||^2` for the squared distance).
    #[inline]
    pub fn nearest(&self, x: &[f32]) -> (u32, f32) {
        let (best, best_group) =
            crate::kernels::nearest_lanes(self.isa, &self.lanes, &self.norms, self.k, x);
        let (best_i, best_s) = lowest_lane(&best, &best_group);
        if best_i as usize >= self.n || !best_s.is_finite() {
            // Only reachable with non-finite input: fall back to codeword 0.
            return (0, best_s);
        }
        (best_i, best_s)
    }
}

/// Merges the per-lane minima of a lane-grouped search (`best[l]`, reached at group
/// `best_group[l]`) into the lowest score and its position `group * LANES + lane`, the lowest
/// such position among equal scores (what one sequential scan in index order keeps). Branch-free:
/// which lane wins is data, and mispredicted branches cost more than the search of a short list.
#[inline(always)]
pub(crate) fn lowest_lane(best: &[f32; LANES], best_group: &[u32; LANES]) -> (u32, f32) {
    let min = best.iter().copied().fold(f32::INFINITY, f32::min);
    let mut pos = u32::MAX;
    for l in 0..LANES {
        let p = best_group[l] * LANES as u32 + l as u32;
        pos = if best[l] == min { pos.min(p) } else { pos };
    }
    (pos, min)
}

/// Checks a rate point's shape: positive `dim` and `k`, `k` dividing `dim`, `n >= 2`.
pub fn check_shape(dim: usize, k: usize, n: usize) -> Result<()> {
    if k == 0 || dim == 0 {
        return Err(Error::InvalidConfig("dim and k must be positive".into()));
    }
    if !dim.is_multiple_of(k) {
        return Err(Error::BlockDoesNotDivide { dim, k });
    }
    if n < 2 {
        return Err(Error::InvalidConfig(format!(
            "a codebook needs at least 2 codewords, got n = {n}"
        )));
    }
    Ok(())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

impl Codebook {
    /// Builds a codebook from codewords (`n * k` values, codeword-major). Errors when `k` does not
    /// divide `dim`, `n < 2`, the length is wrong or a value is not finite.
    pub fn new(dim: usize, k: usize, n: usize, codewords: Vec<f32>) -> Result<Codebook> {
        check_shape(dim, k, n)?;
        if n > 1 << 24 {
            return Err(Error::InvalidConfig(format!(
                "at most 2^24 codewords are supported, got {n}"
            )));
        }
        let expected = n
            .checked_mul(k)
            .ok_or_else(|| Error::InvalidConfig("codebook size overflows".into()))?;
        if codewords.len() != expected {
            return Err(Error::WrongLength {
                what: "codewords",
                expected,
                actual: codewords.len(),
            });
        }
        if let Some(i) = codewords.iter().position(|c| !c.is_finite()) {
            return Err(Error::NonFinite { index: i });
        }
        let norms_sq: Vec<f32> = codewords
            .chunks_exact(k)
            .map(|c| c.iter().map(|v| v * v).sum())
            .collect();
        // Beyond about 1.8e19 a value's square is infinite, every score too, and every search
        // would answer codeword 0.
        if let Some(i) = norms_sq.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "codeword {i} is too large: its squared norm overflows f32"
            )));
        }
        let index = SearchIndex::new(&codewords, k);
        let orbits = crate::orbits::OrbitIndex::new(&codewords, k);
        let ivf = (n >= IVF_THRESHOLD && orbits.is_none()).then(|| {
            let cells = ((n as f64).sqrt() as usize).next_power_of_two().min(1024);
            crate::ivf::IvfIndex::new(&codewords, k, cells, crate::ivf::encoder_probes(k))
        });
        let thresholds = (k == 1 && codewords.windows(2).all(|w| w[0] < w[1]))
            .then(|| codewords.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect());
        Ok(Codebook {
            dim,
            k,
            n,
            codewords,
            norms_sq,
            index,
            orbits,
            ivf,
            cells: LazyCells::default(),
            balls: LazyBalls::default(),
            shortlist: LazyShortlist::default(),
            thresholds,
            header: None,
        })
    }

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
        if construction == Construction::E8Orbits && cb.orbits.is_none() {
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
    /// [`MAX_FILE_BYTES`] are refused before their body is decompressed, so a small corrupt or
    /// hostile frame cannot expand into gigabytes. A file may still hold up to 2^24 codewords,
    /// and codebooks from [`IVF_THRESHOLD`] codewords on build an inverted file while loading
    /// (about 12 passes of k-means over the codewords): load untrusted files of that size with
    /// a time limit.
    pub fn from_file_bytes(compressed: &[u8]) -> Result<Codebook> {
        let raw = decompress(compressed)?;
        Codebook::from_raw_bytes(&raw)
    }

    /// Checks that the codebook is for `(dim, k, n)`, e.g. what a manifest says about its file.
    pub fn expect_shape(&self, dim: usize, k: usize, n: usize) -> Result<()> {
        if (self.dim, self.k, self.n) == (dim, k, n) {
            return Ok(());
        }
        Err(Error::CorruptCodebook(format!(
            "file holds dim={} k={} n={}, manifest says dim={dim} k={k} n={n}",
            self.dim, self.k, self.n
        )))
    }

    /// Head dimension the codebook was built for.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Block size.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Number of codewords.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Rate in bits per coordinate, `log2(n) / k`.
    pub fn rate_bits(&self) -> f64 {
        (self.n as f64).log2() / self.k as f64
    }
    /// All codewords, codeword-major.
    pub fn codewords(&self) -> &[f32] {
        &self.codewords
    }
    /// Codeword `i` (`k` values). Panics if `i >= n`; callers validate indices.
    pub fn codeword(&self, i: usize) -> &[f32] {
        &self.codewords[i * self.k..(i + 1) * self.k]
    }
    /// Squared norms of the codewords.
    pub fn norms_sq(&self) -> &[f32] {
        &self.norms_sq
    }
    /// The file header, when the codebook was read from a file.
    pub fn header(&self) -> Option<&CodebookHeader> {
        self.header.as_ref()
    }

    /// Index of the codeword nearest to `block` (squared Euclidean distance; ties go to the lower
    /// index; approximate where an inverted file answers, see [`IVF_THRESHOLD`]). A block with a
    /// NaN coordinate gets some valid index ([`crate::Codec`] refuses such vectors first).
    /// Panics unless `block.len()` is `k`.
    #[inline]
    pub fn nearest(&self, block: &[f32]) -> u32 {
        self.check_block(block.len());
        if let Some(t) = &self.thresholds {
            return t.iter().filter(|&&t| t < block[0]).count() as u32;
        }
        if let Some(orbits) = &self.orbits {
            return orbits.nearest(block).0;
        }
        if let Some(i) = self.shortlist().and_then(|s| s.nearest(block)) {
            return i;
        }
        self.nearest_fallback(block)
    }

    /// [`nearest`](Self::nearest) without the shortlists: the inverted file where there is one,
    /// else the exact grid, the ball index or the exhaustive scan.
    #[inline]
    fn nearest_fallback(&self, block: &[f32]) -> u32 {
        match &self.ivf {
            Some(ivf) => ivf.nearest(block).0,
            None => match self.cells().and_then(|c| c.nearest(block)) {
                Some(i) => i,
                None => self.nearest_scored(block).0,
            },
        }
    }

    fn check_block(&self, len: usize) {
        assert_eq!(
            len, self.k,
            "a block of a k = {} codebook must have k values",
            self.k
        );
    }

    /// The certified shortlists ([`crate::shortlist::ShortlistIndex`]), built on first call,
    /// where [`shortlist_shape`] names them and the codebook has no scalar thresholds. Their
    /// answers are the exhaustive ones; a block they leave open goes to the other searches.
    /// The build is a one-time pause of the first encode: about 0.3 s and 1.5 MiB for
    /// `N <= 4096`, 1 s and 10 MiB for `N = 65536` (call this method ahead to take it
    /// elsewhere).
    pub fn shortlist(&self) -> Option<&crate::shortlist::ShortlistIndex> {
        self.shortlist
            .0
            .get_or_init(|| {
                let (per_dim, slots, tiers) = shortlist_shape(self.k, self.n)?;
                if self.thresholds.is_some() || self.orbits.is_some() {
                    return None;
                }
                crate::shortlist::ShortlistIndex::new(
                    &self.codewords,
                    &self.norms_sq,
                    self.k,
                    per_dim,
                    slots,
                    tiers,
                )
            })
            .as_ref()
    }

    /// The exhaustive answer and its score `||c||^2 - 2 <x, c>`, through the ball index where
    /// there is one (same answer, fewer codewords scored).
    #[inline]
    fn nearest_scored(&self, block: &[f32]) -> (u32, f32) {
        match self.balls().and_then(|b| b.nearest(block)) {
            Some(found) => found,
            None => self.index.nearest(block),
        }
    }

    /// The exact ball-pruned search ([`crate::balls::BallIndex`]), built on first call, for
    /// codebooks with neither a grid ([`cells`](Self::cells)) nor an inverted file nor scalar
    /// thresholds, where [`BallIndex::new`](crate::balls::BallIndex::new) offers one (`k <= 4`).
    pub fn balls(&self) -> Option<&crate::balls::BallIndex> {
        self.balls
            .0
            .get_or_init(|| {
                let other = self.ivf.is_some()
                    || self.thresholds.is_some()
                    || self.orbits.is_some()
                    || self.cells().is_some();
                if other {
                    None
                } else {
                    crate::balls::BallIndex::new(&self.codewords, self.k)
                }
            })
            .as_ref()
    }

    /// [`nearest`](Self::nearest) of every block of `blocks` (`k` values each) into `out` (one
    /// index per block). The same answers, faster than one call per block where the exact grid
    /// search applies. Panics unless `blocks.len() == out.len() * k`.
    pub fn nearest_many(&self, blocks: &[f32], out: &mut [u32]) {
        assert!(
            out.len().checked_mul(self.k) == Some(blocks.len()),
            "{} blocks of {} values do not fill {} values",
            out.len(),
            self.k,
            blocks.len()
        );
        if let Some(orbits) = &self.orbits {
            orbits.nearest_many(blocks, out);
            return;
        }
        if self.thresholds.is_some() {
            for (o, block) in out.iter_mut().zip(blocks.chunks_exact(self.k)) {
                *o = self.nearest(block);
            }
            return;
        }
        // A batch pass through the exact grid or the shortlists, where there is one; the blocks
        // it leaves open go one by one to the searches behind it.
        match self.ivf.is_none().then(|| self.cells()).flatten() {
            Some(cells) => cells.nearest_many(blocks, out),
            None => match self.shortlist() {
                Some(shortlist) => shortlist.nearest_many(blocks, out),
                None => out.fill(crate::kernels::OUTSIDE),
            },
        }
        for (o, block) in out.iter_mut().zip(blocks.chunks_exact(self.k)) {
            if *o == crate::kernels::OUTSIDE {
                *o = self.nearest_fallback(block);
            }
        }
    }

    /// The exact grid search, built on first call, where [`cells_per_dim`] names one and the
    /// grid pays: not when its cells keep on average more than half the codebook (duplicate or
    /// clustered codewords, which a custom codebook may have), nor where
    /// [`CellIndex::new`](crate::cells::CellIndex::new) declines.
    pub fn cells(&self) -> Option<&crate::cells::CellIndex> {
        self.cells
            .0
            .get_or_init(|| {
                let per_dim = cells_per_dim(self.k, self.n)?;
                let grid =
                    crate::cells::CellIndex::new(&self.codewords, &self.norms_sq, self.k, per_dim)?;
                let cells = grid.per_dim().pow(self.k as u32);
                (2 * grid.stored() <= cells * self.n).then_some(grid)
            })
            .as_ref()
    }

    /// Exhaustive nearest-codeword search (exact), whatever the codebook size. Panics unless
    /// `block.len()` is `k`.
    #[inline]
    pub fn nearest_exhaustive(&self, block: &[f32]) -> u32 {
        self.check_block(block.len());
        self.index.nearest(block).0
    }

    /// The exact orbit search ([`crate::orbits::OrbitIndex`]), where the codewords are whole
    /// signed-permutation orbits in its index order (the E8 codes): it answers every search,
    /// and such codebooks build no inverted file.
    pub fn orbits(&self) -> Option<&crate::orbits::OrbitIndex> {
        self.orbits.as_ref()
    }

    /// The approximate-search index used by [`nearest`](Self::nearest) for large codebooks.
    pub fn ivf(&self) -> Option<&crate::ivf::IvfIndex> {
        self.ivf.as_ref()
    }

    /// Replaces (or removes, with `None`) the approximate-search index: `Some(probes)` builds one
    /// probing that many cells, `None` makes [`nearest`](Self::nearest) exact (the certified
    /// shortlists where they apply, then exhaustive search, or the ball index of
    /// [`crate::balls`] where it applies). Orbit codebooks ([`orbits`](Self::orbits)) search
    /// exactly whatever this says.
    pub fn set_ivf_probes(&mut self, probes: Option<usize>) {
        // The ball index is built only without an inverted file: decide again.
        self.balls = LazyBalls::default();
        self.ivf = probes.map(|p| {
            let cells = ((self.n as f64).sqrt() as usize)
                .next_power_of_two()
                .min(1024);
            crate::ivf::IvfIndex::new(&self.codewords, self.k, cells, p)
        });
    }

    /// Like [`nearest`](Self::nearest), also returning the squared distance. Panics unless
    /// `block.len()` is `k`.
    #[inline]
    pub fn nearest_with_distance(&self, block: &[f32]) -> (u32, f32) {
        self.check_block(block.len());
        let bsq: f32 = block.iter().map(|v| v * v).sum();
        if let Some(orbits) = &self.orbits {
            let (i, score) = orbits.nearest(block);
            return (i, (bsq + score).max(0.0));
        }
        let certified = self.shortlist().and_then(|s| s.nearest(block));
        let (i, score) = match (&self.ivf, &self.thresholds, certified) {
            (_, Some(_), _) => {
                let i = self.nearest(block);
                let c = self.codewords[i as usize];
                (i, c * c - 2.0 * block[0] * c)
            }
            (_, None, Some(i)) => {
                let c = self.codeword(i as usize);
                let dot = c.iter().zip(block).fold(0f32, |a, (c, x)| a + x * c);
                (i, self.norms_sq[i as usize] - 2.0 * dot)
            }
            (Some(ivf), None, None) => ivf.nearest(block),
            (None, None, None) => self.nearest_scored(block),
        };
        (i, (bsq + score).max(0.0))
    }
}

/// Reference exhaustive nearest-codeword search, one codeword at a time: minimizes
/// `||c||^2 - 2 <x, c>`. Returns the index and that score. [`SearchIndex`] gives the same answer
/// faster; this one is the oracle its tests compare against.
pub fn nearest_scalar(codewords: &[f32], norms_sq: &[f32], k: usize, x: &[f32]) -> (u32, f32) {
    let mut best = f32::INFINITY;
    let mut best_i = 0u32;
    match k {
        1 => {
            let x0 = x[0];
            for (i, (c, nsq)) in codewords.iter().zip(norms_sq).enumerate() {
                let s = nsq - 2.0 * x0 * c;
                if s < best {
                    best = s;
                    best_i = i as u32;
                }
            }
        }
        _ => {
            for (i, (c, nsq)) in codewords.chunks_exact(k).zip(norms_sq).enumerate() {
                let dot: f32 = c.iter().zip(x).map(|(a, b)| a * b).sum();
                let s = nsq - 2.0 * dot;
                if s < best {
                    best = s;
                    best_i = i as u32;
                }
            }
        }
    }
    (best_i, best)
}

/// Largest uncompressed codebook file [`Codebook::from_file_bytes`] reads (1 GiB: the registry's
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dim: u32, k: u32, n: u32) -> CodebookHeader {
        CodebookHeader {
            dim,
            k,
            n,
            construction: Construction::RadialAngularLloyd,
            seed: 9,
            samples_per_codeword: 30,
            restarts: 4,
            iterations: 25,
            construction_version: 1,
        }
    }

    #[test]
    fn raw_round_trip_and_errors() {
        let cw = vec![0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8];
        let raw = header(8, 2, 4).to_bytes(&cw);
        let cb = Codebook::from_raw_bytes(&raw).unwrap();
        assert_eq!(cb.codewords(), &cw[..]);
        assert_eq!(cb.header().unwrap(), &header(8, 2, 4));
        assert_eq!(cb.rate_bits(), 1.0);

        assert!(matches!(
            Codebook::from_raw_bytes(&raw[..20]),
            Err(Error::CorruptCodebook(_))
        ));
        assert!(matches!(
            Codebook::from_raw_bytes(&raw[..raw.len() - 1]),
            Err(Error::CorruptCodebook(_))
        ));
        let mut bad = raw.clone();
        bad[0] = b'X';
        assert!(Codebook::from_raw_bytes(&bad).is_err());
        let mut bad = raw.clone();
        bad[4] = 2;
        assert!(Codebook::from_raw_bytes(&bad).is_err());
        let mut bad = raw.clone();
        bad[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Codebook::from_raw_bytes(&bad).is_err());
        // k does not divide d.
        let raw = header(9, 2, 4).to_bytes(&cw);
        assert!(Codebook::from_raw_bytes(&raw).is_err());
        assert!(Codebook::from_file_bytes(b"not zstd at all").is_err());
    }

    #[test]
    fn an_orbit_construction_needs_whole_orbits() {
        // Construction 2 with codewords that are whole orbits in index order loads and searches
        // by orbits; the same header over other codewords is a corrupt file.
        let orbit =
            crate::orbits::orbit_codewords(&[0.4, 0.1], crate::orbits::SignRule::All).unwrap();
        let e8 = |n| CodebookHeader {
            construction: Construction::E8Orbits,
            ..header(8, 2, n)
        };
        let cb = Codebook::from_raw_bytes(&e8(8).to_bytes(&orbit)).unwrap();
        assert!(cb.orbits().is_some());
        let mut shuffled = orbit.clone();
        shuffled.swap(0, 2);
        shuffled.swap(1, 3);
        assert!(matches!(
            Codebook::from_raw_bytes(&e8(8).to_bytes(&shuffled)),
            Err(Error::CorruptCodebook(_))
        ));
        let other = vec![0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8];
        assert!(matches!(
            Codebook::from_raw_bytes(&e8(4).to_bytes(&other)),
            Err(Error::CorruptCodebook(_))
        ));
        // Without the header's claim, the same codewords load as an ordinary codebook.
        assert!(Codebook::from_raw_bytes(&header(8, 2, 4).to_bytes(&other)).is_ok());
    }

    #[test]
    fn scalar_thresholds_agree_with_exhaustive_search() {
        let levels = vec![-1.5f32, -0.45, 0.45, 1.5];
        let cb = Codebook::new(64, 1, 4, levels).unwrap();
        assert!(cb.thresholds.is_some());
        let mut rng = crate::rng::Xoshiro256::new(8);
        for _ in 0..10_000 {
            let x = [rng.next_gaussian() as f32];
            let (a, b) = (cb.nearest(&x), cb.nearest_exhaustive(&x));
            let d = |i: u32| (x[0] - cb.codewords()[i as usize]).powi(2);
            assert!(a == b || (d(a) - d(b)).abs() < 1e-6, "{x:?}: {a} vs {b}");
        }
        // Exact midpoints go to the lower level, like the exhaustive search.
        assert_eq!(cb.nearest(&[0.0]), 1);
        // Unsorted scalar codebooks fall back to exhaustive search.
        let cb = Codebook::new(64, 1, 3, vec![1.0, -1.0, 0.0]).unwrap();
        assert!(cb.thresholds.is_none());
        assert_eq!(cb.nearest(&[0.9]), 0);
    }

    /// A zstd frame of `raw` (the test build has ruzstd's encoder).
    fn zstd(raw: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn file_bytes_are_read_only_as_far_as_the_header_announces() {
        let cw: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 - 2.0).collect();
        let raw = header(8, 2, 8).to_bytes(&cw);
        let cb = Codebook::from_file_bytes(&zstd(&raw)).unwrap();
        assert_eq!(cb.codewords(), &cw[..]);
        // A longer body is reported, not silently cut.
        let mut long = raw.clone();
        long.extend_from_slice(&[0; 64]);
        assert!(matches!(
            Codebook::from_file_bytes(&zstd(&long)),
            Err(Error::CorruptCodebook(m)) if m.contains("body has")
        ));
        // A header announcing more than the limit is refused before its body is read: a frame of
        // 2 GiB of zeros after it would otherwise take that much memory.
        let huge = header(4096, 4096, 1 << 24).to_bytes(&[]);
        assert!(matches!(
            Codebook::from_file_bytes(&zstd(&huge)),
            Err(Error::CorruptCodebook(m)) if m.contains("limit")
        ));
        // A truncated header.
        assert!(Codebook::from_file_bytes(&zstd(&raw[..20])).is_err());
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        // n * k * 4 overflows 64 bits; the body is empty.
        let raw = header(u32::MAX, u32::MAX, u32::MAX).to_bytes(&[]);
        assert!(matches!(
            Codebook::from_raw_bytes(&raw),
            Err(Error::CorruptCodebook(_))
        ));
        // Squares beyond f32: every score would be infinite and every block would get codeword 0.
        assert!(matches!(
            Codebook::new(4, 2, 2, vec![0.0, 1.0, 3e19, 0.0]),
            Err(Error::InvalidConfig(m)) if m.contains("codeword 1")
        ));
        assert!(Codebook::new(4, 2, 2, vec![0.0, 1.0, 1e19, 0.0]).is_ok());
    }

    #[test]
    fn searches_refuse_blocks_of_the_wrong_length() {
        let cb = Codebook::new(8, 2, 4, vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
        assert_eq!(cb.nearest(&[0.9, 0.8]), 3);
        for bad in [&[0.5f32][..], &[0.5, 0.5, 0.5]] {
            let panics =
                |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
            assert!(panics(&|| {
                cb.nearest(bad);
            }));
            assert!(panics(&|| {
                cb.nearest_with_distance(bad);
            }));
            assert!(panics(&|| {
                cb.nearest_exhaustive(bad);
            }));
        }
        let mut out = [0u32; 2];
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cb.nearest_many(&[0.0; 5], &mut out)
        }))
        .is_err());
        cb.nearest_many(&[0.9, 0.8, 0.1, 0.9], &mut out);
        assert_eq!(out, [3, 2]);
    }

    #[test]
    fn new_rejects_bad_shapes() {
        assert!(matches!(
            Codebook::new(64, 3, 4, vec![0.0; 12]),
            Err(Error::BlockDoesNotDivide { .. })
        ));
        assert!(Codebook::new(64, 2, 1, vec![0.0; 2]).is_err());
        assert!(Codebook::new(64, 2, 4, vec![0.0; 7]).is_err());
    }

    #[test]
    fn nearest_matches_brute_force_distance() {
        let mut rng = crate::rng::Xoshiro256::new(3);
        for (k, n) in [(1, 37), (2, 8), (3, 37), (4, 1), (4, 37), (8, 37), (8, 300)] {
            let cw: Vec<f32> = (0..n * k).map(|_| rng.next_gaussian() as f32).collect();
            let cb = Codebook::new(8 * k, k, n.max(2), {
                let mut cw = cw;
                cw.resize(n.max(2) * k, 0.5);
                cw
            })
            .unwrap();
            let n = n.max(2);
            for _ in 0..200 {
                let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
                let dist = |i: usize| -> f32 {
                    cb.codeword(i)
                        .iter()
                        .zip(&x)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum()
                };
                let best = (0..n).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap();
                let (got, d) = cb.nearest_with_distance(&x);
                assert!(dist(got as usize) <= dist(best) + 1e-5);
                assert!((d - dist(got as usize)).abs() < 1e-4);
                let reference = nearest_scalar(cb.codewords(), cb.norms_sq(), k, &x);
                assert_eq!(cb.index.nearest(&x), reference);
            }
        }
    }
}

#[cfg(test)]
mod tie_tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lowest_index_like_the_reference() {
        // Duplicated codewords across lanes and groups.
        let mut cw = Vec::new();
        for i in 0..20 {
            cw.extend_from_slice(&[(i % 3) as f32, 1.0]);
        }
        let idx = SearchIndex::new(&cw, 2);
        let nsq: Vec<f32> = cw.chunks(2).map(|c| c[0] * c[0] + c[1] * c[1]).collect();
        for x in [[0.0f32, 1.0], [1.0, 1.0], [2.0, 1.0], [0.5, 0.0]] {
            assert_eq!(idx.nearest(&x), nearest_scalar(&cw, &nsq, 2, &x));
        }
    }
}
