//! Round trips on random vectors reproduce the registry's MSE, for both rotations.

mod common;
use common::*;
use fibquant::{registry, Codec, CodecConfig, RotationKind};

fn check(d: usize, k: usize, n: usize, rotation: RotationKind) {
    let entry = registry::entries()
        .find(|e| (e.dim, e.k, e.n) == (d, k, n))
        .expect("rate point in the registry");
    let codec = Codec::new(CodecConfig::new(d, k, n).with_rotation(rotation)).unwrap();
    let rows = 4000;
    let x = gaussian_rows(rows, d, 1000 + d as u64 + n as u64);
    let mut slots = vec![0u8; rows * codec.slot_bytes()];
    codec.encode_batch(&x, &mut slots).unwrap();
    let mut y = vec![0f32; x.len()];
    codec.decode_batch(&slots, &mut y).unwrap();
    let errs = normalized_errors(&x, &y, d);
    let (mean, se) = mean_se(&errs);
    // The registry MSE was measured on test_blocks source blocks (d/k per vector): its standard
    // error is about sd(e) * sqrt((d/k) / test_blocks) with test_blocks = 2^18.
    let se_registry = se * (rows as f64).sqrt() * ((d / k) as f64 / (1u64 << 18) as f64).sqrt();
    let tol = 4.0 * (se * se + se_registry * se_registry).sqrt();
    assert!(
        (mean - entry.mse).abs() < tol,
        "d={d} k={k} n={n} {rotation:?}: round-trip MSE {mean:.5} vs registry {:.5} (tol {tol:.5})",
        entry.mse
    );
}

#[test]
fn round_trip_mse_matches_registry_hadamard_and_haar() {
    for (d, k, n) in [
        (64, 1, 4),
        (64, 2, 16),
        (64, 4, 256),
        (64, 8, 16),
        (64, 8, 256),
        (128, 1, 16),
        (128, 4, 256),
        (128, 8, 4096),
        (96, 3, 64),
    ] {
        check(d, k, n, RotationKind::Haar);
        if d.is_power_of_two() {
            check(d, k, n, RotationKind::Auto);
        }
    }
}

#[test]
fn compression_accounting() {
    // d = 64, k = 4, N = 256: 16 one-byte indices + 2-byte norm.
    let c = Codec::new(CodecConfig::new(64, 4, 256)).unwrap();
    assert_eq!(c.slot_bytes(), 18);
    assert!((c.compression_vs_f16() - 128.0 / 18.0).abs() < 1e-12);
    assert_eq!(c.rate_bits(), 2.0);
    // d = 64, k = 8, N = 16 (b = 0.5): 8 four-bit indices = 4 bytes + 2 = 6.
    let c = Codec::new(CodecConfig::new(64, 8, 16)).unwrap();
    assert_eq!(c.slot_bytes(), 6);
    // f32 norms cost two more bytes.
    let c = Codec::new(CodecConfig::new(64, 8, 16).with_norm(fibquant::NormFormat::F32)).unwrap();
    assert_eq!(c.slot_bytes(), 8);
}

#[test]
fn presets_pick_the_best_code_at_a_rate() {
    let c = CodecConfig::preset(64, 2.0).unwrap();
    assert_eq!(c.k * 2, fibquant::util::pack::index_bits(c.n) as usize);
    let best = registry::entries()
        .filter(|e| e.dim == 64 && e.stored_bits() == 2.0)
        .map(|e| e.mse)
        .fold(f64::INFINITY, f64::min);
    let chosen = registry::entries()
        .find(|e| (e.dim, e.k, e.n) == (64, c.k, c.n))
        .unwrap();
    assert_eq!(chosen.mse, best);
    // Codes that store the same bits compete: at 2 bits that is the E8 code (N = 64497, 16 bits
    // per 8 coordinates), below the N = 65536 Lloyd code in the registry's MSE.
    assert_eq!((c.k, c.n), (8, 64497));
    assert!(CodecConfig::preset(64, 2.1).is_err());
}
