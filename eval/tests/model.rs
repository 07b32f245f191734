//! The model copies attend through the KV cache consistently: whole-window prefill, chunked
//! prefill and token-by-token decoding give the same logits; the observer sees every layer.
//!
//! Needs the model file: reported as ignored when it was absent at build time.

mod common;

use candle_core::{Device, IndexOp, Tensor};
use common::{input, max_abs_diff};
use fibquant_eval::kv_cache::{F32Cache, KvCache, QkvRecorder};
use fibquant_eval::models::{LogitsMode, Model, WeightFormat};
use fibquant_eval::paths::model_for_tests;
use fibquant_eval::tokenizer::Tokenizer;

fn load(weights: WeightFormat) -> Option<(Model, Vec<u32>)> {
    let path = model_for_tests()?;
    let (model, meta) = Model::load(&path, &Device::Cpu, weights).unwrap();
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    let text = "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own \
                amusement, never took up any book but the Baronetage.";
    Some((model, tok.encode(text).unwrap()))
}

#[test]
#[cfg_attr(
    not(fibquant_model),
    ignore = "needs the model: run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL) and rebuild"
)]
fn prefill_chunked_and_decode_agree() {
    let (mut model, ids) =
        load(WeightFormat::F32).expect("the model was on disk when the tests were built");
    let cfg = model.config().clone();
    assert_eq!(cfg.arch, "llama");
    assert_eq!(
        (cfg.n_layers, cfg.heads.n_head, cfg.heads.n_kv_head),
        (30, 9, 3)
    );
    assert_eq!(cfg.heads.head_dim, 64);
    let n = ids.len();
    assert!(n > 20);

    // Whole chunk, logits for every position, with the observer.
    let mut cache = F32Cache::new(cfg.n_layers);
    let mut rec = QkvRecorder::new(cfg.n_layers);
    let full = model
        .forward(&input(&ids), &mut cache, Some(&mut rec), LogitsMode::All)
        .unwrap();
    assert_eq!(full.dims(), &[1, n, cfg.vocab_size]);
    assert_eq!(cache.seq_len(0), n);
    assert_eq!(cache.seq_len(cfg.n_layers - 1), n);
    assert_eq!(cache.stored_bytes(), cfg.n_layers * 2 * 3 * n * 64 * 4);
    for l in &rec.layers {
        let (q, k, v) = l.as_ref().unwrap();
        assert_eq!(q.dims(), &[1, 9, n, 64]);
        assert_eq!(k.dims(), &[1, 3, n, 64]);
        assert_eq!(v.dims(), &[1, 3, n, 64]);
    }
    // The cache holds exactly the observed (post-RoPE) keys.
    let (k0, _) = cache.keys_values(5).unwrap();
    assert_eq!(max_abs_diff(&k0, &rec.layers[5].as_ref().unwrap().1), 0.0);

    // Two chunks through the cache.
    cache.clear();
    let split = 7;
    let a = model
        .forward(&input(&ids[..split]), &mut cache, None, LogitsMode::All)
        .unwrap();
    let b = model
        .forward(&input(&ids[split..]), &mut cache, None, LogitsMode::All)
        .unwrap();
    let chunked = Tensor::cat(&[&a, &b], 1).unwrap();
    let d = max_abs_diff(&full, &chunked);
    assert!(d < 1e-3, "chunked vs full: max |diff| {d}");

    // Token by token, last-position logits.
    cache.clear();
    let mut last = None;
    for &t in &ids {
        last = Some(
            model
                .forward(&input(&[t]), &mut cache, None, LogitsMode::Last)
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert_eq!(last.dims(), &[1, cfg.vocab_size]);
    let d = max_abs_diff(&full.i((.., n - 1, ..)).unwrap(), &last);
    assert!(d < 1e-3, "decode vs full: max |diff| {d}");
}
