//! Timing prototype: the exact orbit search of the E8-shaped codebook of
//! `docs/experiments/e8_shaped_codebook.py` (21 orbits, one scale each; here all scales equal,
//! which costs the same), per block of 8 coordinates of random unit vectors in d = 128. It finds
//! the winning orbit only: turning (orbit, sorted order, signs) into a 16-bit index (a
//! multiset-permutation rank plus sign bits) is not written. Two versions: a plain loop over the
//! orbits, and the orbits laid out in lanes (24 wide, autovectorized); they must agree.
use std::time::Instant;

fn leaders() -> Vec<[f32; 8]> {
    // Sorted absolute values of E8 points with norm^2 <= 10, plus (3/2^5,1/2^3) and (2^3,0^5).
    let mut out: Vec<[f32; 8]> = Vec::new();
    let ints = [0.0f32, 1.0, 2.0, 3.0];
    let halves = [0.5f32, 1.5, 2.5, 3.5];
    for set in [&ints, &halves] {
        // all non-increasing sequences of length 8 from the set
        fn rec(set: &[f32; 4], cur: &mut Vec<f32>, out: &mut Vec<[f32; 8]>) {
            if cur.len() == 8 {
                let n2: f32 = cur.iter().map(|v| v * v).sum();
                let sum: f32 = cur.iter().sum();
                let half = cur[0] % 1.0 != 0.0;
                // integer type must have even sum (signs don't change parity)
                let ok_int = half || (sum as i32) % 2 == 0;
                let extra = cur == &[1.5, 1.5, 1.5, 1.5, 1.5, 0.5, 0.5, 0.5]
                    || cur == &[2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0];
                if ok_int && (n2 <= 10.0 || extra) {
                    out.push(cur.clone().try_into().unwrap());
                }
                return;
            }
            for &v in set.iter().rev() {
                if cur.last().is_none_or(|&l| v <= l) {
                    cur.push(v);
                    rec(set, cur, out);
                    cur.pop();
                }
            }
        }
        rec(set, &mut Vec::new(), &mut out);
    }
    out
}

/// Sorting network (descending) for 8 values.
const NET: [(usize, usize); 19] = [
    (0, 1),
    (2, 3),
    (4, 5),
    (6, 7),
    (0, 2),
    (1, 3),
    (4, 6),
    (5, 7),
    (1, 2),
    (5, 6),
    (0, 4),
    (3, 7),
    (1, 5),
    (2, 6),
    (1, 4),
    (3, 6),
    (2, 4),
    (3, 5),
    (3, 4),
];

/// The block's magnitudes in descending order and its number of negative coordinates: the
/// shared first step of both searches.
#[inline(always)]
fn sorted_magnitudes(blk: &[f32]) -> ([f32; 8], u32) {
    let mut s = [0f32; 8];
    let mut neg = 0u32;
    for i in 0..8 {
        s[i] = blk[i].abs();
        neg += (blk[i] < 0.0) as u32;
    }
    for &(a, b) in NET.iter() {
        let (x, z) = (s[a], s[b]);
        s[a] = x.max(z);
        s[b] = x.min(z);
    }
    (s, neg)
}

#[inline(never)]
fn search(y: &[f32], lead: &[[f32; 8]], scale: &[f32], n2: &[f32], half: &[bool], out: &mut [u32]) {
    // Parity of each orbit's coordinate sum (an integer for every orbit).
    let parity: Vec<u32> = lead
        .iter()
        .map(|l| l.iter().sum::<f32>() as u32 & 1)
        .collect();
    for (blk, o) in y.chunks_exact(8).zip(out.iter_mut()) {
        let (s, neg) = sorted_magnitudes(blk);
        let mut best = f32::INFINITY;
        let mut arg = 0u32;
        for (i, l) in lead.iter().enumerate() {
            let mut dot = 0f32;
            for j in 0..8 {
                dot += s[j] * l[j];
            }
            if half[i] && (parity[i] ^ (neg & 1)) != 0 {
                dot -= 2.0 * s[7] * l[7];
            }
            let sc = scale[i] * scale[i] * n2[i] - 2.0 * scale[i] * dot;
            if sc < best {
                best = sc;
                arg = i as u32;
            }
        }
        *o = arg;
    }
}

const W: usize = 24;
struct Lanes {
    lt: [[f32; W]; 8],
    c2: [f32; W],
    two_a: [f32; W],
    l7x2: [f32; W],
    half_par: [u32; W],
    is_half: [f32; W],
}

fn lanes(lead: &[[f32; 8]], scale: &[f32]) -> Lanes {
    let mut z = Lanes {
        lt: [[0.0; W]; 8],
        c2: [f32::INFINITY; W],
        two_a: [0.0; W],
        l7x2: [0.0; W],
        half_par: [0; W],
        is_half: [0.0; W],
    };
    for (i, l) in lead.iter().enumerate() {
        for j in 0..8 {
            z.lt[j][i] = l[j];
        }
        let n2: f32 = l.iter().map(|v| v * v).sum();
        z.c2[i] = scale[i] * scale[i] * n2;
        z.two_a[i] = 2.0 * scale[i];
        z.l7x2[i] = 2.0 * l[7];
        z.half_par[i] = (l.iter().sum::<f32>() as u32) & 1;
        z.is_half[i] = if l[0] % 1.0 != 0.0 { 1.0 } else { 0.0 };
    }
    z
}

#[inline(never)]
fn search_v(y: &[f32], z: &Lanes, out: &mut [u32]) {
    for (blk, o) in y.chunks_exact(8).zip(out.iter_mut()) {
        let (s, neg) = sorted_magnitudes(blk);
        let np = neg & 1;
        let mut dot = [0f32; W];
        for j in 0..8 {
            for i in 0..W {
                dot[i] += s[j] * z.lt[j][i];
            }
        }
        let mut score = [0f32; W];
        for i in 0..W {
            let odd = ((z.half_par[i] ^ np) as f32) * z.is_half[i];
            let d = dot[i] - odd * z.l7x2[i] * s[7];
            score[i] = z.c2[i] - z.two_a[i] * d;
        }
        let m = score.iter().copied().fold(f32::INFINITY, f32::min);
        let mut arg = u32::MAX;
        for i in 0..W {
            if score[i] == m {
                arg = arg.min(i as u32);
            }
        }
        *o = arg;
    }
}

fn main() {
    let lead = leaders();
    let n2: Vec<f32> = lead.iter().map(|l| l.iter().map(|v| v * v).sum()).collect();
    let half: Vec<bool> = lead.iter().map(|l| l[0] % 1.0 != 0.0).collect();
    let scale = vec![0.086f32; lead.len()];
    println!("{} leaders", lead.len());
    // pseudo-random unit vectors (xorshift + Box-Muller)
    let mut st = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        (st >> 11) as f64 / (1u64 << 53) as f64
    };
    let d = 128;
    let vecs = 20000;
    let mut y = Vec::with_capacity(d * vecs);
    for _ in 0..vecs {
        let v: Vec<f64> = (0..d)
            .map(|_| {
                let (u1, u2) = (next().max(1e-300), next());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        let nrm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        y.extend(v.iter().map(|a| (a / nrm) as f32));
    }
    let mut out = vec![0u32; y.len() / 8];
    for _ in 0..7 {
        let t = Instant::now();
        search(&y, &lead, &scale, &n2, &half, &mut out);
        let ns = t.elapsed().as_secs_f64() * 1e9 / out.len() as f64;
        println!(
            "{ns:.1} ns per block ({:.0} ns per d=128 vector)",
            ns * 16.0
        );
    }
    let z = lanes(&lead, &scale);
    let mut out2 = vec![0u32; out.len()];
    for _ in 0..7 {
        let t = Instant::now();
        search_v(&y, &z, &mut out2);
        let ns = t.elapsed().as_secs_f64() * 1e9 / out.len() as f64;
        println!(
            "lanes: {ns:.1} ns per block ({:.0} ns per d=128 vector)",
            ns * 16.0
        );
    }
    println!("same answers: {}", out == out2);
    let mut hist = vec![0usize; lead.len()];
    for &o in &out {
        hist[o as usize] += 1;
    }
    println!("orbit use: {hist:?}");
}
