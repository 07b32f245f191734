//! Bit packing of codeword indices: `bits` bits per index, least significant bit first, indices in
//! block order, starting at bit 0 of the first byte after the norm.

/// Bits needed to store an index below `n` (at least 1): `ceil(log2 n)`.
pub fn index_bits(n: usize) -> u32 {
    (usize::BITS - (n.max(2) - 1).leading_zeros()).max(1)
}

/// Bytes needed for `count` indices of `bits` bits each.
pub fn packed_bytes(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// Writes `indices` into `out` (which must be exactly `packed_bytes(indices.len(), bits)` long).
/// Every index must fit in `bits` bits (higher bits are dropped). Panics if `out` is too short
/// or `bits` is not in 1..=32.
pub fn pack(indices: &[u32], bits: u32, out: &mut [u8]) {
    check_bits(bits);
    out.iter_mut().for_each(|b| *b = 0);
    let mut bitpos = 0usize;
    for &idx in indices {
        let mut value = idx as u64;
        let mut remaining = bits;
        let mut pos = bitpos;
        while remaining > 0 {
            let byte = pos / 8;
            let shift = (pos % 8) as u32;
            let take = (8 - shift).min(remaining);
            out[byte] |= ((value & ((1 << take) - 1)) as u8) << shift;
            value >>= take;
            remaining -= take;
            pos += take as usize;
        }
        bitpos += bits as usize;
    }
}

/// Panics unless `bits` is a valid index width (1 to 32).
#[inline(always)]
fn check_bits(bits: u32) {
    assert!(
        (1..=32).contains(&bits),
        "index widths are 1 to 32 bits, got {bits}"
    );
}

/// Reads index number `i` (of `bits` bits) from packed bytes. Panics if `packed` is too short
/// or `bits` is not in 1..=32.
#[inline]
pub fn unpack_one(packed: &[u8], bits: u32, i: usize) -> u32 {
    check_bits(bits);
    let mut pos = i * bits as usize;
    let mut remaining = bits;
    let mut value = 0u32;
    let mut filled = 0u32;
    while remaining > 0 {
        let byte = pos / 8;
        let shift = (pos % 8) as u32;
        let take = (8 - shift).min(remaining);
        let chunk = (packed[byte] >> shift) as u32 & ((1 << take) - 1);
        value |= chunk << filled;
        filled += take;
        remaining -= take;
        pos += take as usize;
    }
    value
}

/// Reads all indices into `out` (`packed` must hold at least `packed_bytes(out.len(), bits)`
/// bytes). Fast paths for whole-byte widths; other widths read 64-bit little-endian windows.
/// Panics if `packed` is too short or `bits` is not in 1..=32.
#[inline]
pub fn unpack(packed: &[u8], bits: u32, out: &mut [u32]) {
    check_bits(bits);
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(packed) {
                *o = b as u32;
            }
        }
        16 => {
            for (o, c) in out.iter_mut().zip(packed.chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as u32;
            }
        }
        1 | 2 | 4 => {
            let per = 8 / bits as usize;
            let mask = (1u32 << bits) - 1;
            for (chunk, &b) in out.chunks_mut(per).zip(packed) {
                for (t, o) in chunk.iter_mut().enumerate() {
                    *o = (b as u32 >> (t * bits as usize)) & mask;
                }
            }
        }
        _ => {
            let mask = (1u64 << bits) - 1;
            let bits = bits as usize;
            for (i, o) in out.iter_mut().enumerate() {
                let pos = i * bits;
                let byte = pos / 8;
                let word = if byte + 8 <= packed.len() {
                    u64::from_le_bytes(packed[byte..byte + 8].try_into().unwrap())
                } else {
                    let mut w = [0u8; 8];
                    let tail = &packed[byte..];
                    w[..tail.len()].copy_from_slice(tail);
                    u64::from_le_bytes(w)
                };
                *o = ((word >> (pos % 8)) & mask) as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Xoshiro256;

    #[test]
    fn index_bits_is_ceil_log2() {
        assert_eq!(index_bits(2), 1);
        assert_eq!(index_bits(3), 2);
        assert_eq!(index_bits(4), 2);
        assert_eq!(index_bits(5), 3);
        assert_eq!(index_bits(256), 8);
        assert_eq!(index_bits(257), 9);
        assert_eq!(index_bits(65536), 16);
    }

    #[test]
    fn pack_unpack_round_trip_for_every_width() {
        let mut rng = Xoshiro256::new(5);
        for bits in 1..=24u32 {
            for count in [1usize, 3, 7, 8, 16, 33] {
                let idx: Vec<u32> = (0..count)
                    .map(|_| (rng.next_u64() as u32) & ((1u32 << bits) - 1))
                    .collect();
                let mut buf = vec![0xffu8; packed_bytes(count, bits)];
                pack(&idx, bits, &mut buf);
                let mut back = vec![0; count];
                unpack(&buf, bits, &mut back);
                assert_eq!(idx, back, "bits={bits} count={count}");
            }
        }
    }

    #[test]
    fn layout_is_lsb_first() {
        let mut buf = [0u8; 2];
        pack(&[1, 2, 3, 0], 3, &mut buf);
        // bits: idx0=1 at 0..3, idx1=2 at 3..6, idx2=3 at 6..9.
        assert_eq!(buf, [0b1101_0001, 0]);
    }
}
