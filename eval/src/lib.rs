//! FibQuant evaluation harness: runs a real GGUF language model on CPU (candle) with a pluggable
//! KV cache, to measure what compressing the cache costs (perplexity, KL divergence, attention
//! fidelity). Compressed caches are the runtime's [`fibquant::KvCache`] ([`runtime_cache`]),
//! attended on codes, and llama.cpp's block formats as the baseline ([`qblock_cache`]).

pub mod attention_eval;
pub mod cache_options;
pub mod codes;
pub mod fetch;
pub mod frontier_svg;
pub mod generate;
pub mod kv_cache;
pub mod models;
pub mod paths;
pub mod perplexity;
pub mod ppl_sweep;
pub mod progress;
pub mod qblock_cache;
pub mod runtime_cache;
pub mod tokenizer;
