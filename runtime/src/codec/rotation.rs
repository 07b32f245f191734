//! The shared random rotation `P` applied to every normalized vector before block quantization.
//!
//! Two constructions:
//! - [`RotationKind::Hadamard`]: `rounds` rounds of (seeded random sign flips, then an in-place fast
//!   Walsh-Hadamard transform scaled by `1/sqrt(d)`), O(d log d). Needs a power-of-two `d`. One round
//!   is not enough: it maps a one-hot input to a vector of equal magnitudes, so every block has the
//!   same radius instead of the Beta law; two rounds map all one-hot inputs to permutations of one
//!   vector. The default is three rounds.
//! - [`RotationKind::Haar`]: a dense orthogonal matrix drawn from the Haar measure (Gram-Schmidt QR
//!   of a seeded Gaussian matrix), computed once, O(d^2) per vector, any `d`.

use crate::error::{Error, Result};
use crate::util::rng::Xoshiro256;

/// Which rotation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationKind {
    /// Randomized Hadamard for power-of-two dims, dense Haar otherwise.
    Auto,
    /// Randomized Hadamard with this many rounds (power-of-two dims only).
    Hadamard {
        /// Number of (sign flip, Walsh-Hadamard) rounds, 1 to 8.
        rounds: u8,
    },
    /// Dense Haar-random orthogonal matrix (any dim).
    Haar,
}

/// Largest dimension a [`Rotation`] is built for. A dense (Haar) rotation of dimension `d` holds
/// `d^2` values (64 MiB at 4096, twice that in f64 while it is built) and takes `O(d^3)` to
/// build; larger ones are refused rather than left to exhaust memory. [`crate::Codec`] caps `d`
/// lower still.
pub const MAX_DIM: usize = 4096;

/// Rounds used by [`RotationKind::Auto`] for power-of-two dims.
pub const DEFAULT_HADAMARD_ROUNDS: u8 = 3;

/// A concrete rotation of `R^d`, cheap to share between threads.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// Randomized Hadamard: `signs[r]` are the sign flips of round `r`.
    Hadamard {
        /// Dimension (a power of two).
        dim: usize,
        /// One sign vector per round.
        signs: Vec<Vec<f32>>,
    },
    /// Dense orthogonal matrix, row-major: `y = P x`.
    Dense {
        /// Dimension.
        dim: usize,
        /// `dim * dim` entries, row-major.
        matrix: Vec<f32>,
    },
}

impl Rotation {
    /// Builds the rotation of `kind` for dimension `dim` from `seed`. Errors when `dim` is 0 or
    /// above [`MAX_DIM`](crate::MAX_DIM), and for a Hadamard rotation of a dimension that is not a power of two
    /// or with rounds outside 1 to 8.
    pub fn new(kind: RotationKind, dim: usize, seed: u64) -> Result<Rotation> {
        if dim == 0 {
            return Err(Error::InvalidConfig("dimension must be positive".into()));
        }
        if dim > MAX_DIM {
            return Err(Error::InvalidConfig(format!(
                "rotations are built for dimensions up to {MAX_DIM}, got {dim}"
            )));
        }
        match kind {
            RotationKind::Auto if dim.is_power_of_two() => {
                Ok(Self::hadamard(dim, DEFAULT_HADAMARD_ROUNDS, seed))
            }
            RotationKind::Auto | RotationKind::Haar => Ok(Self::haar(dim, seed)),
            RotationKind::Hadamard { rounds } => {
                if !dim.is_power_of_two() {
                    return Err(Error::InvalidConfig(format!(
                        "the Hadamard rotation needs a power-of-two dimension, got {dim}; use RotationKind::Haar or Auto"
                    )));
                }
                if !(1..=8).contains(&rounds) {
                    return Err(Error::InvalidConfig(format!(
                        "Hadamard rounds must be 1 to 8, got {rounds}"
                    )));
                }
                Ok(Self::hadamard(dim, rounds, seed))
            }
        }
    }

    fn hadamard(dim: usize, rounds: u8, seed: u64) -> Rotation {
        let mut rng = Xoshiro256::new(seed);
        let signs = (0..rounds)
            .map(|_| (0..dim).map(|_| rng.next_sign()).collect())
            .collect();
        Rotation::Hadamard { dim, signs }
    }

    fn haar(dim: usize, seed: u64) -> Rotation {
        let mut rng = Xoshiro256::new(seed);
        // Rows of a Gaussian matrix, orthonormalized by modified Gram-Schmidt (twice, for
        // stability) in f64. Gram-Schmidt gives R with a positive diagonal, so the result is
        // exactly Haar distributed.
        let mut rows: Vec<Vec<f64>> = (0..dim)
            .map(|_| (0..dim).map(|_| rng.next_gaussian()).collect())
            .collect();
        for i in 0..dim {
            for _pass in 0..2 {
                for j in 0..i {
                    let dot: f64 = rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum();
                    let (head, tail) = rows.split_at_mut(i);
                    for (a, b) in tail[0].iter_mut().zip(&head[j]) {
                        *a -= dot * b;
                    }
                }
            }
            let norm = rows[i].iter().map(|a| a * a).sum::<f64>().sqrt();
            for a in rows[i].iter_mut() {
                *a /= norm;
            }
        }
        let matrix = rows.into_iter().flatten().map(|v| v as f32).collect();
        Rotation::Dense { dim, matrix }
    }

    fn check_lengths(&self, input: usize, output: usize) {
        let d = self.dim();
        assert!(
            input == d && output == d,
            "a rotation of dimension {d} got input {input} and output {output} values"
        );
    }

    /// Dimension of the rotated space.
    pub fn dim(&self) -> usize {
        match self {
            Rotation::Hadamard { dim, .. } | Rotation::Dense { dim, .. } => *dim,
        }
    }

    /// `out = P x`. Panics unless both slices have length `dim` (the [`crate::Codec`] methods
    /// check lengths and return errors before they rotate). f32 arithmetic: inputs beyond about
    /// `2^128 / dim` can overflow the unnormalized transform (the codec's methods rescale then).
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        self.check_lengths(x.len(), out.len());
        match self {
            Rotation::Hadamard { dim, signs } => {
                out.copy_from_slice(x);
                let scale = 1.0 / (*dim as f32).sqrt();
                for s in signs {
                    for (o, s) in out.iter_mut().zip(s) {
                        *o *= s;
                    }
                    fwht(out);
                    for o in out.iter_mut() {
                        *o *= scale;
                    }
                }
            }
            Rotation::Dense { dim, matrix } => {
                crate::kernels::dense_rotate(crate::kernels::detect(), matrix, *dim, x, out)
            }
        }
    }

    /// `out = P^T y`, the inverse rotation. Panics unless both slices have length `dim`.
    pub fn apply_inverse(&self, y: &[f32], out: &mut [f32]) {
        self.check_lengths(y.len(), out.len());
        match self {
            Rotation::Hadamard { dim, signs } => {
                out.copy_from_slice(y);
                let scale = 1.0 / (*dim as f32).sqrt();
                for s in signs.iter().rev() {
                    fwht(out);
                    for (o, s) in out.iter_mut().zip(s) {
                        *o *= s * scale;
                    }
                }
            }
            Rotation::Dense { dim, matrix } => crate::kernels::dense_rotate_transposed(
                crate::kernels::detect(),
                matrix,
                *dim,
                y,
                out,
            ),
        }
    }
}

/// In-place unnormalized fast Walsh-Hadamard transform; `v.len()` must be a power of two. Uses
/// the best kernel for this CPU (see [`crate::kernels`]).
#[inline]
pub fn fwht(v: &mut [f32]) {
    crate::kernels::fwht(crate::kernels::detect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_orthogonal(rot: &Rotation) {
        let d = rot.dim();
        let mut col = vec![0.0; d];
        let mut cols = Vec::new();
        for i in 0..d {
            let mut e = vec![0.0; d];
            e[i] = 1.0;
            rot.apply(&e, &mut col);
            cols.push(col.clone());
            let mut back = vec![0.0; d];
            rot.apply_inverse(&col, &mut back);
            for (j, b) in back.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((b - want).abs() < 1e-5, "inverse fails at {i},{j}: {b}");
            }
        }
        for i in 0..d {
            for j in 0..d {
                let dot: f32 = cols[i].iter().zip(&cols[j]).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-5, "P^T P at {i},{j} = {dot}");
            }
        }
    }

    #[test]
    fn hadamard_and_haar_are_orthogonal() {
        for d in [2, 8, 64, 128] {
            check_orthogonal(&Rotation::new(RotationKind::Auto, d, 1).unwrap());
            check_orthogonal(&Rotation::new(RotationKind::Hadamard { rounds: 1 }, d, 2).unwrap());
        }
        for d in [3, 80, 96] {
            check_orthogonal(&Rotation::new(RotationKind::Auto, d, 3).unwrap());
        }
    }

    #[test]
    fn hadamard_refuses_non_power_of_two_and_bad_rounds() {
        assert!(matches!(
            Rotation::new(RotationKind::Hadamard { rounds: 2 }, 96, 0),
            Err(Error::InvalidConfig(_))
        ));
        assert!(Rotation::new(RotationKind::Hadamard { rounds: 0 }, 64, 0).is_err());
        assert!(Rotation::new(RotationKind::Haar, 0, 0).is_err());
    }

    /// A dense rotation of dimension `d` is `d^2` values: far beyond the cap the allocation
    /// would abort the process, so the cap is an error for every kind.
    #[test]
    fn dimensions_above_the_cap_are_errors() {
        for kind in [
            RotationKind::Auto,
            RotationKind::Haar,
            RotationKind::Hadamard { rounds: 3 },
        ] {
            for dim in [MAX_DIM + 1, 2 * MAX_DIM, 1 << 40] {
                assert!(
                    matches!(Rotation::new(kind, dim, 0), Err(Error::InvalidConfig(_))),
                    "{kind:?} {dim}"
                );
            }
        }
        assert!(Rotation::new(RotationKind::Auto, MAX_DIM, 0).is_ok());
    }

    #[test]
    fn seed_changes_the_rotation() {
        let a = Rotation::new(RotationKind::Auto, 64, 1).unwrap();
        let b = Rotation::new(RotationKind::Auto, 64, 2).unwrap();
        let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let (mut ya, mut yb) = (vec![0.0; 64], vec![0.0; 64]);
        a.apply(&x, &mut ya);
        b.apply(&x, &mut yb);
        assert_ne!(ya, yb);
    }
}
