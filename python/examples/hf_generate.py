"""Generate with a Hugging Face model whose KV cache is FibQuant codes (fibquant.hf).

    python3 examples/hf_generate.py                      # a small random Llama, no download
    python3 examples/hf_generate.py --model DIR --prompt "Once upon a time"   # a local model

Prints, for DynamicCache and for FibQuantCache at each rate: the greedy continuation's tokens,
their agreement with DynamicCache's, the KL divergence of the prompt's next-token
distributions, the cache's bytes and effective bits, and the time taken. The FibQuantCache
hands the model dequantized keys and values (see fibquant.hf), so it saves memory between
steps, not compute.
"""

import argparse
import inspect
import time

import torch
from transformers import DynamicCache

import fibquant as fq
from fibquant.hf import FibQuantCache


def small_llama(device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                         vocab_size=1000, max_position_embeddings=1024)
    return LlamaForCausalLM(config).to(device).eval(), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a local model directory (default: a small random Llama)")
    ap.add_argument("--prompt", default="The KV cache of a language model", help="prompt (with --model)")
    ap.add_argument("--prompt-len", type=int, default=200, help="random prompt tokens (random model)")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--rates", default="4,3,2", help="comma-separated preset rates")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True,
                                                     torch_dtype=torch.float32).to(device).eval()
        ids = tok(args.prompt, return_tensors="pt").input_ids.to(device)
    else:
        model, tok = small_llama(device)
        ids = torch.randint(0, model.config.vocab_size, (1, args.prompt_len),
                            generator=torch.Generator().manual_seed(1)).to(device)
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    mask = torch.ones_like(ids)
    print(f"device {device}, prompt {ids.shape[1]} tokens, {args.new_tokens} new, cache argument `{kw}`")

    def generate(cache):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                 do_sample=False, **{kw: cache})
        return out[0, ids.shape[1]:], time.perf_counter() - t

    def first_logits(cache):
        with torch.no_grad():
            return torch.log_softmax(model(ids, use_cache=True, **{kw: cache}).logits[0].float(), -1)

    ref_tokens, ref_time = generate(DynamicCache())
    ref_logp = first_logits(DynamicCache())
    print(f"DynamicCache: {ref_time:.2f} s, tokens {ref_tokens.tolist()}")
    if tok is not None:
        print("  text:", repr(tok.decode(ref_tokens)))
    policies = [("fp16", fq.CachePolicy.plain("fp16", "fp16"))]
    policies += [(f"{r} bits", fq.CachePolicy.preset(float(r))) for r in args.rates.split(",")]
    for name, policy in policies:
        cache = FibQuantCache(policy, config=model.config)
        tokens, took = generate(cache)
        agree = (tokens == ref_tokens).float().mean().item()
        logp = first_logits(FibQuantCache(policy, config=model.config))
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item()
        print(f"FibQuantCache {name}: {took:.2f} s, agreement {agree:.3f}, KL {kl:.3g} nats, "
              f"{cache.bytes()} bytes, {cache.effective_bits():.3f} effective bits")
        if tok is not None:
            print("  text:", repr(tok.decode(tokens)))


if __name__ == "__main__":
    main()
