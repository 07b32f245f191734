//! One side (keys or values) of one kv head: exact first positions, codes in blocks (each with
//! its own mean), an exact recent window, in position order.
//!
//! A block is a run of positions encoded together: when rows age out of the window they are cut
//! into blocks of at most [`Layout::block_len`] rows, and with centering each block stores the
//! fp16 mean of its rows and codes of the rows minus that mean. A mean taken from the rows it
//! serves follows whatever drifts along the sequence (rotary position embedding turns keys'
//! low-frequency channels with position; topics change values), which one mean frozen from the
//! prompt does not.

use super::transform::mean;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::util::fp16::{f16_bits_to_f32, f32_to_f16_bits, F16_MAX};

/// Positions `[0, sinks)` exact, then codec slots, then the rest exact (the recent window;
/// every position after the sinks when the side has no codec).
#[derive(Debug, Clone, Default)]
pub(crate) struct SideStore {
    /// The first positions, binary16 bits, `d` per row.
    pub sinks: Vec<u16>,
    /// Codec slots.
    pub slots: Vec<u8>,
    /// Per block of slots: binary16 mean (`d` values; empty without centering).
    pub means: Vec<u16>,
    /// Per block of slots: the coded rows up to its end (cumulative).
    pub block_ends: Vec<usize>,
    /// The most recent positions, binary16 bits, oldest first.
    pub tail: Vec<u16>,
}

/// Where new rows of one append go, computed before anything changes (so that an error leaves
/// the store as it was).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    sinks: Vec<u16>,
    slots: Vec<u8>,
    means: Vec<u16>,
    /// Rows of each new block.
    blocks: Vec<usize>,
    /// Oldest tail rows moved into codes.
    tail_aged: usize,
    tail: Vec<u16>,
}

/// An error at `position` (layer and head are filled in by the caller).
fn at_position(position: usize, source: Error) -> Error {
    Error::Cache {
        layer: usize::MAX,
        head: None,
        position: Some(position),
        source: Box::new(source),
    }
}

/// Binary16 bits of `rows`, or the position (row) of the first value fp16 cannot hold.
fn to_f16(rows: &[f32], d: usize, first_position: usize) -> Result<Vec<u16>> {
    if let Some(i) = rows.iter().position(|v| v.abs() > F16_MAX) {
        let e = Error::NormOverflow {
            norm: rows[i].abs(),
            max: F16_MAX,
        };
        return Err(at_position(first_position + i / d, e));
    }
    Ok(rows.iter().map(|&v| f32_to_f16_bits(v)).collect())
}

/// What a side stores: the exact-token policy, centering and its codec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout<'a> {
    pub dim: usize,
    pub sinks: usize,
    pub window: usize,
    pub block_len: usize,
    pub center: bool,
    pub codec: Option<&'a Codec>,
}

/// Sizes of the blocks `rows` aged rows are cut into: as equal as possible, at most `batch`.
fn block_sizes(rows: usize, batch: usize) -> Vec<usize> {
    if rows == 0 {
        return Vec::new();
    }
    let count = rows.div_ceil(batch);
    (0..count)
        .map(|i| rows / count + usize::from(i < rows % count))
        .collect()
}

impl SideStore {
    pub fn sink_rows(&self, d: usize) -> usize {
        self.sinks.len() / d
    }

    pub fn coded_rows(&self) -> usize {
        self.block_ends.last().copied().unwrap_or(0)
    }

    pub fn tail_rows(&self, d: usize) -> usize {
        self.tail.len() / d
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.sinks.len() + self.tail.len() + self.means.len()) * 2 + self.slots.len()
    }

    /// The blocks of codes as `(first coded row, end, mean)` (`mean` empty without centering).
    pub fn blocks(&self, d: usize) -> impl Iterator<Item = (usize, usize, &[u16])> {
        let mut start = 0;
        self.block_ends.iter().enumerate().map(move |(b, &end)| {
            let mean = self.means.get(b * d..(b + 1) * d).unwrap_or(&[]);
            let block = (start, end, mean);
            start = end;
            block
        })
    }

    /// Plans the append of `rows` (already transformed, `d` per row) at position `len`.
    /// Errors carry the position (layer and head are filled in by the caller).
    pub fn plan(&self, layout: Layout<'_>, len: usize, rows: &[f32]) -> Result<Pending> {
        let d = layout.dim;
        let n = rows.len() / d;
        let sink_take = layout.sinks.saturating_sub(len).min(n);
        let (to_sinks, rest) = rows.split_at(sink_take * d);
        let mut pending = Pending {
            sinks: to_f16(to_sinks, d, len)?,
            ..Pending::default()
        };
        let rest_first = len + sink_take;
        let Some(codec) = layout.codec else {
            pending.tail = to_f16(rest, d, rest_first)?;
            return Ok(pending);
        };
        let old_tail = self.tail_rows(d);
        let total = old_tail + rest.len() / d;
        // A centered side waits for a whole block past the window; another encodes each row as
        // it leaves the window.
        let batch = if layout.center { layout.block_len } else { 1 };
        let ages = total >= layout.window + batch;
        let aged = if ages { total - layout.window } else { 0 };
        // The aged rows: the oldest of the old tail, then the first new rows.
        let from_tail = aged.min(old_tail);
        let from_new = aged - from_tail;
        let mut encode: Vec<f32> = self.tail[..from_tail * d]
            .iter()
            .map(|&h| f16_bits_to_f32(h))
            .collect();
        encode.extend_from_slice(&rest[..from_new * d]);
        // Positions of the aged rows start after the sinks and the coded rows.
        let first_aged = len - old_tail + sink_take;
        // Without centering a block is only a unit of encoding: one for all the aged rows.
        pending.blocks = block_sizes(aged, if layout.center { batch } else { aged.max(1) });
        let mut start = 0;
        for &size in &pending.blocks {
            let block = &mut encode[start * d..(start + size) * d];
            if layout.center {
                // The fp16 mean is what is stored: subtract exactly that.
                let m = to_f16(&mean(block, d), d, first_aged + start)?;
                for row in block.chunks_exact_mut(d) {
                    row.iter_mut()
                        .zip(&m)
                        .for_each(|(x, &h)| *x -= f16_bits_to_f32(h));
                }
                pending.means.extend_from_slice(&m);
            }
            start += size;
        }
        let mut slots = vec![0u8; aged * codec.slot_bytes()];
        codec
            .encode_batch(&encode, &mut slots)
            .map_err(|e| match e {
                Error::Row { row, source } => at_position(first_aged + row, *source),
                other => other,
            })?;
        pending.slots = slots;
        pending.tail_aged = from_tail;
        pending.tail = to_f16(&rest[from_new * d..], d, rest_first + from_new)?;
        Ok(pending)
    }

    /// Applies a plan made by [`plan`](Self::plan) on this store.
    pub fn commit(&mut self, d: usize, pending: Pending) {
        self.sinks.extend_from_slice(&pending.sinks);
        self.slots.extend_from_slice(&pending.slots);
        self.means.extend_from_slice(&pending.means);
        let mut end = self.coded_rows();
        for size in pending.blocks {
            end += size;
            self.block_ends.push(end);
        }
        self.tail.drain(..pending.tail_aged * d);
        self.tail.extend_from_slice(&pending.tail);
    }
}

#[cfg(test)]
mod tests {
    use super::block_sizes;

    #[test]
    fn blocks_are_near_equal_and_at_most_the_batch() {
        assert_eq!(block_sizes(0, 4), Vec::<usize>::new());
        assert_eq!(block_sizes(3, 4), vec![3]);
        assert_eq!(block_sizes(9, 4), vec![3, 3, 3]);
        assert_eq!(block_sizes(10, 4), vec![4, 3, 3]);
        assert_eq!(block_sizes(128, 128), vec![128]);
    }
}
