// Which rate points the build embeds, and which is a rate's preset: shared by the build script
// (`include!`) and the registry, so that the two cannot disagree. Plain functions over
// `(dim, k, n, mse)`, no crate imports.

/// The rates, in bits per coordinate, that have a preset code ([`best_for_rate`](super::best_for_rate)):
/// what the default build embeds, with the scalar code of each rate.
pub const PRESET_RATES: [f64; 5] = [0.5, 1.0, 2.0, 3.0, 4.0];

/// Stored bits per coordinate of `n` codewords of `k` values: `ceil(log2 n) / k` (what a slot
/// spends on indices, so codes of equal bytes compete for a rate).
pub fn stored_bits(k: usize, n: usize) -> f64 {
    let bits = (usize::BITS - (n.max(2) - 1).leading_zeros()).max(1);
    bits as f64 / k as f64
}

/// The position in `points` (`(dim, k, n, mse)`) of the preset for `dim` at `rate_bits`: the
/// lowest MSE among the points that store exactly `rate_bits` bits per coordinate (the first
/// of equal MSEs).
pub fn preset_position(
    points: &[(usize, usize, usize, f64)],
    dim: usize,
    rate_bits: f64,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &(d, k, n, mse)) in points.iter().enumerate() {
        if d != dim || (stored_bits(k, n) - rate_bits).abs() >= 1e-9 {
            continue;
        }
        if best.is_none_or(|b| mse.total_cmp(&points[b].3).is_lt()) {
            best = Some(i);
        }
    }
    best
}

/// Whether the default code set (`presets`) embeds `points[i]`: it is the preset of one of
/// [`PRESET_RATES`] for its head dim, or the scalar (`k = 1`) code of such a rate, the
/// baseline every vector code is compared with. (Used by the build script, which includes this
/// file.)
#[allow(dead_code)]
pub fn in_preset_set(points: &[(usize, usize, usize, f64)], i: usize) -> bool {
    let (dim, k, n, _) = points[i];
    PRESET_RATES.iter().any(|&rate| {
        (k == 1 && (stored_bits(k, n) - rate).abs() < 1e-9)
            || preset_position(points, dim, rate) == Some(i)
    })
}
