//! One side (keys or values) of one kv head: exact first positions, codes, an exact recent
//! window, in position order.

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::fp16::{f16_bits_to_f32, f32_to_f16_bits, F16_MAX};

/// Positions `[0, sinks)` exact, `[sinks, sinks + coded)` as codec slots, the rest exact (the
/// recent window; every position after the sinks when the side has no codec).
#[derive(Debug, Clone, Default)]
pub(crate) struct SideStore {
    /// The first positions, binary16 bits, `d` per row.
    pub sinks: Vec<u16>,
    /// Codec slots.
    pub slots: Vec<u8>,
    /// The most recent positions, binary16 bits, oldest first.
    pub tail: Vec<u16>,
}

/// Where new rows of one append go, computed before anything changes (so that an error leaves
/// the store as it was).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    sinks: Vec<u16>,
    slots: Vec<u8>,
    /// Oldest tail rows moved into codes.
    tail_aged: usize,
    tail: Vec<u16>,
}

/// Binary16 bits of `rows`, or the position (row) of the first value fp16 cannot hold.
fn to_f16(rows: &[f32], d: usize, first_position: usize) -> Result<Vec<u16>> {
    if let Some(i) = rows.iter().position(|v| v.abs() > F16_MAX) {
        return Err(Error::Cache {
            layer: usize::MAX,
            head: None,
            position: Some(first_position + i / d),
            source: Box::new(Error::NormOverflow {
                norm: rows[i].abs(),
                max: F16_MAX,
            }),
        });
    }
    Ok(rows.iter().map(|&v| f32_to_f16_bits(v)).collect())
}

/// What a side stores: the exact-token policy and its codec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout<'a> {
    pub dim: usize,
    pub sinks: usize,
    pub window: usize,
    pub age_batch: usize,
    pub codec: Option<&'a Codec>,
}

impl SideStore {
    pub fn sink_rows(&self, d: usize) -> usize {
        self.sinks.len() / d
    }

    pub fn coded_rows(&self, codec: Option<&Codec>) -> usize {
        codec.map_or(0, |c| self.slots.len() / c.slot_bytes())
    }

    pub fn tail_rows(&self, d: usize) -> usize {
        self.tail.len() / d
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.sinks.len() + self.tail.len()) * 2 + self.slots.len()
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
        let ages = total > layout.window
            && (layout.window == 0 || total >= layout.window + layout.age_batch);
        let aged = if ages { total - layout.window } else { 0 };
        // The aged rows: the oldest of the old tail, then the first new rows.
        let from_tail = aged.min(old_tail);
        let from_new = aged - from_tail;
        let mut encode: Vec<f32> = self.tail[..from_tail * d]
            .iter()
            .map(|&h| f16_bits_to_f32(h))
            .collect();
        encode.extend_from_slice(&rest[..from_new * d]);
        let mut slots = vec![0u8; aged * codec.slot_bytes()];
        // Positions of the aged rows start after the sinks and the coded rows.
        let first_aged = len - old_tail + sink_take;
        codec
            .encode_batch(&encode, &mut slots)
            .map_err(|e| match e {
                Error::Row { row, source } => Error::Cache {
                    layer: usize::MAX,
                    head: None,
                    position: Some(first_aged + row),
                    source,
                },
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
        self.tail.drain(..pending.tail_aged * d);
        self.tail.extend_from_slice(&pending.tail);
    }
}
