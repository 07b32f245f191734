//! Time of the orbit search of the registry's E8 codes ([`fibquant::search::orbits`]) per block of
//! random unit vectors, against the exhaustive scan of the same codebook.
//!
//!     cargo run --release -p fibquant --example orbit_speed
use fibquant::util::rng::Xoshiro256;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut rng = Xoshiro256::new(5);
    for d in [64usize, 128] {
        let cb = fibquant::registry::codebook(d, 8, 64497).expect("embedded E8 code");
        let orbits = cb.orbits().expect("recognized as orbits");
        let vectors = 20000;
        let mut x = Vec::with_capacity(vectors * d);
        for _ in 0..vectors {
            let v: Vec<f64> = (0..d).map(|_| rng.next_gaussian()).collect();
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            x.extend(v.iter().map(|a| (a / norm) as f32));
        }
        let blocks = x.len() / 8;
        let mut times = Vec::new();
        let mut out = vec![0u32; blocks];
        for _ in 0..7 {
            let t = Instant::now();
            orbits.nearest_many(black_box(&x), &mut out);
            black_box(&out);
            times.push(t.elapsed().as_secs_f64() * 1e9 / blocks as f64);
        }
        times.sort_by(f64::total_cmp);
        let few = 200;
        let t = Instant::now();
        let mut acc = 0u32;
        for b in x[..few * 8].chunks_exact(8) {
            acc ^= cb.nearest_exhaustive(black_box(b));
        }
        black_box(acc);
        let exhaustive = t.elapsed().as_secs_f64() * 1e9 / few as f64;
        println!(
            "d = {d}: orbit search {:.1} ns per block (median of 7; {:.0} ns per vector), \
             exhaustive {exhaustive:.0} ns",
            times[3],
            times[3] * (d / 8) as f64
        );
    }
}
