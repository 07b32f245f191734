//! FibQuant evaluation harness: runs a real GGUF language model on CPU (candle) with a pluggable
//! KV cache, to measure what compressing the cache costs (perplexity, attention fidelity).

pub mod attention_eval;
pub mod codes;
pub mod fetch;
pub mod fibquant_cache;
pub mod frontier_svg;
pub mod kv_cache;
pub mod models;
pub mod paths;
pub mod perplexity;
pub mod ppl_sweep;
pub mod tokenizer;
