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

#[test]
fn eval_reports_the_documented_json_fields() {
    let o = gen(&[
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
    ]);
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
    assert_eq!(std::fs::metadata(&codes).unwrap().len(), 56 + 500 * 18);
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
