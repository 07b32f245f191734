//! Attention on codes, without decoding the cache.
//!
//! Because `P` is orthogonal, `<q, x_hat> = norm * sum_j <(P q)_j, C[idx_j]>`: rotate the query
//! once, then each key costs `d / k` look-ups in a per-query table `T[j][n] = <(P q)_j, C[n]>`
//! (built when the table is cheaper than direct dot products, i.e. when `N` is small against the
//! number of keys). A weighted sum of values is accumulated in the rotated domain and rotated back
//! once at the end.

use crate::codec::{Codec, MAX_DIM};
use crate::error::{check_len, Result};

/// `sum_j table[j * n + indices[j]]` with four independent partial sums (the look-ups are
/// independent; one running sum would serialize them on the add latency).
#[inline]
fn table_sum(table: &[f32], n: usize, indices: &[u32]) -> f32 {
    let mut acc = [0f32; 4];
    let mut rows = table.chunks_exact(n);
    let mut quads = indices.chunks_exact(4);
    for q in quads.by_ref() {
        for (a, &i) in acc.iter_mut().zip(q) {
            *a += rows.next().map_or(0.0, |row| row[i as usize]);
        }
    }
    for (a, &i) in acc.iter_mut().zip(quads.remainder()) {
        *a += rows.next().map_or(0.0, |row| row[i as usize]);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

impl Codec {
    /// Scores `out[i] = <q, x_hat_i>` for every slot `i` of `slots`, without decoding.
    /// `q.len() = d`, `out.len()` = number of slots.
    pub fn scores(&self, q: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        check_len("query", d, q.len())?;
        let count = self.slot_count(slots)?;
        check_len("score output", count, out.len())?;
        if let Some(index) = q.iter().position(|v| !v.is_finite()) {
            return Err(crate::Error::NonFinite { index });
        }
        let mut qr = [0f32; MAX_DIM];
        let qr = &mut qr[..d];
        self.rotation().apply(q, qr);
        let (k, n, blocks) = (self.config().k, self.config().n, self.blocks());
        let cb = self.codebook();
        // Table: blocks * n entries, costs d * n multiply-adds; direct costs d per key.
        // Table: d * n multiply-adds once, then one look-up per block and key; direct: d
        // multiply-adds (and a codeword fetch per block) per key. Build it when n < count.
        let use_table = n < count;
        let slot_bytes = self.slot_bytes();
        let mut indices = [0u32; MAX_DIM];
        let indices = &mut indices[..blocks];
        if use_table {
            let mut table = vec![0f32; blocks * n];
            for (j, row) in table.chunks_exact_mut(n).enumerate() {
                let qj = &qr[j * k..(j + 1) * k];
                for (t, c) in row.iter_mut().zip(cb.codewords().chunks_exact(k)) {
                    *t = qj.iter().zip(c).map(|(a, b)| a * b).sum();
                }
            }
            for (o, slot) in out.iter_mut().zip(slots.chunks_exact(slot_bytes)) {
                let norm = self.read_slot_unchecked_len(slot, indices)?;
                *o = norm * table_sum(&table, n, indices);
            }
        } else {
            let cw = cb.codewords();
            for (o, slot) in out.iter_mut().zip(slots.chunks_exact(slot_bytes)) {
                let norm = self.read_slot_unchecked_len(slot, indices)?;
                let mut s = 0f32;
                for (qj, &i) in qr.chunks_exact(k).zip(indices.iter()) {
                    let c = &cw[i as usize * k..(i as usize + 1) * k];
                    s += qj.iter().zip(c).map(|(a, b)| a * b).sum::<f32>();
                }
                *o = norm * s;
            }
        }
        Ok(())
    }

    /// Weighted sum `out = sum_i weights[i] * x_hat_i` over the slots, accumulated in the rotated
    /// domain with one inverse rotation at the end. `weights.len()` = number of slots,
    /// `out.len() = d`.
    pub fn weighted_sum(&self, weights: &[f32], slots: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        let count = self.slot_count(slots)?;
        check_len("weights", count, weights.len())?;
        check_len("output vector", d, out.len())?;
        if let Some(index) = weights.iter().position(|v| !v.is_finite()) {
            return Err(crate::Error::NonFinite { index });
        }
        let (k, n, blocks) = (self.config().k, self.config().n, self.blocks());
        let cw = self.codebook().codewords();
        let mut acc = [0f32; MAX_DIM];
        let acc = &mut acc[..d];
        let mut indices = [0u32; MAX_DIM];
        let indices = &mut indices[..blocks];
        let slots = slots.chunks_exact(self.slot_bytes());
        // Histogram: one addition per block and value, then d * n multiply-adds once; direct: d
        // multiply-adds per value. Use it when n < count.
        if n < count {
            // Histogram: per block, the total weight on each codeword; then one pass over the
            // codebook. Costs d/k additions per value instead of d multiply-adds.
            let mut hist = vec![0f32; blocks * n];
            for (&w, slot) in weights.iter().zip(slots) {
                let scale = w * self.read_slot_unchecked_len(slot, indices)?;
                for (row, &i) in hist.chunks_exact_mut(n).zip(indices.iter()) {
                    row[i as usize] += scale;
                }
            }
            for (a, row) in acc.chunks_exact_mut(k).zip(hist.chunks_exact(n)) {
                for (&h, c) in row.iter().zip(cw.chunks_exact(k)) {
                    if h != 0.0 {
                        for (a, c) in a.iter_mut().zip(c) {
                            *a += h * c;
                        }
                    }
                }
            }
        } else {
            for (&w, slot) in weights.iter().zip(slots) {
                let scale = w * self.read_slot_unchecked_len(slot, indices)?;
                for (a, &i) in acc.chunks_exact_mut(k).zip(indices.iter()) {
                    let c = &cw[i as usize * k..(i as usize + 1) * k];
                    for (a, c) in a.iter_mut().zip(c) {
                        *a += scale * c;
                    }
                }
            }
        }
        self.rotation().apply_inverse(acc, out);
        Ok(())
    }
}
