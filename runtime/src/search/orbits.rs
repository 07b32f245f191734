//! Exact nearest-codeword search for codebooks made of whole signed-permutation orbits, such as
//! the E8-lattice code of the registry's `k = 8`, `N = 64497` points.
//!
//! An *orbit* is the set of vectors whose coordinates are an arrangement of one multiset of
//! magnitudes (the orbit's *leader*, sorted largest first) with every sign pattern
//! ([`SignRule::All`]), or with only the sign patterns whose number of negative coordinates is
//! even or odd ([`SignRule::EvenNegatives`], [`SignRule::OddNegatives`]; only for leaders without
//! zeros). A codebook whose codewords are a union of such orbits, each stored contiguously in the
//! index order below, is recognized by [`OrbitIndex::new`] and searched without scanning it:
//!
//! 1. sort the block's magnitudes `s` in descending order;
//! 2. within an orbit with leader `l`, the nearest codeword puts `l[j]` on the coordinate of
//!    `s[j]` with the block's signs (rearrangement inequality) and scores `|l|^2 - 2 s . l`;
//!    where the orbit's sign rule refuses the block's sign pattern, the nearest codeword of the
//!    orbit also flips the sign of the smallest product, which costs `2 s[k-1] l[k-1]` more;
//! 3. the lowest score over the orbits wins, and its codeword is ranked into its index.
//!
//! The work per block is `O(k log k + k * orbits)` whatever `N`: 21 orbits hold the 64497
//! codewords of the E8 code. The answers are those of an exhaustive scan up to float rounding
//! (the tests compare them).
//!
//! # Index order within an orbit
//! The codeword with arrangement `p` and signs `σ` has index `first + rank(p) * 2^bits + code(σ)`:
//! - the arrangement says which coordinates take each of the leader's distinct magnitudes
//!   (levels, largest first). Level `v` takes `c_v` of the `n_v` coordinates that the larger
//!   levels left free; numbering those free coordinates `0..n_v` in coordinate order, its
//!   choice `q_1 < ... < q_{c_v}` has the rank `r_v = sum_i C(q_i, i)` (the combinatorial
//!   number system, `0 <= r_v < C(n_v, c_v)`), and `rank(p) = r_0 + C(n_0, c_0) (r_1 +
//!   C(n_1, c_1) (r_2 + ...))`. The ranks are table lookups, no divisions or branches;
//! - `code(σ)` has bit `t` set when the `t`-th coordinate with a nonzero magnitude (in coordinate
//!   order) is negative; under a parity rule the last coordinate's sign is not stored (the rule
//!   fixes it), so `bits` is the number of nonzero magnitudes, less one under a parity rule.

/// Largest block size an orbit codebook may have.
pub const MAX_K: usize = 8;
/// Most orbits an [`OrbitIndex`] accepts: beyond this, scanning the orbits stops paying.
pub const MAX_ORBITS: usize = 256;
/// Orbits scored together.
const LANES: usize = crate::kernels::LANES;

/// Which sign patterns an orbit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignRule {
    /// Every sign pattern.
    All,
    /// Only patterns with an even number of negative coordinates (leaders without zeros).
    EvenNegatives,
    /// Only patterns with an odd number of negative coordinates (leaders without zeros).
    OddNegatives,
}

/// One orbit of an [`OrbitIndex`].
#[derive(Debug, Clone, PartialEq)]
pub struct Orbit {
    /// Index of its first codeword.
    first: u32,
    /// Its distinct magnitudes, largest first.
    levels: Vec<f32>,
    /// How many coordinates take each of `levels`.
    counts: [u8; MAX_K],
    /// The level of the `j`-th largest magnitude.
    sorted_levels: [u8; MAX_K],
    /// The level whose magnitude is zero, if any.
    zero_level: Option<u8>,
    /// Sign rule.
    rule: SignRule,
    /// Stored sign bits per codeword.
    sign_bits: u32,
    /// Number of distinct arrangements of the leader.
    arrangements: u64,
    /// Per sorted position `j` (the `j`-th largest magnitude), the sorted positions
    /// `start..end` of its level.
    level_start: [u8; MAX_K],
    /// See `level_start`.
    level_end: [u8; MAX_K],
    /// Per sorted position, the weight of its level's rank `r_v`: the product of
    /// `C(n_u, c_u)` over the larger levels `u < v`.
    weight: [u64; MAX_K],
    /// Coordinates with a nonzero magnitude (they come first in sorted order).
    nonzero: u8,
}

impl Orbit {
    fn new(leader: &[f32], rule: SignRule, first: u32) -> Option<Orbit> {
        let k = leader.len();
        if !(1..=MAX_K).contains(&k)
            || leader.iter().any(|v| !v.is_finite() || *v < 0.0)
            || leader.windows(2).any(|w| w[0] < w[1])
        {
            return None;
        }
        let mut levels: Vec<f32> = Vec::new();
        let mut counts = [0u8; MAX_K];
        let mut sorted_levels = [0u8; MAX_K];
        for (j, &v) in leader.iter().enumerate() {
            if levels.last() != Some(&v) {
                levels.push(v);
            }
            counts[levels.len() - 1] += 1;
            sorted_levels[j] = (levels.len() - 1) as u8;
        }
        let zero_level = (levels.last() == Some(&0.0)).then(|| (levels.len() - 1) as u8);
        let nonzero = k - zero_level.map_or(0, |z| counts[z as usize] as usize);
        if rule != SignRule::All && nonzero != k {
            return None;
        }
        let mut level_start = [0u8; MAX_K];
        let mut level_end = [0u8; MAX_K];
        let mut weight = [0u64; MAX_K];
        let mut arrangements = 1u64;
        let mut start = 0usize;
        for &c in &counts[..levels.len()] {
            let end = start + c as usize;
            for j in start..end {
                level_start[j] = start as u8;
                level_end[j] = end as u8;
                weight[j] = arrangements;
            }
            arrangements *= BINOMIAL[k - start][c as usize] as u64;
            start = end;
        }
        let sign_bits = (nonzero - usize::from(rule != SignRule::All)) as u32;
        Some(Orbit {
            first,
            levels,
            counts,
            sorted_levels,
            zero_level,
            rule,
            sign_bits,
            arrangements,
            level_start,
            level_end,
            weight,
            nonzero: nonzero as u8,
        })
    }

    /// Number of codewords.
    pub fn len(&self) -> u64 {
        self.arrangements << self.sign_bits
    }

    /// Whether the orbit is empty (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Index of its first codeword in the codebook.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// Its sign rule.
    pub fn rule(&self) -> SignRule {
        self.rule
    }

    /// Its leader: the magnitudes, largest first.
    pub fn leader(&self) -> Vec<f32> {
        let k = self.k();
        (0..k)
            .map(|j| self.levels[self.sorted_levels[j] as usize])
            .collect()
    }

    fn k(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }

    /// Position within the orbit of the codeword that puts the `j`-th largest magnitude of the
    /// leader on coordinate `order[j]` (a permutation of `0..k`), negative where bit `i` of
    /// `negative` is set (ignored on zero magnitudes). Fixed loops over `k`, no branches: the
    /// coordinates of a level are `prefix[end] & !prefix[start]` for the bits `prefix[j]` of
    /// `order[..j]`.
    #[inline(always)]
    fn position<const K: usize, const AVX2: bool>(&self, order: &[u8], negative: u32) -> u64 {
        let k = if K > 0 { K } else { order.len() };
        let order = &order[..k];
        let full = (1u32 << k) - 1;
        let mut prefix = [0u32; MAX_K + 1];
        for (j, &x) in order.iter().enumerate() {
            prefix[j + 1] = prefix[j] | (1 << x);
        }
        // Coordinate x of level v is free coordinate q = |free(v) below x|, and the j-th
        // (from 1) of its level: it adds C(q, j) to r_v. The smallest level's choice is forced
        // and adds C(j - 1, j) = 0.
        let mut rank = 0u64;
        for (j, &x) in order.iter().enumerate() {
            let (start, end) = (self.level_start[j] as usize, self.level_end[j] as usize);
            let free = full & !prefix[start];
            let mine = prefix[end] & !prefix[start];
            let below = (1u32 << x) - 1;
            let q = count_ones::<AVX2>(free & below);
            let i = count_ones::<AVX2>(mine & below) + 1;
            rank += BINOMIAL[q][i] as u64 * self.weight[j];
        }
        let nonzero = prefix[self.nonzero as usize];
        let signs = negative & nonzero;
        let mut code = 0u64;
        let mut t = 0u32;
        for i in 0..k {
            code |= (((signs >> i) & 1) as u64) << t;
            t += (nonzero >> i) & 1;
        }
        code &= (1u64 << self.sign_bits) - 1;
        (rank << self.sign_bits) | code
    }

    /// The codeword at `position` (below [`len`](Self::len)) into `out` (`k` values).
    fn codeword(&self, position: u64, out: &mut [f32]) {
        let k = out.len();
        let mut rank = position >> self.sign_bits;
        let mut code = position & ((1u64 << self.sign_bits) - 1);
        let mut levels = [0u8; MAX_K];
        let mut left = (1u32 << k) - 1;
        // Mixed radix digits, largest level first.
        for v in 0..self.levels.len() {
            let n = left.count_ones() as usize;
            let c = self.counts[v] as usize;
            let radix = BINOMIAL[n][c] as u64;
            let mut r = rank % radix;
            rank /= radix;
            // Combinatorial number system: the largest q with C(q, j) <= r, for j = c..1.
            let free: Vec<usize> = (0..k).filter(|&i| (left >> i) & 1 == 1).collect();
            let mut q = n;
            for j in (1..=c).rev() {
                q -= 1;
                while BINOMIAL[q][j] as u64 > r {
                    q -= 1;
                }
                r -= BINOMIAL[q][j] as u64;
                levels[free[q]] = v as u8;
                left &= !(1 << free[q]);
            }
        }
        let mut negatives = 0u32;
        let mut stored = 0u32;
        for (i, o) in out.iter_mut().enumerate() {
            let level = levels[i];
            let v = self.levels[level as usize];
            let negative = if Some(level) == self.zero_level {
                false
            } else if stored < self.sign_bits {
                stored += 1;
                let bit = code & 1 == 1;
                code >>= 1;
                bit
            } else {
                // The last coordinate under a parity rule: the rule decides.
                let odd = negatives % 2 == 1;
                match self.rule {
                    SignRule::EvenNegatives => odd,
                    _ => !odd,
                }
            };
            negatives += u32::from(negative);
            *o = if negative { -v } else { v };
        }
    }
}

/// Set bits of a mask below `2^8` (`k <= 8` coordinates): by the instruction in the AVX2 build
/// (compiled with POPCNT), else by table (baseline x86-64 has no `popcnt`, and its emulation
/// is slower).
#[inline(always)]
fn count_ones<const AVX2: bool>(mask: u32) -> usize {
    if AVX2 {
        return mask.count_ones() as usize;
    }
    const BYTE: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = (i as u32).count_ones() as u8;
            i += 1;
        }
        t
    };
    BYTE[(mask & 0xff) as usize] as usize
}

/// `C(n, r)` for `n <= 8`, `r <= 9` (0 where `r > n`).
const BINOMIAL: [[u32; MAX_K + 2]; MAX_K + 1] = {
    let mut c = [[0u32; MAX_K + 2]; MAX_K + 1];
    let mut n = 0;
    while n <= MAX_K {
        c[n][0] = 1;
        let mut r = 1;
        while r <= n {
            c[n][r] = c[n - 1][r - 1] + if r < n { c[n - 1][r] } else { 0 };
            r += 1;
        }
        n += 1;
    }
    c
};

/// The codewords of one orbit in index order (module docs), `k` values each: for building an
/// orbit codebook (the generator's E8 code). `None` when the leader is not sorted largest first,
/// not finite and non-negative, longer than [`MAX_K`], or has a zero under a parity rule.
pub fn orbit_codewords(leader: &[f32], rule: SignRule) -> Option<Vec<f32>> {
    let orbit = Orbit::new(leader, rule, 0)?;
    let k = leader.len();
    let len = usize::try_from(orbit.len()).ok()?;
    let mut out = vec![0f32; len.checked_mul(k)?];
    for (p, c) in out.chunks_exact_mut(k).enumerate() {
        orbit.codeword(p as u64, c);
    }
    Some(out)
}

/// The orbit search of a codebook made of whole signed-permutation orbits (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct OrbitIndex {
    k: usize,
    orbits: Vec<Orbit>,
    /// Orbits rounded up to whole groups of [`LANES`].
    width: usize,
    /// `k * width` values: `lanes[j * width + o]` is the `j`-th largest magnitude of orbit `o`.
    lanes: Vec<f32>,
    /// Squared norm of each orbit's codewords; `+inf` for padding, never chosen.
    norms: Vec<f32>,
    /// `[even, odd]`: per orbit, `2 l[k-1]` where a block with an even (odd) number of negative
    /// coordinates breaks the orbit's sign rule, else 0.
    flip_cost: [Vec<f32>; 2],
    /// The implementation [`nearest`](OrbitIndex::nearest) runs.
    isa: crate::kernels::Isa,
}

impl OrbitIndex {
    /// Recognizes `codewords` (`k` values each, codeword-major) as a union of whole orbits in
    /// the index order of the module docs, or `None` when they are not one (any other codebook,
    /// `k` of 1 or above [`MAX_K`], more than [`MAX_ORBITS`] orbits). Checks every codeword.
    pub fn new(codewords: &[f32], k: usize) -> Option<OrbitIndex> {
        if !(2..=MAX_K).contains(&k) || codewords.is_empty() || !codewords.len().is_multiple_of(k) {
            return None;
        }
        let n = codewords.len() / k;
        let leader_of = |c: &[f32]| -> Vec<f32> {
            let mut l: Vec<f32> = c.iter().map(|v| v.abs()).collect();
            l.sort_by(|a, b| b.total_cmp(a));
            l
        };
        let mut orbits = Vec::new();
        let mut pos = 0usize;
        let mut pattern = [0u8; MAX_K];
        while pos < n {
            if orbits.len() == MAX_ORBITS {
                return None;
            }
            let first = &codewords[pos * k..(pos + 1) * k];
            let leader = leader_of(first);
            let negatives = first.iter().filter(|v| v.is_sign_negative()).count();
            let has_zero = leader[k - 1] == 0.0;
            let rule = if has_zero {
                SignRule::All
            } else {
                // The orbit's size tells whether it holds every sign pattern; a parity rule
                // starts (position 0, no stored sign set) with the parity of its first codeword.
                let all = Orbit::new(&leader, SignRule::All, 0)?;
                let rest = codewords[pos * k..].chunks_exact(k);
                let fits_all = all.len() <= (n - pos) as u64
                    && rest
                        .take(all.len() as usize)
                        .all(|c| leader_of(c) == leader);
                match (fits_all, negatives % 2) {
                    (true, _) => SignRule::All,
                    (false, 0) => SignRule::EvenNegatives,
                    (false, _) => SignRule::OddNegatives,
                }
            };
            let orbit = Orbit::new(&leader, rule, pos as u32)?;
            let len = orbit.len();
            if len > (n - pos) as u64 {
                return None;
            }
            for (p, c) in codewords[pos * k..(pos + len as usize) * k]
                .chunks_exact(k)
                .enumerate()
            {
                let mut negative = 0u32;
                for (i, &v) in c.iter().enumerate() {
                    let level = orbit.levels.iter().position(|&l| l == v.abs())?;
                    pattern[i] = level as u8;
                    negative |= u32::from(v.is_sign_negative()) << i;
                }
                let mut counts = [0u8; MAX_K];
                for &l in &pattern[..k] {
                    counts[l as usize] += 1;
                }
                if counts != orbit.counts {
                    return None;
                }
                let odd = negative.count_ones() % 2 == 1;
                let rule_holds = match rule {
                    SignRule::All => true,
                    SignRule::EvenNegatives => !odd,
                    SignRule::OddNegatives => odd,
                };
                // The coordinates in order of level (larger magnitudes first).
                let mut order = [0u8; MAX_K];
                for (o, i) in order.iter_mut().zip(
                    (0..orbit.levels.len())
                        .flat_map(|v| (0..k).filter(move |&i| pattern[i] as usize == v)),
                ) {
                    *o = i as u8;
                }
                if !rule_holds || orbit.position::<0, false>(&order[..k], negative) != p as u64 {
                    return None;
                }
            }
            pos += len as usize;
            orbits.push(orbit);
        }
        let width = orbits.len().div_ceil(LANES) * LANES;
        let mut lanes = vec![0f32; k * width];
        let mut norms = vec![f32::INFINITY; width];
        let mut flip_cost = [vec![0f32; width], vec![0f32; width]];
        for (o, orbit) in orbits.iter().enumerate() {
            let leader = orbit.leader();
            for (j, &v) in leader.iter().enumerate() {
                lanes[j * width + o] = v;
            }
            norms[o] = leader.iter().map(|v| v * v).sum();
            match orbit.rule {
                SignRule::All => {}
                SignRule::EvenNegatives => flip_cost[1][o] = 2.0 * leader[k - 1],
                SignRule::OddNegatives => flip_cost[0][o] = 2.0 * leader[k - 1],
            }
        }
        Some(OrbitIndex {
            k,
            orbits,
            width,
            lanes,
            norms,
            flip_cost,
            isa: crate::kernels::detect(),
        })
    }

    /// The orbits, in codebook order.
    pub fn orbits(&self) -> &[Orbit] {
        &self.orbits
    }

    /// Index of the nearest codeword to `x` (`k` values) and its score `||c||^2 - 2 <x, c>`
    /// (add `||x||^2` for the squared distance). Panics unless `x.len()` is `k`. A block with
    /// a NaN gets some valid index.
    #[inline]
    pub fn nearest(&self, x: &[f32]) -> (u32, f32) {
        self.nearest_on(self.isa, x)
    }

    /// [`nearest`](Self::nearest) with implementation `isa` (or the best this CPU has below
    /// it): every implementation gives the same answer and the same score, bit for bit.
    #[inline]
    pub fn nearest_on(&self, isa: crate::kernels::Isa, x: &[f32]) -> (u32, f32) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::usable(isa) >= crate::kernels::Isa::Avx2 {
            // SAFETY: `usable` answers AVX2 or above only where the CPU has AVX2 (and
            // every AVX2 CPU has POPCNT, which `supported` checks too).
            return unsafe { orbit_nearest_avx2(self, x) };
        }
        let _ = isa;
        // SAFETY: the portable build runs no SIMD instruction beyond the baseline.
        unsafe { self.nearest_dispatch::<false>(x) }
    }

    /// [`nearest_body`](Self::nearest_body) with `k` a constant where it is 8 (the E8 codes),
    /// so that its loops unroll.
    ///
    /// # Safety
    /// With `AVX2` true (the AVX2 build), the CPU must support AVX2 and POPCNT.
    #[inline(always)]
    pub(crate) unsafe fn nearest_dispatch<const AVX2: bool>(&self, x: &[f32]) -> (u32, f32) {
        match self.k {
            // SAFETY: passed on from the caller.
            8 => unsafe { self.nearest_body::<8, AVX2>(x) },
            // SAFETY: passed on from the caller.
            _ => unsafe { self.nearest_body::<0, AVX2>(x) },
        }
    }

    /// [`nearest`](Self::nearest) of every block of `blocks` (`k` values each) into `out` (one
    /// index per block), in one call to the implementation. Panics unless
    /// `blocks.len() == out.len() * k`.
    pub fn nearest_many(&self, blocks: &[f32], out: &mut [u32]) {
        assert!(
            out.len().checked_mul(self.k) == Some(blocks.len()),
            "{} blocks of {} values do not fill {} values",
            out.len(),
            self.k,
            blocks.len()
        );
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::usable(self.isa) >= crate::kernels::Isa::Avx2 {
            // SAFETY: as in `nearest_on`.
            return unsafe { orbit_nearest_many_avx2(self, blocks, out) };
        }
        // SAFETY: the portable build runs no SIMD instruction beyond the baseline.
        unsafe { self.nearest_many_body::<false>(blocks, out) }
    }

    /// The loop of [`nearest_many`](Self::nearest_many), inlined into each implementation.
    ///
    /// # Safety
    /// As [`nearest_dispatch`](Self::nearest_dispatch).
    #[inline(always)]
    pub(crate) unsafe fn nearest_many_body<const AVX2: bool>(
        &self,
        blocks: &[f32],
        out: &mut [u32],
    ) {
        match self.k {
            8 => {
                for (o, block) in out.iter_mut().zip(blocks.chunks_exact(8)) {
                    // SAFETY: passed on from the caller.
                    *o = unsafe { self.nearest_body::<8, AVX2>(block).0 };
                }
            }
            k => {
                for (o, block) in out.iter_mut().zip(blocks.chunks_exact(k)) {
                    // SAFETY: passed on from the caller.
                    *o = unsafe { self.nearest_body::<0, AVX2>(block).0 };
                }
            }
        }
    }

    /// The search. `K`: the block size where it is a constant, 0 where it is `self.k` at run
    /// time. `AVX2`: the AVX2 build (bit counts by instruction, the sort in vector steps).
    ///
    /// # Safety
    /// As [`nearest_dispatch`](Self::nearest_dispatch).
    #[inline(always)]
    unsafe fn nearest_body<const K: usize, const AVX2: bool>(&self, x: &[f32]) -> (u32, f32) {
        let k = if K > 0 { K } else { self.k };
        assert_eq!(
            x.len(),
            k,
            "a block of an orbit codebook must have k values"
        );
        // Sort keys: the magnitude's bits (ordered like the magnitudes) with the coordinate,
        // inverted, in the low 3 bits, so keys are distinct and equal magnitudes keep
        // coordinate order. Magnitudes within 8 ulps of each other sort as equal; the scores
        // below use the exact magnitudes, so that can only cost a score difference of about
        // 2^-20 relative, against the exhaustive answer.
        let mut keys = [0u32; MAX_K];
        let mut negative = 0u32;
        for (i, &v) in x.iter().enumerate() {
            keys[i] = (v.abs().to_bits() & !7) | (7 - i as u32);
            negative |= u32::from(v.is_sign_negative()) << i;
        }
        if K == 8 {
            // SAFETY: passed on from the caller.
            keys = unsafe { sort8_descending::<AVX2>(keys) };
        } else {
            insertion_sort_descending(&mut keys[..k]);
        }
        let mut order = [0u8; MAX_K];
        let mut s = [0f32; MAX_K];
        for j in 0..k {
            order[j] = (7 - (keys[j] & 7)) as u8;
            s[j] = x[order[j] as usize].abs();
        }
        let flip = &self.flip_cost[(negative.count_ones() % 2) as usize];
        let last = s[k - 1];
        // Per lane, the lowest score and its orbit (as a float, so that the update is one
        // vector select).
        let mut best = [f32::INFINITY; LANES];
        let mut best_orbit = [0f32; LANES];
        for g in 0..self.width / LANES {
            let base = g * LANES;
            // Two partial sums (even and odd j): half the chain of dependent additions.
            let mut even = [0f32; LANES];
            let mut odd = [0f32; LANES];
            for (j, &sj) in s[..k].iter().enumerate() {
                let row = &self.lanes[j * self.width + base..][..LANES];
                let acc = if j % 2 == 0 { &mut even } else { &mut odd };
                for l in 0..LANES {
                    acc[l] += sj * row[l];
                }
            }
            let mut dot = [0f32; LANES];
            for l in 0..LANES {
                dot[l] = even[l] + odd[l];
            }
            let norms = &self.norms[base..base + LANES];
            let flip = &flip[base..base + LANES];
            for l in 0..LANES {
                let score = norms[l] - 2.0 * (dot[l] - flip[l] * last);
                let better = score < best[l];
                best[l] = if better { score } else { best[l] };
                best_orbit[l] = if better {
                    (base + l) as f32
                } else {
                    best_orbit[l]
                };
            }
        }
        // The lowest score, and the lowest orbit that reaches it (as a scan in orbit order),
        // by pairwise reductions (3 dependent steps rather than 8).
        let lower = |a: f32, b: f32| if b < a { b } else { a };
        let score = reduce8(best, lower);
        let mut candidates = [0f32; LANES];
        for l in 0..LANES {
            candidates[l] = if best[l] == score {
                best_orbit[l]
            } else {
                f32::INFINITY
            };
        }
        let o = reduce8(candidates, lower);
        let o = if o.is_finite() { o as u32 } else { u32::MAX };
        let Some(orbit) = self.orbits.get(o as usize) else {
            // Only reachable with non-finite input.
            return (0, score);
        };
        negative ^= u32::from(flip[o as usize] != 0.0) << order[k - 1];
        let position = orbit.position::<K, AVX2>(&order[..k], negative);
        (orbit.first + position as u32, score)
    }
}

/// `f` folded over 8 values pairwise: `f(f(f(v0, v4), f(v2, v6)), f(f(v1, v5), f(v3, v7)))`.
#[inline(always)]
fn reduce8(v: [f32; 8], f: impl Fn(f32, f32) -> f32) -> f32 {
    let a = [f(v[0], v[4]), f(v[1], v[5]), f(v[2], v[6]), f(v[3], v[7])];
    let b = [f(a[0], a[2]), f(a[1], a[3])];
    f(b[0], b[1])
}

/// Sorts 8 distinct keys in descending order: a sorting network of 19 comparators in 7
/// layers, one vector step per layer where `AVX2`.
///
/// # Safety
/// With `AVX2` true, the CPU must support AVX2.
#[inline(always)]
unsafe fn sort8_descending<const AVX2: bool>(keys: [u32; 8]) -> [u32; 8] {
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: the caller guarantees AVX2.
        return unsafe { crate::kernels::x86_64::sort8_descending_avx2(keys) };
    }
    sort8_descending_portable(keys)
}

/// The portable [`sort8_descending`]: the same network, one comparator at a time (unrolled,
/// so the keys stay in registers).
#[inline(always)]
pub(crate) fn sort8_descending_portable(keys: [u32; 8]) -> [u32; 8] {
    let mut v = keys;
    macro_rules! exchange {
        ($(($a:literal, $b:literal)),*) => {$({
            let (x, y) = (v[$a], v[$b]);
            v[$a] = x.max(y);
            v[$b] = x.min(y);
        })*};
    }
    exchange!(
        (0, 1),
        (2, 3),
        (4, 5),
        (6, 7),
        (0, 2),
        (1, 3),
        (4, 6),
        (5, 7),
        (1, 2),
        (5, 6),
        (0, 4),
        (3, 7),
        (1, 5),
        (2, 6),
        (1, 4),
        (3, 6),
        (2, 4),
        (3, 5),
        (3, 4)
    );
    v
}

/// Sorts `keys` in descending order (blocks of fewer than 8 coordinates).
fn insertion_sort_descending(keys: &mut [u32]) {
    for i in 1..keys.len() {
        let mut j = i;
        while j > 0 && keys[j - 1] < keys[j] {
            keys.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// AVX2 (and POPCNT) compilation of [`OrbitIndex::nearest`]: the same code and
/// the same floating-point operations in the same order, with the orbit scores in 256-bit
/// lanes and bit counts by instruction.
///
/// # Safety
/// The CPU must support AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn orbit_nearest_avx2(index: &OrbitIndex, x: &[f32]) -> (u32, f32) {
    // SAFETY: the caller guarantees AVX2 and POPCNT.
    unsafe { index.nearest_dispatch::<true>(x) }
}

/// AVX2 (and POPCNT) compilation of [`OrbitIndex::nearest_many`].
///
/// # Safety
/// The CPU must support AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn orbit_nearest_many_avx2(
    index: &OrbitIndex,
    blocks: &[f32],
    out: &mut [u32],
) {
    // SAFETY: the caller guarantees AVX2 and POPCNT.
    unsafe { index.nearest_many_body::<true>(blocks, out) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::exhaustive::nearest_scalar;
    use crate::util::rng::Xoshiro256;

    /// A small orbit codebook with every kind of orbit: the origin, leaders with zeros and
    /// repeated magnitudes, and both parity rules.
    fn mixed(k: usize) -> Vec<f32> {
        let mut leaders: Vec<(Vec<f32>, SignRule)> = vec![
            (vec![0.0; k], SignRule::All),
            (
                (0..k).map(|j| if j == 0 { 0.9 } else { 0.0 }).collect(),
                SignRule::All,
            ),
            (
                (0..k).map(|j| if j < 2 { 0.5 } else { 0.0 }).collect(),
                SignRule::All,
            ),
            (vec![0.3; k], SignRule::EvenNegatives),
            (
                (0..k).map(|j| if j == 0 { 0.7 } else { 0.2 }).collect(),
                SignRule::OddNegatives,
            ),
        ];
        if k >= 3 {
            leaders.push((
                (0..k)
                    .map(|j| [0.6, 0.4, 0.1][j * 3 / k])
                    .collect::<Vec<f32>>(),
                SignRule::All,
            ));
        }
        leaders
            .iter()
            .flat_map(|(l, r)| orbit_codewords(l, *r).unwrap())
            .collect()
    }

    #[test]
    fn enumeration_and_ranking_are_inverse() {
        for k in [2, 3, 4, 8] {
            let cw = mixed(k);
            let index = OrbitIndex::new(&cw, k).expect("recognized");
            let n = cw.len() / k;
            let total: u64 = index.orbits().iter().map(|o| o.len()).sum();
            assert_eq!(total, n as u64);
            // Every codeword distinct.
            let mut seen: Vec<Vec<u32>> = cw
                .chunks_exact(k)
                .map(|c| c.iter().map(|v| v.to_bits()).collect())
                .collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), n, "k = {k}");
            // Each codeword is its own nearest.
            for (i, c) in cw.chunks_exact(k).enumerate() {
                assert_eq!(index.nearest(c).0, i as u32, "k = {k}, codeword {i}: {c:?}");
            }
        }
    }

    #[test]
    fn orbit_sizes_follow_the_rules() {
        let l = [0.5f32; 8];
        assert_eq!(orbit_codewords(&l, SignRule::All).unwrap().len(), 256 * 8);
        assert_eq!(
            orbit_codewords(&l, SignRule::EvenNegatives).unwrap().len(),
            128 * 8
        );
        let l = [1.5f32, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
        assert_eq!(
            orbit_codewords(&l, SignRule::OddNegatives).unwrap().len(),
            8 * 128 * 8
        );
        let l = [1.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(
            orbit_codewords(&l, SignRule::All).unwrap().len(),
            28 * 4 * 8
        );
        // A parity rule needs every magnitude nonzero; leaders must be sorted.
        assert!(orbit_codewords(&l, SignRule::EvenNegatives).is_none());
        assert!(orbit_codewords(&[0.1, 0.2], SignRule::All).is_none());
        assert!(orbit_codewords(&[f32::NAN, 0.2], SignRule::All).is_none());
    }

    #[test]
    fn search_matches_exhaustive_scan() {
        let mut rng = Xoshiro256::new(7);
        for k in [2, 3, 4, 8] {
            let cw = mixed(k);
            let index = OrbitIndex::new(&cw, k).unwrap();
            let norms: Vec<f32> = cw
                .chunks_exact(k)
                .map(|c| c.iter().map(|v| v * v).sum())
                .collect();
            for _ in 0..3000 {
                let x: Vec<f32> = (0..k).map(|_| (rng.next_gaussian() * 0.5) as f32).collect();
                let (i, score) = index.nearest(&x);
                let (want, want_score) = nearest_scalar(&cw, &norms, k, &x);
                let c = &cw[i as usize * k..][..k];
                let mine: f32 =
                    norms[i as usize] - 2.0 * c.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
                // The reported score is the chosen codeword's, and no codeword scores lower,
                // up to the rounding of sums of k products of magnitude < 1.
                let tol = 1e-6 * k as f32;
                assert!((mine - score).abs() <= tol, "k = {k}: {mine} vs {score}");
                assert!(
                    mine <= want_score + tol,
                    "k = {k}, x = {x:?}: orbit answer {i} ({mine}), exhaustive {want} ({want_score})"
                );
            }
        }
    }

    #[test]
    fn every_isa_gives_the_portable_answer_bit_for_bit() {
        use crate::kernels::{supported, Isa};
        let mut rng = Xoshiro256::new(9);
        for k in [2, 3, 4, 8] {
            let cw = mixed(k);
            let index = OrbitIndex::new(&cw, k).unwrap();
            for _ in 0..3000 {
                let x: Vec<f32> = (0..k).map(|_| (rng.next_gaussian() * 0.5) as f32).collect();
                let (i, score) = index.nearest_on(Isa::Portable, &x);
                for &isa in &supported() {
                    let (j, other) = index.nearest_on(isa, &x);
                    assert_eq!((i, score.to_bits()), (j, other.to_bits()), "{isa:?}, {x:?}");
                }
            }
        }
    }

    #[test]
    fn the_sorts_agree_on_every_order_of_8_keys() {
        // Every permutation of 8 distinct keys (Heap's algorithm), with equal magnitudes in the
        // high bits as the search makes them: the portable network sorts each, and the AVX2
        // one, where the CPU has it, gives the same output.
        let avx2 = crate::kernels::supported().contains(&crate::kernels::Isa::Avx2);
        let mut keys: [u32; 8] = [0, 0, 1, 1, 1, 5, 9, 9].map(|m| (m << 3) as u32);
        for (i, k) in keys.iter_mut().enumerate() {
            *k |= 7 - i as u32;
        }
        let mut sorted = keys;
        sorted.sort_by(|a, b| b.cmp(a));
        let mut c = [0usize; 8];
        let mut count = 1;
        let check = |v: [u32; 8]| {
            assert_eq!(sort8_descending_portable(v), sorted, "{v:?}");
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                let out = unsafe { crate::kernels::x86_64::sort8_descending_avx2(v) };
                assert_eq!(out, sorted, "{v:?}");
            }
        };
        check(keys);
        let mut i = 0;
        while i < 8 {
            if c[i] < i {
                keys.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
                check(keys);
                count += 1;
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
        assert_eq!(count, 40320);
        let _ = avx2;
    }

    #[test]
    fn nearest_many_answers_like_nearest() {
        let mut rng = Xoshiro256::new(4);
        for k in [2, 3, 8] {
            let cw = mixed(k);
            let index = OrbitIndex::new(&cw, k).unwrap();
            let x: Vec<f32> = (0..500 * k)
                .map(|_| (rng.next_gaussian() * 0.5) as f32)
                .collect();
            let mut out = vec![0u32; 500];
            index.nearest_many(&x, &mut out);
            for (o, b) in out.iter().zip(x.chunks_exact(k)) {
                assert_eq!(*o, index.nearest(b).0);
            }
        }
    }

    #[test]
    fn other_codebooks_are_not_recognized() {
        let mut cw = mixed(4);
        assert!(OrbitIndex::new(&cw, 4).is_some());
        // A codeword missing from an orbit.
        assert!(OrbitIndex::new(&cw[..cw.len() - 4], 4).is_none());
        // Two codewords out of order.
        let (a, b) = (cw.len() / 2, cw.len() / 2 + 4);
        let t: Vec<f32> = cw[a..a + 4].to_vec();
        cw.copy_within(b..b + 4, a);
        cw[b..b + 4].copy_from_slice(&t);
        assert!(OrbitIndex::new(&cw, 4).is_none());
        // A random codebook, a scalar code, and k above the limit.
        let mut rng = Xoshiro256::new(3);
        let random: Vec<f32> = (0..256 * 4).map(|_| rng.next_gaussian() as f32).collect();
        assert!(OrbitIndex::new(&random, 4).is_none());
        assert!(OrbitIndex::new(&[-1.0, 1.0], 1).is_none());
        assert!(OrbitIndex::new(&[0.0; 9], 9).is_none());
    }

    #[test]
    fn a_wrong_parity_codeword_is_refused() {
        let l = [0.3f32; 4];
        let mut cw = orbit_codewords(&l, SignRule::EvenNegatives).unwrap();
        assert!(OrbitIndex::new(&cw, 4).is_some());
        cw[3] = -cw[3];
        assert!(OrbitIndex::new(&cw, 4).is_none());
    }

    #[test]
    fn nan_blocks_get_a_valid_index() {
        let cw = mixed(8);
        let index = OrbitIndex::new(&cw, 8).unwrap();
        let n = (cw.len() / 8) as u32;
        for x in [[f32::NAN; 8], [f32::INFINITY; 8], [-f32::INFINITY; 8]] {
            assert!(index.nearest(&x).0 < n);
        }
    }
}

#[cfg(test)]
mod registry_tests {
    use crate::util::rng::Xoshiro256;

    /// The registry's E8 codes are recognized, and their orbit search answers what the
    /// exhaustive scan answers on blocks of random unit vectors (up to the rounding of the
    /// scores: both are sums of 8 products, under 1e-6 apart for blocks of norm below 1).
    #[test]
    fn registry_e8_codes_search_like_the_exhaustive_scan() {
        let mut rng = Xoshiro256::new(11);
        for d in [64usize, 128] {
            let cb = crate::registry::codebook(d, 8, 64497).unwrap();
            assert!(cb.orbits().is_some(), "d = {d}: not recognized as orbits");
            assert!(cb.ivf().is_none());
            let mut differ = 0;
            for _ in 0..40 {
                let x: Vec<f64> = (0..d).map(|_| rng.next_gaussian()).collect();
                let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                let x: Vec<f32> = x.iter().map(|v| (v / norm) as f32).collect();
                for block in x.chunks_exact(8) {
                    let fast = cb.nearest(block);
                    let slow = cb.nearest_exhaustive(block);
                    if fast != slow {
                        differ += 1;
                        let dist = |i: u32| -> f32 {
                            cb.codeword(i as usize)
                                .iter()
                                .zip(block)
                                .map(|(c, x)| (c - x) * (c - x))
                                .sum()
                        };
                        assert!(
                            (dist(fast) - dist(slow)).abs() < 1e-6,
                            "d = {d}: {fast} at {} vs {slow} at {}",
                            dist(fast),
                            dist(slow)
                        );
                    }
                }
            }
            assert!(differ <= 2, "d = {d}: {differ} ties");
        }
    }
}
