//! A codebook: `n` codewords in `R^k` for head dim `d`, and nearest-codeword search through
//! the searches its [`SearchPlan`] names (chosen once, in [`crate::search::plan`]). The
//! file format is in [`format`]; the copies of the codewords that attention reads are built
//! here on first use too (`Derived`), so that every codec sharing a codebook shares them.

pub mod format;

pub use format::{CodebookHeader, Construction, Integrity, LoadLimits};

use crate::error::{Error, Result};
use crate::search::balls::BallIndex;
use crate::search::cells::CellIndex;
use crate::search::exhaustive::SearchIndex;
use crate::search::ivf::IvfIndex;
use crate::search::orbits::OrbitIndex;
use crate::search::plan::{grid_pays, SearchPlan};
use crate::search::shortlist::ShortlistIndex;
use std::sync::{Arc, OnceLock};

/// A codebook: `n` codewords of `k` coordinates for head dim `dim`, with precomputed squared
/// norms for nearest-codeword search. (Its hidden accessors of search structures return types
/// that only the `internals` feature names: for the examples that measure them.)
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    dim: usize,
    k: usize,
    n: usize,
    codewords: Vec<f32>,
    norms_sq: Vec<f32>,
    /// Which searches answer, chosen once by [`SearchPlan::choose`].
    plan: SearchPlan,
    /// The exhaustive search, behind every other one.
    index: SearchIndex,
    /// The exact orbit search, for [`SearchPlan::Orbits`].
    orbits: Option<OrbitIndex>,
    /// For [`SearchPlan::Thresholds`]: the midpoints between neighbouring levels. The nearest
    /// level of `x` is the number of midpoints below `x`.
    thresholds: Option<Vec<f32>>,
    /// The searches built on first use, and attention's copies of the codewords.
    derived: Derived,
    header: Option<CodebookHeader>,
    /// Whether the file it came from was checked.
    integrity: Integrity,
}

/// What a [`Codebook`] builds from its codewords on first use: the lazy searches of its plan
/// (the certified shortlists, the exact grid, the ball index) and the codeword copies that
/// attention's kernels read (kept here, not in a codec, so codecs sharing a codebook share
/// them; attention decides which it reads). Derived data: it takes no part in equality, and
/// clones share what was built.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived {
    ivf: OnceLock<Option<IvfIndex>>,
    shortlist: OnceLock<Option<ShortlistIndex>>,
    grid: OnceLock<Option<CellIndex>>,
    balls: OnceLock<Option<BallIndex>>,
    /// The codewords followed by NaN codewords up to a power of two (attention's bounds check).
    pub(crate) nan_padded: OnceLock<Arc<Vec<f32>>>,
    /// The codewords rounded to f16 and widened back (`None`: a value beyond the f16 range).
    pub(crate) half: OnceLock<Option<Arc<HalfCopy>>>,
    /// `k = 3` codewords padded to 4 values.
    pub(crate) padded: OnceLock<Arc<Vec<f32>>>,
    /// The byte plan's expanded codebook.
    pub(crate) byte_expanded: OnceLock<Arc<Vec<[f32; 256]>>>,
}

/// The f16 bits of every codeword value, and the same values widened to f32.
pub(crate) type HalfCopy = (Vec<u16>, Vec<f32>);

impl PartialEq for Derived {
    fn eq(&self, _: &Derived) -> bool {
        true
    }
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
        let orbits = OrbitIndex::new(&codewords, k);
        let ascending = k == 1 && codewords.windows(2).all(|w| w[0] < w[1]);
        let plan = SearchPlan::choose(k, n, ascending, orbits.is_some());
        let thresholds = (plan == SearchPlan::Thresholds)
            .then(|| codewords.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect());
        Ok(Codebook {
            dim,
            k,
            n,
            codewords,
            norms_sq,
            plan,
            index,
            orbits,
            thresholds,
            derived: Derived::default(),
            header: None,
            integrity: Integrity::Unchecked,
        })
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

    /// How this codebook is searched.
    pub fn plan(&self) -> SearchPlan {
        self.plan
    }

    /// The lazily built data of this codebook (attention's codeword copies).
    pub(crate) fn derived(&self) -> &Derived {
        &self.derived
    }

    /// Builds every search structure that the plan builds on first use (the certified
    /// shortlists, the exact grid, the ball index), so that the first encode does not pay for
    /// them. Idempotent and thread-safe; without it, the first encode that needs one builds it.
    pub fn prepare_search(&self) {
        self.ivf();
        self.shortlist();
        self.cells();
        self.balls();
    }

    /// Index of the codeword nearest to `block` (squared Euclidean distance; ties go to the lower
    /// index; approximate where the plan names an inverted file). A block with a NaN coordinate
    /// gets some valid index ([`crate::Codec`] refuses such vectors first). Panics unless
    /// `block.len()` is `k`.
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
        self.nearest_behind_shortlists(block)
    }

    /// [`nearest`](Self::nearest) of a layered plan without its shortlists: the inverted file
    /// where there is one, else the exact grid, the ball index or the exhaustive scan.
    #[inline]
    fn nearest_behind_shortlists(&self, block: &[f32]) -> u32 {
        match self.ivf() {
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

    /// The certified shortlists of a layered plan that names them, built on first call (a
    /// one-time pause of the first encode; [`prepare_search`](Self::prepare_search) takes it
    /// ahead). Their answers are the exhaustive ones; a block they leave open goes to the
    /// layers behind them.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    pub fn shortlist(&self) -> Option<&ShortlistIndex> {
        self.derived
            .shortlist
            .get_or_init(|| {
                let shape = self.plan.layers()?.shortlist?;
                ShortlistIndex::new(
                    &self.codewords,
                    &self.norms_sq,
                    self.k,
                    shape.per_dim,
                    shape.slots,
                    shape.tiers,
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

    /// The exact ball-pruned search, built on first call, where the plan allows it and no grid
    /// was kept, and [`BallIndex::new`] offers one (`k <= 4`).
    #[doc(hidden)]
    #[allow(private_interfaces)]
    pub fn balls(&self) -> Option<&BallIndex> {
        self.derived
            .balls
            .get_or_init(|| {
                let allowed = self.plan.layers().is_some_and(|l| l.balls && l.ivf.is_none());
                if !allowed || self.cells().is_some() {
                    None
                } else {
                    BallIndex::new(&self.codewords, self.k)
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
        match self.plan.ivf().is_none().then(|| self.cells()).flatten() {
            Some(cells) => cells.nearest_many(blocks, out),
            None => match self.shortlist() {
                Some(shortlist) => shortlist.nearest_many(blocks, out),
                None => out.fill(crate::kernels::OUTSIDE),
            },
        }
        for (o, block) in out.iter_mut().zip(blocks.chunks_exact(self.k)) {
            if *o == crate::kernels::OUTSIDE {
                *o = self.nearest_behind_shortlists(block);
            }
        }
    }

    /// The exact grid search of a layered plan that names one, built on first call, kept where
    /// it pays ([`grid_pays`]) and [`CellIndex::new`] does not decline.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    pub fn cells(&self) -> Option<&CellIndex> {
        self.derived
            .grid
            .get_or_init(|| {
                let per_dim = self.plan.layers()?.grid?;
                let grid = CellIndex::new(&self.codewords, &self.norms_sq, self.k, per_dim)?;
                let cells = grid.per_dim().pow(self.k as u32);
                grid_pays(grid.stored(), cells, self.n).then_some(grid)
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

    /// The exact orbit search of an orbit plan.
    #[cfg(any(test, feature = "internals"))]
    pub fn orbits(&self) -> Option<&OrbitIndex> {
        self.orbits.as_ref()
    }

    /// The inverted file of a layered plan that names one, built on first call (about 12
    /// passes of k-means over the codewords).
    #[doc(hidden)]
    #[allow(private_interfaces)]
    pub fn ivf(&self) -> Option<&IvfIndex> {
        self.derived
            .ivf
            .get_or_init(|| {
                let shape = self.plan.ivf()?;
                Some(IvfIndex::new(&self.codewords, self.k, shape.cells, shape.probes))
            })
            .as_ref()
    }

    /// Whether the file this codebook was read from carried a checked integrity frame.
    pub fn integrity(&self) -> Integrity {
        self.integrity
    }

    /// This codebook searched with an inverted file probing `probes` cells per query, or
    /// exactly (`None`); thresholds and orbits search exactly whatever this says. For measuring
    /// what the inverted file costs (`fibquant-gen bench`); the encoder's choice is the plan's.
    #[doc(hidden)]
    pub fn with_ivf_probes(&self, probes: Option<usize>) -> Codebook {
        let plan = self.plan.with_ivf_probes(self.k, self.n, probes);
        Codebook {
            plan,
            // The lazy searches depend on the inverted file: decide again.
            derived: Derived::default(),
            ..self.clone()
        }
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
        let (i, score) = match (self.ivf(), &self.thresholds, certified) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::exhaustive::nearest_scalar;
    use format::HEADER_BYTES;

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
            crate::search::orbits::orbit_codewords(&[0.4, 0.1], crate::search::orbits::SignRule::All).unwrap();
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
        let mut rng = crate::util::rng::Xoshiro256::new(8);
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
    fn every_single_byte_change_and_truncation_of_a_checked_file_is_refused() {
        let cw: Vec<f32> = (0..32).map(|i| (i as f32 * 0.7).sin()).collect();
        let file = format::checked_file(&zstd(&header(16, 2, 16).to_bytes(&cw)));
        let cb = Codebook::from_file_bytes(&file).unwrap();
        assert_eq!((cb.codewords(), cb.integrity()), (&cw[..], Integrity::Checked));
        for pos in 0..file.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = file.clone();
                bad[pos] ^= flip;
                assert!(
                    matches!(Codebook::from_file_bytes(&bad), Err(Error::CorruptCodebook(_))),
                    "byte {pos} ^ {flip:#x} of {} was not detected",
                    file.len()
                );
            }
        }
        for len in 0..file.len() {
            assert!(Codebook::from_file_bytes(&file[..len]).is_err(), "cut at {len}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(Codebook::from_file_bytes(&longer).is_err());
        // A second frame inside the checked region (the integrity frame rewritten to cover it).
        let body = &file[format::INTEGRITY_BYTES..];
        let two: Vec<u8> = body.iter().chain(body).copied().collect();
        assert!(matches!(
            Codebook::from_file_bytes(&format::checked_file(&two)),
            Err(Error::CorruptCodebook(m)) if m.contains("follow")
        ));
        assert!(Codebook::from_file_bytes(&two).is_err(), "version 1 with trailing data");
        // A version-1 file (the body's frame alone) still loads, unchecked.
        let v1 = Codebook::from_file_bytes(&file[format::INTEGRITY_BYTES..]).unwrap();
        assert_eq!((v1.codewords(), v1.integrity()), (&cw[..], Integrity::Unchecked));
    }

    #[test]
    fn headers_beyond_the_load_limits_are_refused_before_their_body() {
        // A small file announcing 2^24 codewords: refused from the header, at once.
        let hostile = format::checked_file(&zstd(&header(64, 4, 1 << 24).to_bytes(&[])));
        let start = std::time::Instant::now();
        assert!(matches!(
            Codebook::from_file_bytes(&hostile),
            Err(Error::CorruptCodebook(m)) if m.contains("load limit")
        ));
        assert!(start.elapsed().as_secs_f64() < 1.0);
        let cw = vec![0.25f32; 2 * 64];
        let file = format::checked_file(&zstd(&header(128, 2, 64).to_bytes(&cw)));
        let tight = LoadLimits {
            max_codewords: 32,
            ..LoadLimits::default()
        };
        assert!(Codebook::from_file_bytes_with(&file, &tight).is_err());
        assert!(Codebook::from_file_bytes_with(&file, &LoadLimits::default()).is_ok());
        let narrow = LoadLimits {
            max_dim: 64,
            ..LoadLimits::default()
        };
        assert!(Codebook::from_file_bytes_with(&file, &narrow).is_err());
    }

    #[test]
    fn the_embedded_files_are_checked_files() {
        for e in crate::registry::entries().filter(|e| e.n <= 256) {
            let cb = crate::registry::codebook(e.dim, e.k, e.n).unwrap();
            assert_eq!(cb.integrity(), Integrity::Checked, "{}", e.file);
        }
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
        let mut rng = crate::util::rng::Xoshiro256::new(3);
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

