//! The kernels' one harness: every ISA this CPU supports against the portable reference, bit
//! for bit, plus the checks of what the safe dispatchers refuse.

use super::*;
use crate::util::rng::Xoshiro256;

fn isas() -> Vec<Isa> {
    let v = supported();
    if v.len() == 1 {
        eprintln!("no SIMD level available: only the portable kernels are tested");
    }
    v
}

/// What the harness compares: the exact bits of a kernel's output.
trait Bits {
    fn bits(&self, out: &mut Vec<u64>);
}

macro_rules! bits_of_numbers {
    ($($t:ty => $to:expr),*) => {$(
        impl Bits for $t {
            fn bits(&self, out: &mut Vec<u64>) {
                out.push($to(*self));
            }
        }
    )*};
}
bits_of_numbers!(f32 => |v: f32| v.to_bits() as u64, u32 => |v: u32| v as u64, u64 => |v| v);

impl<T: Bits> Bits for [T] {
    fn bits(&self, out: &mut Vec<u64>) {
        out.push(self.len() as u64);
        self.iter().for_each(|v| v.bits(out));
    }
}
impl<T: Bits> Bits for Vec<T> {
    fn bits(&self, out: &mut Vec<u64>) {
        self.as_slice().bits(out)
    }
}
impl<T: Bits, const N: usize> Bits for [T; N] {
    fn bits(&self, out: &mut Vec<u64>) {
        self.as_slice().bits(out)
    }
}
impl<A: Bits, B: Bits> Bits for (A, B) {
    fn bits(&self, out: &mut Vec<u64>) {
        self.0.bits(out);
        self.1.bits(out);
    }
}

/// The harness: `run` (a kernel call through its dispatcher) returns on every ISA this CPU
/// supports exactly the bits it returns on the portable one, NaN payloads and signed zeros
/// included. Returns the portable output, for checks against a reference.
fn each_isa_equals_portable<T: Bits + std::fmt::Debug>(
    what: impl std::fmt::Display,
    run: impl Fn(Isa) -> T,
) -> T {
    let want = run(Isa::Portable);
    let mut want_bits = Vec::new();
    want.bits(&mut want_bits);
    for isa in isas() {
        let got = run(isa);
        let mut got_bits = Vec::new();
        got.bits(&mut got_bits);
        assert!(got_bits == want_bits, "{what}: {isa:?} gave {got:?}, portable {want:?}");
    }
    want
}

#[test]
fn f16_row_kernels_match_portable_bit_for_bit() {
    let mut rng = Xoshiro256::new(77);
    for d in [8, 16, 24, 64, 96, 128, 12] {
        for rows in [0, 1, 7, 64, 65, 200] {
            let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            let bits: Vec<u16> = (0..rows * d)
                .map(|_| crate::util::fp16::f32_to_f16_bits(rng.next_gaussian() as f32 * 3.0))
                .collect();
            let w: Vec<f32> = (0..rows).map(|_| rng.next_open01() as f32).collect();
            let mut want = vec![0f32; rows];
            portable::f16_row_dots(&q, &bits, &mut want);
            let mut want_acc = vec![0.5f32; d];
            portable::f16_row_accumulate(&w, &bits, &mut want_acc);
            // The portable reference against the plain dot product in f64.
            for (i, &s) in want.iter().enumerate() {
                let exact: f64 = (0..d)
                    .map(|j| q[j] as f64 * crate::util::fp16::f16_bits_to_f32(bits[i * d + j]) as f64)
                    .sum();
                assert!(
                    (s as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()),
                    "d={d}"
                );
            }
            let (got, acc) = each_isa_equals_portable(format_args!("d={d} rows={rows}"), |isa| {
                let mut got = vec![0f32; rows];
                f16_row_dots(isa, &q, &bits, &mut got);
                let mut acc = vec![0.5f32; d];
                f16_row_accumulate(isa, &w, &bits, &mut acc);
                (got, acc)
            });
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same(&got, &want) && same(&acc, &want_acc), "dispatch equals the kernels");
        }
    }
}

fn panics(f: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
}

#[test]
fn safe_dispatchers_refuse_what_their_simd_kernels_could_not_read() {
    for isa in isas() {
        // Not a power of two: the AVX2 transform would have stored past the end.
        for n in [3, 12, 24, 100] {
            assert!(panics(|| fwht(isa, &mut vec![1.0; n])), "{isa:?} n={n}");
        }
        fwht(isa, &mut []);
        // A generic-k lane layout shorter than its norms say.
        let norms = [0f32; 16];
        for k in [5, 6, 7] {
            assert!(panics(|| {
                nearest_lanes(isa, &vec![0.0; 8 * k], &norms, k, &[0.0; 8]);
            }));
            let (s, _) = nearest_lanes(isa, &vec![0.5; 16 * k], &norms, k, &[1.0; 8]);
            assert_eq!(s, [-(k as f32); 8], "{isa:?} k={k}");
        }
        // blocks * n overflows: the table check must not wrap around.
        let ids = [0u32, 1, 2, 3];
        let rows = IndexRows {
            data: &ids[..],
            stride: 2,
            offset: 0,
            blocks: 2,
        };
        assert!(panics(|| table_dots(
            isa,
            &[],
            usize::MAX / 2 + 1,
            rows,
            &mut [0.0; 2]
        )));
    }
    // An offset that overflows with the index bytes.
    for isa in supported() {
        if has_scalar_kernel(isa, 2, 8) {
            let q = [1f32; 8];
            assert!(panics(|| scalar_dots(
                isa,
                2,
                &[0.0; 16],
                &q,
                &[0; 8],
                4,
                usize::MAX,
                &mut [0.0; 2]
            )));
        }
    }
}

#[test]
fn every_dense_rotation_path_is_bit_identical_to_portable() {
    let mut rng = Xoshiro256::new(5);
    for dim in [1, 3, 8, 12, 80, 96, 100] {
        let m: Vec<f32> = (0..dim * dim).map(|_| rng.next_gaussian() as f32).collect();
        let x: Vec<f32> = (0..dim).map(|_| rng.next_gaussian() as f32).collect();
        let (want, want_t) = each_isa_equals_portable(format_args!("dim {dim}"), |isa| {
            let (mut out, mut out_t) = (vec![0f32; dim], vec![0f32; dim]);
            dense_rotate(isa, &m, dim, &x, &mut out);
            dense_rotate_transposed(isa, &m, dim, &x, &mut out_t);
            (out, out_t)
        });
        // Against f64 sums: within the rounding of dim products and sums.
        for i in 0..dim {
            let exact: f64 = (0..dim).map(|j| m[i * dim + j] as f64 * x[j] as f64).sum();
            let exact_t: f64 = (0..dim).map(|j| m[j * dim + i] as f64 * x[j] as f64).sum();
            let bound: f64 = (0..dim).map(|j| (m[i * dim + j] * x[j]).abs() as f64).sum();
            let bound_t: f64 = (0..dim).map(|j| (m[j * dim + i] * x[j]).abs() as f64).sum();
            let eps = f32::EPSILON as f64 * (dim as f64 + 1.0);
            assert!(
                (want[i] as f64 - exact).abs() <= eps * bound,
                "dim {dim} row {i}"
            );
            assert!(
                (want_t[i] as f64 - exact_t).abs() <= eps * bound_t,
                "dim {dim} col {i}"
            );
        }
    }
}

#[test]
fn every_fwht_path_is_bit_identical_to_portable() {
    let mut rng = Xoshiro256::new(1);
    for log in 0..=12 {
        let n = 1usize << log;
        let x: Vec<f32> = (0..n).map(|_| rng.next_gaussian() as f32).collect();
        let want = each_isa_equals_portable(format_args!("n={n}"), |isa| {
            let mut out = x.clone();
            fwht(isa, &mut out);
            out
        });
        let mut reference = x.clone();
        portable::fwht(&mut reference);
        assert!(want.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn every_nearest_path_is_bit_identical_to_portable() {
    let mut rng = Xoshiro256::new(2);
    for k in [1, 2, 3, 4, 8, 16] {
        for groups in [1, 2, 5, 64] {
            let lanes: Vec<f32> = (0..groups * k * 8)
                .map(|_| rng.next_gaussian() as f32)
                .collect();
            let mut norms: Vec<f32> =
                (0..groups * 8).map(|_| rng.next_open01() as f32).collect();
            norms[groups * 8 - 1] = f32::INFINITY; // padding lane
            for _ in 0..50 {
                let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
                let want = each_isa_equals_portable(format_args!("k={k}"), |isa| {
                    nearest_lanes(isa, &lanes, &norms, k, &x)
                });
                assert_eq!(want, portable::nearest_lanes(&lanes, &norms, k, &x));
            }
        }
    }
}

#[test]
fn every_lane_score_path_equals_the_per_codeword_formula() {
    let mut rng = Xoshiro256::new(5);
    for k in [1, 2, 3, 4, 8] {
        for n in [1usize, 7, 8, 9, 256] {
            let cw: Vec<f32> = (0..n * k).map(|_| rng.next_gaussian() as f32).collect();
            let groups = n.div_ceil(8);
            let mut lanes = vec![0f32; groups * k * 8];
            let mut norms = vec![f32::INFINITY; groups * 8];
            for (i, c) in cw.chunks_exact(k).enumerate() {
                for (j, &v) in c.iter().enumerate() {
                    lanes[((i / 8) * k + j) * 8 + i % 8] = v;
                }
                norms[i] = c.iter().map(|v| v * v).sum();
            }
            let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
            // The formula, one codeword at a time, in the kernels' order.
            let want: Vec<f32> = cw
                .chunks_exact(k)
                .enumerate()
                .map(|(i, c)| {
                    let mut acc = 0f32;
                    for (xj, cj) in x.iter().zip(c) {
                        acc += xj * cj;
                    }
                    norms[i] - 2.0 * acc
                })
                .collect();
            for isa in isas() {
                let mut got = vec![0f32; n];
                lane_scores(isa, &lanes, &norms, k, &x, &mut got);
                assert_eq!(got, want, "{isa:?} k={k} n={n}");
            }
        }
    }
}

#[test]
fn every_nearest_path_breaks_ties_like_the_portable_scan() {
    // Codewords repeating with a period of 1, 2 and 3 groups: every lane sees equal scores
    // in several groups and must keep the first one.
    let mut rng = Xoshiro256::new(4);
    for k in [1, 2, 3, 4, 8] {
        for period in [1, 2, 3] {
            for groups in [1, 2, 3, 6, 7] {
                let base: Vec<f32> = (0..period * k * 8)
                    .map(|_| rng.next_gaussian() as f32)
                    .collect();
                let lanes: Vec<f32> = (0..groups)
                    .flat_map(|g| base[(g % period) * k * 8..][..k * 8].to_vec())
                    .collect();
                let norms: Vec<f32> = (0..groups * 8)
                    .map(|i| {
                        let (g, l) = (i / 8, i % 8);
                        (0..k).map(|j| lanes[(g * k + j) * 8 + l].powi(2)).sum()
                    })
                    .collect();
                let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
                let want = portable::nearest_lanes(&lanes, &norms, k, &x);
                for isa in isas() {
                    assert_eq!(
                        nearest_lanes(isa, &lanes, &norms, k, &x),
                        want,
                        "{isa:?} k={k} period={period} groups={groups}"
                    );
                }
            }
        }
    }
}

/// The ranged `(score, id)` scan on every ISA against the portable one, bit for bit: `k` = 2,
/// 3 and 4 (specialized) and 1 (portable everywhere), ranges of odd and even lengths, empty
/// and repeated, a running best carried in, duplicated codewords (equal scores, the lower
/// id must win) and padding (infinite norm, id `u32::MAX`); and against a direct
/// lexicographic minimum.
#[test]
fn every_ranged_id_scan_path_is_bit_identical_to_portable() {
    let mut rng = Xoshiro256::new(29);
    for k in [1, 2, 3, 4] {
        let groups = 9;
        let mut lanes: Vec<f32> = (0..groups * k * 8)
            .map(|_| rng.next_gaussian() as f32)
            .collect();
        // Group 4 repeats group 1 (ties), with higher ids below.
        let (head, tail) = lanes.split_at_mut(4 * k * 8);
        tail[..k * 8].copy_from_slice(&head[k * 8..2 * k * 8]);
        let mut norms: Vec<f32> = (0..groups * 8)
            .map(|i| {
                (0..k)
                    .map(|j| lanes[((i / 8) * k + j) * 8 + i % 8].powi(2))
                    .sum()
            })
            .collect();
        let mut ids: Vec<u32> = (0..groups as u32 * 8).map(|i| 1000 - i).collect();
        for i in 64..72 {
            norms[i] = f32::INFINITY;
            ids[i] = u32::MAX;
        }
        let x: Vec<f32> = (0..k).map(|_| rng.next_gaussian() as f32).collect();
        let list = IdLanes {
            lanes: &lanes,
            norms: &norms,
            ids: &ids,
        };
        for ranges in [
            vec![(0u32, 9u32)],
            vec![(1, 2), (4, 5)],
            vec![(3, 3), (0, 3), (5, 8), (2, 3)],
            vec![(8, 9), (0, 1), (1, 4)],
        ] {
            let start = LaneBest {
                scores: [0.5; 8],
                ids: [7; 8],
            };
            for carried in [LaneBest::default(), start] {
                let mut want = carried;
                portable::nearest_ids(list, k, &x, &ranges, &mut want);
                // Direct lexicographic minimum per lane.
                for l in 0..8 {
                    let mut b = (carried.scores[l], carried.ids[l]);
                    for &(s0, e0) in &ranges {
                        for g in s0 as usize..e0 as usize {
                            let mut acc = 0f32;
                            for (j, &xj) in x.iter().enumerate() {
                                acc += xj * lanes[(g * k + j) * 8 + l];
                            }
                            let s = norms[g * 8 + l] - 2.0 * acc;
                            let id = ids[g * 8 + l];
                            if s < b.0 || (s == b.0 && id < b.1) {
                                b = (s, id);
                            }
                        }
                    }
                    assert_eq!((want.scores[l], want.ids[l]), b, "k={k} lane {l}");
                }
                for isa in isas() {
                    let mut got = carried;
                    nearest_ids(isa, list, k, &x, &ranges, &mut got);
                    assert_eq!(got, want, "{isa:?} k={k} {ranges:?}");
                }
            }
        }
        for isa in isas() {
            let past = std::panic::catch_unwind(|| {
                let mut b = LaneBest::default();
                nearest_ids(isa, list, k, &x, &[(8, 10)], &mut b)
            });
            assert!(
                past.is_err(),
                "{isa:?} k={k}: a range past the groups must panic"
            );
        }
    }
}

/// The ball marks on every ISA equal the portable ones and a direct evaluation, for ball
/// counts across the 4-wide steps and the 64-bit words, with values on both sides of the
/// test and one exactly on it.
#[test]
fn every_ball_mark_path_matches_portable() {
    let mut rng = Xoshiro256::new(37);
    for n in [0, 1, 3, 4, 5, 63, 64, 65, 130, 256] {
        let scores: Vec<f32> = (0..n).map(|_| rng.next_gaussian() as f32).collect();
        let radii: Vec<f64> = (0..n).map(|_| rng.next_open01() * 0.5).collect();
        let mut scores = scores;
        let mut radii = radii;
        if n >= 5 {
            // Ball 4 exactly on the test: (1 + -0.75) - 0 == (0.5 + 0)^2 * 1 with
            // x_sq = 1, err = 0, t = 0, scale = 1 (all exact in f64): marked (`<=`).
            scores[4] = -0.75;
            radii[4] = 0.5;
            let on = ball_marks(Isa::Portable, &scores, &radii, 1.0, 0.0, 0.0, 1.0);
            assert_eq!(
                on[0] >> 4 & 1,
                1,
                "n={n}: a ball exactly on the test is kept"
            );
            for isa in isas() {
                assert_eq!(ball_marks(isa, &scores, &radii, 1.0, 0.0, 0.0, 1.0), on);
            }
        }
        for (x_sq, t) in [(1.0, 0.3), (0.2, 0.0), (4.0, 1.5)] {
            let want = portable::ball_marks(&scores, &radii, x_sq, 1e-7, t, 1.0 + 1e-12);
            // Direct: bit j set exactly where the test holds.
            for j in 0..n {
                let r = radii[j] + t;
                let inside = (x_sq + scores[j] as f64) - 1e-7 <= (r * r) * (1.0 + 1e-12);
                assert_eq!(want[j / 64] >> (j % 64) & 1 == 1, inside, "n={n} j={j}");
            }
            assert!(
                n == 256 || want[n / 64] >> (n % 64) == 0,
                "no bits past n={n}"
            );
            for isa in isas() {
                let got = ball_marks(isa, &scores, &radii, x_sq, 1e-7, t, 1.0 + 1e-12);
                assert_eq!(got, want, "{isa:?} n={n}");
            }
        }
    }
}

#[test]
fn every_unpack_path_matches_the_reference_unpacker() {
    let mut rng = Xoshiro256::new(3);
    for bits in 1..=20u32 {
        for blocks in [1, 5, 8, 13, 16, 64, 128] {
            let packed_len = crate::util::pack::packed_bytes(blocks, bits);
            for offset in [0, 2, 4] {
                let slot_bytes = offset + packed_len;
                let count = 7;
                let mut slots = vec![0u8; count * slot_bytes];
                let mut want = vec![0u32; count * blocks];
                for (slot, w) in slots
                    .chunks_exact_mut(slot_bytes)
                    .zip(want.chunks_exact_mut(blocks))
                {
                    for v in w.iter_mut() {
                        *v = (rng.next_u64() & ((1u64 << bits) - 1)) as u32;
                    }
                    slot[..offset].fill(0xa5);
                    crate::util::pack::pack(w, bits, &mut slot[offset..]);
                }
                for isa in isas() {
                    let mut got = vec![u32::MAX; count * blocks];
                    unpack_slots(isa, bits, &slots, slot_bytes, offset, blocks, &mut got);
                    assert_eq!(got, want, "{isa:?} bits={bits} blocks={blocks}");
                }
            }
        }
    }
}

/// The `k = 2` kernels on unpacked rows, every ISA (the AVX-512 one keeps up to 64
/// codewords in registers) bit for bit against the portable ones: every row count from 1 to
/// 9 (whole groups of four and remainders), dimensions with and without a whole number of
/// 16-block steps, codebook sizes up to and past 64.
#[test]
fn every_pair_path_is_bit_identical_to_portable() {
    let mut rng = Xoshiro256::new(21);
    for d in [16, 32, 64, 96, 128] {
        for n in [2, 17, 33, 64, 65] {
            let codewords: Vec<f32> = (0..2 * n).map(|_| rng.next_gaussian() as f32).collect();
            let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            for count in 1..=9 {
                let blocks = d / 2;
                let ids: Vec<u32> = (0..count * blocks)
                    .map(|_| (rng.next_u64() % n as u64) as u32)
                    .collect();
                let rows = IndexRows {
                    data: &ids[..],
                    stride: blocks,
                    offset: 0,
                    blocks,
                };
                let w: Vec<f32> = (0..count).map(|_| rng.next_gaussian() as f32).collect();
                let mut want = vec![0f32; count];
                portable::gather_dots::<2, u32>(&q, &codewords, 2, rows, &mut want);
                let mut want_acc = q.clone();
                portable::gather_accumulate::<2, u32>(&w, &codewords, 2, rows, &mut want_acc);
                for isa in isas() {
                    let mut got = vec![0f32; count];
                    gather_dots(isa, 2, &q, &codewords, rows, &mut got);
                    assert_eq!(got, want, "{isa:?} d={d} n={n} count={count}");
                    let mut acc = q.clone();
                    gather_accumulate(isa, 2, &w, &codewords, rows, &mut acc);
                    assert_eq!(acc, want_acc, "{isa:?} d={d} n={n} count={count}");
                }
            }
        }
    }
}

/// The f16-codebook kernels on every ISA, for `k` = 1, 2, 3, 4 and 8 (the whole-codeword
/// AVX2 kernels for 2, 4 and 8, the portable ones on the widened copy otherwise), `d` with
/// and without a 16-float remainder and the two head dims the AVX2 kernels are compiled apart
/// for (64, 128), against the portable gather kernels on the widened
/// codebook: bit for bit (the conversion is exact). An index out of range panics.
#[test]
fn every_half_codebook_path_matches_portable_on_the_widened_codebook() {
    let mut rng = Xoshiro256::new(23);
    for k in [1, 2, 3, 4, 8] {
        for d in [24, 64, 128] {
            if d % k != 0 {
                continue;
            }
            let n = 300;
            let halves: Vec<u16> = (0..n * k)
                .map(|_| crate::util::fp16::f32_to_f16_bits(rng.next_gaussian() as f32 * 0.3))
                .collect();
            let widened: Vec<f32> = halves
                .iter()
                .map(|&h| crate::util::fp16::f16_bits_to_f32(h))
                .collect();
            let codebook = HalfCodebook {
                halves: &halves,
                widened: &widened,
            };
            let q: Vec<f32> = (0..d).map(|_| rng.next_gaussian() as f32).collect();
            let (count, blocks) = (11, d / k);
            let w: Vec<f32> = (0..count).map(|_| rng.next_gaussian() as f32).collect();
            let ids: Vec<u32> = (0..count * blocks)
                .map(|_| (rng.next_u64() % n as u64) as u32)
                .collect();
            let ids16: Vec<[u8; 2]> = ids.iter().map(|&i| (i as u16).to_le_bytes()).collect();
            let rows = IndexRows {
                data: &ids[..],
                stride: blocks,
                offset: 0,
                blocks,
            };
            let rows16 = IndexRows {
                data: &ids16[..],
                stride: blocks,
                offset: 0,
                blocks,
            };
            let mut want = vec![0f32; count];
            gather_dots(Isa::Portable, k, &q, &widened, rows, &mut want);
            let mut want_acc = q.clone();
            gather_accumulate(Isa::Portable, k, &w, &widened, rows, &mut want_acc);
            for isa in isas() {
                let what = format!("{isa:?} k={k} d={d}");
                let mut got = vec![0f32; count];
                gather_dots_half(isa, k, &q, codebook, rows, &mut got);
                assert_eq!(got, want, "{what}");
                gather_dots_half(isa, k, &q, codebook, rows16, &mut got);
                assert_eq!(got, want, "{what}, 16-bit cells");
                let mut acc = q.clone();
                gather_accumulate_half(isa, k, &w, codebook, rows, &mut acc);
                assert_eq!(acc, want_acc, "{what}");
                let mut acc = q.clone();
                gather_accumulate_half(isa, k, &w, codebook, rows16, &mut acc);
                assert_eq!(acc, want_acc, "{what}, 16-bit cells");
                let mut bad = ids.clone();
                bad[5 * blocks + 1] = n as u32;
                let rows = IndexRows {
                    data: &bad[..],
                    ..rows
                };
                let dots = std::panic::catch_unwind(|| {
                    gather_dots_half(isa, k, &q, codebook, rows, &mut [0.0; 11])
                });
                assert!(dots.is_err(), "{what}: scores, index out of range");
                let sums = std::panic::catch_unwind(|| {
                    gather_accumulate_half(isa, k, &w, codebook, rows, &mut vec![0.0; d])
                });
                assert!(sums.is_err(), "{what}: weighted sum, index out of range");
            }
        }
    }
}

/// An index not below `N` panics on every ISA, in-register kernels included (they would
/// otherwise return another codeword's values).
#[test]
fn every_pair_path_refuses_an_index_out_of_range() {
    let (d, n) = (64, 40);
    let codewords = vec![0.5f32; 2 * n];
    // `n` reads a zero pad entry of the register tables, `64 + 3` aliases entry 3.
    for bad in [n as u32, 64 + 3, u32::MAX] {
        let mut ids = vec![3u32; 5 * d / 2];
        ids[2 * d / 2 + 7] = bad;
        let rows = IndexRows {
            data: &ids[..],
            stride: d / 2,
            offset: 0,
            blocks: d / 2,
        };
        for isa in isas() {
            let dots = std::panic::catch_unwind(|| {
                gather_dots(isa, 2, &[1.0; 64], &codewords, rows, &mut [0.0; 5])
            });
            assert!(dots.is_err(), "{isa:?} scores, index {bad}");
            let sums = std::panic::catch_unwind(|| {
                gather_accumulate(isa, 2, &[1.0; 5], &codewords, rows, &mut [0.0; 64])
            });
            assert!(sums.is_err(), "{isa:?} weighted sum, index {bad}");
        }
    }
}

/// Byte kernels with real values on every ISA, bit for bit against the documented order:
/// scores `acc[p % 4] += T[p][byte p]` for ascending `p`, then `(acc0 + acc1) + (acc2 +
/// acc3)`; histograms adding the weights slot by slot. For byte counts served by the
/// word-reading kernels and by the byte loop, with a trailing partial slot (ignored) and an
/// output longer than the slots (its tail left as it was): every path rounds alike, so
/// results do not depend on the CPU.
#[test]
fn byte_kernels_round_in_the_documented_order() {
    let mut rng = Xoshiro256::new(23);
    for bytes in [3, 4, 5, 8, 16, 24, 32, 33] {
        let (offset, slot_bytes, count) = (2, bytes + 3, 29);
        // `count` whole slots, then part of one more.
        let slots: Vec<u8> = (0..count * slot_bytes + slot_bytes - 1)
            .map(|_| rng.next_u64() as u8)
            .collect();
        let table: Vec<[f32; 256]> = (0..bytes)
            .map(|_| std::array::from_fn(|_| rng.next_gaussian() as f32))
            .collect();
        let w: Vec<f32> = (0..count + 3).map(|_| rng.next_gaussian() as f32).collect();
        let mut want: Vec<f32> = slots
            .chunks_exact(slot_bytes)
            .map(|slot| {
                let mut acc = [0f32; 4];
                for (p, &b) in slot[offset..offset + bytes].iter().enumerate() {
                    acc[p % 4] += table[p][b as usize];
                }
                (acc[0] + acc[1]) + (acc[2] + acc[3])
            })
            .collect();
        want.extend([7.0; 3]);
        let mut want_hist = vec![[0f32; 256]; bytes];
        for (slot, &wi) in slots.chunks_exact(slot_bytes).zip(&w) {
            for (h, &b) in want_hist.iter_mut().zip(&slot[offset..offset + bytes]) {
                h[b as usize] += wi;
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for isa in isas() {
            let mut got = vec![7f32; count + 3];
            byte_table_dots(isa, &table, &slots, slot_bytes, offset, &mut got);
            assert_eq!(bits(&got), bits(&want), "{isa:?} bytes={bytes}");
            let mut hist = vec![[0f32; 256]; bytes];
            byte_histogram(isa, &w, &slots, slot_bytes, offset, &mut hist);
            assert_eq!(
                bits(hist.as_flattened()),
                bits(want_hist.as_flattened()),
                "{isa:?} bytes={bytes}"
            );
        }
    }
}

/// The byte kernels on every ISA against a direct reference, for index byte counts 1 to 6
/// (whole groups of four and remainders), the counts of the word-reading kernels (8 to 32)
/// and one beyond, a norm offset and slots with bytes after the
/// indices. Table entries and weights are small integers, so every summation order gives
/// the exact result and equality is the right test.
#[test]
fn every_byte_kernel_path_matches_the_direct_sums() {
    let mut rng = Xoshiro256::new(22);
    // 8, 16, 24 and 32 bytes take the word-reading kernels, the others the byte loop.
    for bytes in (1..=6).chain([8, 16, 24, 32, 40]) {
        for (offset, tail) in [(0, 0), (2, 0), (4, 3)] {
            let slot_bytes = offset + bytes + tail;
            let count = 37;
            let slots: Vec<u8> = (0..count * slot_bytes)
                .map(|_| rng.next_u64() as u8)
                .collect();
            let table: Vec<[f32; 256]> = (0..bytes)
                .map(|_| std::array::from_fn(|_| (rng.next_u64() % 2001) as f32 - 1000.0))
                .collect();
            let w: Vec<f32> = (0..count)
                .map(|_| (rng.next_u64() % 201) as f32 - 100.0)
                .collect();
            let mut want = vec![0f32; count];
            let mut want_hist = vec![[0f32; 256]; bytes];
            for (i, slot) in slots.chunks_exact(slot_bytes).enumerate() {
                for (p, &b) in slot[offset..offset + bytes].iter().enumerate() {
                    want[i] += table[p][b as usize];
                    want_hist[p][b as usize] += w[i];
                }
            }
            for isa in isas() {
                let mut got = vec![0f32; count];
                byte_table_dots(isa, &table, &slots, slot_bytes, offset, &mut got);
                assert_eq!(got, want, "{isa:?} bytes={bytes} offset={offset}");
                let mut hist = vec![[0f32; 256]; bytes];
                byte_histogram(isa, &w, &slots, slot_bytes, offset, &mut hist);
                assert_eq!(hist, want_hist, "{isa:?} bytes={bytes} offset={offset}");
            }
        }
    }
}

/// Slot layouts that cannot hold the index bytes (empty slots, an offset past the slot, an
/// offset that overflows) are refused with a panic on every ISA, before any read.
#[test]
fn byte_kernels_refuse_impossible_slot_layouts() {
    let slots = [0u8; 12];
    let table = [[1f32; 256]; 2];
    for (slot_bytes, offset) in [(0, 0), (3, 2), (4, usize::MAX)] {
        for isa in isas() {
            let dots = std::panic::catch_unwind(|| {
                byte_table_dots(isa, &table, &slots, slot_bytes, offset, &mut [0.0; 4])
            });
            assert!(dots.is_err(), "{isa:?} {slot_bytes} {offset}");
            let sums = std::panic::catch_unwind(|| {
                let mut hist = [[0f32; 256]; 2];
                byte_histogram(isa, &[1.0; 4], &slots, slot_bytes, offset, &mut hist)
            });
            assert!(sums.is_err(), "{isa:?} {slot_bytes} {offset}");
        }
    }
}

/// Any `Isa` value is safe to pass: one the CPU lacks is lowered to the best it has (on a
/// CPU without AVX-512, running the AVX-512 kernels would be an illegal instruction).
#[test]
fn an_isa_the_cpu_lacks_is_lowered_not_trusted() {
    let mut rng = Xoshiro256::new(9);
    let v: Vec<f32> = (0..64).map(|_| rng.next_gaussian() as f32).collect();
    let (mut want, mut got) = (v.clone(), v.clone());
    fwht(Isa::Portable, &mut want);
    fwht(Isa::Avx512, &mut got);
    assert_eq!(got, want);
    let slots: Vec<u8> = (0..4 * 34).map(|i| (i * 37 % 251) as u8).collect();
    let mut levels = [0f32; 16];
    for (i, l) in levels.iter_mut().enumerate() {
        *l = i as f32 * 0.25 - 2.0;
    }
    let q = &v;
    // The predicates answer for the lowered `isa` too: on a CPU without AVX2 (aarch64)
    // they once said yes for `Avx2` and `scalar_dots` then panicked.
    let has_avx2 = supported().contains(&Isa::Avx2);
    for isa in [Isa::Avx2, Isa::Avx512] {
        assert_eq!(has_scalar_kernel(isa, 4, 64), has_avx2, "{isa:?}");
        assert_eq!(has_codeword_kernel(isa, 4, 64), has_avx2, "{isa:?}");
        if has_scalar_kernel(isa, 4, 64) {
            let (mut a, mut b) = (vec![0f32; 4], vec![0f32; 4]);
            scalar_dots(isa, 4, &levels, q, &slots, 34, 2, &mut a);
            let best = *supported().last().unwrap();
            scalar_dots(best.min(isa), 4, &levels, q, &slots, 34, 2, &mut b);
            assert_eq!(a, b, "{isa:?}");
        }
    }
}

/// More output rows than whole slots: every path fills the rows it has slots for and leaves
/// the rest (the AVX2 kernel once read a partial trailing slot); an offset that overflows is
/// refused, not read.
#[test]
fn unpack_stops_at_the_last_whole_slot_and_refuses_impossible_layouts() {
    let (bits, blocks, slot_bytes) = (5, 8, 5);
    let mut slots = vec![0u8; 2 * slot_bytes + 3];
    let want: Vec<u32> = (0..2 * blocks as u32).map(|i| (i * 7) % 32).collect();
    for (slot, w) in slots.chunks_exact_mut(slot_bytes).zip(want.chunks(blocks)) {
        crate::util::pack::pack(w, bits, slot);
    }
    for isa in isas() {
        let mut got = vec![u32::MAX; 3 * blocks];
        unpack_slots(isa, bits, &slots, slot_bytes, 0, blocks, &mut got);
        assert_eq!(&got[..2 * blocks], &want[..], "{isa:?}");
        assert!(got[2 * blocks..].iter().all(|&v| v == u32::MAX), "{isa:?}");
        let refused = std::panic::catch_unwind(|| {
            let mut out = vec![0u32; blocks];
            unpack_slots(isa, 4, &[0u8; 64], 1, usize::MAX - 7, blocks, &mut out);
        });
        assert!(refused.is_err(), "{isa:?}");
    }
}

#[test]
fn every_norm_path_converts_every_half_like_the_portable_one() {
    // Every binary16 value, in slots of 3 bytes (so the norms are not aligned).
    let slots: Vec<u8> = (0..=u16::MAX)
        .flat_map(|h| {
            let [a, b] = h.to_le_bytes();
            [a, b, 0x5a]
        })
        .collect();
    let mut want = vec![0f32; 65536];
    portable::norms_f16(&slots, 3, &mut want);
    for isa in isas() {
        let mut got = vec![0f32; 65536];
        norms_f16(isa, &slots, 3, &mut got);
        for (h, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{isa:?} half {h:#06x}: {g} vs {w}"
            );
        }
    }
}
