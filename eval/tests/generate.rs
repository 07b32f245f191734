//! Generation on the real model: greedy text through the f32 cache and through the runtime
//! cache (fp16 storage: the same tokens; the 4-bit preset: the same answer), decoded by the
//! GGUF's own tokenizer.
//!
//! Needs the model file: reported as ignored when it was absent at build time.

use candle_core::Device;
use fibquant::{CachePolicy, SideCode};
use fibquant_eval::generate::{first_difference, generate, GenOptions, Sampling};
use fibquant_eval::kv_cache::F32Cache;
use fibquant_eval::models::{Model, WeightFormat};
use fibquant_eval::paths::model_for_tests;
use fibquant_eval::runtime_cache::RuntimeCache;
use fibquant_eval::tokenizer::Tokenizer;

#[test]
#[cfg_attr(
    not(fibquant_model),
    ignore = "needs the model: run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL) and rebuild"
)]
fn greedy_generation_answers_through_every_cache() {
    let path = model_for_tests().expect("the model was on disk when the tests were built");
    let (mut model, meta) = Model::load(&path, &Device::Cpu, WeightFormat::F32).unwrap();
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    let cfg = model.config().clone();
    let prompt = tok.encode("The capital of France is").unwrap();
    let opts = GenOptions {
        max_tokens: 24,
        sampling: Sampling::Greedy,
        stop: None,
    };
    let mut f32_cache = F32Cache::new(cfg.n_layers);
    let reference = generate(&mut model, &prompt, &mut f32_cache, opts).unwrap();
    let text = tok.decode(&reference.tokens);
    println!("f32 cache: {text:?}");
    assert_eq!(reference.tokens.len(), 24);
    assert!(text.contains("Paris"), "{text:?}");

    let fp16 = SideCode::Fp16;
    let mut cache =
        RuntimeCache::new(cfg.n_layers, cfg.heads, CachePolicy::plain(fp16, fp16)).unwrap();
    let stored = generate(&mut model, &prompt, &mut cache, opts).unwrap();
    assert_eq!(
        first_difference(&stored.tokens, &reference.tokens),
        None,
        "fp16 cache: {:?}",
        tok.decode(&stored.tokens)
    );
    assert_eq!(stored.effective_bits(cfg.n_layers * 3 * 2 * 64), Some(16.0));

    let mut cache = RuntimeCache::new(cfg.n_layers, cfg.heads, CachePolicy::preset(4.0)).unwrap();
    let coded = generate(&mut model, &prompt, &mut cache, opts).unwrap();
    let coded_text = tok.decode(&coded.tokens);
    let first = first_difference(&coded.tokens, &reference.tokens);
    println!("4-bit cache: {coded_text:?}, first difference {first:?}");
    assert!(coded_text.contains("Paris"), "{coded_text:?}");
    // Short: the keys still wait in fp16 for a block of 64 positions, the values are coded.
    assert_eq!(coded.cached_positions, stored.cached_positions);
    assert!(
        coded.cache_bytes < stored.cache_bytes * 3 / 4,
        "{} vs {}",
        coded.cache_bytes,
        stored.cache_bytes
    );
}
