//! Property tests: encode/decode on arbitrary finite inputs.

use fibquant::{Codec, CodecConfig, Error};
use proptest::prelude::*;
use std::sync::OnceLock;

fn codecs() -> &'static [Codec] {
    static C: OnceLock<Vec<Codec>> = OnceLock::new();
    C.get_or_init(|| {
        [
            (64, 4, 256),
            (64, 1, 4),
            (64, 8, 16),
            (96, 3, 64),
            (128, 2, 256),
        ]
        .iter()
        .map(|&(d, k, n)| Codec::new(CodecConfig::new(d, k, n)).unwrap())
        .collect()
    })
}

fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1e4f32..1e4,
        -1e-3f32..1e-3,
        Just(0.0f32),
        any::<f32>().prop_filter("finite", |v| v.is_finite()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn encode_decode_never_panics_and_stays_bounded(which in 0usize..5, seed in any::<u64>(), vals in prop::collection::vec(finite(), 128)) {
        let codec = &codecs()[which];
        let d = codec.dim();
        let x: Vec<f32> = (0..d).map(|i| vals[(i + seed as usize) % vals.len()]).collect();
        let mut slot = vec![0u8; codec.slot_bytes()];
        match codec.encode(&x, &mut slot) {
            Err(Error::NormOverflow { .. }) => {
                let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                prop_assert!(norm > 65504.0 * 0.999);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(()) => {
                let mut y = vec![0f32; d];
                codec.decode(&slot, &mut y).unwrap();
                prop_assert!(y.iter().all(|v| v.is_finite()));
                // Codewords lie in the unit ball, so ||x_hat|| <= ||x|| * sqrt(d/k) * (1 + 2^-11)
                // and the error is at most (1 + sqrt(d/k))^2 ||x||^2.
                let nx = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
                let err = x.iter().zip(&y).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>();
                let bound = (1.0 + (codec.blocks() as f64).sqrt()).powi(2) * nx * 1.01 + 1e-30;
                prop_assert!(err <= bound);
                // Scaling by a power of two changes only the norm field.
                let x2: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
                let mut slot2 = vec![0u8; codec.slot_bytes()];
                codec.encode(&x2, &mut slot2).unwrap();
                let nb = 2; // fp16 norm bytes
                if nx > 1e-6 && nx < 1e9 {
                    prop_assert_eq!(&slot[nb..], &slot2[nb..]);
                }
            }
        }
    }

    #[test]
    fn arbitrary_slot_bytes_decode_or_error(which in 0usize..5, bytes in prop::collection::vec(any::<u8>(), 128)) {
        let codec = &codecs()[which];
        let slot = &bytes[..codec.slot_bytes()];
        let mut y = vec![0f32; codec.dim()];
        match codec.decode(slot, &mut y) {
            Ok(()) => prop_assert!(y.iter().all(|v| v.is_finite())),
            Err(Error::CorruptSlot(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
