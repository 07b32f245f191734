//! Exact rescaling for f32 overflow. Where a computation on finite inputs overflows f32 in its
//! intermediate sums although its result may be finite (huge queries, weights or f32 norms), it
//! is redone on inputs scaled by [`OVERFLOW_DOWN`] and its results scaled by [`OVERFLOW_UP`]:
//! powers of two, so the scaling is exact, and results are infinite only where the exact result
//! is beyond f32. Where NaN remains (terms so large that they overflow even scaled), once more
//! at `2^-126`, and then it is an error. Calls that do not overflow never take this path, so
//! their bits do not change.

/// The scale of inputs on the retry, `2^-64`.
pub const OVERFLOW_DOWN: f32 = 1.0 / (1u128 << 64) as f32;
/// The scale of results on the retry, `2^64`.
pub const OVERFLOW_UP: f32 = (1u128 << 64) as f32;

/// Whether every value of `v` is finite (one vectorizable pass).
pub fn all_finite(v: &[f32]) -> bool {
    v.iter().fold(true, |all, x| all & x.is_finite())
}

/// The second, last rescaling: `2^-126` and back.
const LAST_DOWN: f32 = 1.0 / (1u128 << 126) as f32;
const LAST_UP: f32 = (1u128 << 126) as f32;

/// After `out` was computed from `input`: where `out` is not all finite, recomputes it with
/// `run` on `input` scaled by [`OVERFLOW_DOWN`] and scales it back (then, where NaN remains,
/// at `2^-126`). `Err(Overflow)` where NaN still remains; infinities that remain are the exact
/// result's.
pub fn retry_on_overflow(
    what: &'static str,
    input: &[f32],
    out: &mut [f32],
    mut run: impl FnMut(&[f32], &mut [f32]) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    if all_finite(out) {
        return Ok(());
    }
    for (down, up, again) in [(OVERFLOW_DOWN, OVERFLOW_UP, false), (LAST_DOWN, LAST_UP, true)] {
        if again && !out.iter().any(|v| v.is_nan()) {
            return Ok(());
        }
        let small: Vec<f32> = input.iter().map(|v| v * down).collect();
        run(&small, out)?;
        out.iter_mut().for_each(|o| *o *= up);
    }
    if out.iter().any(|v| v.is_nan()) {
        return Err(crate::error::Error::Overflow { what });
    }
    Ok(())
}
