//! The exact per-kv-head key transform of a [`KvCache`](super::KvCache): per-channel key scales,
//! chosen once from the first rows (and queries) a layer receives, then frozen.

use super::policy::{CachePolicy, KeyScaling};

/// Scales are kept within `[1 / SCALE_LIMIT, SCALE_LIMIT]` of their geometric mean: any positive
/// scale is exact, the limit only keeps scaled values far from fp16's range ends.
const SCALE_LIMIT: f32 = 256.0;

/// The frozen transform of one kv head: stored key `k / key_scale`, scored with
/// `q * key_scale` (the means are per block of codes, see `store`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadTransform {
    pub key_scale: Option<Vec<f32>>,
}

/// Per-channel mean of `rows` (`d` values per row, at least one row), in f64.
pub(crate) fn mean(rows: &[f32], d: usize) -> Vec<f32> {
    let n = (rows.len() / d).max(1) as f64;
    let mut acc = vec![0f64; d];
    for row in rows.chunks_exact(d) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x as f64;
        }
    }
    acc.iter().map(|a| (a / n) as f32).collect()
}

/// Per-channel mean square of `rows - center`.
fn mean_square(rows: &[f32], d: usize, center: Option<&[f32]>) -> Vec<f64> {
    let n = (rows.len() / d).max(1) as f64;
    let mut acc = vec![0f64; d];
    for row in rows.chunks_exact(d) {
        for (i, (a, &x)) in acc.iter_mut().zip(row).enumerate() {
            let c = center.map_or(0.0, |c| c[i]);
            *a += ((x - c) as f64).powi(2);
        }
    }
    acc.iter().map(|a| a / n).collect()
}

/// `s_i = (rms_k,i / rms_q,i)^(1/2)`, divided by its geometric mean and kept within
/// [`SCALE_LIMIT`]; channels without signal on either side get 1.
fn balanced_scales(key_ms: &[f64], query_ms: &[f64]) -> Vec<f32> {
    let raw: Vec<Option<f64>> = key_ms
        .iter()
        .zip(query_ms)
        .map(|(&k, &q)| {
            let s = (k.sqrt() / q.sqrt()).sqrt();
            (k > 0.0 && q > 0.0 && s.is_finite() && s > 0.0).then_some(s)
        })
        .collect();
    let logs: Vec<f64> = raw.iter().flatten().map(|s| s.ln()).collect();
    let centre = if logs.is_empty() {
        0.0
    } else {
        logs.iter().sum::<f64>() / logs.len() as f64
    };
    let limit = SCALE_LIMIT as f64;
    raw.iter()
        .map(|s| s.map_or(1.0, |s| (s / centre.exp()).clamp(1.0 / limit, limit) as f32))
        .collect()
}

impl HeadTransform {
    /// The identity (nothing scaled).
    pub fn identity() -> Self {
        HeadTransform { key_scale: None }
    }

    /// The key scales `policy` asks for, from one kv head's first rows: `keys` (`d` per row)
    /// and `queries` (the rows of the query heads that share the kv head, for the same
    /// positions) when known. Key statistics are taken about the keys' mean when the policy
    /// centers keys (what the codes then store). The first `skip` rows (exact sink tokens,
    /// whose statistics are unlike the rest) are left out when rows remain after them.
    pub fn freeze(
        policy: &CachePolicy,
        d: usize,
        keys: &[f32],
        queries: Option<&[f32]>,
        skip: usize,
    ) -> Self {
        let rows = keys.len() / d;
        let skip = if rows > skip { skip } else { 0 };
        let kept_keys = &keys[skip * d..];
        let key_scale = match (policy.key_scaling, queries) {
            (KeyScaling::Balanced, Some(q)) if rows > 0 => {
                let group = q.len() / (rows * d);
                // Each query head's rows after `skip`.
                let kept: Vec<f32> = q
                    .chunks_exact(rows * d)
                    .take(group)
                    .flat_map(|head| head[skip * d..].iter().copied())
                    .collect();
                let center = policy.center_keys.then(|| mean(kept_keys, d));
                let key_ms = mean_square(kept_keys, d, center.as_deref());
                let query_ms = mean_square(&kept, d, None);
                Some(balanced_scales(&key_ms, &query_ms))
            }
            _ => None,
        };
        HeadTransform { key_scale }
    }

    /// Writes the stored form of key rows, `k / scale`.
    pub fn keys_in(&self, rows: &[f32], d: usize, out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(rows);
        if let Some(s) = &self.key_scale {
            for row in out.chunks_exact_mut(d) {
                row.iter_mut().zip(s).for_each(|(x, s)| *x /= s);
            }
        }
    }

    /// The query as stored keys are scored, `q * scale`.
    pub fn query(&self, q: &[f32], out: &mut [f32]) {
        out.copy_from_slice(q);
        if let Some(s) = &self.key_scale {
            out.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
    }

    /// A stored key back in the model's space, `k' * scale`.
    pub fn key_out(&self, row: &mut [f32]) {
        if let Some(s) = &self.key_scale {
            row.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
    }

    /// Bytes of the scales (f32 each).
    pub fn bytes(&self) -> usize {
        self.key_scale.as_ref().map_or(0, |v| v.len() * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_scales_follow_the_rule_and_have_unit_geometric_mean() {
        // rms_k = (4, 1, 1, 1), rms_q = (1, 1, 1, 4): raw s = (2, 1, 1, 0.5).
        let s = balanced_scales(&[16.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 16.0]);
        let want = [2.0f32, 1.0, 1.0, 0.5];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{s:?}");
        }
        // A dead channel gets 1; the others are normalized without it.
        let s = balanced_scales(&[4.0, 0.0, 1.0], &[1.0, 1.0, 4.0]);
        assert_eq!(s[1], 1.0);
        assert!((s[0] * s[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn scaling_inverts_and_keeps_scores() {
        let policy = CachePolicy::preset(4.0);
        let d = 4;
        let keys: Vec<f32> = (0..24)
            .map(|i| (i as f32 * 0.7).sin() * (1 + i % 4) as f32)
            .collect();
        let queries: Vec<f32> = (0..48).map(|i| (i as f32 * 0.9).sin()).collect();
        let t = HeadTransform::freeze(&policy, d, &keys, Some(&queries), 1);
        assert!(t.key_scale.is_some());
        let mut stored = Vec::new();
        t.keys_in(&keys, d, &mut stored);
        let (q, k) = (&queries[..d], &keys[..d]);
        let mut qs = vec![0f32; d];
        t.query(q, &mut qs);
        let lhs: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
        let rhs: f32 = qs.iter().zip(&stored[..d]).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4);
        for (row, orig) in stored.chunks_exact_mut(d).zip(keys.chunks_exact(d)) {
            t.key_out(row);
            for (a, b) in row.iter().zip(orig) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }
}
