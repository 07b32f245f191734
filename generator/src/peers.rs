//! Peer crates measured by `fibquant-gen bench` (feature `peers`, never a runtime dependency):
//! `turboquant-rs` (TurboQuant, 2/3/4 bits) and `fib-quant` (another FibQuant implementation), on
//! the same vectors as our codecs, single-threaded, with their MSE.

use crate::bench::{nmse, time, CodecRow, CodecSpeed};
use std::hint::black_box;

/// fib-quant's `(k, N)` at each rate. b = 3 uses k = 2, N = 64: its k = 4, N = 4096 codebook
/// takes far too long to train with its exhaustive Lloyd.
fn fib_quant_code(rate: f64) -> Option<(usize, usize)> {
    [
        (0.5, (8, 16)),
        (1.0, (8, 256)),
        (2.0, (4, 256)),
        (3.0, (2, 64)),
        (4.0, (2, 256)),
    ]
    .into_iter()
    .find(|&(r, _)| r == rate)
    .map(|(_, code)| code)
}

/// Encode/decode ns per vector and MSE of each peer at `rate` bits per coordinate.
pub fn speed(d: usize, rate: f64, x: &[f32], repeats: usize) -> Vec<CodecRow> {
    let mut out = Vec::new();
    let count = x.len() / d;
    if rate.fract() == 0.0 && (2.0..=4.0).contains(&rate) {
        use turboquant::codebook::get_codebook;
        use turboquant::quantize::{dequantize_vec_with_codebook, quantize_vec_with_codebook};
        use turboquant::rotation::generate_sign_pattern;
        let bits = rate as u8;
        let cfg = turboquant::TurboQuantConfig::new(bits, d)
            .unwrap()
            .with_seed(42);
        let cb = get_codebook(bits, d).unwrap();
        let signs = generate_sign_pattern(d, 42);
        let mut codes = Vec::new();
        let enc = time(repeats, || {
            codes = x
                .chunks_exact(d)
                .map(|row| quantize_vec_with_codebook(&cfg, row, &cb, &signs).unwrap())
                .collect();
            black_box(&codes);
        });
        let mut y = Vec::new();
        let dec = time(repeats, || {
            y = codes
                .iter()
                .flat_map(|c| dequantize_vec_with_codebook(&cfg, c, &cb, &signs).unwrap())
                .collect::<Vec<f32>>();
            black_box(&y);
        });
        out.push(CodecRow::new(
            format!("turboquant-rs {bits}-bit"),
            d,
            rate,
            CodecSpeed {
                encode_ns: enc * 1e9 / count as f64,
                decode_ns: dec * 1e9 / count as f64,
                mse: nmse(x, &y, d),
                bytes_per_vector: codes[0].size_bytes(),
            },
        ));
    }
    if let Some((k, n)) = fib_quant_code(rate) {
        use fib_quant::{FibQuantProfileV1, FibQuantizer};
        let profile = FibQuantProfileV1::paper_default(d, k, n, 7).unwrap();
        let q = FibQuantizer::new(profile).unwrap();
        let refs: Vec<&[f32]> = x.chunks_exact(d).collect();
        let mut codes = Vec::new();
        let enc = time(repeats, || {
            codes = q.encode_batch(&refs).unwrap();
            black_box(&codes);
        });
        let mut y: Vec<f32> = Vec::new();
        let dec = time(repeats, || {
            y = q.decode_batch_fast(&codes).unwrap().concat();
            black_box(&y);
        });
        let bytes = codes[0].indices.len() + codes[0].norm_payload.len();
        out.push(CodecRow::new(
            format!("fib-quant k={k} N={n}"),
            d,
            rate,
            CodecSpeed {
                encode_ns: enc * 1e9 / count as f64,
                decode_ns: dec * 1e9 / count as f64,
                mse: nmse(x, &y, d),
                bytes_per_vector: bytes,
            },
        ));
    }
    out
}
