//! The GGUF-built tokenizer against an independent reference tokenization.
//!
//! Fixture `tests/fixtures/persuasion_ids.json` holds the first 512 ids of
//! `tests/fixtures/persuasion_prefix.txt` (the first 4000 characters of data/persuasion.txt) plus a
//! few extra strings, as tokenized by HuggingFace `tokenizers` from the GGUF's vocabulary and
//! merges. It was made with (from the repository root, after `fibquant-eval fetch-model`):
//!
//! ```text
//! python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install gguf==0.19.0 tokenizers==0.23.3
//! /tmp/tokvenv/bin/python eval/tests/fixtures/make_tokenizer_fixture.py \
//!     models/SmolLM2-135M-Instruct.Q4_1.gguf data/persuasion.txt eval/tests/fixtures
//! ```
//!
//! Needs the model file (for its vocabulary): skips with a message when it is absent.

use candle_core::quantized::gguf_file::Content;
use fibquant_eval::paths::model_for_tests;
use fibquant_eval::tokenizer::Tokenizer;
use std::path::Path;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn load_tokenizer() -> Option<Tokenizer> {
    let path = model_for_tests()?;
    let mut f = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut f).unwrap();
    Some(Tokenizer::from_gguf(&content).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
#[cfg_attr(
    not(fibquant_model),
    ignore = "needs the model: run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL) and rebuild"
)]
fn matches_reference_on_persuasion_prefix() {
    let tok = load_tokenizer().expect("the model was on disk when the tests were built");
    let fx: serde_json::Value = serde_json::from_str(&fixture("persuasion_ids.json")).unwrap();
    let text = fixture("persuasion_prefix.txt");
    assert_eq!(text.chars().count() as u64, fx["n_chars"].as_u64().unwrap());
    let want = ids(&fx["ids"]);
    assert_eq!(want.len(), 512);
    let got = tok.encode(&text).unwrap();
    assert!(got.len() >= 512, "only {} tokens", got.len());
    if let Some(i) = (0..512).find(|&i| got[i] != want[i]) {
        panic!(
            "first mismatch at {i}: got {:?} want {:?} (context {:?})",
            tok.token(got[i]),
            tok.token(want[i]),
            tok.decode(&want[i.saturating_sub(5)..(i + 5).min(512)])
        );
    }
    // Decoding is the inverse of encoding for this (ASCII) text.
    assert_eq!(tok.decode(&got), text);
}

#[test]
#[cfg_attr(
    not(fibquant_model),
    ignore = "needs the model: run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL) and rebuild"
)]
fn matches_reference_on_extra_strings() {
    let tok = load_tokenizer().expect("the model was on disk when the tests were built");
    let fx: serde_json::Value = serde_json::from_str(&fixture("persuasion_ids.json")).unwrap();
    for case in fx["extra"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "text {text:?}"
        );
    }
}

#[test]
#[cfg_attr(
    not(fibquant_model),
    ignore = "needs the model: run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL) and rebuild"
)]
fn metadata_ids() {
    let tok = load_tokenizer().expect("the model was on disk when the tests were built");
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id, Some(1));
    assert_eq!(tok.eos_id, Some(2));
    assert_eq!(tok.token(1), Some("<|im_start|>"));
}
