//! `fibquant-fuzz`: a dependency-free mutational fuzzer for the targets of `fibquant_fuzz`,
//! for stable Rust and no installed tools.
//!
//! ```text
//! fibquant-fuzz <target|all> [--seconds S] [--seed N] [--corpus DIR] [--crashes DIR]
//!               [--max-len BYTES] [--timeout S] [--known]
//! fibquant-fuzz replay [--known] <target> FILE...
//! fibquant-fuzz make-seeds [--corpus DIR]
//! fibquant-fuzz list
//! ```
//!
//! For each target it loads the seed corpus (`<corpus>/<target>/*`, and the committed
//! regression inputs `regressions/<target>/*`), then, for `S` seconds, runs inputs made from
//! them by a seeded PRNG (bit flips, interesting bytes, truncation, extension, splices of two
//! inputs, little-endian interesting u32/u64/f32 values, byte runs), each under
//! `catch_unwind`. A panicking input is minimized (as long as it panics at the same place), written to
//! `<crashes>/<target>/<hash>`, and makes the run exit non-zero after every target ran. An
//! input that runs past `--timeout` seconds, or that asks for more memory than the fuzzer
//! allows (4 GiB in one allocation), is written the same way and ends the process at once.
//! Apart from the time budget, a run is deterministic for a given seed.

mod seeds;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Guards: allocations, hangs.

/// The largest single allocation an input may ask for. Larger ones are what a hostile length
/// field does (a 4 GiB buffer from a 60-byte file): reported as a crash instead of leaving the
/// machine to swap or the allocator to abort.
const MAX_ALLOC: usize = 4 << 30;

struct Guarded;

/// The input running now and where to write it when it ends the process.
static CURRENT: Mutex<Option<(PathBuf, Vec<u8>)>> = Mutex::new(None);
static ARMED: AtomicBool = AtomicBool::new(false);
/// Milliseconds since `START` at which the running input began (0: none running).
static RUN_SINCE_MS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            oversize(layout.size());
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            oversize(layout.size());
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            oversize(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Guarded = Guarded;

fn oversize(size: usize) {
    if ARMED.swap(false, Ordering::SeqCst) {
        fatal(
            &format!("allocation of {size} bytes (more than {MAX_ALLOC})"),
            "oom",
        );
    }
}

/// Writes the running input as a crash of `kind` and ends the process (exit status 3).
fn fatal(what: &str, kind: &str) -> ! {
    if let Ok(mut cur) = CURRENT.try_lock() {
        if let Some((dir, input)) = cur.take() {
            let path = dir.join(format!("{kind}-{:016x}", fnv(&input)));
            let saved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &input));
            match saved {
                Ok(()) => eprintln!("CRASH ({kind}): {what}\n  input: {}", path.display()),
                Err(e) => eprintln!("CRASH ({kind}): {what}\n  input not saved: {e}"),
            }
        }
    }
    std::process::exit(3)
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64 + 1
}

// ---------------------------------------------------------------------------------------------
// Panics.

/// The last panic's message and place, written by the hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_hook() {
    panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string panic payload)".to_string()
        };
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            // Keep the first panic of an input (a rayon worker's, say, not the re-raise).
            if last.is_none() {
                *last = Some(format!("{place}: {msg}"));
            }
        }
    }));
}

/// Runs `t` on `input`: `None`, or the panic's `place: message`. While it runs, the input is
/// where the allocation guard and the watchdog find it (`crash_dir`, when given, is where they
/// write it).
fn run_one(t: fibquant_fuzz::Target, input: &[u8]) -> Option<String> {
    if let Ok(mut cur) = CURRENT.lock() {
        if let Some((_, buf)) = cur.as_mut() {
            buf.clear();
            buf.extend_from_slice(input);
        }
    }
    *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
    RUN_SINCE_MS.store(now_ms(*START), Ordering::SeqCst);
    let r = panic::catch_unwind(AssertUnwindSafe(|| t(input)));
    RUN_SINCE_MS.store(0, Ordering::SeqCst);
    let last = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
    r.err()
        .map(|_| last.unwrap_or_else(|| "(panic without message)".into()))
}

/// Makes `dir` where the guards write the running input, and arms them.
fn guard_into(dir: &Path) {
    if let Ok(mut cur) = CURRENT.lock() {
        *cur = Some((dir.to_path_buf(), Vec::with_capacity(1 << 17)));
    }
    ARMED.store(true, Ordering::SeqCst);
}

/// The place part of a panic report (`file:line`), what crashes are told apart by.
fn place(report: &str) -> &str {
    report.split(": ").next().unwrap_or(report)
}

// ---------------------------------------------------------------------------------------------
// Randomness and mutations.

/// SplitMix64: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// FNV-1a, 64 bits: names crash files by their content.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const INTERESTING_U8: [u8; 8] = [0, 0xff, 0x7f, 0x80, 1, 0xfe, 0x40, 0x10];
const INTERESTING_U32: [u32; 16] = [
    0,
    1,
    2,
    0xffff_ffff,
    0x7fff_ffff,
    0x8000_0000,
    1 << 24,
    (1 << 24) + 1,
    65536,
    64497,
    0x7fc0_0000, // f32 NaN
    0x7f80_0000, // f32 inf
    0xff80_0000, // f32 -inf
    0x7e96_7699, // f32 1e38
    0x0000_0001, // smallest f32 subnormal
    0x4b80_0000, // f32 2^24
];
const INTERESTING_U64: [u64; 6] = [
    u64::MAX,
    1 << 63,
    (1 << 58) + 1,
    1 << 32,
    0x7ff8_0000_0000_0000, // f64 NaN
    0x47ef_ffff_e000_0000, // f64 just past f32::MAX
];
const INTERESTING_F32: [f32; 10] = [
    65504.0, 65520.0, 1e6, -1e6, 1e19, 1e-45, 1.0, -1.0, 0.5, 3.4e38,
];

fn mutate(rng: &mut Rng, base: &[u8], pool: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    let most = if rng.chance(4) { 16 } else { 4 };
    let rounds = 1 + rng.below(most);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(12) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING_U8[rng.below(INTERESTING_U8.len())];
            }
            3 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            4 if len > 0 => {
                // Truncate: often near the end, sometimes anywhere.
                let cut = if rng.chance(2) {
                    len - 1 - rng.below(len.min(16))
                } else {
                    rng.below(len)
                };
                v.truncate(cut);
            }
            5 => {
                // Extend with random bytes or a copy of a run.
                let n = 1 + rng.below(32);
                if len > 0 && rng.chance(2) {
                    let s = rng.below(len);
                    let run: Vec<u8> = v[s..(s + n).min(len)].to_vec();
                    let at = rng.below(len + 1);
                    v.splice(at..at, run);
                } else {
                    for _ in 0..n {
                        v.push(rng.next() as u8);
                    }
                }
            }
            6 if !pool.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &pool[rng.below(pool.len())];
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            7 if len >= 4 => {
                let i = rng.below(len - 3);
                let x = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            8 if len >= 8 => {
                let i = rng.below(len - 7);
                let x = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                v[i..i + 8].copy_from_slice(&x.to_le_bytes());
            }
            9 if len >= 4 => {
                let i = rng.below(len - 3);
                let x = INTERESTING_F32[rng.below(INTERESTING_F32.len())];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            10 if len > 0 => {
                // A small arithmetic change of one byte (lengths, counts).
                let i = rng.below(len);
                let delta = 1 + rng.below(4) as u8;
                v[i] = if rng.chance(2) {
                    v[i].wrapping_add(delta)
                } else {
                    v[i].wrapping_sub(delta)
                };
            }
            11 if len > 1 => {
                // Delete a run.
                let s = rng.below(len);
                let n = 1 + rng.below((len - s).min(16));
                v.drain(s..s + n);
            }
            _ => v.push(INTERESTING_U8[rng.below(INTERESTING_U8.len())]),
        }
    }
    v.truncate(max_len);
    v
}

// ---------------------------------------------------------------------------------------------
// Minimizing a crash.

/// Shrinks `input` while `t` still panics at `at`, for at most `budget`.
fn minimize(t: fibquant_fuzz::Target, input: &[u8], at: &str, budget: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut best = input.to_vec();
    let same = |c: &[u8]| run_one(t, c).is_some_and(|r| place(&r) == at);
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && start.elapsed() < budget {
        let mut i = 0;
        let mut shrunk = false;
        while i < best.len() && start.elapsed() < budget {
            let mut c = best.clone();
            c.drain(i..(i + chunk).min(c.len()));
            if same(&c) {
                best = c;
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    // Then make bytes zero where that keeps the crash (a readable input).
    for i in 0..best.len() {
        if start.elapsed() >= budget {
            break;
        }
        if best[i] != 0 {
            let mut c = best.clone();
            c[i] = 0;
            if same(&c) {
                best = c;
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Corpora.

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir`, sorted by name (none when it does not exist).
fn read_dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The fuzzing loop.

struct Options {
    seconds: f64,
    seed: u64,
    corpus: PathBuf,
    crashes: PathBuf,
    max_len: usize,
    timeout: f64,
}

struct Report {
    name: &'static str,
    execs: u64,
    seconds: f64,
    crashes: BTreeMap<String, (PathBuf, String)>,
    corpus: usize,
}

fn fuzz_target(name: &'static str, t: fibquant_fuzz::Target, o: &Options) -> Report {
    let mut pool: Vec<Vec<u8>> = read_dir_files(&o.corpus.join(name))
        .into_iter()
        .chain(read_dir_files(&crate_dir().join("regressions").join(name)))
        .map(|(_, b)| b)
        .collect();
    let corpus = pool.len();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let crash_dir = o.crashes.join(name);
    let mut rng = Rng(o.seed ^ fnv(name.as_bytes()));
    let mut crashes: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    guard_into(&crash_dir);
    let start = Instant::now();
    let mut execs = 0u64;
    // The seeds themselves first, then mutants until the time is up.
    let mut seed_i = 0;
    loop {
        if execs.is_multiple_of(16)
            && start.elapsed().as_secs_f64() >= o.seconds
            && seed_i >= corpus
        {
            break;
        }
        let input = if seed_i < pool.len() {
            seed_i += 1;
            pool[seed_i - 1].clone()
        } else {
            let base = &pool[rng.below(pool.len())];
            mutate(&mut rng, base, &pool, o.max_len)
        };
        let r = run_one(t, &input);
        execs += 1;
        if let Some(report) = r {
            let at = place(&report).to_string();
            if let std::collections::btree_map::Entry::Vacant(slot) = crashes.entry(at.clone()) {
                let small = minimize(t, &input, &at, Duration::from_secs(5));
                let report = run_one(t, &small).unwrap_or(report);
                let path = crash_dir.join(format!("{:016x}", fnv(&small)));
                let _ = std::fs::create_dir_all(&crash_dir);
                if let Err(e) = std::fs::write(&path, &small) {
                    eprintln!("could not write {}: {e}", path.display());
                }
                eprintln!(
                    "CRASH {name}: {report}\n  input ({} bytes, minimized from {}): {}",
                    small.len(),
                    input.len(),
                    path.display()
                );
                slot.insert((path, report));
            }
        }
    }
    if let Ok(mut cur) = CURRENT.lock() {
        *cur = None;
    }
    Report {
        name,
        execs,
        seconds: start.elapsed().as_secs_f64(),
        crashes,
        corpus,
    }
}

static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn spawn_watchdog(timeout: f64) {
    let limit = (timeout * 1000.0) as u64;
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let since = RUN_SINCE_MS.load(Ordering::SeqCst);
        if since > 0 && now_ms(*START).saturating_sub(since) > limit {
            fatal(
                &format!("an input ran for more than {timeout} s"),
                "timeout",
            );
        }
    });
}

fn usage() -> ! {
    eprintln!(
        "usage: fibquant-fuzz <target|all> [--seconds S] [--seed N] [--corpus DIR] [--crashes DIR] [--max-len BYTES] [--timeout S] [--known]\n       fibquant-fuzz replay [--known] <target> FILE...\n       fibquant-fuzz make-seeds [--corpus DIR]\n       fibquant-fuzz list\ntargets: {}",
        fibquant_fuzz::TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        usage()
    };
    let mut o = Options {
        seconds: 10.0,
        seed: 1,
        corpus: crate_dir().join("corpus"),
        crashes: crate_dir().join("crashes"),
        max_len: 1 << 16,
        timeout: 20.0,
    };
    let mut files = Vec::new();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--seed" => o.seed = value().parse().unwrap_or_else(|_| usage()),
            "--corpus" => o.corpus = value().into(),
            "--crashes" => o.crashes = value().into(),
            "--max-len" => o.max_len = value().parse().unwrap_or_else(|_| usage()),
            "--timeout" => o.timeout = value().parse().unwrap_or_else(|_| usage()),
            // Walk into the known, unfixed bugs instead of around them (see known/README.md).
            "--known" => fibquant_fuzz::reach_known_bugs(true),
            "-h" | "--help" => usage(),
            other => files.push(other.to_string()),
        }
    }
    LazyStart::touch();
    install_hook();
    match cmd.as_str() {
        "list" => {
            for (n, _) in fibquant_fuzz::TARGETS {
                println!("{n}");
            }
        }
        "make-seeds" => seeds::write_all(&o.corpus),
        "replay" => {
            let Some((name, inputs)) = files.split_first() else {
                usage()
            };
            let t = fibquant_fuzz::target(name).unwrap_or_else(|| usage());
            guard_into(&o.crashes.join(name));
            spawn_watchdog(o.timeout);
            let mut failed = 0;
            for f in inputs {
                let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
                match run_one(t, &bytes) {
                    None => println!("ok     {f}"),
                    Some(r) => {
                        failed += 1;
                        println!("PANIC  {f}: {r}");
                    }
                }
            }
            std::process::exit(i32::from(failed > 0));
        }
        _ => {
            let targets: Vec<(&'static str, fibquant_fuzz::Target)> = if cmd == "all" {
                fibquant_fuzz::TARGETS.to_vec()
            } else {
                match fibquant_fuzz::TARGETS.iter().find(|(n, _)| *n == cmd) {
                    Some(t) => vec![*t],
                    None => usage(),
                }
            };
            if !files.is_empty() {
                usage();
            }
            spawn_watchdog(o.timeout);
            let reports: Vec<Report> = targets
                .iter()
                .map(|&(n, t)| {
                    let r = fuzz_target(n, t, &o);
                    println!(
                        "{:<14} {:>9} execs {:>7.1} s {:>9.0} execs/s  {} seeds  {} unique crashes",
                        r.name,
                        r.execs,
                        r.seconds,
                        r.execs as f64 / r.seconds.max(1e-9),
                        r.corpus,
                        r.crashes.len()
                    );
                    r
                })
                .collect();
            let total: usize = reports.iter().map(|r| r.crashes.len()).sum();
            let (execs, secs) = reports
                .iter()
                .fold((0u64, 0f64), |(e, s), r| (e + r.execs, s + r.seconds));
            println!(
                "total          {execs:>9} execs {secs:>7.1} s  seed {}  {total} unique crashes",
                o.seed
            );
            for r in &reports {
                for (path, report) in r.crashes.values() {
                    println!("CRASH {}: {}\n  input: {}", r.name, report, path.display());
                }
            }
            if total > 0 {
                println!("reproduce: fibquant-fuzz replay <target> <input>; then add the input to fuzz/regressions/<target>/");
                std::process::exit(1);
            }
        }
    }
}

/// Starts the clock the watchdog reads.
struct LazyStart;
impl LazyStart {
    fn touch() {
        let _ = *START;
    }
}
