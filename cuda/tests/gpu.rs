//! GPU tests: they need an NVIDIA GPU with its driver and NVRTC, so they are ignored by default
//! and run with `cargo test -p fibquant-cuda -- --ignored` on a GPU machine (`cuda/bench/run-gpu.sh`
//! does). Without a GPU they fail with `NoGpu` rather than pass.

mod common;

use common::{decoded, policies, relative_error, Rng};
use fibquant::{CacheShape, Codec, CodecConfig, SideCode};
use fibquant_cuda::gpu::{compile_only, Gpu, FILL_SOURCE};
use fibquant_cuda::layout::HostBatch;
use fibquant_cuda::plan::gpu_code;
use fibquant_cuda::source::{DecodeConfig, EncodeConfig, SideFormat};
use fibquant_cuda::{reference, Error};

/// The bound: GPU outputs equal the CPU runtime's within 1e-3 relative (f32 in a
/// different order, `__expf`; far above the differences seen, far below a code's error).
const TOLERANCE: f64 = 1e-3;

fn gpu() -> Gpu {
    Gpu::new(0).expect("these tests need a GPU (run them with --ignored on a GPU machine)")
}

fn format(d: usize, code: SideCode, center: bool) -> SideFormat {
    let SideCode::Code { k, n } = code else {
        unreachable!()
    };
    SideFormat::of(&Codec::new(CodecConfig::new(d, k, n)).unwrap(), center)
}

#[test]
#[ignore = "needs NVRTC (libnvrtc): run with --ignored where CUDA is installed"]
fn every_kernel_compiles() {
    for d in [64, 128] {
        for g in [1, 4, 8] {
            for bits in [1.0, 2.0, 3.0, 4.0] {
                let f = format(d, gpu_code(d, bits).unwrap(), true);
                for (key, value) in [
                    (Some(f), Some(f)),
                    (None, Some(f)),
                    (Some(f), None),
                    (None, None),
                ] {
                    let c = DecodeConfig {
                        dim: d,
                        group: g,
                        key,
                        value,
                    };
                    compile_only(&c.source(), "compute_90")
                        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
                }
                let e = EncodeConfig {
                    dim: d,
                    format: f,
                    scalar: false,
                };
                compile_only(&e.source(), "compute_90").unwrap();
            }
        }
    }
    compile_only(FILL_SOURCE, "compute_90").unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a GPU machine"]
fn decode_equals_the_runtime_cache() {
    let gpu = gpu();
    for (d, kvh, qh) in [(64, 2, 8), (128, 2, 16), (128, 1, 4)] {
        let shape = CacheShape {
            layers: 1,
            query_heads: qh,
            kv_heads: kvh,
            head_dim: d,
        };
        for bits in [1.0, 2.0, 3.0, 4.0] {
            let code = gpu_code(d, bits).unwrap();
            for (name, policy) in policies(code, code) {
                // Lengths cross the sinks, tiles (256) and splits.
                let (caches, queries, want) = decoded(shape, &policy, &[3, 255, 700, 2100], 11);
                let refs: Vec<_> = caches.iter().collect();
                let host = HostBatch::from_caches(&refs, 0).unwrap();
                let mut dev = gpu.upload(&host).unwrap();
                let got = gpu.decode(&mut dev, &queries).unwrap();
                let err = relative_error(&got, &want);
                eprintln!(
                    "d {d} group {} {bits} bits {name}: GPU vs runtime {err:.2e}",
                    qh / kvh
                );
                assert!(err < TOLERANCE, "d {d}, {bits} bits, {name}: {err:e}");
                let r = reference::decode(&host, &queries).unwrap();
                assert!(relative_error(&got, &r) < TOLERANCE);
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a GPU machine"]
fn encode_picks_the_runtimes_codewords() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    for d in [64, 128] {
        for bits in [1.0, 2.0, 3.0, 4.0] {
            let mut codes = vec![gpu_code(d, bits).unwrap()];
            codes.push(SideCode::Code {
                k: 1,
                n: 1 << bits as usize,
            }); // the scalar thresholds
            for code in codes {
                let SideCode::Code { k, n } = code else {
                    unreachable!()
                };
                let codec = Codec::new(CodecConfig::new(d, k, n)).unwrap();
                let rows: Vec<f32> = (0..500 * d)
                    .map(|i| rng.next() * (1 + i % 5) as f32)
                    .collect();
                let got = gpu.encode(&codec, &rows).unwrap();
                let mut want = vec![0u8; got.len()];
                codec.encode_batch(&rows, &mut want).unwrap();
                let sb = codec.slot_bytes();
                let (mut same, mut blocks) = (0usize, 0usize);
                let (mut gi, mut wi) = (vec![0u32; codec.blocks()], vec![0u32; codec.blocks()]);
                let mut rotated = vec![0f32; d];
                for (r, (g, w)) in got.chunks(sb).zip(want.chunks(sb)).enumerate() {
                    assert_eq!(g[..2], w[..2], "row {r}: the norm");
                    codec.read_slot(g, &mut gi).unwrap();
                    let norm = codec.read_slot(w, &mut wi).unwrap();
                    let x = &rows[r * d..(r + 1) * d];
                    let unit: Vec<f32> = x.iter().map(|v| v / norm).collect();
                    codec.rotation().apply(&unit, &mut rotated);
                    for b in 0..codec.blocks() {
                        blocks += 1;
                        if gi[b] == wi[b] {
                            same += 1;
                            continue;
                        }
                        // A different index must be a near-tie: equally near within rounding.
                        let y = &rotated[b * k..(b + 1) * k];
                        let dist = |i: u32| -> f32 {
                            codec
                                .codebook()
                                .codeword(i as usize)
                                .iter()
                                .zip(y)
                                .map(|(c, y)| (c - y).powi(2))
                                .sum()
                        };
                        let (dg, dw) = (dist(gi[b]), dist(wi[b]));
                        assert!(
                            (dg - dw).abs() <= 1e-5 * (1.0 + dw),
                            "row {r} block {b}: {dg} vs {dw}"
                        );
                    }
                }
                eprintln!("d {d} k {k} n {n}: {same} of {blocks} indices identical");
                assert!(same as f64 >= 0.999 * blocks as f64);
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a GPU machine"]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let codec = Codec::new(CodecConfig::new(64, 4, 256)).unwrap();
    let mut rows = vec![0.5f32; 3 * 64];
    rows[64 + 5] = f32::NAN;
    assert!(matches!(
        gpu.encode(&codec, &rows),
        Err(Error::BadRow { row: 1, .. })
    ));
    rows[64 + 5] = 0.5;
    rows[2 * 64] = 1e6;
    assert!(matches!(
        gpu.encode(&codec, &rows),
        Err(Error::BadRow { row: 2, .. })
    ));
    assert!(matches!(
        gpu.encode(&codec, &rows[..10]),
        Err(Error::InvalidInput(_))
    ));
    let big = Codec::new(CodecConfig::new(64, 4, 65536)).unwrap();
    assert!(matches!(
        gpu.encode(&big, &rows),
        Err(Error::Unsupported(_))
    ));
    let shape = CacheShape {
        layers: 1,
        query_heads: 4,
        kv_heads: 1,
        head_dim: 64,
    };
    let code = gpu_code(64, 2.0).unwrap();
    let (caches, mut queries, _) = decoded(shape, &policies(code, code)[0].1, &[50], 2);
    let mut dev = gpu
        .upload(&HostBatch::from_caches(&[&caches[0]], 0).unwrap())
        .unwrap();
    queries[3] = f32::INFINITY;
    assert!(matches!(
        gpu.decode(&mut dev, &queries),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        gpu.decode(&mut dev, &queries[1..]),
        Err(Error::InvalidInput(_))
    ));
}
