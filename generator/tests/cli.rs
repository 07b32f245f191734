//! The `fibquant-gen` command line, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fibquant-gen"))
        .args(args)
        .output()
        .unwrap()
}

/// The committed registry: the runtime crate's manifest.toml and codebooks/.
fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn copy_registry(to: &Path) {
    std::fs::create_dir_all(to.join("codebooks")).unwrap();
    std::fs::copy(repo().join("manifest.toml"), to.join("manifest.toml")).unwrap();
    for f in std::fs::read_dir(repo().join("codebooks")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join("codebooks").join(f.file_name())).unwrap();
    }
}

#[test]
fn verify_passes_and_names_corrupt_or_missing_files() {
    let ok = gen(&["verify"]);
    assert!(ok.status.success(), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    copy_registry(dir.path());
    let reg = dir.path().to_str().unwrap();
    let victim = dir.path().join("codebooks/d64_k4_n256.fqcb.zst");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[17] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(dir.path().join("codebooks/d128_k2_n16.fqcb.zst")).unwrap();
    let bad = gen(&["verify", "--registry", reg]);
    assert!(!bad.status.success());
    let out = text(&bad);
    assert!(
        out.contains("d64_k4_n256.fqcb.zst") && out.contains("sha256 mismatch"),
        "{out}"
    );
    assert!(
        out.contains("d128_k2_n16.fqcb.zst") && out.contains("missing"),
        "{out}"
    );
    assert!(out.contains("2 problems"), "{out}");

    std::fs::write(dir.path().join("manifest.toml"), "[[codebook]]\nfile = 3\n").unwrap();
    let unreadable = gen(&["verify", "--registry", reg]);
    assert!(!unreadable.status.success());
    assert!(
        text(&unreadable).contains("malformed"),
        "{}",
        text(&unreadable)
    );
}

#[test]
fn regenerate_repairs_a_corrupt_file_and_check_mode_compares_bytes() {
    let dir = tempfile::tempdir().unwrap();
    copy_registry(dir.path());
    let reg = dir.path().to_str().unwrap();
    let victim = dir.path().join("codebooks/d64_k2_n8.fqcb.zst");
    let original = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"garbage").unwrap();
    let out = gen(&[
        "regenerate",
        "--registry",
        reg,
        "--max-n",
        "8",
        "--dim",
        "64",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 entries built"), "{}", text(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), original);
    let check = gen(&[
        "regenerate",
        "--registry",
        reg,
        "--check",
        "--max-n",
        "4",
        "--dim",
        "64",
    ]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains(" 0 differ"), "{}", text(&check));
}

#[test]
fn generate_refuses_bad_rate_points() {
    for (args, msg) in [
        (["--dim", "64", "--k", "3", "--n", "8"], "does not divide"),
        (["--dim", "64", "--k", "2", "--n", "1"], "at least 2"),
    ] {
        let o = gen(&[&["generate"][..], &args[..]].concat());
        assert!(!o.status.success());
        assert!(text(&o).contains(msg), "{}", text(&o));
    }
}

#[test]
fn generate_into_a_directory_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = gen(&[
        "generate", "--dim", "64", "--k", "2", "--n", "4", "--out", out, "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let on_disk = std::fs::read(dir.path().join("d64_k2_n4.fqcb.zst")).unwrap();
    let committed = std::fs::read(repo().join("codebooks/d64_k2_n4.fqcb.zst")).unwrap();
    assert_eq!(on_disk, committed, "generate reproduces the committed file");
    assert!(v["sha256"].as_str().unwrap().len() == 64);
    let l = gen(&["list"]);
    assert!(l.status.success());
    assert!(text(&l).contains("gain dB"));
}

/// `fibquant-gen eval --json` of the k = 4, N = 256 code at head dim 64 on 20000 samples.
fn eval_k4n256_json() -> Output {
    gen(&[
        "eval",
        "--dim",
        "64",
        "--k",
        "4",
        "--n",
        "256",
        "--samples",
        "20000",
        "--json",
    ])
}

#[test]
fn eval_reports_the_documented_json_fields() {
    let o = eval_k4n256_json();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "dim",
        "k",
        "n",
        "rate_bits",
        "mse",
        "scalar_mse",
        "bound",
        "gain_db",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["rate_bits"], 2.0);
    assert_eq!(v["bound"], 0.0625);
    assert!(v["gain_db"].as_f64().unwrap() > 0.0);
    let sub = gen(&[
        "eval",
        "--dim",
        "64",
        "--k",
        "8",
        "--n",
        "16",
        "--samples",
        "1000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    assert!(v["scalar_mse"].is_null());
    let unknown = gen(&["eval", "--dim", "64", "--k", "4", "--n", "100"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("no embedded codebook"),
        "{}",
        text(&unknown)
    );
}

fn write_npy(path: &Path, rows: usize, cols: usize, data: Vec<f32>) {
    let a = fibquant_gen::npy::Array2 { rows, cols, data };
    std::fs::write(path, fibquant_gen::npy::to_bytes(&a)).unwrap();
}

/// `fibquant-gen encode` with the k = 4, N = 256 code at head dim `dim`, plus `extra` arguments.
fn encode_k4n256(dim: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let (input, output) = (input.to_str().unwrap(), output.to_str().unwrap());
    let mut args = vec![
        "encode", "--dim", dim, "--k", "4", "--n", "256", "--input", input, "--output", output,
    ];
    args.extend_from_slice(extra);
    gen(&args)
}

#[test]
fn encode_decode_npy_round_trip_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("keys.npy");
    let codes = dir.path().join("keys.fq");
    let output = dir.path().join("back.npy");
    let mut rng = fibquant::util::rng::Xoshiro256::new(1);
    let (rows, d) = (500, 64);
    let data: Vec<f32> = (0..rows * d)
        .map(|_| rng.next_gaussian() as f32 * 3.0)
        .collect();
    write_npy(&input, rows, d, data.clone());
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let o = encode_k4n256("64", &input, &codes, &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["slot_bytes"], 18);
    // A 64-byte header (version 2: with the checksums of header and slots), then the slots.
    assert_eq!(std::fs::metadata(&codes).unwrap().len(), 64 + 500 * 18);
    let o = gen(&["decode", "--input", &p(&codes), "--output", &p(&output)]);
    assert!(o.status.success(), "{}", text(&o));
    let back = fibquant_gen::npy::parse(&std::fs::read(&output).unwrap()).unwrap();
    assert_eq!((back.rows, back.cols), (rows, d));
    let (mut err, mut norm) = (0f64, 0f64);
    for (a, b) in data.iter().zip(&back.data) {
        err += ((a - b) as f64).powi(2);
        norm += (*a as f64).powi(2);
    }
    // About 0.10 at 2 bits/coordinate with k = 4.
    assert!(err / norm < 0.12 && err / norm > 0.08, "{}", err / norm);

    // A NaN in row 123: the command fails naming the row, and leaves no output file.
    let mut bad = data;
    bad[123 * d + 9] = f32::NAN;
    write_npy(&input, rows, d, bad);
    let fresh = dir.path().join("never.fq");
    let o = encode_k4n256("64", &input, &fresh, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("row 123"), "{}", text(&o));
    assert!(!fresh.exists());
    // Wrong width, garbage input, truncated code file.
    let o = encode_k4n256("128", &input, &fresh, &[]);
    assert!(
        !o.status.success() && text(&o).contains("--dim is 128"),
        "{}",
        text(&o)
    );
    std::fs::write(&input, b"not numpy").unwrap();
    let o = encode_k4n256("64", &input, &fresh, &[]);
    assert!(
        !o.status.success() && text(&o).contains("bad magic"),
        "{}",
        text(&o)
    );
    let full = std::fs::read(&codes).unwrap();
    std::fs::write(&codes, &full[..full.len() - 5]).unwrap();
    let o = gen(&["decode", "--input", &p(&codes), "--output", &p(&fresh)]);
    assert!(
        !o.status.success() && text(&o).contains("rows"),
        "{}",
        text(&o)
    );
    assert!(!fresh.exists());
}

#[test]
fn bench_markdown_renders_a_saved_report_and_refuses_garbage() {
    let saved = repo().join("../docs/bench/dev-2core.json");
    let o = gen(&[
        "bench",
        "--markdown",
        "--from-json",
        saved.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("| context | heads | method |"), "{out}");
    assert!(out.contains("Targets at 32768 keys"), "{out}");
    // One per-rate line for each rate with a peer (d = 64, 128 x b = 2, 3, 4), one per rate
    // measured in the attention section (b = 0.5 to 4).
    let after = |title: &str| {
        out.split(title).nth(1).map_or(0, |rest| {
            rest.lines()
                .skip_while(|l| !l.starts_with("- "))
                .take_while(|l| l.starts_with("- "))
                .count()
        })
    };
    assert_eq!(after("Per rate, the lowest-MSE FibQuant code"), 6, "{out}");
    assert_eq!(after("Per rate at 32768 keys"), 5, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"[1, 2").unwrap();
    let o = gen(&["bench", "--markdown", "--from-json", bad.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not a bench --json report"),
        "{}",
        text(&o)
    );
    std::fs::write(&bad, b"{}").unwrap();
    let o = gen(&["bench", "--markdown", "--from-json", bad.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not a bench --json report"),
        "{}",
        text(&o)
    );
    let missing = dir.path().join("missing.json");
    let o = gen(&[
        "bench",
        "--markdown",
        "--from-json",
        missing.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("cannot read"),
        "{}",
        text(&o)
    );
}

fn p(x: &Path) -> String {
    x.to_str().unwrap().to_string()
}

/// `rows` Gaussian rows of dim `d` (seeded).
fn gaussian(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = fibquant::util::rng::Xoshiro256::new(seed);
    (0..rows * d).map(|_| rng.next_gaussian() as f32).collect()
}

/// Mean over rows of `||x - y||^2 / ||x||^2`, as `encode` reports it.
fn nmse(x: &[f32], y: &[f32], d: usize) -> f64 {
    let rows: Vec<f64> = x
        .chunks(d)
        .zip(y.chunks(d))
        .map(|(a, b)| {
            let e: f64 = a.iter().zip(b).map(|(u, v)| ((u - v) as f64).powi(2)).sum();
            e / a.iter().map(|u| (*u as f64).powi(2)).sum::<f64>()
        })
        .collect();
    rows.iter().sum::<f64>() / rows.len() as f64
}

#[test]
fn bits_picks_the_preset_and_exactly_one_way_must_be_given() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    let out = dir.path().join("x.fq");
    write_npy(&input, 20, 64, gaussian(20, 64, 3));
    for bits in ["4", "3", "2", "1", "0.5"] {
        let o = gen(&[
            "encode",
            "--dim",
            "64",
            "--bits",
            bits,
            "--input",
            &p(&input),
            "--output",
            &p(&out),
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let want = fibquant::registry::best_for_rate(64, bits.parse().unwrap()).unwrap();
        assert_eq!(
            (v["k"].as_u64(), v["n"].as_u64()),
            (Some(want.k as u64), Some(want.n as u64))
        );
        let e = gen(&[
            "eval",
            "--dim",
            "64",
            "--bits",
            bits,
            "--samples",
            "2000",
            "--json",
        ]);
        assert!(e.status.success(), "{}", text(&e));
        let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        assert_eq!(
            (v["k"].as_u64(), v["n"].as_u64()),
            (Some(want.k as u64), Some(want.n as u64))
        );
    }
    let io = ["--input", &p(&input), "--output", &p(&out)];
    for (args, msg) in [
        (
            &["--dim", "64", "--bits", "2", "--k", "4", "--n", "256"][..],
            "cannot be used with",
        ),
        (&["--dim", "64"][..], "required arguments were not provided"),
        (&["--dim", "64", "--k", "4"][..], "--n <N>"),
        (
            &["--dim", "64", "--bits", "5"][..],
            "at 5 bits per coordinate",
        ),
        (&["--dim", "64", "--bits=-1"][..], "positive"),
        (&["--dim", "64", "--bits", "0"][..], "positive"),
    ] {
        let o = gen(&[&["encode"][..], args, &io[..]].concat());
        assert!(
            !o.status.success() && text(&o).contains(msg),
            "{args:?}: {}",
            text(&o)
        );
    }
    let o = gen(&[
        "eval", "--dim", "64", "--bits", "2", "--k", "4", "--n", "256",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("cannot be used with"),
        "{}",
        text(&o)
    );
    let o = gen(&["eval", "--all", "--bits", "2"]);
    assert!(
        !o.status.success() && text(&o).contains("cannot be used with"),
        "{}",
        text(&o)
    );
}

#[test]
fn unknown_codes_point_to_list_and_name_the_codes_of_the_dim() {
    for cmd in [
        &["eval", "--dim", "64", "--k", "4", "--n", "100"][..],
        &[
            "encode", "--dim", "64", "--k", "4", "--n", "100", "--input", "x", "--output", "y",
        ],
    ] {
        let o = gen(cmd);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(
            t.contains("fibquant-gen list") && !t.contains("manifest.toml"),
            "{t}"
        );
        assert!(t.contains("2 bits: ") && t.contains("k=4 N=256"), "{t}");
    }
    let o = gen(&["eval", "--dim", "80", "--bits", "2"]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("head dims with codes: 64"),
        "{t}"
    );
}

#[test]
fn every_argument_has_help() {
    for cmd in [
        "generate",
        "regenerate",
        "verify",
        "list",
        "eval",
        "encode",
        "bench",
        "decode",
    ] {
        let o = gen(&[cmd, "--help"]);
        assert!(o.status.success());
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        // In the long help, an argument without help is a "--flag" line followed by a blank one.
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            if t.starts_with("--") || t.starts_with("-h") {
                // Help on the same line (short form) or on the next (long form).
                let same_line = t
                    .split_whitespace()
                    .any(|w| !w.starts_with('-') && !w.starts_with('<'));
                let next = lines.get(i + 1).map_or("", |n| n.trim());
                assert!(
                    same_line || !next.is_empty(),
                    "{cmd}: {l} has no help\n{help}"
                );
            }
        }
    }
}

#[test]
fn encode_and_decode_with_a_codebook_file() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, d) = (300, 64);
    let data = gaussian(rows, d, 11);
    let input = dir.path().join("x.npy");
    write_npy(&input, rows, d, data.clone());
    // A codebook that differs from the embedded one: fewer restarts and iterations.
    let cbdir = dir.path().join("cb");
    let o = gen(&[
        "generate",
        "--dim",
        "64",
        "--k",
        "2",
        "--n",
        "16",
        "--restarts",
        "1",
        "--iterations",
        "2",
        "--out",
        &p(&cbdir),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mine = cbdir.join("d64_k2_n16.fqcb.zst");
    let embedded = repo().join("codebooks/d64_k2_n16.fqcb.zst");
    assert_ne!(
        std::fs::read(&mine).unwrap(),
        std::fs::read(&embedded).unwrap()
    );
    let codes = dir.path().join("x.fq");
    let o = gen(&[
        "encode",
        "--codebook",
        &p(&mine),
        "--input",
        &p(&input),
        "--output",
        &p(&codes),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["dim"].as_u64(), v["k"].as_u64(), v["n"].as_u64()),
        (Some(64), Some(2), Some(16))
    );
    let reported = v["normalized_mse"].as_f64().unwrap();
    let back = dir.path().join("back.npy");
    // Without the codebook, or with the embedded one or one of another shape: refused.
    for (extra, msg) in [
        (vec![], "--codebook PATH"),
        (
            vec!["--codebook".to_string(), p(&embedded)],
            "another codebook",
        ),
        (
            vec![
                "--codebook".to_string(),
                p(&repo().join("codebooks/d64_k4_n256.fqcb.zst")),
            ],
            "holds d=64 k=4 n=256",
        ),
    ] {
        let mut args = vec![
            "decode".to_string(),
            "--input".into(),
            p(&codes),
            "--output".into(),
            p(&back),
        ];
        args.extend(extra);
        let o = gen(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            !o.status.success() && text(&o).contains(msg),
            "{msg}: {}",
            text(&o)
        );
        assert!(!back.exists());
    }
    let o = gen(&[
        "decode",
        "--input",
        &p(&codes),
        "--output",
        &p(&back),
        "--codebook",
        &p(&mine),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let decoded = fibquant_gen::npy::parse(&std::fs::read(&back).unwrap()).unwrap();
    assert_eq!((decoded.rows, decoded.cols), (rows, d));
    assert!(
        (nmse(&data, &decoded.data, d) - reported).abs() < 1e-9,
        "{reported}"
    );
    // The embedded file given as --codebook writes the embedded tag: plain decode reads it.
    let o = gen(&[
        "encode",
        "--codebook",
        &p(&embedded),
        "--dim",
        "64",
        "--input",
        &p(&input),
        "--output",
        &p(&codes),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = gen(&["decode", "--input", &p(&codes), "--output", &p(&back)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = gen(&[
        "encode",
        "--codebook",
        &p(&embedded),
        "--dim",
        "128",
        "--input",
        &p(&input),
        "--output",
        &p(&codes),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("is for dim 64"),
        "{}",
        text(&o)
    );
}

/// A `.npy` file of `rows x cols` float64 values.
fn write_npy_f64(path: &Path, rows: usize, cols: usize, data: &[f64]) {
    let f4 = fibquant_gen::npy::to_bytes(&fibquant_gen::npy::Array2 {
        rows,
        cols,
        data: vec![0.0; rows * cols],
    });
    let mut bytes = f4[..f4.len() - 4 * rows * cols].to_vec();
    let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
    bytes[at..at + 3].copy_from_slice(b"<f8");
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn float64_is_converted_with_a_note_and_other_dtypes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, d) = (50, 64);
    let data = gaussian(rows, d, 5);
    let f4 = dir.path().join("f4.npy");
    let f8 = dir.path().join("f8.npy");
    write_npy(&f4, rows, d, data.clone());
    write_npy_f64(
        &f8,
        rows,
        d,
        &data.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    let (c4, c8) = (dir.path().join("a.fq"), dir.path().join("b.fq"));
    let o4 = encode_k4n256("64", &f4, &c4, &[]);
    let o8 = encode_k4n256("64", &f8, &c8, &[]);
    assert!(o4.status.success() && o8.status.success(), "{}", text(&o8));
    assert!(!String::from_utf8_lossy(&o4.stderr).contains("float64"));
    let note = String::from_utf8_lossy(&o8.stderr);
    assert!(
        note.contains("float64") && note.contains("converted to float32"),
        "{note}"
    );
    // Values exactly representable in float32: the code files are identical.
    assert_eq!(std::fs::read(&c4).unwrap(), std::fs::read(&c8).unwrap());
    let bytes = std::fs::read(&f4).unwrap();
    let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
    for (descr, name) in [
        (&b"<i4"[..], "integer"),
        (b"<f2", "float16"),
        (b">f4", "big-endian"),
    ] {
        let mut m = bytes.clone();
        m[at..at + 3].copy_from_slice(descr);
        std::fs::write(&f4, &m).unwrap();
        let o = encode_k4n256("64", &f4, &c4, &[]);
        let t = text(&o);
        assert!(
            !o.status.success() && t.contains(name) && !t.contains("panicked"),
            "{t}"
        );
    }
    let f = bytes.windows(5).position(|w| w == b"False").unwrap();
    let mut m = bytes.clone();
    m[f..f + 5].copy_from_slice(b"True ");
    std::fs::write(&f4, &m).unwrap();
    let o = encode_k4n256("64", &f4, &c4, &[]);
    assert!(
        !o.status.success() && text(&o).contains("Fortran"),
        "{}",
        text(&o)
    );
}

#[test]
fn outputs_never_overwrite_inputs_and_failures_leave_old_outputs_intact() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    write_npy(&input, 10, 64, gaussian(10, 64, 9));
    let original = std::fs::read(&input).unwrap();
    let codes = dir.path().join("x.fq");
    let o = encode_k4n256("64", &input, &codes, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let codes_bytes = std::fs::read(&codes).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let dotted = sub.join("../x.npy");
    let hard = dir.path().join("hard.npy");
    std::fs::hard_link(&input, &hard).unwrap();
    let soft = dir.path().join("soft.npy");
    std::os::unix::fs::symlink(&input, &soft).unwrap();
    for out in [&input, &dotted, &hard, &soft] {
        let o = encode_k4n256("64", &input, out, &[]);
        let t = text(&o);
        assert!(
            !o.status.success() && t.contains("refusing to overwrite"),
            "{t}"
        );
        assert_eq!(std::fs::read(&input).unwrap(), original);
    }
    // decode onto its input, and encode onto its --codebook.
    let o = gen(&["decode", "--input", &p(&codes), "--output", &p(&codes)]);
    assert!(
        !o.status.success() && text(&o).contains("refusing to overwrite"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&codes).unwrap(), codes_bytes);
    let cb = dir.path().join("cb.fqcb.zst");
    std::fs::copy(repo().join("codebooks/d64_k4_n256.fqcb.zst"), &cb).unwrap();
    let o = gen(&[
        "encode",
        "--codebook",
        &p(&cb),
        "--input",
        &p(&input),
        "--output",
        &p(&cb),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("refusing to overwrite"),
        "{}",
        text(&o)
    );
    // A failing run (NaN row) keeps the previous output and leaves no temporary file.
    let mut bad = gaussian(10, 64, 9);
    bad[3 * 64] = f32::NAN;
    let bad_input = dir.path().join("bad.npy");
    write_npy(&bad_input, 10, 64, bad);
    let o = encode_k4n256("64", &bad_input, &codes, &[]);
    assert!(
        !o.status.success() && text(&o).contains("row 3"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&codes).unwrap(), codes_bytes);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
    // A successful run replaces the output.
    let o = gen(&[
        "decode",
        "--input",
        &p(&codes),
        "--output",
        &p(&dir.path().join("y.npy")),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn eval_ends_with_a_verdict_computed_from_the_rows() {
    let o = gen(&["eval", "--dim", "64", "--bits", "2", "--samples", "20000"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let verdicts: Vec<&str> = out.lines().filter(|l| l.starts_with("verdict: ")).collect();
    assert_eq!(verdicts.len(), 2, "{out}");
    assert!(
        verdicts[0].starts_with("verdict: 1 of 1 codebooks within"),
        "{out}"
    );
    assert!(verdicts[0].contains("2.58 standard errors"), "{out}");
    // The 2-bit preset (E8, N = 64497) is compared with the 2-bit scalar code.
    assert!(
        verdicts[1].contains("of 1 vector codes at whole rates"),
        "{out}"
    );
    // JSON keeps its fields and adds the sampling error.
    let o = eval_k4n256_json();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "mse",
        "registry_mse",
        "scalar_mse",
        "gain_db",
        "mse_std_error",
        "within_tolerance",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let z = v["z_vs_registry"].as_f64().unwrap();
    let se = v["mse_std_error"]
        .as_f64()
        .unwrap()
        .hypot(v["registry_std_error"].as_f64().unwrap());
    let diff = v["mse"].as_f64().unwrap() - v["registry_mse"].as_f64().unwrap();
    assert!((z - diff / se).abs() < 1e-9);
}

// `verify --deep`: faults that keep every sha256 right (the manifest's hash is updated with the
// file), so plain `verify` passes and only the deep checks find them.

/// A registry copy in a temporary directory, edited by the fault tests.
struct Faulty {
    dir: tempfile::TempDir,
}

impl Faulty {
    fn new() -> Faulty {
        let dir = tempfile::tempdir().unwrap();
        copy_registry(dir.path());
        Faulty { dir }
    }

    fn reg(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("codebooks").join(name)
    }

    fn manifest(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manifest.toml")).unwrap()
    }

    /// Sets `key = value` in the entry of `file` (the first such line after its `file =` line).
    fn set(&self, file: &str, key: &str, value: &str) {
        let text = self.manifest();
        let start = text.find(&format!("file = \"{file}\"")).unwrap();
        let line = start + text[start..].find(&format!("\n{key} = ")).unwrap() + 1;
        let end = line + text[line..].find('\n').unwrap();
        let edited = format!("{}{key} = {value}{}", &text[..line], &text[end..]);
        std::fs::write(self.dir.path().join("manifest.toml"), edited).unwrap();
    }

    /// The value of `key` in the entry of `file`, as written.
    fn get(&self, file: &str, key: &str) -> String {
        let text = self.manifest();
        let start = text.find(&format!("file = \"{file}\"")).unwrap();
        let line = start + text[start..].find(&format!("\n{key} = ")).unwrap() + key.len() + 4;
        text[line..line + text[line..].find('\n').unwrap()].to_string()
    }

    /// Writes `bytes` as `file` and records their sha256 in the manifest.
    fn write(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.file(file), bytes).unwrap();
        let sha = fibquant_gen::registry::sha256_hex(bytes);
        self.set(file, "sha256", &format!("\"{sha}\""));
    }

    /// Rewrites `file` as a version-2 file after `edit` changed its header and codewords.
    fn rewrite(&self, file: &str, edit: impl FnOnce(&mut fibquant::CodebookHeader, &mut Vec<f32>)) {
        let cb =
            fibquant::Codebook::from_file_bytes(&std::fs::read(self.file(file)).unwrap()).unwrap();
        let mut header = cb.header().unwrap().clone();
        let mut codewords = cb.codewords().to_vec();
        edit(&mut header, &mut codewords);
        let frame = zstd::bulk::compress(&header.to_bytes(&codewords), 19).unwrap();
        self.write(file, &fibquant::codebook::format::checked_file(&frame));
    }

    fn verify(&self, extra: &[&str]) -> Output {
        gen(&[&["verify", "--registry", self.reg()][..], extra].concat())
    }

    /// Plain `verify` passes; `verify --deep` fails, and each of `expected` (file name, then
    /// words of the problem) is in one of its FAIL lines; returns the deep output.
    fn only_deep_fails(&self, expected: &[(&str, &str)]) -> String {
        let plain = self.verify(&[]);
        assert!(plain.status.success(), "plain verify: {}", text(&plain));
        let deep = self.verify(&["--deep", "--samples", "4096"]);
        let out = text(&deep);
        assert!(!deep.status.success(), "{out}");
        for (file, what) in expected {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("FAIL {file}: ")) && l.contains(what)),
                "no FAIL line for {file} with {what:?}:\n{out}"
            );
        }
        out
    }
}

const VICTIM: &str = "d64_k4_n256.fqcb.zst";

#[test]
fn verify_deep_passes_on_the_committed_registry() {
    let o = gen(&["verify", "--deep"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("126 of 126 within"), "{out}");
    assert!(
        out.ends_with("126 entries, 126 verified, 0 problems\n"),
        "{out}"
    );
    let o = gen(&["verify", "--deep", "--samples", "4096", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["deep"]["samples"], 4096);
    assert_eq!(v["deep"]["mse"].as_array().unwrap().len(), 126);
    assert!(v["deep"]["max_norm"]["norm"].as_f64().unwrap() < 1.0);
    // --samples belongs to --deep, and needs enough blocks for its tolerance.
    assert!(!gen(&["verify", "--samples", "4096"]).status.success());
    let few = gen(&["verify", "--deep", "--samples", "10"]);
    assert!(!few.status.success() && text(&few).contains("at least 1024"));
}

#[test]
fn verify_deep_names_a_codeword_moved_outside_the_unit_ball() {
    let f = Faulty::new();
    f.rewrite(VICTIM, |_, cw| {
        for v in &mut cw[4 * 7..4 * 8] {
            *v = 0.75;
        }
    });
    let out = f.only_deep_fails(&[(VICTIM, "outside the unit ball")]);
    assert!(out.contains("codeword 7, has norm 1.5"), "{out}");
}

#[test]
fn verify_deep_names_an_all_zero_codebook() {
    let f = Faulty::new();
    f.rewrite(VICTIM, |_, cw| cw.iter_mut().for_each(|v| *v = 0.0));
    f.only_deep_fails(&[(VICTIM, "all 256 codewords are zero"), (VICTIM, "MSE")]);
}

#[test]
fn verify_deep_names_a_duplicated_codeword() {
    let f = Faulty::new();
    f.rewrite(VICTIM, |_, cw| {
        let first = cw[..4].to_vec();
        cw[4 * 200..4 * 201].copy_from_slice(&first);
    });
    f.only_deep_fails(&[(VICTIM, "codewords 0 and 200 are equal")]);
}

#[test]
fn verify_deep_names_a_changed_header_seed() {
    let f = Faulty::new();
    f.rewrite(VICTIM, |h, _| h.seed ^= 1);
    let out = f.only_deep_fails(&[(VICTIM, "header seed is 0x")]);
    assert!(out.contains("the manifest says 0x"), "{out}");
    // The same seed in the manifest too: not the seed the generator derives for the point.
    let seed = f.get(VICTIM, "seed");
    let flipped = u64::from_str_radix(&seed[3..19], 16).unwrap() ^ 1;
    f.set(VICTIM, "seed", &format!("\"{flipped:#018x}\""));
    f.only_deep_fails(&[(VICTIM, "is not the generator's seed for d=64 k=4 N=256")]);
}

#[test]
fn verify_deep_names_an_appended_zstd_frame() {
    let f = Faulty::new();
    let original = std::fs::read(f.file(VICTIM)).unwrap();
    let frame = &original[fibquant::codebook::format::INTEGRITY_BYTES..];
    let extra = zstd::bulk::compress(b"more", 3).unwrap();
    // Appended after a version-2 file: the runtime refuses it (the integrity frame announces the
    // body's length), so plain verify already fails.
    f.write(VICTIM, &[&original[..], &extra[..]].concat());
    let plain = f.verify(&[]);
    assert!(!plain.status.success());
    assert!(
        text(&plain).contains(VICTIM) && text(&plain).contains("announces a"),
        "{}",
        text(&plain)
    );
    assert!(fibquant::Codebook::from_file_bytes(&[&original[..], &extra[..]].concat()).is_err());
    // Inside the checked region (integrity frame rewritten over both frames): the runtime
    // refuses data after the body frame too, so plain verify fails, and --deep names it.
    let rewrapped = fibquant::codebook::format::checked_file(&[frame, &extra[..]].concat());
    f.write(VICTIM, &rewrapped);
    let plain = f.verify(&[]);
    assert!(!plain.status.success());
    assert!(
        text(&plain).contains("bytes follow the body"),
        "{}",
        text(&plain)
    );
    let deep = f.verify(&["--deep", "--samples", "4096"]);
    assert!(!deep.status.success());
    assert!(text(&deep).contains(VICTIM), "{}", text(&deep));
}

#[test]
fn verify_deep_names_an_mse_edit_beyond_its_sampling_error() {
    let f = Faulty::new();
    let mse: f64 = f.get(VICTIM, "mse").parse().unwrap();
    // Within the sampling error (0.2%, where 4096 blocks give a standard error near 1%): passes.
    f.set(VICTIM, "mse", &(mse * 1.002).to_string());
    let ok = f.verify(&["--deep", "--samples", "4096"]);
    assert!(ok.status.success(), "{}", text(&ok));
    // 20% more: beyond it.
    f.set(VICTIM, "mse", &(mse * 1.2).to_string());
    f.only_deep_fails(&[(VICTIM, &format!("the manifest says {:.6}", mse * 1.2))]);
}

#[test]
fn verify_deep_names_a_rate_bits_edit() {
    let f = Faulty::new();
    // Below the 1e-6 that reading the manifest allows, so plain verify reads it.
    f.set(VICTIM, "rate_bits", "2.0000001");
    f.only_deep_fails(&[(VICTIM, "rate_bits 2.0000001 is not log2(N) / k = 2")]);
}

#[test]
fn verify_deep_names_a_duplicated_entry() {
    let f = Faulty::new();
    let text = f.manifest();
    let start = text
        .find(&format!("[[codebook]]\nfile = \"{VICTIM}\""))
        .unwrap();
    let end = start + 1 + text[start + 1..].find("[[codebook]]").unwrap();
    let doubled = format!("{text}\n{}", &text[start..end]);
    std::fs::write(f.dir.path().join("manifest.toml"), doubled).unwrap();
    f.only_deep_fails(&[
        (VICTIM, "listed twice in the manifest"),
        (VICTIM, "d=64 k=4 N=256 listed twice"),
    ]);
}

#[test]
fn verify_deep_names_unknown_files() {
    let f = Faulty::new();
    std::fs::write(f.file("notes.txt"), "x").unwrap();
    std::fs::write(f.file(".d64_k4_n256.fqcb.zst.1.0.tmp"), "x").unwrap();
    std::fs::create_dir(f.file("old")).unwrap();
    let out = f.only_deep_fails(&[
        ("notes.txt", "neither listed"),
        (".d64_k4_n256.fqcb.zst.1.0.tmp", "neither listed"),
        ("old", "neither listed"),
    ]);
    assert!(!out.contains("FAIL FORMAT.md"), "{out}");
}

#[test]
fn verify_deep_names_a_version_1_file() {
    let f = Faulty::new();
    let original = std::fs::read(f.file(VICTIM)).unwrap();
    let v1 = &original[fibquant::codebook::format::INTEGRITY_BYTES..];
    assert_eq!(
        fibquant::Codebook::from_file_bytes(v1).unwrap().integrity(),
        fibquant::codebook::format::Integrity::Unchecked
    );
    f.write(VICTIM, v1);
    f.only_deep_fails(&[(VICTIM, "file format version 1")]);
}
