//! The qwen2 model copy against candle-transformers' own `quantized_qwen2` on a tiny synthetic
//! qwen2 GGUF (q/k/v biases, tied output, GQA, NEOX RoPE), and the qwen2 tokenizer path end to
//! end. Needs no downloaded model.

mod common;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, IndexOp};
use candle_transformers::models::quantized_qwen2 as upstream;
use common::{input, max_abs_diff, scratch, write_tiny_qwen2, Spec};
use fibquant_eval::kv_cache::{F32Cache, KvCache};
use fibquant_eval::models::{LogitsMode, Model, WeightFormat};
use fibquant_eval::tokenizer::{PreTokenizer, Tokenizer};
use std::path::Path;

fn upstream_model(path: &Path) -> upstream::ModelWeights {
    let mut f = std::fs::File::open(path).unwrap();
    let ct = Content::read(&mut f).unwrap();
    upstream::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap()
}

#[test]
fn matches_candle_transformers_qwen2() {
    let dir = scratch("qwen2-model");
    let path = write_tiny_qwen2(&dir, "tiny-qwen2.gguf", &Spec::default());
    let (mut ours, meta) = Model::load(&path, &Device::Cpu, WeightFormat::F32).unwrap();
    let cfg = ours.config().clone();
    assert_eq!(cfg.arch, "qwen2");
    assert_eq!(
        (
            cfg.n_layers,
            cfg.heads.n_head,
            cfg.heads.n_kv_head,
            cfg.heads.head_dim
        ),
        (
            common::N_LAYERS,
            common::N_HEAD,
            common::N_KV_HEAD,
            common::HEAD_DIM
        )
    );
    assert_eq!(cfg.vocab_size, common::VOCAB);

    let tok = Tokenizer::from_gguf(&meta).unwrap();
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::Qwen2);
    let ids = tok
        .encode("In 2024 THEY'RE in, the end.\n\n(Hello)")
        .unwrap();
    assert_eq!(tok.decode(&ids), "In 2024 THEY'RE in, the end.\n\n(Hello)");
    let n = ids.len();
    assert!(n > 20, "{n} tokens");

    // Prefill: the last position's logits.
    let mut cache = F32Cache::new(cfg.n_layers);
    let all = ours
        .forward(&input(&ids), &mut cache, None, LogitsMode::All)
        .unwrap();
    let ours_last = all.i((.., n - 1, ..)).unwrap();
    let mut theirs = upstream_model(&path);
    let theirs_last = theirs.forward(&input(&ids), 0).unwrap();
    assert_eq!(ours_last.dims(), theirs_last.dims());
    let scale: f32 = theirs_last
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(scale > 0.1, "degenerate logits ({scale})");
    let d = max_abs_diff(&ours_last, &theirs_last);
    assert!(
        d < 1e-4 * scale.max(1.0),
        "prefill: max |diff| {d} (scale {scale})"
    );

    // Decoding token by token through each side's cache, at every position.
    cache.clear();
    theirs.clear_kv_cache();
    for (pos, &t) in ids.iter().enumerate() {
        let a = ours
            .forward(&input(&[t]), &mut cache, None, LogitsMode::Last)
            .unwrap();
        let b = theirs.forward(&input(&[t]), pos).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4 * scale.max(1.0), "decode at {pos}: max |diff| {d}");
        let d = max_abs_diff(&a, &all.i((.., pos, ..)).unwrap());
        assert!(
            d < 1e-3 * scale.max(1.0),
            "decode vs prefill at {pos}: max |diff| {d}"
        );
    }
    assert_eq!(cache.seq_len(0), n);

    // The biases are read: the same weights without them give other logits.
    let zero = Spec {
        bias_scale: 0.0,
        ..Spec::default()
    };
    let path0 = write_tiny_qwen2(&dir, "tiny-qwen2-nobias.gguf", &zero);
    let (mut no_bias, _) = Model::load(&path0, &Device::Cpu, WeightFormat::F32).unwrap();
    let mut cache = F32Cache::new(cfg.n_layers);
    let nb = no_bias
        .forward(&input(&ids), &mut cache, None, LogitsMode::Last)
        .unwrap();
    let d = max_abs_diff(&nb, &ours_last);
    assert!(d > 1e-2, "zero biases changed the logits by only {d}");
}

#[test]
fn unsupported_pre_tokenizer_fails_before_the_weights() {
    let dir = scratch("qwen2-bad-pre");
    // No tensor data at all: reading any weight would fail with an I/O error instead.
    let spec = Spec {
        pre: "llama-bpe",
        header_only: true,
        ..Spec::default()
    };
    let path = write_tiny_qwen2(&dir, "bad.gguf", &spec);
    let err = Model::load_checked(&path, &Device::Cpu, WeightFormat::F32, |meta| {
        Ok(Tokenizer::from_gguf(meta)?)
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("pre-tokenizer \"llama-bpe\""), "{msg}");
    assert!(msg.contains("supported: default, gpt2, smollm"), "{msg}");
    assert!(msg.contains("qwen2"), "{msg}");
    // And the truncated file really cannot load: the check above is what stopped it.
    let spec = Spec {
        header_only: true,
        ..Spec::default()
    };
    let path = write_tiny_qwen2(&dir, "truncated.gguf", &spec);
    assert!(Model::load(&path, &Device::Cpu, WeightFormat::F32).is_err());
}
