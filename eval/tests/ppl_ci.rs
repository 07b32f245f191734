//! Short CI check of the whole path (model -> FibQuantCache -> perplexity): one 128-token window
//! of data/persuasion.txt, uncompressed vs the best b = 4 vector code on keys and values.
//!
//! Needs the model file: reported as ignored when it was absent at build time.

use candle_core::Device;
use fibquant_eval::codes::{best_code, CodeSpec};
use fibquant_eval::models::{Model, WeightFormat};
use fibquant_eval::paths::{default_text_path, model_for_tests};
use fibquant_eval::perplexity::{perplexity, PplOptions, Reference};
use fibquant_eval::ppl_sweep::Setting;
use fibquant_eval::tokenizer::Tokenizer;

/// Window length (tokens scored).
const WINDOW: usize = 128;

/// Allowed relative perplexity change of the b = 4 cache over the uncompressed one on the first
/// 128-token window, `ppl_b4 / ppl_f32 - 1`, as a closed interval.
///
/// Measured (eval/README.md, "CI tolerance"): over 16 consecutive 128-token windows of
/// persuasion.txt x 3 rotation seeds (48 runs, 2x256 on keys and values, f32 weights) the relative
/// change ranged from -0.043 to +0.142, mean +0.061, standard deviation 0.046; on this window
/// with the default seed it is +0.039 (+0.058 and +0.072 with seeds 1 and 2; +0.035 with the
/// codebooks regenerated later the same day). The bounds are
/// mean +- 3 sd, rounded outwards: they hold every measured window and seed, so a regenerated
/// codebook or a changed default seed should not trip them, while a codec that degrades to b = 2
/// quality (+1.1 relative on 512-token windows, see the README sweep) or decodes garbage fails.
/// A change of exactly 0 fails separately (the codec would be bypassed). The best b = 4 code is
/// now 4x65536 (registry MSE 0.0067 against 0.0077 for 2x256, on which the spread was measured):
/// its 512-token sweep change (+5.5%) is below the +6.4% an earlier sweep measured for 2x256.
const REL_TOL: (f64, f64) = (-0.08, 0.20);

#[test]
#[cfg_attr(
    not(fibquant_model),
    ignore = "needs the model: run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL) and rebuild"
)]
fn b4_vector_cache_stays_close_to_uncompressed() {
    let path = model_for_tests().expect("the model was on disk when the tests were built");
    let (mut model, meta) = Model::load(&path, &Device::Cpu, WeightFormat::F32).unwrap();
    let text = std::fs::read_to_string(default_text_path()).unwrap();
    // The first 4000 characters hold well over 129 tokens.
    let cut = text.char_indices().nth(4000).map_or(text.len(), |(i, _)| i);
    let tokens = Tokenizer::from_gguf(&meta)
        .unwrap()
        .encode(&text[..cut])
        .unwrap();
    let cfg = model.config().clone();
    let (dim, n_kv) = (cfg.heads.head_dim, cfg.heads.n_kv_head);
    let opts = PplOptions {
        windows: 1,
        window_len: WINDOW,
        chunk: WINDOW,
    };
    let seed = fibquant::codec::DEFAULT_SEED;

    let base = Setting::plain("f32", CodeSpec::None, CodeSpec::None);
    let mut cache = base.cache(cfg.n_layers, cfg.heads, seed).unwrap();
    let ppl_f32 = perplexity(
        &mut model,
        &tokens,
        opts,
        cache.as_mut(),
        None,
        Reference::None,
    )
    .unwrap()
    .ppl;

    let code = best_code(dim, 4.0, true).unwrap();
    // The plain codec (no transform, no exact token), on which the tolerance was measured;
    // attention runs on the codes (the runtime's KvCache).
    let b4 = Setting::plain("b=4", code, code);
    let mut cache = b4.cache(cfg.n_layers, cfg.heads, seed).unwrap();
    let report = perplexity(
        &mut model,
        &tokens,
        opts,
        cache.as_mut(),
        None,
        Reference::None,
    )
    .unwrap();
    // The cache really held slot bytes: n_layers * seq * n_kv * (K slot + V slot).
    let slot = code.vector_bytes(dim).unwrap();
    assert_eq!(
        report.windows[0].cache_bytes,
        cfg.n_layers * WINDOW * n_kv * 2 * slot
    );
    assert_eq!(cache.seq_len(0), WINDOW);

    let rel = report.ppl / ppl_f32 - 1.0;
    eprintln!(
        "window 0..{WINDOW}: ppl f32 {ppl_f32:.4}, b=4 {code} {:.4}, relative change {rel:+.4}",
        report.ppl
    );
    assert!(
        rel != 0.0,
        "the compressed cache changed nothing: is the codec bypassed?"
    );
    assert!(
        (REL_TOL.0..=REL_TOL.1).contains(&rel),
        "relative perplexity change {rel:+.4} outside {REL_TOL:?} (f32 {ppl_f32:.4}, b=4 {:.4})",
        report.ppl
    );
}
