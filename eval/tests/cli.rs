//! The `fibquant-eval` binary on a tiny synthetic qwen2 GGUF, with stderr a pipe (not a
//! terminal): unsupported files fail fast with a clear message, `--json` keeps stdout to the
//! JSON report while plain progress lines go to stderr, and `attention` writes no plot unless
//! given `--svg`. Needs no downloaded model.

mod common;

use common::{scratch, text, write_tiny_qwen2, Spec};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fibquant-eval"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unsupported_pre_tokenizer_fails_fast_and_says_what_is_supported() {
    let dir = scratch("cli-bad-pre");
    let spec = Spec {
        pre: "llama-bpe",
        header_only: true,
        ..Spec::default()
    };
    let model = write_tiny_qwen2(&dir, "bad.gguf", &spec);
    std::fs::write(dir.join("t.txt"), text()).unwrap();
    let t = Instant::now();
    let o = run(
        &dir,
        &[
            "perplexity",
            "--model",
            model.to_str().unwrap(),
            "--text",
            "t.txt",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("pre-tokenizer \"llama-bpe\""), "{err}");
    assert!(err.contains("supported: default, gpt2, smollm"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(t.elapsed().as_secs_f64() < 10.0);
    assert!(o.stdout.is_empty());
}

#[test]
fn perplexity_json_keeps_stdout_clean_and_prints_progress_lines() {
    let dir = scratch("cli-ppl");
    let model = write_tiny_qwen2(&dir, "tiny-qwen2.gguf", &Spec::default());
    std::fs::write(dir.join("t.txt"), text()).unwrap();
    let o = run(
        &dir,
        &[
            "perplexity",
            "--model",
            model.to_str().unwrap(),
            "--text",
            "t.txt",
            "--windows",
            "2",
            "--window-len",
            "40",
            "--chunk",
            "4",
            "--k-rate",
            "4",
            "--v-rate",
            "4",
            "--json",
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON value");
    assert_eq!(v["arch"], "qwen2");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "reference and the compressed setting");
    // Progress: loading, then per setting one line per tenth of the 80 tokens and a last one.
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().any(|l| l.contains("loading ")), "{err}");
    assert!(lines.iter().any(|l| l.contains("loaded in ")), "{err}");
    for setting in ["[1/2]", "[2/2]"] {
        let mine: Vec<&&str> = lines.iter().filter(|l| l.contains(setting)).collect();
        assert!(mine.len() >= 5, "{setting}: {mine:#?}");
        assert!(
            mine.last()
                .unwrap()
                .contains("80/80 tokens (100%), done in "),
            "{mine:#?}"
        );
    }
    assert!(lines.iter().all(|l| l.starts_with('[')), "{err}");
}

#[test]
fn attention_writes_no_plot_unless_asked() {
    let dir = scratch("cli-attention");
    let model = write_tiny_qwen2(&dir, "tiny-qwen2.gguf", &Spec::default());
    std::fs::write(dir.join("t.txt"), text()).unwrap();
    // Where the plot used to go by default (from a directory outside the repository, the
    // repository found from the crate's source directory).
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/attention-frontier.svg");
    let before = std::fs::read(&committed).ok();
    let args = [
        "attention",
        "--model",
        model.to_str().unwrap(),
        "--text",
        "t.txt",
        "--tokens",
        "24",
        "--json",
    ];
    let o = run(&dir, &args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        std::fs::read(&committed).ok(),
        before,
        "the committed plot changed"
    );
    let svgs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "svg"))
        .collect();
    assert!(svgs.is_empty(), "{svgs:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["rows"].as_array().unwrap().is_empty());
    assert!(err.contains("layers (100%), done in "), "{err}");

    let mut with_svg = args.to_vec();
    with_svg.extend(["--svg", "plots/frontier.svg"]);
    let o = run(&dir, &with_svg);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(dir.join("plots/frontier.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "{svg:.100}"
    );
    assert!(
        svg.contains("tiny-qwen2 (d = 64), 24 tokens of t.txt"),
        "title"
    );
    assert_eq!(std::fs::read(&committed).ok(), before);
}

fn generate_json(dir: &Path, model: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "In the theme, then",
        "--ignore-eos",
        "--json",
    ];
    args.extend(extra);
    let o = run(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON value")
}

fn tokens(run: &serde_json::Value) -> Vec<u64> {
    run["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[test]
fn generate_prints_text_speed_and_cache_size() {
    let dir = scratch("cli-generate");
    let model = write_tiny_qwen2(&dir, "tiny-qwen2.gguf", &Spec::default());
    let args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "In the theme, then",
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--compare",
    ];
    let o = run(&dir, &args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8(o.stdout).unwrap();
    for field in [
        "prompt: 9 tokens",
        "K 4x65536 / V 4x65536 (default policy)",
        "uncompressed (f32)",
        "generated tokens",
        "12 (MaxTokens)",
        "prefill tok/s",
        "decode tok/s",
        "cache bytes",
        "effective bits",
        "token sequences: ",
        "--- text, K 4x65536 / V 4x65536 (default policy):\nIn the theme, then",
        "--- text, uncompressed (f32):\nIn the theme, then",
    ] {
        assert!(out.contains(field), "{field:?} not in:\n{out}");
    }
    assert!(err.contains("generating with uncompressed (f32)"), "{err}");
    // Neither a prompt nor a prompt file.
    let o = run(&dir, &["generate", "--model", model.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--prompt"), "{}", stderr(&o));
    // A bad top-p fails before the model loads.
    let o = run(
        &dir,
        &[&args[..5], &["--temperature", "1", "--top-p", "0"]].concat(),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("top-p must be in (0, 1]"),
        "{}",
        stderr(&o)
    );
}

/// The runtime cache storing fp16 keys and values generates the tokens the f32 cache does
/// (the synthetic model's logits are far from ties at fp16's 2^-11 relative rounding), and the
/// accounting is the fp16 one: 16 bits per value plus the key scales (64 f32 per kv head and
/// layer: 2048 bits over the 32 x 2 x 64 values of a layer's 32 positions, 0.5 bits).
#[test]
fn generate_compare_fp16_runtime_cache_equals_uncompressed() {
    let dir = scratch("cli-generate-fp16");
    let model = write_tiny_qwen2(&dir, "tiny-qwen2.gguf", &Spec::default());
    let v = generate_json(
        &dir,
        &model,
        &[
            "--k-code",
            "none",
            "--v-code",
            "none",
            "--compare",
            "--max-tokens",
            "24",
        ],
    );
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // "In", " the", " theme", ",", " then": I n | Ġthe | Ġthe m e | , | Ġthe n.
    assert_eq!(v["prompt_tokens"], 9);
    let (a, b) = (tokens(&runs[0]), tokens(&runs[1]));
    assert_eq!(a.len(), 24);
    assert_eq!(a, b);
    assert!(v["first_difference"].is_null());
    assert_eq!(runs[0]["text"], runs[1]["text"]);
    assert_eq!(runs[0]["cached_positions"], 9 + 24 - 1);
    assert_eq!(runs[0]["effective_bits"].as_f64().unwrap(), 16.5);
    assert_eq!(runs[0]["cache_bytes"], 32 * 2 * 2 * 64 * 2 + 2 * 64 * 4);
    assert_eq!(runs[1]["effective_bits"].as_f64().unwrap(), 32.0);
    assert_eq!(runs[0]["decode_steps"], 23);
}

/// Sampling is deterministic under --seed and differs across seeds (at a temperature that
/// flattens the tiny model's peaked logits); greedy is the default.
#[test]
fn generate_samples_deterministically() {
    let dir = scratch("cli-generate-sample");
    let model = write_tiny_qwen2(&dir, "tiny-qwen2.gguf", &Spec::default());
    let sampled = |seed: &str| {
        let v = generate_json(
            &dir,
            &model,
            &["--temperature", "50", "--seed", seed, "--max-tokens", "16"],
        );
        tokens(&v["runs"][0])
    };
    assert_eq!(sampled("3"), sampled("3"));
    assert_ne!(sampled("3"), sampled("4"));
    let greedy = tokens(&generate_json(&dir, &model, &["--max-tokens", "16"])["runs"][0]);
    let zero = generate_json(&dir, &model, &["--temperature", "0", "--max-tokens", "16"]);
    assert_eq!(greedy, tokens(&zero["runs"][0]));
    assert_eq!(zero["sampling"], "Greedy");
}
