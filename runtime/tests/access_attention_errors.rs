//! Random access, attention on codes, zero vectors and every error case.

mod common;
use common::*;
use fibquant::codebook::Codebook;
use fibquant::{Codec, CodecConfig, Error, NormFormat, RotationKind};
use std::sync::Arc;

fn encode_rows(codec: &Codec, x: &[f32]) -> Vec<u8> {
    let mut slots = vec![0u8; x.len() / codec.dim() * codec.slot_bytes()];
    codec.encode_batch(x, &mut slots).unwrap();
    slots
}

#[test]
fn any_slot_and_any_block_decode_on_their_own() {
    for (d, k, n) in [(64, 4, 256), (64, 2, 8), (128, 8, 4096), (96, 3, 512)] {
        let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
        let x = gaussian_rows(50, d, 4);
        let slots = encode_rows(&codec, &x);
        let mut all = vec![0f32; x.len()];
        codec.decode_batch(&slots, &mut all).unwrap();
        let mut one = vec![0f32; d];
        let mut rotated = vec![0f32; d];
        let mut block = vec![0f32; k];
        for i in (0..50).rev() {
            let slot = codec.slot(&slots, i).unwrap();
            codec.decode(slot, &mut one).unwrap();
            assert_eq!(&one[..], &all[i * d..(i + 1) * d]);
            codec.decode_rotated(slot, &mut rotated).unwrap();
            for j in 0..d / k {
                codec.decode_block(slot, j, &mut block).unwrap();
                assert_eq!(&block[..], &rotated[j * k..(j + 1) * k]);
            }
        }
        assert!(codec.slot(&slots, 50).is_err());
        assert!(codec
            .decode_block(codec.slot(&slots, 0).unwrap(), d / k, &mut block)
            .is_err());
    }
}

#[test]
fn scores_and_weighted_sum_equal_decode_then_compute() {
    for (d, k, n) in [
        (64, 1, 16),
        (64, 4, 256),
        (128, 8, 4096),
        (96, 3, 64),
        (64, 8, 2),
        (64, 8, 16),
    ] {
        let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
        // Few keys (direct dot products), many keys (look-up table) and a long call (the byte
        // plan for whole-byte indices): every path.
        for count in [3usize, 700, 1500] {
            let x = gaussian_rows(count, d, 11);
            let slots = encode_rows(&codec, &x);
            let mut dec = vec![0f32; x.len()];
            codec.decode_batch(&slots, &mut dec).unwrap();
            let q = gaussian_rows(1, d, 12);
            let mut scores = vec![0f32; count];
            codec.scores(&q, &slots, &mut scores).unwrap();
            for (i, s) in scores.iter().enumerate() {
                let row = &dec[i * d..(i + 1) * d];
                let want: f64 = row
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                let scale: f64 = row
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                // f32 rounding of a d-term dot product, on both sides: a few ulps times d.
                assert!(
                    (*s as f64 - want).abs() <= 1e-5 * scale + 1e-30,
                    "d={d} n={n} key {i}"
                );
            }
            let w = gaussian_rows(1, count, 13);
            let mut out = vec![0f32; d];
            codec.weighted_sum(&w[..count], &slots, &mut out).unwrap();
            for j in 0..d {
                let want: f64 = (0..count)
                    .map(|i| w[i] as f64 * dec[i * d + j] as f64)
                    .sum();
                let scale: f64 = (0..count)
                    .map(|i| (w[i] as f64 * dec[i * d + j] as f64).abs())
                    .sum::<f64>()
                    + (0..count).map(|i| w[i].abs() as f64).sum::<f64>() * 1e-3;
                assert!(
                    ((out[j] as f64) - want).abs() <= 1e-4 * scale,
                    "d={d} n={n} coord {j}"
                );
            }
        }
    }
}

#[test]
fn zero_vector_round_trips_to_zeros() {
    for norm in [NormFormat::F16, NormFormat::F32] {
        let codec = Codec::new(CodecConfig::new(64, 4, 256).with_norm(norm)).unwrap();
        let mut slot = vec![0xffu8; codec.slot_bytes()];
        codec.encode(&[0.0; 64], &mut slot).unwrap();
        let mut y = vec![1f32; 64];
        codec.decode(&slot, &mut y).unwrap();
        assert!(y.iter().all(|&v| v == 0.0));
        // Tiny vectors whose norm underflows fp16 decode to zeros too, not garbage.
        codec.encode(&[1e-30; 64], &mut slot).unwrap();
        codec.decode(&slot, &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_finite() && v.abs() < 1e-20));
    }
}

#[test]
fn f32_norms_below_the_reciprocal_range_keep_their_direction() {
    // A norm under 1 / f32::MAX has no f32 reciprocal; such a vector must encode to the indices
    // of its direction (here: those of the same vector scaled up), not to garbage.
    let codec = Codec::new(CodecConfig::new(64, 4, 256).with_norm(NormFormat::F32)).unwrap();
    let big = gaussian_rows(1, 64, 21);
    let norm = big.iter().map(|v| v * v).sum::<f32>().sqrt();
    let tiny: Vec<f32> = big.iter().map(|v| v / norm * 1e-40).collect();
    assert!(tiny.iter().any(|&v| v != 0.0));
    let (mut a, mut b) = (vec![0u8; codec.slot_bytes()], vec![0u8; codec.slot_bytes()]);
    codec.encode(&big, &mut a).unwrap();
    codec.encode(&tiny, &mut b).unwrap();
    let (mut ia, mut ib) = (vec![0u32; 16], vec![0u32; 16]);
    let na = codec.read_slot(&a, &mut ia).unwrap();
    let nb = codec.read_slot(&b, &mut ib).unwrap();
    // Subnormal inputs hold few significant bits, so a few blocks may round to a neighbour.
    let same = ia.iter().zip(&ib).filter(|(x, y)| x == y).count();
    assert!(same >= 12, "{ia:?} vs {ib:?}");
    assert!(nb > 0.0 && nb < 2e-40 && na > 0.0, "{na} {nb}");
}

#[test]
fn slot_positions_that_overflow_are_errors() {
    let codec = Codec::new(CodecConfig::new(64, 4, 256)).unwrap();
    let slots = vec![0u8; 4 * codec.slot_bytes()];
    for i in [4, usize::MAX / codec.slot_bytes(), usize::MAX] {
        assert!(codec.slot(&slots, i).is_err(), "{i}");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let codec = Codec::new(CodecConfig::new(64, 4, 256)).unwrap();
    let mut slot = vec![0u8; codec.slot_bytes()];
    let mut y = vec![0f32; 64];
    assert!(matches!(
        codec.encode(&[0.0; 63], &mut slot),
        Err(Error::WrongLength { .. })
    ));
    assert!(matches!(
        codec.encode(&[0.0; 64], &mut slot[..5]),
        Err(Error::WrongLength { .. })
    ));
    let mut x = vec![1f32; 64];
    x[7] = f32::NAN;
    assert_eq!(
        codec.encode(&x, &mut slot),
        Err(Error::NonFinite { index: 7 })
    );
    x[7] = f32::INFINITY;
    assert_eq!(
        codec.encode(&x, &mut slot),
        Err(Error::NonFinite { index: 7 })
    );
    // fp16 norms overflow above 65504; f32 norms take it.
    let big = vec![10_000f32; 64];
    assert!(matches!(
        codec.encode(&big, &mut slot),
        Err(Error::NormOverflow { .. })
    ));
    let c32 = Codec::new(CodecConfig::new(64, 4, 256).with_norm(NormFormat::F32)).unwrap();
    let mut slot32 = vec![0u8; c32.slot_bytes()];
    c32.encode(&big, &mut slot32).unwrap();
    // Just below the fp16 limit works.
    let edge = vec![65_000f32 / 8.0; 64];
    codec.encode(&edge, &mut slot).unwrap();
    // Slot buffers of the wrong size.
    assert!(matches!(
        codec.decode(&slot[..3], &mut y),
        Err(Error::WrongLength { .. })
    ));
    assert!(codec.decode_batch(&[0u8; 19], &mut y).is_err());
    assert!(matches!(
        codec.encode_batch(&[0.0; 65], &mut [0u8; 18]),
        Err(Error::WrongLength { .. })
    ));
    // A bad row in a batch names the row.
    let mut rows = vec![1f32; 64 * 3];
    rows[64 * 2 + 5] = f32::NAN;
    let mut slots = vec![0u8; 3 * codec.slot_bytes()];
    match codec.encode_batch(&rows, &mut slots) {
        Err(Error::Row { row: 2, source }) => assert_eq!(*source, Error::NonFinite { index: 5 }),
        other => panic!("{other:?}"),
    }
    // Corrupt norms: NaN and negative fp16.
    let mut bad = slot.clone();
    bad[0..2].copy_from_slice(&0x7e00u16.to_le_bytes());
    assert!(matches!(
        codec.decode(&bad, &mut y),
        Err(Error::CorruptSlot(_))
    ));
    bad[0..2].copy_from_slice(&0xbc00u16.to_le_bytes());
    assert!(matches!(
        codec.decode(&bad, &mut y),
        Err(Error::CorruptSlot(_))
    ));
    assert!(codec.scores(&[0.0; 64], &bad, &mut [0.0]).is_err());
    assert!(codec.weighted_sum(&[1.0], &bad, &mut y).is_err());
    // Query and weights checks.
    assert!(codec.scores(&[0.0; 63], &slot, &mut [0.0]).is_err());
    assert!(codec.scores(&[f32::NAN; 64], &slot, &mut [0.0]).is_err());
    assert!(codec.weighted_sum(&[1.0, 2.0], &slot, &mut y).is_err());
    assert!(codec.weighted_sum(&[f32::NAN], &slot, &mut y).is_err());
}

#[test]
fn index_out_of_range_in_a_slot_is_an_error() {
    // N = 3 needs 2 bits per index, so the value 3 can be stored and must be refused.
    let cb = Codebook::new(8, 4, 3, (0..12).map(|i| i as f32 * 0.1).collect()).unwrap();
    let codec = Codec::with_codebook(CodecConfig::new(8, 4, 3), Arc::new(cb)).unwrap();
    let mut slot = vec![0u8; codec.slot_bytes()];
    codec.encode(&[1.0; 8], &mut slot).unwrap();
    slot[2] = 0b0000_1111; // both indices = 3
    let mut y = vec![0f32; 8];
    assert!(matches!(
        codec.decode(&slot, &mut y),
        Err(Error::CorruptSlot(_))
    ));
    assert!(codec.read_slot(&slot, &mut [0u32; 2]).is_err());
    assert!(codec.scores(&[1.0; 8], &slot, &mut [0.0]).is_err());
    assert!(codec.weighted_sum(&[1.0], &slot, &mut y).is_err());
}

#[test]
fn out_of_range_index_deep_in_a_long_cache_is_an_error_on_every_index_width() {
    // N = 200 (8-bit indices, read in place), N = 40000 (16-bit, in place), N = 3000 (12-bit,
    // unpacked): the bad slot sits in the third chunk, and the error names it.
    for (k, n, bits) in [(4usize, 200usize, 8u32), (4, 40000, 16), (4, 3000, 12)] {
        let d = 16;
        let words: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let cb = Codebook::new(d, k, n, words).unwrap();
        let codec = Codec::with_codebook(CodecConfig::new(d, k, n), Arc::new(cb)).unwrap();
        assert_eq!(codec.index_bits(), bits);
        let count = 300;
        let sb = codec.slot_bytes();
        let mut slots = vec![0u8; count * sb];
        let x: Vec<f32> = (0..count * d).map(|i| (i % 13) as f32 - 6.0).collect();
        codec.encode_batch(&x, &mut slots).unwrap();
        let mut scores = vec![0f32; count];
        let mut out = vec![0f32; d];
        codec.scores(&[0.5; 16], &slots, &mut scores).unwrap();
        codec.weighted_sum(&scores, &slots, &mut out).unwrap();
        // Block 2 of slot 261 := all ones (2^bits - 1 >= n).
        let bad = 261;
        let mut indices = vec![0u32; d / k];
        codec
            .read_slot(&slots[bad * sb..(bad + 1) * sb], &mut indices)
            .unwrap();
        indices[2] = (1 << bits) - 1;
        fibquant::util::pack::pack(&indices, bits, &mut slots[bad * sb + 2..(bad + 1) * sb]);
        for result in [
            codec.scores(&[0.5; 16], &slots, &mut scores),
            codec.weighted_sum(&vec![1.0; count], &slots, &mut out),
        ] {
            match result {
                Err(Error::CorruptSlot(msg)) => {
                    assert!(msg.contains("slot 261") && msg.contains("block 2"), "{msg}")
                }
                other => panic!("n={n}: expected CorruptSlot, got {other:?}"),
            }
        }
    }
}

#[test]
fn bad_norms_and_weights_in_a_long_call_are_errors_on_the_byte_plan() {
    // 1500 slots of whole-byte codes take the byte plan; a NaN or negative norm deep in the
    // cache is still named, and non-finite queries or weights are refused.
    for (d, k, n) in [(64, 8, 16), (64, 4, 256), (64, 1, 2)] {
        let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
        let count = 1500;
        let mut slots = encode_rows(&codec, &gaussian_rows(count, d, 21));
        let (mut scores, mut out) = (vec![0f32; count], vec![0f32; d]);
        let w = vec![1f32 / count as f32; count];
        codec.scores(&vec![0.5; d], &slots, &mut scores).unwrap();
        codec.weighted_sum(&w, &slots, &mut out).unwrap();
        let bad = 1300 * codec.slot_bytes();
        for norm in [0x7e00u16, 0xbc00] {
            // fp16 NaN, then -1.0.
            slots[bad..bad + 2].copy_from_slice(&norm.to_le_bytes());
            for result in [
                codec.scores(&vec![0.5; d], &slots, &mut scores),
                codec.weighted_sum(&w, &slots, &mut out),
            ] {
                match result {
                    Err(Error::CorruptSlot(msg)) => assert!(msg.contains("slot 1300"), "{msg}"),
                    other => panic!("d={d} k={k} n={n}: expected CorruptSlot, got {other:?}"),
                }
            }
        }
        let mut q = vec![0.5f32; d];
        q[3] = f32::NAN;
        assert_eq!(
            codec.scores(&q, &slots, &mut scores),
            Err(Error::NonFinite { index: 3 })
        );
        let mut w = w;
        w[1400] = f32::INFINITY;
        assert_eq!(
            codec.weighted_sum(&w, &slots, &mut out),
            Err(Error::NonFinite { index: 1400 })
        );
    }
}

#[test]
fn unknown_rates_and_bad_configs_are_refused() {
    assert!(matches!(
        Codec::new(CodecConfig::new(64, 4, 12345)),
        Err(Error::UnknownRate { .. })
    ));
    assert!(matches!(
        Codec::new(CodecConfig::new(64, 3, 8)),
        Err(Error::BlockDoesNotDivide { dim: 64, k: 3 })
    ));
    assert!(Codec::new(CodecConfig::new(64, 4, 1)).is_err());
    assert!(matches!(
        Codec::new(CodecConfig::new(96, 3, 64).with_rotation(RotationKind::Hadamard { rounds: 3 })),
        Err(Error::InvalidConfig(_))
    ));
    // A codebook that does not match the config.
    let cb = fibquant::registry::codebook(64, 4, 256).unwrap();
    assert!(Codec::with_codebook(CodecConfig::new(64, 4, 16), cb).is_err());
}

#[test]
fn codec_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Codec>();
}
