//! The registry's coverage: which rate points `(d, k, N)` are built by default.

/// Head dims covered.
pub const DIMS: [usize; 3] = [64, 96, 128];
/// Largest codebook of the default plan (the N = 65536 points need the fast encoder).
pub const MAX_N: usize = 4096;
/// Highest rate covered, bits per coordinate.
pub const MAX_RATE: f64 = 4.0;

/// The large points built with the fast (inverted-file) Lloyd assignment: N = 65536 with k = 4
/// (b = 4) and k = 8 (b = 2), at d = 64 and 128.
pub const LARGE: [(usize, usize, usize); 4] = [
    (64, 4, 65536),
    (64, 8, 65536),
    (128, 4, 65536),
    (128, 8, 65536),
];

/// The E8 code ([`crate::e8`]): `k = 8`, `N = 64497` (16-bit indices), at d = 64 and 128.
pub const E8: [(usize, usize, usize); 2] = [(64, 8, crate::e8::E8_N), (128, 8, crate::e8::E8_N)];

/// Every default rate point: k = 1 with N in {2, 4, 8, 16}; k in {2, 3, 4, 8} where k divides d,
/// with every power-of-two N from 2 up to 4096 at rate at most 4 bits; the [`LARGE`] points;
/// and the [`E8`] points.
pub fn default_plan() -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for d in DIMS {
        for n in [2, 4, 8, 16] {
            out.push((d, 1, n));
        }
        for k in [2, 3, 4, 8] {
            if d % k != 0 {
                continue;
            }
            let mut n = 2;
            while n <= MAX_N && (n as f64).log2() / k as f64 <= MAX_RATE {
                out.push((d, k, n));
                n *= 2;
            }
        }
    }
    out.extend(LARGE);
    out.extend(E8);
    out
}

/// File name of a rate point.
pub fn file_name(d: usize, k: usize, n: usize) -> String {
    format!("d{d}_k{k}_n{n}.fqcb.zst")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_required_points() {
        let p = default_plan();
        for d in [64, 128] {
            for n in [2, 4, 8, 16] {
                assert!(p.contains(&(d, 1, n)));
            }
            assert!(p.contains(&(d, 2, 256)));
            assert!(!p.contains(&(d, 2, 512)));
            assert!(p.contains(&(d, 4, 4096)));
            assert!(p.contains(&(d, 8, 4096)));
            assert!(!p.iter().any(|&(dd, k, _)| dd == d && k == 3));
        }
        assert!(p.contains(&(96, 3, 4096)));
        assert!(p.iter().all(|&(d, k, _)| d % k == 0));
    }
}
